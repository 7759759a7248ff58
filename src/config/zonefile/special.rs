//! Record data that is more than a list of fields: LOC (RFC 1876), APL (RFC 3123) and
//! IPSECKEY (RFC 4025), read as Knot DNS reads them.

use super::fields::{bad, Fields, ScanError};
use super::text;

/// A decimal with at most `decimals` fraction digits, scaled: `12.5` with 2 is 1250.
fn decimal(raw: &[u8], decimals: u32, max: u64) -> Result<u64, text::Problem> {
    let (int, frac) = match raw.iter().position(|&c| c == b'.') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &[][..]),
    };
    if frac.len() > decimals as usize || (!frac.is_empty() && !frac.iter().all(u8::is_ascii_digit))
    {
        return Err(format!("at most {decimals} decimals"));
    }
    let scale = 10u64.pow(decimals);
    let whole = text::number(int, u64::from(u32::MAX))?;
    let part = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(decimals as usize)
        .fold(0, |v, d| v * 10 + u64::from(d - b'0'));
    let v = whole * scale + part;
    if v > max {
        return Err(format!("above {}", max as f64 / scale as f64));
    }
    Ok(v)
}

/// Meters with two decimals and an optional `m`, in centimeters.
fn meters(raw: &[u8], max: u64) -> Result<u64, text::Problem> {
    decimal(raw.strip_suffix(b"m").unwrap_or(raw), 2, max)
}

/// LOC size and precision: mantissa and power of ten in one octet (RFC 1876 2).
fn precision(cm: u64) -> u8 {
    let (mut m, mut e) = (cm, 0u8);
    while m > 9 {
        m /= 10;
        e += 1;
    }
    (m as u8) << 4 | (e & 15)
}

/// Degrees [minutes [seconds]] and a hemisphere letter, in thousandths of arc seconds
/// from the equator or the prime meridian, offset by 2^31.
fn coordinate(
    f: &mut Fields<'_, '_>,
    what: &str,
    hemi: [u8; 2],
    max_deg: u64,
) -> Result<u32, ScanError> {
    let mut v = f.num(&format!("{what} degrees"), max_deg)? * 3_600_000;
    for (i, (part, scale)) in [("minutes", 60_000), ("seconds", 1)]
        .into_iter()
        .enumerate()
    {
        let t = f.next(&format!("{what} hemisphere"))?;
        if t.raw.len() == 1 && hemi.contains(&t.raw[0]) {
            return Ok(signed(v, t.raw[0] == hemi[1]));
        }
        v += if i == 0 {
            text::number(t.raw, 59).map_err(|p| bad(&t, &format!("{what} {part}"), &p))? * scale
        } else {
            decimal(t.raw, 3, 59_999).map_err(|p| bad(&t, &format!("{what} {part}"), &p))?
        };
    }
    let t = f.next(&format!("{what} hemisphere"))?;
    if t.raw.len() == 1 && hemi.contains(&t.raw[0]) {
        return Ok(signed(v, t.raw[0] == hemi[1]));
    }
    let want = format!("{} or {}", hemi[0] as char, hemi[1] as char);
    Err(bad(
        &t,
        &format!("{what} hemisphere"),
        &format!("expected {want}"),
    ))
}

fn signed(v: u64, negative: bool) -> u32 {
    let v = v as i64;
    ((1i64 << 31) + if negative { -v } else { v }) as u32
}

/// LOC: `d [m [s]] N|S d [m [s]] E|W alt[m] [size[m] [hp[m] [vp[m]]]]`.
pub(crate) fn loc(f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let lat = coordinate(f, "latitude", [b'N', b'S'], 90)?;
    let long = coordinate(f, "longitude", [b'E', b'W'], 180)?;
    let alt = f.read("altitude", |r| match r.strip_prefix(b"-") {
        Some(neg) => meters(neg, 10_000_000).map(|v| 10_000_000 - v),
        None => meters(r, 4_284_967_295).map(|v| 10_000_000 + v),
    })?;
    let mut prec = [100, 1_000_000, 1000];
    for (i, what) in ["size", "horizontal precision", "vertical precision"]
        .into_iter()
        .enumerate()
    {
        if f.more() {
            prec[i] = f.read(what, |r| meters(r, 9_000_000_000))?;
        }
    }
    let mut w = vec![
        0,
        precision(prec[0]),
        precision(prec[1]),
        precision(prec[2]),
    ];
    w.extend(lat.to_be_bytes());
    w.extend(long.to_be_bytes());
    w.extend((alt as u32).to_be_bytes());
    Ok(w)
}

