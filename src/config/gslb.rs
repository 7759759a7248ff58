//! The GSLB model (Alibaba Cloud GTM 3.0 terms): lines, health check templates, addresses,
//! address pools and access domains, validated into index-linked structures. Every
//! reference (pool -> address, access domain -> pool, line -> parent) is resolved here, so
//! the compiler never meets a dangling name; each mistake is reported with file and line.

use foldhash::{HashMap, HashMapExt};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Lines, Origin};
use super::name::parse_name;
use super::spec;
use super::Zone;
use crate::dns::name::{display_name, is_within};
use crate::dns::rtype;

/// Most addresses one answer may carry when the pool policy draws them (weighted,
/// sequential); round-robin answers every healthy address.
pub const MAX_ANSWERS: usize = 64;

/// Name of the implicit catch-all line.
pub const DEFAULT_LINE: &str = "default";

/// A line: where queries come from. Index 0 is always the implicit `default` line.
#[derive(Debug, Clone)]
pub struct Line {
    /// Name.
    pub name: String,
    /// Parent line index (default's is `None`; every other line ends at default).
    pub parent: Option<usize>,
    /// IPv4 prefixes (network, length).
    pub v4: Vec<(u32, u8)>,
    /// IPv6 prefixes (network, length).
    pub v6: Vec<(u128, u8)>,
    /// Where declared.
    pub at: Origin,
}

/// Health check protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// ICMP echo.
    Ping,
    /// TCP connect.
    Tcp,
    /// HTTP request.
    Http,
    /// HTTPS request.
    Https,
}

/// A health check template.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Name.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Port (tcp, http, https).
    pub port: u16,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Consecutive failures that take an address down.
    pub down_after: u32,
    /// Consecutive successes that bring it back up.
    pub up_after: u32,
    /// HTTP method.
    pub method: String,
    /// HTTP path.
    pub path: String,
    /// HTTP Host header (default: the address).
    pub host: Option<String>,
    /// Acceptable HTTP status codes.
    pub expect: Vec<u16>,
    /// Substring required in the first 4 KiB of the body.
    pub body_contains: Option<String>,
    /// Verify the HTTPS certificate.
    pub tls_verify: bool,
    /// SNI for HTTPS (default: host).
    pub sni: Option<String>,
    /// Ping: packets per check.
    pub packets: u32,
    /// Ping: loss percentage at or above which the check fails.
    pub max_loss: f64,
    /// Ping: average round trip above which the check fails.
    pub max_rtt: Duration,
    /// Vantage points: source addresses to probe from (empty: the system's choice).
    pub sources: Vec<std::net::IpAddr>,
    /// Percentage of failing vantage points at which the address is down.
    pub failure_rate: u32,
    /// TCP: a half-open check (SYN, then SYN-ACK or RST, over a raw socket; no connection
    /// reaches the application).
    pub half_open: bool,
    /// Where declared.
    pub at: Origin,
}

/// What an address answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrValue {
    /// IPv4 address (A).
    V4(Ipv4Addr),
    /// IPv6 address (AAAA).
    V6(Ipv6Addr),
    /// Domain name, answered as a CNAME (lowercased wire).
    Name(Vec<u8>),
}

/// Operator pin of an address's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Health checks decide (up until checked).
    Auto,
    /// Always up.
    Up,
    /// Always down.
    Down,
}

/// An address.
#[derive(Debug, Clone)]
pub struct Address {
    /// Name (unique; health state and overrides follow it across reloads).
    pub name: String,
    /// Value.
    pub value: AddrValue,
    /// Weight 1..=100.
    pub weight: u32,
    /// Disabled addresses are never answered, not even by the fallback.
    pub enabled: bool,
    /// Configured manual status.
    pub mode: Mode,
    /// Health check templates; all must pass.
    pub checks: Vec<usize>,
    /// Free text.
    pub remarks: String,
    /// Where declared.
    pub at: Origin,
}

/// Address pool type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// Domain names.
    Domain,
}

impl PoolKind {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Domain => "domain",
        }
    }
}

/// When a pool counts as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// At least one address up.
    Any,
    /// Every address up.
    All,
    /// At least N addresses up.
    AtLeast(u32),
    /// At least P percent of the addresses up.
    AtLeastPercent(u32),
}

/// Choice of addresses inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// All healthy addresses, rotated per query.
    RoundRobin,
    /// `answers` addresses drawn by weight.
    Weighted,
    /// The first `answers` healthy addresses in order.
    Sequential,
}

/// An address pool.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: PoolKind,
    /// Address indices, in order.
    pub addresses: Vec<usize>,
    /// A disabled pool is never chosen.
    pub enabled: bool,
    /// Health condition.
    pub condition: Condition,
    /// Address policy.
    pub policy: AddressPolicy,
    /// How many addresses to return.
    pub answers: usize,
    /// Free text.
    pub remarks: String,
    /// Where declared.
    pub at: Origin,
}

/// Choice of pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolPolicy {
    /// Pools in order, the first healthy wins. Non-preemptive: stay on the pool in use
    /// while it is healthy even when an earlier one recovers.
    GlobalAvailability {
        /// Return to the first pool as soon as it recovers.
        preemptive: bool,
    },
    /// A healthy pool drawn by pool weight.
    Weighted,
    /// Healthy pools in turn.
    RoundRobin,
    /// Pools by the asker's line; a line whose pools are down is answered as default.
    Nearest,
}

