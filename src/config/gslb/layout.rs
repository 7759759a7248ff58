//! Where a running server keeps each access domain from one load of a main file to the
//! next. A load reads the access domains in declaration order; the tables are compiled in
//! the order of [`super::AdSet`], so an access domain added to the first of a hundred
//! included files would move every one after it (and its rows, its routes, their health,
//! and every reference to them in the name tables would be copied). Instead, each access
//! domain that the last load had stays at its place, and the new ones go after all the
//! others: the files that changed are cut into runs of access domains that sat together
//! before, wherever they are declared now ([`Seg`]: parts of a file's own allocation,
//! nothing copied), and what is left of them is appended. An access domain removed leaves its place to the last one with
//! as many routes (so only the few after that one move); when none is near the end, or
//! past [`MAX_FILLED`] removals, or for a whole file gone, the ones after it move.
//!
//! Only the order of the access domains in the model changes: every access domain is
//! answered from its own name, pools and lines wherever it sits. The first load of a main
//! file, and `gtmd check`, take declaration order; so does a server whose layout has
//! become more than [`MAX_RUNS_PER_FILE`] runs a file (the next reload then moves rows
//! once).

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::{Arc, Mutex};

use super::ad_set::{AdSet, Seg};
use super::AccessDomain;

/// Past this many runs per file on average (and 64 more), a load goes back to
/// declaration order.
const MAX_RUNS_PER_FILE: usize = 4;

/// The segments of the last load of each main file that had no error, in order.
static LAST: Mutex<Option<HashMap<Arc<str>, Vec<Seg>>>> = Mutex::new(None);

/// `ads` (one segment per file, in declaration order) in the order the last load of
/// `main` had them, the access domains it did not have after them.
pub(super) fn keep_places(main: &Arc<str>, ads: &mut AdSet) {
    let last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let Some(last) = last.as_ref().and_then(|m| m.get(main)) else {
        return;
    };
    if let Some(placed) = arrange(last, ads) {
        *ads = placed;
    }
}

/// Notes the segments of a load of `main` that had no error, for the next one.
pub(super) fn note(main: &Arc<str>, ads: &AdSet) {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    last.get_or_insert_with(HashMap::new)
        .insert(main.clone(), ads.segments().to_vec());
}

