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
    // Candidate lists: each hashed once however many routes name it (should a route
    // name a list past the arena's end, which none does, the index is left without
    // any: the next compaction then finds the arrays not as the index says and the
    // reload compiles in full).
    for (start, len) in super::compact::named_lists(t).unwrap_or_default() {
        seen.pool_lists.insert(&t.route_pools, start, len);
    }
    seen.index_rows(&t.line_routes, t.nlines as usize);
    Box::new(seen)
}
