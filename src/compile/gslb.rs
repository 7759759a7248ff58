//! Compiles the GSLB model into [`GslbTables`] and the [`Model`] the health writer and the
//! control API use: one route per distinct candidate list (the default route, and one per
//! line with its own pools under the nearest policy), the flattened line index, and each
//! address's record data in wire form.

use foldhash::HashMap;
use std::sync::Arc;

use crate::config::gslb::{AccessDomain, AddrValue, Fallback, Gslb, PoolPolicy};
use crate::tables::chunked::{Builder, Chunked};
use crate::tables::gslb::{
    fallback_code, AdTable, AddrTable, GslbTables, LineIndex, PoolTable, RouteInterner, RouteTable,
};
use crate::tables::{Model, Reuse, Slot, Snapshot, NONE};

/// Builds the tables; `nodata` of each access domain is filled in by the zone compiler.
/// With `prev`, when the addresses, pools and lines compile to the same tables, the rows
/// of every access-domain segment shared with `prev`'s model are taken from it and only
/// the others are compiled ([`Reuse`]): in place, in copies of the chunks they touch, when
/// every access domain keeps its index and its number of routes (`in_place`); else by
/// copying the shared rows into new tables (`incremental`).
pub(super) fn compile(
    g: &Arc<Gslb>,
    use_ecs: bool,
    prev: Option<&Snapshot>,
) -> (GslbTables, Model, Reuse) {
    let from = prev.map(|p| (p, line_places(&p.model, g)));
    // Without one (a reload refused after its compile dropped it), read back from the
    // tables rather than compile them all.
    let interner = (from.as_ref())
        .map(|(p, _)| take_interner(&p.reuse).unwrap_or_else(|| super::reindex::rebuild(p)));
    match (from, interner) {
        (Some((p, places)), Some(mut interner)) => {
            // Room for the lists the reload may add, but no more than the arena holds
            // (or a million entries, 8 MB, for a small one): a reload that compiles
            // every access domain again mostly finds its lists stored, and past that
            // room the arena grows as a vector does.
            let arena = p.gslb.route_pools.len().max(1 << 20);
            let room = new_entries_at_most(g, &p.model).min(arena);
            let mut t = p.gslb.clone_shared(room);
            // Read per query only: no row depends on it.
            t.use_ecs = use_ecs;
            relayout_lines(&mut t, &mut interner, (g, &p.model.lines), &places);
            let health = refresh(&mut t, &p.model, g);
            let mut out = match changed_in_place(g, p) {
                Some((changed, added)) => in_place(g, p, (t, interner), (&changed, added)),
                None => incremental(g, p, (t, interner)),
            };
            out.2.health_fresh = health;
            match reclaim(&mut out) {
                true => out,
                false => full(g, use_ecs),
            }
        }
        _ => full(g, use_ecs),
    }
}

/// At most how many candidate-list entries compiling `g` from `m` appends: those of the
/// access domains not at the same place in both (each list stored once at most). Copied
/// with this much room (up to the arena's size), the arena need not grow by doubling:
/// that would keep twice its size, and copy it beside the serving snapshot's. (A short
/// tail that [`in_place`] compiles again after a removal may pass it, as may a reload
/// that compiles more than the arena holds: the arena then grows as a vector does.)
fn new_entries_at_most(g: &Gslb, m: &Model) -> usize {
    let runs = g.access_domains.beside(&m.access_domains);
    (runs.filter(|r| !r.same))
        .flat_map(|r| r.mine.iter())
        .map(|ad| ad.candidate_entries())
        .sum()
}

/// Past this many times the entries the stored-once lists had after the last compaction
/// (plus [`LISTS_SLACK`]), the lists no row names any more are reclaimed (under test, at
/// any growth, so that the randomised reloads compact often).
const LISTS_GROWTH: usize = if cfg!(test) { 1 } else { 2 };
const LISTS_SLACK: usize = if cfg!(test) { 0 } else { 1 << 16 };

/// Lists no row uses any more pile up in the stored-once arrays across incremental
/// reloads: past [`LISTS_GROWTH`] times their size at the last compaction, they are
/// reclaimed in place ([`compact::compact`]). `false`: that could not be done, or left
/// more than half the entries dead (lengths that no live list has): the caller compiles
/// in full.
fn reclaim((t, _, reuse): &mut (GslbTables, Model, Reuse)) -> bool {
    if lists_len(t) <= LISTS_GROWTH * reuse.lists_baseline + LISTS_SLACK {
        return true;
    }
    let mut held = reuse.interner.lock().unwrap_or_else(|e| e.into_inner());
    let Some(live) = held
        .as_mut()
        .and_then(|seen| super::compact::compact(t, seen))
    else {
        return false;
    };
    reuse.lists_baseline = lists_len(t);
    reuse.compacted = true;
    lists_len(t) <= 2 * live + LISTS_SLACK
}

