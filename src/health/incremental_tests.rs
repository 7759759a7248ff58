//! A reload compiled from the serving snapshot (name tables kept, GSLB rows of unchanged
//! included files copied, active pools copied with them) gives exactly what a full compile
//! of the same configuration gives: the same name tables, the same route of every access
//! domain for every line, the same slots, and, through a health writer fed the same probe
//! verdicts, the same active pool in every slot. Randomised edits of a model in included
//! files, each step checked against a full rebuild.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Writer;
use crate::compile::{compile, compile_with, Cpus};
use crate::config::Config;
use crate::tables::Snapshot;

use crate::compile::testing::Rng;

const LINES: usize = 4;
const POOLS: usize = 6;
/// Pool numbers from here on name the extra pools (`x0`, ...).
const EXTRA: usize = 1000;

fn pool_name(p: usize) -> String {
    match p.checked_sub(EXTRA) {
        Some(n) => format!("x{n}"),
        None => format!("p{p}"),
    }
}
const ADDRS: usize = 8;

/// One access domain as the generator writes it.
#[derive(Clone)]
struct Ad {
    name: String,
    rtype: &'static str,
    policy: usize,
    pools: Vec<(usize, u32)>,
    lines: Vec<(usize, Vec<usize>)>,
    ttl: u32,
    enabled: bool,
    fallback: usize,
    /// The pool of `fallback-pool` (when `fallback` says so).
    fallback_pool: usize,
}

impl Ad {
    fn random(rng: &mut Rng, name: String) -> Self {
        let mut pools: Vec<(usize, u32)> = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let p = rng.below(POOLS);
            if !pools.iter().any(|&(q, _)| q == p) {
                pools.push((p, 1 + rng.below(5) as u32));
            }
        }
        let lines = (0..rng.below(3))
            .map(|_| (rng.below(LINES + 1), vec![rng.below(POOLS)]))
            .fold(Vec::<(usize, Vec<usize>)>::new(), |mut v, l| {
                if !v.iter().any(|(k, _)| *k == l.0) {
                    v.push(l);
                }
                v
            });
        Self {
            name,
            rtype: "A",
            policy: rng.below(5),
            pools,
            lines,
            ttl: 30 + rng.below(3) as u32,
            enabled: rng.below(8) != 0,
            fallback: rng.below(3),
            fallback_pool: rng.below(POOLS),
        }
    }

    /// `front`: whether line `l0` (before the others) exists; else an access domain
    /// does not map it.
    fn write(&self, out: &mut String, (front, l3): (bool, bool)) {
        let policy = [
            "policy = \"nearest\"",
            "policy = \"weighted\"",
            "policy = \"round-robin\"",
            "policy = \"global-availability\"",
            "policy = \"global-availability\"\npreemptive = false",
        ][self.policy];
        let pool = format!("fallback-pool = \"{}\"", pool_name(self.fallback_pool));
        let fallback = ["fallback = \"all\"", "fallback = \"nodata\"", &pool][self.fallback];
        let _ = write!(
            out,
            "[[access-domain]]\nname = \"{}.e.test.\"\ntype = \"{}\"\n{policy}\nttl = {}\n\
             enabled = {}\n{fallback}\n",
            self.name, self.rtype, self.ttl, self.enabled
        );
        let pools: Vec<String> = self
            .pools
            .iter()
            .map(|&(p, w)| format!("{{ pool = \"{}\", weight = {w} }}", pool_name(p)))
            .collect();
        if self.policy == 0 {
            let _ = writeln!(
                out,
                "[access-domain.lines]\ndefault = [\"{}\"]",
                pool_name(self.pools[0].0)
            );
            // Without l3, what it mapped goes to l0 when that is there (and free): l0 took
            // l3's index, so the access domain names the same index, another line.
            let maps_l0 = self.lines.iter().any(|(l, _)| *l == 0);
            let named = |l: usize| match l {
                3 if !l3 && front && !maps_l0 => Some(0),
                0 if !front => None,
                3 if !l3 => None,
                l => Some(l),
            };
            for (l, ps) in self
                .lines
                .iter()
                .filter_map(|(l, ps)| Some((named(*l)?, ps)))
            {
                let ps: Vec<String> = ps
                    .iter()
                    .map(|&p| format!("\"{}\"", pool_name(p)))
                    .collect();
                let _ = writeln!(out, "l{l} = [{}]", ps.join(", "));
            }
        } else {
            let _ = writeln!(out, "pools = [{}]", pools.join(", "));
        }
    }
}

