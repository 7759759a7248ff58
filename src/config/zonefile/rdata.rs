//! Record data in presentation form to wire form. Three ways, by type:
//! * `\# LENGTH HEX` (RFC 3597) for any type; a known type's data is then checked;
//! * `domain`'s own `Scan` implementations, reading our tokens through [`Fields`], for the
//!   types where they read what Knot DNS reads ([`DOMAIN_TYPES`]);
//! * a field list per type ([`layout`]) or a function ([`super::special`]) for the rest:
//!   types `domain` lacks (LOC, CERT, URI, EUI48, APL, ...) or reads differently from Knot DNS
//!   (TTL units in SOA, algorithm mnemonics, empty DNSSEC fields, alpn escapes).

use domain::base::iana::Rtype;
use domain::base::name::Name;
use domain::base::rdata::ComposeRecordData;
use domain::rdata::ZoneRecordData;

use super::fields::{bad, Fields, ScanError};
use super::names::{self, rtype_name};
use super::{special, svcb, text};

/// Types read by `domain`'s scanners (SPF as TXT).
const DOMAIN_TYPES: &[u16] = &[1, 2, 5, 12, 13, 14, 15, 16, 17, 28, 33, 35, 39, 99];

/// One field of a type's presentation form, with its name for messages.
#[derive(Clone, Copy)]
pub(crate) enum F {
    U8(&'static str),
    U16(&'static str),
    U32(&'static str),
    /// A time, units allowed (SOA timers).
    Time(&'static str),
    Name(&'static str),
    /// A character-string (length octet and data).
    Str(&'static str),
    /// One token of text, no length octet (URI target, CAA value).
    Text(&'static str),
    /// DNSSEC algorithm, number or mnemonic.
    Alg,
    /// CERT type, number or mnemonic.
    CertType,
    /// The type an RRSIG covers.
    Covered,
    /// Hex digits to the end, in tokens of whole octets; at least one.
    Hex(&'static str),
    /// Base64 to the end, in tokens of whole quartets; at least one.
    Base64(&'static str),
    /// NSEC3 salt: hex, or `-` for none.
    Salt,
    /// NSEC3 next hashed owner: base32hex.
    Hash,
    /// Type list to the end (NSEC, NSEC3, CSYNC), possibly empty.
    Bitmap,
    /// RRSIG time: YYYYMMDDHHmmSS or seconds.
    Stamp(&'static str),
    Ipv4(&'static str),
    /// `xx-xx-...`: so many octets (EUI48, EUI64).
    Eui(usize),
    /// `xxxx:xxxx:xxxx:xxxx` (NID, L64).
    Ilnp64,
}

use F::*;

/// The presentation form of the types read field by field.
fn layout(t: u16) -> Option<&'static [F]> {
    const NSEC3PARAM: &[F] = &[U8("hash algorithm"), U8("flags"), U16("iterations"), Salt];
    Some(match t {
        6 => &[
            Name("primary server"),
            Name("mailbox"),
            U32("serial"),
            Time("refresh"),
            Time("retry"),
            Time("expire"),
            Time("minimum"),
        ],
        18 | 21 | 36 | 107 => &[U16("preference"), Name("name")],
        25 | 48 | 60 => &[U16("flags"), U8("protocol"), Alg, Base64("public key")],
        37 => &[CertType, U16("key tag"), Alg, Base64("certificate")],
        43 | 59 => &[U16("key tag"), Alg, U8("digest type"), Hex("digest")],
        44 => &[U8("algorithm"), U8("fingerprint type"), Hex("fingerprint")],
        46 => &[
            Covered,
            Alg,
            U8("labels"),
            U32("original TTL"),
            Stamp("expiration"),
            Stamp("inception"),
            U16("key tag"),
            Name("signer"),
            Base64("signature"),
        ],
        47 => &[Name("next name"), Bitmap],
        49 | 61 => &[Base64("data")],
        50 => &[
            U8("hash algorithm"),
            U8("flags"),
            U16("iterations"),
            Salt,
            Hash,
            Bitmap,
        ],
        51 => NSEC3PARAM,
        52 | 53 => &[
            U8("usage"),
            U8("selector"),
            U8("matching type"),
            Hex("certificate data"),
        ],
        62 => &[U32("SOA serial"), U16("flags"), Bitmap],
        63 => &[
            U32("serial"),
            U8("scheme"),
            U8("hash algorithm"),
            Hex("digest"),
        ],
        104 | 106 => &[U16("preference"), Ilnp64],
        105 => &[U16("preference"), Ipv4("locator")],
        108 => &[Eui(6)],
        109 => &[Eui(8)],
        256 => &[U16("priority"), U16("weight"), Text("target")],
        257 => &[U8("flags"), Str("tag"), Text("value")],
        _ => return None,
    })
}

/// Reads the record data of type `t` from all of `f`; returns its wire form.
pub(crate) fn parse(t: u16, f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let wire = if f.peek().is_some_and(|tok| tok.raw.starts_with(b"\\#")) {
        generic(f)?
    } else if DOMAIN_TYPES.contains(&t) {
        via_domain(t, f)?
    } else if let Some(fields) = layout(t) {
        let mut w = Vec::new();
        for &field in fields {
            read(field, f, &mut w)?;
        }
        w
    } else {
        match t {
            29 => special::loc(f)?,
            42 => special::apl(f)?,
            45 => special::ipseckey(f)?,
            64 | 65 => svcb::svcb(f)?,
            _ => {
                return Err(f.fail(format!(
                    "{} has no text form here: write its data as \\# LENGTH HEX",
                    rtype_name(t)
                )))
            }
        }
    };
    f.end()?;
    Ok(wire)
}

/// `\# LENGTH HEX...` (RFC 3597 5).
fn generic(f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let marker = f.next("\\#")?;
    if marker.raw != b"\\#" {
        return Err(bad(&marker, "\\# data", "'\\#' must stand alone"));
    }
    let len = f.num("\\# data length", 65535)? as usize;
    let data = if len > 0 || f.more() {
        f.rest("\\# hex data", text::hex)?
    } else {
        Vec::new()
    };
    if data.len() != len {
        return Err(bad(
            &marker,
            "\\# data",
            &format!("the length says {len} octets, the data has {}", data.len()),
        ));
    }
    Ok(data)
}

/// Through `domain`'s scanner for the type.
fn via_domain(t: u16, f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let rt = Rtype::from_int(if t == 99 { 16 } else { t });
    let data = ZoneRecordData::<Vec<u8>, Name<Vec<u8>>>::scan(rt, f).map_err(|e| f.place(e))?;
    let mut w = Vec::new();
    data.compose_rdata(&mut w)
        .map_err(|_| f.fail("record data too long".into()))?;
    Ok(w)
}

/// Reads one field into `w`.
fn read(field: F, f: &mut Fields<'_, '_>, w: &mut Vec<u8>) -> Result<(), ScanError> {
    match field {
        U8(what) => w.push(f.num(what, 255)? as u8),
        U16(what) => w.extend((f.num(what, 65535)? as u16).to_be_bytes()),
        U32(what) => w.extend((f.num(what, u64::from(u32::MAX))? as u32).to_be_bytes()),
        Time(what) => w.extend(f.read(what, text::time)?.to_be_bytes()),
        Name(what) => w.extend(f.name(what)?),
        Str(what) => {
            let s = f.read(what, text::charstr)?;
            w.push(s.len() as u8);
            w.extend(s);
        }
        Text(what) => w.extend(f.read(what, text::text)?),
        Alg => w.push(f.read("algorithm", names::algorithm)?),
        CertType => w.extend(f.read("certificate type", names::cert_type)?.to_be_bytes()),
        Covered => w.extend(f.read("type covered", covered)?.to_be_bytes()),
        Hex(what) => w.extend(f.rest(what, text::hex)?),
        Base64(what) => w.extend(f.rest(what, text::base64)?),
        Salt => w.extend(f.read("salt", salt)?),
        Hash => w.extend(f.read("next hashed owner", hash)?),
        Bitmap => w.extend(bitmap(f)?),
        Stamp(what) => w.extend(f.read(what, stamp)?.to_be_bytes()),
        Ipv4(what) => w.extend(f.read(what, ipv4)?.octets()),
        Eui(n) => w.extend(f.read("address", |r| hex_groups(r, b'-', 2, n))?),
        Ilnp64 => w.extend(f.read("locator", |r| hex_groups(r, b':', 4, 4))?),
    }
    Ok(())
}

fn covered(raw: &[u8]) -> Result<u16, text::Problem> {
    names::rtype(raw).ok_or_else(|| "not a type".into())
}

/// `-` (no salt) or hex, with a length octet.
fn salt(raw: &[u8]) -> Result<Vec<u8>, text::Problem> {
    let v = if raw == b"-" {
        Vec::new()
    } else {
        text::hex(raw)?
    };
    length_prefixed(v)
}

fn hash(raw: &[u8]) -> Result<Vec<u8>, text::Problem> {
    length_prefixed(text::base32hex(raw)?)
}

fn length_prefixed(v: Vec<u8>) -> Result<Vec<u8>, text::Problem> {
    let len = u8::try_from(v.len()).map_err(|_| "longer than 255 octets")?;
    Ok([&[len][..], &v].concat())
}

/// The type list of NSEC, NSEC3, CSYNC (RFC 4034 4.1.2): windows of bits.
fn bitmap(f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let mut windows = [[0u8; 32]; 256];
    let mut used = [0usize; 256];
    while f.more() {
        let t = f.read("type in the type list", covered)?;
        let (win, bit) = ((t >> 8) as usize, (t & 0xff) as usize);
        windows[win][bit / 8] |= 0x80 >> (bit % 8);
        used[win] = used[win].max(bit / 8 + 1);
    }
    let mut out = Vec::new();
    for (win, bits) in windows.iter().enumerate().filter(|(w, _)| used[*w] > 0) {
        out.extend([win as u8, used[win] as u8]);
        out.extend(&bits[..used[win]]);
    }
    Ok(out)
}

/// An RRSIG time: YYYYMMDDHHmmSS (UTC, years 1970 to 2225, wrapping past 2106 as serial
/// arithmetic does) or at most 10 digits of seconds.
fn stamp(raw: &[u8]) -> Result<u32, text::Problem> {
    if !raw.iter().all(u8::is_ascii_digit) || raw.is_empty() {
        return Err("not YYYYMMDDHHmmSS or seconds".into());
    }
    match raw.len() {
        14 => date(raw),
        ..=10 => text::number(raw, u64::from(u32::MAX)).map(|v| v as u32),
        _ => Err("give 14 digits (YYYYMMDDHHmmSS) or at most 10 (seconds)".into()),
    }
}

fn date(raw: &[u8]) -> Result<u32, text::Problem> {
    let n = |a: usize, b: usize| {
        raw[a..b]
            .iter()
            .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'))
    };
    let (y, mo, d, h, mi, s) = (n(0, 4), n(4, 6), n(6, 8), n(8, 10), n(10, 12), n(12, 14));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=2225).contains(&y)
        || !(1..=12).contains(&mo)
        || d < 1
        || d > days_in[mo as usize - 1]
    {
        return Err("no such date (years 1970 to 2225)".into());
    }
    if h > 23 || mi > 59 || s > 59 {
        return Err("no such time of day".into());
    }
    // Days from 1970-01-01 (civil calendar, H. Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy / 400;
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    Ok((days * 86400 + h * 3600 + mi * 60 + s) as u32)
}

fn ipv4(raw: &[u8]) -> Result<std::net::Ipv4Addr, text::Problem> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an IPv4 address".into())
}

/// `count` groups of `digits` hex digits separated by `sep`.
fn hex_groups(raw: &[u8], sep: u8, digits: usize, count: usize) -> Result<Vec<u8>, text::Problem> {
    let groups: Vec<&[u8]> = raw.split(|&c| c == sep).collect();
    if groups.len() != count || groups.iter().any(|g| g.len() != digits) {
        return Err(format!(
            "expected {count} groups of {digits} hex digits separated by '{}'",
            sep as char
        ));
    }
    groups
        .into_iter()
        .map(text::hex)
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(b"19700101000000"), Ok(0));
        assert_eq!(date(b"20240229120000"), Ok(1709208000));
        assert!(date(b"20230229120000").is_err());
        assert!(date(b"20241301000000").is_err());
        assert!(date(b"20240101240000").is_err());
        assert!(stamp(b"12345678901").is_err());
        assert_eq!(stamp(b"4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn groups() {
        assert_eq!(
            hex_groups(b"00-11-22-33-44-55", b'-', 2, 6).unwrap(),
            [0, 0x11, 0x22, 0x33, 0x44, 0x55]
        );
        assert!(hex_groups(b"00-11-22-33-44", b'-', 2, 6).is_err());
        assert!(hex_groups(b"00-11-22-33-44-5", b'-', 2, 6).is_err());
        assert_eq!(
            hex_groups(b"0014:4fff:ff20:ee64", b':', 4, 4)
                .unwrap()
                .len(),
            8
        );
    }
}
