//! The facts of an explanation, read from the compiled snapshot and its health state: who
//! asks, which line and prefix, and for each access domain on the answer's way its route,
//! candidate pools, the pool and addresses chosen and why.

use std::net::IpAddr;

use super::super::client::{self, Ecs, Reply};
use super::super::state::ServerState;
use crate::config::gslb::{AddrValue, AddressPolicy, Condition, Fallback, PoolPolicy};
use crate::config::Config;
use crate::dns::name::display_name;
use crate::dns::rtype;
use crate::tables::gslb::{ClientAddr, NO_POOL};
use crate::tables::{Snapshot, NONE};

/// Who asks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Asker {
    /// The address the line is looked up for.
    pub address: IpAddr,
    /// Where it comes from.
    pub from: String,
    /// An ECS option decided it (the answer then carries a scope).
    pub ecs: bool,
    /// The ECS was a v4-mapped IPv6 subnet (looked up as IPv4, scope + 96).
    #[serde(skip)]
    pub mapped: bool,
}

/// The asker per the server's rules: the ECS address when the query has one of a nonzero
/// source length and `[server] ecs` is on, else the resolver's address.
pub(super) fn asker(cfg: &Config, client: IpAddr, ecs: Option<&Ecs>) -> Asker {
    let resolver = |why: String| Asker {
        address: unmap(client),
        from: why,
        ecs: false,
        mapped: false,
    };
    match ecs {
        Some(e) if cfg.server.ecs && e.len > 0 => {
            let address = unmap(e.addr);
            Asker {
                address,
                from: format!("the ECS option ({e})"),
                ecs: true,
                mapped: e.addr.is_ipv6() && address.is_ipv4(),
            }
        }
        Some(e) if !cfg.server.ecs => resolver(format!(
            "the resolver's address {client}: [server] ecs = false ignores the ECS option ({e})"
        )),
        Some(_) => resolver(format!(
            "the resolver's address {client}: an ECS of source length 0 asks not to be located"
        )),
        None => resolver(format!("the resolver's address {client} (no ECS option)")),
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ClientAddr::from_ip(ip) {
        ClientAddr::V4(v) => IpAddr::V4(v.into()),
        ClientAddr::V6(v) => IpAddr::V6(v.into()),
    }
}

/// The line and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineMatch {
    /// Line name (`default`).
    pub name: String,
    /// Line index in the model (0: default).
    #[serde(skip)]
    pub index: usize,
    /// The most specific prefix of any line that holds the address.
    pub prefix: Option<String>,
    /// Where the line is declared.
    pub declared: Option<String>,
    /// The ECS scope that line decision gives (the largest block around the address that
    /// no more specific prefix touches), in the ECS option's terms.
    pub scope: u8,
}

/// The line of the asker, from the server's line index, and the prefix behind it.
pub(super) fn line_match(snap: &Snapshot, asker: &Asker) -> LineMatch {
    let ca = ClientAddr::from_ip(asker.address);
    let (li, scope) = snap.gslb.lines.lookup(ca);
    let (v, bits) = match ca {
        ClientAddr::V4(v) => (v as u128, 32u32),
        ClientAddr::V6(v) => (v, 128),
    };
    let holds = |net: u128, len: u8| {
        let host = bits - len as u32;
        host >= 128 || (v ^ net) >> host == 0
    };
    let mut best: Option<(u8, usize, u128)> = None;
    for (i, l) in snap.model.lines.iter().enumerate() {
        let prefixes: Vec<(u128, u8)> = if bits == 32 {
            l.v4.iter().map(|&(n, len)| (n as u128, len)).collect()
        } else {
            l.v6.clone()
        };
        for (net, len) in prefixes {
            if holds(net, len) && best.is_none_or(|b| len > b.0) {
                best = Some((len, i, net));
            }
        }
    }
    let line = &snap.model.lines[li as usize];
    let prefix = best.filter(|b| b.1 == li as usize).map(|(len, _, net)| {
        let ip: IpAddr = if bits == 32 {
            IpAddr::V4((net as u32).into())
        } else {
            IpAddr::V6(net.into())
        };
        format!("{ip}/{len}")
    });
    LineMatch {
        name: line.name.clone(),
        index: li as usize,
        declared: (li != 0).then(|| format!("{}:{}", line.at.file, line.at.line)),
        prefix,
        scope: if asker.mapped && scope > 0 {
            scope + 96
        } else {
            scope
        },
    }
}

/// An address of a candidate pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AddrView {
    /// Name.
    pub name: String,
    /// Value (address or domain name).
    pub value: String,
    /// Weight.
    pub weight: u32,
    /// Answered (enabled and up).
    pub up: bool,
    /// Why up or down.
    pub why: String,
}

