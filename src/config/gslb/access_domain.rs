//! `[[access-domain]]` (in the config file and the files it includes): a name and type
//! answered from pools, chosen by a policy, per line for the nearest policy, with a
//! fallback; validated into [`AccessDomain`]s, then checked together and against the zone
//! data beside them.

use foldhash::{HashMap, HashMapExt};
use std::collections::hash_map::Entry;

use toml::Spanned;

use super::DEFAULT_LINE;
use super::{type_name, AccessDomain, Ctx, Fallback, LineMap, PoolKind, PoolPolicy, Scope, Zone};
use crate::config::name::parse_name;
use crate::config::spec::AccessDomainSpec;
use crate::dns::name::{display_name, is_within};
use crate::dns::rtype;

/// Validates access domain specs (names declared twice are found once all files are in,
/// by [`check_all`]).
pub(super) fn validate_all(
    specs: &[AccessDomainSpec],
    ctx: &mut Ctx<'_>,
    scope: &Scope<'_>,
) -> Vec<AccessDomain> {
    let mut shapes = LineShapes::default();
    let mut out = Vec::with_capacity(specs.len());
    out.extend(
        specs
            .iter()
            .filter_map(|a| a.validate(ctx, scope, &mut shapes)),
    );
    out
}

/// The line maps of the access domains validated so far (of one file), each stored once
/// and shared by every access domain that has it.
#[derive(Default)]
pub(super) struct LineShapes(foldhash::HashSet<LineMap>);

impl LineShapes {
    /// The shared copy of `routes`.
    fn share(&mut self, routes: Vec<(u32, Box<[u32]>)>) -> LineMap {
        if let Some(seen) = self.0.get(&routes[..]) {
            return seen.clone();
        }
        let new: LineMap = routes.into();
        self.0.insert(new.clone());
        new
    }
}

impl AccessDomainSpec {
    /// The access domain, or `None` when its name, type or policy is unusable (reported).
    pub(super) fn validate(
        &self,
        ctx: &mut Ctx<'_>,
        scope: &Scope<'_>,
        shapes: &mut LineShapes,
    ) -> Option<AccessDomain> {
        let at = ctx.at(&self.name);
        let (name, zone) = self.name_and_zone(ctx, scope.zones)?;
        let rt = self.rtype(ctx)?;
        let ttl = ctx.int(&self.ttl, "access-domain.ttl", 0..=0x7FFF_FFFF);
        let policies = [
            (
                "global-availability",
                PoolPolicy::GlobalAvailability {
                    preemptive: self.preemptive.unwrap_or(true),
                },
            ),
            ("weighted", PoolPolicy::Weighted),
            ("round-robin", PoolPolicy::RoundRobin),
            ("nearest", PoolPolicy::Nearest),
        ];
        let policy = ctx.keyword(&self.policy, "access-domain.policy", &policies)?;
        let resolve = Resolver::new(scope, rt);
        let mut pools = self.pools(ctx, &resolve);
        let lines = shapes.share(self.lines(ctx, &resolve, policy, &mut pools));
        if pools.is_empty() && !self.pools_given() {
            let (field, hint) = if policy == PoolPolicy::Nearest {
                ("access-domain.lines", ": give `pools` or a `default` line")
            } else {
                ("access-domain.pools", "")
            };
            let why = format!("access domain {} has no pools{hint}", display_name(&name));
            ctx.push(at.clone(), field, why);
        }
        let fallback = self.fallback(ctx, &resolve);
        Some(AccessDomain {
            name: name.into_boxed_slice(),
            zone,
            rtype: rt,
            ttl: ttl.unwrap_or(30),
            enabled: self.enabled.unwrap_or(true),
            remarks: self.remarks.as_deref().map(Into::into),
            policy,
            pools: pools.into_boxed_slice(),
            lines,
            fallback,
            at,
        })
    }

