//! Step 1 of `config -> compile -> tables -> shards`: read the TOML spec and the zone data it
//! names, and validate them into a [`Config`]. Every mistake is collected (not just the first)
//! as a [`ConfigError`] with file, line, field and reason; `gtmd check` prints them all.
//!
//! One section per table: each table of the spec (`spec.rs`) has a file here whose
//! `validate` turns it into its part of the [`Config`] (`server.rs`, `zone.rs`, `rrl.rs`,
//! `control.rs`, `alerts.rs`, `metrics.rs`, `log.rs`, `dnstap.rs`, and the GSLB tables under `gslb/`), with a
//! `validate::Ctx` that places each error at its file and line and collects them all.

mod alerts;
pub mod control;
pub mod dnstap;
mod error;
pub mod fleet;
pub mod gslb;
pub mod log;
pub mod metrics;
pub mod name;
pub mod reads;
mod rrl;
mod server;
mod spec;
pub mod tls;
mod validate;
mod zone;
mod zonefile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use error::Lines;
pub use error::{ConfigError, ConfigErrors, Origin};
pub use gslb::Gslb;
use validate::Ctx;
pub use zone::{Rdata, Record, Soa};

/// The embedded default configuration (`gtmd run` without `--config`).
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");
/// The name the embedded configuration reports in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default>";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (or [`DEFAULT_CONFIG_NAME`]).
    pub source: Arc<str>,
    /// Listener, shard and protocol settings.
    pub server: Server,
    /// Zones served.
    pub zones: Vec<Zone>,
    /// Access domains, pools, addresses, lines, health check templates.
    pub gslb: Arc<Gslb>,
    /// The control API.
    pub control: Control,
    /// Where state changes are posted.
    pub alerts: Option<Alerts>,
    /// Response rate limiting (`[rrl]` with a `rate`), or off.
    pub rrl: Option<Rrl>,
    /// What `GET /metrics` exposes.
    pub metrics: Metrics,
    /// How the process's own log lines look.
    pub log: Log,
    /// The query log (`[dnstap]`), or none.
    pub dnstap: Option<dnstap::Dnstap>,
    /// `[fleet]`: this node takes its configuration from `gtmd publish` (or none).
    pub fleet: Option<fleet::Fleet>,
}

/// `[log]`: the format and level of the process's own log lines (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    /// Text lines or JSON objects.
    pub format: LogFormat,
    /// The least severe level written (one of [`log::LEVELS`]); `RUST_LOG` overrides it.
    pub level: &'static str,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info",
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: time, level, target, message, `key=value` fields (values with
    /// spaces or quotes quoted).
    Text,
    /// One JSON object per line.
    Json,
}

/// `[metrics]`: the optional, per-name parts of the control API's `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Count GSLB answers per access domain and per line (off by default: a few
    /// instructions per query, PERF.md).
    pub per_domain: bool,
    /// Most series per label (access domains, lines, routes); answers beyond go to the
    /// `_other` series. Takes effect at restart.
    pub max_series: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            per_domain: false,
            max_series: metrics::DEFAULT_MAX_SERIES,
        }
    }
}

/// `[rrl]`: response rate limiting over UDP (the BIND/Knot model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rrl {
    /// Responses per second per source prefix and response class.
    pub rate: u32,
    /// Every Nth limited response is sent truncated (TC=1, no records) instead of dropped;
    /// 0 drops them all.
    pub slip: u32,
    /// Buckets per shard.
    pub table_size: u32,
    /// Source prefix length that shares buckets, IPv4.
    pub ipv4_prefix: u8,
    /// Same, IPv6.
    pub ipv6_prefix: u8,
    /// Sources never limited.
    pub exempt: Vec<ipnet::IpNet>,
}

/// Knot's `table-size` default (a prime near 1.2 x the queries per second it expects).
pub const RRL_TABLE_SIZE: u32 = 393_241;

