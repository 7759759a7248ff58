//! `[[line]]`: where queries come from. Prefixes given inline or in files (and networks of
//! MaxMind-format databases, [`super::geo`]), each prefix in one line only; parents
//! resolved by name, every line ending at the implicit `default`.

use foldhash::HashMap;
use std::sync::Arc;

use toml::Spanned;

use super::{geo, index_names, Ctx, Line, Names, DEFAULT_LINE};
use crate::config::error::Origin;
use crate::config::spec::{LineSpec, Spec};

/// Which line holds each prefix, by the line's index in the load's lines: 16 bytes an IPv4
/// prefix (a table of 100,000 prefixes, or a geographic database's networks, is read
/// again whenever a line changes).
#[derive(Default)]
pub(super) struct Owners {
    v4: HashMap<u64, u32>,
    v6: HashMap<(u128, u8), u32>,
}

impl Owners {
    /// Records line `line` as holding prefix `key`, unless one does already: that one.
    pub(super) fn claim(&mut self, (net, len, v6): (u128, u8, bool), line: u32) -> Option<u32> {
        match v6 {
            false => claim_in(&mut self.v4, (net as u64) << 8 | len as u64, line),
            true => claim_in(&mut self.v6, (net, len), line),
        }
    }
}

fn claim_in<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K, line: u32) -> Option<u32> {
    use std::collections::hash_map::Entry;
    match m.entry(k) {
        Entry::Occupied(e) => Some(*e.get()),
        Entry::Vacant(e) => {
            e.insert(line);
            None
        }
    }
}

/// The line names: `default` at 0, the configured lines after it.
pub(super) fn index(specs: &[LineSpec], ctx: &mut Ctx<'_>) -> HashMap<String, usize> {
    let mut m = index_names("line", specs.iter().map(|l| &l.name), ctx);
    for l in specs {
        if l.name.get_ref() == DEFAULT_LINE {
            ctx.err(
                &l.name,
                "line.name",
                "'default' is the implicit catch-all line: it has no prefixes",
            );
        }
    }
    for v in m.values_mut() {
        *v += 1;
    }
    m.insert(DEFAULT_LINE.to_string(), 0);
    m
}

/// Every line: `default`, the configured ones with their prefixes, then the networks of
/// the databases; a parent cycle is an error.
pub(super) fn load(s: &Spec, ctx: &mut Ctx<'_>, names: &Names) -> Vec<Line> {
    // Taken from the last load when nothing they are made of changed (a million access
    // domains come with ~100,000 prefixes, 30-40 ms to read and check on every reload).
    let key = cache_key(s, ctx);
    if let Some(k) = key {
        let last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, lines)) = last.as_ref().filter(|(lk, _)| *lk == k) {
            return lines.clone();
        }
    }
    let errs = ctx.errs.len();
    let lines = load_all(s, ctx, names);
    if let (Some(k), true) = (key, ctx.errs.len() == errs) {
        *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some((k, lines.clone()));
    }
    lines
}

/// The lines of the last load that had no error in them, with their [`cache_key`].
static LAST: std::sync::Mutex<Option<(u64, Vec<Line>)>> = std::sync::Mutex::new(None);

/// A digest of what the lines are made of, where they were written, and the stamps of
/// their prefix files; `None` (no reuse) with geographic databases, or when a prefix file
/// cannot be stamped or changed too recently for its stamp to vouch for it.
fn cache_key(s: &Spec, ctx: &Ctx<'_>) -> Option<u64> {
    use std::hash::{BuildHasher, Hash, Hasher};
    if s.geoip.is_some() {
        return None;
    }
    let mut h = foldhash::fast::FixedState::with_seed(0x6774_6d64_6c69_6e65).build_hasher();
    ctx.file.hash(&mut h);
    let now = super::include::now_nanos();
    for l in &s.line {
        let spanned = |v: &Spanned<String>, h: &mut dyn Hasher| {
            v.get_ref().hash(&mut HashInto(h));
            v.span().hash(&mut HashInto(h));
        };
        spanned(&l.name, &mut h);
        l.prefixes.iter().for_each(|p| spanned(p, &mut h));
        l.parent.iter().for_each(|p| spanned(p, &mut h));
        if l.countries.is_some() || l.continents.is_some() || l.asns.is_some() {
            return None;
        }
        if let Some(f) = &l.file {
            spanned(f, &mut h);
            let m = std::fs::metadata(ctx.path(f.get_ref())).ok()?;
            super::include::Stamp::of(&m, now)?.hash(&mut h);
        }
        0xffu8.hash(&mut h);
    }
    Some(h.finish())
}

/// A `&mut dyn Hasher` as a `Hasher` (for `Hash::hash`).
struct HashInto<'a>(&'a mut dyn std::hash::Hasher);