/// The model: the main file's addresses, pools and lines (`weights` per address), and
/// the access domains of each included file.
struct Model {
    dir: PathBuf,
    weights: Vec<u32>,
    /// Per address: enabled, and the last octet of its value.
    enabled: Vec<bool>,
    values: Vec<u8>,
    members: Vec<Vec<usize>>,
    /// Pools after p0..: their number (`x{n}`, named by access domains as pool
    /// `EXTRA + n`) and members.
    extra_pools: Vec<(usize, Vec<usize>)>,
    next_extra: usize,
    /// A pool before p0 (every pool's index moves: a full compile).
    front_pool: bool,
    /// The lines' prefixes moved.
    prefixes_moved: bool,
    /// The last line's parent: l2 instead of l1.
    reparented: bool,
    /// `[server] ecs = false` (moved with the lines' prefixes).
    ecs_off: bool,
    /// A line `l0` before the others, and its parent (`l1` or `l2`): placed after them.
    front_line: Option<usize>,
    /// Line `l3` removed (`l0`, when there, takes its place; access domains do not name
    /// it then).
    l3_gone: bool,
    /// Pools p0.. answering round-robin, up to two addresses at a time (else the default).
    round_robin: Vec<bool>,
    files: Vec<Vec<Ad>>,
    next_name: usize,
    /// The name of the last pool the serving model placed (set after each reload).
    last_placed: String,
}

impl Model {
    fn new(dir: PathBuf, rng: &mut Rng) -> Self {
        let mut m = Self {
            dir,
            weights: vec![1; ADDRS],
            enabled: vec![true; ADDRS],
            values: (1..=ADDRS as u8).collect(),
            extra_pools: vec![(0, vec![0]), (1, vec![1])],
            next_extra: 2,
            front_pool: false,
            prefixes_moved: false,
            reparented: false,
            ecs_off: false,
            front_line: None,
            l3_gone: false,
            round_robin: vec![false; POOLS],
            members: (0..POOLS)
                .map(|p| vec![p % ADDRS, (p + 3) % ADDRS])
                .collect(),
            files: Vec::new(),
            next_name: 0,
            last_placed: String::new(),
        };
        for _ in 0..4 {
            let ads = (0..1 + rng.below(6)).map(|_| m.fresh_ad(rng)).collect();
            m.files.push(ads);
        }
        m
    }

    fn fresh_ad(&mut self, rng: &mut Rng) -> Ad {
        self.next_name += 1;
        // All are A, so names are unique. Some lie below `s`, an empty non-terminal until
        // the third access domain is named `s` itself; `c` is a CNAME to `d4`, whose
        // coming and going the name tables' patch must leave to a compile.
        let n = self.next_name;
        let name = match n {
            3 => "s".to_string(),
            _ if n.is_multiple_of(5) => format!("d{n}.s"),
            _ => format!("d{n}"),
        };
        let mut ad = Ad::random(rng, name);
        // A quarter name an extra pool (the pools a removal moves): first, for a line,
        // or to fall back on.
        if let (0, false) = (rng.below(4), self.extra_pools.is_empty()) {
            let x = EXTRA + self.extra_pools[rng.below(self.extra_pools.len())].0;
            match (rng.below(3), ad.lines.first_mut()) {
                (1, Some((_, ps))) => ps[0] = x,
                (2, _) => ad.fallback_pool = x,
                _ if !ad.pools.iter().any(|&(p, _)| p == x) => ad.pools[0].0 = x,
                _ => {}
            }
        }
        ad
    }

