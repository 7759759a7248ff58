//! Name tables patched rather than compiled again: when the zones are those of the
//! snapshot serving and only access domains changed, a copy of its name tables gets the
//! names that gained or lost access domains rewritten, and every other name's access
//! domains renumbered (an access domain's index is its position in the configuration,
//! which an access domain added or removed before it moves). A million names then cost a
//! copy of their tables and one pass over them, not a compile.
//!
//! Only names whose node follows from their access domains alone are patched: a name
//! that holds no records, is no wildcard, lies in a zone without delegations or DNAMEs,
//! is the target of no record (CNAME chains and additional addresses were compiled
//! against what exists) and lies above no zone served here; a new one whose parent is
//! served already (no empty non-terminal to make, and that parent not going); one that
//! loses every access domain when no name was below it at the last compile and its
//! parent is no empty non-terminal (which could go with it). An empty non-terminal that
//! gains access domains is rewritten in place. Anything else compiles the zones again,
//! as does a change of the zones themselves; so do patches whose left-over nodes pass an
//! eighth of the names. Every check is made on the serving tables before anything is
//! copied.

use foldhash::{HashMap, HashMapExt, HashSet};

use super::zone::ad_only_node;
use crate::config::gslb::{AccessDomain, AdSet};
use crate::config::{Config, Rdata, Record};
use crate::dns::name::parent;
use crate::dns::rtype;
use crate::tables::{Names, Snapshot, DYN, NONE};

/// Most access domains in changed segments (old and new) a patch takes on: beyond, a
/// compile costs little more.
const MAX_CHANGED: usize = 200_000;

/// `prev`'s name tables patched for `cfg`, whose zones digest to `zones`; `None` when
/// the change is not one a patch can make (the zones are compiled then).
pub(super) fn names(cfg: &Config, prev: &Snapshot, zones: u64) -> Option<Names> {
    let old = &*prev.names;
    if old.zones_digest != zones || old.garbage > old.index.len() / 8 + 4096 {
        return None;
    }
    let diff = Diff::new(&prev.model.access_domains, &cfg.gslb.access_domains)?;
    if !zones_allow(cfg, &diff.affected) {
        return None;
    }
    let steps = plan(old, cfg, &diff)?;
    let mut n = copy(old, &steps);
    // No access domain moved or went: every reference stands as it is.
    let moved = diff.remap.iter().enumerate().any(|(i, &r)| r != i as u32);
    if moved {
        renumber(&mut n, &diff.remap);
    }
    for (name, zi, ads, step) in &steps {
        apply(&mut n, name, *zi, ads, step);
    }
    n.ad_nodata = ad_nodata(old, &diff, cfg, &n);
    Some(n)
}

/// How the access domains of two configurations line up.
struct Diff<'a> {
    /// Old access domain index -> new one, or [`NONE`] (removed).
    remap: Vec<u32>,
    /// Names whose enabled access domains are others than before, with their zone.
    affected: HashMap<&'a [u8], usize>,
    /// Enabled access domains of the changed segments by name: (type, new index).
    fresh: HashMap<&'a [u8], Vec<(u16, u32)>>,
    /// Segments both hold: (new first index, old first index, length).
    shared: Vec<(usize, usize, usize)>,
}

