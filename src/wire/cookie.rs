//! DNS Cookies (RFC 7873) with the interoperable server cookie of RFC 9018: version 1,
//! three reserved octets, a 32-bit timestamp and SipHash-2-4 over client cookie | version |
//! reserved | timestamp | client address, keyed by a 16-octet secret. A cookie made with
//! the previous secret is still accepted, so secrets can be rolled over by a reload.
//!
//! Only queries that carry a COOKIE option get here (`respond` checks one flag otherwise).

use std::hash::Hasher as _;
use std::sync::OnceLock;

use siphasher::sip::SipHasher24;

pub use crate::dns::cookie::{parse_secret, Secret, Secrets};
use crate::tables::gslb::ClientAddr;

/// Version of the server cookie format (RFC 9018 4.2).
const VERSION: u8 = 1;
/// A server cookie is accepted up to this many seconds after its timestamp (RFC 9018 4.3:
/// "within a 1-hour period in the past").
const MAX_AGE: u32 = 3600;
/// ... and up to this many seconds before it (clock skew between servers of an anycast set).
const MAX_AHEAD: u32 = 300;
/// A valid cookie older than this is replaced by a fresh one (RFC 9018 4.3: "SHOULD generate
/// a new Server Cookie at least if the received Server Cookie from the client is more than
/// half an hour old").
const REFRESH_AGE: u32 = 1800;

/// What a query's server cookie is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ours, fresh enough to echo as it came.
    Valid,
    /// Ours, but more than half an hour old (or made with the previous secret): valid, and
    /// answered with a new one.
    Refresh,
    /// No server cookie, or not ours, or expired: answered with a new one.
    Invalid,
}

/// A random secret per process, for configurations that name no secret file: cookies stay
/// valid across reloads and change at restart.
pub fn process_secret() -> Secret {
    static SECRET: OnceLock<Secret> = OnceLock::new();
    *SECRET.get_or_init(|| {
        let mut s = [0u8; 16];
        crate::sys::fill_random(&mut s).expect("getrandom");
        s
    })
}

/// The 8-octet hash of RFC 9018 4.4 over `client` (8 octets), `head` (version, reserved,
/// timestamp: the first 8 octets of the server cookie) and the client's address.
fn hash(secret: &Secret, client: &[u8], head: &[u8], addr: Option<ClientAddr>) -> [u8; 8] {
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client);
    h.write(head);
    match addr {
        Some(ClientAddr::V4(a)) => h.write(&a.to_be_bytes()),
        Some(ClientAddr::V6(a)) => h.write(&a.to_be_bytes()),
        None => {}
    }
    // SipHash's result is a little-endian word, as the reference implementation writes it.
    h.finish().to_le_bytes()
}

/// A new server cookie for `client` at `now` (seconds since the epoch, mod 2^32).
pub fn make(secret: &Secret, client: &[u8], addr: Option<ClientAddr>, now: u32) -> [u8; 16] {
    let mut sc = [0u8; 16];
    sc[0] = VERSION;
    sc[4..8].copy_from_slice(&now.to_be_bytes());
    let h = hash(secret, client, &sc[..8], addr);
    sc[8..].copy_from_slice(&h);
    sc
}

