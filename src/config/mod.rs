//! Step 1 of `config -> compile -> tables -> shards`: read the TOML spec and the zone data it
//! names, and validate them into a [`Config`]. Every mistake is collected (not just the first)
//! as a [`ConfigError`] with file, line, field and reason; `gtmd check` prints them all.

pub mod control;
mod error;
pub mod gslb;
pub mod name;
mod spec;
mod zone;
mod zonefile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

pub(crate) use error::Lines;
pub use error::{ConfigError, ConfigErrors, Origin};
pub use gslb::Gslb;
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

/// `[alerts]`: a webhook that receives every state change as a JSON POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    /// `host:port` of the receiver.
    pub addr: String,
    /// Request path.
    pub path: String,
    /// The URL as configured (for logs).
    pub url: String,
    /// Attempts after the first failure.
    pub retries: u32,
    /// Connect + response timeout per attempt.
    pub timeout: Duration,
}

/// Default address of the control API.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:5380";

/// `[control]`: the HTTP control API (state, operator overrides).
#[derive(Debug, Clone)]
pub struct Control {
    /// Where it listens; `None` disables it.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was given explicitly (a bind failure is then fatal).
    pub explicit: bool,
    /// File the operator overrides are persisted to.
    pub state_file: Option<PathBuf>,
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
    /// Reads and validates the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigErrors> {
        let file: Arc<str> = path.display().to_string().into();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                Origin::new(&file, 1),
                "file",
                format!("cannot read: {e}"),
            )])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_str(&text, file, &base)
    }

    /// The embedded default.
    pub fn embedded() -> Result<Self, ConfigErrors> {
        Self::from_str(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME.into(), Path::new("."))
    }

    /// Reads and validates `text`; zone files are relative to `base`.
    pub fn from_str(text: &str, file: Arc<str>, base: &Path) -> Result<Self, ConfigErrors> {
        let lines = Lines::new(text);
        let at = |span: std::ops::Range<usize>| Origin::new(&file, lines.line(span.start));
        let spec: spec::Spec = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line(s.start)).unwrap_or(1);
            let msg = e.message().trim().to_string();
            ConfigErrors(vec![ConfigError::new(
                Origin::new(&file, line),
                field_of_toml_error(text, e.span()),
                msg,
            )])
        })?;
        let mut errs = Vec::new();
        match &spec.version {
            None => errs.push(ConfigError::new(
                Origin::new(&file, 1),
                "version",
                "missing: start the file with `version = 1`",
            )),
            Some(v) if *v.get_ref() != 1 => errs.push(ConfigError::new(
                at(v.span()),
                "version",
                format!(
                    "unsupported version {}: this gtmd reads version 1",
                    v.get_ref()
                ),
            )),
            Some(_) => {}
        }
        let server = server(spec.server.as_ref(), &at, base, &mut errs);
        let rrl = spec.rrl.as_ref().and_then(|r| rrl(r, &at, &mut errs));
        if spec.zone.is_empty() {
            errs.push(ConfigError::new(
                Origin::new(&file, 1),
                "zone",
                "no [[zone]]: there is nothing to serve",
            ));
        }
        let mut zones: Vec<Zone> = Vec::new();
        for (i, z) in spec.zone.iter().enumerate() {
            if let Some(zone) = zone::load(i, z, &file, &lines, base, &mut errs) {
                zones.push(zone);
            }
        }
        for (i, a) in zones.iter().enumerate() {
            for b in &zones[..i] {
                if a.name == b.name {
                    errs.push(ConfigError::new(
                        a.at.clone(),
                        "zone.name",
                        format!(
                            "zone {} is declared twice",
                            crate::dns::name::display_name(&a.name)
                        ),
                    ));
                }
            }
        }
        let gslb = gslb::load(&spec, &zones, &file, &lines, base, &mut errs);
        let control = control(spec.control.as_ref(), &at, base, &mut errs);
        let alerts = spec.alerts.as_ref().and_then(|a| alerts(a, &at, &mut errs));
        errs.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
        if errs.is_empty() {
            Ok(Self {
                source: file,
                server: server.expect("server validated"),
                zones,
                gslb: Arc::new(gslb),
                control,
                alerts,
                rrl,
            })
        } else {
            Err(ConfigErrors(errs))
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

fn server(
    spec: Option<&spec::ServerSpec>,
    at: &impl Fn(std::ops::Range<usize>) -> Origin,
    base: &Path,
    errs: &mut Vec<ConfigError>,
) -> Option<Server> {
    let mut s = Server {
        listen: vec!["127.0.0.1:5300".parse().expect("literal")],
        shards: Shards::Auto,
        io: IoMode::Auto,
        udp_payload: 1232,
        tcp_max_connections: 1024,
        tcp_idle_timeout: Duration::from_secs(10),
        tcp_io_timeout: Duration::from_millis(500),
        tcp_max_connections_per_source: 64,
        identity: None,
        version_string: None,
        ecs: true,
        probe_before_ready: true,
        nsid: None,
        cookies: true,
        require_cookie: false,
        cookie_secret: None,
        cookie_secret_previous: None,
    };
    let Some(spec) = spec else { return Some(s) };
    s.cookies = spec.cookies.unwrap_or(true);
    s.require_cookie = spec.require_cookie.unwrap_or(false);
    if let Some(n) = &spec.nsid {
        match nsid(n.get_ref()) {
            Ok(v) => s.nsid = Some(v),
            Err(why) => errs.push(ConfigError::new(at(n.span()), "server.nsid", why)),
        }
    }
    cookie_secrets(spec, &mut s, at, base, errs);
    let before = errs.len();
    s.ecs = spec.ecs.unwrap_or(true);
    s.probe_before_ready = spec.probe_before_ready.unwrap_or(true);
    if let Some(listen) = &spec.listen {
        s.listen.clear();
        for l in listen {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(a) if s.listen.contains(&a) => errs.push(ConfigError::new(
                    at(l.span()),
                    "server.listen",
                    format!("{a} is listed twice"),
                )),
                Ok(a) => s.listen.push(a),
                Err(_) => errs.push(ConfigError::new(
                    at(l.span()),
                    "server.listen",
                    format!(
                        "'{}' is not an address:port (e.g. \"127.0.0.1:53\" or \"[::1]:53\")",
                        l.get_ref()
                    ),
                )),
            }
        }
    }
    if let Some(sh) = &spec.shards {
        match sh.get_ref() {
            toml::Value::String(v) if v == "auto" => {}
            toml::Value::Array(cpus) if !cpus.is_empty() => {
                let usable = crate::sys::usable_cpus();
                let mut list = Vec::new();
                for c in cpus {
                    match c.as_integer() {
                        Some(n) if n >= 0 && usable.contains(&(n as usize)) => {
                            if list.contains(&(n as usize)) {
                                errs.push(ConfigError::new(
                                    at(sh.span()),
                                    "server.shards",
                                    format!("CPU {n} is listed twice"),
                                ));
                            }
                            list.push(n as usize)
                        }
                        _ => errs.push(ConfigError::new(
                            at(sh.span()),
                            "server.shards",
                            format!(
                                "'{c}' is not a CPU this process may run on (here: {})",
                                cpu_list(&usable)
                            ),
                        )),
                    }
                }
                s.shards = Shards::Cpus(list);
            }
            other => errs.push(ConfigError::new(
                at(sh.span()),
                "server.shards",
                format!("{other} is neither \"auto\" nor a non-empty list of CPU numbers"),
            )),
        }
    }
    if let Some(io) = &spec.io {
        s.io = match io.get_ref().as_str() {
            "auto" => IoMode::Auto,
            "io-uring" => IoMode::IoUring,
            "mmsg" => IoMode::Mmsg,
            other => {
                errs.push(ConfigError::new(
                    at(io.span()),
                    "server.io",
                    format!("'{other}' is not one of \"auto\", \"io-uring\", \"mmsg\""),
                ));
                IoMode::Auto
            }
        };
    }
    if let Some(p) = &spec.udp_payload {
        match u16::try_from(*p.get_ref()) {
            Ok(v) if (512..=4096).contains(&v) => s.udp_payload = v,
            _ => errs.push(ConfigError::new(
                at(p.span()),
                "server.udp-payload",
                format!("{} is outside 512..=4096", p.get_ref()),
            )),
        }
    }
    if let Some(c) = &spec.tcp_max_connections {
        match usize::try_from(*c.get_ref()) {
            Ok(v) if (1..=1_000_000).contains(&v) => s.tcp_max_connections = v,
            _ => errs.push(ConfigError::new(
                at(c.span()),
                "server.tcp-max-connections",
                format!("{} is outside 1..=1000000", c.get_ref()),
            )),
        }
    }
    if let Some(t) = &spec.tcp_idle_timeout {
        let v = *t.get_ref();
        if v > 0.0 && v <= 3600.0 {
            s.tcp_idle_timeout = Duration::from_secs_f64(v);
        } else {
            errs.push(ConfigError::new(
                at(t.span()),
                "server.tcp-idle-timeout",
                format!("{v} seconds is outside (0, 3600]"),
            ));
        }
    }
    if let Some(t) = &spec.tcp_io_timeout {
        let v = *t.get_ref();
        if v > 0.0 && v <= 60.0 {
            s.tcp_io_timeout = Duration::from_secs_f64(v);
        } else {
            errs.push(ConfigError::new(
                at(t.span()),
                "server.tcp-io-timeout",
                format!("{v} seconds is outside (0, 60] (in seconds: 500 ms is 0.5)"),
            ));
        }
    }
    if let Some(c) = &spec.tcp_max_connections_per_source {
        match usize::try_from(*c.get_ref()) {
            Ok(v) if v <= 1_000_000 => s.tcp_max_connections_per_source = v,
            _ => errs.push(ConfigError::new(
                at(c.span()),
                "server.tcp-max-connections-per-source",
                format!("{} is outside 0..=1000000 (0: no limit)", c.get_ref()),
            )),
        }
    }
    for (field, v, dst) in [
        ("server.identity", &spec.identity, &mut s.identity),
        (
            "server.version-string",
            &spec.version_string,
            &mut s.version_string,
        ),
    ] {
        if let Some(v) = v {
            if v.get_ref().len() > 255 {
                errs.push(ConfigError::new(
                    at(v.span()),
                    field,
                    "longer than 255 octets (one TXT string)",
                ));
            } else {
                *dst = Some(v.get_ref().clone());
            }
        }
    }
    (errs.len() == before).then_some(s)
}

