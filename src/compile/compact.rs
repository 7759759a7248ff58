//! Reclaims, in place, the stored-once lists no row names any more. An incremental reload
//! appends the lists it has not seen (candidate lists in `route_pools`, line -> route
//! rows) and leaves the ones its edit stopped using, so they pile up from reload to
//! reload. Rather than compiling every table again (which peaks at a third more than the
//! serving memory at a million access domains), the live lists past a cut move into dead
//! room before it (the smallest that holds each), the arrays are cut there, and only the
//! rows that named a moved list are written again (in copies of the chunks they lie in):
//! the lists added last are the ones that move, and few rows name those.

use foldhash::HashMap;

use crate::tables::gslb::{GslbTables, RouteInterner};
use crate::tables::lists::ListIndex;

/// A stored list: where it starts, its length, whether a row names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    start: u32,
    len: u32,
    live: bool,
}

/// Where the arrays end once compacted, and the moves (from, to) that bring every live
/// item before that end. Walking back from the end: a dead item is passed (it goes with
/// the cut) unless a live one was moved into it; a live item moves into the smallest dead
/// room that holds it (the lowest of those, so that rooms near the cut are the last
/// taken), what it leaves of that room staying dead room; the walk stops at the first
/// live item no room holds. `items`: sorted by start, none overlapping.
fn fill_from_end(items: &[Item], end: u32) -> (u32, Vec<(u32, u32)>) {
    // Dead room before the walk's position: (length, start, the dead item it lies in).
    let mut room: std::collections::BTreeSet<(u32, u32, usize)> = (items.iter().enumerate())
        .filter(|(_, it)| !it.live)
        .map(|(i, it)| (it.len, it.start, i))
        .collect();
    let mut taken = vec![false; items.len()];
    let mut moves = Vec::new();
    let mut cut = items.len();
    while cut > 0 {
        let it = items[cut - 1];
        if !it.live {
            if taken[cut - 1] {
                break;
            }
            room.remove(&(it.len, it.start, cut - 1));
        } else {
            let Some(&r) = room.range((it.len, 0, 0)..).next() else {
                break;
            };
            room.remove(&r);
            let (len, start, i) = r;
            taken[i] = true;
            if len > it.len {
                room.insert((len - it.len, start + it.len, i));
            }
            moves.push((it.start, start));
        }
        cut -= 1;
    }
    (items.get(cut).map_or(end, |it| it.start), moves)
}

/// Items sorted by start, with what lies between them (lists the interner no longer
/// knows: see `reindex.rs`) as dead items of that length, up to `end`; or `None` if two
/// overlap or one passes `end` (the arrays are not what the interner says: the caller
/// compiles in full instead).
fn sorted(mut items: Vec<Item>, end: u32) -> Option<Vec<Item>> {
    items.sort_unstable_by_key(|it| it.start);
    let mut out = Vec::with_capacity(items.len());
    let mut at = 0;
    let last = Item {
        start: end,
        len: 0,
        live: false,
    };
    for it in items.into_iter().chain([last]) {
        if it.start < at {
            return None;
        }
        if it.start > at {
            out.push(Item {
                start: at,
                len: it.start - at,
                live: false,
            });
        }
        at = it.start + it.len;
        if it.len > 0 {
            out.push(it);
        }
    }
    Some(out)
}

/// A move as a map from old start to new start (`u32::MAX`: not moved), over `len`
/// positions.
fn moved_map(moves: &[(u32, u32)], len: usize) -> Vec<u32> {
    let mut to = vec![u32::MAX; len];
    for &(from, dest) in moves {
        to[from as usize] = dest;
    }
    to
}