impl std::hash::Hasher for HashInto<'_> {
    fn finish(&self) -> u64 {
        self.0.finish()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes)
    }
}

/// [`load`], every line read and checked.
fn load_all(s: &Spec, ctx: &mut Ctx<'_>, names: &Names) -> Vec<Line> {
    let mut lines = vec![Line {
        name: DEFAULT_LINE.into(),
        parent: None,
        v4: Vec::new(),
        v6: Vec::new(),
        at: Origin::new(ctx.file, 1),
    }];
    let mut owners = Owners::default();
    for l in &s.line {
        let line = l.validate(ctx, names, &mut owners, &lines);
        lines.push(line);
    }
    geo::assign(s, ctx, &mut lines, &mut owners);
    parent_cycles(&lines, ctx);
    lines
}

impl LineSpec {
    /// The line that comes after `earlier` (the lines before it, which hold the prefixes
    /// `owners` knows).
    fn validate(
        &self,
        ctx: &mut Ctx<'_>,
        names: &Names,
        owners: &mut Owners,
        earlier: &[Line],
    ) -> Line {
        let mut held = Held {
            owners,
            earlier,
            index: earlier.len() as u32,
        };
        let mut line = Line {
            name: self.name.get_ref().clone(),
            parent: Some(0),
            v4: Vec::new(),
            v6: Vec::new(),
            at: ctx.at(&self.name),
        };
        if let Some(p) = &self.parent {
            match names.lines.get(p.get_ref()) {
                Some(&i) => line.parent = Some(i),
                None => ctx.err(p, "line.parent", format!("unknown line '{}'", p.get_ref())),
            }
        }
        for p in &self.prefixes {
            match p.get_ref().parse::<ipnet::IpNet>() {
                Ok(n) => line.add(n, ctx.at(p), &mut held, ctx),
                Err(_) => ctx.err(
                    p,
                    "line.prefixes",
                    format!("'{}' is not a CIDR prefix", p.get_ref()),
                ),
            }
        }
        if let Some(f) = &self.file {
            prefix_file(f, ctx, &mut line, &mut held);
        }
        line
    }
}

/// The prefixes held so far, and the line being read: its index and the lines before it
/// (for the name of a line that holds a prefix already).
struct Held<'a> {
    owners: &'a mut Owners,
    earlier: &'a [Line],
    index: u32,
}

impl Line {
    /// Adds `net` (written at `at`) unless a line holds it already.
    fn add(&mut self, net: ipnet::IpNet, at: Origin, held: &mut Held<'_>, ctx: &mut Ctx<'_>) {
        let net = net.trunc();
        let key = match net {
            ipnet::IpNet::V4(n) => (u32::from(n.network()) as u128, n.prefix_len(), false),
            ipnet::IpNet::V6(n) => (u128::from(n.network()), n.prefix_len(), true),
        };
        if let Some(other) = held.owners.claim(key, held.index) {
            let other = match held.earlier.get(other as usize) {
                Some(l) => &l.name,
                None => &self.name,
            };
            ctx.push(
                at,
                "line.prefixes",
                format!("{net} is in line '{other}' already: a prefix belongs to one line"),
            );
            return;
        }
        match net {
            ipnet::IpNet::V4(n) => self.v4.push((u32::from(n.network()), n.prefix_len())),
            ipnet::IpNet::V6(n) => self.v6.push((u128::from(n.network()), n.prefix_len())),
        }
    }
}

/// `file`: one prefix a line, `#` comments; mistakes at their line of that file.
fn prefix_file(f: &Spanned<String>, ctx: &mut Ctx<'_>, line: &mut Line, held: &mut Held<'_>) {
    let path = ctx.path(f.get_ref());
    crate::config::reads::note(&path);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            let why = format!("cannot read {}: {e}", path.display());
            ctx.err(f, "line.file", why);
            return;
        }
    };
    let pfile: Arc<str> = path.display().to_string().into();
    for (i, raw) in text.lines().enumerate() {
        let t = raw.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let at = Origin::new(&pfile, i as u32 + 1);
        match t.parse::<ipnet::IpNet>() {
            Ok(n) => line.add(n, at, held, ctx),
            Err(_) => ctx.push(at, "prefix", format!("'{t}' is not a CIDR prefix")),
        }
    }
}

/// A line may not be its own ancestor.
fn parent_cycles(lines: &[Line], ctx: &mut Ctx<'_>) {
    for (i, l) in lines.iter().enumerate() {
        let mut cur = l.parent;
        let mut steps = 0;
        while let Some(p) = cur {
            if p == i || steps > lines.len() {
                ctx.push(
                    l.at.clone(),
                    "line.parent",
                    format!("line '{}' is its own ancestor (a parent cycle)", l.name),
                );
                break;
            }
            cur = lines[p].parent;
            steps += 1;
        }
    }
}
