//! Names as configured: presentation format (zone files, TOML) read into the lowercased,
//! uncompressed wire form of [`crate::dns::name`]. Case is folded once, at load time.

// The inverse of `parse_name`, next to it for the callers that read and show names.
pub use crate::dns::name::display_name;

/// Parses a presentation-format name (`www`, `www.example.test.`, `@`, with `\.` and `\DDD`
/// escapes). A name without a trailing dot is relative to `origin` (wire format), as in a
/// zone file. Returns the lowercased wire name or a reason.
pub fn parse_name(text: &str, origin: Option<&[u8]>) -> Result<Vec<u8>, String> {
    if text == "@" {
        return origin
            .map(<[u8]>::to_vec)
            .ok_or_else(|| "'@' needs an origin".to_string());
    }
    if text == "." {
        return Ok(vec![0]);
    }
    if text.is_empty() {
        return Err("empty name".into());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(text.len() + 2);
    let mut label: Vec<u8> = Vec::with_capacity(63);
    let mut i = 0;
    let mut absolute = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'.' => {
                if label.is_empty() {
                    return Err(format!("empty label in '{text}'"));
                }
                push_label(&mut out, &label, text)?;
                label.clear();
                if i + 1 == bytes.len() {
                    absolute = true;
                }
            }
            b'\\' => {
                let rest = &bytes[i + 1..];
                if rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) {
                    let v = (rest[0] - b'0') as u32 * 100
                        + (rest[1] - b'0') as u32 * 10
                        + (rest[2] - b'0') as u32;
                    if v > 255 {
                        return Err(format!("bad escape in '{text}'"));
                    }
                    label.push(v as u8);
                    i += 3;
                } else if let Some(&n) = rest.first() {
                    label.push(n);
                    i += 1;
                } else {
                    return Err(format!("dangling escape in '{text}'"));
                }
            }
            _ => label.push(c),
        }
        i += 1;
    }
    if !label.is_empty() {
        push_label(&mut out, &label, text)?;
    }
    if absolute {
        out.push(0);
    } else {
        let origin = origin.ok_or_else(|| format!("'{text}' is relative: end it with a dot"))?;
        out.extend_from_slice(origin);
    }
    if out.len() > 255 {
        return Err(format!("'{text}' is longer than 255 octets"));
    }
    Ok(out)
}

fn push_label(out: &mut Vec<u8>, label: &[u8], text: &str) -> Result<(), String> {
    if label.len() > 63 {
        return Err(format!("a label of '{text}' is longer than 63 octets"));
    }
    out.push(label.len() as u8);
    out.extend(label.iter().map(u8::to_ascii_lowercase));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::name::{is_within, parent};

    #[test]
    fn names() {
        let origin = parse_name("Example.TEST.", None).unwrap();
        assert_eq!(origin, b"\x07example\x04test\x00");
        assert_eq!(
            parse_name("WWW", Some(&origin)).unwrap(),
            b"\x03www\x07example\x04test\x00"
        );
        assert_eq!(parse_name("@", Some(&origin)).unwrap(), origin);
        assert_eq!(parse_name("a\\.b.", None).unwrap(), b"\x03a.b\x00");
        assert!(parse_name("a..b.", None).is_err());
        assert!(parse_name("www", None).is_err());
        assert_eq!(display_name(&origin), "example.test.");
        assert!(is_within(b"\x01a\x07example\x04test\x00", &origin));
        assert!(!is_within(b"\x08xexample\x04test\x00", &origin));
        assert_eq!(parent(&origin).unwrap(), b"\x04test\x00");
        assert!(is_within(b"\x01a\x00", b"\x00"));
        assert!(is_within(b"\x00", b"\x00"));
        assert!(is_within(&origin, b"\x00"));
        assert!(!is_within(b"\x03x\x01b\x00", b"\x01b\x00"));
    }
}
