//! Record data in wire form: the layout of each known type (so `\#` data of a known type is
//! checked, RFC 3597 5), the names in it lowercased where Knot DNS does (RFC 4034 6.2 types),
//! and the split into the [`Rdata`] forms the answer compiler takes.

use crate::config::zone::{Rdata, Soa};

/// One part of a type's wire layout.
#[derive(Clone, Copy)]
enum Part {
    /// So many octets.
    Fixed(usize),
    /// An uncompressed domain name.
    Name,
    /// A character-string (length octet and data).
    Str,
    /// A character-string of at least one octet.
    NonEmptyStr,
    /// One or more character-strings to the end.
    Strs,
    /// Any octets to the end.
    Rest,
    /// At least one octet, to the end.
    NonEmptyRest,
    /// An NSEC type bitmap (RFC 4034 4.1.2), possibly empty.
    Bitmap,
    /// APL items (RFC 3123 4).
    Apl,
    /// IPSECKEY from the gateway type on (RFC 4025 2).
    Ipseckey,
    /// SVCB parameters, keys ascending (RFC 9460 2.2).
    SvcParams,
}

use Part::*;

/// The wire layout of the types gtmd knows; `None`: any data.
fn layout(t: u16) -> Option<&'static [Part]> {
    Some(match t {
        1 => &[Fixed(4)],
        2..=5 | 7..=9 | 12 | 39 => &[Name],
        6 => &[Name, Name, Fixed(20)],
        13 => &[Str, Str],
        14 | 17 => &[Name, Name],
        15 | 18 | 21 | 36 | 107 => &[Fixed(2), Name],
        16 | 99 => &[Strs],
        24 | 46 => &[Fixed(18), Name, NonEmptyRest],
        25 | 48 | 60 => &[Fixed(4), NonEmptyRest],
        26 => &[Fixed(2), Name, Name],
        28 => &[Fixed(16)],
        29 => &[Fixed(16)],
        30 => &[Name, Rest],
        33 => &[Fixed(6), Name],
        35 => &[Fixed(4), Str, Str, Str, Name],
        37 => &[Fixed(5), NonEmptyRest],
        42 => &[Apl],
        43 | 59 => &[Fixed(4), NonEmptyRest],
        44 => &[Fixed(2), NonEmptyRest],
        45 => &[Fixed(1), Ipseckey],
        47 => &[Name, Bitmap],
        49 | 61 => &[NonEmptyRest],
        50 => &[Fixed(4), Str, NonEmptyStr, Bitmap],
        51 => &[Fixed(4), Str],
        52 | 53 => &[Fixed(3), NonEmptyRest],
        62 => &[Fixed(6), Bitmap],
        63 => &[Fixed(6), NonEmptyRest],
        64 | 65 => &[Fixed(2), Name, SvcParams],
        104 | 106 => &[Fixed(10)],
        105 | 108 => &[Fixed(6)],
        109 => &[Fixed(8)],
        256 => &[Fixed(4), Rest],
        257 => &[Fixed(1), NonEmptyStr, Rest],
        _ => return None,
    })
}

/// Types whose names Knot DNS lowercases when it loads a zone (RFC 4034 6.2 less NSEC and
/// the types RFC 6840 5.1 dropped); the others keep the case as written.
fn lowercased(t: u16) -> bool {
    matches!(
        t,
        2..=9 | 12 | 14 | 15 | 17 | 18 | 21 | 24 | 26 | 30 | 33 | 35 | 36 | 39 | 46
    )
}

/// Checks `wire` against the layout of type `t`; returns the offsets of the names in it.
pub(crate) fn check(t: u16, wire: &[u8]) -> Result<Vec<usize>, String> {
    let mut names = Vec::new();
    let Some(parts) = layout(t) else {
        return Ok(names);
    };
    let mut pos = 0;
    for &part in parts {
        pos = step(part, wire, pos, &mut names)
            .ok_or_else(|| format!("{} octets are not valid data for this type", wire.len()))?;
    }
    if pos != wire.len() {
        return Err(format!(
            "{} octets of data, but the type's fields end after {pos}",
            wire.len()
        ));
    }
    Ok(names)
}

/// Reads one part at `pos`; the position after it, or `None` when the data does not fit.
fn step(part: Part, w: &[u8], pos: usize, names: &mut Vec<usize>) -> Option<usize> {
    let end = w.len();
    match part {
        Fixed(n) => (pos + n <= end).then_some(pos + n),
        Name => {
            names.push(pos);
            name_end(w, pos)
        }
        Str => str_end(w, pos),
        NonEmptyStr => (*w.get(pos)? > 0).then(|| str_end(w, pos)).flatten(),
        Strs => {
            let mut p = str_end(w, pos)?;
            while p < end {
                p = str_end(w, p)?;
            }
            Some(p)
        }
        Rest => Some(end),
        NonEmptyRest => (pos < end).then_some(end),
        Bitmap => bitmap_end(w, pos),
        Apl => apl_end(w, pos),
        Ipseckey => ipseckey_end(w, pos),
        SvcParams => params_end(w, pos),
    }
}

/// The end of an uncompressed name at `pos`.
pub(crate) fn name_end(w: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *w.get(pos)? as usize;
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - start > 255 || pos > w.len() {
            return None;
        }
        if len == 0 {
            return Some(pos);
        }
    }
}

