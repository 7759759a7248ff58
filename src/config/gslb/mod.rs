//! The GSLB model (Alibaba Cloud GTM 3.0 terms): lines, health check templates, addresses,
//! address pools and access domains, validated into index-linked structures. Every
//! reference (pool -> address, access domain -> pool, line -> parent) is resolved here, so
//! the compiler never meets a dangling name; each mistake is reported with file and line.

mod access_domain;
mod ad_set;
mod address;
mod geo;
mod health_check;
mod include;
mod layout;
mod line;
mod pool;
mod reader;
#[cfg(test)]
mod reader_tests;

pub use ad_set::{AdSet, Iter as AdSetIter, Seg};
use foldhash::{HashMap, HashMapExt};
pub use include::IncludeStats;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::Origin;
use super::spec;
use super::validate::Ctx;
use super::Zone;
use crate::dns::name::display_name;
use crate::dns::rtype;

pub use include::MAX_INCLUDE_BYTES;
#[doc(hidden)]
pub use reader::assert_agrees_with_toml;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// Every enabled address of the candidate pools.
    All,
    /// Every enabled address of this pool.
    Pool(usize),
    /// NODATA.
    NoData,
}

/// An access domain. Boxed slices rather than vectors: a million of them are most of a
/// large model's memory, and none grows once validated.
#[derive(Debug, Clone)]
pub struct AccessDomain {
    /// Lowercased wire name.
    pub name: Box<[u8]>,
    /// Zone index.
    pub zone: usize,
    /// Record type (A, AAAA, CNAME).
    pub rtype: u16,
    /// TTL of the answers.
    pub ttl: u32,
    /// Disabled: the zone's own records answer.
    pub enabled: bool,
    /// Free text, if given.
    pub remarks: Option<Box<str>>,
    /// Pool policy.
    pub policy: PoolPolicy,
    /// Default route: pool indices with their weights.
    pub pools: Box<[(u32, u32)]>,
    /// Nearest: line index -> pool indices, in order. Shared by the access domains of a
    /// file that map lines alike ([`LineShapes`]): a million access domains mostly
    /// repeat a few maps, each a dozen small allocations.
    pub lines: LineMap,
    /// Fallback.
    pub fallback: Fallback,
    /// Where declared.
    pub at: Origin,
}

impl AccessDomain {
    /// At most how many (pool, weight) entries its routes' candidate lists hold: its
    /// pools, and under the nearest policy each line's own pools followed by them.
    pub fn candidate_entries(&self) -> usize {
        let own: usize = self.lines.iter().map(|(_, p)| p.len()).sum();
        self.pools.len() * self.route_count() + own
    }

    /// Its routes: the default one, and under the nearest policy one per line with pools
    /// of its own (what its rows take in the compiled tables).
    pub fn route_count(&self) -> usize {
        1 + if self.policy == PoolPolicy::Nearest {
            self.lines.len()
        } else {
            0
        }
    }
}

/// An access domain's lines with pools of their own: (line index, pool indices).
pub type LineMap = Arc<[(u32, Box<[u32]>)]>;

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
    pub access_domains: AdSet,
    /// How the included files were read (shared with the last load, or validated).
    pub includes: IncludeStats,
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

/// The names of the tables validated so far, each to its index: what later tables resolve
/// their references against.
#[derive(Default)]
struct Names {
    /// Lines, `default` included (index 0).
    lines: HashMap<String, usize>,
    /// Health check templates.
    checks: HashMap<String, usize>,
    /// Addresses.
    addresses: HashMap<String, usize>,
    /// Pools.
    pools: HashMap<String, usize>,
}

/// What access domains resolve against, shared by the threads that validate included
/// files: the zones, the pools, and the names.
struct Scope<'a> {
    zones: &'a [Zone],
    pools: &'a [Pool],
    names: &'a Names,
}

/// Indexes a table's entries by name; an empty name or one declared twice is an error.
fn index_names<'a>(
    what: &str,
    names: impl Iterator<Item = &'a Spanned<String>>,
    ctx: &mut Ctx<'_>,
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

