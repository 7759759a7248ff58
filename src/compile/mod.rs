//! Step 2 of `config -> compile -> tables -> shards`: turns a validated [`Config`] into one
//! immutable [`Snapshot`]. All DNS logic that does not depend on the individual query lives
//! here, off the hot path: closest-encloser structure (empty non-terminals), zone cuts and
//! glue, CNAME chains followed inside the zone with loops stopped, RFC 8482 ANY, RFC 2308
//! negative answers. `gtmd check` runs exactly this.

mod encode;
mod gslb;

pub use gslb::ad_key;

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;

use crate::config::name::{display_name, is_within, parent};
use crate::config::{Config, ConfigError, ConfigErrors, Rdata, Record};
use crate::health::HealthState;
use crate::tables::{Answer, Node, Snapshot, ZoneInfo, DYN, NONE};
use crate::wire::parse::{rtype, CLASS_CH, CLASS_IN};
use encode::{Encoder, Section};

/// Longest CNAME chain followed inside a zone (Knot and NSD stop in the same range).
const MAX_CHAIN: usize = 12;

/// An RRset during compilation.
#[derive(Debug, Clone)]
struct RRset {
    ttl: u32,
    rdata: Vec<Rdata>,
}

/// The RRsets at one name.
#[derive(Debug, Clone, Default)]
struct NodeData {
    rrsets: BTreeMap<u16, RRset>,
}

/// A zone being compiled.
struct ZoneBuild<'a> {
    apex: &'a [u8],
    names: HashMap<Vec<u8>, NodeData>,
    cuts: BTreeSet<Vec<u8>>,
    soa: Record,
    neg_ttl: u32,
    /// Names answered by an enabled access domain, with (type, access domain index): CNAME
    /// chains stop there (the resolver asks again and gets the scheduled answer).
    ads: HashMap<&'a [u8], Vec<(u16, u32)>>,
}

/// What resolving a name inside a zone found (for CNAME chains).
enum Found<'z> {
    Data(&'z NodeData),
    NxDomain,
    Cut,
}

impl ZoneBuild<'_> {
    /// The cut at or above `name` (strictly below the apex), if any.
    fn cut_of(&self, name: &[u8]) -> Option<Vec<u8>> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut best = None;
        let mut n = Some(name);
        while let Some(cur) = n {
            if cur == self.apex {
                break;
            }
            if self.cuts.contains(cur) {
                best = Some(cur.to_vec()); // keep walking: the highest cut wins
            }
            n = parent(cur);
        }
        best
    }

    /// Resolves `name` (in this zone) as a query would: exact, cut, wildcard or NXDOMAIN.
    fn resolve(&self, name: &[u8]) -> Found<'_> {
        if self.cut_of(name).is_some() {
            return Found::Cut;
        }
        if let Some(d) = self.names.get(name) {
            return Found::Data(d);
        }
        let mut n = parent(name);
        while let Some(cur) = n {
            if self.names.contains_key(cur) {
                let mut w = b"\x01*".to_vec();
                w.extend_from_slice(cur);
                return match self.names.get(&w) {
                    Some(d) => Found::Data(d),
                    None => Found::NxDomain,
                };
            }
            n = parent(cur);
        }
        Found::NxDomain
    }

    fn soa_rr(&self, e: &mut Encoder) {
        e.rr(
            Section::Authority,
            self.apex,
            rtype::SOA,
            CLASS_IN,
            self.neg_ttl,
            &self.soa.rdata,
        );
    }
}

struct Out {
    snap: Snapshot,
}

impl Out {
    fn push(&mut self, e: Encoder, rcode: u8, aa: bool) -> u32 {
        let enc = e.finish();
        let s = &mut self.snap;
        s.answers.push(Answer {
            rcode,
            aa,
            qlen: enc.qlen,
            counts: enc.counts,
            start: s.arena.len() as u32,
            len: enc.tail.len() as u32,
            fix_start: s.fixups.len() as u32,
            fix_len: enc.fixups.len() as u32,
        });
        s.arena.extend_from_slice(&enc.tail);
        s.fixups.extend_from_slice(&enc.fixups);
        (s.answers.len() - 1) as u32
    }
}