/// `nsid = "text"` or `nsid = "0x..."` (hex, as Knot's `nsid`).
fn nsid(text: &str) -> Result<Vec<u8>, String> {
    let v = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => {
            if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "'{text}' is not an even number of hexadecimal digits after 0x"
                ));
            }
            (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits"))
                .collect()
        }
        None => text.as_bytes().to_vec(),
    };
    if v.is_empty() {
        return Err("empty: omit nsid to send none".into());
    }
    if v.len() > 255 {
        return Err("longer than 255 octets".into());
    }
    Ok(v)
}

/// `cookie-secret-file` (one secret, or the current and the previous on two lines) and
/// `cookie-secret-previous-file`: 32 hexadecimal digits each.
fn cookie_secrets(
    spec: &spec::ServerSpec,
    s: &mut Server,
    at: &impl Fn(std::ops::Range<usize>) -> Origin,
    base: &Path,
    errs: &mut Vec<ConfigError>,
) {
    let read = |f: &Spanned<String>, field: &str, errs: &mut Vec<ConfigError>| {
        let path = relative_to(base, f.get_ref());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errs.push(ConfigError::new(
                    at(f.span()),
                    field,
                    format!("cannot read {}: {e}", path.display()),
                ));
                return Vec::new();
            }
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let secrets: Option<Vec<[u8; 16]>> = lines
            .iter()
            .map(|l| crate::dns::cookie::parse_secret(l))
            .collect();
        match secrets {
            Some(v) if (1..=2).contains(&v.len()) => v,
            _ => {
                errs.push(ConfigError::new(
                    at(f.span()),
                    field,
                    format!(
                        "{} does not hold one or two secrets of 32 hexadecimal digits, one a line",
                        path.display()
                    ),
                ));
                Vec::new()
            }
        }
    };
    if let Some(f) = &spec.cookie_secret_file {
        let v = read(f, "server.cookie-secret-file", errs);
        s.cookie_secret = v.first().copied();
        s.cookie_secret_previous = v.get(1).copied();
    }
    if let Some(f) = &spec.cookie_secret_previous_file {
        let v = read(f, "server.cookie-secret-previous-file", errs);
        if v.is_empty() {
            // unreadable or malformed: reported
        } else if spec.cookie_secret_file.is_none() {
            errs.push(ConfigError::new(
                at(f.span()),
                "server.cookie-secret-previous-file",
                "needs cookie-secret-file (the current secret)",
            ));
        } else if s.cookie_secret_previous.is_some() || v.len() != 1 {
            errs.push(ConfigError::new(
                at(f.span()),
                "server.cookie-secret-previous-file",
                "one previous secret only: this file holds two, or cookie-secret-file has a second line",
            ));
        } else {
            s.cookie_secret_previous = v.first().copied();
        }
    }
}

