//! One zone: its names (owners, empty non-terminals, access domains), cuts and DNAMEs, and
//! one [`Node`] per name with every answer it can give precompiled.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet};

use super::chain::{additional, chain, referral};
use super::encode::{Encoder, Section};
use super::{too_large, Out};
use crate::config::{Config, ConfigError, Rdata, Record};
use crate::dns::name::{is_within, parent};
use crate::dns::{rtype, CLASS_IN};
use crate::tables::{Node, DYN, NONE};

/// An RRset during compilation.
#[derive(Debug, Clone)]
pub(super) struct RRset {
    pub(super) ttl: u32,
    pub(super) rdata: Vec<Rdata>,
}

/// The RRsets at one name, and the access domains answering there.
#[derive(Debug, Clone)]
pub(super) struct NodeData {
    pub(super) rrsets: BTreeMap<u16, RRset>,
    /// The first of the enabled access domains at this name in [`ZoneBuild::ad_list`], or
    /// [`NONE`].
    ads: u32,
}

impl Default for NodeData {
    fn default() -> Self {
        Self {
            rrsets: BTreeMap::new(),
            ads: NONE,
        }
    }
}

/// The enabled access domains of a zone, chained per name from [`NodeData::ads`]: (type,
/// access domain index, next in the chain or [`NONE`]). A chain rather than a vector per
/// name: a million names need no million small allocations.
type AdList = Vec<(u16, u32, u32)>;

/// A zone's names and their data, in the order they were first seen (access domains, then
/// records, the apex and the empty non-terminals): node ids follow it, so a compile is
/// reproducible without sorting a million names.
pub(super) type Names<'a> = indexmap::IndexMap<&'a [u8], NodeData, foldhash::fast::RandomState>;

/// A zone being compiled. Names are borrowed from the configuration (record owners,
/// access domain names, and their suffixes for empty non-terminals).
pub(super) struct ZoneBuild<'a> {
    pub(super) apex: &'a [u8],
    pub(super) names: Names<'a>,
    cuts: BTreeSet<Vec<u8>>,
    dnames: HashSet<Vec<u8>>,
    /// Apexes of other zones served here below this one: their names are theirs.
    children: &'a [&'a [u8]],
    soa: Record,
    neg_ttl: u32,
    /// The enabled access domains: CNAME chains continue at their names at query time.
    ad_list: AdList,
}

/// What resolving a name inside a zone found.
pub(super) enum Found<'z> {
    /// The name's data (exact, or synthesised from a wildcard).
    Data(&'z NodeData),
    /// No such name.
    NxDomain,
    /// At or below this zone cut.
    Cut(Vec<u8>),
    /// Below this DNAME owner.
    Dname(Vec<u8>),
    /// Inside another zone served here.
    Elsewhere,
}