/// Validates the GSLB part of the spec against the zones, table by table in the order they
/// refer to one another: lines, health checks, addresses, pools, access domains.
pub(super) fn load(s: &spec::Spec, ctx: &mut Ctx<'_>, zones: &[Zone]) -> Gslb {
    let (mut g, names) = tables(s, ctx);
    let scope = Scope {
        zones,
        pools: &g.pools,
        names: &names,
    };
    // The main file's access domains, then the included files' in order.
    let mut ads = AdSet::default();
    ads.push(access_domain::validate_all(&s.access_domain, ctx, &scope).into());
    let patterns = s.include.as_deref().unwrap_or_default();
    g.includes = include::load(patterns, ctx, &scope, &mut ads);
    access_domain::check_all(&ads, ctx, zones);
    if ctx.errs.is_empty() {
        layout::keep_places(ctx.file, &mut ads);
        layout::note(ctx.file, &ads);
        note_places(ctx.file, &g);
    }
    g.access_domains = ads;
    g
}

/// The tables access domains refer to (lines, health checks, addresses, pools), and their
/// names.
fn tables(s: &spec::Spec, ctx: &mut Ctx<'_>) -> (Gslb, Names) {
    let mut names = Names {
        lines: line::index(&s.line, ctx),
        ..Names::default()
    };
    let mut g = Gslb {
        lines: line::load(s, ctx, &names),
        ..Gslb::default()
    };
    if ctx.errs.is_empty() {
        keep_line_places(ctx.file, &mut g.lines, &mut names.lines);
    }
    let checks = s.health_check.iter().map(|c| &c.name);
    names.checks = index_names("health-check", checks, ctx);
    g.checks = s.health_check.iter().map(|c| c.validate(ctx)).collect();
    names.addresses = index_names("address", s.address.iter().map(|a| &a.name), ctx);
    g.addresses = s.address.iter().map(|a| a.validate(ctx, &names)).collect();
    names.pools = index_names("pool", s.pool.iter().map(|p| &p.name), ctx);
    g.pools = s
        .pool
        .iter()
        .map(|p| p.validate(ctx, &names, &g.addresses))
        .collect();
    if ctx.errs.is_empty() {
        keep_pool_places(ctx.file, &mut g.pools, &mut names.pools);
    }
    (g, names)
}

/// The lines and pools of the last load of each main file that had no error, in the
/// order that load placed them.
#[derive(Default)]
struct Places {
    lines: Vec<String>,
    pools: Vec<String>,
}

static PLACES: std::sync::Mutex<Option<HashMap<Arc<str>, Places>>> = std::sync::Mutex::new(None);

/// The order that puts each name `last` had at its place there, then the others in their
/// own order, and the last of all at the place of each name `last` had and `names` has
/// not (none moves but that one): new place -> index in `names`; `None` when that is
/// their order.
fn filling<'a>(last: &[String], names: impl Iterator<Item = &'a str>) -> Option<Vec<usize>> {
    let names: Vec<&str> = names.collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut order: Vec<Option<usize>> = last
        .iter()
        .map(|n| index.get(n.as_str()).copied())
        .collect();
    let mut seen = vec![false; names.len()];
    order.iter().flatten().for_each(|&i| seen[i] = true);
    order.extend((0..names.len()).filter(|&i| !seen[i]).map(Some));
    let mut h = 0;
    while h < order.len() {
        while matches!(order.last(), Some(None)) {
            order.pop();
        }
        if order.get(h) == Some(&None) {
            order[h] = order.pop().flatten();
        }
        h += 1;
    }
    let order: Vec<usize> = order.into_iter().flatten().collect();
    (!order.iter().enumerate().all(|(k, &i)| k == i)).then_some(order)
}

/// `items` in `order` (new place -> old index).
fn reorder<T>(items: &mut Vec<T>, order: &[usize]) {
    let mut taken: Vec<Option<T>> = std::mem::take(items).into_iter().map(Some).collect();
    *items = order.iter().filter_map(|&i| taken[i].take()).collect();
}

/// Puts the pools the last load of `main` had at the places it had them, then the others
/// in file order, and the last pool in the place of each pool removed: a pool added
/// anywhere in the file, pools reordered, or a pool removed leave every other pool's index
/// as it was (but the last one's), so the included files validated against them are
/// shared and the tables compile incrementally (pools are named, never numbered,
/// wherever the order shows: an access domain's list keeps its own order). The first
/// load of a file, and `gtmd check`, take the file's order.
fn keep_pool_places(main: &Arc<str>, pools: &mut Vec<Pool>, names: &mut HashMap<String, usize>) {
    let now = pools.iter().map(|p| p.name.as_str());
    let Some(order) = places_of(main, |p| &p.pools, now) else {
        return;
    };
    reorder(pools, &order);
    for (i, p) in pools.iter().enumerate() {
        names.insert(p.name.clone(), i);
    }
}

