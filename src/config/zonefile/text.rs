//! Decoding single tokens as Knot DNS's zone scanner reads them: character-strings (quoted
//! or not, `\X` and `\DDD` escapes), domain names (`@`, relative to the origin), numbers,
//! TTLs with units, hexadecimal, base64 and base32hex. Each returns the decoded value or the
//! problem in a few words; the caller adds which field and which token.

/// How a decoding step failed: a short phrase, e.g. "empty label".
pub(crate) type Problem = String;

/// Reads one escape after a backslash at `raw[i]`: the octet and the index after it.
/// `\DDD` is a decimal octet (at most 255); `\X` is X itself, printable ASCII only.
fn escape(raw: &[u8], i: usize) -> Result<(u8, usize), Problem> {
    match raw.get(i + 1) {
        Some(d) if d.is_ascii_digit() => {
            let digits = raw
                .get(i + 1..i + 4)
                .filter(|s| s.iter().all(u8::is_ascii_digit));
            let Some(digits) = digits else {
                return Err("a decimal escape needs three digits (\\DDD)".into());
            };
            let v = digits
                .iter()
                .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
            u8::try_from(v)
                .map(|b| (b, i + 4))
                .map_err(|_| format!("escape \\{v} is above 255"))
        }
        Some(&c) if (32..=126).contains(&c) => Ok((c, i + 2)),
        Some(_) => Err("only printable ASCII may follow '\\' (else use \\DDD)".into()),
        None => Err("'\\' at the end".into()),
    }
}

/// A character-string (RFC 1035 5.1): `"quoted"` (blanks and `;` inside) or unquoted; no
/// length limit here. Non-ASCII octets must be written as `\DDD` (as Knot DNS requires).
pub(crate) fn text(raw: &[u8]) -> Result<Vec<u8>, Problem> {
    let quoted = raw.first() == Some(&b'"');
    let body = if quoted {
        match raw.len() {
            n if n >= 2 && raw[n - 1] == b'"' && !ends_in_escape(&raw[1..n - 1]) => &raw[1..n - 1],
            _ => return Err("the closing '\"' must end the string".into()),
        }
    } else {
        raw
    };
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' => {
                let (b, next) = escape(body, i)?;
                out.push(b);
                i = next;
            }
            b'"' if quoted => return Err("'\"' inside a quoted string: write \\\"".into()),
            b'"' => return Err("'\"' inside a string: quote the whole string".into()),
            b' ' | b'\t' | b'\n' | b';' if quoted => {
                out.push(body[i]);
                i += 1;
            }
            c @ 33..=126 => {
                out.push(c);
                i += 1;
            }
            c if c >= 0x80 => return Err("non-ASCII octet (write it as \\DDD)".into()),
            _ => return Err("control character (write it as \\DDD)".into()),
        }
    }
    Ok(out)
}

/// Whether `s` ends in an unescaped backslash (so a following quote is escaped).
fn ends_in_escape(s: &[u8]) -> bool {
    s.iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 1
}

/// One character-string of at most 255 octets.
pub(crate) fn charstr(raw: &[u8]) -> Result<Vec<u8>, Problem> {
    let v = text(raw)?;
    if v.len() > 255 {
        return Err(format!(
            "{} octets, a character-string holds at most 255: split it into several \"...\" strings",
            v.len()
        ));
    }
    Ok(v)
}

