//! Zone data: records from an RFC 1035 zone file (read by [`super::zonefile`]) or
//! inline in the TOML (`soa`, `ns`, `records` in zone file syntax), checked for the mistakes
//! that would make the zone wrong: data outside the zone, SOA off the apex or twice, no apex
//! NS, CNAME beside other data.

use std::path::Path;

use toml::Spanned;

use super::error::{ConfigError, Lines, Origin};
use super::name::parse_name;
use super::spec::{SoaSpec, ZoneSpec};
use super::validate::Ctx;
use super::zonefile::{self, Source};
use super::Zone;
use crate::dns::name::{display_name, is_within};
use crate::dns::rtype;

/// Record data in the form the answer compiler needs: names that may be compressed
/// (RFC 3597 section 4: only the RFC 1035 types) are kept apart; everything else is
/// opaque wire bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// A TTL or SOA time field: 0..=2147483647.
fn time_field(v: &Option<Spanned<i64>>, field: &str, default: u32, ctx: &mut Ctx<'_>) -> u32 {
    u32_field(v, field, MAX_TTL, default, ctx)
}

/// A 32-bit field up to `max` (the message names the TTL range, which the serial, any
/// 32-bit value, is outside of only below 0 or beyond 32 bits).
fn u32_field(
    v: &Option<Spanned<i64>>,
    field: &str,
    max: i64,
    default: u32,
    ctx: &mut Ctx<'_>,
) -> u32 {
    let Some(s) = v else { return default };
    let n = *s.get_ref();
    let value = u32::try_from(n).ok().filter(|&x| i64::from(x) <= max);
    ctx.check(s, field, value, || format!("{n} is outside 0..=2147483647"))
        .unwrap_or(default)
}

/// The `[[zone]]` tables: each zone, then the names declared twice.
pub(super) fn load(specs: &[ZoneSpec], ctx: &mut Ctx<'_>) -> Vec<Zone> {
    if specs.is_empty() {
        ctx.push(
            Origin::new(ctx.file, 1),
            "zone",
            "no [[zone]]: there is nothing to serve",
        );
    }
    let zones: Vec<Zone> = specs
        .iter()
        .enumerate()
        .filter_map(|(i, z)| z.validate(ctx, i))
        .collect();
    for (i, a) in zones.iter().enumerate() {
        for b in &zones[..i] {
            if a.name == b.name {
                ctx.push(
                    a.at.clone(),
                    "zone.name",
                    format!("zone {} is declared twice", display_name(&a.name)),
                );
            }
        }
    }
    zones
}

impl ZoneSpec {
    /// Zone `i`. `None` when its name is unusable; other mistakes are reported and the
    /// zone is still returned so later checks can run.
    fn validate(&self, ctx: &mut Ctx<'_>, i: usize) -> Option<Zone> {
        let f = |s: &str| format!("zone[{i}].{s}");
        let zat = ctx.at(&self.name);
        let name = match parse_name(self.name.get_ref(), None) {
            Ok(n) => n,
            Err(e) => {
                ctx.push(zat, f("name"), e);
                return None;
            }
        };
        let default_ttl = time_field(&self.ttl, &f("ttl"), 3600, ctx);
        let mut records = Vec::new();
        let file_read = self.read_file(ctx, &name, default_ttl, &mut records, &f);
        if let Some(soa) = &self.soa {
            records.push(soa_record(soa, ctx, &name, default_ttl, &f));
        }
        if let Some(ns) = &self.ns {
            ns_records(ns, ctx, &name, default_ttl, &mut records, &f);
        }
        for r in &self.records {
            let src = Source {
                text: r.get_ref().as_bytes(),
                file: ctx.file.clone(),
                line_of: &inline_lines(r.span(), r.get_ref(), ctx.lines),
                dir: None,
            };
            zonefile::read(&src, &name, default_ttl, &mut records, ctx.errs);
        }
        if self.file.is_none() && self.soa.is_none() {
            let why = "missing: give `soa = {...}` and `ns = [...]`, or `file = \"...\"`";
            ctx.push(zat.clone(), f("soa"), why);
        }
        let declared_soa = file_read || self.soa.is_some();
        check(&name, &records, &zat, &f, declared_soa, ctx.errs);
        Some(Zone {
            name,
            at: zat,
            records,
        })
    }

    /// The records of `file`, if given; whether it could be read.
    fn read_file(
        &self,
        ctx: &mut Ctx<'_>,
        apex: &[u8],
        default_ttl: u32,
        records: &mut Vec<Record>,
        f: &dyn Fn(&str) -> String,
    ) -> bool {
        let Some(path) = &self.file else { return false };
        let full = ctx.path(path.get_ref());
        super::reads::note(&full);
        match std::fs::read(&full) {
            Ok(text) => {
                let src = Source {
                    text: &text,
                    file: full.display().to_string().into(),
                    line_of: &|l| l,
                    dir: Some(full.parent().unwrap_or(Path::new(""))),
                };
                zonefile::read(&src, apex, default_ttl, records, ctx.errs);
                true
            }
            Err(e) => {
                let why = format!("cannot read {}: {e}", full.display());
                ctx.err(path, f("file"), why);
                false
            }
        }
    }
}

/// `soa = { ... }`: the apex SOA record.
fn soa_record(
    soa: &Spanned<SoaSpec>,
    ctx: &mut Ctx<'_>,
    apex: &[u8],
    default_ttl: u32,
    f: &dyn Fn(&str) -> String,
) -> Record {
    let s = soa.get_ref();
    let mut names = [Vec::new(), Vec::new()];
    for (k, (fname, v)) in [("mname", &s.mname), ("rname", &s.rname)]
        .into_iter()
        .enumerate()
    {
        match parse_name(v.get_ref(), Some(apex)) {
            Ok(n) => names[k] = n,
            Err(e) => ctx.err(v, f(&format!("soa.{fname}")), e),
        }
    }
    let [mname, rname] = names;
    let times = [
        u32_field(&s.serial, &f("soa.serial"), u32::MAX.into(), 1, ctx),
        time_field(&s.refresh, &f("soa.refresh"), 3600, ctx),
        time_field(&s.retry, &f("soa.retry"), 900, ctx),
        time_field(&s.expire, &f("soa.expire"), 604800, ctx),
        time_field(&s.minimum, &f("soa.minimum"), 300, ctx),
    ];
    let ttl = time_field(&s.ttl, &f("soa.ttl"), default_ttl, ctx);
    Record {
        owner: apex.to_vec(),
        rtype: rtype::SOA,
        ttl,
        rdata: Rdata::Soa(Soa {
            mname,
            rname,
            times,
        }),
        at: ctx.at(soa),
    }
}

/// `ns = [...]`: the apex NS records.
fn ns_records(
    ns: &Spanned<Vec<Spanned<String>>>,
    ctx: &mut Ctx<'_>,
    apex: &[u8],
    default_ttl: u32,
    records: &mut Vec<Record>,
    f: &dyn Fn(&str) -> String,
) {
    if ns.get_ref().is_empty() {
        ctx.err(ns, f("ns"), "empty: a zone needs at least one NS");
    }
    for n in ns.get_ref() {
        match parse_name(n.get_ref(), Some(apex)) {
            Ok(target) => records.push(Record {
                owner: apex.to_vec(),
                rtype: rtype::NS,
                ttl: default_ttl,
                rdata: Rdata::Name(target),
                at: ctx.at(n),
            }),
            Err(e) => ctx.err(n, f("ns"), e),
        }
    }
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