/// Judges the server cookie `server` (the octets after the client cookie, maybe none) sent
/// with `client` from `addr` at `now`. The hash covers the version, reserved and timestamp
/// octets as received (RFC 9018 A.3: a client may not change them).
pub fn check(
    s: &Secrets,
    client: &[u8],
    server: &[u8],
    addr: Option<ClientAddr>,
    now: u32,
) -> Verdict {
    if server.len() != 16 || server[0] != VERSION {
        return Verdict::Invalid;
    }
    let stamp = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial-number arithmetic (RFC 1982): the timestamp wraps in 2106.
    let age = now.wrapping_sub(stamp);
    let ahead = stamp.wrapping_sub(now);
    if age > MAX_AGE && ahead > MAX_AHEAD {
        return Verdict::Invalid;
    }
    let fresh = age <= REFRESH_AGE || ahead <= MAX_AHEAD;
    let ok = |secret: &Secret| {
        // Not secret-dependent timing worth hiding beyond this: a constant-time compare.
        let h = hash(secret, client, &server[..8], addr);
        h.iter()
            .zip(&server[8..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    };
    if ok(&s.current) {
        if fresh {
            Verdict::Valid
        } else {
            Verdict::Refresh
        }
    } else if s.previous.as_ref().is_some_and(ok) {
        Verdict::Refresh
    } else {
        Verdict::Invalid
    }
}

/// Seconds since the epoch, mod 2^32 (the cookie timestamp).
#[inline]
pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    fn v4(s: &str) -> Option<ClientAddr> {
        Some(ClientAddr::V4(u32::from(
            s.parse::<std::net::Ipv4Addr>().unwrap(),
        )))
    }

    fn secrets(cur: &str, prev: Option<&str>) -> Secrets {
        Secrets {
            current: parse_secret(cur).unwrap(),
            previous: prev.map(|p| parse_secret(p).unwrap()),
        }
    }

    /// RFC 9018 Appendix A: the published vectors.
    #[test]
    fn rfc9018_vectors() {
        let s = secrets("e5e973e5a6b2a43f48e7dc849e37bfcf", None);
        // A.1: a new client learns a server cookie.
        let sc = make(
            &s.current,
            &hex("2464c4abcf10c957"),
            v4("198.51.100.100"),
            1559731985,
        );
        assert_eq!(sc.to_vec(), hex("010000005cf79f111f8130c3eee29480"));
        // A.2: 40 minutes later it comes back: ours, older than half an hour: renewed.
        let v = check(
            &s,
            &hex("2464c4abcf10c957"),
            &sc,
            v4("198.51.100.100"),
            1559734385,
        );
        assert_eq!(v, Verdict::Refresh);
        let sc = make(
            &s.current,
            &hex("2464c4abcf10c957"),
            v4("198.51.100.100"),
            1559734385,
        );
        assert_eq!(sc.to_vec(), hex("010000005cf7a871d4a564a1442aca77"));
        // A.3: reserved octets set by the client are part of the hash.
        let got = hex("01abcdef5cf78f71a314227b6679ebf5");
        let c = hex("fc93fc62807ddb86");
        let at = 0x5cf78f71 + 600;
        assert_eq!(check(&s, &c, &got, v4("203.0.113.203"), at), Verdict::Valid);
        assert_eq!(
            check(&s, &c, &got, v4("203.0.113.204"), at),
            Verdict::Invalid
        );
        let sc = make(&s.current, &c, v4("203.0.113.203"), 1559734700);
        assert_eq!(sc.to_vec(), hex("010000005cf7a9acf73a7810aca2381e"));
        // A.4: an IPv6 client whose cookie the previous secret made.
        let a6 = Some(ClientAddr::V6(u128::from(
            "2001:db8:220:1:59de:d0f4:8769:82b8"
                .parse::<std::net::Ipv6Addr>()
                .unwrap(),
        )));
        let c = hex("22681ab97d52c298");
        let old = hex("010000005cf7c57926556bd0934c72f8");
        let at = 0x5cf7c579 + 60;
        let rolled = secrets(
            "445536bcd2513298075a5d379663c962",
            Some("dd3bdf9344b678b185a6f5cb60fca715"),
        );
        assert_eq!(check(&rolled, &c, &old, a6, at), Verdict::Refresh);
        let new_only = secrets("445536bcd2513298075a5d379663c962", None);
        assert_eq!(check(&new_only, &c, &old, a6, at), Verdict::Invalid);
    }

    #[test]
    fn lifetime() {
        let s = secrets("e5e973e5a6b2a43f48e7dc849e37bfcf", None);
        let c = [7u8; 8];
        let a = v4("192.0.2.1");
        let now = 1_700_000_000u32;
        let at = |t: u32| make(&s.current, &c, a, t);
        assert_eq!(check(&s, &c, &at(now), a, now), Verdict::Valid);
        assert_eq!(check(&s, &c, &at(now - 1800), a, now), Verdict::Valid);
        assert_eq!(check(&s, &c, &at(now - 1801), a, now), Verdict::Refresh);
        assert_eq!(check(&s, &c, &at(now - 3600), a, now), Verdict::Refresh);
        assert_eq!(check(&s, &c, &at(now - 3601), a, now), Verdict::Invalid);
        assert_eq!(check(&s, &c, &at(now + 300), a, now), Verdict::Valid);
        assert_eq!(check(&s, &c, &at(now + 301), a, now), Verdict::Invalid);
        // Across the wrap of the 32-bit timestamp.
        assert_eq!(check(&s, &c, &at(u32::MAX - 100), a, 500), Verdict::Valid);
        // Short, long, or another version: not ours.
        assert_eq!(check(&s, &c, &at(now)[..8], a, now), Verdict::Invalid);
        let mut v2 = at(now);
        v2[0] = 2;
        assert_eq!(check(&s, &c, &v2, a, now), Verdict::Invalid);
    }

    #[test]
    fn secrets_parse() {
        assert!(parse_secret("e5e973e5a6b2a43f48e7dc849e37bfcf\n").is_some());
        assert!(parse_secret("0xe5e973e5a6b2a43f48e7dc849e37bfcf").is_some());
        assert!(parse_secret("e5e973e5a6b2a43f48e7dc849e37bf").is_none());
        assert!(parse_secret("g5e973e5a6b2a43f48e7dc849e37bfcf").is_none());
        assert_ne!(process_secret(), [0; 16]);
        assert_eq!(process_secret(), process_secret());
    }
}
