//! `[fleet]`: this node is an edge of a fleet. Its configuration comes as epochs that
//! `gtmd publish` stores in NATS JetStream; the edge applies each through the reload path
//! and keeps the last one that served (last-known-good) in `state-dir` to boot from.
//! The section belongs to the edge's own file: an edge keeps it across epochs.

use std::path::PathBuf;

use toml::Spanned;

use super::spec::FleetSpec;
use super::validate::Ctx;

/// Longest edge name (it is a key token in the engine).
pub const MAX_EDGE_NAME: usize = 64;
/// Most copies of a bucket JetStream keeps.
pub const MAX_REPLICAS: usize = 5;

/// A validated `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// NATS server URLs, tried in turn.
    pub nats: Vec<String>,
    /// This edge's name (`edge`, else `server.identity`, else the host name).
    pub edge: String,
    /// Where epochs and the last-known-good pointer are written.
    pub state_dir: PathBuf,
    /// Shared health (`share-health`, default on): this edge publishes its health
    /// verdicts and counts the other edges' fresh ones with the failure-rate rule.
    pub share_health: bool,
    /// Copies (1 to 5) the engine keeps of each bucket gtmd creates (`replicas`, default
    /// 1): 3 in a cluster of 3 nats-servers rides out the loss of one.
    pub replicas: usize,
    /// This edge's vantage group (`group`, default `default`): each group has its own
    /// `probes-per-group` probers per check.
    pub group: String,
    /// Probers per check and vantage group (`probes-per-group`, default 3).
    pub probes_per_group: usize,
    /// Fresh votes a check needs before the fleet's verdict on it changes
    /// (`min-vantages`, default 2; fewer when fewer vantages probe it).
    pub min_vantages: usize,
    /// Anchors (`anchors`): `IP` (ICMP echo) or `IP:PORT` (TCP connect), probed when most
    /// of this edge's checks fail, to tell its own isolation from its targets' failure.
    pub anchors: Vec<Anchor>,
}

/// An anchor: probed by ICMP echo (no port) or TCP connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Its address.
    pub ip: std::net::IpAddr,
    /// The TCP port to connect to; none: ICMP echo.
    pub port: Option<u16>,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}", std::net::SocketAddr::new(self.ip, p)),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// `IP` or `IP:PORT` (`[V6]:PORT`) as an anchor.
pub fn parse_anchor(s: &str) -> Option<Anchor> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return (a.port() != 0).then_some(Anchor {
            ip: a.ip(),
            port: Some(a.port()),
        });
    }
    s.parse().ok().map(|ip| Anchor { ip, port: None })
}

/// Why `s` cannot be an edge name, if it cannot: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn bad_edge_name(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > MAX_EDGE_NAME {
        return Some(format!("'{s}' must be 1 to {MAX_EDGE_NAME} characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Some(format!(
            "'{s}' may hold only letters, digits, '-' and '_' (it is a key in the engine)"
        ));
    }
    None
}