/// Knot's `table-size` default (a prime near 1.2 x the queries per second it expects).
pub const RRL_TABLE_SIZE: u32 = 393_241;

fn rrl(
    spec: &spec::RrlSpec,
    at: &impl Fn(std::ops::Range<usize>) -> Origin,
    errs: &mut Vec<ConfigError>,
) -> Option<Rrl> {
    let mut r = Rrl {
        rate: 0,
        slip: 1,
        table_size: RRL_TABLE_SIZE,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        exempt: Vec::new(),
    };
    let mut int = |v: &Option<Spanned<i64>>, field: &str, lo: i64, hi: i64, dst: &mut u32| {
        if let Some(v) = v {
            if (lo..=hi).contains(v.get_ref()) {
                *dst = *v.get_ref() as u32;
            } else {
                errs.push(ConfigError::new(
                    at(v.span()),
                    field,
                    format!("{} is outside {lo}..={hi}", v.get_ref()),
                ));
            }
        }
    };
    int(&spec.rate, "rrl.rate", 0, 1_000_000, &mut r.rate);
    int(&spec.slip, "rrl.slip", 0, 100, &mut r.slip);
    int(
        &spec.table_size,
        "rrl.table-size",
        1,
        1 << 26,
        &mut r.table_size,
    );
    let mut p4 = 24;
    let mut p6 = 56;
    int(&spec.ipv4_prefix, "rrl.ipv4-prefix", 0, 32, &mut p4);
    int(&spec.ipv6_prefix, "rrl.ipv6-prefix", 0, 128, &mut p6);
    r.ipv4_prefix = p4 as u8;
    r.ipv6_prefix = p6 as u8;
    for e in spec.exempt.iter().flatten() {
        let t = e.get_ref();
        let net = t.parse::<ipnet::IpNet>().or_else(|_| {
            t.parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| ())
        });
        match net {
            Ok(n) => r.exempt.push(n.trunc()),
            Err(()) => errs.push(ConfigError::new(
                at(e.span()),
                "rrl.exempt",
                format!("'{t}' is not an address or prefix (e.g. \"192.0.2.0/24\")"),
            )),
        }
    }
    // No rate, or 0: off (as Knot 3.2, whose module needs one, and BIND).
    (r.rate > 0).then_some(r)
}