impl PoolPolicy {
    /// The config spelling (with the failback mode for global availability).
    pub fn name(self) -> &'static str {
        match self {
            Self::GlobalAvailability { preemptive: true } => "global-availability (preemptive)",
            Self::GlobalAvailability { preemptive: false } => {
                "global-availability (non-preemptive)"
            }
            Self::Weighted => "weighted",
            Self::RoundRobin => "round-robin",
            Self::Nearest => "nearest",
        }
    }
}

/// What to answer when no pool is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Every enabled address of the candidate pools.
    All,
    /// Every enabled address of this pool.
    Pool(usize),
    /// NODATA.
    NoData,
}

/// An access domain.
#[derive(Debug, Clone)]
pub struct AccessDomain {
    /// Lowercased wire name.
    pub name: Vec<u8>,
    /// Zone index.
    pub zone: usize,
    /// Record type (A, AAAA, CNAME).
    pub rtype: u16,
    /// TTL of the answers.
    pub ttl: u32,
    /// Disabled: the zone's own records answer.
    pub enabled: bool,
    /// Free text.
    pub remarks: String,
    /// Pool policy.
    pub policy: PoolPolicy,
    /// Default route: pools with their weights.
    pub pools: Vec<(usize, u32)>,
    /// Nearest: line index -> pools, in order.
    pub lines: Vec<(usize, Vec<usize>)>,
    /// Fallback.
    pub fallback: Fallback,
    /// Where declared.
    pub at: Origin,
}

/// The whole GSLB model.
#[derive(Debug, Clone, Default)]
pub struct Gslb {
    /// Lines; index 0 is `default`.
    pub lines: Vec<Line>,
    /// Health check templates.
    pub checks: Vec<HealthCheck>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Pools.
    pub pools: Vec<Pool>,
    /// Access domains.
    pub access_domains: Vec<AccessDomain>,
}

/// Display name of a record type we schedule.
pub fn type_name(t: u16) -> &'static str {
    match t {
        rtype::A => "A",
        rtype::AAAA => "AAAA",
        rtype::CNAME => "CNAME",
        _ => "?",
    }
}

/// `name TYPE` of an access domain, for logs and the API.
pub fn ad_key(ad: &AccessDomain) -> String {
    format!(
        "{} {}",
        display_name(&ad.name),
        crate::config::gslb::type_name(ad.rtype)
    )
}

struct Ctx<'a> {
    file: &'a Arc<str>,
    lines: &'a Lines,
    errs: &'a mut Vec<ConfigError>,
}

impl Ctx<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> Origin {
        Origin::new(self.file, self.lines.line(s.span().start))
    }
    fn err<T>(&mut self, s: &Spanned<T>, field: impl Into<String>, reason: impl Into<String>) {
        let at = self.at(s);
        self.errs.push(ConfigError::new(at, field, reason));
    }
}

fn index_names<'a>(
    ctx: &mut Ctx<'_>,
    what: &str,
    names: impl Iterator<Item = &'a Spanned<String>>,
) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (i, n) in names.enumerate() {
        if n.get_ref().is_empty() {
            ctx.err(n, format!("{what}.name"), "empty name");
        } else if m.insert(n.get_ref().clone(), i).is_some() {
            ctx.err(
                n,
                format!("{what}.name"),
                format!("{what} '{}' is declared twice", n.get_ref()),
            );
        }
    }
    m
}