/// Brings the tables that do not grow with access domains (addresses, pools, line
/// prefixes), copied from the last snapshot into `t`, up to date with `g` where they
/// differ (rows name pools by index, and fallbacks are walked from the pools, so no row
/// changes). Returns whether the pools' health may be worked out from other tables than
/// the serving snapshot's: more pools, other members, or other addresses enabled (a
/// weight, a value, a pool's policy or answers leave it as it was).
fn refresh(t: &mut GslbTables, m: &Model, g: &Gslb) -> bool {
    let o = &m.gslb;
    let lines_same = o.lines.len() == g.lines.len()
        && o.lines
            .iter()
            .zip(&g.lines)
            .all(|(a, b)| (&a.name, &a.v4, &a.v6) == (&b.name, &b.v4, &b.v6));
    if !lines_same {
        t.lines = line_index(g);
    }
    let addrs_same = o.addresses.len() == g.addresses.len()
        && o.addresses
            .iter()
            .zip(&g.addresses)
            .all(|(a, b)| (&a.value, a.weight, a.enabled) == (&b.value, b.weight, b.enabled));
    // By name too: a pool at another index makes the health state new (every chunk of
    // active pools copied, for the indices they hold; `Writer::replace` relies on it).
    let pools_same = o.pools.len() == g.pools.len()
        && o.pools.iter().zip(&g.pools).all(|(a, b)| {
            (&a.name, &a.addresses, a.policy, a.answers)
                == (&b.name, &b.addresses, b.policy, b.answers)
        });
    if addrs_same && pools_same {
        return false;
    }
    let enabled =
        |m: &[crate::config::gslb::Address]| m.iter().map(|a| a.enabled).collect::<Vec<_>>();
    let health_same = o.pools.len() == g.pools.len()
        && o.pools
            .iter()
            .zip(&g.pools)
            .all(|(a, b)| (&a.name, &a.addresses) == (&b.name, &b.addresses))
        && enabled(&o.addresses) == enabled(&g.addresses);
    (t.addrs, t.arena, t.pools, t.pool_addrs) = Default::default();
    (t.addr_pools, t.addr_pools_at) = Default::default();
    addresses(t, g);
    pools(t, g);
    !health_same
}

/// The interner of the snapshot `reuse` belongs to: a copy when it is small (a reload
/// refused after its compile then leaves it to the next one), else the interner itself
/// (and the next reload after a refused one reads it back from the tables).
fn take_interner(reuse: &Reuse) -> Option<Box<RouteInterner>> {
    let mut held = reuse.interner.lock().ok()?;
    match held.as_ref() {
        Some(i) if i.len() < 100_000 => Some(i.clone()),
        _ => held.take(),
    }
}

/// Every table compiled afresh.
fn full(g: &Arc<Gslb>, use_ecs: bool) -> (GslbTables, Model, Reuse) {
    let mut t = GslbTables {
        use_ecs,
        ..Default::default()
    };
    addresses(&mut t, g);
    pools(&mut t, g);
    t.lines = line_index(g);
    t.nlines = g.lines.len() as u32;
    let mut routes = Routes::new(g.lines.len(), Box::default());
    let mut rows = Rows::default();
    for (ai, ad) in g.access_domains.iter().enumerate() {
        rows.push(&mut routes, &mut t, g, ai as u32, ad);
    }
    let n = g.access_domains.len() as u32;
    let slots = rows.finish(&mut t);
    let mut reuse = Reuse::made(0, Vec::new(), n);
    reuse.lists_baseline = lists_len(&t);
    let mut out = routes.finish(t, g, reuse);
    out.1.slots = slots;
    out
}

/// Entries of the stored-once lists.
fn lists_len(t: &GslbTables) -> usize {
    t.route_pools.len() + t.line_routes.len()
}

/// The rows being built: access domains, routes, slots.
#[derive(Default)]
struct Rows {
    ads: Builder<AdTable>,
    routes: Builder<RouteTable>,
    slots: Builder<Slot>,
}