    fn main_text(&self) -> String {
        let mut t = String::from(
            "version = 1\ninclude = [\"ads/*.toml\"]\n[server]\nshards = [0]\n\
             [control]\nlisten = \"off\"\n[[zone]]\nname = \"e.test.\"\n\
             soa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
             records = [\"ns A 192.0.2.53\", \"*.w A 192.0.2.54\", \"c CNAME d4\"]\n",
        );
        if self.ecs_off {
            t = t.replacen("shards = [0]\n", "shards = [0]\necs = false\n", 1);
        }
        if let Some(p) = self.front_line {
            let _ = write!(
                t,
                "[[line]]\nname = \"l0\"\nprefixes = [\"10.200.0.0/16\"]\nparent = \"l{p}\"\n"
            );
        }
        for l in (1..=LINES).filter(|&l| l != 3 || !self.l3_gone) {
            let octet = if self.prefixes_moved { l + 100 } else { l };
            let _ = write!(
                t,
                "[[line]]\nname = \"l{l}\"\nprefixes = [\"10.{octet}.0.0/16\"]\n"
            );
            if l == LINES {
                t.push_str(if self.reparented {
                    "parent = \"l2\"\n"
                } else {
                    "parent = \"l1\"\n"
                });
            }
        }
        for (a, w) in self.weights.iter().enumerate() {
            let _ = write!(
                t,
                "[[address]]\nname = \"a{a}\"\nvalue = \"192.0.2.{}\"\nweight = {w}\n\
                 enabled = {}\n",
                self.values[a], self.enabled[a]
            );
        }
        let pool = |t: &mut String, name: String, members: &[usize]| {
            let list: Vec<String> = members.iter().map(|a| format!("\"a{a}\"")).collect();
            let _ = write!(
                t,
                "[[pool]]\nname = \"{name}\"\ntype = \"ipv4\"\naddresses = [{}]\n",
                list.join(", ")
            );
        };
        if self.front_pool {
            pool(&mut t, "front".into(), &[0]);
        }
        for (p, members) in self.members.iter().enumerate() {
            pool(&mut t, format!("p{p}"), members);
            if self.round_robin[p] {
                let answers = members.len().clamp(1, 2);
                let _ = write!(t, "policy = \"round-robin\"\nanswers = {answers}\n");
            }
        }
        for (n, members) in &self.extra_pools {
            pool(&mut t, pool_name(EXTRA + n), members);
        }
        t
    }

    fn write(&self) -> PathBuf {
        let ads = self.dir.join("ads");
        let _ = std::fs::remove_dir_all(&ads);
        std::fs::create_dir_all(&ads).unwrap();
        for (i, f) in self.files.iter().enumerate() {
            let mut t = String::new();
            for ad in f {
                ad.write(&mut t, (self.front_line.is_some(), !self.l3_gone));
            }
            std::fs::write(ads.join(format!("f{i:02}.toml")), t).unwrap();
        }
        let main = self.dir.join("main.toml");
        std::fs::write(&main, self.main_text()).unwrap();
        main
    }

    /// One random edit; returns what it was.
    fn edit(&mut self, rng: &mut Rng) -> &'static str {
        let f = rng.below(self.files.len());
        match rng.below(12) {
            0..=1 if !self.files[f].is_empty() => {
                // The same shape (policy, lines), other pools, weights and TTL.
                let k = rng.below(self.files[f].len());
                let old = self.files[f][k].clone();
                let mut ad = Ad::random(rng, old.name.clone());
                ad.policy = old.policy;
                ad.enabled = old.enabled;
                ad.lines = old
                    .lines
                    .iter()
                    .map(|(l, _)| (*l, vec![rng.below(POOLS)]))
                    .collect();
                self.files[f][k] = ad;
                "one access domain's pools changed"
            }
            2..=3 if !self.files[f].is_empty() => {
                let k = rng.below(self.files[f].len());
                let name = self.files[f][k].name.clone();
                let mut ad = Ad::random(rng, name);
                ad.enabled = self.files[f][k].enabled;
                self.files[f][k] = ad;
                "one access domain changed"
            }
            4 => {
                let ad = self.fresh_ad(rng);
                let at = rng.below(self.files[f].len() + 1);
                self.files[f].insert(at, ad);
                "one access domain added"
            }
            5 if !self.files[f].is_empty() => {
                let k = rng.below(self.files[f].len());
                self.files[f].remove(k);
                "one access domain removed"
            }
            6 if !self.files[f].is_empty() => {
                let k = rng.below(self.files[f].len());
                self.files[f][k].enabled ^= true;
                "one access domain enabled or disabled"
            }
            7 => {
                let ads = (0..1 + rng.below(3)).map(|_| self.fresh_ad(rng)).collect();
                let at = rng.below(self.files.len() + 1);
                self.files.insert(at, ads);
                "one file added"
            }
            8..=10 => self.edit_main(rng),
            11 if !self.extra_pools.is_empty() && !self.files[f].is_empty() => {
                let k = rng.below(self.files[f].len());
                let (n, _) = self.extra_pools[rng.below(self.extra_pools.len())];
                let ad = &mut self.files[f][k];
                if !ad.pools.iter().any(|&(p, _)| p == EXTRA + n) {
                    ad.pools[0].0 = EXTRA + n;
                }
                "an access domain names an extra pool"
            }
            _ => "nothing changed",
        }
    }