/// Validates the GSLB part of the spec against the zones.
pub(super) fn load(
    s: &spec::Spec,
    zones: &[Zone],
    file: &Arc<str>,
    lines_map: &Lines,
    base: &Path,
    errs: &mut Vec<ConfigError>,
) -> Gslb {
    let mut ctx = Ctx {
        file,
        lines: lines_map,
        errs,
    };
    let mut g = Gslb::default();
    // Lines.
    let line_idx = {
        let mut m = index_names(&mut ctx, "line", s.line.iter().map(|l| &l.name));
        for l in &s.line {
            if l.name.get_ref() == DEFAULT_LINE {
                ctx.err(
                    &l.name,
                    "line.name",
                    "'default' is the implicit catch-all line: it has no prefixes",
                );
            }
        }
        for v in m.values_mut() {
            *v += 1;
        }
        m.insert(DEFAULT_LINE.to_string(), 0);
        m
    };
    g.lines.push(Line {
        name: DEFAULT_LINE.into(),
        parent: None,
        v4: Vec::new(),
        v6: Vec::new(),
        at: Origin::new(file, 1),
    });
    let mut seen_prefix: HashMap<(u128, u8, bool), String> = HashMap::new();
    for l in &s.line {
        let mut line = Line {
            name: l.name.get_ref().clone(),
            parent: Some(0),
            v4: Vec::new(),
            v6: Vec::new(),
            at: ctx.at(&l.name),
        };
        if let Some(p) = &l.parent {
            match line_idx.get(p.get_ref()) {
                Some(&i) => line.parent = Some(i),
                None => ctx.err(p, "line.parent", format!("unknown line '{}'", p.get_ref())),
            }
        }
        let mut add = |net: ipnet::IpNet, at: Origin, ctx: &mut Ctx<'_>| {
            let net = net.trunc();
            let key = match net {
                ipnet::IpNet::V4(n) => (u32::from(n.network()) as u128, n.prefix_len(), false),
                ipnet::IpNet::V6(n) => (u128::from(n.network()), n.prefix_len(), true),
            };
            if let Some(other) = seen_prefix.insert(key, line.name.clone()) {
                ctx.errs.push(ConfigError::new(
                    at,
                    "line.prefixes",
                    format!("{net} is in line '{other}' already: a prefix belongs to one line"),
                ));
                return;
            }
            match net {
                ipnet::IpNet::V4(n) => line.v4.push((u32::from(n.network()), n.prefix_len())),
                ipnet::IpNet::V6(n) => line.v6.push((u128::from(n.network()), n.prefix_len())),
            }
        };
        for p in &l.prefixes {
            match p.get_ref().parse::<ipnet::IpNet>() {
                Ok(n) => add(n, ctx.at(p), &mut ctx),
                Err(_) => ctx.err(
                    p,
                    "line.prefixes",
                    format!("'{}' is not a CIDR prefix", p.get_ref()),
                ),
            }
        }
        if let Some(f) = &l.file {
            let path = super::relative_to(base, f.get_ref());
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let pfile: Arc<str> = path.display().to_string().into();
                    for (i, raw) in text.lines().enumerate() {
                        let t = raw.split('#').next().unwrap_or("").trim();
                        if t.is_empty() {
                            continue;
                        }
                        let at = Origin::new(&pfile, i as u32 + 1);
                        match t.parse::<ipnet::IpNet>() {
                            Ok(n) => add(n, at, &mut ctx),
                            Err(_) => ctx.errs.push(ConfigError::new(
                                at,
                                "prefix",
                                format!("'{t}' is not a CIDR prefix"),
                            )),
                        }
                    }
                }
                Err(e) => ctx.err(
                    f,
                    "line.file",
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        g.lines.push(line);
    }
    geo_lines(&mut ctx, s, base, &mut g.lines, &mut seen_prefix);
    // Parent cycles.
    for (i, l) in g.lines.iter().enumerate() {
        let mut cur = l.parent;
        let mut steps = 0;
        while let Some(p) = cur {
            if p == i || steps > g.lines.len() {
                ctx.errs.push(ConfigError::new(
                    l.at.clone(),
                    "line.parent",
                    format!("line '{}' is its own ancestor (a parent cycle)", l.name),
                ));
                break;
            }
            cur = g.lines[p].parent;
            steps += 1;
        }
    }

    // Health check templates.
    let check_idx = index_names(
        &mut ctx,
        "health-check",
        s.health_check.iter().map(|c| &c.name),
    );
    for c in &s.health_check {
        g.checks.push(health_check(&mut ctx, c));
    }

    // Addresses.
    let addr_idx = index_names(&mut ctx, "address", s.address.iter().map(|a| &a.name));
    for a in &s.address {
        let value = a.value.get_ref();
        let value = if let Ok(v4) = value.parse::<Ipv4Addr>() {
            AddrValue::V4(v4)
        } else if let Ok(v6) = value.parse::<Ipv6Addr>() {
            AddrValue::V6(v6)
        } else {
            match parse_name(value, None) {
                Ok(n) if value.contains('.') => AddrValue::Name(n),
                Ok(_) => {
                    ctx.err(&a.value, "address.value", format!("'{value}' is not an IP address; a domain name must be absolute (end with a dot)"));
                    AddrValue::Name(vec![0])
                }
                Err(e) => {
                    ctx.err(
                        &a.value,
                        "address.value",
                        format!("'{value}' is neither an IP address nor a domain name: {e}"),
                    );
                    AddrValue::Name(vec![0])
                }
            }
        };
        let weight = match &a.weight {
            None => 1,
            Some(w) if (1..=100).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                ctx.err(
                    w,
                    "address.weight",
                    format!("{} is outside 1..=100", w.get_ref()),
                );
                1
            }
        };
        let mode = match a.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("auto") => Mode::Auto,
            Some("up") => Mode::Up,
            Some("down") => Mode::Down,
            Some(other) => {
                let m = a.mode.as_ref().expect("some");
                ctx.err(
                    m,
                    "address.mode",
                    format!("'{other}' is not one of \"auto\", \"up\", \"down\""),
                );
                Mode::Auto
            }
        };
        let mut checks = Vec::new();
        if let Some(hc) = &a.health_check {
            let names: Vec<String> = match hc.get_ref() {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(v) => v
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    ctx.err(
                        hc,
                        "address.health-check",
                        "a template name or a list of them",
                    );
                    Vec::new()
                }
            };
            for n in names {
                match check_idx.get(&n) {
                    Some(&i) => checks.push(i),
                    None => ctx.err(
                        hc,
                        "address.health-check",
                        format!("unknown health check '{n}'"),
                    ),
                }
            }
        }
        g.addresses.push(Address {
            name: a.name.get_ref().clone(),
            value,
            weight,
            enabled: a.enabled.unwrap_or(true),
            mode,
            checks,
            remarks: a.remarks.clone().unwrap_or_default(),
            at: ctx.at(&a.name),
        });
    }

    // Pools.
    let pool_idx = index_names(&mut ctx, "pool", s.pool.iter().map(|p| &p.name));
    for p in &s.pool {
        let kind = match p.kind.get_ref().as_str() {
            "ipv4" => PoolKind::Ipv4,
            "ipv6" => PoolKind::Ipv6,
            "domain" => PoolKind::Domain,
            other => {
                ctx.err(
                    &p.kind,
                    "pool.type",
                    format!("'{other}' is not one of \"ipv4\", \"ipv6\", \"domain\""),
                );
                PoolKind::Ipv4
            }
        };
        let mut addresses = Vec::new();
        if p.addresses.get_ref().is_empty() {
            ctx.err(
                &p.addresses,
                "pool.addresses",
                format!("pool '{}' is empty", p.name.get_ref()),
            );
        }
        for a in p.addresses.get_ref() {
            match addr_idx.get(a.get_ref()) {
                Some(&i) => {
                    let ok = matches!(
                        (&g.addresses[i].value, kind),
                        (AddrValue::V4(_), PoolKind::Ipv4)
                            | (AddrValue::V6(_), PoolKind::Ipv6)
                            | (AddrValue::Name(_), PoolKind::Domain)
                    );
                    if !ok {
                        ctx.err(
                            a,
                            "pool.addresses",
                            format!(
                                "address '{}' does not fit a pool of type {}",
                                a.get_ref(),
                                p.kind.get_ref()
                            ),
                        );
                    }
                    if addresses.contains(&i) {
                        ctx.err(
                            a,
                            "pool.addresses",
                            format!("address '{}' is listed twice", a.get_ref()),
                        );
                    }
                    addresses.push(i);
                }
                None => ctx.err(
                    a,
                    "pool.addresses",
                    format!("unknown address '{}'", a.get_ref()),
                ),
            }
        }
        let condition = match &p.health {
            None => Condition::Any,
            Some(h) => match parse_condition(h.get_ref()) {
                Some(c) => c,
                None => {
                    ctx.err(
                        h,
                        "pool.health",
                        format!(
                            "'{}' is not \"any\", \"all\", \"at least N\" or \"at least N%\"",
                            h.get_ref()
                        ),
                    );
                    Condition::Any
                }
            },
        };
        let policy = match p.policy.as_ref().map(|x| x.get_ref().as_str()) {
            None | Some("round-robin") => AddressPolicy::RoundRobin,
            Some("weighted") => AddressPolicy::Weighted,
            Some("sequential") => AddressPolicy::Sequential,
            Some(other) => {
                let x = p.policy.as_ref().expect("some");
                ctx.err(
                    x,
                    "pool.policy",
                    format!(
                        "'{other}' is not one of \"round-robin\", \"weighted\", \"sequential\""
                    ),
                );
                AddressPolicy::RoundRobin
            }
        };
        let default_answers = match policy {
            AddressPolicy::RoundRobin => addresses.len().max(1),
            _ => 1,
        };
        let mut answers = match &p.answers {
            None => default_answers,
            Some(n)
                if *n.get_ref() >= 1
                    && (*n.get_ref() as usize) <= addresses.len().clamp(1, MAX_ANSWERS) =>
            {
                *n.get_ref() as usize
            }
            Some(n) => {
                ctx.err(
                    n,
                    "pool.answers",
                    format!(
                        "{} is outside 1..={} (the pool's size, at most {MAX_ANSWERS})",
                        n.get_ref(),
                        addresses.len().min(MAX_ANSWERS)
                    ),
                );
                default_answers
            }
        };
        if kind == PoolKind::Domain {
            answers = 1; // one CNAME per name (RFC 2181 10.1)
        }
        g.pools.push(Pool {
            name: p.name.get_ref().clone(),
            kind,
            addresses,
            enabled: p.enabled.unwrap_or(true),
            condition,
            policy,
            answers,
            remarks: p.remarks.clone().unwrap_or_default(),
            at: ctx.at(&p.name),
        });
    }

    // Access domains: the main file's, then the included files' in order.
    let scope = AdScope {
        zones,
        pools: &g.pools,
        pool_idx: &pool_idx,
        line_idx: &line_idx,
    };
    let mut ads = Vec::with_capacity(s.access_domain.len());
    access_domains(&mut ctx, &s.access_domain, &scope, &mut ads);
    let mut files = Vec::new();
    for pat in s.include.iter().flatten() {
        for path in expand_include(&mut ctx, base, pat) {
            files.push((ctx.at(pat), path));
        }
    }
    for (mut more, mut errs) in include_files(&files, &scope) {
        ads.append(&mut more);
        ctx.errs.append(&mut errs);
    }
    g.access_domains = ads;
    // Declared twice, across all files.
    let mut ad_seen: HashMap<(&[u8], u16), ()> = HashMap::with_capacity(g.access_domains.len());
    for ad in &g.access_domains {
        if ad_seen.insert((&ad.name[..], ad.rtype), ()).is_some() {
            ctx.errs.push(ConfigError::new(
                ad.at.clone(),
                "access-domain.name",
                format!(
                    "access domain {} {} is declared twice",
                    display_name(&ad.name),
                    type_name(ad.rtype)
                ),
            ));
        }
    }
    // Access domains against the zone data beside them (by hash: a million access
    // domains meet a large zone in linear time).
    let mut owners: HashMap<(usize, &[u8]), Vec<u16>> = HashMap::new();
    for (zi, z) in zones.iter().enumerate() {
        for r in &z.records {
            owners.entry((zi, &r.owner[..])).or_default().push(r.rtype);
        }
    }
    let mut addr_ads: HashMap<&[u8], ()> = HashMap::new();
    for ad in &g.access_domains {
        if ad.enabled && ad.rtype != rtype::CNAME {
            addr_ads.insert(&ad.name[..], ());
        }
    }
    for ad in &g.access_domains {
        let zone = &zones[ad.zone];
        let at_name: &[u16] = owners.get(&(ad.zone, &ad.name[..])).map_or(&[], |v| &v[..]);
        if ad.rtype == rtype::CNAME && at_name.iter().any(|&t| t != rtype::CNAME) {
            ctx.errs.push(ConfigError::new(
                ad.at.clone(),
                "access-domain.type",
                format!(
                    "CNAME access domain {} beside other records of the zone (RFC 1034 3.6.2)",
                    display_name(&ad.name)
                ),
            ));
        }
        if ad.rtype != rtype::CNAME && at_name.contains(&rtype::CNAME) {
            ctx.errs.push(ConfigError::new(
                ad.at.clone(),
                "access-domain.type",
                format!(
                    "{} access domain {} at a name that has a CNAME in the zone",
                    type_name(ad.rtype),
                    display_name(&ad.name)
                ),
            ));
        }
        if ad.rtype == rtype::CNAME && ad.enabled && addr_ads.contains_key(&ad.name[..]) {
            ctx.errs.push(ConfigError::new(
                ad.at.clone(),
                "access-domain.type",
                format!(
                    "CNAME access domain {} beside an A/AAAA access domain of the same name",
                    display_name(&ad.name)
                ),
            ));
        }
        if ad.name == zone.name {
            ctx.errs.push(ConfigError::new(
                ad.at.clone(),
                "access-domain.name",
                "an access domain cannot be the zone apex",
            ));
        }
    }
    g
}