fn control(
    spec: Option<&spec::ControlSpec>,
    at: &impl Fn(std::ops::Range<usize>) -> Origin,
    base: &Path,
    errs: &mut Vec<ConfigError>,
) -> Control {
    let mut c = Control {
        listen: Some(DEFAULT_CONTROL.parse().expect("literal")),
        explicit: false,
        state_file: None,
        allow_remote: false,
        token_file: None,
        tokens: Vec::new(),
        allowed_hosts: Vec::new(),
        tls: None,
    };
    let Some(spec) = spec else { return c };
    c.allow_remote = spec.allow_remote == Some(true);
    if let Some(f) = &spec.token_file {
        let path = relative_to(base, f.get_ref());
        c.tokens = control::read_tokens(&path, at(f.span()), errs);
        c.token_file = Some(path);
    }
    for h in spec.allowed_hosts.iter().flatten() {
        match control::host_name(h.get_ref()) {
            Some(name) => c.allowed_hosts.push(name),
            None => errs.push(ConfigError::new(
                at(h.span()),
                "control.allowed-hosts",
                format!(
                    "'{}' is not a host name or IP address (no scheme, port or path: \"gtmd.example.net\", \"192.0.2.1\")",
                    h.get_ref()
                ),
            )),
        }
    }
    match (&spec.tls_cert, &spec.tls_key) {
        (Some(cert), Some(key)) => {
            c.tls = control::read_tls(
                (&relative_to(base, cert.get_ref()), at(cert.span())),
                (&relative_to(base, key.get_ref()), at(key.span())),
                errs,
            )
        }
        (Some(v), None) | (None, Some(v)) => errs.push(ConfigError::new(
            at(v.span()),
            if spec.tls_cert.is_some() {
                "control.tls-key"
            } else {
                "control.tls-cert"
            },
            "tls-cert and tls-key go together: set both (PEM files) or neither",
        )),
        (None, None) => {}
    }
    if let Some(l) = &spec.listen {
        c.explicit = true;
        match l.get_ref().as_str() {
            "off" | "" => c.listen = None,
            text => match text.parse::<SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => c.listen = Some(a),
                Ok(a) if !c.allow_remote => errs.push(ConfigError::new(
                    at(l.span()),
                    "control.listen",
                    format!("{a} is not a loopback address: set allow-remote = true and token-file to expose the control API"),
                )),
                Ok(a) => {
                    c.listen = Some(a);
                    if let Some(e) = c.exposure_error() {
                        errs.push(ConfigError::new(at(l.span()), "control.listen", e));
                    }
                }
                Err(_) => errs.push(ConfigError::new(
                    at(l.span()),
                    "control.listen",
                    format!("'{text}' is not an address:port or \"off\""),
                )),
            },
        }
    }
    c.state_file = spec
        .state_file
        .as_ref()
        .map(|f| relative_to(base, f.get_ref()));
    c
}

