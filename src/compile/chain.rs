//! Answers that follow names: CNAME chains and DNAME synthesis inside the zone (RFC 1034
//! 4.3.2, RFC 6672 3.2), referrals with their glue, and the additional-section addresses
//! of NS, MX and SRV targets (RFC 1034 4.3.2 step 6, RFC 2782).

use super::encode::{Encoder, Section};
use super::zone::{Found, RRset, ZoneBuild};
use super::Out;
use crate::config::Rdata;
use crate::dns::name::is_within;
use crate::dns::{rtype, CLASS_IN};
use crate::tables::{MAX_CHAIN, NONE};

/// YXDOMAIN: a DNAME substitution overflowed the name length (RFC 6672 2.2).
const YXDOMAIN: u8 = 6;

/// The name NS, MX and SRV records point at, lowercased.
fn target(t: u16, rd: &Rdata) -> Option<Vec<u8>> {
    match (t, rd) {
        (rtype::NS, Rdata::Name(n)) | (rtype::MX, Rdata::Mx(_, n)) => Some(n.clone()),
        (rtype::SRV, Rdata::Opaque(b)) if b.len() > 7 => Some(b[6..].to_ascii_lowercase()),
        _ => None,
    }
}

/// The A and AAAA RRsets at `name` in this zone, if any (exact names, glue included, or a
/// wildcard); none for scheduled names, whose addresses are chosen per query.
fn addresses<'z>(zb: &'z ZoneBuild<'_>, name: &[u8]) -> Vec<(u16, &'z RRset)> {
    if !is_within(name, zb.apex) || zb.scheduled(name).is_some() {
        return Vec::new();
    }
    if let Some(Found::Dname(_)) = zb.occluder(name) {
        return Vec::new(); // hidden by a DNAME above it
    }
    let data = match zb.names.get(name) {
        Some(d) => Some(d),
        None => match zb.resolve(name) {
            Found::Data(d) => Some(d),
            _ => None,
        },
    };
    let Some(d) = data else {
        return Vec::new();
    };
    [rtype::A, rtype::AAAA]
        .into_iter()
        .filter_map(|t| d.rrsets.get(&t).map(|s| (t, s)))
        .collect()
}

/// Adds the addresses of the in-zone targets of an NS, MX or SRV RRset as optional
/// additional records (left out first when the answer does not fit).
pub(super) fn additional(zb: &ZoneBuild<'_>, e: &mut Encoder, t: u16, rdata: &[Rdata]) {
    let mut done: Vec<Vec<u8>> = Vec::new();
    for rd in rdata {
        let Some(name) = target(t, rd) else { continue };
        if done.contains(&name) {
            continue;
        }
        for (at, set) in addresses(zb, &name) {
            e.optional_from_here();
            for r in &set.rdata {
                e.rr(Section::Additional, &name, at, CLASS_IN, set.ttl, r);
            }
        }
        done.push(name);
    }
}

/// The referral for zone cut `cut`: its NS RRset in authority, AA clear. Compiled against
/// the cut name, shifted for names below it.
pub(super) fn referral(zb: &ZoneBuild<'_>, cut: &[u8], out: &mut Out) -> u32 {
    let mut e = Encoder::new(cut, false);
    referral_into(zb, &mut e, cut);
    out.push(e, 0, false)
}

/// NS in authority; glue below the cut as required additional records, addresses of other
/// in-zone targets as optional ones.
fn referral_into(zb: &ZoneBuild<'_>, e: &mut Encoder, cut: &[u8]) {
    let ns = zb.ns_at(cut);
    for rd in &ns.rdata {
        e.rr(Section::Authority, cut, rtype::NS, CLASS_IN, ns.ttl, rd);
    }
    for glue in [true, false] {
        for rd in &ns.rdata {
            let Some(name) = target(rtype::NS, rd) else {
                continue;
            };
            if is_within(&name, cut) != glue {
                continue;
            }
            for (at, set) in addresses(zb, &name) {
                if !glue {
                    e.optional_from_here();
                }
                for r in &set.rdata {
                    e.rr(Section::Additional, &name, at, CLASS_IN, set.ttl, r);
                }
            }
        }
    }
}