/// A domain name in wire form, case kept. `@` is the origin; a name without a trailing dot
/// is relative to it. Labels are letters, digits, `*`, `-`, `_`, `/` or escapes (Knot DNS's
/// rule; write anything else as `\X` or `\DDD`).
pub(crate) fn name(raw: &[u8], origin: &[u8]) -> Result<Vec<u8>, Problem> {
    match raw {
        b"@" => return Ok(origin.to_vec()),
        b"." => return Ok(vec![0]),
        [b'"', ..] => return Err("a name cannot be quoted".into()),
        _ => {}
    }
    let mut out = Vec::with_capacity(raw.len() + origin.len() + 1);
    let mut i = 0;
    loop {
        let start = out.len();
        out.push(0);
        while i < raw.len() && raw[i] != b'.' {
            let c = raw[i];
            if c == b'\\' {
                let (b, next) = escape_in_name(raw, i)?;
                out.push(b);
                i = next;
            } else if c.is_ascii_alphanumeric() || matches!(c, b'*' | b'-' | b'_' | b'/') {
                out.push(c);
                i += 1;
            } else {
                return Err(format!("'{}' in a name: escape it as \\DDD", show_octet(c)));
            }
        }
        let len = out.len() - start - 1;
        match len {
            0 => return Err("empty label".into()),
            64.. => return Err(format!("label of {len} octets (at most 63)")),
            _ => out[start] = len as u8,
        }
        if i == raw.len() {
            out.extend_from_slice(origin);
            break;
        }
        i += 1; // the dot
        if i == raw.len() {
            out.push(0);
            break;
        }
    }
    if out.len() > 255 {
        return Err(format!("{} octets long (at most 255)", out.len()));
    }
    Ok(out)
}

/// An escape in a name: as in text, but any octet may follow a backslash (Knot DNS).
fn escape_in_name(raw: &[u8], i: usize) -> Result<(u8, usize), Problem> {
    match raw.get(i + 1) {
        Some(d) if d.is_ascii_digit() => escape(raw, i),
        Some(&c) => Ok((c, i + 2)),
        None => Err("'\\' at the end".into()),
    }
}

fn show_octet(c: u8) -> String {
    if c.is_ascii_graphic() {
        (c as char).to_string()
    } else {
        format!("\\{c:03}")
    }
}

/// An unsigned decimal number of at most `max`.
pub(crate) fn number(raw: &[u8], max: u64) -> Result<u64, Problem> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return Err("not a number".into());
    }
    let mut v: u64 = 0;
    for d in raw {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| format!("above {max}"))?;
    }
    if v > max {
        return Err(format!("above {max}"));
    }
    Ok(v)
}

/// A time in seconds: a number, or number-unit blocks (`1w2d3h4m5s`, units s m h d w in
/// either case, as in BIND and Knot DNS), at most 4294967295.
pub(crate) fn time(raw: &[u8]) -> Result<u32, Problem> {
    let split = raw
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(raw.len());
    let first = number(&raw[..split], u64::from(u32::MAX))?;
    if split == raw.len() {
        return Ok(first as u32);
    }
    let mut total: u64 = 0;
    let mut rest = raw;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits == rest.len() {
            return Err("each number needs a unit (s, m, h, d or w)".into());
        }
        let n = number(&rest[..digits], u64::from(u32::MAX))?;
        let unit = match rest[digits].to_ascii_lowercase() {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86400,
            b'w' => 604800,
            _ => return Err("units are s, m, h, d and w".into()),
        };
        total += n * unit;
        if total > u64::from(u32::MAX) {
            return Err("above 4294967295 seconds".into());
        }
        rest = &rest[digits + 1..];
    }
    Ok(total as u32)
}

/// Hexadecimal digits, an even number of them.
pub(crate) fn hex(raw: &[u8]) -> Result<Vec<u8>, Problem> {
    if !raw.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    raw.chunks(2)
        .map(|p| {
            let h = |c: u8| (c as char).to_digit(16).ok_or("not a hex digit");
            Ok((h(p[0])? * 16 + h(p[1])?) as u8)
        })
        .collect::<Result<_, &str>>()
        .map_err(Into::into)
}

/// Base64 (RFC 4648) in whole quartets, padding allowed at the end of each quartet.
pub(crate) fn base64(raw: &[u8]) -> Result<Vec<u8>, Problem> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    if !raw.len().is_multiple_of(4) {
        return Err("base64 comes in groups of 4 characters".into());
    }
    let mut out = Vec::with_capacity(raw.len() / 4 * 3);
    for q in raw.chunks(4) {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return Err("bad base64 padding".into());
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c).ok_or("not a base64 character")?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}