impl Rows {
    /// Compiles access domain `ai` onto the end.
    fn push(&mut self, r: &mut Routes, t: &mut GslbTables, g: &Gslb, ai: u32, ad: &AccessDomain) {
        let row = r.add(t, g, ai, ad, self.routes.len() as u32);
        self.ads.push(row);
        self.routes.extend(r.out.iter().copied());
        self.slots.extend(r.out_slots.iter().copied());
    }

    fn finish(self, t: &mut GslbTables) -> Chunked<Slot> {
        t.ads = self.ads.finish();
        t.routes = self.routes.finish();
        self.slots.finish()
    }
}

/// Per old index, whether it now holds another item (or none).
fn moved_at<T>(old: &[T], new: &[T], name: impl Fn(&T) -> &String) -> Vec<bool> {
    let at = |(i, o): (usize, &T)| new.get(i).is_none_or(|n| name(n) != name(o));
    old.iter().enumerate().map(at).collect()
}

/// Whether `ad` names a pool or a line whose index is marked in `marked` (pools, lines).
fn names_any(ad: &AccessDomain, (pools, lines): &(Vec<bool>, Vec<bool>)) -> bool {
    let at = |m: &[bool], i: usize| m.get(i).copied().unwrap_or(false);
    ad.pools.iter().any(|&(p, _)| at(pools, p as usize))
        || ad
            .lines
            .iter()
            .any(|(l, ps)| at(lines, *l as usize) || ps.iter().any(|&p| at(pools, p as usize)))
        || matches!(ad.fallback, Fallback::Pool(p) if at(pools, p))
}

/// At most this many access domains at the end are compiled again by [`in_place`] when
/// they moved.
#[cfg(not(test))]
const MAX_TAIL: usize = 4096;
/// Few under test, so that the models of a few dozen access domains take the copying
/// path too.
#[cfg(test)]
const MAX_TAIL: usize = 1;

/// Where `g`'s access domains differ from `prev`'s, if the access domain at every index
/// both have has the number of routes it has in `prev` (mostly the same one: the layout
/// of the model sees to it, [`crate::config::gslb::AdSet`]; else one that took the
/// place of one removed): the ranges of indices whose rows differ, and the number of
/// indices both have (those after are new in `g`, or gone from `prev`); else `None`.
fn changed_in_place(g: &Gslb, prev: &Snapshot) -> Option<(Vec<std::ops::Range<usize>>, usize)> {
    let (old, new) = (&prev.model.access_domains, &g.access_domains);
    let mut changed: Vec<std::ops::Range<usize>> = Vec::new();
    // Access domains at a place another had: past `MAX_TAIL` of them (the ones after a
    // removal moved up), copying the rows is cheaper.
    let mut others = 0;
    // Old pool indices that now hold another pool (or none): a row naming one is
    // compiled again even when its indices are the same.
    let moved = (
        moved_at(&prev.model.pools, &g.pools, |p| &p.name),
        moved_at(&prev.model.lines, &g.lines, |l| &l.name),
    );
    let any_moved = moved.0.contains(&true) || moved.1.contains(&true);
    for run in new.beside(old) {
        let Some(theirs) = run.theirs else {
            break; // new access domains, from here on
        };
        if run.same {
            continue; // the very same access domains, read once
        }
        for (k, (y, x)) in run.mine.iter().zip(theirs).enumerate() {
            let i = run.at + k;
            if prev.gslb.ads[i].nroutes as usize != y.route_count() {
                // From here on compiled again, when that is a short tail (an access
                // domain that took the place of one removed moved the ones after it).
                let tail = old.len().max(new.len()) - i;
                return (tail <= MAX_TAIL).then_some((changed, i));
            }
            // Only the access domains that differ: a row is a function of its access
            // domain and of the pools' and lines' indices and the lines' parents, which
            // are the same.
            if (&x.name, x.rtype) != (&y.name, y.rtype) {
                others += 1;
                if others > MAX_TAIL {
                    return None;
                }
            } else if (x.ttl, x.policy, &x.pools, &x.lines, x.fallback)
                == (y.ttl, y.policy, &y.pools, &y.lines, y.fallback)
                && !(any_moved && names_any(y, &moved))
            {
                continue;
            }
            match changed.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => changed.push(i..i + 1),
            }
        }
    }
    Some((changed, old.len().min(new.len())))
}