impl ZoneBuild<'_> {
    /// Whether an enabled access domain answers at `name`.
    fn has_ads(&self, name: &[u8]) -> bool {
        self.names.get(name).is_some_and(|d| d.ads != NONE)
    }

    /// The enabled access domains at a name: (type, access domain index), in declaration
    /// order.
    fn ads_at(&self, d: &NodeData) -> impl Iterator<Item = (u16, u32)> + Clone + '_ {
        let mut next = d.ads;
        std::iter::from_fn(move || {
            let &(t, ad, n) = self.ad_list.get(next as usize)?;
            next = n;
            Some((t, ad))
        })
    }

    /// Whether `name` belongs to a child zone served here.
    fn in_child(&self, name: &[u8]) -> bool {
        self.children.iter().any(|c| is_within(name, c))
    }

    /// The highest cut at or above `name`, or DNAME strictly above it (the highest one
    /// occludes everything below).
    pub(super) fn occluder(&self, name: &[u8]) -> Option<Found<'_>> {
        if self.cuts.is_empty() && self.dnames.is_empty() {
            return None;
        }
        let mut found = None;
        let mut n = Some(name);
        while let Some(cur) = n {
            if cur.len() < self.apex.len() {
                break;
            }
            // At one name a cut wins over a DNAME (the DNAME is the child's data), as the
            // query-time lookup has it.
            if cur.len() < name.len() && self.dnames.contains(cur) {
                found = Some(Found::Dname(cur.to_vec()));
            }
            if cur.len() > self.apex.len() && self.cuts.contains(cur) {
                found = Some(Found::Cut(cur.to_vec()));
            }
            n = parent(cur);
        }
        found
    }

    /// Resolves `name` (in this zone) as a query would: cut, DNAME, exact, wildcard or
    /// NXDOMAIN.
    pub(super) fn resolve(&self, name: &[u8]) -> Found<'_> {
        // The parent's delegation to a child served here still answers inside the parent
        // (a chain followed in the parent ends in its referral, as Knot's does).
        if let Some(f) = self.occluder(name) {
            return f;
        }
        if self.in_child(name) {
            return Found::Elsewhere;
        }
        if let Some(d) = self.names.get(name) {
            return Found::Data(d);
        }
        match self.wildcard_for(name).and_then(|w| self.names.get(&w[..])) {
            Some(d) => Found::Data(d),
            None => Found::NxDomain,
        }
    }

    /// The wildcard that would answer for `name`, which does not exist: `*` below its
    /// closest existing ancestor (whether or not that wildcard exists).
    pub(super) fn wildcard_for(&self, name: &[u8]) -> Option<Vec<u8>> {
        let mut n = parent(name);
        while let Some(cur) = n {
            if self.names.contains_key(cur) {
                let mut w = b"\x01*".to_vec();
                w.extend_from_slice(cur);
                return Some(w);
            }
            n = parent(cur);
        }
        None
    }

    /// The scheduled name that answers for `name`: itself, or the wildcard access domain
    /// that covers it.
    pub(super) fn scheduled(&self, name: &[u8]) -> Option<Vec<u8>> {
        if self.has_ads(name) {
            return Some(name.to_vec());
        }
        if self.names.contains_key(name) || self.occluder(name).is_some() {
            return None;
        }
        self.wildcard_for(name).filter(|w| self.has_ads(w))
    }

    pub(super) fn soa_rr(&self, e: &mut Encoder) {
        e.rr(
            Section::Authority,
            self.apex,
            rtype::SOA,
            CLASS_IN,
            self.neg_ttl,
            &self.soa.rdata,
        );
    }

    /// The NS RRset of cut `cut`.
    pub(super) fn ns_at(&self, cut: &[u8]) -> &RRset {
        &self.names[cut].rrsets[&rtype::NS]
    }
}

/// Builds the names of zone `zi`: records by owner and type, the access domains' names,
/// empty non-terminals. Returns the SOA (None: reported).
fn gather<'a>(
    zi: u32,
    cfg: &'a Config,
    names: &mut Names<'a>,
    ad_list: &mut AdList,
    parents: &mut HashSet<&'a [u8]>,
) -> Option<Record> {
    let zone = &cfg.zones[zi as usize];
    let ads = &cfg.gslb.access_domains;
    let mine = |ad: &&crate::config::gslb::AccessDomain| ad.enabled && ad.zone == zi as usize;
    // Sized once: a million names would otherwise be rehashed (and faulted in) 20 times.
    let n = ads.iter().filter(mine).count();
    names.reserve(n + zone.records.len());
    ad_list.reserve(n);
    // Backwards, each in front of its name's chain: the chains are in declaration order.
    for (i, ad) in ads.enumerate_rev().filter(|(_, ad)| mine(ad)) {
        let d = names.entry(&ad.name[..]).or_default();
        ad_list.push((ad.rtype, i as u32, d.ads));
        d.ads = (ad_list.len() - 1) as u32;
    }
    let mut soa = None;
    for r in &zone.records {
        if r.rtype == rtype::SOA {
            soa = Some(r.clone());
            continue; // the SOA is added to the apex below, once
        }
        let node = names.entry(&r.owner[..]).or_default();
        let set = node.rrsets.entry(r.rtype).or_insert_with(|| RRset {
            ttl: r.ttl,
            rdata: Vec::new(),
        });
        // RFC 2181 5.2: one TTL per RRset; the smallest wins. 5: duplicates collapse.
        set.ttl = set.ttl.min(r.ttl);
        if !set.rdata.contains(&r.rdata) {
            set.rdata.push(r.rdata.clone());
        }
    }
    let soa = soa?;
    names.entry(&zone.name[..]).or_default().rrsets.insert(
        rtype::SOA,
        RRset {
            ttl: soa.ttl,
            rdata: vec![soa.rdata.clone()],
        },
    );
    // Empty non-terminals: every name between an owner and the apex exists. A parent
    // that is already a name has its own ancestors seen to, so each walk stops there.
    let apex_len = zone.name.len();
    let mut ents: HashSet<&[u8]> = HashSet::default();
    for &o in names.keys() {
        let mut p = parent(o);
        while let Some(cur) = p {
            // The apex is a name (its SOA is in): no lookup for the names just below it.
            if cur.len() <= apex_len {
                break;
            }
            parents.insert(cur);
            if names.contains_key(cur) || !ents.insert(cur) {
                break;
            }
            p = parent(cur);
        }
    }
    // In name order: a set's order changes from run to run.
    let mut ents: Vec<&[u8]> = ents.into_iter().collect();
    ents.sort_unstable();
    for e in ents {
        names.entry(e).or_default();
    }
    Some(soa)
}