/// Base32hex (RFC 4648, digits 0-9 A-V in either case), whole 8-character groups.
pub(crate) fn base32hex(raw: &[u8]) -> Result<Vec<u8>, Problem> {
    if !raw.len().is_multiple_of(8) {
        return Err("base32hex comes in groups of 8 characters".into());
    }
    let mut out = Vec::with_capacity(raw.len() / 8 * 5);
    for g in raw.chunks(8) {
        let pad = g.iter().rev().take_while(|&&c| c == b'=').count();
        let keep = match pad {
            0 => 5,
            1 => 4,
            3 => 3,
            4 => 2,
            6 => 1,
            _ => return Err("bad base32hex padding".into()),
        };
        let mut n = 0u64;
        for &c in &g[..8 - pad] {
            let v = (c as char)
                .to_digit(32)
                .ok_or("not a base32hex character")?;
            n = n << 5 | u64::from(v);
        }
        n <<= 5 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[3..3 + keep]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: &[u8] = b"\x01z\x04test\x00";

    #[test]
    fn texts() {
        assert_eq!(text(b"abc").unwrap(), b"abc");
        assert_eq!(text(b"\"a b;c\"").unwrap(), b"a b;c");
        assert_eq!(text(b"\"\"").unwrap(), b"");
        assert_eq!(text(b"a\\\"b\\\\\\065\\255").unwrap(), b"a\"b\\A\xff");
        assert_eq!(text(b"\"x\\\"\"").unwrap(), b"x\"");
        assert!(text(b"\"x\\\"").is_err());
        assert!(text(b"a\"b\"").is_err());
        assert!(text(b"\"a\"b").is_err());
        assert!(text(b"\\256").is_err());
        assert!(text(b"\\12").is_err());
        assert!(text("é".as_bytes()).is_err());
        assert!(text(b"\"a\\\tb\"").is_err());
        assert!(charstr(&[b'x'; 256]).is_err());
        assert_eq!(charstr(&[b'x'; 255]).unwrap().len(), 255);
    }

    #[test]
    fn names() {
        assert_eq!(name(b"@", O).unwrap(), O);
        assert_eq!(name(b".", O).unwrap(), b"\x00");
        assert_eq!(name(b"Www", O).unwrap(), b"\x03Www\x01z\x04test\x00");
        assert_eq!(name(b"a.b.", O).unwrap(), b"\x01a\x01b\x00");
        assert_eq!(name(b"a\\.b\\032.", O).unwrap(), b"\x04a.b \x00");
        assert_eq!(
            name(b"*._tcp", O).unwrap(),
            b"\x01*\x04_tcp\x01z\x04test\x00"
        );
        for bad in [
            &b"a..b"[..],
            b".a",
            b"a+b",
            b"@.",
            b"\"a\"",
            b"a\\256",
            b"a@",
        ] {
            assert!(name(bad, O).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(name(&[b'a'; 64], O).is_err());
        assert!(name(&[b'a'; 63], O).is_ok());
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(number(b"65535", 65535).unwrap(), 65535);
        assert!(number(b"65536", 65535).is_err());
        assert!(number(b"-1", 9).is_err());
        assert!(number(b"99999999999999999999999", 9).is_err());
        assert_eq!(time(b"3600").unwrap(), 3600);
        assert_eq!(time(b"1d").unwrap(), 86400);
        assert_eq!(
            time(b"1W2d3H4m5S").unwrap(),
            604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5
        );
        assert_eq!(time(b"4294967295").unwrap(), u32::MAX);
        for bad in [&b"1h2"[..], b"h", b"1x", b"", b"4294967296", b"8000w"] {
            assert!(time(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(hex(b"00fF").unwrap(), [0, 255]);
        assert!(hex(b"0").is_err());
        assert!(hex(b"0g").is_err());
        assert_eq!(base64(b"AQID").unwrap(), [1, 2, 3]);
        assert_eq!(base64(b"AQ==").unwrap(), [1]);
        assert_eq!(base64(b"AQI=").unwrap(), [1, 2]);
        assert!(base64(b"AQI").is_err());
        assert!(base64(b"A===").is_err());
        assert!(base64(b"AQ!D").is_err());
        assert_eq!(base32hex(b"0400000=").unwrap(), [1, 0, 0, 0]);
        assert_eq!(base32hex(b"vvvvvvvv").unwrap(), [255; 5]);
        assert!(base32hex(b"vvvvvvv").is_err());
        assert!(base32hex(b"wvvvvvvv").is_err());
    }
}