    /// The name, and the zone that holds it (the most specific one, zones being nested).
    fn name_and_zone(&self, ctx: &mut Ctx<'_>, zones: &[Zone]) -> Option<(Vec<u8>, usize)> {
        let field = "access-domain.name";
        let name = match parse_name(self.name.get_ref(), None) {
            Ok(n) => n,
            Err(e) => {
                ctx.err(&self.name, field, e);
                return None;
            }
        };
        let zone = (0..zones.len())
            .filter(|&z| is_within(&name, &zones[z].name))
            .max_by_key(|&z| zones[z].name.len());
        let zone = ctx.check(&self.name, field, zone, || {
            format!("{} is not inside any zone served here", display_name(&name))
        })?;
        Some((name, zone))
    }

    /// `type`: A, AAAA or CNAME, in any case.
    fn rtype(&self, ctx: &mut Ctx<'_>) -> Option<u16> {
        let t = self.rtype.get_ref().to_ascii_uppercase();
        let rt = match t.as_str() {
            "A" => Some(rtype::A),
            "AAAA" => Some(rtype::AAAA),
            "CNAME" => Some(rtype::CNAME),
            _ => None,
        };
        ctx.check(&self.rtype, "access-domain.type", rt, || {
            format!("'{t}' is not one of A, AAAA, CNAME")
        })
    }

    /// `pools`: names, or `{ pool = "NAME", weight = N }`, with their weights.
    fn pools(&self, ctx: &mut Ctx<'_>, resolve: &Resolver<'_>) -> Vec<(u32, u32)> {
        let field = "access-domain.pools";
        let given = self.pools.as_ref().map_or(0, |ps| ps.get_ref().len());
        let mut pools = Vec::with_capacity(given);
        for p in self.pools.iter().flat_map(|ps| ps.get_ref()) {
            let (pname, weight) = match p.get_ref() {
                toml::Value::String(s) => (s.clone(), 1u32),
                toml::Value::Table(t) => {
                    let n = t.get("pool").and_then(|v| v.as_str()).unwrap_or("");
                    let w = t.get("weight").and_then(|v| v.as_integer()).unwrap_or(1);
                    if !(1..=100).contains(&w) {
                        ctx.err(p, field, format!("weight {w} is outside 1..=100"));
                    }
                    (n.to_string(), w.clamp(1, 100) as u32)
                }
                _ => {
                    ctx.err(p, field, "a pool name, or { pool = \"NAME\", weight = N }");
                    continue;
                }
            };
            let sp = Spanned::new(p.span(), pname);
            if let Some(i) = resolve.pool(ctx, &sp, field) {
                pools.push((i, weight));
            }
        }
        pools
    }

    /// `[access-domain.lines]` (the nearest policy): each line's pools, in order. The
    /// `default` line's give `pools` when it has none.
    fn lines(
        &self,
        ctx: &mut Ctx<'_>,
        resolve: &Resolver<'_>,
        policy: PoolPolicy,
        pools: &mut Vec<(u32, u32)>,
    ) -> Vec<(u32, Box<[u32]>)> {
        let field = "access-domain.lines";
        let Some(ls) = &self.lines else {
            return Vec::new();
        };
        let mut routes = Vec::with_capacity(ls.get_ref().len());
        if policy != PoolPolicy::Nearest {
            ctx.err(ls, field, "lines are only used by policy \"nearest\"");
        }
        for (lname, lp) in ls.get_ref() {
            let Some(&li) = resolve.scope.names.lines.get(lname) else {
                ctx.err(lp, field, format!("unknown line '{lname}'"));
                continue;
            };
            let mut v = Vec::with_capacity(lp.get_ref().len());
            v.extend(
                lp.get_ref()
                    .iter()
                    .filter_map(|p| resolve.pool(ctx, p, field)),
            );
            if v.is_empty() {
                ctx.err(lp, field, format!("line '{lname}' has no pools"));
            }
            if li == 0 && pools.is_empty() {
                *pools = v.iter().map(|&p| (p, 1)).collect();
            } else if li != 0 {
                routes.push((li as u32, v.into_boxed_slice()));
            }
        }
        routes
    }