fn str_end(w: &[u8], pos: usize) -> Option<usize> {
    let end = pos + 1 + *w.get(pos)? as usize;
    (end <= w.len()).then_some(end)
}

/// Windows of 1..=32 octets, window numbers ascending.
fn bitmap_end(w: &[u8], mut pos: usize) -> Option<usize> {
    let mut last: Option<u8> = None;
    while pos < w.len() {
        let (win, len) = (*w.get(pos)?, *w.get(pos + 1)? as usize);
        if !(1..=32).contains(&len) || last.is_some_and(|l| l >= win) {
            return None;
        }
        last = Some(win);
        pos += 2 + len;
    }
    (pos == w.len()).then_some(pos)
}

/// Items of family, prefix, N|length, address octets (at most 16).
fn apl_end(w: &[u8], mut pos: usize) -> Option<usize> {
    while pos < w.len() {
        let len = (*w.get(pos + 3)? & 0x7f) as usize;
        if len > 16 {
            return None;
        }
        pos += 4 + len;
    }
    (pos == w.len()).then_some(pos)
}

/// Gateway type, algorithm, gateway (none, IPv4, IPv6, name), public key.
/// (IPSECKEY is not an RFC 4034 6.2 type: its gateway name keeps its case.)
fn ipseckey_end(w: &[u8], pos: usize) -> Option<usize> {
    let gw = pos + 2;
    let after = match *w.get(pos)? {
        0 => gw,
        1 => gw + 4,
        2 => gw + 16,
        3 => name_end(w, gw)?,
        _ => return None,
    };
    (after <= w.len() && pos + 2 <= w.len()).then_some(w.len())
}

/// Key, length, value; keys strictly ascending (RFC 9460 2.2).
fn params_end(w: &[u8], mut pos: usize) -> Option<usize> {
    let mut last: Option<u16> = None;
    while pos < w.len() {
        let key = u16::from_be_bytes([*w.get(pos)?, *w.get(pos + 1)?]);
        let len = u16::from_be_bytes([*w.get(pos + 2)?, *w.get(pos + 3)?]) as usize;
        if last.is_some_and(|l| l >= key) {
            return None;
        }
        last = Some(key);
        pos += 4 + len;
    }
    (pos == w.len()).then_some(pos)
}

/// Checks `wire` for type `t`, lowercases its names where Knot DNS does, and splits it
/// into the form the compiler takes.
pub(crate) fn finish(t: u16, mut wire: Vec<u8>) -> Result<Rdata, String> {
    let names = check(t, &wire)?;
    if lowercased(t) {
        for &at in &names {
            lowercase_name(&mut wire, at);
        }
    }
    let name_at = |i: usize| {
        let at = names[i];
        wire[at..name_end(&wire, at).expect("checked")].to_vec()
    };
    Ok(match t {
        2 | 5 | 12 => Rdata::Name(wire),
        15 => Rdata::Mx(u16::from_be_bytes([wire[0], wire[1]]), name_at(0)),
        6 => {
            let (mname, rname) = (name_at(0), name_at(1));
            let at = mname.len() + rname.len();
            let times: [u32; 5] = std::array::from_fn(|i| {
                let b = &wire[at + 4 * i..at + 4 * i + 4];
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            });
            Rdata::Soa(Soa {
                mname,
                rname,
                times,
            })
        }
        _ => Rdata::Opaque(wire),
    })
}

fn lowercase_name(w: &mut [u8], mut pos: usize) {
    while w[pos] != 0 {
        let len = w[pos] as usize;
        w[pos + 1..pos + 1 + len].make_ascii_lowercase();
        pos += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert!(check(1, &[1, 2, 3, 4]).is_ok());
        assert!(check(1, &[1, 2, 3]).is_err());
        assert!(check(1, &[]).is_err());
        assert!(check(16, &[1, 2, 3]).is_err());
        assert!(check(16, &[1, 2, 0]).is_ok());
        assert!(check(5, &[1, 2, 3]).is_err());
        assert!(check(5, &[0xc0, 0x0c]).is_err());
        assert!(check(15, &[0, 10, 0]).is_ok());
        assert!(check(47, &[0, 0, 1, 0x40]).is_ok());
        assert!(check(47, &[0, 0, 0]).is_err());
        assert!(check(64, &[0, 1, 0, 0, 1, 0, 0, 0, 0, 0]).is_err());
        assert!(check(65280, &[]).is_ok());
        assert!(check(42, &[]).is_ok());
        assert!(check(45, &[10, 1, 2, 1, 2, 3, 4]).is_ok());
        assert!(check(45, &[10, 1, 2, 1, 2, 3]).is_err());
    }

    #[test]
    fn finishing() {
        let mx = finish(15, b"\x00\x0a\x04MAIL\x01Z\x00".to_vec()).unwrap();
        assert_eq!(mx, Rdata::Mx(10, b"\x04mail\x01z\x00".to_vec()));
        let svcb = finish(64, b"\x00\x00\x01X\x00".to_vec()).unwrap();
        assert_eq!(svcb, Rdata::Opaque(b"\x00\x00\x01X\x00".to_vec()));
        let soa = b"\x01a\x00\x01B\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x05";
        let Rdata::Soa(s) = finish(6, soa.to_vec()).unwrap() else {
            panic!()
        };
        assert_eq!(s.rname, b"\x01b\x00");
        assert_eq!(s.times, [1, 2, 3, 4, 5]);
    }
}