/// `[alerts]`: where state changes are posted as JSON (webhooks), and which go where.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// Receives every change (`webhook`), when set.
    pub webhook: Option<Webhook>,
    /// Further webhooks, each for the events its rule selects.
    pub rules: Vec<AlertRule>,
    /// Attempts after the first failure.
    pub retries: u32,
    /// Connect + response timeout per attempt.
    pub timeout: Duration,
    /// `ca-file` as read (a renewed CA is a change).
    pub ca_pem: Option<Vec<u8>>,
    /// The TLS client of https webhooks: the system's roots plus `ca-file`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for Alerts {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.webhook,
            &self.rules,
            self.retries,
            self.timeout,
            &self.ca_pem,
        ) == (&o.webhook, &o.rules, o.retries, o.timeout, &o.ca_pem)
    }
}

impl Eq for Alerts {}

/// One webhook URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as configured (for logs).
    pub url: String,
    /// `https://`.
    pub tls: bool,
    /// The host as written (Host header, TLS server name).
    pub host: String,
    /// `host:port` to connect to.
    pub addr: String,
    /// Request path.
    pub path: String,
}

impl Webhook {
    /// The URL as logs show it: scheme, host and port, and the path left out (chat and
    /// incident webhooks carry their secret in the path).
    pub fn shown(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let path = if self.path == "/" { "/" } else { "/..." };
        format!("{scheme}://{}{path}", self.addr)
    }
}

/// The alert events, in the order of [`AlertRule::events`]' bits.
pub const ALERT_EVENTS: [&str; 5] = [
    "address-down",
    "address-up",
    "pool-down",
    "pool-up",
    "pool-switch",
];

/// `[[alerts.rule]]`: the events that go to its webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// Its name (default `rule-N`), sent in the payload.
    pub name: String,
    /// Where its events go.
    pub webhook: Webhook,
    /// Bit `i` set: event [`ALERT_EVENTS`]`[i]` is selected.
    pub events: u8,
    /// Whether `access-domains` or `pools` narrow it (else every selected event).
    pub filtered: bool,
    /// Access domains named (`name TYPE` keys, every type of a name given without one).
    pub access_domains: std::collections::HashSet<String>,
    /// Pools named.
    pub pools: std::collections::HashSet<String>,
    /// Pools whose events concern it: those named and every pool of the access domains.
    pub covered_pools: std::collections::HashSet<String>,
    /// Addresses whose events concern it: the members of the covered pools.
    pub covered_addresses: std::collections::HashSet<String>,
}

/// File texts that stand in for the files on disk, by path as the configuration names
/// them (the config file as given, included files as `include` expands them): the control
/// API validates an edit exactly as `gtmd check` would read it, before writing anything.
pub type Overlay = std::collections::HashMap<PathBuf, String>;

/// Default address of the control API.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:5380";

/// `[control]`: the HTTP control API (state, operator overrides).
#[derive(Debug, Clone)]
pub struct Control {
    /// Where it listens; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was given explicitly (a bind failure is then fatal).
    pub explicit: bool,
    /// File the operator overrides, health verdicts and non-preemptive active pools are
    /// persisted to.
    pub state_file: Option<PathBuf>,
    /// Saved health and active pools older than this are not restored at start-up.
    pub state_max_age: Duration,
    /// `allow-remote = true`: a non-loopback `listen` is intended.
    pub allow_remote: bool,
    /// `token-file`, and the tokens read from it (empty without one).
    pub token_file: Option<PathBuf>,
    /// The bearer tokens that may use the API (see [`control::Token`]).
    pub tokens: Vec<control::Token>,
    /// `Host` values accepted besides `localhost` and the address a request arrived on
    /// (lowercase names without a trailing dot, IP addresses as `IpAddr` prints them).
    pub allowed_hosts: Vec<String>,
    /// `tls-cert` and `tls-key`: the API speaks HTTPS only.
    pub tls: Option<control::Tls>,
}

/// How many shards, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shards {
    /// One per online CPU, each pinned to its CPU.
    Auto,
    /// One per listed CPU, pinned to it.
    Cpus(Vec<usize>),
}

/// The UDP I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// The measured cheaper backend on current kernels: recvmmsg/sendmmsg (see
    /// `shard::make_backend`).
    Auto,
    /// io_uring or fail.
    IoUring,
    /// recvmmsg/sendmmsg.
    Mmsg,
    /// AF_XDP on `[server.xdp]`'s interface (kernel sockets for the rest, and as the
    /// fallback when XDP cannot attach).
    Xdp,
}