    /// Whether pools were given at all (those given may all be unusable).
    fn pools_given(&self) -> bool {
        self.pools.as_ref().is_some_and(|p| !p.get_ref().is_empty())
            || self
                .lines
                .as_ref()
                .is_some_and(|l| l.get_ref().contains_key(DEFAULT_LINE))
    }

    /// `fallback` ("all" or "nodata") or `fallback-pool`: what answers when no pool is up.
    fn fallback(&self, ctx: &mut Ctx<'_>, resolve: &Resolver<'_>) -> Fallback {
        match (&self.fallback, &self.fallback_pool) {
            (_, Some(fp)) => match resolve.pool(ctx, fp, "access-domain.fallback-pool") {
                Some(i) => Fallback::Pool(i as usize),
                None => Fallback::All,
            },
            (None, None) => Fallback::All,
            (Some(f), None) => {
                let value = match f.get_ref().as_str() {
                    "all" => Some(Fallback::All),
                    "nodata" => Some(Fallback::NoData),
                    _ => None,
                };
                ctx.check(f, "access-domain.fallback", value, || {
                    format!(
                        "'{}' is not \"all\" or \"nodata\" (or give fallback-pool)",
                        f.get_ref()
                    )
                })
                .unwrap_or(Fallback::All)
            }
        }
    }
}

/// Resolves the pools an access domain names: known, and of the kind its type answers.
struct Resolver<'a> {
    scope: &'a Scope<'a>,
    rtype: u16,
    want: PoolKind,
}

impl<'a> Resolver<'a> {
    fn new(scope: &'a Scope<'a>, rtype: u16) -> Self {
        let want = match rtype {
            rtype::A => PoolKind::Ipv4,
            rtype::AAAA => PoolKind::Ipv6,
            _ => PoolKind::Domain,
        };
        Self { scope, rtype, want }
    }

    /// The pool `n` names (a pool of the wrong kind is reported, and still returned).
    fn pool(&self, ctx: &mut Ctx<'_>, n: &Spanned<String>, field: &str) -> Option<u32> {
        let Some(&i) = self.scope.names.pools.get(n.get_ref()) else {
            ctx.err(n, field, format!("unknown pool '{}'", n.get_ref()));
            return None;
        };
        let kind = self.scope.pools[i].kind;
        if kind != self.want {
            let why = format!(
                "pool '{}' holds {} addresses, which cannot answer type {}",
                n.get_ref(),
                kind.name(),
                type_name(self.rtype)
            );
            ctx.err(n, field, why);
        }
        Some(i as u32)
    }
}

/// Checks the access domains of all files together: each name and type once, and none
/// that the zone data beside it contradicts. Segments (files) that passed the last check
/// together, against the same zones, are not checked against each other again
/// ([`CHECKED`]): only the other segments' access domains are, against all.
pub(super) fn check_all(ads: &super::AdSet, ctx: &mut Ctx<'_>, zones: &[Zone]) {
    let zd = zones_digest(zones);
    let last = take_checked().filter(|c| c.zones == zd);
    let errs = ctx.errs.len();
    let passed = last.and_then(|c| only_new_checked(ads, ctx, zones, c));
    let declared = match passed {
        Some(d) => d,
        None => {
            check_every(ads, ctx, zones);
            (ctx.errs.len() == errs)
                .then(|| Declared::of(ads))
                .flatten()
        }
    };
    if ctx.errs.len() == errs {
        let segs = ads.segments().to_vec();
        put_checked(Checked {
            segs,
            zones: zd,
            declared,
        });
    }
}

/// The segments of access domains that last passed [`check_all`] together, and the digest
/// of the zones they passed against (the `Arc`s keep the segments' addresses theirs).
struct Checked {
    segs: Vec<super::Seg>,
    zones: u64,
    /// What they declare (`None`: two declarations' digests met, which the next check
    /// does not try to tell apart: it checks everything).
    declared: Option<Declared>,
}

