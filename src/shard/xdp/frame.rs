//! Ethernet/IPv4/IPv6/UDP for the AF_XDP backend, without copies: [`parse`] finds the DNS
//! message and the client in a received frame, [`reply`] writes the answer's headers
//! (addresses and ports swapped, IPv4 header checksum, UDP checksum over the pseudo-header)
//! in front of an answer already placed at [`header_len`]. Safe code over byte slices; the
//! XDP program (`tools/xdp/gtmd-xdp.c`) only redirects what [`parse`] accepts, and
//! [`parse`] checks every length again.

use crate::tables::gslb::ClientAddr;

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
const UDP: usize = 8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const PROTO_UDP: u8 = 17;
/// Hop limit / TTL of answers.
const TTL: u8 = 64;

/// A query (or any UDP datagram) found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Where the DNS message starts in the frame.
    pub start: usize,
    /// Where it ends.
    pub end: usize,
    /// The client's (the source) address.
    pub client: ClientAddr,
}

/// Headers in front of the DNS message of an answer.
#[inline]
pub const fn header_len(v6: bool) -> usize {
    if v6 {
        ETH + IP6 + UDP
    } else {
        ETH + IP4 + UDP
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The UDP query in `f`, or `None` for anything else (not IPv4/IPv6, not UDP, IPv4
/// options or fragments, IPv6 extension headers, lengths that do not add up).
#[inline]
pub fn parse(f: &[u8]) -> Option<Query> {
    if f.len() < ETH + IP4 + UDP {
        return None;
    }
    let (v6, udp, client) = match be16(f, 12) {
        ETH_P_IP => {
            let ip = &f[ETH..];
            // version 4, IHL 5 (no options), UDP, neither MF nor a fragment offset
            if ip[0] != 0x45 || ip[9] != PROTO_UDP || be16(ip, 6) & 0x3FFF != 0 {
                return None;
            }
            let total = be16(ip, 2) as usize;
            if total < IP4 + UDP || ETH + total > f.len() {
                return None;
            }
            let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
            (false, ETH + IP4, ClientAddr::V4(src))
        }
        ETH_P_IPV6 => {
            if f.len() < ETH + IP6 + UDP {
                return None;
            }
            let ip = &f[ETH..];
            if ip[0] >> 4 != 6 || ip[6] != PROTO_UDP {
                return None;
            }
            let payload = be16(ip, 4) as usize;
            if payload < UDP || ETH + IP6 + payload > f.len() {
                return None;
            }
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let src = ClientAddr::from_v6(u128::from_be_bytes(src));
            (true, ETH + IP6, src)
        }
        _ => return None,
    };
    let len = be16(f, udp + 4) as usize;
    if len < UDP || udp + len > f.len() {
        return None;
    }
    Some(Query {
        v6,
        start: udp + UDP,
        end: udp + len,
        client,
    })
}

/// The client's address and port as the kernel would give them with a datagram (a
/// `sockaddr_in` or `sockaddr_in6` in `sa`, for the query log); returns its length.
#[inline]
pub(super) fn sockaddr(f: &[u8], q: &Query, sa: &mut [u8; 28]) -> usize {
    sa.fill(0);
    let udp = header_len(q.v6) - UDP;
    sa[2..4].copy_from_slice(&f[udp..udp + 2]); // source port, network order
    if q.v6 {
        sa[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        sa[8..24].copy_from_slice(&f[ETH + 8..ETH + 24]);
        28
    } else {
        sa[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sa[4..8].copy_from_slice(&f[ETH + 12..ETH + 16]);
        16
    }
}

/// Writes the headers of the answer to the query `q` (received as `rx`) into `out`, whose
/// `out[header_len(q.v6)..][..dns_len]` already holds the DNS answer; returns the frame's
/// length.
#[inline]
pub(super) fn reply(rx: &[u8], q: &Query, out: &mut [u8], dns_len: usize) -> usize {
    let udp = header_len(q.v6) - UDP;
    let (src, dst) = if q.v6 {
        (&rx[ETH + 24..ETH + 40], &rx[ETH + 8..ETH + 24])
    } else {
        (&rx[ETH + 16..ETH + 20], &rx[ETH + 12..ETH + 16])
    };
    let ends = Ends {
        dst_mac: &rx[6..12],
        src_mac: &rx[0..6],
        src,
        dst,
        // from the query's destination port to its source port
        ports: [&rx[udp + 2..udp + 4], &rx[udp..udp + 2]],
    };
    headers(&ends, out, dns_len)
}

/// Where a frame goes from and to: MACs, IP addresses (4 or 16 octets, both alike) and
/// UDP ports (source, destination), all in network order.
struct Ends<'a> {
    dst_mac: &'a [u8],
    src_mac: &'a [u8],
    src: &'a [u8],
    dst: &'a [u8],
    ports: [&'a [u8]; 2],
}

/// Writes a UDP datagram's Ethernet, IP and UDP headers into `out` in front of the
/// `payload_len` octets already at `out[header_len(v6)..]` (IPv6 when the addresses are
/// 16 octets): IPv4 header checksum, UDP checksum over the pseudo-header. Returns the
/// frame's length.
#[inline]
fn headers(e: &Ends, out: &mut [u8], payload_len: usize) -> usize {
    let v6 = e.src.len() == 16;
    let h = header_len(v6);
    let udp_len = UDP + payload_len;
    out[0..6].copy_from_slice(e.dst_mac);
    out[6..12].copy_from_slice(e.src_mac);
    let ethertype = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    let udp = h - UDP;
    let pseudo = if v6 {
        let ip = &mut out[ETH..ETH + IP6];
        ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        ip[6] = PROTO_UDP;
        ip[7] = TTL;
        ip[8..24].copy_from_slice(e.src);
        ip[24..40].copy_from_slice(e.dst);
        sum(&ip[8..40], PROTO_UDP as u64 + udp_len as u64)
    } else {
        let ip = &mut out[ETH..ETH + IP4];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&((IP4 + udp_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&[0, 0]); // identification: DF is set
        ip[6..8].copy_from_slice(&[0x40, 0]);
        ip[8] = TTL;
        ip[9] = PROTO_UDP;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(e.src);
        ip[16..20].copy_from_slice(e.dst);
        let c = fold(sum(ip, 0));
        ip[10..12].copy_from_slice(&(!c).to_be_bytes());
        sum(&ip[12..20], PROTO_UDP as u64 + udp_len as u64)
    };
    out[udp..udp + 2].copy_from_slice(e.ports[0]);
    out[udp + 2..udp + 4].copy_from_slice(e.ports[1]);
    out[udp + 4..udp + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    out[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    let c = !fold(sum(&out[udp..udp + udp_len], pseudo));
    // 0 means "no checksum" (IPv4) and is not allowed (IPv6): send its other form.
    let c = if c == 0 { 0xFFFF } else { c };
    out[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    h + payload_len
}

/// Builds into `out` the frame of one UDP datagram from `src` to `dst` (same family)
/// carrying `payload`, from MAC `src_mac` to `dst_mac`, with complete IPv4 header and
/// UDP checksums; returns its length, or `None` when the families differ or `out` is too
/// short. For a sender (the AF_XDP load generator).
pub fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    use std::net::SocketAddr::{V4, V6};
    let (s, d) = match (src, dst) {
        (V4(s), V4(d)) => (s.ip().octets().to_vec(), d.ip().octets().to_vec()),
        (V6(s), V6(d)) => (s.ip().octets().to_vec(), d.ip().octets().to_vec()),
        _ => return None,
    };
    let h = header_len(src.is_ipv6());
    if h + payload.len() > out.len() || UDP + payload.len() > u16::MAX as usize - IP4 {
        return None;
    }
    out[h..h + payload.len()].copy_from_slice(payload);
    let ends = Ends {
        dst_mac: &dst_mac,
        src_mac: &src_mac,
        src: &s,
        dst: &d,
        ports: [&src.port().to_be_bytes(), &dst.port().to_be_bytes()],
    };
    Some(headers(&ends, out, payload.len()))
}

/// The UDP source and destination ports of the datagram `q` found in `f` by [`parse`].
#[inline]
pub fn ports(f: &[u8], q: &Query) -> (u16, u16) {
    let udp = q.start - UDP;
    (be16(f, udp), be16(f, udp + 2))
}

/// The one's-complement sum (RFC 1071) of `b` as big-endian 16-bit words plus `acc`,
/// not yet folded.
#[inline]
fn sum(b: &[u8], acc: u64) -> u64 {
    let mut s = acc;
    let mut words = b.chunks_exact(4);
    for w in &mut words {
        s += u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    let rest = words.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        s += be16(rest, i) as u64;
        i += 2;
    }
    if i < rest.len() {
        s += (rest[i] as u64) << 8;
    }
    s
}

/// Folds a sum into 16 bits.
#[inline]
fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query frame: Ethernet, IPv4 or IPv6, UDP from port 40000 to 53, `dns` as payload.
    fn frame(v6: bool, dns: &[u8]) -> Vec<u8> {
        let mut f = vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2];
        let udp_len = (UDP + dns.len()) as u16;
        if v6 {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[PROTO_UDP, 64]);
            f.extend_from_slice(
                &"2001:db8::2"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            f.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
        } else {
            f.extend_from_slice(&ETH_P_IP.to_be_bytes());
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&(udp_len + 20).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_UDP, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
        }
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(dns);
        f
    }

    #[test]
    fn parses_ipv4_and_ipv6_and_refuses_the_rest() {
        let f = frame(false, b"hello");
        let q = parse(&f).unwrap();
        assert_eq!((q.v6, &f[q.start..q.end]), (false, &b"hello"[..]));
        assert_eq!(q.client, ClientAddr::V4(0x0A00_0002));
        let f6 = frame(true, b"hi!");
        let q6 = parse(&f6).unwrap();
        assert_eq!((q6.v6, &f6[q6.start..q6.end]), (true, &b"hi!"[..]));
        // The peer as a sockaddr reads back as the frame's source address.
        let mut sa = [0u8; 28];
        let n = sockaddr(&f, &q, &mut sa);
        assert_eq!(ClientAddr::from_sockaddr(&sa[..n]), Some(q.client));
        assert_eq!(u16::from_be_bytes([sa[2], sa[3]]), 40000);
        let n = sockaddr(&f6, &q6, &mut sa);
        assert_eq!(ClientAddr::from_sockaddr(&sa[..n]), Some(q6.client));
        let mut frag = f.clone();
        frag[ETH + 6] = 0x20; // MF
        assert_eq!(parse(&frag), None);
        let mut tcp = f.clone();
        tcp[ETH + 9] = 6;
        assert_eq!(parse(&tcp), None);
        let mut opts = f.clone();
        opts[ETH] = 0x46;
        assert_eq!(parse(&opts), None);
        assert_eq!(
            parse(&f[..f.len() - 1]),
            None,
            "UDP length beyond the frame"
        );
        assert_eq!(parse(&f[..30]), None);
    }

    /// The kernel's checksum check: the sum over the header (IPv4) and over pseudo-header
    /// plus datagram (UDP) folds to 0xFFFF.
    #[test]
    fn answers_swap_addresses_and_carry_valid_checksums() {
        for v6 in [false, true] {
            for dns in [&b"odd"[..], &b"even"[..], &[0xFF; 300][..]] {
                let rx = frame(v6, b"query");
                let q = parse(&rx).unwrap();
                let mut out = vec![0u8; 2048];
                let h = header_len(v6);
                out[h..h + dns.len()].copy_from_slice(dns);
                let n = reply(&rx, &q, &mut out, dns.len());
                let a = parse(&out[..n]).unwrap();
                assert_eq!(&out[a.start..a.end], dns);
                assert_eq!(&out[0..6], &rx[6..12]);
                assert_eq!(be16(&out, h - 8), 53);
                assert_eq!(be16(&out, h - 6), 40000);
                let udp = &out[h - UDP..n];
                let pseudo = if v6 {
                    assert_eq!(&out[ETH + 8..ETH + 24], &rx[ETH + 24..ETH + 40]);
                    sum(&out[ETH + 8..ETH + 40], 17 + udp.len() as u64)
                } else {
                    assert_eq!(fold(sum(&out[ETH..ETH + IP4], 0)), 0xFFFF);
                    assert_eq!(&out[ETH + 12..ETH + 16], &[10, 0, 0, 1]);
                    sum(&out[ETH + 12..ETH + 20], 17 + udp.len() as u64)
                };
                assert_eq!(fold(sum(udp, 0) + pseudo), 0xFFFF, "v6={v6} {}", dns.len());
            }
        }
    }

    /// A frame built by [`udp`] parses back to its payload and ports, and carries checksums
    /// the kernel accepts; families that differ or a short buffer are refused.
    #[test]
    fn builds_udp_frames_with_valid_checksums() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        for (src, dst) in [
            ("10.0.0.2:40001", "10.0.0.1:53"),
            ("[2001:db8::2]:40001", "[2001:db8::1]:53"),
        ] {
            let (src, dst) = (src.parse().unwrap(), dst.parse().unwrap());
            for payload in [&b"odd"[..], &b"even"[..]] {
                let mut out = [0u8; 128];
                let n = udp(a, b, src, dst, payload, &mut out).unwrap();
                let q = parse(&out[..n]).unwrap();
                assert_eq!(&out[q.start..q.end], payload);
                assert_eq!(ports(&out, &q), (40001, 53));
                assert_eq!((&out[0..6], &out[6..12]), (&b[..], &a[..]));
                let h = header_len(q.v6);
                let pseudo = if q.v6 {
                    sum(&out[ETH + 8..ETH + 40], 17 + (n - h + UDP) as u64)
                } else {
                    assert_eq!(fold(sum(&out[ETH..ETH + IP4], 0)), 0xFFFF);
                    sum(&out[ETH + 12..ETH + 20], 17 + (n - h + UDP) as u64)
                };
                assert_eq!(fold(sum(&out[h - UDP..n], 0) + pseudo), 0xFFFF);
            }
        }
        let v4: std::net::SocketAddr = "10.0.0.2:1".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(udp(a, b, v4, v6, b"x", &mut [0u8; 128]), None);
        assert_eq!(udp(a, b, v4, v4, &[0; 200], &mut [0u8; 128]), None);
    }
}
