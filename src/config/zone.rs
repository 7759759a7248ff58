//! Zone data: records from an RFC 1035 zone file (read by [`super::zonefile`]) or
//! inline in the TOML (`soa`, `ns`, `records` in zone file syntax), checked for the mistakes
//! that would make the zone wrong: data outside the zone, SOA off the apex or twice, no apex
//! NS, CNAME beside other data.

use std::path::Path;
use std::sync::Arc;

use super::error::{ConfigError, Lines, Origin};
use super::name::parse_name;
use super::spec::ZoneSpec;
use super::zonefile::{self, Source};
use super::Zone;
use crate::dns::name::{display_name, is_within};
use crate::dns::rtype;

/// Record data in the form the answer compiler needs: names that may be compressed
/// (RFC 3597 section 4: only the RFC 1035 types) are kept apart; everything else is
/// opaque wire bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    /// Uncompressible data, wire format.
    Opaque(Vec<u8>),
    /// NS, CNAME, PTR: one compressible name.
    Name(Vec<u8>),
    /// MX: preference and a compressible name.
    Mx(u16, Vec<u8>),
    /// SOA.
    Soa(Soa),
}

/// SOA fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    /// Primary name server.
    pub mname: Vec<u8>,
    /// Responsible mailbox.
    pub rname: Vec<u8>,
    /// serial, refresh, retry, expire, minimum.
    pub times: [u32; 5],
}

/// One resource record of a zone.
#[derive(Debug, Clone)]
pub struct Record {
    /// Lowercased wire owner name.
    pub owner: Vec<u8>,
    /// Record type.
    pub rtype: u16,
    /// TTL in seconds.
    pub ttl: u32,
    /// Data.
    pub rdata: Rdata,
    /// Where it was written.
    pub at: Origin,
}

const MAX_TTL: i64 = 0x7FFF_FFFF;

/// Maps the lines of an inline record string to config file lines: the string's first
/// content line is `first`; a literal that spans fewer lines than its text has (newlines
/// written as `\n`) puts every line at `first`.
fn inline_lines(span: std::ops::Range<usize>, text: &str, lines: &Lines) -> impl Fn(u32) -> u32 {
    let first = lines.line(span.start);
    let last = lines.line(span.end.saturating_sub(1)).max(first);
    let spanned = last - first + 1;
    let own = text.matches('\n').count() as u32 + 1;
    let skip = spanned.checked_sub(own);
    move |l| match skip {
        Some(skip) => (first + skip + l - 1).min(last),
        None => first,
    }
}

fn int_field(
    v: &Option<toml::Spanned<i64>>,
    default: u32,
    field: &str,
    at: &dyn Fn(std::ops::Range<usize>) -> Origin,
    errs: &mut Vec<ConfigError>,
) -> u32 {
    match v {
        None => default,
        Some(s) => match u32::try_from(*s.get_ref()) {
            Ok(x) if i64::from(x) <= MAX_TTL || field.ends_with("serial") => x,
            _ => {
                errs.push(ConfigError::new(
                    at(s.span()),
                    field,
                    format!("{} is outside 0..=2147483647", s.get_ref()),
                ));
                default
            }
        },
    }
}

