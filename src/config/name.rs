//! Domain names in the form the compiler and the hot path use: lowercased, uncompressed
//! wire format (`\x03www\x07example\x04test\x00`). Case is folded once, at load time.

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

/// Presentation format of a wire name, for logs and messages.
pub fn display_name(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut i = 0;
    while i < wire.len() {
        let len = wire[i] as usize;
        if len == 0 {
            break;
        }
        for &b in &wire[i + 1..i + 1 + len] {
            if b == b'.' || b == b'\\' {
                s.push('\\');
                s.push(b as char);
            } else if b.is_ascii_graphic() {
                s.push(b as char);
            } else {
                s.push_str(&format!("\\{b:03}"));
            }
        }
        s.push('.');
        i += 1 + len;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Offsets of every label start in a wire name (root excluded).
pub fn label_starts(wire: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < wire.len() && wire[i] != 0 {
        v.push(i);
        i += 1 + wire[i] as usize;
    }
    v
}

/// Whether `name` equals `zone` or lies below it (both lowercased wire names).
/// Every name is within the root zone (`\0`).
pub fn is_within(name: &[u8], zone: &[u8]) -> bool {
    if name.len() < zone.len() || !name.ends_with(zone) {
        return false;
    }
    let cut = name.len() - zone.len();
    // `cut` must fall on a label boundary, the root label's included.
    let mut i = 0;
    while i < cut {
        i += 1 + name[i] as usize;
    }
    i == cut
}

/// The parent of a wire name (None for the root).
pub fn parent(name: &[u8]) -> Option<&[u8]> {
    if name.first().copied().unwrap_or(0) == 0 {
        None
    } else {
        Some(&name[1 + name[0] as usize..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