/// Compiles zone `zi` into `out`. `children` are the apexes of zones served here below
/// it; `ds_at` carries this zone's DS answers at those apexes to the child's compile.
pub(super) fn compile_zone(
    zi: u32,
    cfg: &Config,
    children: &[&[u8]],
    ds_at: &mut HashMap<Vec<u8>, u32>,
    out: &mut Out,
    errs: &mut Vec<ConfigError>,
) {
    let zone = &cfg.zones[zi as usize];
    let apex = &zone.name[..];
    let mut names = Names::default();
    let mut ad_list = AdList::new();
    let mut parents = HashSet::default();
    let Some(soa) = gather(zi, cfg, &mut names, &mut ad_list, &mut parents) else {
        errs.push(ConfigError::new(zone.at.clone(), "zone.soa", "no SOA"));
        return;
    };
    let Rdata::Soa(s) = &soa.rdata else {
        unreachable!("SOA record holds SOA data")
    };
    let neg_ttl = soa.ttl.min(s.times[4]);
    let with = |t: u16| {
        names
            .iter()
            .filter(|(n, d)| **n != apex && d.rrsets.contains_key(&t))
            .map(|(n, _)| n.to_vec())
            .collect::<Vec<_>>()
    };
    let cuts: BTreeSet<Vec<u8>> = with(rtype::NS).into_iter().collect();
    let mut dnames: HashSet<Vec<u8>> = with(rtype::DNAME).into_iter().collect();
    if names[apex].rrsets.contains_key(&rtype::DNAME) {
        dnames.insert(apex.to_vec());
    }
    let zb = ZoneBuild {
        apex,
        names,
        cuts,
        dnames,
        children,
        soa,
        neg_ttl,
        ad_list,
    };
    unservable(&zb, zone, cfg, errs);
    // NXDOMAIN and NODATA for the zone: compiled against the apex, shifted to any name
    // below it (their compression pointers move with the question name).
    let nodata = {
        let mut e = Encoder::new(apex, false);
        zb.soa_rr(&mut e);
        out.push(e, 0, true)
    };
    out.zones[zi as usize].nodata = nodata;
    out.zones[zi as usize].nxdomain = {
        let mut e = Encoder::new(apex, false);
        zb.soa_rr(&mut e);
        out.push(e, 3, true)
    };
    let ordered = index_names(&zb, ds_at, nodata, out);
    let zone_types: BTreeSet<u16> = zb
        .names
        .values()
        .flat_map(|d| d.rrsets.keys().copied())
        .filter(|&t| t != rtype::CNAME)
        .collect();
    let ctx = NodeCtx {
        zi,
        zb: &zb,
        nodata,
        zone_types: &zone_types,
        child_ds: ds_at.get(apex).copied(),
    };
    let mut referrals: HashMap<Vec<u8>, u32> = HashMap::new();
    let base = out.nodes.len();
    for &(name, data) in &ordered {
        let node = ctx.node(name, data, &mut referrals, out, errs);
        out.nodes.push(node);
    }
    out.has_child.resize(out.nodes.len(), false);
    for p in parents {
        match out.index.get(p) {
            Some(n) if n as usize >= base => out.has_child[n as usize] = true,
            _ => {}
        }
    }
    // Each wildcard's parent points at it (a pass over the few wildcards, rather than a
    // lookup of `*.NAME` for every name).
    for (k, &(name, _)) in ordered.iter().enumerate() {
        let Some(parent) = name.strip_prefix(b"\x01*") else {
            continue;
        };
        match out.index.get(parent) {
            Some(p) if p as usize >= base => out.nodes[p as usize].wildcard = (base + k) as u32,
            _ => {}
        }
    }
}