impl<'a> Diff<'a> {
    /// Segments are shared (the same allocation: an included file read once) or not;
    /// the access domains of the others are matched by name and type.
    fn new(old: &'a AdSet, new: &'a AdSet) -> Option<Self> {
        let mut by_ptr: HashMap<(*const AccessDomain, usize), (usize, usize)> = HashMap::new();
        let mut end = 0;
        for (k, s) in old.segments().iter().enumerate() {
            by_ptr.insert(s.key(), (end, k));
            end += s.len();
        }
        let mut d = Diff {
            remap: vec![NONE; end],
            affected: HashMap::new(),
            fresh: HashMap::new(),
            shared: Vec::new(),
        };
        let mut used = vec![false; old.segments().len()];
        let mut changed: Vec<(usize, &'a [AccessDomain])> = Vec::new();
        let mut at = 0;
        for s in new.segments() {
            match by_ptr.get(&s.key()) {
                Some(&(os, k)) if !used[k] => {
                    used[k] = true;
                    d.shared.push((at, os, s.len()));
                    for (i, r) in d.remap[os..os + s.len()].iter_mut().enumerate() {
                        *r = (at + i) as u32;
                    }
                }
                _ => changed.push((at, s)),
            }
            at += s.len();
        }
        let mut gone: HashMap<(&[u8], u16), (u32, &AccessDomain)> = HashMap::new();
        let mut start = 0;
        for (s, &u) in old.segments().iter().zip(&used) {
            if !u {
                for (i, ad) in s.iter().enumerate() {
                    gone.insert((&ad.name[..], ad.rtype), ((start + i) as u32, ad));
                }
            }
            start += s.len();
        }
        let count = gone.len() + changed.iter().map(|c| c.1.len()).sum::<usize>();
        if count > MAX_CHANGED {
            return None;
        }
        for (at, s) in changed {
            for (i, ad) in s.iter().enumerate() {
                let ni = (at + i) as u32;
                let was = gone.remove(&(&ad.name[..], ad.rtype));
                if let Some((oi, _)) = was {
                    d.remap[oi as usize] = ni;
                }
                if ad.enabled {
                    d.fresh
                        .entry(&ad.name[..])
                        .or_default()
                        .push((ad.rtype, ni));
                }
                if ad.enabled != was.is_some_and(|(_, o)| o.enabled) {
                    d.affected.insert(&ad.name[..], ad.zone);
                }
            }
        }
        for (_, ad) in gone.into_values() {
            if ad.enabled {
                d.affected.insert(&ad.name[..], ad.zone);
            }
        }
        Some(d)
    }
}

/// Whether the zones of the `affected` names let a patch stand for a compile (the
/// module's list: no cut, DNAME, record owner, record target, wildcard, zone below).
fn zones_allow(cfg: &Config, affected: &HashMap<&[u8], usize>) -> bool {
    let at_or_above = |name: &[u8]| {
        let mut n = Some(name);
        while let Some(cur) = n {
            if affected.contains_key(cur) {
                return true;
            }
            n = parent(cur);
        }
        false
    };
    if affected.keys().any(|n| n.starts_with(b"\x01*")) {
        return false;
    }
    let zones: HashSet<usize> = affected.values().copied().collect();
    for &z in &zones {
        let zone = &cfg.zones[z];
        for r in &zone.records {
            let hides = (r.rtype == rtype::NS && r.owner != zone.name) || r.rtype == rtype::DNAME;
            if hides || affected.contains_key(&r.owner[..]) {
                return false;
            }
            if target(r).is_some_and(|t| at_or_above(&t)) {
                return false;
            }
        }
    }
    // A zone served here below an affected name.
    !cfg.zones
        .iter()
        .any(|z| parent(&z.name).is_some_and(at_or_above))
}

/// The name a record's compiled answers looked up (a CNAME's chain, NS/MX/SRV
/// additional addresses), lowercased.
fn target(r: &Record) -> Option<Vec<u8>> {
    let name = match (r.rtype, &r.rdata) {
        (rtype::CNAME | rtype::NS, Rdata::Name(n)) | (rtype::MX, Rdata::Mx(_, n)) => &n[..],
        (rtype::SRV, Rdata::Opaque(b)) if b.len() > 7 => &b[6..],
        _ => return None,
    };
    Some(name.to_ascii_lowercase())
}

/// A copy of `old`'s tables, to be patched by `steps`: the index shares its shards until
/// a step writes one; the arrays are copied with room for what the steps add (a copy as
/// long as the original would be copied again, whole, by the first push).
fn copy(old: &Names, steps: &[Planned<'_>]) -> Names {
    let names = steps
        .iter()
        .filter(|s| matches!(s.3, Step::Add { .. }))
        .count();
    let types: usize = steps.iter().map(|s| s.2.len()).sum();
    Names {
        index: old.index.clone(),
        nodes: with_room(&old.nodes, names),
        types: with_room(&old.types, types),
        answers: old.answers.clone(),
        arena: old.arena.clone(),
        fixups: old.fixups.clone(),
        zones: old.zones.clone(),
        root_zone: old.root_zone,
        max_labels: old.max_labels,
        chaos: old.chaos.clone(),
        ad_nodata: Vec::new(),
        digest: old.digest,
        seg_digests: Vec::new(),
        zones_digest: old.zones_digest,
        has_child: with_room(&old.has_child, names),
        garbage: old.garbage,
        patched: true,
    }
}

/// A copy of `v` with room for `more` elements.
fn with_room<T: Clone>(v: &[T], more: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len() + more);
    out.extend_from_slice(v);
    out
}

/// Every access-domain reference in `n` renumbered by `remap` (a removed one becomes
/// [`NONE`]: its name is among the affected, whose nodes are rewritten).
fn renumber(n: &mut Names, remap: &[u32]) {
    let fix = |r: &mut u32| {
        if *r != NONE && *r & DYN != 0 {
            let to = remap.get((*r & !DYN) as usize).copied().unwrap_or(NONE);
            *r = if to == NONE { NONE } else { DYN | to };
        }
    };
    for (_, a) in &mut n.types {
        fix(a);
    }
    for node in &mut n.nodes {
        fix(&mut node.other);
        fix(&mut node.any_udp);
        fix(&mut node.any_tcp);
    }
}

/// What happens to one affected name.
enum Step {
    /// A new name below `parent` (an existing name of the same zone).
    Add { parent: usize },
    /// The node `id` rewritten in place for its access domains now (an empty
    /// non-terminal that gains some, or a name whose set changed).
    Rewrite { id: usize },
    /// The node `id`, with nothing below it, leaves the index.
    Remove { id: usize },
}

/// One affected name's step: the name, its zone, its enabled access domains now (type, new
/// index), and what happens to its node.
type Planned<'a> = (&'a [u8], u32, Vec<(u16, u32)>, Step);

