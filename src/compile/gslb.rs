//! Compiles the GSLB model into [`GslbTables`] and the [`Model`] the health writer and the
//! control API use: one route per distinct candidate list (the default route, and one per
//! line with its own pools under the nearest policy), each route's fallback addresses,
//! the flattened line index, and each address's record data in wire form.

use foldhash::HashMap;
use std::sync::Arc;

use crate::config::gslb::{AddrValue, Fallback, Gslb, PoolPolicy};
use crate::tables::gslb::{AdTable, AddrTable, GslbTables, LineIndex, PoolTable, RouteTable};
use crate::tables::{Model, Slot, NONE};

/// A route under construction: its own line ([`NONE`] for the default route) and its
/// (pool, weight) candidates.
type Route = (u32, Vec<(u32, u32)>);

/// Builds the tables; `nodata` of each access domain is filled in by the zone compiler.
pub(super) fn compile(g: &Arc<Gslb>, use_ecs: bool) -> (GslbTables, Model) {
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
    let nlines = g.lines.len();
    t.nlines = nlines as u32;
    // Interned rows and lists: a million access domains mostly repeat a few shapes.
    let mut patterns: HashMap<Vec<u32>, u32> = HashMap::default();
    let mut pool_lists: HashMap<Vec<(u32, u32)>, u32> = HashMap::default();
    let mut fb_lists: HashMap<Vec<u32>, u32> = HashMap::default();
    let mut slots = Vec::new();
    let mut line_route = vec![0u32; nlines];
    let mut routes: Vec<Route> = Vec::new();
    let mut fb: Vec<u32> = Vec::new();
    for (ai, ad) in g.access_domains.iter().enumerate() {
        line_route.fill(0);
        routes.clear();
        // (own line, (pool, weight) candidates); route 0 is the default line's.
        routes.push((NONE, ad.pools.iter().map(|&(p, w)| (p as u32, w)).collect()));
        if ad.policy == PoolPolicy::Nearest {
            for (li, pools) in &ad.lines {
                // The line's own pools first, then the default line's order.
                let mut v: Vec<(u32, u32)> = pools.iter().map(|&p| (p as u32, 1)).collect();
                for &(p, w) in &ad.pools {
                    if !v.iter().any(|&(q, _)| q == p as u32) {
                        v.push((p as u32, w));
                    }
                }
                routes.push((*li as u32, v));
            }
            // Lines without pools of their own take their nearest ancestor's route.
            for (li, route) in line_route.iter_mut().enumerate() {
                let mut cur = Some(li);
                let mut hops = 0;
                while let Some(c) = cur {
                    if let Some(r) = routes
                        .iter()
                        .position(|(l, _)| *l == c as u32 || (*l == NONE && c == 0))
                    {
                        *route = r as u32;
                        break;
                    }
                    cur = g.lines[c].parent;
                    hops += 1;
                    if hops > nlines {
                        break;
                    }
                }
            }
        }
        let base = t.routes.len() as u32;
        for (line, pools) in &routes {
            let start = *pool_lists.entry(pools.clone()).or_insert_with(|| {
                let start = t.route_pools.len() as u32;
                t.route_pools.extend_from_slice(pools);
                start
            });
            fb.clear();
            match ad.fallback {
                Fallback::All => {
                    for &(p, _) in pools {
                        for &a in &g.pools[p as usize].addresses {
                            if g.addresses[a].enabled && !fb.contains(&(a as u32)) {
                                fb.push(a as u32);
                            }
                        }
                    }
                }
                Fallback::Pool(p) => {
                    fb.extend(
                        g.pools[p]
                            .addresses
                            .iter()
                            .filter(|&&a| g.addresses[a].enabled)
                            .map(|&a| a as u32),
                    );
                }
                Fallback::NoData => {}
            }
            if ad.rtype == crate::dns::rtype::CNAME {
                fb.truncate(1); // one CNAME per name
            }
            let fb_start = *fb_lists.entry(fb.clone()).or_insert_with(|| {
                let start = t.fallback.len() as u32;
                t.fallback.extend_from_slice(&fb);
                start
            });
            t.routes.push(RouteTable {
                start,
                len: pools.len() as u32,
                fb_start,
                fb_len: fb.len() as u32,
            });
            slots.push(Slot {
                ad: ai as u32,
                line: *line,
            });
        }
        let next = patterns.len() as u32;
        let pattern = *patterns.entry(line_route.clone()).or_insert_with(|| {
            t.line_routes.extend_from_slice(&line_route);
            next
        });
        t.ads.push(AdTable {
            rtype: ad.rtype,
            ttl: ad.ttl,
            policy: ad.policy,
            routes: base,
            nroutes: routes.len() as u32,
            pattern,
            nodata: NONE,
        });
    }
    let model = Model {
        gslb: g.clone(),
        slots,
    };
    (t, model)
}