/// APL: items `[!]1:IPv4/prefix` and `[!]2:IPv6/prefix`, possibly none.
pub(crate) fn apl(f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let mut w = Vec::new();
    while f.more() {
        w.extend(f.read("APL item", apl_item)?);
    }
    Ok(w)
}

fn apl_item(raw: &[u8]) -> Result<Vec<u8>, text::Problem> {
    let (negated, rest) = match raw.strip_prefix(b"!") {
        Some(r) => (true, r),
        None => (false, raw),
    };
    let s = std::str::from_utf8(rest).map_err(|_| "not ASCII")?;
    let (family, rest) = s
        .split_once(':')
        .ok_or("expected [!]FAMILY:ADDRESS/PREFIX")?;
    let (addr, prefix) = rest
        .split_once('/')
        .ok_or("expected /PREFIX after the address")?;
    let (family, octets, max): (u16, Vec<u8>, u64) = match family {
        "1" => (
            1,
            addr.parse::<std::net::Ipv4Addr>()
                .map_err(|_| "bad IPv4 address")?
                .octets()
                .to_vec(),
            32,
        ),
        "2" => (
            2,
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "bad IPv6 address")?
                .octets()
                .to_vec(),
            128,
        ),
        _ => return Err("the address family is 1 (IPv4) or 2 (IPv6)".into()),
    };
    let prefix = text::number(prefix.as_bytes(), max)?;
    let len = octets.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut w = family.to_be_bytes().to_vec();
    w.extend([prefix as u8, len as u8 | if negated { 0x80 } else { 0 }]);
    w.extend(&octets[..len]);
    Ok(w)
}

/// IPSECKEY: precedence, gateway type 0-3, algorithm, gateway (`.`, IPv4, IPv6 or a name),
/// and the public key in base64: none for algorithm 0, optional for others (as Knot DNS).
pub(crate) fn ipseckey(f: &mut Fields<'_, '_>) -> Result<Vec<u8>, ScanError> {
    let mut w = vec![f.num("precedence", 255)? as u8];
    let kind = f.read("gateway type", |r| match r {
        b"0" | b"1" | b"2" | b"3" => Ok(r[0] - b'0'),
        _ => Err("expected 0, 1, 2 or 3".into()),
    })?;
    let alg = f.num("algorithm", 255)? as u8;
    w.extend([kind, alg]);
    match kind {
        0 => f.read("gateway", |r| match r {
            b"." => Ok(()),
            _ => Err("gateway type 0 takes '.'".into()),
        })?,
        1 => w.extend(f.read("gateway", |r| {
            parse::<std::net::Ipv4Addr>(r).map(|a| a.octets().to_vec())
        })?),
        2 => w.extend(f.read("gateway", |r| {
            parse::<std::net::Ipv6Addr>(r).map(|a| a.octets().to_vec())
        })?),
        _ => w.extend(f.name("gateway")?),
    }
    if alg != 0 && f.more() {
        w.extend(f.rest("public key", text::base64)?);
    }
    Ok(w)
}

fn parse<T: std::str::FromStr>(raw: &[u8]) -> Result<T, text::Problem> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "not an address".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_numbers() {
        assert_eq!(decimal(b"12.5", 2, u64::MAX), Ok(1250));
        assert_eq!(decimal(b"12", 3, u64::MAX), Ok(12000));
        assert_eq!(decimal(b"1.", 2, u64::MAX), Ok(100));
        assert!(decimal(b"1.234", 2, u64::MAX).is_err());
        assert!(decimal(b"1.a", 2, u64::MAX).is_err());
        assert_eq!(meters(b"10m", u64::MAX), Ok(1000));
        assert_eq!(precision(100), 0x12);
        assert_eq!(precision(1_000_000), 0x16);
        assert_eq!(precision(150), 0x12);
        assert_eq!(precision(0), 0);
    }

    #[test]
    fn apl_items() {
        assert_eq!(
            apl_item(b"1:192.168.32.0/21").unwrap(),
            [0, 1, 21, 3, 192, 168, 32]
        );
        assert_eq!(apl_item(b"!1:0.0.0.0/0").unwrap(), [0, 1, 0, 0x80]);
        assert!(apl_item(b"1:1.2.3.4/33").is_err());
        assert!(apl_item(b"3:1.2.3.4/3").is_err());
    }
}