/// Every (name, type) a set of access domains that passed declares (each once), as a
/// 64-bit digest whose lowest bit says whether it is enabled: a name added is checked
/// against it, not against every access domain of the files kept (a million of them
/// are a million cache misses).
struct Declared(foldhash::HashSet<u64>);

impl Declared {
    /// The digest of (`name`, `rtype`), its lowest bit clear.
    fn key(name: &[u8], rtype: u16) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x6774_6d64_6465_636c).hash_one((name, rtype)) & !1
    }

    /// What `ads` declare, or `None` when two digests meet.
    fn of(ads: &super::AdSet) -> Option<Self> {
        let mut d = Self(foldhash::HashSet::with_capacity_and_hasher(
            ads.len(),
            Default::default(),
        ));
        ads.iter().all(|ad| d.add(ad)).then_some(d)
    }

    /// Adds `ad`; `false` when its digest is there already.
    fn add(&mut self, ad: &AccessDomain) -> bool {
        let k = Self::key(&ad.name, ad.rtype);
        !self.0.contains(&k) && !self.0.contains(&(k | 1)) && self.0.insert(k | ad.enabled as u64)
    }

    /// Takes `ad` out.
    fn remove(&mut self, ad: &AccessDomain) {
        let k = Self::key(&ad.name, ad.rtype);
        self.0.remove(&k);
        self.0.remove(&(k | 1));
    }

    /// Whether (`name`, `rtype`) is declared (and, with `enabled`, enabled).
    fn has(&self, name: &[u8], rtype: u16, enabled: bool) -> bool {
        let k = Self::key(name, rtype);
        self.0.contains(&(k | 1)) || (!enabled && self.0.contains(&k))
    }
}

#[cfg(not(test))]
static CHECKED: std::sync::Mutex<Option<Checked>> = std::sync::Mutex::new(None);

fn take_checked() -> Option<Checked> {
    #[cfg(not(test))]
    return CHECKED.lock().unwrap_or_else(|e| e.into_inner()).take();
    #[cfg(test)]
    return tests::CHECKED.with(|c| c.borrow_mut().take());
}

fn put_checked(c: Checked) {
    #[cfg(not(test))]
    {
        *CHECKED.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }
    #[cfg(test)]
    tests::CHECKED.with(|s| *s.borrow_mut() = Some(c));
}

/// Digest of what [`check_all`] reads of the zones: apexes and record owners and types.
fn zones_digest(zones: &[Zone]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x6774_6d64_6368_6b64).build_hasher();
    for z in zones {
        z.name.hash(&mut h);
        for r in &z.records {
            (&r.owner, r.rtype).hash(&mut h);
        }
    }
    h.finish()
}