/// Zone data the server could not answer consistently: NS at a wildcard (RFC 4592 4.2
/// leaves it undefined), a second DNAME at a name or a DNAME at the root (RFC 6672 2.4),
/// and access domains that a delegation or a DNAME above them hides.
fn unservable(
    zb: &ZoneBuild<'_>,
    zone: &crate::config::Zone,
    cfg: &Config,
    errs: &mut Vec<ConfigError>,
) {
    let show = crate::dns::name::display_name;
    let mut dnames_seen: Vec<&[u8]> = Vec::new();
    for r in &zone.records {
        let wild = r.owner.starts_with(b"\x01*");
        if r.rtype == rtype::NS && wild {
            let why = format!(
                "NS at the wildcard {}: not servable (RFC 4592 4.2)",
                show(&r.owner)
            );
            errs.push(ConfigError::new(r.at.clone(), "record", why));
        }
        if r.rtype == rtype::DNAME && r.owner == [0] {
            let why = "DNAME at the root: would redirect every name".to_string();
            errs.push(ConfigError::new(r.at.clone(), "record", why));
        } else if r.rtype == rtype::DNAME {
            if dnames_seen.contains(&&r.owner[..]) {
                let why = format!("second DNAME at {} (RFC 6672 2.4)", show(&r.owner));
                errs.push(ConfigError::new(r.at.clone(), "record", why));
            }
            dnames_seen.push(&r.owner);
        }
    }
    if zb.cuts.is_empty() && zb.dnames.is_empty() {
        return; // nothing hides a name
    }
    for ad in cfg
        .gslb
        .access_domains
        .iter()
        .filter(|a| zb.has_ads(&a.name))
    {
        let hidden = match zb.occluder(&ad.name) {
            Some(Found::Cut(c)) => format!("the delegation at {}", show(&c)),
            Some(Found::Dname(d)) => format!("the DNAME at {}", show(&d)),
            _ => continue,
        };
        let why = format!(
            "{} lies below {hidden}: it would never be answered",
            show(&ad.name)
        );
        errs.push(ConfigError::new(ad.at.clone(), "access-domain.name", why));
    }
}

/// Puts the names this zone answers for into the index (in [`Names`] order, so snapshots
/// are reproducible), leaving out names of child zones served here and names occluded by a
/// DNAME; records this zone's answer to DS at each child's apex in `ds_at`.
fn index_names<'z>(
    zb: &'z ZoneBuild<'_>,
    ds_at: &mut HashMap<Vec<u8>, u32>,
    nodata: u32,
    out: &mut Out,
) -> Vec<(&'z [u8], &'z NodeData)> {
    for c in zb.children {
        let ds = zb.names.get(*c).and_then(|d| d.rrsets.get(&rtype::DS));
        let a = match ds {
            Some(set) => typed(c, rtype::DS, set, zb, out),
            None => nodata,
        };
        // Parents compile outside in: the nearest parent of a child writes last.
        ds_at.insert(c.to_vec(), a);
    }
    let mut ordered: Vec<(&[u8], &NodeData)> = Vec::with_capacity(zb.names.len());
    ordered.extend(
        zb.names
            .iter()
            .map(|(&n, d)| (n, d))
            .filter(|(n, _)| !zb.in_child(n) && !matches!(zb.occluder(n), Some(Found::Dname(_)))),
    );
    // Sized once, like the zone's names (the index outlives the compile: no rehash
    // leaves a freed table behind).
    let octets = ordered.iter().map(|(n, _)| n.len()).sum();
    out.index.reserve(ordered.len(), octets);
    out.nodes.reserve(ordered.len());
    out.types.reserve(ordered.len());
    let base = out.nodes.len() as u32;
    for (k, &(name, _)) in ordered.iter().enumerate() {
        out.index.insert(name, base + k as u32);
    }
    ordered
}