/// The same for lines (`default` stays first): a line added anywhere in the file, the
/// usual change to lines, is placed after the others, and a line removed leaves its
/// place to the last one, so every access domain keeps its lines' indices (but those
/// naming that one) and the included files are shared; parents are renumbered.
fn keep_line_places(main: &Arc<str>, lines: &mut Vec<Line>, names: &mut HashMap<String, usize>) {
    let now = lines.iter().map(|l| l.name.as_str());
    let Some(order) = places_of(main, |p| &p.lines, now) else {
        return;
    };
    let mut to = vec![0; order.len()];
    for (k, &i) in order.iter().enumerate() {
        to[i] = k;
    }
    reorder(lines, &order);
    for l in lines.iter_mut() {
        l.parent = l.parent.map(|p| to[p]);
    }
    for (i, l) in lines.iter().enumerate() {
        names.insert(l.name.clone(), i);
    }
}

/// [`filling`] against the names (`which` of them) the last load of `main` placed;
/// `None` the first time, or when nothing moves.
fn places_of<'a>(
    main: &Arc<str>,
    which: fn(&Places) -> &Vec<String>,
    now: impl Iterator<Item = &'a str>,
) -> Option<Vec<usize>> {
    let last = PLACES.lock().unwrap_or_else(|e| e.into_inner());
    filling(which(last.as_ref()?.get(main)?), now)
}

/// Notes the lines and pools of a load of `main` that had no error, for the next one.
fn note_places(main: &Arc<str>, g: &Gslb) {
    let mut places = PLACES.lock().unwrap_or_else(|e| e.into_inner());
    let names = |v: &mut dyn Iterator<Item = &String>| v.cloned().collect();
    places.get_or_insert_with(HashMap::new).insert(
        main.clone(),
        Places {
            lines: names(&mut g.lines.iter().map(|l| &l.name)),
            pools: names(&mut g.pools.iter().map(|p| &p.name)),
        },
    );
}

#[cfg(test)]
mod pool_places_tests {
    use crate::config::Config;

    /// A pool inserted before the others, and pools reordered, keep the places the last
    /// load of the same file gave them (new ones after), and access domains name the
    /// pools they say; another file, or the first load, takes the file's order; a pool
    /// removed leaves its place to the last one.
    #[test]
    fn pools_keep_their_places_across_loads_of_a_file() {
        let dir = std::env::temp_dir().join(format!("gtmd-places-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, pools: &[&str]| {
            let mut t = "version = 1\n[[zone]]\nname = \"e.test.\"\n\
                         soa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
                         [[address]]\nname = \"a\"\nvalue = \"192.0.2.1\"\n"
                .to_string();
            for p in pools {
                t += &format!("[[pool]]\nname = \"{p}\"\ntype = \"ipv4\"\naddresses = [\"a\"]\n");
            }
            for p in pools {
                t += &format!(
                    "[[access-domain]]\nname = \"{p}.e.test.\"\ntype = \"A\"\n\
                     policy = \"global-availability\"\npools = [\"{p}\"]\n"
                );
            }
            std::fs::write(dir.join(file), t).unwrap();
            dir.join(file)
        };
        let load = |path: &std::path::Path| {
            let c = Config::from_file(path).unwrap();
            let g = &c.gslb;
            let order: Vec<String> = g.pools.iter().map(|p| p.name.clone()).collect();
            for ad in &g.access_domains {
                let named = &g.pools[ad.pools[0].0 as usize].name;
                assert_eq!(
                    format!("{named}.e.test."),
                    crate::dns::name::display_name(&ad.name)
                );
            }
            order
        };
        let main = write("main.toml", &["p1", "p2"]);
        assert_eq!(load(&main), ["p1", "p2"]);
        write("main.toml", &["p0", "p1", "p2"]);
        assert_eq!(
            load(&main),
            ["p1", "p2", "p0"],
            "inserted first, placed last"
        );
        write("main.toml", &["p2", "p0", "p3", "p1"]);
        assert_eq!(
            load(&main),
            ["p1", "p2", "p0", "p3"],
            "reordered: places kept"
        );
        let other = write("other.toml", &["p2", "p0", "p3", "p1"]);
        assert_eq!(
            load(&other),
            ["p2", "p0", "p3", "p1"],
            "another file: its own order"
        );
        write("main.toml", &["p2", "p0", "p1"]);
        assert_eq!(load(&main), ["p1", "p2", "p0"], "p3 removed");
        write("main.toml", &["p2", "p0"]);
        assert_eq!(
            load(&main),
            ["p0", "p2"],
            "p1 removed: the last takes its place"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
