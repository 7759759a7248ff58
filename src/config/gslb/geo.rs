//! Lines by country, continent or AS number: the networks of MaxMind-format databases
//! (`[geoip] databases`) that match a line's `countries`, `continents` or `asns` are added
//! to it, the most specific criterion winning (ASN, then country, then continent).
//! Explicit prefixes win over database networks of the same prefix.

use std::path::Path;

use toml::Spanned;

use super::line::Owners;
use super::{Ctx, Line};
use crate::config::spec::Spec;

/// What a line matches in a database.
#[derive(Default)]
struct GeoMatch {
    countries: Vec<String>,
    continents: Vec<String>,
    asns: Vec<u32>,
}

/// The fields of a database record the lines use (GeoIP2 Country/City, GeoLite2-ASN).
#[derive(serde::Deserialize, Default)]
struct GeoRecord<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentCode<'a>>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(serde::Deserialize, Default)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(serde::Deserialize, Default)]
struct ContinentCode<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// A line that matches database records: its index and its criteria.
type Match = (usize, GeoMatch);

/// Adds to `lines` the networks of the configured databases their criteria match.
pub(super) fn assign(s: &Spec, ctx: &mut Ctx<'_>, lines: &mut [Line], owners: &mut Owners) {
    let matches = criteria(s, ctx);
    if matches.is_empty() {
        return;
    }
    let Some(geo) = &s.geoip else {
        let l = &s.line[matches[0].0 - 1];
        ctx.err(
            &l.name,
            "line",
            "countries, continents and asns need [geoip] databases = [\"...mmdb\"]",
        );
        return;
    };
    for db in geo.databases.get_ref() {
        let path = ctx.path(db.get_ref());
        if let Some(reader) = open(db, &path, ctx) {
            add_networks(&reader, (db, &path), ctx, &matches, lines, owners);
        }
    }
}

/// Each line's countries, continents (uppercased) and AS numbers.
fn criteria(s: &Spec, ctx: &mut Ctx<'_>) -> Vec<Match> {
    let mut matches = Vec::new();
    for (i, l) in s.line.iter().enumerate() {
        let mut m = GeoMatch::default();
        if let Some(c) = &l.countries {
            m.countries = c.get_ref().iter().map(|x| x.to_ascii_uppercase()).collect();
        }
        if let Some(c) = &l.continents {
            m.continents = c.get_ref().iter().map(|x| x.to_ascii_uppercase()).collect();
        }
        if let Some(a) = &l.asns {
            for &n in a.get_ref() {
                match u32::try_from(n) {
                    Ok(v) => m.asns.push(v),
                    Err(_) => ctx.err(a, "line.asns", format!("{n} is not an AS number")),
                }
            }
        }
        if !(m.countries.is_empty() && m.continents.is_empty() && m.asns.is_empty()) {
            matches.push((i + 1, m));
        }
    }
    matches
}

fn open(
    db: &Spanned<String>,
    path: &Path,
    ctx: &mut Ctx<'_>,
) -> Option<maxminddb::Reader<Vec<u8>>> {
    crate::config::reads::note(path);
    match maxminddb::Reader::open_readfile(path) {
        Ok(r) => Some(r),
        Err(e) => {
            let why = format!("cannot open {}: {e}", path.display());
            ctx.err(db, "geoip.databases", why);
            None
        }
    }
}

/// Gives every network of `reader` that a line matches to that line, unless an explicit
/// prefix (or an earlier database) decided it.
fn add_networks(
    reader: &maxminddb::Reader<Vec<u8>>,
    (db, path): (&Spanned<String>, &Path),
    ctx: &mut Ctx<'_>,
    matches: &[Match],
    lines: &mut [Line],
    owners: &mut Owners,
) {
    let networks = match reader.networks(Default::default()) {
        Ok(n) => n,
        Err(e) => {
            let why = format!("cannot read {}: {e}", path.display());
            ctx.err(db, "geoip.databases", why);
            return;
        }
    };
    for item in networks {
        let Ok(item) = item else {
            ctx.err(
                db,
                "geoip.databases",
                format!("{} is corrupt", path.display()),
            );
            break;
        };
        let (Ok(net), Ok(Some(rec))) = (item.network(), item.decode::<GeoRecord<'_>>()) else {
            continue;
        };
        let Some(li) = best(matches, &rec) else {
            continue;
        };
        let (key, v4) = match net.ip() {
            std::net::IpAddr::V4(a) => ((u32::from(a) as u128, net.prefix(), false), true),
            std::net::IpAddr::V6(a) => ((u128::from(a), net.prefix(), true), false),
        };
        if owners.claim(key, li as u32).is_some() {
            continue; // an explicit prefix (or an earlier database) decides it
        }
        if v4 {
            lines[li].v4.push((key.0 as u32, key.1));
        } else {
            lines[li].v6.push((key.0, key.1));
        }
    }
}

/// The line a record belongs to: the first matching its ASN, else its country, else its
/// continent.
fn best(matches: &[Match], rec: &GeoRecord<'_>) -> Option<usize> {
    let country = rec.country.as_ref().and_then(|c| c.iso_code);
    let continent = rec.continent.as_ref().and_then(|c| c.code);
    let asn = rec.autonomous_system_number;
    let hit = matches
        .iter()
        .find(|(_, m)| asn.is_some_and(|a| m.asns.contains(&a)))
        .or_else(|| {
            matches
                .iter()
                .find(|(_, m)| country.is_some_and(|c| m.countries.iter().any(|x| x == c)))
        })
        .or_else(|| {
            matches
                .iter()
                .find(|(_, m)| continent.is_some_and(|c| m.continents.iter().any(|x| x == c)))
        });
    hit.map(|&(li, _)| li)
}