/// One RRset as a positive answer at `name`, with the addresses of NS/MX/SRV targets as
/// optional additional records.
fn typed(name: &[u8], t: u16, set: &RRset, zb: &ZoneBuild<'_>, out: &mut Out) -> u32 {
    let mut e = Encoder::new(name, true);
    for rd in &set.rdata {
        e.rr(Section::Answer, name, t, CLASS_IN, set.ttl, rd);
    }
    additional(zb, &mut e, t, &set.rdata);
    out.push(e, 0, true)
}

/// What every node of one zone shares.
struct NodeCtx<'a, 'z> {
    zi: u32,
    zb: &'a ZoneBuild<'z>,
    nodata: u32,
    zone_types: &'a BTreeSet<u16>,
    /// The parent zone's DS answer at this zone's apex, when the parent is served here.
    child_ds: Option<u32>,
}

impl NodeCtx<'_, '_> {
    /// The node of `name`, whose data is `data` (its `wildcard` is set once every node
    /// of the zone is in).
    fn node(
        &self,
        name: &[u8],
        data: &NodeData,
        referrals: &mut HashMap<Vec<u8>, u32>,
        out: &mut Out,
        errs: &mut Vec<ConfigError>,
    ) -> Node {
        let zb = self.zb;
        let mut node = Node {
            zone: self.zi,
            wildcard: NONE,
            cut: false,
            dname: NONE,
            types_start: out.types.len() as u32,
            types_len: 0,
            other: NONE,
            any_udp: NONE,
            any_tcp: NONE,
        };
        if let Some(Found::Cut(cut)) = zb.occluder(name) {
            self.cut_node(&mut node, name, &cut, referrals, out);
        } else if let Some(cname) = data.rrsets.get(&rtype::CNAME) {
            self.cname_node(&mut node, name, cname, out);
        } else {
            self.data_node(&mut node, name, data, out, errs);
        }
        if let Some(set) = data.rrsets.get(&rtype::DNAME).filter(|_| !node.cut) {
            // For names below: the DNAME compiled against its owner, which the question
            // name ends with (so every pointer to it shifts).
            let mut e = Encoder::new(name, false);
            e.rr(
                Section::Answer,
                name,
                rtype::DNAME,
                CLASS_IN,
                set.ttl,
                &set.rdata[0],
            );
            node.dname = out.push(e, 0, true);
        }
        node.types_len = out.types.len() as u32 - node.types_start;
        node
    }

    /// At or below a cut: the referral; at the cut itself DS is the parent's (AA, the DS
    /// RRset or NODATA).
    fn cut_node(
        &self,
        node: &mut Node,
        name: &[u8],
        cut: &[u8],
        referrals: &mut HashMap<Vec<u8>, u32>,
        out: &mut Out,
    ) {
        let r = *referrals
            .entry(cut.to_vec())
            .or_insert_with(|| referral(self.zb, cut, out));
        node.cut = true;
        node.other = r;
        node.any_udp = r;
        node.any_tcp = r;
        if name == cut {
            let ds = match self.zb.names[name].rrsets.get(&rtype::DS) {
                Some(set) => typed(name, rtype::DS, set, self.zb, out),
                None => self.nodata,
            };
            out.types.push((rtype::DS, ds));
        }
    }

    /// A CNAME owner: the CNAME for its own type and ANY, the chain for every other type.
    fn cname_node(&self, node: &mut Node, name: &[u8], cname: &super::zone::RRset, out: &mut Out) {
        let only = {
            let mut e = Encoder::new(name, true);
            e.rr(
                Section::Answer,
                name,
                rtype::CNAME,
                CLASS_IN,
                cname.ttl,
                &cname.rdata[0],
            );
            out.push(e, 0, true)
        };
        out.types.push((rtype::CNAME, only));
        for &t in self.zone_types {
            let a = chain(self.zb, name, cname, t, out);
            out.types.push((t, a));
        }
        node.other = chain(self.zb, name, cname, 0, out);
        node.any_udp = only;
        node.any_tcp = only;
    }