/// What a line matches in a MaxMind-format database.
#[derive(Default)]
struct GeoMatch {
    countries: Vec<String>,
    continents: Vec<String>,
    asns: Vec<u32>,
}

/// The fields of a database record the lines use (GeoIP2 Country/City, GeoLite2-ASN).
#[derive(serde::Deserialize, Default)]
struct GeoRecord<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentCode<'a>>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(serde::Deserialize, Default)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
struct ContinentCode<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// Adds to lines with `countries`, `continents` or `asns` every network of the configured
/// databases that matches; the most specific criterion wins (ASN, then country, then
/// continent). Explicit prefixes win over database networks of the same prefix.
fn geo_lines(
    ctx: &mut Ctx<'_>,
    s: &spec::Spec,
    base: &Path,
    lines: &mut [Line],
    seen: &mut HashMap<(u128, u8, bool), String>,
) {
    let mut matches: Vec<(usize, GeoMatch)> = Vec::new();
    for (i, l) in s.line.iter().enumerate() {
        let mut m = GeoMatch::default();
        if let Some(c) = &l.countries {
            m.countries = c.get_ref().iter().map(|x| x.to_ascii_uppercase()).collect();
        }
        if let Some(c) = &l.continents {
            m.continents = c.get_ref().iter().map(|x| x.to_ascii_uppercase()).collect();
        }
        if let Some(a) = &l.asns {
            for &n in a.get_ref() {
                match u32::try_from(n) {
                    Ok(v) => m.asns.push(v),
                    Err(_) => ctx.err(a, "line.asns", format!("{n} is not an AS number")),
                }
            }
        }
        if !(m.countries.is_empty() && m.continents.is_empty() && m.asns.is_empty()) {
            matches.push((i + 1, m));
        }
    }
    if matches.is_empty() {
        return;
    }
    let Some(geo) = &s.geoip else {
        let l = &s.line[matches[0].0 - 1];
        ctx.err(
            &l.name,
            "line",
            "countries, continents and asns need [geoip] databases = [\"...mmdb\"]",
        );
        return;
    };
    for db in geo.databases.get_ref() {
        let path = super::relative_to(base, db.get_ref());
        let reader = match maxminddb::Reader::open_readfile(&path) {
            Ok(r) => r,
            Err(e) => {
                ctx.err(
                    db,
                    "geoip.databases",
                    format!("cannot open {}: {e}", path.display()),
                );
                continue;
            }
        };
        let networks = match reader.networks(Default::default()) {
            Ok(n) => n,
            Err(e) => {
                ctx.err(
                    db,
                    "geoip.databases",
                    format!("cannot read {}: {e}", path.display()),
                );
                continue;
            }
        };
        for item in networks {
            let Ok(item) = item else {
                ctx.err(
                    db,
                    "geoip.databases",
                    format!("{} is corrupt", path.display()),
                );
                break;
            };
            let (Ok(net), Ok(Some(rec))) = (item.network(), item.decode::<GeoRecord<'_>>()) else {
                continue;
            };
            let country = rec.country.and_then(|c| c.iso_code);
            let continent = rec.continent.and_then(|c| c.code);
            let asn = rec.autonomous_system_number;
            let hit = matches
                .iter()
                .find(|(_, m)| asn.is_some_and(|a| m.asns.contains(&a)))
                .or_else(|| {
                    matches
                        .iter()
                        .find(|(_, m)| country.is_some_and(|c| m.countries.iter().any(|x| x == c)))
                })
                .or_else(|| {
                    matches.iter().find(|(_, m)| {
                        continent.is_some_and(|c| m.continents.iter().any(|x| x == c))
                    })
                });
            let Some(&(li, _)) = hit else { continue };
            let (key, v4) = match net.ip() {
                std::net::IpAddr::V4(a) => ((u32::from(a) as u128, net.prefix(), false), true),
                std::net::IpAddr::V6(a) => ((u128::from(a), net.prefix(), true), false),
            };
            if seen.contains_key(&key) {
                continue; // an explicit prefix (or an earlier database) decides it
            }
            seen.insert(key, lines[li].name.clone());
            if v4 {
                lines[li].v4.push((key.0 as u32, key.1));
            } else {
                lines[li].v6.push((key.0, key.1));
            }
        }
    }
}