/// The step of each affected name, worked out on the serving tables before anything is
/// copied; `None` when one
/// of them needs the zone compile. Deterministic: no step depends on another's outcome
/// (a name added below another added one, or a name left with nothing but children,
/// compiles).
fn plan<'a>(old: &Names, cfg: &Config, d: &Diff<'a>) -> Option<Vec<Planned<'a>>> {
    let mut steps = Vec::with_capacity(d.affected.len());
    for (&name, &z) in &d.affected {
        let zi = z as u32;
        let id = old.index.get(name).map(|i| i as usize);
        let ads = ads_now(old, cfg, d, name, id);
        let step = match id {
            None if ads.is_empty() => continue,
            None => {
                let parent = old.index.get(parent(name)?)? as usize;
                let p = &old.nodes[parent];
                if p.zone != zi || p.cut {
                    return None;
                }
                Step::Add { parent }
            }
            Some(id) if old.nodes[id].zone != zi || old.nodes[id].cut => return None,
            // It would stay as an empty non-terminal only while something is below it,
            // which `has_child` (set at the compile, never cleared) cannot vouch for.
            Some(id) if ads.is_empty() && old.has_child[id] => return None,
            Some(id) if ads.is_empty() => {
                // Its parent may be an empty non-terminal that goes with it.
                let p = parent(name)?;
                let pn = &old.nodes[old.index.get(p)? as usize];
                if pn.types_len == 0 && *p != *old.zones[z].name {
                    return None;
                }
                Step::Remove { id }
            }
            Some(id) => Step::Rewrite { id },
        };
        steps.push((name, zi, ads, step));
    }
    // A name added below one that goes: that one would stay as an empty non-terminal.
    let gone: HashSet<usize> = steps
        .iter()
        .filter_map(|s| match s.3 {
            Step::Remove { id } => Some(id),
            _ => None,
        })
        .collect();
    let under_gone = |s: &(&[u8], u32, Vec<(u16, u32)>, Step)| matches!(s.3, Step::Add { parent } if gone.contains(&parent));
    if steps.iter().any(under_gone) {
        return None;
    }
    Some(steps)
}

/// The enabled access domains at `name` in `cfg` (type, new index, in declaration order):
/// those of its serving node (`id`) that still are, numbered anew, and those of the
/// changed segments.
fn ads_now(
    old: &Names,
    cfg: &Config,
    d: &Diff<'_>,
    name: &[u8],
    id: Option<usize>,
) -> Vec<(u16, u32)> {
    let mut ads: Vec<(u16, u32)> = d.fresh.get(name).cloned().unwrap_or_default();
    if let Some(node) = id.map(|i| &old.nodes[i]) {
        let span = node.types_start as usize..(node.types_start + node.types_len) as usize;
        for &(t, a) in &old.types[span] {
            if a == NONE || a & DYN == 0 {
                continue;
            }
            let to = d.remap.get((a & !DYN) as usize).copied().unwrap_or(NONE);
            let Some(ad) = cfg.gslb.access_domains.get(to as usize) else {
                continue;
            };
            if ad.enabled && *ad.name == *name && !ads.contains(&(t, to)) {
                ads.push((t, to));
            }
        }
    }
    ads.sort_unstable_by_key(|&(_, a)| a);
    ads
}

/// Makes one planned step in the copy `n` (renumbered already).
fn apply(n: &mut Names, name: &[u8], zi: u32, ads: &[(u16, u32)], step: &Step) {
    let nodata = n.zones[zi as usize].nodata;
    match *step {
        Step::Add { parent } => {
            let node = ad_only_node(zi, nodata, ads.iter().copied(), &mut n.types);
            let id = n.nodes.len() as u32;
            n.nodes.push(node);
            n.has_child.push(false);
            n.has_child[parent] = true;
            n.index.insert(name, id);
            n.max_labels = n.max_labels.max(super::labels(name).min(127) as u8);
        }
        Step::Rewrite { id } => {
            let old = &n.nodes[id];
            n.garbage += old.types_len as usize;
            let wildcard = old.wildcard;
            let mut node = ad_only_node(zi, nodata, ads.iter().copied(), &mut n.types);
            node.wildcard = wildcard;
            n.nodes[id] = node;
        }
        Step::Remove { id } => {
            n.index.remove(name);
            n.garbage += 1 + n.nodes[id].types_len as usize;
        }
    }
}

/// Each access domain's NODATA answer: a shared segment's as it was, the others' their
/// zone's (enabled ones; as the compile gives them).
fn ad_nodata(old: &Names, d: &Diff<'_>, cfg: &Config, n: &Names) -> Vec<u32> {
    let ads = &cfg.gslb.access_domains;
    let mut v = Vec::with_capacity(ads.len());
    let mut shared = d.shared.iter().peekable();
    let mut at = 0;
    for s in ads.segments() {
        match shared.peek() {
            Some(&&(ns, os, len)) if ns == at => {
                v.extend_from_slice(&old.ad_nodata[os..os + len]);
                shared.next();
            }
            _ => v.extend(s.iter().map(|ad| match ad.enabled {
                true => n.zones[ad.zone].nodata,
                false => NONE,
            })),
        }
        at += s.len();
    }
    v
}