/// Compiles `cfg` into snapshot generation `generation`.
pub fn compile(cfg: &Config, generation: u64) -> Result<Snapshot, ConfigErrors> {
    let (gslb_tables, model) = gslb::compile(&cfg.gslb, cfg.server.ecs);
    let health = Arc::new(HealthState::new(
        model.addresses.len(),
        model.pools.len(),
        model.slots.len(),
    ));
    let mut out = Out {
        snap: Snapshot {
            generation,
            index: HashMap::with_hasher(Default::default()),
            nodes: Vec::new(),
            types: Vec::new(),
            answers: Vec::new(),
            arena: Vec::new(),
            fixups: Vec::new(),
            zones: Vec::new(),
            chaos: Vec::new(),
            udp_payload: cfg.server.udp_payload,
            gslb: gslb_tables,
            health,
            model,
        },
    };
    let mut errs = Vec::new();
    for (zi, zone) in cfg.zones.iter().enumerate() {
        compile_zone(zi as u32, zone, &mut out, &mut errs);
    }
    compile_chaos(cfg, &mut out);
    if errs.is_empty() {
        Ok(out.snap)
    } else {
        Err(ConfigErrors(errs))
    }
}

fn compile_chaos(cfg: &Config, out: &mut Out) {
    let entries: [(&[u8], &Option<String>); 4] = [
        (b"\x07version\x04bind\x00", &cfg.server.version_string),
        (b"\x07version\x06server\x00", &cfg.server.version_string),
        (b"\x02id\x06server\x00", &cfg.server.identity),
        (b"\x08hostname\x04bind\x00", &cfg.server.identity),
    ];
    for (name, text) in entries {
        if let Some(t) = text {
            let mut rd = vec![t.len() as u8];
            rd.extend_from_slice(t.as_bytes());
            let mut e = Encoder::new(name, true);
            e.rr(
                Section::Answer,
                name,
                rtype::TXT,
                CLASS_CH,
                0,
                &Rdata::Opaque(rd),
            );
            let a = out.push(e, 0, true);
            out.snap.chaos.push((name.into(), a));
        }
    }
}

