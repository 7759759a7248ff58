//! The `gtmd` command: parses arguments, calls the library, maps errors to exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gtmd::config::IoMode;
use gtmd::control::{self, ExitError, RunOptions};
use gtmd::tools;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gtmd: a global traffic manager. An authoritative DNS server that answers from
/// precompiled tables on per-core shards (recvmmsg/sendmmsg or io_uring).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve DNS until SIGTERM or SIGINT; SIGHUP reloads the config file.
    ///
    /// Without --config, serves the embedded default: zone example.test. on
    /// 127.0.0.1:5300 (UDP and TCP), with app.example.test scheduled by line and by TCP
    /// health checks of 127.0.0.21-22:8000 (`gtmd default-config` prints it). Logs go to
    /// stderr, as [log] says (format text or json, level; RUST_LOG overrides the level),
    /// with sd-daemon priorities under systemd.
    ///
    /// With a [fleet] section in the file, this node is an edge of a fleet: it boots from
    /// its last-known-good epoch in [fleet] state-dir when it has one, and applies the
    /// epochs `gtmd publish` stores in NATS JetStream as a SIGHUP reload would.
    Run {
        /// Configuration file (TOML). Default: the embedded example configuration.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen on ADDR:PORT instead of server.listen (repeatable; port 0 picks a free
        /// port, and the bound address is logged).
        #[arg(short, long, value_name = "ADDR:PORT")]
        listen: Vec<SocketAddr>,
        /// UDP I/O backend, overriding server.io.
        #[arg(long, value_enum)]
        io: Option<IoArg>,
        /// Number of shard threads, overriding server.shards.
        #[arg(long, value_name = "N")]
        shards: Option<usize>,
        /// Control API address (ADDR:PORT, port 0 picks one, or "off"), overriding
        /// control.listen (default 127.0.0.1:5380).
        #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_control)]
        control: Option<ControlArg>,
        /// Bearer tokens of the control API (one name:token per line), overriding
        /// control.token-file (e.g. a systemd credential); re-read at every reload.
        #[arg(long, value_name = "FILE")]
        control_token_file: Option<PathBuf>,
    },
    /// Validate a configuration: runs the full compiler, prints every error as
    /// `file:line: field: reason`, exits 0 when valid and 1 when not.
    Check {
        /// Configuration file (TOML). Default: the embedded example configuration.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the embedded default configuration (a commented starting point).
    DefaultConfig,
    /// Talk to a running gtmd through its control API: status, state, stats, reload,
    /// overrides, enabling and disabling access domains.
    ///
    /// The token (for every change) comes from --token-file (a file holding the token, or
    /// the server's name:token file: its first entry) or $GTMD_TOKEN. Text output, or the
    /// API's JSON with --json. Exit codes: 0 done, 1 the server refused or failed (its
    /// reason is printed), 2 the server could not be reached.
    Ctl(control::ctl::CtlArgs),
    /// Ask a DNS server one question as every line of a configuration would (an EDNS
    /// Client Subnet per line), and print each line's answer, TTL, ECS scope and RCODE.
    Probe(tools::cli::ProbeCmd),
    /// Migration check: ask an old and a new server every name, type and line of a
    /// configuration and report every difference; exit 0 when they agree, 1 when they
    /// differ, 2 on an error.
    Diff(tools::cli::DiffCmd),
    /// Explain, offline, what a client gets for a question and why: its line and the
    /// prefix behind it, each candidate pool and address with its health, the choices,
    /// the answer and its ECS scope (the server's own compiler and answer code).
    Explain(tools::cli::ExplainCmd),
    /// Publish a configuration to a fleet of edges as its next epoch (NATS JetStream).
    ///
    /// Validates and compiles it as `gtmd check` does (nothing is uploaded when it has
    /// an error), bundles the files it reads from its folder and below (files named by an
    /// absolute path stay edge-local: each edge reads its own), stores the bundle with its
    /// SHA-256 digest as the next epoch, then waits up to --wait seconds for the edges'
    /// reports. Exit codes: 0 every edge applied it, 1 the configuration is invalid or an
    /// edge refused it, 2 the engine could not be reached, 3 an edge did not report in
    /// time.
    Publish(control::fleet::publish::PublishArgs),
    /// Make the canary (`gtmd publish --canary`) every edge's epoch: moves `current` to
    /// it and deletes the canary.
    ///
    /// Refused (exit 1, the rollout halted) when an edge refused the canary's epoch or a
    /// canary edge that reports has not applied it yet, unless --force. Then waits up to
    /// --wait seconds for the edges, as `gtmd publish` does (same exit codes).
    Promote(control::fleet::rollout::PromoteArgs),
    /// Withdraw the canary: `current`'s configuration goes out again as a new epoch, which
    /// every edge applies (the canary edges too: epochs only move forward), and the canary
    /// is deleted. Exit codes as `gtmd publish`'s.
    Abort(control::fleet::rollout::AbortArgs),
    /// Hold an edge at an epoch: it serves EPOCH (fetched when newer than its own), whatever
    /// `current` and the canary say, until `gtmd unpin`. A pin below the epoch the edge
    /// serves keeps it where it is (epochs only move forward).
    Pin(control::fleet::rollout::PinArgs),
    /// Remove an edge's pin: it follows the canary (when the canary's selector names it)
    /// or `current` again.
    Unpin(control::fleet::rollout::UnpinArgs),
}