/// `name` with its suffix `owner` replaced by the DNAME target (RFC 6672 2.2), lowercased;
/// `None` when the result is longer than a name may be.
fn synthesise(name: &[u8], owner: &[u8], dname: &Rdata) -> Option<Vec<u8>> {
    let Rdata::Opaque(target) = dname else {
        return None;
    };
    let prefix = &name[..name.len() - owner.len()];
    let mut new = prefix.to_vec();
    new.extend(target.iter().map(u8::to_ascii_lowercase));
    (new.len() <= 255).then_some(new)
}

/// The answer at a CNAME owner `start` for `qtype` (0: a type no node has): the CNAME,
/// then the chain followed inside the zone through CNAMEs and DNAMEs, ending in data,
/// NODATA, NXDOMAIN, a referral, or a scheduled name (continued at query time).
pub(super) fn chain(
    zb: &ZoneBuild<'_>,
    start: &[u8],
    cname: &RRset,
    qtype: u16,
    out: &mut Out,
) -> u32 {
    let mut e = Encoder::new(start, true);
    let mut at = e.rr(
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
    let mut next = NONE;
    for _ in 0..MAX_CHAIN {
        if !is_within(&cur, zb.apex) || seen.contains(&cur) {
            break; // out of zone: the resolver continues; a loop: stop here
        }
        if let Some(s) = zb.scheduled(&cur) {
            // A scheduled name (or a wildcard one): its records are chosen per query.
            next = out.index.get(s.as_slice()).unwrap_or(NONE);
            break;
        }
        seen.push(cur.clone());
        match zb.resolve(&cur) {
            Found::Elsewhere => break,
            Found::Cut(c) if c == cur && qtype == rtype::DS => {
                // DS at the cut is the parent's (RFC 4035 3.1.4.1), as a direct query.
                match zb.names[&c[..]].rrsets.get(&rtype::DS) {
                    Some(set) => {
                        for rd in &set.rdata {
                            e.rr(Section::Answer, &cur, rtype::DS, CLASS_IN, set.ttl, rd);
                        }
                    }
                    None => zb.soa_rr(&mut e),
                }
                break;
            }
            Found::Cut(c) => {
                referral_into(zb, &mut e, &c);
                break;
            }
            Found::Dname(d) => {
                let set = &zb.names[&d[..]].rrsets[&rtype::DNAME];
                e.rr(
                    Section::Answer,
                    &d,
                    rtype::DNAME,
                    CLASS_IN,
                    set.ttl,
                    &set.rdata[0],
                );
                let Some(new) = synthesise(&cur, &d, &set.rdata[0]) else {
                    rcode = YXDOMAIN;
                    break;
                };
                let cn = Rdata::Name(new.clone());
                at = e.rr(Section::Answer, &cur, rtype::CNAME, CLASS_IN, set.ttl, &cn);
                cur = new;
            }
            Found::NxDomain => {
                rcode = 3;
                zb.soa_rr(&mut e);
                break;
            }
            Found::Data(d) => {
                if let Some(c) = d.rrsets.get(&rtype::CNAME) {
                    at = e.rr(
                        Section::Answer,
                        &cur,
                        rtype::CNAME,
                        CLASS_IN,
                        c.ttl,
                        &c.rdata[0],
                    );
                    let Rdata::Name(n) = &c.rdata[0] else { break };
                    cur = n.clone();
                    continue;
                }
                match d.rrsets.get(&qtype) {
                    Some(set) => {
                        for rd in &set.rdata {
                            e.rr(Section::Answer, &cur, qtype, CLASS_IN, set.ttl, rd);
                        }
                        additional(zb, &mut e, qtype, &set.rdata);
                    }
                    None => zb.soa_rr(&mut e),
                }
                break;
            }
        }
    }
    let a = out.push(e, rcode, true);
    if next != NONE {
        let ans = &mut out.answers[a as usize];
        ans.next = next;
        ans.next_at = at;
    }
    a
}