/// Why `u` is not a NATS URL gtmd accepts, if it is not.
pub fn bad_nats_url(u: &str) -> Option<String> {
    let rest = u
        .strip_prefix("nats://")
        .or_else(|| u.strip_prefix("tls://"))
        .unwrap_or(u);
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let ok = !host_port.is_empty()
        && !host_port.contains('/')
        && !host_port.contains(char::is_whitespace)
        && host_port
            .rsplit_once(':')
            .is_none_or(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    (!ok).then(|| {
        format!("'{u}' is not a NATS server URL (nats://HOST:PORT, tls://HOST:PORT or HOST:PORT)")
    })
}

/// The edge name when `[fleet]` gives none: `identity`, else the host name, with every
/// character an edge name may not hold made `-`.
fn default_edge(identity: Option<&str>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = identity.unwrap_or(host.trim());
    let name: String = name
        .chars()
        .take(MAX_EDGE_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "edge".into()
    } else {
        name
    }
}

/// `state-dir`, made absolute; `None` (reported) when empty or missing.
fn state_dir(f: &Spanned<FleetSpec>, ctx: &mut Ctx<'_>) -> Option<PathBuf> {
    match &f.get_ref().state_dir {
        Some(d) if d.get_ref().is_empty() => {
            ctx.err(
                d,
                "fleet.state-dir",
                "empty: name a folder this edge may write",
            );
            None
        }
        Some(d) => Some(ctx.path(d.get_ref())),
        None => {
            ctx.err(f, "fleet.state-dir", "missing: the folder where this edge keeps its last-known-good epoch, e.g. state-dir = \"/var/lib/gtmd/fleet\"");
            None
        }
    }
}

/// `[fleet]`, every mistake reported at its line.
pub(super) fn validate(
    f: &Spanned<FleetSpec>,
    identity: Option<&str>,
    ctx: &mut Ctx<'_>,
) -> Option<Fleet> {
    let spec = f.get_ref();
    let mut ok = true;
    let mut nats = Vec::new();
    match &spec.nats {
        None => {
            ctx.err(f, "fleet.nats", "missing: the NATS servers to take epochs from, e.g. nats = [\"nats://10.0.0.1:4222\"]");
            ok = false;
        }
        Some(list) if list.get_ref().is_empty() => {
            ctx.err(list, "fleet.nats", "empty: name at least one NATS server");
            ok = false;
        }
        Some(list) => {
            for u in list.get_ref() {
                match bad_nats_url(u.get_ref()) {
                    Some(why) => {
                        ctx.err(u, "fleet.nats", why);
                        ok = false;
                    }
                    None => nats.push(u.get_ref().clone()),
                }
            }
        }
    }
    let edge = match &spec.edge {
        Some(e) => {
            let why = bad_edge_name(e.get_ref());
            ok &= why.is_none();
            ctx.check(e, "fleet.edge", why.is_none().then_some(()), || {
                why.unwrap_or_default()
            });
            e.get_ref().clone()
        }
        None => default_edge(identity),
    };
    let state_dir = state_dir(f, ctx);
    ok &= state_dir.is_some();
    let state_dir = state_dir.unwrap_or_default();
    let share_health = spec.share_health.as_ref().is_none_or(|s| *s.get_ref());
    let replicas = ctx.int_noted(
        &spec.replicas,
        "fleet.replicas",
        1..=MAX_REPLICAS as i64,
        " (copies of each bucket: 3 in a cluster of 3 nats-servers, at most its size)",
    );
    ok &= spec.replicas.is_none() || replicas.is_some();
    let group = match &spec.group {
        Some(g) => {
            let why =
                bad_edge_name(g.get_ref()).map(|w| w.replace(" (it is a key in the engine)", ""));
            ok &= why.is_none();
            ctx.check(g, "fleet.group", why.is_none().then_some(()), || {
                why.unwrap_or_default()
            });
            g.get_ref().clone()
        }
        None => "default".into(),
    };
    let k = ctx.int(&spec.probes_per_group, "fleet.probes-per-group", 1..=100);
    ok &= spec.probes_per_group.is_none() || k.is_some();
    let m = ctx.int(&spec.min_vantages, "fleet.min-vantages", 1..=100);
    ok &= spec.min_vantages.is_none() || m.is_some();
    let mut anchors = Vec::new();
    for a in spec.anchors.iter().flat_map(|l| l.get_ref()) {
        match parse_anchor(a.get_ref()) {
            Some(x) => anchors.push(x),
            None => {
                ctx.err(
                    a,
                    "fleet.anchors",
                    format!(
                        "'{}' is not IP (ICMP echo) or IP:PORT (TCP connect)",
                        a.get_ref()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(Fleet {
        nats,
        edge,
        state_dir,
        share_health,
        replicas: replicas.unwrap_or(1),
        group,
        probes_per_group: k.unwrap_or(3),
        min_vantages: m.unwrap_or(2),
        anchors,
    })
}
