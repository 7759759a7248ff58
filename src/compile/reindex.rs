//! The compiler's index of the stored-once lists ([`RouteInterner`]), rebuilt from a
//! snapshot's tables. The index passes from snapshot to snapshot with the tables it
//! describes; a reload refused after its compile (a zone that does not compile, a change
//! the API does not commit) drops the one it took. Rather than compiling every table on
//! the next reload (a third more than the serving memory at a million access domains),
//! the index is read back from the tables: one pass over the routes and the access
//! domains.

use crate::tables::gslb::RouteInterner;
use crate::tables::Snapshot;

/// The index of `s`'s stored-once lists: every candidate list a route names and every
/// line -> route row (lists no row names are left out: never handed out again, their
/// places are reclaimed as gaps).
pub(super) fn rebuild(s: &Snapshot) -> Box<RouteInterner> {
    let t = &s.gslb;
    let mut seen = RouteInterner::default();
    // Candidate lists: each hashed once however many routes name it (a route naming a
    // list past the arena's end, which none should, leaves the index without them: the
    // next compaction then finds the arrays not as the index says and compiles in full).
    let named = super::compact::named_lists(t).unwrap_or_default();
    for (start, len) in named {
        if (start + len) as usize <= t.route_pools.len() {
            seen.pool_lists.insert(&t.route_pools, start, len);
        }
    }
    seen.index_rows(&t.line_routes, t.nlines as usize);
    Box::new(seen)
}