fn alerts(
    spec: &spec::AlertsSpec,
    at: &impl Fn(std::ops::Range<usize>) -> Origin,
    errs: &mut Vec<ConfigError>,
) -> Option<Alerts> {
    let url = spec.webhook.get_ref();
    let Some(rest) = url.strip_prefix("http://") else {
        errs.push(ConfigError::new(
            at(spec.webhook.span()),
            "alerts.webhook",
            format!("'{url}' is not an http:// URL (https webhooks are not supported yet)"),
        ));
        return None;
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let retries = match &spec.retries {
        None => 3,
        Some(r) if (0..=100).contains(r.get_ref()) => *r.get_ref() as u32,
        Some(r) => {
            errs.push(ConfigError::new(
                at(r.span()),
                "alerts.retries",
                format!("{} is outside 0..=100", r.get_ref()),
            ));
            3
        }
    };
    let timeout = match &spec.timeout {
        None => Duration::from_secs(2),
        Some(t) if *t.get_ref() > 0.0 && *t.get_ref() <= 60.0 => {
            Duration::from_secs_f64(*t.get_ref())
        }
        Some(t) => {
            errs.push(ConfigError::new(
                at(t.span()),
                "alerts.timeout",
                format!("{} seconds is outside (0, 60]", t.get_ref()),
            ));
            Duration::from_secs(2)
        }
    };
    Some(Alerts {
        addr,
        path: path.to_string(),
        url: url.clone(),
        retries,
        timeout,
    })
}

/// `0-3,6` for [0, 1, 2, 3, 6].
fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
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
