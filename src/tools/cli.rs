//! The command lines of `gtmd probe`, `gtmd diff` and `gtmd explain` (clap), each run to
//! its exit status: 0 done (diff: the servers agree), 1 diff found a difference, 2 an
//! error (a server that cannot be asked, a configuration that does not load, bad
//! arguments), with the message on stderr.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::client::{parse_prefix, parse_server, parse_type, Ecs, Options};
use super::{diff, explain, probe, Failure};

/// How to reach a DNS server.
#[derive(Debug, Clone, clap::Args)]
pub struct Net {
    /// Ask over TCP only (otherwise UDP, and TCP when an answer comes back truncated).
    #[arg(long)]
    pub tcp: bool,
    /// Seconds to wait for each UDP try and for a TCP exchange.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub timeout: f64,
    /// UDP tries after the first before giving up on a server.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
}

impl Net {
    fn options(&self) -> Result<Options, Failure> {
        if !(self.timeout > 0.0 && self.timeout <= 60.0) {
            return Err(Failure::Usage(
                "--timeout must be above 0 and at most 60 seconds".into(),
            ));
        }
        Ok(Options {
            timeout: Duration::from_secs_f64(self.timeout),
            retries: self.retries,
            tcp: self.tcp,
        })
    }
}

/// `gtmd probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeCmd {
    /// The DNS server to ask: ADDR[:PORT] (port 53 when left out).
    #[arg(short, long, value_name = "ADDR[:PORT]", value_parser = parse_server)]
    pub server: SocketAddr,
    /// Configuration whose lines to ask as: per line and address family, an EDNS Client
    /// Subnet the line's prefixes hold; then the default line and no ECS. Without it, no
    /// ECS only (and --ecs).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also ask with this client subnet (ADDR/LEN or ADDR; repeatable).
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    pub ecs: Vec<Ecs>,
    /// The name to ask about.
    pub name: String,
    /// The record type (A, AAAA, MX, TYPE65280, ...).
    #[arg(default_value = "A", value_parser = parse_type)]
    pub qtype: u16,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    /// How to reach the servers.
    pub net: Net,
}

/// `gtmd diff`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffCmd {
    /// The server answering now: ADDR[:PORT].
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_server)]
    pub old: SocketAddr,
    /// The server to move to: ADDR[:PORT].
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_server)]
    pub new: SocketAddr,
    /// Configuration naming what to ask: every zone name and access domain, with the
    /// types each has plus A and AAAA, as every line of it.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// One JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Do not report TTLs that differ.
    #[arg(long)]
    pub ignore_ttl: bool,
    /// Do not report ECS scopes that differ.
    #[arg(long)]
    pub ignore_scope: bool,
    /// Queries per server for an answer the configuration lets vary (weighted or
    /// round-robin choices); the unions of what each server gave are compared.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub samples: u32,
    /// Comparisons run at once (each has one query in flight to each server).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    #[command(flatten)]
    /// How to reach the servers.
    pub net: Net,
}

/// `gtmd explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainCmd {
    /// The name asked about.
    pub name: String,
    /// The record type.
    #[arg(default_value = "A", value_parser = parse_type)]
    pub qtype: u16,
    /// The resolver's address: the query's source, which decides the line without ECS.
    #[arg(long, value_name = "IP")]
    pub client: IpAddr,
    /// The EDNS Client Subnet the resolver sends (ADDR/LEN or ADDR).
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    pub ecs: Option<Ecs>,
    /// Configuration (TOML). Default: the embedded example configuration.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A running gtmd's control API (http://127.0.0.1:5380, or https://): addresses up or down and
    /// active pools as it has them. Without it, every address is up but those configured
    /// down or disabled.
    #[arg(long, value_name = "CONTROL_URL")]
    pub server: Option<String>,
    /// Bearer token for --server (a `name:token` line, or the token alone), needed
    /// beyond loopback.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificates to verify an https:// --server by (e.g. its own self-signed
    /// certificate). Default: the system's CA certificates.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Explain under this configuration too (e.g. the one serving now) and list what
    /// changes from it to --config.
    #[arg(long, value_name = "OLD_FILE")]
    pub compare: Option<PathBuf>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

fn status(r: Result<ExitCode, Failure>, tool: &str) -> ExitCode {
    r.unwrap_or_else(|e| {
        match e {
            Failure::Config(e) => eprintln!("{e}"),
            e => eprintln!("gtmd {tool}: {e}"),
        }
        ExitCode::from(2)
    })
}

impl ProbeCmd {
    /// Runs it.
    pub fn run(self) -> ExitCode {
        let r = self.net.options().and_then(|opts| {
            probe::run(&probe::Args {
                server: self.server,
                config: self.config,
                ecs: self.ecs,
                name: self.name,
                qtype: self.qtype,
                json: self.json,
                opts,
            })
            .map(|()| ExitCode::SUCCESS)
        });
        status(r, "probe")
    }
}

impl DiffCmd {
    /// Runs it.
    pub fn run(self) -> ExitCode {
        let r = self.net.options().and_then(|opts| {
            diff::run(&diff::Args {
                old: self.old,
                new: self.new,
                config: self.config,
                json: self.json,
                ignore_ttl: self.ignore_ttl,
                ignore_scope: self.ignore_scope,
                samples: self.samples,
                parallel: self.parallel as usize,
                opts,
            })
            .map(|same| {
                if same {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        });
        status(r, "diff")
    }
}

impl ExplainCmd {
    /// Runs it.
    pub fn run(self) -> ExitCode {
        let r = explain::run(&explain::Args {
            name: self.name,
            qtype: self.qtype,
            client: self.client,
            ecs: self.ecs,
            config: self.config,
            server: self.server,
            token_file: self.token_file,
            cacert: self.cacert,
            compare: self.compare,
            json: self.json,
        })
        .map(|()| ExitCode::SUCCESS);
        status(r, "explain")
    }
}