/// `prev`'s tables with the rows of the access domains in `changed` compiled again in
/// their places (each keeps its index and its routes' slots), those past the `kept`
/// first left out, and those of the access domains from `kept` on appended: only the
/// chunks they touch are copied; everything else, health's active pools included, is
/// shared.
fn in_place(
    g: &Arc<Gslb>,
    prev: &Snapshot,
    (mut t, interner): (GslbTables, Box<RouteInterner>),
    (changed, kept): (&[std::ops::Range<usize>], usize),
) -> (GslbTables, Model, Reuse) {
    let old = &prev.gslb;
    let mut routes = Routes::new(g.lines.len(), interner);
    let mut touched: Vec<std::ops::Range<usize>> = Vec::new();
    let mut rows_changed = changed.to_vec();
    let mut compiled = 0;
    let n = g.access_domains.len();
    let mut slots = if kept < n || kept < old.ads.len() {
        // The kept access domains' routes come first, in order.
        let routes_end = old
            .ads
            .get(kept)
            .map_or(old.routes.len(), |a| a.routes as usize);
        let mut rows = Rows {
            ads: Builder::from_prefix(&old.ads, kept),
            routes: Builder::from_prefix(&old.routes, routes_end),
            slots: Builder::from_prefix(&prev.model.slots, routes_end),
        };
        for ai in kept..n {
            rows.push(&mut routes, &mut t, g, ai as u32, &g.access_domains[ai]);
            compiled += 1;
        }
        if routes_end < rows.routes.len() {
            touched.push(routes_end..rows.routes.len());
            rows_changed.push(kept..n);
        }
        rows.finish(&mut t)
    } else {
        (t.ads, t.routes) = (old.ads.clone(), old.routes.clone());
        prev.model.slots.clone()
    };
    for ai in changed.iter().flat_map(Clone::clone) {
        let base = old.ads[ai].routes;
        let row = routes.add(&mut t, g, ai as u32, &g.access_domains[ai], base);
        *t.ads.make_mut(ai) = row;
        for (k, (r, sl)) in routes.out.iter().zip(&routes.out_slots).enumerate() {
            let s = base as usize + k;
            *t.routes.make_mut(s) = *r;
            *slots.make_mut(s) = *sl;
        }
        let (from, to) = (base as usize, base as usize + routes.out.len());
        match touched.last_mut() {
            Some(r) if r.end == from => r.end = to,
            _ => touched.push(from..to),
        }
        compiled += 1;
    }
    touched.sort_unstable_by_key(|r| r.start);
    let mut reuse = Reuse::made(prev.generation, Vec::new(), compiled);
    reuse.in_place = Some(touched);
    rows_changed.sort_unstable_by_key(|r| r.start);
    reuse.rows = rows_changed;
    reuse.lists_baseline = prev.reuse.lists_baseline;
    let mut out = routes.finish(t, g, reuse);
    out.1.slots = slots;
    out
}

/// The rows of `prev`'s segments that `g` shares copied (each access domain's first
/// route moved by where its segment now starts), the rest compiled, appending to `prev`'s
/// stored-once lists through its interner.
fn incremental(
    g: &Arc<Gslb>,
    prev: &Snapshot,
    (mut t, interner): (GslbTables, Box<RouteInterner>),
) -> (GslbTables, Model, Reuse) {
    let old = &prev.gslb;
    let old_segs = prev.model.access_domains.segments();
    // Each old segment's first access domain and first route, by its address.
    let mut at: HashMap<(*const AccessDomain, usize), (usize, usize)> = HashMap::default();
    let mut a0 = 0;
    for seg in old_segs {
        at.insert(seg.key(), (a0, old.ads[a0].routes as usize));
        a0 += seg.len();
    }
    let route_end = |a: usize| match old.ads.get(a) {
        Some(ad) => ad.routes as usize,
        None => old.routes.len(),
    };
    let mut routes = Routes::new(g.lines.len(), interner);
    // The leading segments the two models share keep their places: their rows' whole
    // chunks are shared, not copied.
    let new_segs = g.access_domains.segments();
    let lead = old_segs
        .iter()
        .zip(new_segs)
        .take_while(|(o, n)| o.same(n))
        .count();
    let lead_ads: usize = new_segs[..lead].iter().map(|s| s.len()).sum();
    let lead_routes = route_end(lead_ads);
    let mut rows = Rows {
        ads: Builder::from_prefix(&old.ads, lead_ads),
        routes: Builder::from_prefix(&old.routes, lead_routes),
        slots: Builder::from_prefix(&prev.model.slots, lead_routes),
    };
    let mut runs = Vec::new();
    if lead_routes > 0 {
        runs.push((0, 0, lead_routes as u32));
    }
    let mut compiled = 0;
    for seg in &new_segs[lead..] {
        let ai = rows.ads.len();
        let Some(&(a, r)) = at.get(&seg.key()) else {
            for (k, ad) in seg.iter().enumerate() {
                rows.push(&mut routes, &mut t, g, (ai + k) as u32, ad);
            }
            compiled += seg.len() as u32;
            continue;
        };
        let (r_end, ri) = (route_end(a + seg.len()), rows.routes.len());
        let shift = |row: &AdTable| AdTable {
            routes: row.routes - r as u32 + ri as u32,
            ..*row
        };
        rows.ads.extend_from(&old.ads, a..a + seg.len(), shift);
        rows.routes.extend_from(&old.routes, r..r_end, |x| *x);
        let ad_moved = |s: &Slot| Slot {
            ad: s.ad - a as u32 + ai as u32,
            line: s.line,
        };
        rows.slots
            .extend_from(&prev.model.slots, r..r_end, ad_moved);
        runs.push((ri as u32, r as u32, (r_end - r) as u32));
    }
    let slots = rows.finish(&mut t);
    let mut reuse = Reuse::made(prev.generation, runs, compiled);
    reuse.lists_baseline = prev.reuse.lists_baseline;
    let mut out = routes.finish(t, g, reuse);
    out.1.slots = slots;
    out
}