/// Given that the segments `last` holds passed together, whether those of `ads` pass:
/// the declarations of the segments not in `last` (fresh) are checked against each other
/// and, through `last`'s digests less those of its segments gone, against the segments
/// kept. `Some`: they pass, with what they declare now. `None` also when one of them may
/// not: [`check_every`] then says which, in the order it always does.
fn only_new_checked(
    ads: &super::AdSet,
    ctx: &mut Ctx<'_>,
    zones: &[Zone],
    last: Checked,
) -> Option<Option<Declared>> {
    let checked = &last.segs;
    // Every segment declares what the one at its place declared (names, types, zones,
    // `enabled`): the declarations are those that passed.
    let segs = ads.segments();
    // One file taken twice (included by two patterns) holds the same segment twice,
    // which only a full check reports.
    let mut ptrs: Vec<_> = segs.iter().map(|s| s.key()).collect();
    ptrs.sort_unstable();
    if ptrs.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let same = |x: &AccessDomain, y: &AccessDomain| {
        (&x.name, x.rtype, x.zone, x.enabled) == (&y.name, y.rtype, y.zone, y.enabled)
    };
    if segs.len() == checked.len()
        && segs.iter().zip(checked).all(|(n, o)| {
            n.same(o) || (n.len() == o.len() && n.iter().zip(o.iter()).all(|(x, y)| same(x, y)))
        })
    {
        return Some(last.declared);
    }
    let mut declared = last.declared?;
    let now: std::collections::HashSet<_> = ptrs.iter().copied().collect();
    let old: std::collections::HashSet<_> = checked.iter().map(|s| s.key()).collect();
    let fresh: Vec<_> = segs.iter().filter(|s| !old.contains(&s.key())).collect();
    let gone: Vec<_> = checked.iter().filter(|s| !now.contains(&s.key())).collect();
    // What the segments kept declare: all that passed, less what the ones gone did.
    for ad in gone.iter().flat_map(|s| s.iter()) {
        declared.remove(ad);
    }
    let mut seen: Seen<'_> = HashMap::new();
    for ad in fresh.iter().flat_map(|s| s.iter()) {
        if seen.insert((&ad.name[..], ad.rtype), ad.enabled).is_some()
            || declared.has(&ad.name, ad.rtype, false)
        {
            return None;
        }
    }
    // A CNAME beside an A/AAAA access domain, one of them kept and one new.
    for ad in fresh.iter().flat_map(|s| s.iter()).filter(|ad| ad.enabled) {
        let beside: &[u16] = match ad.rtype {
            rtype::CNAME => &[rtype::A, rtype::AAAA],
            rtype::A | rtype::AAAA => &[rtype::CNAME],
            _ => &[],
        };
        if beside.iter().any(|&t| declared.has(&ad.name, t, true)) {
            return None;
        }
    }
    let addr_ad = |seen: &Seen<'_>, name: &[u8]| {
        [rtype::A, rtype::AAAA]
            .iter()
            .any(|&t| seen.get(&(name, t)) == Some(&true))
    };
    let errs = ctx.errs.len();
    let new_ads = fresh.iter().flat_map(|s| s.iter());
    beside_zone_data(new_ads, ctx, zones, &|name| addr_ad(&seen, name));
    let passed = ctx.errs.len() == errs;
    ctx.errs.truncate(errs);
    if !passed {
        return None;
    }
    #[cfg(test)]
    tests::INCREMENTAL.with(|n| n.set(n.get() + 1));
    let added = fresh
        .iter()
        .flat_map(|s| s.iter())
        .all(|ad| declared.add(ad));
    Some(added.then_some(declared))
}

/// [`check_all`] for every access domain.
fn check_every(ads: &super::AdSet, ctx: &mut Ctx<'_>, zones: &[Zone]) {
    // (name, type) -> whether one declared so is enabled.
    let mut seen: Seen<'_> = HashMap::with_capacity(ads.len());
    for ad in ads {
        match seen.entry((&ad.name[..], ad.rtype)) {
            Entry::Vacant(e) => {
                e.insert(ad.enabled);
            }
            Entry::Occupied(mut e) => {
                *e.get_mut() |= ad.enabled;
                let why = format!(
                    "access domain {} {} is declared twice",
                    display_name(&ad.name),
                    type_name(ad.rtype)
                );
                ctx.push(ad.at.clone(), "access-domain.name", why);
            }
        }
    }
    // An enabled A or AAAA access domain at `name`.
    let addr_ad = |name: &[u8]| {
        [rtype::A, rtype::AAAA]
            .iter()
            .any(|&t| seen.get(&(name, t)) == Some(&true))
    };
    beside_zone_data(ads.iter(), ctx, zones, &addr_ad);
}

/// The access domains by (name, type): whether one declared so is enabled.
type Seen<'a> = HashMap<(&'a [u8], u16), bool>;

