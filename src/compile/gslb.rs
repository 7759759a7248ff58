//! Compiles the GSLB model into [`GslbTables`] and the [`Model`] the health writer and the
//! control API use: one route per distinct candidate list (the default route, and one per
//! line with its own pools under the nearest policy), each route's fallback addresses,
//! the flattened line index, and each address's record data in wire form.

use crate::config::gslb::{AccessDomain, AddrValue, Fallback, Gslb, PoolPolicy};
use crate::config::name::display_name;
use crate::tables::gslb::{AdTable, AddrTable, GslbTables, LineIndex, PoolTable, RouteTable};
use crate::tables::{Model, Slot, NONE};

/// A route under construction: its lines and its (pool, weight) candidates.
type Route = (Vec<usize>, Vec<(usize, u32)>);

/// Builds the tables; `nodata` of each access domain is filled in by the zone compiler.
pub(super) fn compile(g: &Gslb, use_ecs: bool) -> (GslbTables, Model) {
    let mut t = GslbTables {
        use_ecs,
        ..Default::default()
    };
    for a in &g.addresses {
        let start = t.arena.len() as u32;
        let rdata: Vec<u8> = match &a.value {
            AddrValue::V4(v) => v.octets().to_vec(),
            AddrValue::V6(v) => v.octets().to_vec(),
            AddrValue::Name(n) => n.clone(),
        };
        t.arena
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        t.arena.extend_from_slice(&rdata);
        t.addrs.push(AddrTable {
            rdata_start: start,
            rdata_len: (rdata.len() + 2) as u16,
            weight: a.weight,
        });
    }
    for p in &g.pools {
        let start = t.pool_addrs.len() as u32;
        t.pool_addrs.extend(
            p.addresses
                .iter()
                .filter(|&&a| g.addresses[a].enabled)
                .map(|&a| a as u32),
        );
        t.pools.push(PoolTable {
            start,
            len: t.pool_addrs.len() as u32 - start,
            policy: p.policy,
            answers: p.answers as u32,
        });
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (i, l) in g.lines.iter().enumerate() {
        v4.extend(l.v4.iter().map(|&(n, len)| (n as u128, len, i as u32)));
        v6.extend(l.v6.iter().map(|&(n, len)| (n, len, i as u32)));
    }
    t.lines = LineIndex::build(&v4, &v6);
    let mut slots = Vec::new();
    for (ai, ad) in g.access_domains.iter().enumerate() {
        let mut line_route = vec![0u32; g.lines.len()];
        // (lines of the route, its (pool, weight) candidates); route 0 is the default line's.
        let mut routes: Vec<Route> = vec![(vec![0], ad.pools.clone())];
        if ad.policy == PoolPolicy::Nearest {
            for (li, pools) in &ad.lines {
                // The line's own pools first, then the default line's order.
                let mut v: Vec<(usize, u32)> = pools.iter().map(|&p| (p, 1)).collect();
                for &(p, w) in &ad.pools {
                    if !v.iter().any(|&(q, _)| q == p) {
                        v.push((p, w));
                    }
                }
                routes.push((vec![*li], v));
            }
            // Lines without pools of their own take their nearest ancestor's route.
            for (li, route) in line_route.iter_mut().enumerate() {
                let mut cur = Some(li);
                let mut hops = 0;
                while let Some(c) = cur {
                    if let Some(r) = routes.iter().position(|(ls, _)| ls[0] == c) {
                        *route = r as u32;
                        break;
                    }
                    cur = g.lines[c].parent;
                    hops += 1;
                    if hops > g.lines.len() {
                        break;
                    }
                }
            }
        }
        let base = t.routes.len() as u32;
        for (ri, (lines, pools)) in routes.iter().enumerate() {
            let start = t.route_pools.len() as u32;
            t.route_pools
                .extend(pools.iter().map(|&(p, w)| (p as u32, w)));
            let fb_start = t.fallback.len() as u32;
            match ad.fallback {
                Fallback::All => {
                    for &(p, _) in pools {
                        for &a in &g.pools[p].addresses {
                            if g.addresses[a].enabled
                                && !t.fallback[fb_start as usize..].contains(&(a as u32))
                            {
                                t.fallback.push(a as u32);
                            }
                        }
                    }
                }
                Fallback::Pool(p) => {
                    t.fallback.extend(
                        g.pools[p]
                            .addresses
                            .iter()
                            .filter(|&&a| g.addresses[a].enabled)
                            .map(|&a| a as u32),
                    );
                }
                Fallback::NoData => {}
            }
            if ad.rtype == crate::wire::parse::rtype::CNAME {
                t.fallback.truncate(fb_start as usize + 1); // one CNAME per name
            }
            t.routes.push(RouteTable {
                start,
                len: pools.len() as u32,
                slot: slots.len() as u32,
                fb_start,
                fb_len: t.fallback.len() as u32 - fb_start,
            });
            let mut names: Vec<&str> = lines.iter().map(|&l| g.lines[l].name.as_str()).collect();
            if ri == 0 && ad.policy == PoolPolicy::Nearest {
                names = g
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(li, _)| line_route[*li] == 0)
                    .map(|(_, l)| l.name.as_str())
                    .collect();
            }
            slots.push(Slot {
                ad: ai,
                pools: pools.iter().map(|&(p, _)| p).collect(),
                lines: names.join(","),
                tracked: matches!(
                    ad.policy,
                    PoolPolicy::GlobalAvailability { .. } | PoolPolicy::Nearest
                ),
            });
        }
        for r in &mut line_route {
            *r += base;
        }
        t.ads.push(AdTable {
            rtype: ad.rtype,
            ttl: ad.ttl,
            policy: ad.policy,
            line_route: line_route.into_boxed_slice(),
            nodata: NONE,
        });
    }
    let model = Model {
        lines: g.lines.iter().map(|l| l.name.clone()).collect(),
        checks: g.checks.clone(),
        addresses: g.addresses.clone(),
        pools: g.pools.clone(),
        access_domains: g.access_domains.clone(),
        slots,
    };
    (t, model)
}

/// `name TYPE` of an access domain, for logs and the API.
pub fn ad_key(ad: &AccessDomain) -> String {
    format!(
        "{} {}",
        display_name(&ad.name),
        crate::config::gslb::type_name(ad.rtype)
    )
}