#[derive(Clone, Copy)]
struct ControlArg(Option<SocketAddr>);

fn parse_control(s: &str) -> Result<ControlArg, String> {
    if s == "off" {
        return Ok(ControlArg(None));
    }
    s.parse()
        .map(|a| ControlArg(Some(a)))
        .map_err(|_| format!("'{s}' is not ADDR:PORT or off"))
}

#[derive(Clone, Copy, ValueEnum)]
enum IoArg {
    Auto,
    IoUring,
    Mmsg,
    /// AF_XDP on [server.xdp]'s interface (needs root or CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW)
    Xdp,
}

fn main() -> ExitCode {
    control::install_panic_hook();
    let cli = Cli::parse();
    // Text at `info` until the configuration's [log] is read (control::log).
    control::log::init();
    match cli.cmd {
        Cmd::Run {
            config,
            listen,
            io,
            shards,
            control,
            control_token_file,
        } => {
            let opts = RunOptions {
                config,
                listen,
                io: io.map(|i| match i {
                    IoArg::Auto => IoMode::Auto,
                    IoArg::IoUring => IoMode::IoUring,
                    IoArg::Mmsg => IoMode::Mmsg,
                    IoArg::Xdp => IoMode::Xdp,
                }),
                shards: shards.filter(|&n| n > 0),
                control: control.map(|c| c.0),
                control_token_file,
                fleet: None,
            };
            match control::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(ExitError::Config(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("gtmd: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Check { config } => match control::check(config.as_ref()) {
            Ok(cfg) => {
                println!("{}: ok ({} zones)", cfg.source, cfg.zones.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Cmd::DefaultConfig => {
            print!("{}", gtmd::config::DEFAULT_CONFIG);
            ExitCode::SUCCESS
        }
        Cmd::Ctl(args) => ExitCode::from(control::ctl::run(args)),
        Cmd::Probe(c) => c.run(),
        Cmd::Diff(c) => c.run(),
        Cmd::Explain(c) => c.run(),
        Cmd::Publish(a) => ExitCode::from(control::fleet::publish::run(a)),
        Cmd::Promote(a) => ExitCode::from(control::fleet::rollout::promote(a)),
        Cmd::Abort(a) => ExitCode::from(control::fleet::rollout::abort(a)),
        Cmd::Pin(a) => ExitCode::from(control::fleet::rollout::pin(a)),
        Cmd::Unpin(a) => ExitCode::from(control::fleet::rollout::unpin(a)),
    }
}