/// `[server.xdp]`: where the AF_XDP data path attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdp {
    /// The network interface (e.g. `eth0`).
    pub interface: String,
    /// RX queues served: shard `i` takes queue `i`, for `i < queues`.
    pub queues: u32,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Addresses to serve UDP and TCP on.
    pub listen: Vec<SocketAddr>,
    /// Shard threads.
    pub shards: Shards,
    /// UDP backend.
    pub io: IoMode,
    /// `[server.xdp]`, for `io = "xdp"`.
    pub xdp: Option<Xdp>,
    /// Largest UDP response payload.
    pub udp_payload: u16,
    /// Open TCP connections per shard; at the cap the longest-idle one makes room.
    pub tcp_max_connections: usize,
    /// Time without a complete query after which a TCP connection is closed.
    pub tcp_idle_timeout: Duration,
    /// Time to receive a started TCP message, or to write one answer, before the
    /// connection is closed.
    pub tcp_io_timeout: Duration,
    /// Open TCP connections per source address (IPv4 address, IPv6 /64) per shard; 0: no
    /// limit.
    pub tcp_max_connections_per_source: usize,
    /// CH TXT id.server / hostname.bind answer.
    pub identity: Option<String>,
    /// CH TXT version.bind / version.server answer.
    pub version_string: Option<String>,
    /// Use EDNS Client Subnet to find the asker's line (else the resolver's address).
    pub ecs: bool,
    /// Finish the first round of health checks before serving and reporting ready.
    pub probe_before_ready: bool,
    /// NSID (RFC 5001) sent to queries that ask for it.
    pub nsid: Option<Vec<u8>>,
    /// Answer DNS cookies (RFC 7873).
    pub cookies: bool,
    /// Over UDP, answer a query that carries a client cookie but no valid server cookie
    /// with BADCOOKIE.
    pub require_cookie: bool,
    /// The server secret (16 octets); `None`: a random one per process.
    pub cookie_secret: Option<[u8; 16]>,
    /// The previous secret, still accepted.
    pub cookie_secret_previous: Option<[u8; 16]>,
}

/// One zone with all its records (SOA and apex NS included).
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercased wire name of the apex.
    pub name: Vec<u8>,
    /// Where the zone was declared.
    pub at: Origin,
    /// All records, in file order.
    pub records: Vec<Record>,
}

impl Config {
    /// Only `[fleet]` of the file at `path` (with `server.identity`, its default edge
    /// name), the rest left unread: an edge whose own file no longer loads (a zone file
    /// gone, say) still finds where its last-known-good epoch is. `Ok(None)` without
    /// `[fleet]`.
    pub fn fleet_only(path: &Path) -> Result<Option<fleet::Fleet>, ConfigErrors> {
        #[derive(serde::Deserialize)]
        struct Identity {
            identity: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct FleetOnly {
            fleet: Option<toml::Spanned<spec::FleetSpec>>,
            server: Option<Identity>,
        }
        let file: Arc<str> = path.display().to_string().into();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let why = format!("cannot read: {e}");
            ConfigErrors(vec![ConfigError::new(Origin::new(&file, 1), "file", why)])
        })?;
        let lines = Lines::new(&text);
        let only: FleetOnly =
            validate::parse(&text, &file, &lines).map_err(|e| ConfigErrors(vec![e]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let (mut errs, overlay) = (Vec::new(), Overlay::new());
        let mut ctx = Ctx {
            file: &file,
            lines: &lines,
            base,
            overlay: &overlay,
            errs: &mut errs,
        };
        let identity = only.server.and_then(|s| s.identity);
        let fleet = only
            .fleet
            .as_ref()
            .and_then(|f| fleet::validate(f, identity.as_deref(), &mut ctx));
        match errs.is_empty() {
            true => Ok(fleet),
            false => Err(ConfigErrors(errs)),
        }
    }

    /// Reads and validates the file at `path`, without huge pages: nothing of it is read
    /// per query, and a large model is most of the memory a start-up faults in
    /// ([`crate::sys::without_huge_pages`]).
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        Self::from_file_with(path, &Overlay::new())
    }