fn parse_condition(s: &str) -> Option<Condition> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "any" => return Some(Condition::Any),
        "all" => return Some(Condition::All),
        _ => {}
    }
    let rest = s.strip_prefix("at least")?.trim();
    if let Some(p) = rest.strip_suffix('%') {
        let v: u32 = p.trim().parse().ok()?;
        (1..=100)
            .contains(&v)
            .then_some(Condition::AtLeastPercent(v))
    } else {
        let v: u32 = rest.parse().ok()?;
        (v >= 1).then_some(Condition::AtLeast(v))
    }
}

fn health_check(ctx: &mut Ctx<'_>, c: &spec::HealthCheckSpec) -> HealthCheck {
    let protocol = match c.protocol.get_ref().as_str() {
        "ping" => Protocol::Ping,
        "tcp" => Protocol::Tcp,
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        other => {
            ctx.err(
                &c.protocol,
                "health-check.protocol",
                format!("'{other}' is not one of \"ping\", \"tcp\", \"http\", \"https\""),
            );
            Protocol::Tcp
        }
    };
    let port = match (&c.port, protocol) {
        (Some(p), _) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
        (Some(p), _) => {
            ctx.err(
                p,
                "health-check.port",
                format!("{} is outside 1..=65535", p.get_ref()),
            );
            0
        }
        (None, Protocol::Http) => 80,
        (None, Protocol::Https) => 443,
        (None, Protocol::Ping) => 0,
        (None, Protocol::Tcp) => {
            ctx.err(&c.name, "health-check.port", "a tcp check needs a port");
            0
        }
    };
    let secs = |v: &Option<Spanned<f64>>,
                def: f64,
                min: f64,
                field: &str,
                ctx: &mut Ctx<'_>|
     -> Duration {
        match v {
            None => Duration::from_secs_f64(def),
            Some(x) if *x.get_ref() >= min && *x.get_ref() <= 3600.0 => {
                Duration::from_secs_f64(*x.get_ref())
            }
            Some(x) => {
                ctx.err(
                    x,
                    field.to_string(),
                    format!("{} seconds is outside {min}..=3600", x.get_ref()),
                );
                Duration::from_secs_f64(def)
            }
        }
    };
    let interval = secs(&c.interval, 60.0, 1.0, "health-check.interval", ctx);
    let timeout = secs(
        &c.timeout,
        5.0f64.min(interval.as_secs_f64()),
        0.01,
        "health-check.timeout",
        ctx,
    );
    if timeout > interval {
        if let Some(t) = &c.timeout {
            ctx.err(t, "health-check.timeout", "longer than the interval");
        }
    }
    let count = |v: &Option<Spanned<i64>>, def: u32, field: &str, ctx: &mut Ctx<'_>| -> u32 {
        match v {
            None => def,
            Some(x) if (1..=100).contains(x.get_ref()) => *x.get_ref() as u32,
            Some(x) => {
                ctx.err(
                    x,
                    field.to_string(),
                    format!("{} is outside 1..=100", x.get_ref()),
                );
                def
            }
        }
    };
    let down_after = count(&c.down_after, 3, "health-check.down-after", ctx);
    let up_after = count(&c.up_after, 2, "health-check.up-after", ctx);
    let packets = count(&c.packets, 3, "health-check.packets", ctx);
    let mut expect = Vec::new();
    if let Some(e) = &c.expect {
        for &code in e.get_ref() {
            if (100..=599).contains(&code) {
                expect.push(code as u16);
            } else {
                ctx.err(
                    e,
                    "health-check.expect",
                    format!("{code} is not an HTTP status code"),
                );
            }
        }
    }
    if expect.is_empty() {
        expect = vec![200];
    }
    let max_loss = match &c.max_loss {
        None => 100.0,
        Some(x) if (0.0..=100.0).contains(x.get_ref()) => *x.get_ref(),
        Some(x) => {
            ctx.err(x, "health-check.max-loss", "a percentage in 0..=100");
            100.0
        }
    };
    let max_rtt = match &c.max_rtt {
        None => Duration::from_secs(5),
        Some(x) if *x.get_ref() > 0.0 => Duration::from_secs_f64(x.get_ref() / 1000.0),
        Some(x) => {
            ctx.err(x, "health-check.max-rtt", "milliseconds above 0");
            Duration::from_secs(5)
        }
    };
    let mut sources = Vec::new();
    if let Some(list) = &c.sources {
        for src in list.get_ref() {
            match src.get_ref().parse::<std::net::IpAddr>() {
                Ok(a) if !sources.contains(&a) => sources.push(a),
                Ok(a) => ctx.err(src, "health-check.sources", format!("{a} is listed twice")),
                Err(_) => ctx.err(
                    src,
                    "health-check.sources",
                    format!("'{}' is not an IP address", src.get_ref()),
                ),
            }
        }
    }
    let failure_rate = match &c.failure_rate {
        None => 50,
        Some(r) if (1..=100).contains(r.get_ref()) => *r.get_ref() as u32,
        Some(r) => {
            ctx.err(
                r,
                "health-check.failure-rate",
                format!("{}% is outside 1..=100", r.get_ref()),
            );
            50
        }
    };
    let half_open = c.half_open.unwrap_or(false);
    if half_open && protocol != Protocol::Tcp {
        ctx.err(
            &c.protocol,
            "health-check.half-open",
            "half-open applies to tcp checks only",
        );
    }
    HealthCheck {
        half_open,
        sources,
        failure_rate,
        name: c.name.get_ref().clone(),
        protocol,
        port,
        interval,
        timeout,
        down_after,
        up_after,
        method: c
            .method
            .as_ref()
            .map_or("GET".into(), |m| m.get_ref().clone()),
        path: c.path.as_ref().map_or("/".into(), |p| p.get_ref().clone()),
        host: c.host.as_ref().map(|h| h.get_ref().clone()),
        expect,
        body_contains: c.body_contains.as_ref().map(|b| b.get_ref().clone()),
        tls_verify: c.tls_verify.unwrap_or(true),
        sni: c.sni.as_ref().map(|s| s.get_ref().clone()),
        packets,
        max_loss,
        max_rtt,
        at: ctx.at(&c.name),
    }
}