    /// Pool `p` removed: whoever named it names `to` instead (or no more, where it named
    /// `to` already).
    fn forget_pool(&mut self, p: usize, to: usize) {
        for ad in self.files.iter_mut().flatten() {
            if ad.pools.iter().any(|&(q, _)| q == p) {
                if ad.pools.iter().any(|&(q, _)| q == to) {
                    ad.pools.retain(|&(q, _)| q != p);
                } else {
                    let named = ad.pools.iter_mut().filter(|(q, _)| *q == p);
                    named.for_each(|(q, _)| *q = to);
                }
            }
            for (_, ps) in &mut ad.lines {
                ps.iter_mut().filter(|q| **q == p).for_each(|q| *q = to);
            }
            if ad.fallback_pool == p {
                ad.fallback_pool = to;
            }
        }
    }

    /// One random edit of the main file's addresses, pools or lines.
    fn edit_main(&mut self, rng: &mut Rng) -> &'static str {
        let n = self.weights.len();
        let a = rng.below(n);
        match rng.below(13) {
            0 => {
                self.weights[a] = 1 + rng.below(4) as u32;
                "an address weight changed (main file)"
            }
            1 => {
                let p = rng.below(POOLS);
                self.members[p] = vec![rng.below(n), rng.below(n)];
                self.members[p].dedup();
                "a pool's members changed (main file)"
            }
            2 => {
                self.enabled[a] ^= true;
                "an address enabled or disabled (main file)"
            }
            3 => {
                self.values[a] = 100 + rng.below(100) as u8;
                "an address's value changed (main file)"
            }
            4 if n < 16 => {
                self.weights.push(1);
                self.enabled.push(true);
                self.values.push(200 + n as u8);
                let p = rng.below(POOLS);
                self.members[p].push(n);
                "an address added to a pool (main file)"
            }
            5 | 11 if !self.extra_pools.is_empty() && rng.below(2) == 0 => {
                // Any of them: the last takes its place, and who named it names that one
                // (the same index, another pool) or p0.
                let (n, _) = self.extra_pools.remove(rng.below(self.extra_pools.len()));
                // The pool that takes its index: the last the server placed.
                let last = self
                    .last_placed
                    .strip_prefix('x')
                    .and_then(|m| m.parse::<usize>().ok());
                let to = match last {
                    Some(m) if m != n && rng.below(3) != 0 => EXTRA + m,
                    _ => 0,
                };
                self.forget_pool(EXTRA + n, to);
                "a pool removed (main file)"
            }
            5 if self.extra_pools.len() < 3 => {
                self.extra_pools.push((self.next_extra, vec![rng.below(n)]));
                self.next_extra += 1;
                "a pool added after the others (main file)"
            }
            6 => {
                self.prefixes_moved ^= true;
                self.ecs_off ^= true;
                "the lines' prefixes moved and ECS turned on or off (main file)"
            }
            7 => {
                self.front_pool ^= true;
                "a pool added or removed before the others (main file)"
            }
            8 => {
                self.reparented ^= true;
                "a line's parent changed (main file)"
            }
            9 => {
                let p = rng.below(POOLS);
                self.round_robin[p] ^= true;
                "a pool's policy and answers changed (main file)"
            }
            10 if self.front_line.is_none() => {
                self.front_line = Some(1 + rng.below(2));
                "a line added before the others (main file)"
            }
            10 if rng.below(2) == 0 => {
                self.front_line = self.front_line.map(|p| 3 - p);
                "the line before the others reparented (main file)"
            }
            10 => {
                self.front_line = None;
                "the line before the others removed (main file)"
            }
            12 => {
                self.l3_gone ^= true;
                "a line in the middle removed or added back (main file)"
            }
            _ => "nothing changed",
        }
    }
}