/// Compacts one interned arena in place: its items are the interner's entries, `live`
/// says which start and length a row names. Returns where lists moved and the live
/// entries, or `None` when the interner and the arena disagree.
fn compact_arena<T: Copy>(
    arena: &mut Vec<T>,
    seen: &mut ListIndex,
    (live, nlive): (impl Fn(u32, u32) -> bool, usize),
) -> Option<(Moved, usize)> {
    let items = (seen.iter())
        .filter(|&(_, n)| n > 0)
        .map(|(start, len)| Item {
            start,
            len,
            live: live(start, len),
        });
    let items = sorted(items.collect(), arena.len() as u32)?;
    // Every list a row names must be an entry (else it could lie past the cut).
    let live_items = items.iter().filter(|it| it.live);
    if live_items.clone().count() != nlive {
        return None;
    }
    let live_len: usize = live_items.map(|it| it.len as usize).sum();
    let (cut, moves) = fill_from_end(&items, arena.len() as u32);
    for &(from, to) in &moves {
        // A move's `from` is an item's start (items are sorted by start).
        let i = items.binary_search_by_key(&from, |it| it.start).ok()?;
        let (f, t, n) = (from as usize, to as usize, items[i].len as usize);
        arena.copy_within(f..f + n, t);
    }
    let filled: std::collections::HashSet<u32> = moves.iter().map(|&(_, to)| to).collect();
    let moved = Moved::new(&moves, cut);
    arena.truncate(cut as usize);
    seen.retain(|start, len| match moved.get(start) {
        // An empty list starts anywhere in the arena.
        _ if len == 0 => Some(start.min(cut)),
        Some(to) => Some(to),
        None if filled.contains(&start) || start >= cut => None,
        None => Some(start),
    });
    Some((moved, live_len))
}

/// Where each list moved, old start -> new start, and the arena's new length (an empty
/// list may start anywhere up to it). Only lists past the new end moved, so a list
/// before it (most of them) is answered without a lookup; the others by hash.
struct Moved {
    moves: HashMap<u32, u32>,
    end: u32,
}

impl Moved {
    fn new(moves: &[(u32, u32)], end: u32) -> Self {
        Self {
            moves: moves.iter().copied().collect(),
            end,
        }
    }

    /// Where the list at `start` went, if it moved.
    fn get(&self, start: u32) -> Option<u32> {
        if start < self.end {
            return None;
        }
        self.moves.get(&start).copied()
    }

    /// The new start of the list at `start` of `len` entries.
    fn start(&self, start: u32, len: u32) -> u32 {
        match self.get(start) {
            _ if len == 0 => start.min(self.end),
            Some(to) => to,
            None => start,
        }
    }
}

/// Fixed-size entries (line -> route rows), `live` saying which a row names: every dead
/// one is filled or cut. Returns their new number and old index -> new index.
fn compact_units(live: &[bool]) -> (usize, Vec<(u32, u32)>, Vec<u32>) {
    let units: Vec<Item> = (0..live.len() as u32)
        .map(|i| Item {
            start: i,
            len: 1,
            live: live[i as usize],
        })
        .collect();
    let (n, moves) = fill_from_end(&units, units.len() as u32);
    let to = moved_map(&moves, units.len());
    (n as usize, moves, to)
}

/// The candidate lists routes name, each once, as (start in `route_pools`, length),
/// sorted by start; `None` if a route names a list past the arena's end. Lists never
/// overlap, so a start names one list; an empty one needs no entry (it may start where
/// another does). A bit per arena entry finds the ones seen.
pub(super) fn named_lists(t: &GslbTables) -> Option<Vec<(u32, u32)>> {
    let mut seen = vec![0u64; t.route_pools.len().div_ceil(64)];
    let mut lists = Vec::new();
    for r in t.routes.iter().filter(|r| r.len > 0) {
        if r.start as usize + r.len as usize > t.route_pools.len() {
            return None;
        }
        let w = &mut seen[r.start as usize / 64];
        let bit = 1u64 << (r.start % 64);
        if *w & bit == 0 {
            *w |= bit;
            lists.push((r.start, r.len));
        }
    }
    lists.sort_unstable();
    Some(lists)
}

/// Reclaims the lists no row of `t` names (see the module's text), and returns how many
/// entries of the lists the rows name. `None`: the interner does not describe the arrays
/// (the caller compiles in full, which replaces whatever was changed).
pub(super) fn compact(t: &mut GslbTables, seen: &mut RouteInterner) -> Option<usize> {
    if t.nlines == 0 && !t.line_routes.is_empty() {
        return None;
    }
    // What the routes name: candidate lists (by start, their length).
    let named = named_lists(t)?;
    let live = |s: u32, n: u32| named.binary_search(&(s, n)).is_ok();
    let (lists, live_pools) = compact_arena(
        &mut t.route_pools,
        &mut seen.pool_lists,
        (live, named.len()),
    )?;
    let (row_to, live_rows) = compact_rows(t, seen);
    rewrite_rows(t, &lists, &row_to);
    Some(live_pools + live_rows)
}