/// What access domains resolve names against.
struct AdScope<'a> {
    zones: &'a [Zone],
    pools: &'a [Pool],
    pool_idx: &'a HashMap<String, usize>,
    line_idx: &'a HashMap<String, usize>,
}

/// Validates access domain specs into `out` (duplicates are found once all files are in).
fn access_domains(
    ctx: &mut Ctx<'_>,
    specs: &[spec::AccessDomainSpec],
    scope: &AdScope<'_>,
    out: &mut Vec<AccessDomain>,
) {
    let AdScope {
        zones,
        pools,
        pool_idx,
        line_idx,
    } = *scope;
    for a in specs {
        let at = ctx.at(&a.name);
        let Ok(name) = parse_name(a.name.get_ref(), None)
            .map_err(|e| ctx.err(&a.name, "access-domain.name", e))
        else {
            continue;
        };
        // Nested zones: the most specific one holds the name.
        let zone = (0..zones.len())
            .filter(|&z| is_within(&name, &zones[z].name))
            .max_by_key(|&z| zones[z].name.len());
        let Some(zone) = zone else {
            ctx.err(
                &a.name,
                "access-domain.name",
                format!("{} is not inside any zone served here", display_name(&name)),
            );
            continue;
        };
        let rt = match a.rtype.get_ref().to_ascii_uppercase().as_str() {
            "A" => rtype::A,
            "AAAA" => rtype::AAAA,
            "CNAME" => rtype::CNAME,
            other => {
                ctx.err(
                    &a.rtype,
                    "access-domain.type",
                    format!("'{other}' is not one of A, AAAA, CNAME"),
                );
                continue;
            }
        };
        let want_kind = match rt {
            rtype::A => PoolKind::Ipv4,
            rtype::AAAA => PoolKind::Ipv6,
            _ => PoolKind::Domain,
        };
        let ttl = match &a.ttl {
            None => 30,
            Some(t) if (0..=0x7FFF_FFFF).contains(t.get_ref()) => *t.get_ref() as u32,
            Some(t) => {
                ctx.err(
                    t,
                    "access-domain.ttl",
                    format!("{} is outside 0..=2147483647", t.get_ref()),
                );
                30
            }
        };
        let policy = match a.policy.get_ref().as_str() {
            "global-availability" => PoolPolicy::GlobalAvailability {
                preemptive: a.preemptive.unwrap_or(true),
            },
            "weighted" => PoolPolicy::Weighted,
            "round-robin" => PoolPolicy::RoundRobin,
            "nearest" => PoolPolicy::Nearest,
            other => {
                ctx.err(&a.policy, "access-domain.policy", format!("'{other}' is not one of \"global-availability\", \"weighted\", \"round-robin\", \"nearest\""));
                continue;
            }
        };
        let resolve_pool = |n: &Spanned<String>, field: &str, ctx: &mut Ctx<'_>| -> Option<usize> {
            match pool_idx.get(n.get_ref()) {
                Some(&i) => {
                    if pools[i].kind != want_kind {
                        ctx.err(
                            n,
                            field.to_string(),
                            format!(
                                "pool '{}' holds {} addresses, which cannot answer type {}",
                                n.get_ref(),
                                pools[i].kind.name(),
                                type_name(rt)
                            ),
                        );
                    }
                    Some(i)
                }
                None => {
                    ctx.err(
                        n,
                        field.to_string(),
                        format!("unknown pool '{}'", n.get_ref()),
                    );
                    None
                }
            }
        };
        let mut pools = Vec::new();
        if let Some(ps) = &a.pools {
            for p in ps.get_ref() {
                let (pname, weight) = match p.get_ref() {
                    toml::Value::String(s) => (s.clone(), 1u32),
                    toml::Value::Table(t) => {
                        let n = t
                            .get("pool")
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                            .to_string();
                        let w = t.get("weight").and_then(|v| v.as_integer()).unwrap_or(1);
                        if !(1..=100).contains(&w) {
                            ctx.err(
                                p,
                                "access-domain.pools",
                                format!("weight {w} is outside 1..=100"),
                            );
                        }
                        (n, w.clamp(1, 100) as u32)
                    }
                    _ => {
                        ctx.err(
                            p,
                            "access-domain.pools",
                            "a pool name, or { pool = \"NAME\", weight = N }",
                        );
                        continue;
                    }
                };
                let sp = Spanned::new(p.span(), pname);
                if let Some(i) = resolve_pool(&sp, "access-domain.pools", ctx) {
                    pools.push((i, weight));
                }
            }
        }
        let mut line_routes = Vec::new();
        if let Some(ls) = &a.lines {
            if policy != PoolPolicy::Nearest {
                ctx.err(
                    ls,
                    "access-domain.lines",
                    "lines are only used by policy \"nearest\"",
                );
            }
            for (lname, lp) in ls.get_ref() {
                let Some(&li) = line_idx.get(lname) else {
                    ctx.err(lp, "access-domain.lines", format!("unknown line '{lname}'"));
                    continue;
                };
                let mut v = Vec::new();
                for p in lp.get_ref() {
                    if let Some(i) = resolve_pool(p, "access-domain.lines", ctx) {
                        v.push(i);
                    }
                }
                if v.is_empty() {
                    ctx.err(
                        lp,
                        "access-domain.lines",
                        format!("line '{lname}' has no pools"),
                    );
                }
                if li == 0 && pools.is_empty() {
                    pools = v.iter().map(|&p| (p, 1)).collect();
                } else if li != 0 {
                    line_routes.push((li, v));
                }
            }
        }
        let pools_given = a.pools.as_ref().is_some_and(|p| !p.get_ref().is_empty())
            || a.lines
                .as_ref()
                .is_some_and(|l| l.get_ref().contains_key(DEFAULT_LINE));
        if pools.is_empty() && !pools_given {
            let field = if policy == PoolPolicy::Nearest {
                "access-domain.lines"
            } else {
                "access-domain.pools"
            };
            ctx.errs.push(ConfigError::new(
                at.clone(),
                field,
                format!(
                    "access domain {} has no pools{}",
                    display_name(&name),
                    if policy == PoolPolicy::Nearest {
                        ": give `pools` or a `default` line"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let fallback = match (&a.fallback, &a.fallback_pool) {
            (_, Some(fp)) => match resolve_pool(fp, "access-domain.fallback-pool", ctx) {
                Some(i) => Fallback::Pool(i),
                None => Fallback::All,
            },
            (None, None) => Fallback::All,
            (Some(f), None) => match f.get_ref().as_str() {
                "all" => Fallback::All,
                "nodata" => Fallback::NoData,
                other => {
                    ctx.err(
                        f,
                        "access-domain.fallback",
                        format!("'{other}' is not \"all\" or \"nodata\" (or give fallback-pool)"),
                    );
                    Fallback::All
                }
            },
        };
        out.push(AccessDomain {
            name,
            zone,
            rtype: rt,
            ttl,
            enabled: a.enabled.unwrap_or(true),
            remarks: a.remarks.clone().unwrap_or_default(),
            policy,
            pools,
            lines: line_routes,
            fallback,
            at,
        });
    }
}

/// Largest included file: the TOML parser's working memory is about 25x the file, so
/// large models come as many files of moderate size.
pub const MAX_INCLUDE_BYTES: u64 = 64 << 20;

/// Expands `include` entries (paths or `dir/*.toml`-style patterns, `*` in the last
/// component only, relative to `base`) into sorted file lists.
fn expand_include(
    ctx: &mut Ctx<'_>,
    base: &Path,
    pat: &Spanned<String>,
) -> Vec<std::path::PathBuf> {
    let p = base.join(pat.get_ref());
    let file_name = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
    if !file_name.contains('*') {
        if pat.get_ref().contains('*') {
            ctx.err(
                pat,
                "include",
                "'*' may only appear in the last path component",
            );
            return Vec::new();
        }
        return vec![p];
    }
    let dir = p.parent().unwrap_or(Path::new("."));
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            ctx.err(
                pat,
                "include",
                format!("cannot list {}: {e}", dir.display()),
            );
            return Vec::new();
        }
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard(file_name, n))
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    if files.is_empty() {
        ctx.err(
            pat,
            "include",
            format!("'{}' matches no file", pat.get_ref()),
        );
    }
    files
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn wildcard(pat: &str, name: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// One included file's access domains and errors.
type Included = (Vec<AccessDomain>, Vec<ConfigError>);

/// Reads and validates the included files on one thread per CPU, each file's parse tree
/// dropped as soon as it is validated (so memory holds a few trees, never all of them);
/// returns each file's access domains and errors, in file order.
fn include_files(files: &[(Origin, std::path::PathBuf)], scope: &AdScope<'_>) -> Vec<Included> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Included>>> = Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                // Below the shards: a reload parses while they serve on the same CPUs.
                crate::sys::lower_thread_priority();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((from, path)) = files.get(i) else {
                        break;
                    };
                    let (mut ads, mut errs) = (Vec::new(), Vec::new());
                    include_file(&mut errs, from.clone(), path, scope, &mut ads);
                    done.lock().expect("include results")[i] = Some((ads, errs));
                }
            });
        }
    });
    done.into_inner()
        .expect("include results")
        .into_iter()
        .flatten()
        .collect()
}