/// Loads zone `i` of the spec. Returns `None` when its name is unusable; other mistakes are
/// pushed to `errs` and the zone is still returned so later checks can run.
pub(super) fn load(
    i: usize,
    z: &ZoneSpec,
    file: &Arc<str>,
    lines: &Lines,
    base: &Path,
    errs: &mut Vec<ConfigError>,
) -> Option<Zone> {
    let at = |span: std::ops::Range<usize>| Origin::new(file, lines.line(span.start));
    let f = |s: &str| format!("zone[{i}].{s}");
    let zat = at(z.name.span());
    let name = match parse_name(z.name.get_ref(), None) {
        Ok(n) => n,
        Err(e) => {
            errs.push(ConfigError::new(zat, f("name"), e));
            return None;
        }
    };
    let default_ttl = int_field(&z.ttl, 3600, &f("ttl"), &at, errs);
    let mut records = Vec::new();
    let mut file_read = false;
    if let Some(path) = &z.file {
        let full = super::relative_to(base, path.get_ref());
        match std::fs::read(&full) {
            Ok(text) => {
                file_read = true;
                let src = Source {
                    text: &text,
                    file: full.display().to_string().into(),
                    line_of: &|l| l,
                    dir: Some(full.parent().unwrap_or(Path::new(""))),
                };
                zonefile::read(&src, &name, default_ttl, &mut records, errs);
            }
            Err(e) => errs.push(ConfigError::new(
                at(path.span()),
                f("file"),
                format!("cannot read {}: {e}", full.display()),
            )),
        }
    }
    if let Some(soa) = &z.soa {
        let s = soa.get_ref();
        let sat = at(soa.span());
        let mut names = [Vec::new(), Vec::new()];
        for (k, (fname, v)) in [("mname", &s.mname), ("rname", &s.rname)]
            .into_iter()
            .enumerate()
        {
            match parse_name(v.get_ref(), Some(&name)) {
                Ok(n) => names[k] = n,
                Err(e) => errs.push(ConfigError::new(
                    at(v.span()),
                    f(&format!("soa.{fname}")),
                    e,
                )),
            }
        }
        let [mname, rname] = names;
        let times = [
            int_field(&s.serial, 1, &f("soa.serial"), &at, errs),
            int_field(&s.refresh, 3600, &f("soa.refresh"), &at, errs),
            int_field(&s.retry, 900, &f("soa.retry"), &at, errs),
            int_field(&s.expire, 604800, &f("soa.expire"), &at, errs),
            int_field(&s.minimum, 300, &f("soa.minimum"), &at, errs),
        ];
        let ttl = int_field(&s.ttl, default_ttl, &f("soa.ttl"), &at, errs);
        records.push(Record {
            owner: name.clone(),
            rtype: rtype::SOA,
            ttl,
            rdata: Rdata::Soa(Soa {
                mname,
                rname,
                times,
            }),
            at: sat,
        });
    }
    if let Some(ns) = &z.ns {
        if ns.get_ref().is_empty() {
            errs.push(ConfigError::new(
                at(ns.span()),
                f("ns"),
                "empty: a zone needs at least one NS",
            ));
        }
        for n in ns.get_ref() {
            match parse_name(n.get_ref(), Some(&name)) {
                Ok(target) => records.push(Record {
                    owner: name.clone(),
                    rtype: rtype::NS,
                    ttl: default_ttl,
                    rdata: Rdata::Name(target),
                    at: at(n.span()),
                }),
                Err(e) => errs.push(ConfigError::new(at(n.span()), f("ns"), e)),
            }
        }
    }
    for r in &z.records {
        let src = Source {
            text: r.get_ref().as_bytes(),
            file: file.clone(),
            line_of: &inline_lines(r.span(), r.get_ref(), lines),
            dir: None,
        };
        zonefile::read(&src, &name, default_ttl, &mut records, errs);
    }
    if z.file.is_none() && z.soa.is_none() {
        errs.push(ConfigError::new(
            zat.clone(),
            f("soa"),
            "missing: give `soa = {...}` and `ns = [...]`, or `file = \"...\"`",
        ));
    }
    let declared_soa = file_read || z.soa.is_some();
    check(&name, &records, &zat, &f, declared_soa, errs);
    Some(Zone {
        name,
        at: zat,
        records,
    })
}

/// Zone-level consistency checks.
fn check(
    apex: &[u8],
    records: &[Record],
    zat: &Origin,
    f: &dyn Fn(&str) -> String,
    declared_soa: bool,
    errs: &mut Vec<ConfigError>,
) {
    let zname = display_name(apex);
    let mut soa_seen = false;
    let mut apex_ns = false;
    for r in records {
        if !is_within(&r.owner, apex) {
            errs.push(ConfigError::new(
                r.at.clone(),
                "record",
                format!("{} is outside zone {zname}", display_name(&r.owner)),
            ));
            continue;
        }
        if r.rtype == rtype::SOA {
            if r.owner != apex {
                errs.push(ConfigError::new(
                    r.at.clone(),
                    "record",
                    format!(
                        "SOA at {} is not at the zone apex {zname}",
                        display_name(&r.owner)
                    ),
                ));
            } else if soa_seen {
                errs.push(ConfigError::new(
                    r.at.clone(),
                    "record",
                    format!("zone {zname} has a second SOA"),
                ));
            }
            soa_seen = true;
        }
        if r.rtype == rtype::NS && r.owner == apex {
            apex_ns = true;
        }
        if r.rtype == rtype::CNAME && r.owner == apex {
            errs.push(ConfigError::new(
                r.at.clone(),
                "record",
                "CNAME at the zone apex (RFC 1912 2.4)",
            ));
        }
    }
    // A CNAME must be alone at its name (RFC 1034 3.6.2): one pass, keyed by owner.
    let mut by_owner: foldhash::HashMap<&[u8], (Option<&Record>, Option<&Record>)> =
        foldhash::HashMap::default();
    for r in records {
        let e = by_owner.entry(&r.owner).or_default();
        if r.rtype == rtype::CNAME {
            if let Some(first) = e.0 {
                errs.push(ConfigError::new(
                    r.at.clone(),
                    "record",
                    format!(
                        "second CNAME at {} (first at line {})",
                        display_name(&r.owner),
                        first.at.line
                    ),
                ));
            } else {
                e.0 = Some(r);
            }
        } else if e.1.is_none() {
            e.1 = Some(r);
        }
    }
    for (owner, (cname, other)) in by_owner {
        if owner == apex {
            continue; // reported above as a CNAME at the apex
        }
        if let (Some(c), Some(o)) = (cname, other) {
            errs.push(ConfigError::new(
                c.at.clone(),
                "record",
                format!(
                    "CNAME at {} beside other data (line {}): a CNAME must be alone (RFC 1034 3.6.2)",
                    display_name(owner),
                    o.at.line
                ),
            ));
        }
    }
    if !soa_seen && declared_soa {
        errs.push(ConfigError::new(
            zat.clone(),
            f("soa"),
            format!("zone {zname} has no SOA"),
        ));
    }
    if !apex_ns && soa_seen {
        errs.push(ConfigError::new(
            zat.clone(),
            f("ns"),
            format!("zone {zname} has no NS at its apex"),
        ));
    }
}