/// A candidate pool of the route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolView {
    /// Name.
    pub name: String,
    /// Pool weight in the route (weighted pool policy).
    pub weight: u32,
    /// Its health condition holds (and it is enabled).
    pub healthy: bool,
    /// The condition and how many addresses are up.
    pub condition: String,
    /// Address policy and answer count.
    pub policy: String,
    /// Its addresses, in order.
    pub addresses: Vec<AddrView>,
}

/// One access domain on the answer's way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// `name TYPE`.
    pub access_domain: String,
    /// Pool policy.
    pub policy: String,
    /// TTL of its records.
    pub ttl: u32,
    /// The lines of the route the asker's line takes.
    pub route: String,
    /// Why that route.
    pub route_why: String,
    /// The route's candidate pools, in order.
    pub candidates: Vec<PoolView>,
    /// The pool answering (`None`: several may, or the fallback).
    pub pool: Option<String>,
    /// Why.
    pub pool_why: String,
    /// How the addresses are picked.
    pub addresses_why: String,
    /// Every address value an answer can hold now.
    pub possible: Vec<String>,
    /// Whether answers differ from query to query (within `possible`).
    pub varies: bool,
    /// The ECS scope of this selection (`None`: no ECS in the query).
    pub scope: Option<u8>,
}

/// The access domains the answer passes (the question name, then each CNAME target in
/// the answer), explained; notes for names that are not scheduled.
pub(super) fn steps(
    snap: &Snapshot,
    qname: &str,
    qtype: u16,
    line: &LineMatch,
    asker: &Asker,
    reply: &Reply,
    server: Option<&ServerState>,
) -> (Vec<Step>, Vec<String>) {
    let mut chain = vec![qname.to_string()];
    for rr in reply.answer.iter().filter(|r| r.rtype == "CNAME") {
        let target = client::absolute(&rr.data);
        if !chain.contains(&target) {
            chain.push(target);
        }
    }
    let (mut steps, mut notes) = (Vec::new(), Vec::new());
    let m = &snap.model;
    for name in &chain {
        let ads: Vec<usize> = (0..m.access_domains.len())
            .filter(|&i| display_name(&m.access_domains[i].name) == *name)
            .collect();
        let mut typed = false;
        for ai in ads.iter().copied() {
            let ad = &m.access_domains[ai];
            if ad.rtype != qtype && ad.rtype != rtype::CNAME {
                continue;
            }
            typed = true;
            let key = crate::config::gslb::ad_key(ad);
            if !ad.enabled {
                notes.push(format!(
                    "access domain {key} is disabled: the zone's own records answer"
                ));
                continue;
            }
            steps.push(step(snap, ai, line, asker, server));
        }
        if !ads.is_empty() && !typed {
            notes.push(format!(
                "{name} has access domains of other types only: a {} query gets the zone's records",
                client::type_name(qtype)
            ));
        }
    }
    if steps.is_empty() && notes.is_empty() {
        notes.push(match reply.rcode.as_str() {
            "REFUSED" => format!("{qname} is in no zone of this configuration: REFUSED"),
            _ => format!(
                "{qname} is not scheduled: the zone's records answer, the same for every line"
            ),
        });
    }
    (steps, notes)
}

fn value(v: &AddrValue) -> String {
    match v {
        AddrValue::V4(a) => a.to_string(),
        AddrValue::V6(a) => a.to_string(),
        AddrValue::Name(n) => display_name(n),
    }
}

/// Access domain `ai` for the asker's line: its route, pools and addresses.
fn step(
    snap: &Snapshot,
    ai: usize,
    line: &LineMatch,
    asker: &Asker,
    server: Option<&ServerState>,
) -> Step {
    let m = &snap.model;
    let ad = &m.access_domains[ai];
    let t = &snap.gslb.ads[ai];
    let slot = snap.gslb.route_of(t, line.index) as usize;
    let route = &snap.gslb.routes[slot];
    let weights = &snap.gslb.route_pools[route.start as usize..(route.start + route.len) as usize];
    let candidates: Vec<PoolView> = weights
        .iter()
        .map(|&(p, w)| pool_view(snap, p as usize, w, server))
        .collect();
    let (pool, pool_why) = pool_choice(snap, ai, slot, &candidates);
    let (addresses_why, possible, varies) = match pool {
        Some(p) => pick(snap, p),
        None => several(snap, ai, slot, &candidates),
    };
    let nearest = ad.policy == PoolPolicy::Nearest;
    Step {
        access_domain: crate::config::gslb::ad_key(ad),
        policy: ad.policy.name().to_string(),
        ttl: ad.ttl,
        route: snap.slot_key(slot).1,
        route_why: route_why(snap, ai, slot, line),
        candidates,
        pool: pool.map(|p| m.pools[p].name.clone()),
        pool_why,
        addresses_why,
        possible,
        varies,
        scope: asker.ecs.then_some(if nearest { line.scope } else { 0 }),
    }
}