/// Access domains against the records of their zones (by hash: a million access domains
/// meet a large zone in linear time): a CNAME alone at its name (RFC 1034 3.6.2), none at
/// the apex.
fn beside_zone_data<'a>(
    ads: impl Iterator<Item = &'a AccessDomain>,
    ctx: &mut Ctx<'_>,
    zones: &[Zone],
    addr_ad: &dyn Fn(&[u8]) -> bool,
) {
    let mut owners: HashMap<(usize, &[u8]), Vec<u16>> = HashMap::new();
    for (zi, z) in zones.iter().enumerate() {
        for r in &z.records {
            owners.entry((zi, &r.owner[..])).or_default().push(r.rtype);
        }
    }
    for ad in ads {
        let name = || display_name(&ad.name);
        let at_name: &[u16] = owners.get(&(ad.zone, &ad.name[..])).map_or(&[], |v| &v[..]);
        let mut err = |field: &str, why: String| ctx.push(ad.at.clone(), field, why);
        if ad.rtype == rtype::CNAME && at_name.iter().any(|&t| t != rtype::CNAME) {
            err(
                "access-domain.type",
                format!(
                    "CNAME access domain {} beside other records of the zone (RFC 1034 3.6.2)",
                    name()
                ),
            );
        }
        if ad.rtype != rtype::CNAME && at_name.contains(&rtype::CNAME) {
            err(
                "access-domain.type",
                format!(
                    "{} access domain {} at a name that has a CNAME in the zone",
                    type_name(ad.rtype),
                    name()
                ),
            );
        }
        if ad.rtype == rtype::CNAME && ad.enabled && addr_ad(&ad.name) {
            err(
                "access-domain.type",
                format!(
                    "CNAME access domain {} beside an A/AAAA access domain of the same name",
                    name()
                ),
            );
        }
        if ad.name[..] == zones[ad.zone].name[..] {
            err(
                "access-domain.name",
                "an access domain cannot be the zone apex".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::sync::Arc;

    use crate::config::Config;

    thread_local! {
        /// `super::CHECKED` of this test's thread (tests run side by side).
        pub(super) static CHECKED: RefCell<Option<super::Checked>> = const { RefCell::new(None) };
        /// Checks passed by the included files changed alone.
        pub(super) static INCREMENTAL: Cell<usize> = const { Cell::new(0) };
    }

    /// Included files changed one after another, each load checked against the last one's
    /// declarations (files kept are not read again), and again from nothing: the two
    /// agree, pass where they must, and refuse what they must.
    #[test]
    fn changed_files_checked_as_a_full_check_would() {
        let dir = std::env::temp_dir().join(format!("gtmd-declared-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ads")).unwrap();
        let ad = |name: &str, t: &str, on: bool| {
            let pool = if t == "CNAME" { "pc" } else { "p0" };
            format!(
                "[[access-domain]]\nname = \"{name}.e.test.\"\ntype = \"{t}\"\n\
                 enabled = {on}\npolicy = \"global-availability\"\npools = [\"{pool}\"]\n"
            )
        };
        std::fs::write(
            dir.join("main.toml"),
            "version = 1\ninclude = [\"ads/*.toml\"]\n[[zone]]\nname = \"e.test.\"\n\
             soa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
             [[address]]\nname = \"a0\"\nvalue = \"192.0.2.1\"\n\
             [[pool]]\nname = \"p0\"\ntype = \"ipv4\"\naddresses = [\"a0\"]\n\
             [[address]]\nname = \"c0\"\nvalue = \"t.example.net.\"\n\
             [[pool]]\nname = \"pc\"\ntype = \"domain\"\naddresses = [\"c0\"]\n",
        )
        .unwrap();
        // Older than the window in which a file is read again whatever its stamp.
        let write = |file: &str, ads: &[(&str, &str, bool)]| {
            let path = dir.join("ads").join(file);
            let text: String = ads.iter().map(|&(n, t, on)| ad(n, t, on)).collect();
            std::fs::write(&path, text).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
                .unwrap();
        };
        let load = || Config::from_file(&dir.join("main.toml")).map_err(|e| e.to_string());
        write(
            "a.toml",
            &[("x1", "A", true), ("x2", "A", true), ("x3", "A", false)],
        );
        write("b.toml", &[("y1", "A", true)]);
        let first = load();
        assert!(first.is_ok(), "{first:?}");
        // The second file's access domains (name, type, enabled), and why it is refused.
        type Step<'a> = (&'a [(&'a str, &'a str, bool)], Option<&'a str>);
        let steps: &[Step<'_>] = &[
            (&[("y1", "A", true), ("z1", "A", true)], None),
            (
                &[("y1", "A", true), ("x1", "A", true)],
                Some("x1.e.test. A is declared twice"),
            ),
            (&[("z1", "A", true)], None),
            (&[("z1", "A", true), ("y1", "A", true)], None),
            (
                &[("x2", "CNAME", true)],
                Some("beside an A/AAAA access domain"),
            ),
            (&[("x3", "CNAME", true)], None),
            (&[("x3", "A", true)], Some("x3.e.test. A is declared twice")),
            (&[("x1", "CNAME", false)], None),
            (&[("w1", "CNAME", true), ("w1", "A", false)], None),
            (
                &[("w1", "CNAME", true), ("w1", "A", true)],
                Some("beside an A/AAAA"),
            ),
        ];
        for (i, &(b, refused)) in steps.iter().enumerate() {
            // Every step starts from the files of the first load, which passed.
            write("b.toml", &[("y1", "A", true)]);
            assert!(load().is_ok());
            let before = INCREMENTAL.with(Cell::get);
            write("b.toml", b);
            let got = load();
            match refused {
                None => {
                    assert!(got.is_ok(), "step {i}: {got:?}");
                    assert_eq!(
                        INCREMENTAL.with(Cell::get),
                        before + 1,
                        "step {i}: not incremental"
                    );
                }
                Some(why) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(why)),
                    "step {i}: {got:?}"
                ),
            }
            CHECKED.with(|c| c.borrow_mut().take());
            let full = load();
            assert_eq!(
                got.is_ok(),
                full.is_ok(),
                "step {i}: {got:?} against {full:?}"
            );
            assert_eq!(got.err(), full.err(), "step {i}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Access domains that map lines alike share one line map, in the main file and in an
    /// included file (read by the reader), and one that maps them otherwise has its own.
    #[test]
    fn equal_line_maps_are_shared() {
        let dir = std::env::temp_dir().join(format!("gtmd-shapes-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ads")).unwrap();
        let ad = |name: &str, pool: &str| {
            format!(
                "[[access-domain]]\nname = \"{name}.e.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
                 [access-domain.lines]\ndefault = [\"p0\"]\nl1 = [\"{pool}\"]\n"
            )
        };
        let main = format!(
            "version = 1\ninclude = [\"ads/*.toml\"]\n[[zone]]\nname = \"e.test.\"\n\
             soa = {{ mname = \"ns\", rname = \"h\" }}\nns = [\"ns\"]\n\
             [[line]]\nname = \"l1\"\nprefixes = [\"10.1.0.0/16\"]\n\
             [[address]]\nname = \"a0\"\nvalue = \"192.0.2.1\"\n\
             [[address]]\nname = \"a1\"\nvalue = \"192.0.2.2\"\n\
             [[pool]]\nname = \"p0\"\ntype = \"ipv4\"\naddresses = [\"a0\"]\n\
             [[pool]]\nname = \"p1\"\ntype = \"ipv4\"\naddresses = [\"a1\"]\n{}{}{}",
            ad("m1", "p1"),
            ad("m2", "p1"),
            ad("m3", "p0")
        );
        std::fs::write(dir.join("main.toml"), main).unwrap();
        let inc = format!("{}{}", ad("i1", "p1"), ad("i2", "p1"));
        std::fs::write(dir.join("ads/a.toml"), inc).unwrap();
        let cfg = Config::from_file(&dir.join("main.toml")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let ads: Vec<_> = cfg.gslb.access_domains.iter().collect();
        assert_eq!(ads.len(), 5);
        assert!(Arc::ptr_eq(&ads[0].lines, &ads[1].lines), "main file");
        assert!(!Arc::ptr_eq(&ads[0].lines, &ads[2].lines));
        assert_eq!(ads[0].lines[..], ads[3].lines[..]);
        assert!(Arc::ptr_eq(&ads[3].lines, &ads[4].lines), "included file");
    }
}