/// Where each line of `g` was in `m`: its old index, `None` for a new line (an access
/// domain's rows point into lines by index; [`relayout_lines`] moves the stored line ->
/// route rows to the new indices). Pools may be at other indices too; a row is kept only
/// where the lines and pools it names kept theirs ([`changed_in_place`]). No row names an
/// address.
fn line_places(m: &Model, g: &Gslb) -> Vec<Option<usize>> {
    let old: HashMap<&str, usize> = (m.gslb.lines.iter().enumerate())
        .map(|(i, l)| (l.name.as_str(), i))
        .collect();
    g.lines
        .iter()
        .map(|l| old.get(l.name.as_str()).copied())
        .collect()
}

/// The stored line -> route rows (and the interner's keys) laid out for `g`'s lines
/// (`places`: each one's index in the rows, if it had one; `was`: the lines the rows were
/// made for). A row says which lines have a route of their own: those whose route is not
/// their parent's (a line's own route is its alone). Each keeps it, wherever the line is
/// now; every other line takes its parent's, as a compile walking the lines' parents
/// would, so a line moved, added, removed or given another parent changes no route of its
/// own (an access domain that names a line that moved is compiled again).
fn relayout_lines(
    t: &mut GslbTables,
    seen: &mut RouteInterner,
    (g, was): (&Gslb, &[crate::config::gslb::Line]),
    places: &[Option<usize>],
) {
    let (old, new) = (t.nlines as usize, g.lines.len());
    fn parent_name(lines: &[crate::config::gslb::Line], p: Option<usize>) -> Option<&str> {
        p.map(|p| lines[p].name.as_str())
    }
    let same = places.len() == old
        && places.iter().enumerate().all(|(j, &p)| {
            p == Some(j)
                && parent_name(&g.lines, g.lines[j].parent) == parent_name(was, was[j].parent)
        });
    if same || was.len() != old {
        return;
    }
    // Parents before children: the lines by depth.
    let depth = |mut j: usize| {
        let mut d = 0;
        while let Some(p) = g.lines[j].parent.filter(|_| d <= new) {
            (j, d) = (p, d + 1);
        }
        d
    };
    let mut order: Vec<usize> = (0..new).collect();
    order.sort_by_key(|&j| depth(j));
    let rows = t.line_routes.len().checked_div(old).unwrap_or(0);
    let mut laid = vec![0; rows * new];
    for (row, out) in
        (t.line_routes.chunks_exact(old.max(1)).take(rows)).zip(laid.chunks_exact_mut(new.max(1)))
    {
        let own = |i: usize| was[i].parent.is_none_or(|p| row[i] != row[p]);
        for &j in &order {
            out[j] = match (places[j], g.lines[j].parent) {
                (Some(i), _) if own(i) => row[i],
                (_, Some(p)) => out[p],
                (Some(i), None) => row[i],
                (None, None) => 0,
            };
        }
    }
    seen.index_rows(&laid, new);
    t.line_routes = laid;
    t.nlines = new as u32;
}

/// Each address's record data (RDLENGTH, RDATA) in the arena.
fn addresses(t: &mut GslbTables, g: &Gslb) {
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
            shared: false, // set by `member_of`
            weight: a.weight,
        });
    }
}

/// Each pool's enabled addresses, in order, and each address's pools.
fn pools(t: &mut GslbTables, g: &Gslb) {
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
    member_of(t);
}