    /// A name with data (or none: an empty non-terminal), access domains included.
    fn data_node(
        &self,
        node: &mut Node,
        name: &[u8],
        data: &NodeData,
        out: &mut Out,
        errs: &mut Vec<ConfigError>,
    ) {
        let zb = self.zb;
        let here = || zb.ads_at(data);
        for (_, ad) in here() {
            out.ad_nodata[ad as usize] = self.nodata;
        }
        if data.rrsets.is_empty() && name != zb.apex {
            *node = ad_only_node(self.zi, self.nodata, here(), &mut out.types);
            return;
        }
        if let Some((_, ad)) = here().find(|(t, _)| *t == rtype::CNAME) {
            // A CNAME access domain owns its name: every type gets the CNAME.
            out.types.push((rtype::CNAME, DYN | ad));
            node.other = DYN | ad;
            node.any_udp = DYN | ad;
            node.any_tcp = DYN | ad;
            return;
        }
        for (t, ad) in here() {
            if !data.rrsets.contains_key(&t) {
                out.types.push((t, DYN | ad));
            }
        }
        for (&t, set) in &data.rrsets {
            // An enabled access domain answers its type instead of the zone's records.
            if let Some((_, ad)) = here().find(|(at, _)| *at == t) {
                out.types.push((t, DYN | ad));
                continue;
            }
            let a = typed(name, t, set, zb, out);
            let msg = &out.answers[a as usize];
            if 12 + name.len() + 4 + msg.len as usize - msg.opt_len as usize > 65535 - 64 {
                errs.push(too_large(&zb.soa.at, name, t));
            }
            out.types.push((t, a));
        }
        if name == zb.apex {
            if let Some(ds) = self.child_ds {
                // The parent zone, served here too, answers DS at this apex.
                let mine = &mut out.types[node.types_start as usize..];
                match mine.iter_mut().find(|(t, _)| *t == rtype::DS) {
                    Some(entry) => entry.1 = ds,
                    None => out.types.push((rtype::DS, ds)),
                }
            }
        }
        node.other = self.nodata;
        let typed_answers = &mut out.types[node.types_start as usize..];
        typed_answers.sort_unstable_by_key(|&(t, _)| t);
        node.any_udp = typed_answers.first().map_or(self.nodata, |&(_, a)| a);
        let dynamic = typed_answers.iter().any(|&(_, a)| a & DYN != 0);
        node.any_tcp = if typed_answers.len() <= 1 || dynamic {
            node.any_udp
        } else {
            let mut e = Encoder::new(name, true);
            for (&t, set) in &data.rrsets {
                for rd in &set.rdata {
                    e.rr(Section::Answer, name, t, CLASS_IN, set.ttl, rd);
                }
            }
            for (&t, set) in &data.rrsets {
                additional(zb, &mut e, t, &set.rdata);
            }
            out.push(e, 0, true)
        };
    }
}

/// The node of a name of zone `zi` that holds no records: the enabled access domains
/// `ads` (type, index) answer there, or none do (an empty non-terminal). Its `wildcard` is
/// left to the caller. Name tables patched rather than compiled build theirs with it too
/// (`patch.rs`).
pub(super) fn ad_only_node(
    zi: u32,
    nodata: u32,
    ads: impl Iterator<Item = (u16, u32)> + Clone,
    types: &mut Vec<(u16, u32)>,
) -> Node {
    let start = types.len();
    let mut node = Node {
        zone: zi,
        wildcard: NONE,
        cut: false,
        dname: NONE,
        types_start: start as u32,
        types_len: 0,
        other: nodata,
        any_udp: nodata,
        any_tcp: nodata,
    };
    if let Some((_, ad)) = ads.clone().find(|(t, _)| *t == rtype::CNAME) {
        // A CNAME access domain owns its name: every type gets the CNAME.
        types.push((rtype::CNAME, DYN | ad));
        (node.other, node.any_udp, node.any_tcp) = (DYN | ad, DYN | ad, DYN | ad);
    } else {
        types.extend(ads.map(|(t, ad)| (t, DYN | ad)));
        let mine = &mut types[start..];
        mine.sort_unstable_by_key(|&(t, _)| t);
        // Every answer here is chosen per query: ANY over TCP is the first, as over UDP.
        node.any_udp = mine.first().map_or(nodata, |&(_, a)| a);
        node.any_tcp = node.any_udp;
    }
    node.types_len = (types.len() - start) as u32;
    node
}
