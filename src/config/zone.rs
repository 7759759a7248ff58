//! Zone data: records from an RFC 1035 zone file (parsed by NLnet Labs' `domain` scanner) or
//! inline in the TOML (`soa`, `ns`, `records` in zone file syntax), checked for the mistakes
//! that would make the zone wrong: data outside the zone, SOA off the apex or twice, no apex
//! NS, CNAME beside other data.

use std::path::Path;
use std::sync::Arc;

use domain::base::iana::{Class, Rtype};
use domain::base::name::ToLabelIter;
use domain::base::rdata::ComposeRecordData;
use domain::rdata::ZoneRecordData;
use domain::zonefile::inplace::{Entry, ScannedDname, Zonefile};

use super::error::{ConfigError, Lines, Origin};
use super::name::{display_name, is_within, parse_name};
use super::spec::ZoneSpec;
use super::Zone;
use crate::wire::parse::rtype;

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

fn wire_of(n: &ScannedDname) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    for label in n.iter_labels() {
        v.push(label.len() as u8);
        v.extend(label.as_slice().iter().map(u8::to_ascii_lowercase));
    }
    v
}

/// Scans zone file text into records. `line_base` is added to the scanner's line numbers
/// (for inline records that start mid-file); `skip` lines of a preamble are subtracted.
fn scan(
    text: &str,
    origin: &[u8],
    default_ttl: u32,
    file: &Arc<str>,
    line_of: &dyn Fn(u32) -> u32,
    out: &mut Vec<Record>,
    errs: &mut Vec<ConfigError>,
) {
    let origin_name = match domain::base::Name::from_octets(bytes::Bytes::copy_from_slice(origin)) {
        Ok(n) => n,
        Err(_) => return,
    };
    let src = format!("$TTL {default_ttl}\n{text}\n");
    let lines = Lines::new(&src);
    let mut zf = Zonefile::from(src.as_str());
    zf.set_origin(origin_name);
    zf.set_default_class(Class::IN);
    let mut before = 0usize;
    loop {
        // Line of the first non-blank, non-comment octet after the previous entry.
        let start_line = {
            let rest = &src.as_bytes()[before.min(src.len())..];
            let mut i = 0;
            let mut in_comment = false;
            while i < rest.len() {
                match rest[i] {
                    b';' => in_comment = true,
                    b'\n' => in_comment = false,
                    c if !in_comment && !c.is_ascii_whitespace() => break,
                    _ => {}
                }
                i += 1;
            }
            lines.line(before + i)
        };
        let at = Origin::new(file, line_of(start_line.saturating_sub(1).max(1)));
        let entry = match zf.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                // The scanner reports "line:col: reason" in its own numbering.
                let s = e.to_string();
                let (line, reason) = match s.split_once(':') {
                    Some((l, rest)) => (
                        l.parse::<u32>().unwrap_or(start_line),
                        rest.split_once(':')
                            .map_or(rest, |(_, r)| r)
                            .trim()
                            .to_string(),
                    ),
                    None => (start_line, s.clone()),
                };
                errs.push(ConfigError::new(
                    Origin::new(file, line_of(line.saturating_sub(1).max(1))),
                    "record",
                    format!("cannot parse: {reason}"),
                ));
                return;
            }
        };
        before = zf.current_offset();
        let rec = match entry {
            Entry::Record(r) => r,
            Entry::Include { .. } => {
                errs.push(ConfigError::new(
                    at,
                    "record",
                    "$INCLUDE is not supported: list each file as its own zone",
                ));
                continue;
            }
        };
        if rec.class() != Class::IN {
            errs.push(ConfigError::new(
                at,
                "record",
                format!("class {} is not served: only IN", rec.class()),
            ));
            continue;
        }
        let owner = wire_of(rec.owner());
        let ttl = rec.ttl().as_secs();
        if i64::from(ttl) > MAX_TTL {
            errs.push(ConfigError::new(
                at,
                "record",
                "TTL above 2147483647 (RFC 2181 8)",
            ));
            continue;
        }
        let rt = rec.rtype();
        let rdata = match rec.data() {
            ZoneRecordData::Cname(c) => Rdata::Name(wire_of(c.cname())),
            ZoneRecordData::Ns(n) => Rdata::Name(wire_of(n.nsdname())),
            ZoneRecordData::Ptr(p) => Rdata::Name(wire_of(p.ptrdname())),
            ZoneRecordData::Mx(m) => Rdata::Mx(m.preference(), wire_of(m.exchange())),
            ZoneRecordData::Soa(s) => Rdata::Soa(Soa {
                mname: wire_of(s.mname()),
                rname: wire_of(s.rname()),
                times: [
                    s.serial().into_int(),
                    s.refresh().as_secs(),
                    s.retry().as_secs(),
                    s.expire().as_secs(),
                    s.minimum().as_secs(),
                ],
            }),
            other => {
                let mut v = Vec::new();
                if other.compose_rdata(&mut v).is_err() {
                    errs.push(ConfigError::new(
                        at,
                        "record",
                        "record data does not encode",
                    ));
                    continue;
                }
                Rdata::Opaque(v)
            }
        };
        if matches!(rt, Rtype::OPT | Rtype::ANY | Rtype::AXFR | Rtype::IXFR) {
            errs.push(ConfigError::new(
                at,
                "record",
                format!("{rt} is a meta type, not zone data"),
            ));
            continue;
        }
        out.push(Record {
            owner,
            rtype: rt.to_int(),
            ttl,
            rdata,
            at,
        });
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
        match std::fs::read_to_string(&full) {
            Ok(text) => {
                file_read = true;
                let zfile: Arc<str> = full.display().to_string().into();
                scan(
                    &text,
                    &name,
                    default_ttl,
                    &zfile,
                    &|l| l,
                    &mut records,
                    errs,
                );
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
        let line0 = lines.line(r.span().start);
        scan(
            r.get_ref(),
            &name,
            default_ttl,
            file,
            &|l| line0 + l - 1,
            &mut records,
            errs,
        );
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