/// Why the asker's line takes this route.
fn route_why(snap: &Snapshot, ai: usize, slot: usize, line: &LineMatch) -> String {
    let m = &snap.model;
    let ad = &m.access_domains[ai];
    if ad.policy != PoolPolicy::Nearest {
        return format!(
            "one route for every line: policy {} does not look at lines",
            ad.policy.name()
        );
    }
    let own = m.slots[slot].line;
    if own == NONE {
        if line.index == 0 {
            "the default line's pools".into()
        } else {
            format!(
                "line {} (nor any parent of it) has no pools of its own here: the default line's",
                line.name
            )
        }
    } else if own as usize == line.index {
        format!("line {}'s own pools, then the default line's", line.name)
    } else {
        format!(
            "line {} has no pools of its own here: those of its parent {}, then the default line's",
            line.name, m.lines[own as usize].name
        )
    }
}

fn pool_view(snap: &Snapshot, p: usize, weight: u32, server: Option<&ServerState>) -> PoolView {
    let m = &snap.model;
    let pool = &m.pools[p];
    let addresses: Vec<AddrView> = pool
        .addresses
        .iter()
        .map(|&a| {
            let addr = &m.addresses[a];
            let why = if !addr.enabled {
                "disabled".to_string()
            } else if let Some(st) = server {
                match st.addresses.get(&addr.name) {
                    Some(s) => format!("server: {}", s.why),
                    None => "not in the server's state: by its configuration".into(),
                }
            } else {
                match addr.mode {
                    crate::config::gslb::Mode::Auto => "assumed up (no --server)".into(),
                    m => format!(
                        "configured {}",
                        if m == crate::config::gslb::Mode::Up {
                            "up"
                        } else {
                            "down"
                        }
                    ),
                }
            };
            AddrView {
                name: addr.name.clone(),
                value: value(&addr.value),
                weight: addr.weight,
                up: snap.health.addr_up(a as u32),
                why,
            }
        })
        .collect();
    let up = addresses.iter().filter(|a| a.up).count();
    let cond = match pool.condition {
        Condition::Any => "any".to_string(),
        Condition::All => "all".to_string(),
        Condition::AtLeast(n) => format!("at least {n}"),
        Condition::AtLeastPercent(n) => format!("at least {n}%"),
    };
    let enabled = if pool.enabled { "" } else { ", pool disabled" };
    PoolView {
        name: pool.name.clone(),
        weight,
        healthy: snap.health.pool_up(p as u32),
        condition: format!(
            "{up} of {} addresses up, condition {cond}{enabled}",
            addresses.len()
        ),
        policy: format!(
            "{}, {} per answer",
            address_policy(pool.policy),
            pool.answers
        ),
        addresses,
    }
}

fn address_policy(p: AddressPolicy) -> &'static str {
    match p {
        AddressPolicy::RoundRobin => "round-robin",
        AddressPolicy::Weighted => "weighted",
        AddressPolicy::Sequential => "sequential",
    }
}

/// The pool answering and why, for the policies with one active pool (global
/// availability, nearest); `None` for weighted and round-robin (a draw per query) and the
/// fallback.
fn pool_choice(
    snap: &Snapshot,
    ai: usize,
    slot: usize,
    cands: &[PoolView],
) -> (Option<usize>, String) {
    let m = &snap.model;
    let ad = &m.access_domains[ai];
    let healthy: Vec<&PoolView> = cands.iter().filter(|p| p.healthy).collect();
    let unhealthy: Vec<&str> = cands
        .iter()
        .filter(|p| !p.healthy)
        .map(|p| p.name.as_str())
        .collect();
    let skipped = if unhealthy.is_empty() {
        String::new()
    } else {
        format!(" ({} unhealthy)", unhealthy.join(", "))
    };
    match ad.policy {
        PoolPolicy::GlobalAvailability { .. } | PoolPolicy::Nearest => {
            let active = snap.health.active(slot as u32);
            if active == NO_POOL {
                return (None, fallback_why(ad.fallback, m));
            }
            let name = m.pools[active as usize].name.clone();
            let first = healthy.first().map(|p| p.name.as_str());
            let why = if first == Some(name.as_str()) {
                format!("the first healthy pool in order{skipped}")
            } else {
                format!(
                    "non-preemptive: stays on {name}, the pool the server answers from now, though {} is healthy again",
                    first.unwrap_or("?")
                )
            };
            (Some(active as usize), why)
        }
        PoolPolicy::Weighted if !healthy.is_empty() => {
            let total: u32 = healthy.iter().map(|p| p.weight).sum();
            let shares: Vec<String> = healthy
                .iter()
                .map(|p| format!("{} {}/{total}", p.name, p.weight))
                .collect();
            (
                None,
                format!(
                    "drawn by pool weight per query among the healthy pools: {}{skipped}",
                    shares.join(", ")
                ),
            )
        }
        PoolPolicy::RoundRobin if !healthy.is_empty() => {
            let names: Vec<&str> = healthy.iter().map(|p| p.name.as_str()).collect();
            (
                None,
                format!(
                    "the healthy pools in turn, one per query: {}{skipped}",
                    names.join(", ")
                ),
            )
        }
        _ => (None, fallback_why(ad.fallback, m)),
    }
}

