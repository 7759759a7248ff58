//! The compiler's index of the stored-once lists ([`RouteInterner`]), rebuilt from a
//! snapshot's tables. The index passes from snapshot to snapshot with the tables it
//! describes; a reload refused after its compile (a zone that does not compile, a change
//! the API does not commit) drops the one it took. Rather than compiling every table on
//! the next reload (a third more than the serving memory at a million access domains),
//! the index is read back from the tables: one pass over the routes and the access
//! domains.

use crate::config::gslb::Fallback;
use crate::tables::gslb::RouteInterner;
use crate::tables::Snapshot;

/// The index of `s`'s stored-once lists: every list a route, a fallback shape or an
/// access domain names (lists no row names are left out: never handed out again, their
/// places are reclaimed as gaps).
pub(super) fn rebuild(s: &Snapshot) -> Box<RouteInterner> {
    let t = &s.gslb;
    let mut seen = RouteInterner::default();
    // Candidate lists: each hashed once however many routes name it.
    let len_at = super::compact::named_lists(t);
    for (start, &len) in len_at.iter().enumerate().filter(|(_, &n)| n > 0) {
        seen.pool_lists.insert(&t.route_pools, start as u32, len);
    }
    // Fallback shapes: each route's, keyed by its list and its access domain's rule.
    // A shape no route names keeps its index with an empty key that no route looks up.
    let mut keys = vec![None; t.fallbacks.len()];
    for (ai, a) in t.ads.iter().enumerate() {
        let ad = &s.model.access_domains[ai];
        let cname = a.rtype == crate::dns::rtype::CNAME;
        for r in t
            .routes
            .range(a.routes as usize..(a.routes + a.nroutes) as usize)
        {
            if let Some(k) = keys.get_mut(r.fb as usize) {
                *k = Some((r.start, r.len, ad.fallback, cname));
            }
        }
    }
    seen.fb_keys = (keys.iter())
        .map(|k| k.unwrap_or((0, 0, Fallback::NoData, false)))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = *k {
            seen.fb_of.insert(k, i as u32);
            let (at, len) = t.fallbacks[i];
            if len == 0 {
                continue;
            }
            seen.fb_lists.insert(&t.fallback, at, len);
        }
    }
    seen.index_rows(&t.line_routes, t.nlines as usize);
    Box::new(seen)
}
