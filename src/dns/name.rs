//! Domain names in the form the compiler and the hot path use: lowercased, uncompressed
//! wire format (`\x03www\x07example\x04test\x00`). Case is folded once, at load time
//! (`config::name` reads the presentation format).

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