fn compile_zone(zi: u32, zone: &crate::config::Zone, out: &mut Out, errs: &mut Vec<ConfigError>) {
    let apex = &zone.name[..];
    let mut names: HashMap<Vec<u8>, NodeData> = HashMap::new();
    // Enabled access domains of this zone, by name: (type, access domain index).
    let gslb = out.snap.model.gslb.clone();
    let mut ads: HashMap<&[u8], Vec<(u16, u32)>> = HashMap::new();
    for (i, ad) in gslb.access_domains.iter().enumerate() {
        if ad.enabled && ad.zone == zi as usize {
            ads.entry(&ad.name[..])
                .or_insert_with(|| {
                    names.insert(ad.name.clone(), NodeData::default());
                    Vec::new()
                })
                .push((ad.rtype, i as u32));
        }
    }
    let mut soa = None;
    for r in &zone.records {
        if r.rtype == rtype::SOA {
            soa = Some(r.clone());
            continue; // the SOA is added to the apex below, once
        }
        let node = names.entry(r.owner.clone()).or_default();
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
    let Some(soa) = soa else {
        errs.push(ConfigError::new(zone.at.clone(), "zone.soa", "no SOA"));
        return;
    };
    let Rdata::Soa(s) = &soa.rdata else {
        unreachable!("SOA record holds SOA data")
    };
    let neg_ttl = soa.ttl.min(s.times[4]);
    names.entry(apex.to_vec()).or_default().rrsets.insert(
        rtype::SOA,
        RRset {
            ttl: soa.ttl,
            rdata: vec![soa.rdata.clone()],
        },
    );
    // Empty non-terminals: every name between an owner and the apex exists. A parent
    // that is already a name has its own ancestors seen to, so each walk stops there.
    let mut ents: HashSet<&[u8]> = HashSet::default();
    for o in names.keys() {
        let mut p = parent(o);
        while let Some(cur) = p {
            if cur.len() < apex.len() || names.contains_key(cur) || !ents.insert(cur) {
                break;
            }
            p = parent(cur);
        }
    }
    let ents: Vec<Vec<u8>> = ents.into_iter().map(<[u8]>::to_vec).collect();
    for e in ents {
        names.entry(e).or_default();
    }
    let cuts: BTreeSet<Vec<u8>> = names
        .iter()
        .filter(|(n, d)| n.as_slice() != apex && d.rrsets.contains_key(&rtype::NS))
        .map(|(n, _)| n.clone())
        .collect();
    let zb = ZoneBuild {
        apex,
        ads,
        names,
        cuts,
        soa,
        neg_ttl,
    };
    // NXDOMAIN for the zone: compiled against the apex, shifted to any name below it.
    let nxdomain = {
        let mut e = Encoder::new(apex, false);
        zb.soa_rr(&mut e);
        out.push(e, 3, true)
    };
    out.snap.zones.push(ZoneInfo {
        name: apex.into(),
        nxdomain,
    });
    // NODATA likewise: one answer for every name of the zone, compiled against the apex
    // (its compression pointers shift with the question name, as NXDOMAIN's do).
    let nodata = {
        let mut e = Encoder::new(apex, false);
        zb.soa_rr(&mut e);
        out.push(e, 0, true)
    };
    let zone_types: BTreeSet<u16> = zb
        .names
        .values()
        .flat_map(|d| d.rrsets.keys().copied())
        .filter(|&t| t != rtype::CNAME)
        .collect();

    // Deterministic node order (sorted names) keeps snapshots reproducible.
    let mut sorted: Vec<&Vec<u8>> = zb.names.keys().collect();
    sorted.sort_unstable();
    let mut referrals: HashMap<Vec<u8>, u32> = HashMap::new();
    let base = out.snap.nodes.len() as u32;
    for (k, name) in sorted.iter().enumerate() {
        let idx = base + k as u32;
        out.snap.index.insert(name.as_slice().into(), idx);
    }
    let mut wild = b"\x01*".to_vec();
    for name in &sorted {
        let data = &zb.names[*name];
        let types_start = out.snap.types.len() as u32;
        let mut node = Node {
            zone: zi,
            wildcard: NONE,
            cut: false,
            types_start,
            types_len: 0,
            other: NONE,
            any_udp: NONE,
            any_tcp: NONE,
        };
        wild.truncate(2);
        wild.extend_from_slice(name);
        if let Some(&wi) = out.snap.index.get(wild.as_slice()) {
            node.wildcard = wi;
        }
        if let Some(cut) = zb.cut_of(name) {
            let r = *referrals
                .entry(cut.clone())
                .or_insert_with(|| referral(&zb, &cut, out));
            node.cut = true;
            node.other = r;
            node.any_udp = r;
            node.any_tcp = r;
        } else if let Some(cname) = data.rrsets.get(&rtype::CNAME) {
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
            out.snap.types.push((rtype::CNAME, only));
            for &t in &zone_types {
                let a = chain(&zb, name, cname, t, out);
                out.snap.types.push((t, a));
            }
            node.other = chain(&zb, name, cname, 0, out);
            node.any_udp = only;
            node.any_tcp = only;
        } else {
            let here: &[(u16, u32)] = zb.ads.get(name.as_slice()).map_or(&[], Vec::as_slice);
            for &(_, ad) in here {
                out.snap.gslb.ads[ad as usize].nodata = nodata;
            }
            if let Some(&(_, ad)) = here.iter().find(|(t, _)| *t == rtype::CNAME) {
                // A CNAME access domain owns its name: every type gets the CNAME.
                out.snap.types.push((rtype::CNAME, DYN | ad));
                node.other = DYN | ad;
                node.any_udp = DYN | ad;
                node.any_tcp = DYN | ad;
                node.types_len = out.snap.types.len() as u32 - types_start;
                out.snap.nodes.push(node);
                continue;
            }
            for &(t, ad) in here {
                if !data.rrsets.contains_key(&t) {
                    out.snap.types.push((t, DYN | ad));
                }
            }
            for (&t, set) in &data.rrsets {
                // An enabled access domain answers its type instead of the zone's records.
                if let Some(&(_, ad)) = here.iter().find(|(at, _)| *at == t) {
                    out.snap.types.push((t, DYN | ad));
                    continue;
                }
                let mut e = Encoder::new(name, true);
                for rd in &set.rdata {
                    e.rr(Section::Answer, name, t, CLASS_IN, set.ttl, rd);
                }
                check_size(&e, name, t, &zb, errs);
                let a = out.push(e, 0, true);
                out.snap.types.push((t, a));
            }
            node.other = nodata;
            let typed = &mut out.snap.types[types_start as usize..];
            typed.sort_unstable_by_key(|&(t, _)| t);
            node.any_udp = typed.first().map_or(nodata, |&(_, a)| a);
            node.any_tcp = if typed.len() <= 1 || typed.iter().any(|&(_, a)| a & DYN != 0) {
                node.any_udp
            } else {
                let mut e = Encoder::new(name, true);
                for (&t, set) in &data.rrsets {
                    for rd in &set.rdata {
                        e.rr(Section::Answer, name, t, CLASS_IN, set.ttl, rd);
                    }
                }
                out.push(e, 0, true)
            };
        }
        node.types_len = out.snap.types.len() as u32 - types_start;
        out.snap.nodes.push(node);
    }
}

fn check_size(e: &Encoder, name: &[u8], t: u16, zb: &ZoneBuild<'_>, errs: &mut Vec<ConfigError>) {
    if e.message_len() > 65535 - 64 {
        errs.push(ConfigError::new(
            zb.soa.at.clone(),
            "record",
            format!(
                "RRset {} type {t} does not fit in one DNS message",
                display_name(name)
            ),
        ));
    }
}

/// The referral for zone cut `cut`: its NS RRset in authority, in-bailiwick glue in
/// additional, AA clear. Compiled against the cut name, shifted for names below it.
fn referral(zb: &ZoneBuild<'_>, cut: &[u8], out: &mut Out) -> u32 {
    let mut e = Encoder::new(cut, false);
    let ns = &zb.names[cut].rrsets[&rtype::NS];
    for rd in &ns.rdata {
        e.rr(Section::Authority, cut, rtype::NS, CLASS_IN, ns.ttl, rd);
    }
    for rd in &ns.rdata {
        let Rdata::Name(target) = rd else { continue };
        if !is_within(target, cut) {
            continue;
        }
        if let Some(d) = zb.names.get(target) {
            for t in [rtype::A, rtype::AAAA] {
                if let Some(set) = d.rrsets.get(&t) {
                    for g in &set.rdata {
                        e.rr(Section::Additional, target, t, CLASS_IN, set.ttl, g);
                    }
                }
            }
        }
    }
    out.push(e, 0, false)
}

/// The answer at a CNAME owner `start` for `qtype` (0: a type no node has): the CNAME,
/// then the chain followed inside the zone, ending in data, NODATA (SOA) or NXDOMAIN.
fn chain(zb: &ZoneBuild<'_>, start: &[u8], cname: &RRset, qtype: u16, out: &mut Out) -> u32 {
    let mut e = Encoder::new(start, true);
    e.rr(
        Section::Answer,
        start,
        rtype::CNAME,
        CLASS_IN,
        cname.ttl,
        &cname.rdata[0],
    );
    let Rdata::Name(first) = &cname.rdata[0] else {
        unreachable!("CNAME holds a name")
    };
    let mut cur = first.clone();
    let mut seen: Vec<Vec<u8>> = vec![start.to_vec()];
    let mut rcode = 0;
    for _ in 0..MAX_CHAIN {
        if !is_within(&cur, zb.apex) || seen.contains(&cur) || zb.ads.contains_key(&cur[..]) {
            break; // out of zone or scheduled: the resolver continues; a loop: stop here
        }
        seen.push(cur.clone());
        match zb.resolve(&cur) {
            Found::Cut => break,
            Found::NxDomain => {
                rcode = 3;
                zb.soa_rr(&mut e);
                break;
            }
            Found::Data(d) => {
                if let Some(c) = d.rrsets.get(&rtype::CNAME) {
                    e.rr(
                        Section::Answer,
                        &cur,
                        rtype::CNAME,
                        CLASS_IN,
                        c.ttl,
                        &c.rdata[0],
                    );
                    let Rdata::Name(next) = &c.rdata[0] else {
                        break;
                    };
                    cur = next.clone();
                    continue;
                }
                match d.rrsets.get(&qtype) {
                    Some(set) => {
                        for rd in &set.rdata {
                            e.rr(Section::Answer, &cur, qtype, CLASS_IN, set.ttl, rd);
                        }
                    }
                    None => zb.soa_rr(&mut e),
                }
                break;
            }
        }
    }
    out.push(e, rcode, true)
}