/// Each address's pools (`addr_pools`, from `addr_pools_at`), in pool order; an address
/// in more than one is marked shared.
fn member_of(t: &mut GslbTables) {
    let mut at = vec![0u32; t.addrs.len() + 1];
    for &a in &t.pool_addrs {
        at[a as usize + 1] += 1;
    }
    for (a, addr) in t.addrs.iter_mut().enumerate() {
        addr.shared = at[a + 1] > 1;
    }
    for i in 1..at.len() {
        at[i] += at[i - 1];
    }
    let mut next = at.clone();
    t.addr_pools = vec![0; t.pool_addrs.len()];
    for (p, pool) in t.pools.iter().enumerate() {
        for &a in &t.pool_addrs[pool.start as usize..(pool.start + pool.len) as usize] {
            t.addr_pools[next[a as usize] as usize] = p as u32;
            next[a as usize] += 1;
        }
    }
    t.addr_pools_at = at;
}

/// The prefixes of every line, flattened into one index.
fn line_index(g: &Gslb) -> LineIndex {
    // Sized exactly: at 100,000 prefixes this is most of what a reload that changes a
    // line allocates.
    let mut v4 = Vec::with_capacity(g.lines.iter().map(|l| l.v4.len()).sum());
    let mut v6 = Vec::with_capacity(g.lines.iter().map(|l| l.v6.len()).sum());
    for (i, l) in g.lines.iter().enumerate() {
        v4.extend(l.v4.iter().map(|&(n, len)| (n as u128, len, i as u32)));
        v6.extend(l.v6.iter().map(|&(n, len)| (n, len, i as u32)));
    }
    LineIndex::build(&mut v4, &mut v6)
}

/// The routes of the access domains: rows and lists interned (a million access domains
/// mostly repeat a few shapes), buffers reused from one access domain to the next, so that
/// an access domain whose shapes were seen allocates nothing.
struct Routes {
    /// The lists stored so far.
    seen: Box<RouteInterner>,
    /// The routes of the access domain just added, and their slots.
    out: Vec<RouteTable>,
    out_slots: Vec<Slot>,
    /// The access domain at hand: line -> its route.
    line_route: Vec<u32>,
    /// Line -> the route of its own, or [`NONE`] (reset after each access domain).
    own: Vec<u32>,
    /// Its routes: own line ([`NONE`] for the default route, route 0) and the end of its
    /// candidates in `cand` (each route's start where the one before ends).
    routes: Vec<(u32, usize)>,
    /// The candidates (pool, weight) of its routes, one list after another.
    cand: Vec<(u32, u32)>,
}

impl Routes {
    fn new(nlines: usize, seen: Box<RouteInterner>) -> Self {
        Self {
            seen,
            out: Vec::new(),
            out_slots: Vec::new(),
            line_route: vec![0; nlines],
            own: vec![NONE; nlines],
            routes: Vec::new(),
            cand: Vec::new(),
        }
    }

    /// Compiles access domain `ai` with its first route at `base`: returns its row and
    /// leaves its routes and their slots in `out`, `out_slots`;
    /// new lists go to the end of `t`'s.
    fn add(
        &mut self,
        t: &mut GslbTables,
        g: &Gslb,
        ai: u32,
        ad: &AccessDomain,
        base: u32,
    ) -> AdTable {
        self.out.clear();
        self.out_slots.clear();
        self.line_route.fill(0);
        self.routes.clear();
        self.cand.clear();
        self.cand.extend_from_slice(&ad.pools);
        self.routes.push((NONE, self.cand.len()));
        if ad.policy == PoolPolicy::Nearest {
            self.nearest(g, ad);
        }
        let mut from = 0;
        for &(line, to) in &self.routes {
            let pools = &self.cand[from..to];
            from = to;
            let start = self.seen.pool_lists.intern(pools, &mut t.route_pools);
            let len = pools.len() as u32;
            self.out.push(RouteTable { start, len });
            self.out_slots.push(Slot { ad: ai, line });
        }
        // The next row's number (not the map's size: rows that came to be alike when a
        // line was removed are all stored, and only one of them is in the map).
        let next = (t.line_routes.len() / self.line_route.len().max(1)) as u32;
        let pattern = match self.seen.patterns.get(&self.line_route[..]) {
            Some(&p) => p,
            None => {
                t.line_routes.extend_from_slice(&self.line_route);
                self.seen.patterns.insert(self.line_route.clone(), next);
                next
            }
        };
        AdTable {
            rtype: ad.rtype,
            ttl: ad.ttl,
            policy: ad.policy,
            routes: base,
            nroutes: self.routes.len() as u32,
            pattern,
            nodata: NONE,
            fallback: fallback_code(ad.fallback),
        }
    }

