//! The server secret of DNS cookies (RFC 9018 4.4) and its text form: what the
//! configuration reads and the snapshot carries. Making and checking cookies is the hot
//! path's (`wire::cookie`).

/// A server secret (RFC 9018 4.4: 16 octets, the SipHash-2-4 key).
pub type Secret = [u8; 16];

/// The secrets a snapshot answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Makes every new server cookie and validates.
    pub current: Secret,
    /// Still validates (the secret before a rollover).
    pub previous: Option<Secret>,
}

/// Parses a secret as 32 hexadecimal digits (Knot's `secret` format; a leading `0x` is
/// allowed).
pub fn parse_secret(text: &str) -> Option<Secret> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut s = [0u8; 16];
    for (i, o) in s.iter_mut().enumerate() {
        *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(s)
}