    /// Reads and validates the file at `path`, taking the files `overlay` holds from it
    /// rather than from disk; without huge pages, as [`Config::from_file`].
    pub fn from_file_with(path: &Path, overlay: &Overlay) -> Result<Self, ConfigErrors> {
        crate::sys::without_huge_pages(|| Self::read_file(path, overlay))
    }

    fn read_file(path: &Path, overlay: &Overlay) -> Result<Self, ConfigErrors> {
        let file: Arc<str> = path.display().to_string().into();
        reads::note(path);
        let text = match overlay.get(path) {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![ConfigError::new(
                    Origin::new(&file, 1),
                    "file",
                    format!("cannot read: {e}"),
                )])
            })?,
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_str_with(&text, file, &base, overlay)
    }

    /// The embedded default.
    pub fn embedded() -> Result<Self, ConfigErrors> {
        Self::from_str(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME.into(), Path::new("."))
    }

    /// Reads and validates `text`; zone files are relative to `base`.
    pub fn from_str(text: &str, file: Arc<str>, base: &Path) -> Result<Self, ConfigErrors> {
        Self::from_str_with(text, file, base, &Overlay::new())
    }

    /// [`Config::from_str`], included files taken from `overlay` where it has them.
    pub fn from_str_with(
        text: &str,
        file: Arc<str>,
        base: &Path,
        overlay: &Overlay,
    ) -> Result<Self, ConfigErrors> {
        let lines = Lines::new(text);
        let spec: spec::Spec =
            validate::parse(text, &file, &lines).map_err(|e| ConfigErrors(vec![e]))?;
        let mut errs = Vec::new();
        let mut ctx = Ctx {
            file: &file,
            lines: &lines,
            base,
            overlay,
            errs: &mut errs,
        };
        spec.check_version(&mut ctx);
        let server = server::validate(spec.server.as_ref(), &mut ctx);
        let rrl = spec.rrl.as_ref().and_then(|r| r.validate(&mut ctx));
        let zones = zone::load(&spec.zone, &mut ctx);
        let gslb = gslb::load(&spec, &mut ctx, &zones);
        let control = control::validate(spec.control.as_ref(), &mut ctx);
        let alerts = spec
            .alerts
            .as_ref()
            .and_then(|a| alerts::validate(a, &mut ctx, &gslb));
        let metrics = spec
            .metrics
            .as_ref()
            .map_or_else(Metrics::default, |m| m.validate(&mut ctx));
        let log = spec
            .log
            .as_ref()
            .map_or_else(Log::default, |l| l.validate(&mut ctx));
        let dnstap = spec
            .dnstap
            .as_ref()
            .and_then(|d| d.get_ref().validate(d, &mut ctx));
        let fleet = spec
            .fleet
            .as_ref()
            .and_then(|f| fleet::validate(f, server.identity.as_deref(), &mut ctx));
        errs.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        Ok(Self {
            source: file,
            server,
            zones,
            gslb: Arc::new(gslb),
            control,
            alerts,
            rrl,
            metrics,
            log,
            dnstap,
            fleet,
        })
    }
}

impl spec::Spec {
    /// `version = 1`, the only format there is.
    fn check_version(&self, ctx: &mut Ctx<'_>) {
        match &self.version {
            None => ctx.push(
                Origin::new(ctx.file, 1),
                "version",
                "missing: start the file with `version = 1`",
            ),
            Some(v) if *v.get_ref() != 1 => ctx.err(
                v,
                "version",
                format!(
                    "unsupported version {}: this gtmd reads version 1",
                    v.get_ref()
                ),
            ),
            Some(_) => {}
        }
    }
}

/// The dotted key a TOML parse error points at, best effort: the key on the error's line.
pub(super) fn field_of_toml_error(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "toml".into();
    };
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let key = key.trim_start_matches('[').trim_end_matches(']');
    if key.is_empty() || key.contains(' ') || key.contains('"') {
        return "toml".into();
    }
    if line.trim_start().starts_with('[') {
        return key.to_string();
    }
    // The enclosing [table] header, if any, names the rest of the path.
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_start_matches('[').trim_end_matches(']').trim());
    match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    }
}

/// Resolves a path from the config relative to the config file's folder.
pub(crate) fn relative_to(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