    /// The tables, their model, and how they were made (`from`, `runs`, `compiled`: see
    /// [`Reuse`]); the interner goes with them for the next reload.
    fn finish(self, t: GslbTables, g: &Arc<Gslb>, reuse: Reuse) -> (GslbTables, Model, Reuse) {
        let model = Model {
            gslb: g.clone(),
            slots: Chunked::default(),
        };
        *reuse.interner.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.seen);
        (t, model, reuse)
    }

    /// The nearest policy: a route per line with pools of its own (its pools first, then
    /// the default line's), and every line on the route of its nearest ancestor that has
    /// one.
    fn nearest(&mut self, g: &Gslb, ad: &AccessDomain) {
        let default = self.cand.len();
        for (li, pools) in ad.lines.iter() {
            let from = self.cand.len();
            self.cand.extend(pools.iter().map(|&p| (p, 1)));
            for i in 0..default {
                let (p, w) = self.cand[i];
                if !self.cand[from..].iter().any(|&(q, _)| q == p) {
                    self.cand.push((p, w));
                }
            }
            self.routes.push((*li, self.cand.len()));
        }
        // Each line's own route (the first, should one repeat); the default route is the
        // `default` line's.
        for (r, &(l, _)) in self.routes.iter().enumerate().rev() {
            self.own[if l == NONE { 0 } else { l as usize }] = r as u32;
        }
        for (li, route) in self.line_route.iter_mut().enumerate() {
            if let Some(r) = nearest_route(&self.own, g, li) {
                *route = r;
            }
        }
        for &(l, _) in &self.routes {
            self.own[if l == NONE { 0 } else { l as usize }] = NONE;
        }
    }
}