/// What a snapshot answers from, with table offsets resolved: equal for two snapshots
/// that answer every query alike whatever their layout.
fn view(s: &Snapshot) -> String {
    let n = &s.names;
    let mut out = names_view(n);
    let g = &s.gslb;
    let nlines = s.model.lines.len();
    for (i, a) in g.ads.iter().enumerate() {
        let _ = write!(
            out,
            "ad {i} {:?} type {} ttl {} {:?} nodata {}:",
            crate::config::gslb::ad_key(&s.model.access_domains[i]),
            a.rtype,
            a.ttl,
            a.policy,
            answer_view(n, &node_names(n), a.nodata)
        );
        for l in 0..nlines + 1 {
            let r = g.route_of(a, l) - a.routes;
            let route = &g.routes[(a.routes + r) as usize];
            let pools = &g.route_pools[route.start as usize..(route.start + route.len) as usize];
            let mut fb = Vec::new();
            g.each_fallback(a, route, |x| {
                fb.push(x);
                true
            });
            let _ = write!(out, " {l}->{r} {pools:?} {fb:?}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "slots {:?}", s.model.slots);
    let _ = writeln!(
        out,
        "{:?} {:?} {:?} {:?} {:?} {} ecs {}",
        g.addrs, g.arena, g.pools, g.pool_addrs, g.lines, g.nlines, g.use_ecs
    );
    out
}

/// Node id -> name, for the names in the index (nodes patched out have none).
fn node_names(n: &crate::tables::Names) -> std::collections::HashMap<u32, Vec<u8>> {
    n.index.iter().map(|(k, v)| (v, k.to_vec())).collect()
}

/// Answer `a` by content (its octets, fixups and where it goes on, by name), or an access
/// domain reference: the same in any layout of the tables.
fn answer_view(
    n: &crate::tables::Names,
    names: &std::collections::HashMap<u32, Vec<u8>>,
    a: u32,
) -> String {
    use crate::tables::{DYN, NONE};
    if a == NONE {
        return "-".into();
    }
    if a & DYN != 0 {
        return format!("ad{}", a & !DYN);
    }
    let x = &n.answers[a as usize];
    let tail = &n.arena[x.start as usize..(x.start + x.len) as usize];
    let fix = &n.fixups[x.fix_start as usize..(x.fix_start + x.fix_len) as usize];
    let next = (x.next != NONE).then(|| names.get(&x.next).cloned());
    format!(
        "[{} {} {} {:?} {tail:?} {fix:?} {} {} {next:?} {}]",
        x.rcode, x.aa, x.qlen, x.counts, x.opt_len, x.opt_count, x.next_at
    )
}

/// What the name tables answer, name by name, whatever the order of their nodes and
/// answers (a patch appends where a compile puts them in configuration order).
fn names_view(n: &crate::tables::Names) -> String {
    let names = node_names(n);
    let ans = |a: u32| answer_view(n, &names, a);
    let mut index: Vec<_> = n.index.iter().collect();
    index.sort();
    let mut out = String::new();
    for (name, id) in index {
        let x = &n.nodes[id as usize];
        let span = x.types_start as usize..(x.types_start + x.types_len) as usize;
        let types: Vec<(u16, String)> = n.types[span].iter().map(|&(t, a)| (t, ans(a))).collect();
        let wildcard = names.get(&x.wildcard);
        let _ = writeln!(
            out,
            "{name:?} zone {} cut {} wildcard {wildcard:?} dname {} {types:?} other {} any {} {}",
            x.zone,
            x.cut,
            ans(x.dname),
            ans(x.other),
            ans(x.any_udp),
            ans(x.any_tcp)
        );
    }
    for z in &n.zones {
        let _ = writeln!(
            out,
            "zone {:?} {} {}",
            z.name,
            ans(z.nxdomain),
            ans(z.nodata)
        );
    }
    for (name, a) in &n.chaos {
        let _ = writeln!(out, "chaos {name:?} {}", ans(*a));
    }
    let nodata: Vec<String> = n.ad_nodata.iter().map(|&a| ans(a)).collect();
    let _ = writeln!(out, "ad nodata {nodata:?} root {}", n.root_zone);
    out
}

/// The active pool of every slot of `s`.
fn actives(s: &Snapshot) -> Vec<u32> {
    let load = |x: &std::sync::atomic::AtomicU32| x.load(std::sync::atomic::Ordering::Relaxed);
    s.health.active.iter().map(load).collect()
}

/// The published health of a snapshot: addresses, pools, active pool per slot.
fn health(w: &Writer) -> String {
    let h = &w.snapshot().health;
    let load = |v: &[std::sync::atomic::AtomicU64]| -> Vec<u64> {
        v.iter()
            .map(|x| x.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    };
    let active = actives(w.snapshot());
    format!(
        "{:?} {:?} {active:?} {:?}",
        load(&h.addr_up),
        load(&h.pool_up),
        w.state()
    )
}

fn load(main: &Path) -> Config {
    match Config::from_file(main) {
        Ok(c) => c,
        Err(e) => panic!("the generated model does not validate: {e}"),
    }
}

/// How often each incremental path was taken, over the reloads of
/// [`incremental_reload_equals_full_compile`].
#[derive(Default, Debug)]
struct Paths {
    steps: usize,
    /// Runs of rows copied (all reloads).
    copied_runs: usize,
    names_kept: usize,
    names_patched: usize,
    in_place: usize,
    /// With the pools' members changed (health worked out afresh).
    refreshed: usize,
    /// Copied, with the leading chunks of active pools shared.
    prefix_shared: usize,
    lines_added: usize,
    ads_appended: usize,
    ads_removed: usize,
    pool_removed: usize,
    line_removed: usize,
    /// A pool's or a line's index taken by another one (a removal filled).
    pool_moved: usize,
    line_moved: usize,
    /// A line given another parent.
    line_reparented: usize,
    /// The lists no row names any more reclaimed in place.
    compacted: usize,
    /// Compiled with the list index read back from the tables (a refused reload took it).
    reindexed: usize,
}

impl Paths {
    fn count(&mut self, s: &Snapshot, prev: &Snapshot) {
        let placed = s.reuse.in_place.is_some();
        let incremental = s.reuse.from != 0;
        let kept = Arc::ptr_eq(&s.names, &prev.names);
        self.steps += 1;
        self.copied_runs += s.reuse.slots.len();
        self.names_kept += kept as usize;
        self.names_patched += (s.names.patched && !kept) as usize;
        self.in_place += placed as usize;
        self.refreshed += s.reuse.health_fresh as usize;
        self.prefix_shared +=
            (!placed && s.health.active.shares_chunk(&prev.health.active, 0)) as usize;
        self.lines_added += (incremental && s.gslb.nlines > prev.gslb.nlines) as usize;
        self.ads_appended += (placed && s.gslb.ads.len() > prev.gslb.ads.len()) as usize;
        self.ads_removed += (placed && s.gslb.ads.len() < prev.gslb.ads.len()) as usize;
        self.pool_removed += (placed && s.model.pools.len() < prev.model.pools.len()) as usize;
        self.line_removed += (incremental && s.model.lines.len() < prev.model.lines.len()) as usize;
        let pools = |m: &Snapshot| m.model.pools.iter().map(|p| p.name.clone()).collect();
        let lines = |m: &Snapshot| m.model.lines.iter().map(|l| l.name.clone()).collect();
        let handed = |old: Vec<String>, new: Vec<String>| old.iter().zip(&new).any(|(o, n)| o != n);
        self.pool_moved += (incremental && handed(pools(prev), pools(s))) as usize;
        self.line_moved += (incremental && handed(lines(prev), lines(s))) as usize;
        let parents = |m: &Snapshot| {
            let l = &m.model.lines;
            let of = |x: &crate::config::gslb::Line| x.parent.map(|p| l[p].name.clone());
            l.iter()
                .map(|x| (x.name.clone(), of(x)))
                .collect::<Vec<_>>()
        };
        let (was, now) = (parents(prev), parents(s));
        let moved_under = now
            .iter()
            .any(|(n, p)| was.iter().any(|(m, q)| m == n && q != p));
        self.line_reparented += (incremental && moved_under) as usize;
        self.compacted += s.reuse.compacted as usize;
    }

    /// Whether every path was taken often enough for the comparisons to mean something.
    fn enough(&self) -> bool {
        let n = self.steps;
        self.copied_runs > n / 4
            && self.names_kept > n / 10
            && self.names_patched > n / 20
            && self.in_place > n / 10
            && self.refreshed > n / 20
            && self.prefix_shared > 0
            && self.lines_added > 0
            && self.ads_appended > n / 20
            && self.ads_removed > n / 50
            && self.pool_removed > 0
            && self.line_removed > 0
            && self.pool_moved > 0
            && self.line_moved > 0
            && self.line_reparented > 0
            && self.compacted > n / 20
            && self.reindexed > n / 20
    }
}

/// Randomised edits, each reload compiled both ways; the incremental path must have been
/// taken (so the comparison means something).
#[test]
fn incremental_reload_equals_full_compile() {
    let dir = std::env::temp_dir().join(format!("gtmd-incr-{}", std::process::id()));
    let mut paths = Paths::default();
    // `GTMD_INCR_SEEDS=N` for a longer run (16 by default).
    let seeds = std::env::var("GTMD_INCR_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16u64);
    for seed in 1..=seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut model = Model::new(dir.clone(), &mut rng);
        let cfg = load(&model.write());
        let first = Arc::new(compile(&cfg, 1).unwrap());
        let mut inc = Writer::new(first.clone(), Default::default());
        let mut full = Writer::new(Arc::new(compile(&cfg, 1).unwrap()), Default::default());
        for gen in 2..40u64 {
            let what = model.edit(&mut rng);
            // Probe verdicts move too, the same on both sides.
            let a = format!("a{}", rng.below(ADDRS));
            let up = rng.below(2) == 0;
            inc.set_probe(&a, up);
            full.set_probe(&a, up);
            let cfg = load(&model.write());
            let prev = inc.snapshot().clone();
            // A reload refused after its compile took the list index: the next one reads
            // it back from the tables.
            if rng.below(6) == 0 {
                *prev.reuse.interner.lock().unwrap() = None;
                paths.reindexed += 1;
            }
            let s_inc = compile_with(&cfg, gen, Cpus::All, Some(&prev)).unwrap();
            let s_full = compile(&cfg, gen).unwrap();
            paths.count(&s_inc, &prev);
            model.last_placed = s_inc
                .model
                .pools
                .last()
                .map_or(String::new(), |p| p.name.clone());
            drop(prev);
            // A verdict between the compile and the swap (the serving snapshot moves
            // while the new one waits to be published).
            let a = format!("a{}", rng.below(ADDRS));
            let up = rng.below(2) == 0;
            inc.set_probe(&a, up);
            full.set_probe(&a, up);
            assert_eq!(
                view(&s_inc),
                view(&s_full),
                "seed {seed} generation {gen} after '{what}': tables differ"
            );
            // With the pools' addresses changed, the snapshot still serving keeps its active
            // pools until the swap: the new one's are not written into it.
            let fresh = s_inc.reuse.health_fresh;
            let serving = inc.snapshot().clone();
            let before = actives(&serving);
            inc.replace(Arc::new(s_inc));
            full.replace(Arc::new(s_full));
            if fresh {
                assert_eq!(
                    actives(&serving),
                    before,
                    "seed {seed} generation {gen} after '{what}': the serving snapshot changed"
                );
            }
            assert_eq!(
                health(&inc),
                health(&full),
                "seed {seed} generation {gen} after '{what}': health differs"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{paths:?}");
    assert!(
        paths.enough(),
        "the incremental paths were hardly taken: {paths:?}"
    );
}

/// A directory for a fixed test (`what`), and its main file: a zone `i.test.`, the
/// access domains of `ads/*.toml`, and `tail` (zone records, addresses, pools).
fn fixed_model(what: &str, tail: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("gtmd-{what}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    let main = dir.join("main.toml");
    let head = "version = 1\ninclude = [\"ads/*.toml\"]\n[server]\nshards = [0]\n\
                [control]\nlisten = \"off\"\n[[zone]]\nname = \"i.test.\"\n\
                soa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n";
    std::fs::write(&main, format!("{head}{tail}")).unwrap();
    (dir, main)
}

/// Fixed edits of names below other names, each reload patched or compiled as it must be
/// and compared with a full compile: a parent's last child removed and then the parent
/// (which once had a child: compiled, as `has_child` cannot vouch), both in one reload,
/// a child added with its parent, a name added below one that goes.
#[test]
fn patched_names_below_names_equal_a_compile() {
    let (dir, main) = fixed_model(
        "patch",
        "records = [\"ns A 192.0.2.53\", \"*.w A 192.0.2.54\"]\n\
         [[address]]\nname = \"a\"\nvalue = \"192.0.2.1\"\n\
         [[pool]]\nname = \"p\"\ntype = \"ipv4\"\naddresses = [\"a\"]\n",
    );
    let write = |names: &[&str]| {
        let mut t = String::new();
        for n in names {
            let _ = write!(
                t,
                "[[access-domain]]\nname = \"{n}.i.test.\"\ntype = \"A\"\npolicy = \"weighted\"\n\
                 pools = [{{ pool = \"p\" }}]\n"
            );
        }
        std::fs::write(dir.join("ads/f.toml"), t).unwrap();
        load(&main)
    };
    // (names, whether the names are patched rather than compiled)
    let steps: [(&[&str], bool); 10] = [
        (&["x", "y.x", "z"], false),
        // y.x: a leaf below a name with records of its own.
        (&["x", "z"], true),
        // x: once had a child.
        (&["z"], false),
        // y.x below x, added in the same reload.
        (&["z", "x", "y.x"], false),
        // x has a child: it stays, an empty non-terminal.
        (&["z", "y.x"], false),
        // y.x goes, and with it its parent, an empty non-terminal.
        (&["z"], false),
        (&["z", "x"], true),
        // y.x added below x, which goes: x stays, an empty non-terminal.
        (&["z", "y.x"], false),
        // w, the empty non-terminal above the wildcard `*.w`, gets an access domain.
        (&["z", "y.x", "w"], true),
        // y.x goes, and with it its parent, an empty non-terminal.
        (&["z", "w"], false),
    ];
    let mut prev = Arc::new(compile(&write(steps[0].0), 1).unwrap());
    for (gen, (names, patched)) in steps.iter().enumerate().skip(1) {
        let cfg = write(names);
        let s = compile_with(&cfg, gen as u64 + 1, Cpus::All, Some(&prev)).unwrap();
        let full = compile(&cfg, gen as u64 + 1).unwrap();
        assert_eq!(view(&s), view(&full), "step {gen} {names:?}: tables differ");
        assert_eq!(s.names.patched, *patched, "step {gen} {names:?}: patched?");
        prev = Arc::new(s);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An access domain that takes the place of one removed keeps the pool its
/// non-preemptive route stayed on (carried by key from its old place, as a full compile's
/// carry does), though its rows are compiled again there.
#[test]
fn a_moved_non_preemptive_route_keeps_its_pool() {
    let (dir, main) = fixed_model(
        "sticky",
        "[[address]]\nname = \"a0\"\nvalue = \"192.0.2.1\"\n\
         [[address]]\nname = \"a1\"\nvalue = \"192.0.2.2\"\n\
         [[pool]]\nname = \"p0\"\ntype = \"ipv4\"\naddresses = [\"a0\"]\n\
         [[pool]]\nname = \"p1\"\ntype = \"ipv4\"\naddresses = [\"a1\"]\n",
    );
    let write = |names: &[&str]| {
        let mut t = String::new();
        for n in names {
            let _ = write!(
                t,
                "[[access-domain]]\nname = \"{n}.i.test.\"\ntype = \"A\"\n\
                 policy = \"global-availability\"\npreemptive = false\n\
                 pools = [{{ pool = \"p0\" }}, {{ pool = \"p1\" }}]\n"
            );
        }
        std::fs::write(dir.join("ads/f.toml"), t).unwrap();
        load(&main)
    };
    let active = |w: &Writer, name: &str| {
        let s = w.snapshot();
        let at = s
            .model
            .access_domains
            .iter()
            .position(|a| crate::dns::name::display_name(&a.name) == format!("{name}.i.test."));
        s.health.active(s.gslb.ads[at.expect("declared")].routes)
    };
    let cfg = write(&["n0", "n1", "n2", "n3"]);
    let mut w = Writer::new(Arc::new(compile(&cfg, 1).unwrap()), Default::default());
    assert_eq!(active(&w, "n3"), 0);
    // p0 down and up again: the non-preemptive routes stay on p1.
    w.set_probe("a0", false);
    w.set_probe("a0", true);
    assert_eq!(active(&w, "n3"), 1, "non-preemptive: stays");
    // n0 removed: n3, the last, takes its place, and its route keeps p1.
    let cfg = write(&["n1", "n2", "n3"]);
    let next = compile_with(&cfg, 2, Cpus::All, Some(w.snapshot())).unwrap();
    assert!(next.reuse.in_place.is_some(), "compiled in place");
    let moved = next
        .model
        .access_domains
        .iter()
        .next()
        .map(|a| a.name.clone());
    assert_eq!(
        moved.map(|n| crate::dns::name::display_name(&n)),
        Some("n3.i.test.".to_string()),
        "n3 took n0's place"
    );
    w.replace(Arc::new(next));
    assert_eq!(active(&w, "n3"), 1, "carried to its new place");
    assert_eq!(active(&w, "n1"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