/// The line -> route rows compacted; returns old row -> new row and the live entries.
fn compact_rows(t: &mut GslbTables, seen: &mut RouteInterner) -> (Vec<u32>, usize) {
    let nlines = t.nlines.max(1) as usize;
    let mut live = vec![false; t.line_routes.len() / nlines];
    for a in t.ads.iter() {
        if let Some(l) = live.get_mut(a.pattern as usize) {
            *l = true;
        }
    }
    let (n, moves, row_to) = compact_units(&live);
    for &(from, to) in &moves {
        let (f, d) = (from as usize * nlines, to as usize * nlines);
        t.line_routes.copy_within(f..f + nlines, d);
    }
    t.line_routes.truncate(n * nlines);
    seen.index_rows(&t.line_routes, nlines);
    (row_to, n * nlines)
}

/// The routes and access domains that named a list or row that moved, written again (in
/// copies of the chunks they lie in).
fn rewrite_rows(t: &mut GslbTables, lists: &Moved, row_to: &[u32]) {
    let routes: Vec<(usize, u32)> = (t.routes.iter().enumerate())
        .filter_map(|(s, r)| {
            let start = lists.start(r.start, r.len);
            (start != r.start).then_some((s, start))
        })
        .collect();
    for (s, start) in routes {
        t.routes.make_mut(s).start = start;
    }
    let ads: Vec<(usize, u32)> = (t.ads.iter().enumerate())
        .filter_map(|(i, a)| {
            let to = *row_to.get(a.pattern as usize)?;
            (to != u32::MAX).then_some((i, to))
        })
        .collect();
    for (i, to) in ads {
        t.ads.make_mut(i).pattern = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(v: &[(u32, u32, bool)]) -> Vec<Item> {
        v.iter()
            .map(|&(start, len, live)| Item { start, len, live })
            .collect()
    }

    #[test]
    fn the_last_live_items_fill_dead_ones_of_their_length() {
        // [0,2) dead, [2,3) live, [3,5) live, [5,6) dead, [6,8) live.
        let it = items(&[
            (0, 2, false),
            (2, 1, true),
            (3, 2, true),
            (5, 1, false),
            (6, 2, true),
        ]);
        // Past the cut at 5: the dead [5,6) and the live [6,8), which takes [0,2).
        assert_eq!(fill_from_end(&it, 8), (5, vec![(6, 0)]));
    }

    #[test]
    fn a_live_item_takes_part_of_a_larger_room_and_no_room_stops_the_cut() {
        // [3,5) goes to [0,2) of the dead [0,3); [2,3) stays dead.
        let it = items(&[(0, 3, false), (3, 2, true), (5, 1, false)]);
        assert_eq!(fill_from_end(&it, 6), (3, vec![(3, 0)]));
        // No room holds [1,4): only the trailing dead one goes.
        let it = items(&[(0, 1, false), (1, 3, true), (4, 2, false)]);
        assert_eq!(fill_from_end(&it, 6), (4, vec![]));
        // A room something moved into stops the cut: [4,5) fills [0,1), then [1,4) finds
        // none left, and the cut stays after it.
        let it = items(&[(0, 1, false), (1, 3, true), (4, 1, true)]);
        assert_eq!(fill_from_end(&it, 5), (4, vec![(4, 0)]));
    }

    #[test]
    fn units_compact_fully() {
        let live = [false, true, false, false, true, true, false, true];
        let it: Vec<Item> = (0..8)
            .map(|i| Item {
                start: i,
                len: 1,
                live: live[i as usize],
            })
            .collect();
        let (cut, moves) = fill_from_end(&it, 8);
        assert_eq!(cut, 4);
        let mut now = live.to_vec();
        for (f, t) in moves {
            assert!(f >= cut && t < cut && !now[t as usize]);
            now[t as usize] = true;
        }
        assert!(now[..4].iter().all(|&l| l));
    }
}