/// Reads one included file of access domains and validates it.
fn include_file(
    errs: &mut Vec<ConfigError>,
    from: Origin,
    path: &Path,
    scope: &AdScope<'_>,
    out: &mut Vec<AccessDomain>,
) {
    let file: Arc<str> = path.display().to_string().into();
    let text = match std::fs::metadata(path).and_then(|m| {
        if m.len() > MAX_INCLUDE_BYTES {
            Err(std::io::Error::other(format!(
                "{} bytes, more than {MAX_INCLUDE_BYTES}: split it into several files",
                m.len()
            )))
        } else {
            std::fs::read_to_string(path)
        }
    }) {
        Ok(t) => t,
        Err(e) => {
            errs.push(ConfigError::new(from, "include", format!("{}: {e}", file)));
            return;
        }
    };
    let lines = Lines::new(&text);
    let spec: spec::IncludeSpec = match toml::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            let line = e.span().map(|s| lines.line(s.start)).unwrap_or(1);
            errs.push(ConfigError::new(
                Origin::new(&file, line),
                super::field_of_toml_error(&text, e.span()),
                e.message().trim().to_string(),
            ));
            return;
        }
    };
    let mut ctx = Ctx {
        file: &file,
        lines: &lines,
        errs,
    };
    access_domains(&mut ctx, &spec.access_domain, scope, out);
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn include_patterns() {
        assert!(wildcard("*.toml", "a.toml"));
        assert!(wildcard("*.toml", ".toml"));
        assert!(!wildcard("*.toml", "a.toml.bak"));
        assert!(wildcard("ads-*-v*.toml", "ads-eu-v2.toml"));
        assert!(!wildcard("ads-*-v*.toml", "ads-eu.toml"));
        assert!(wildcard("*", "anything"));
        assert!(!wildcard("a*a", "a"), "prefix and suffix may not overlap");
        assert!(wildcard("a*a", "aa"));
    }
}
