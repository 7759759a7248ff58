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
    let last = CHECKED.lock().unwrap_or_else(|e| e.into_inner()).take();
    let passed = match last.filter(|c| c.zones == zd) {
        Some(c) => only_new_checked(ads, ctx, zones, &c.segs),
        None => false,
    };
    let errs = ctx.errs.len();
    if !passed {
        check_every(ads, ctx, zones);
    }
    if ctx.errs.len() == errs {
        let segs = ads.segments().to_vec();
        *CHECKED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Checked { segs, zones: zd });
    }
}

/// The segments of access domains that last passed [`check_all`] together, and the digest
/// of the zones they passed against (the `Arc`s keep the segments' addresses theirs).
struct Checked {
    segs: Vec<std::sync::Arc<[AccessDomain]>>,
    zones: u64,
}

static CHECKED: std::sync::Mutex<Option<Checked>> = std::sync::Mutex::new(None);

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

/// Whether the access domains of the segments of `ads` that are not in `checked` pass,
/// against each other and against all of `ads`, given that the ones in `checked` passed
/// together. `false` also when one of them may not: [`check_every`] then says which, in
/// the order it always does.
fn only_new_checked(
    ads: &super::AdSet,
    ctx: &mut Ctx<'_>,
    zones: &[Zone],
    checked: &[std::sync::Arc<[AccessDomain]>],
) -> bool {
    // Every segment declares what the one at its place declared (names, types, zones,
    // `enabled`): the declarations are those that passed.
    let segs = ads.segments();
    // One file taken twice (included by two patterns) holds the same segment twice,
    // which only a full check reports.
    let mut ptrs: Vec<*const AccessDomain> = segs.iter().map(|s| s.as_ptr()).collect();
    ptrs.sort_unstable();
    if ptrs.windows(2).any(|w| w[0] == w[1]) {
        return false;
    }
    let same = |x: &AccessDomain, y: &AccessDomain| {
        (&x.name, x.rtype, x.zone, x.enabled) == (&y.name, y.rtype, y.zone, y.enabled)
    };
    if segs.len() == checked.len()
        && segs.iter().zip(checked).all(|(n, o)| {
            std::sync::Arc::ptr_eq(n, o)
                || (n.len() == o.len() && n.iter().zip(o.iter()).all(|(x, y)| same(x, y)))
        })
    {
        return true;
    }
    let old: std::collections::HashSet<*const AccessDomain> =
        checked.iter().map(|s| s.as_ptr()).collect();
    let (fresh, kept): (Vec<_>, Vec<_>) = ads
        .segments()
        .iter()
        .partition(|s| !old.contains(&s.as_ptr()));
    let mut seen: Declared<'_> = HashMap::new();
    for ad in fresh.iter().flat_map(|s| s.iter()) {
        if seen.insert((&ad.name[..], ad.rtype), ad.enabled).is_some() {
            return false;
        }
    }
    // A CNAME beside an A/AAAA access domain, one of them kept and one new.
    let addr_ad = |seen: &Declared<'_>, name: &[u8]| {
        [rtype::A, rtype::AAAA]
            .iter()
            .any(|&t| seen.get(&(name, t)) == Some(&true))
    };
    for ad in kept.iter().flat_map(|s| s.iter()) {
        if seen.contains_key(&(&ad.name[..], ad.rtype)) {
            return false;
        }
        let cname = (
            ad.rtype == rtype::CNAME,
            [rtype::A, rtype::AAAA].contains(&ad.rtype),
        );
        if ad.enabled
            && ((cname.0 && addr_ad(&seen, &ad.name))
                || (cname.1 && seen.get(&(&ad.name[..], rtype::CNAME)) == Some(&true)))
        {
            return false;
        }
    }
    let errs = ctx.errs.len();
    let new_ads = fresh.iter().flat_map(|s| s.iter());
    beside_zone_data(new_ads, ctx, zones, &|name| addr_ad(&seen, name));
    let passed = ctx.errs.len() == errs;
    ctx.errs.truncate(errs);
    passed
}

/// [`check_all`] for every access domain.
fn check_every(ads: &super::AdSet, ctx: &mut Ctx<'_>, zones: &[Zone]) {
    // (name, type) -> whether one declared so is enabled.
    let mut seen: Declared<'_> = HashMap::with_capacity(ads.len());
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
type Declared<'a> = HashMap<(&'a [u8], u16), bool>;

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
    use std::sync::Arc;

    use crate::config::Config;

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