/// `ads` laid out after `last` (see the module); `None`: as they are.
fn arrange(last: &[Seg], ads: &AdSet) -> Option<AdSet> {
    let files = ads.segments();
    // The files read again (or new), and where each of their access domains is, by key
    // (one that moved to another file keeps its place too).
    let kept: HashSet<*const AccessDomain> = last.iter().map(|s| s.source().as_ptr()).collect();
    let fresh: Vec<&Seg> = files
        .iter()
        .filter(|f| !kept.contains(&f.source().as_ptr()))
        .collect();
    let mut at: HashMap<(&[u8], u16), (usize, usize)> = HashMap::new();
    for (k, f) in fresh.iter().enumerate() {
        for (i, ad) in f.iter().enumerate() {
            if at.insert((&ad.name[..], ad.rtype), (k, i)).is_some() {
                return None;
            }
        }
    }
    let mut placed: Vec<Vec<bool>> = fresh.iter().map(|f| vec![false; f.len()]).collect();
    let loaded: HashSet<*const AccessDomain> = files.iter().map(|s| s.source().as_ptr()).collect();
    let part = |(k, start, len): (usize, usize, usize)| {
        Item::Run(Seg::part(fresh[k].source(), fresh[k].start() + start, len))
    };
    let mut out: Vec<Item> = Vec::new();
    for s in last {
        if loaded.contains(&s.source().as_ptr()) {
            out.push(Item::Run(s.clone()));
            continue;
        }
        // Where the access domains of `s` are now, in runs of neighbours, and a hole
        // where one was removed.
        let mut run: Option<(usize, usize, usize)> = None;
        for ad in s.iter() {
            let Some(&(k, i)) = at.get(&(&ad.name[..], ad.rtype)) else {
                out.extend(run.take().map(part));
                out.push(Item::Hole(ad.route_count()));
                continue;
            };
            if placed[k][i] {
                return None;
            }
            placed[k][i] = true;
            run = match run {
                Some((rk, start, len)) if rk == k && start + len == i => Some((k, start, len + 1)),
                other => {
                    out.extend(other.map(part));
                    Some((k, i, 1))
                }
            };
        }
        out.extend(run.map(part));
    }
    // What the last load did not have, in declaration order.
    for (k, f) in fresh.iter().enumerate() {
        let mut i = 0;
        while i < f.len() {
            if placed[k][i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < f.len() && !placed[k][i] {
                i += 1;
            }
            out.push(part((k, start, i - start)));
        }
    }
    fill_holes(&mut out);
    let mut placed = AdSet::default();
    for item in out {
        if let Item::Run(s) = item {
            placed.push_seg(s);
        }
    }
    let bound = MAX_RUNS_PER_FILE * files.len() + 64;
    (placed.len() == ads.len() && placed.segments().len() <= bound).then_some(placed)
}

/// A place in the layout being made: a run of access domains, or the place of one removed
/// (with its number of routes).
enum Item {
    Run(Seg),
    Hole(usize),
}

/// At most this many holes are filled in one load; the others close up (the access
/// domains after them move).
const MAX_FILLED: usize = 64;

/// How far from the end a hole looks for an access domain to take its place.
#[cfg(not(test))]
const FILL_FROM_LAST: usize = 256;
/// Not far under test, so that holes also close up in models of a few dozen.
#[cfg(test)]
const FILL_FROM_LAST: usize = 2;

/// Fills each hole with the last access domain of the layout (among the last
/// [`FILL_FROM_LAST`]) that has as many routes as the one removed: its rows take the same
/// room, so only those after its old place, at the end, move. Holes at the end are
/// dropped; the others close up.
fn fill_holes(out: &mut Vec<Item>) {
    let mut filled = 0;
    let mut h = 0;
    while h < out.len() && filled < MAX_FILLED {
        while matches!(out.last(), Some(Item::Hole(_))) {
            out.pop();
        }
        if let Some(&Item::Hole(routes)) = out.get(h) {
            if let Some(one) = take_from_end(out, h, routes) {
                out[h] = Item::Run(one);
                filled += 1;
            }
        }
        h += 1;
    }
    // The holes left close up, in one pass (a file emptied leaves thousands).
    out.retain(|i| matches!(i, Item::Run(_)));
}

/// The last access domain after place `h` (among the last [`FILL_FROM_LAST`]) with
/// `routes` routes, taken out of its run.
fn take_from_end(out: &mut Vec<Item>, h: usize, routes: usize) -> Option<Seg> {
    let mut seen = 0;
    for k in (h + 1..out.len()).rev() {
        let Item::Run(s) = &out[k] else {
            continue;
        };
        for i in (0..s.len()).rev() {
            if seen == FILL_FROM_LAST {
                return None;
            }
            seen += 1;
            if s[i].route_count() != routes {
                continue;
            }
            let (src, start) = (s.source().clone(), s.start());
            let (before, after) = (
                Seg::part(&src, start, i),
                Seg::part(&src, start + i + 1, s.len() - i - 1),
            );
            let mut parts: Vec<Item> = Vec::new();
            parts.extend(
                [before, after]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(Item::Run),
            );
            out.splice(k..k + 1, parts);
            return Some(Seg::part(&src, start + i, 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(file: &Arc<str>, name: &str) -> AccessDomain {
        super::super::ad_set::tests::ad_at(name.as_bytes(), 0, file, 1)
    }

    fn load(files: &[(&str, &[&str])]) -> AdSet {
        let mut set = AdSet::default();
        for (f, names) in files {
            let f: Arc<str> = (*f).into();
            set.push(names.iter().map(|n| ad(&f, n)).collect::<Vec<_>>().into());
        }
        set
    }

    fn names(set: &AdSet) -> Vec<String> {
        set.iter()
            .map(|a| String::from_utf8_lossy(&a.name).into_owned())
            .collect()
    }

    /// Access domains added anywhere go after the others, which keep their places; a file
    /// unchanged keeps its segments (the same allocation); one removed moves the ones
    /// after it; a file no longer included leaves.
    #[test]
    fn access_domains_keep_their_places_and_new_ones_go_last() {
        let first = load(&[("a", &["a1", "a2", "a3"]), ("b", &["b1", "b2"])]);
        let mut next = load(&[("a", &["a1", "a0", "a2", "a3", "a4"])]);
        next.push(first.segments()[1].source().clone());
        let placed = arrange(first.segments(), &next).expect("arranged");
        assert_eq!(names(&placed), ["a1", "a2", "a3", "b1", "b2", "a0", "a4"]);
        assert!(
            placed.segments()[2].same(&first.segments()[1]),
            "b is shared"
        );
        assert!(
            placed.segments().iter().all(|s| !s.is_empty()),
            "no empty segment"
        );

        // a2 removed: the last one (as many routes) takes its place.
        let mut again = load(&[("a", &["a3", "a1", "a0", "a4"])]);
        again.push(first.segments()[1].source().clone());
        let placed2 = arrange(placed.segments(), &again).expect("arranged");
        assert_eq!(names(&placed2), ["a1", "a4", "a3", "b1", "b2", "a0"]);

        // b1 removed: the last one has more routes, so b2, the last with as many, takes
        // its place.
        let mut nearest = load(&[("a", &["a1", "a4", "a3", "a0"])]);
        let mut b = load(&[("b", &["b2"])]);
        let mut wide = ad(&"a".into(), "a0");
        wide.policy = crate::config::gslb::PoolPolicy::Nearest;
        wide.lines = vec![(1u32, vec![0u32].into_boxed_slice())].into();
        let a: Vec<AccessDomain> = nearest.segments()[0].source().iter().cloned().collect();
        let mut a = a;
        a[3] = wide;
        nearest = AdSet::default();
        nearest.push(a.into());
        nearest.push(b.segments()[0].source().clone());
        b = nearest;
        let placed_b = arrange(placed2.segments(), &b).expect("arranged");
        assert_eq!(names(&placed_b), ["a1", "a4", "a3", "b2", "a0"]);

        let gone = load(&[("a", &["a1"])]);
        let placed3 = arrange(placed_b.segments(), &gone).expect("arranged");
        assert_eq!(names(&placed3), ["a1"]);
    }

    /// A file of access domains with `wide` ones mapping a line (two routes each).
    fn file(f: &str, names: &[(&str, bool)]) -> Arc<[AccessDomain]> {
        let f: Arc<str> = f.into();
        let one = |&(n, wide): &(&str, bool)| {
            let mut a = ad(&f, n);
            if wide {
                a.policy = crate::config::gslb::PoolPolicy::Nearest;
                a.lines = vec![(1u32, vec![0u32].into_boxed_slice())].into();
            }
            a
        };
        names.iter().map(one).collect::<Vec<_>>().into()
    }

    /// The access domain that fills a hole may come from within a run (which is cut in
    /// two around it); a file emptied leaves holes like any access domain removed; one
    /// moved to another file stays where it was.
    #[test]
    fn holes_take_from_within_runs_and_emptied_files_close_up() {
        let set = |files: Vec<Arc<[AccessDomain]>>| {
            let mut s = AdSet::default();
            files.into_iter().for_each(|f| s.push(f));
            s
        };
        let a = file("a", &[("a1", false), ("a2", false), ("a3", false)]);
        let b = file("b", &[("b1", true), ("b2", false), ("b3", true)]);
        let first = set(vec![a, b.clone()]);
        let a = file("a", &[("a1", false), ("a3", false)]);
        let placed = arrange(first.segments(), &set(vec![a.clone(), b.clone()])).expect("arranged");
        assert_eq!(names(&placed), ["a1", "b2", "a3", "b1", "b3"]);
        assert_eq!(placed.segments().len(), 5, "b cut around b2");

        let c = file("c", &[("c1", false)]);
        let emptied = arrange(placed.segments(), &set(vec![b, c])).expect("arranged");
        // a1's place goes to c1 (new, as many routes); a3's closes up (b3 and b1 have
        // more, and nothing further is looked at under test).
        assert_eq!(names(&emptied), ["c1", "b2", "b1", "b3"]);

        // An access domain moved to another file keeps its place.
        let b2 = file("b", &[("b1", true), ("b3", true)]);
        let c2 = file("c", &[("c1", false), ("b2", false)]);
        let moved = arrange(emptied.segments(), &set(vec![b2, c2])).expect("arranged");
        assert_eq!(names(&moved), ["c1", "b2", "b1", "b3"]);
    }
}