/// The route of line `li` or of its nearest ancestor that has one (`own`: line -> its
/// route or [`NONE`]; the default line's, route 0, ends the walk).
fn nearest_route(own: &[u32], g: &Gslb, li: usize) -> Option<u32> {
    let mut cur = Some(li);
    let mut hops = 0;
    while let Some(c) = cur {
        if own[c] != NONE {
            return Some(own[c]);
        }
        cur = g.lines[c].parent;
        hops += 1;
        if hops > g.lines.len() {
            break;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::testing::Rng;

    /// The fallback addresses over candidate `pools` as the product describes them:
    /// every enabled address of the candidate pools in their order, each once (`all`),
    /// or of the fallback pool; one for a CNAME.
    fn expected(g: &Gslb, ad: &AccessDomain, pools: &[usize]) -> Vec<u32> {
        let members = |p: usize| {
            let p = &g.pools[p];
            p.addresses.iter().filter(|&&a| g.addresses[a].enabled)
        };
        let mut fb: Vec<u32> = Vec::new();
        match ad.fallback {
            Fallback::All => {
                for &p in pools {
                    for &a in members(p) {
                        if !fb.contains(&(a as u32)) {
                            fb.push(a as u32);
                        }
                    }
                }
            }
            Fallback::Pool(p) => fb.extend(members(p).map(|&a| a as u32)),
            Fallback::NoData => {}
        }
        if ad.rtype == crate::dns::rtype::CNAME {
            fb.truncate(1);
        }
        fb
    }

    /// Each route's candidate pools as the product describes them: the access domain's
    /// pools, then under the nearest policy, per line with pools of its own, those
    /// followed by the access domain's that are not among them.
    fn candidates(ad: &AccessDomain) -> Vec<Vec<usize>> {
        let default: Vec<usize> = ad.pools.iter().map(|&(p, _)| p as usize).collect();
        let mut out = vec![default.clone()];
        for (_, own) in ad.lines.iter() {
            let mut c: Vec<usize> = own.iter().map(|&p| p as usize).collect();
            let extra: Vec<usize> = default.iter().filter(|p| !c.contains(p)).copied().collect();
            c.extend(extra);
            out.push(c);
        }
        out
    }

    /// A model of pools sharing addresses (some disabled), for A and CNAME access
    /// domains.
    fn model(rng: &mut Rng) -> String {
        let mut t = String::from(
            "version = 1\n[server]\nlisten = [\"127.0.0.1:0\"]\n[[zone]]\nname = \"e.test.\"\n\
             soa = { mname = \"ns\", rname = \"h\", serial = 1, refresh = 1, retry = 1, \
             expire = 1, minimum = 1 }\nns = [\"ns\"]\nrecords = [\"ns A 192.0.2.53\"]\n",
        );
        for (kind, value) in [("v", "192.0.2."), ("n", "t")] {
            for i in 0..10 {
                let v = match kind {
                    "v" => format!("{value}{i}"),
                    _ => format!("{value}{i}.example."),
                };
                let on = rng.below(4) != 0;
                t += &format!(
                    "[[address]]\nname = \"{kind}{i}\"\nvalue = \"{v}\"\nenabled = {on}\n"
                );
            }
            for p in 0..6 {
                let mut members: Vec<usize> = Vec::new();
                for _ in 0..1 + rng.below(6) {
                    let a = rng.below(10);
                    if !members.contains(&a) {
                        members.push(a);
                    }
                }
                let names: Vec<String> = members.iter().map(|a| format!("\"{kind}{a}\"")).collect();
                let pk = if kind == "v" { "ipv4" } else { "domain" };
                t += &format!(
                    "[[pool]]\nname = \"{kind}p{p}\"\ntype = \"{pk}\"\naddresses = [{}]\n",
                    names.join(", ")
                );
            }
        }
        t += "[[line]]\nname = \"l1\"\nprefixes = [\"10.1.0.0/16\"]\n\
              [[line]]\nname = \"l2\"\nprefixes = [\"10.2.0.0/16\"]\n";
        for i in 0..40 {
            let (kind, rtype) = if i % 3 == 0 {
                ("n", "CNAME")
            } else {
                ("v", "A")
            };
            // Pools drawn at random, so sometimes one twice.
            let mut draw = |n: usize| -> String {
                let ps: Vec<String> = (0..n)
                    .map(|_| format!("\"{kind}p{}\"", rng.below(6)))
                    .collect();
                ps.join(", ")
            };
            let (n, m, k) = (1 + i % 4, 1 + i % 3, 1 + (i / 3) % 3);
            let (pools, own1, own2) = (draw(n), draw(m), draw(k));
            let fallback = match rng.below(3) {
                0 => "fallback = \"all\"".to_string(),
                1 => "fallback = \"nodata\"".to_string(),
                _ => format!("fallback-pool = \"{kind}p{}\"", rng.below(6)),
            };
            let policy = match i % 2 {
                0 => format!(
                    "policy = \"nearest\"\n{fallback}\n[access-domain.lines]\n\
                     default = [{pools}]\nl1 = [{own1}]\nl2 = [{own2}]\n"
                ),
                _ => format!("policy = \"weighted\"\npools = [{pools}]\n{fallback}\n"),
            };
            t += &format!(
                "[[access-domain]]\nname = \"d{i}.e.test.\"\ntype = \"{rtype}\"\n{policy}"
            );
        }
        t
    }

    /// The fallback walked from the pools' lists gives what the product describes, on
    /// every route (nearest lines too), over pools that share addresses, a pool named
    /// twice, disabled addresses, CNAMEs and fallback pools.
    #[test]
    fn fallbacks_walked_from_the_pools_are_each_address_once_in_order() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut shared_answers, mut repeated) = (0, 0);
        for _ in 0..30 {
            let text = model(&mut rng);
            let cfg =
                crate::config::Config::from_str(&text, "t-fb".into(), std::path::Path::new("."))
                    .unwrap_or_else(|e| panic!("the model does not validate: {e}\n{text}"));
            let g = cfg.gslb.clone();
            let (t, _, _) = full(&g, false);
            for (i, ad) in g.access_domains.iter().enumerate() {
                let a = &t.ads[i];
                let routes = candidates(ad);
                assert_eq!(
                    routes.len(),
                    a.nroutes as usize,
                    "access domain {i}\n{text}"
                );
                for (r, pools) in routes.iter().enumerate() {
                    let mut got = Vec::new();
                    t.each_fallback(a, &t.routes[a.routes as usize + r], |x| {
                        got.push(x);
                        true
                    });
                    let want = expected(&g, ad, pools);
                    assert_eq!(got, want, "access domain {i} route {r}\n{text}");
                    shared_answers += got.iter().any(|&x| t.addrs[x as usize].shared) as usize;
                    repeated += (1..pools.len()).any(|k| pools[..k].contains(&pools[k])) as usize;
                }
            }
        }
        assert!(
            shared_answers > 100 && repeated > 50,
            "shared addresses answered: {shared_answers}; a pool named twice: {repeated}"
        );
    }
}