fn fallback_why(f: Fallback, m: &crate::tables::Model) -> String {
    let what = match f {
        Fallback::All => "every enabled address of the candidate pools".to_string(),
        Fallback::Pool(p) => format!("every enabled address of pool {}", m.pools[p].name),
        Fallback::NoData => "NODATA (fallback = \"nodata\")".to_string(),
    };
    format!("no candidate pool is healthy: the fallback, {what}")
}

/// The addresses pool `p` answers with now: (how, values, whether they vary per query).
fn pick(snap: &Snapshot, p: usize) -> (String, Vec<String>, bool) {
    let m = &snap.model;
    let pool = &m.pools[p];
    let up: Vec<usize> = pool
        .addresses
        .iter()
        .copied()
        .filter(|&a| m.addresses[a].enabled && snap.health.addr_up(a as u32))
        .collect();
    let n = pool.answers;
    let values = |list: &[usize]| {
        list.iter()
            .map(|&a| value(&m.addresses[a].value))
            .collect::<Vec<_>>()
    };
    match pool.policy {
        AddressPolicy::Sequential => {
            let chosen: Vec<usize> = up.iter().copied().take(n).collect();
            (
                format!("sequential: the first {n} up address(es) in order"),
                values(&chosen),
                false,
            )
        }
        AddressPolicy::RoundRobin if n >= up.len() => (
            format!(
                "round-robin: every up address ({}), rotated per query",
                up.len()
            ),
            values(&up),
            false,
        ),
        AddressPolicy::RoundRobin => (
            format!(
                "round-robin: {n} of the {} up addresses per query, in turn",
                up.len()
            ),
            values(&up),
            true,
        ),
        AddressPolicy::Weighted if n >= up.len() => (
            format!(
                "weighted: every up address ({}), in an order drawn by weight",
                up.len()
            ),
            values(&up),
            false,
        ),
        AddressPolicy::Weighted => {
            let total: u32 = up.iter().map(|&a| m.addresses[a].weight).sum();
            let shares: Vec<String> = up
                .iter()
                .map(|&a| format!("{} {}/{total}", m.addresses[a].name, m.addresses[a].weight))
                .collect();
            (
                format!(
                    "weighted: {n} drawn by weight per query among {}",
                    shares.join(", ")
                ),
                values(&up),
                true,
            )
        }
    }
}

/// No single active pool: the union over the healthy candidates (weighted, round-robin),
/// or the fallback list when none is healthy.
fn several(
    snap: &Snapshot,
    ai: usize,
    slot: usize,
    cands: &[PoolView],
) -> (String, Vec<String>, bool) {
    let m = &snap.model;
    let healthy: Vec<usize> = cands
        .iter()
        .filter(|c| c.healthy)
        .filter_map(|c| m.pools.iter().position(|p| p.name == c.name))
        .collect();
    let active = snap.health.active(slot as u32);
    let tracked = matches!(
        m.access_domains[ai].policy,
        PoolPolicy::GlobalAvailability { .. } | PoolPolicy::Nearest
    );
    if healthy.is_empty() || (tracked && active == NO_POOL) {
        let (g, mut values) = (&snap.gslb, Vec::new());
        g.each_fallback(&g.ads[ai], &g.routes[slot], |a| {
            values.push(value(&m.addresses[a as usize].value));
            true
        });
        let how = if values.is_empty() {
            "none: NODATA"
        } else {
            "the fallback list, all of it"
        };
        return (how.to_string(), values, false);
    }
    let mut all = Vec::new();
    let mut hows = Vec::new();
    let mut varies = healthy.len() > 1;
    for p in healthy {
        let (how, values, v) = pick(snap, p);
        hows.push(format!("{}: {how}", m.pools[p].name));
        varies |= v;
        for x in values {
            if !all.contains(&x) {
                all.push(x);
            }
        }
    }
    (hows.join("; "), all, varies)
}
