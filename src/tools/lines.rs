//! The askers a probe or a diff poses as: for every line of a configuration, an EDNS
//! Client Subnet that the server's own line index puts in that line (per address family);
//! the default line (a subnet no line prefix covers); and no ECS at all (the line of the
//! resolver's own address). Worked out from the compiled line index, so a prefix nested in
//! another line's is never sent for the wrong one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::client::Ecs;
use crate::config::gslb::{Gslb, DEFAULT_LINE};
use crate::tables::gslb::{ClientAddr, LineIndex, Range};

/// One asker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The line the configuration puts this asker in (`default`), or `None` for "no ECS"
    /// (the server decides by the resolver's address).
    pub line: Option<String>,
    /// The ECS to send.
    pub ecs: Option<Ecs>,
}

impl Row {
    /// The line's name, or `(no ECS)`.
    pub fn label(&self) -> &str {
        self.line.as_deref().unwrap_or("(no ECS)")
    }
}

/// No configuration: the resolver's own address only.
pub fn no_ecs() -> Row {
    Row {
        line: None,
        ecs: None,
    }
}

/// Every line with prefixes (IPv4 first, then IPv6), the default line in each family that
/// any line uses, and no ECS.
pub fn rows(g: &Gslb, idx: &LineIndex) -> Vec<Row> {
    let mut out = Vec::new();
    let ranges4 = idx.v4_ranges();
    for (li, l) in g.lines.iter().enumerate().skip(1) {
        let v4 = l.v4.iter().map(|&(n, len)| (n as u128, len));
        if let Some(e) = representative(v4, &ranges4, 32, li as u32, idx) {
            out.push(row(&l.name, e));
        }
        if let Some(e) = representative(l.v6.iter().copied(), &idx.v6, 128, li as u32, idx) {
            out.push(row(&l.name, e));
        }
    }
    if g.lines.iter().any(|l| !l.v4.is_empty()) {
        if let Some(e) = default_block(&ranges4, 32, 24, idx) {
            out.push(row(DEFAULT_LINE, e));
        }
    }
    if g.lines.iter().any(|l| !l.v6.is_empty()) {
        if let Some(e) = default_block(&idx.v6, 128, 56, idx) {
            out.push(row(DEFAULT_LINE, e));
        }
    }
    out.push(no_ecs());
    out
}

fn row(line: &str, ecs: Ecs) -> Row {
    Row {
        line: Some(line.to_string()),
        ecs: Some(ecs),
    }
}

fn addr(bits: u32, v: u128) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

fn client(bits: u32, v: u128) -> ClientAddr {
    if bits == 32 {
        ClientAddr::V4(v as u32)
    } else {
        ClientAddr::V6(v)
    }
}

/// The subnet that stands for line `li` in one family: the line's first prefix whose
/// network the index puts in this line, narrowed to the block that decides it (a more
/// specific prefix of another line inside it is left out); else the first range of the
/// line in the index, its largest block (all its prefixes start inside others').
fn representative(
    prefixes: impl Iterator<Item = (u128, u8)>,
    ranges: &[Range],
    bits: u32,
    li: u32,
    idx: &LineIndex,
) -> Option<Ecs> {
    for (net, _) in prefixes {
        let (line, scope) = idx.lookup(client(bits, net));
        if line == li {
            return Some(Ecs {
                addr: addr(bits, net),
                len: scope,
            });
        }
    }
    let r = ranges.iter().find(|r| r.line == li)?;
    block_in(r, bits).map(|(net, len)| Ecs {
        addr: addr(bits, net),
        len,
    })
}

/// The largest aligned block inside range `r`: (network, length).
fn block_in(r: &Range, bits: u32) -> Option<(u128, u8)> {
    (0..=bits).find_map(|len| {
        let host = bits - len;
        let size_m1: u128 = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        let start = if r.start & size_m1 == 0 {
            r.start
        } else {
            (r.start | size_m1).checked_add(1)?
        };
        (start.checked_add(size_m1)? <= r.end).then_some((start, len as u8))
    })
}

/// A subnet of the default line: the largest block no line prefix touches, preferably in
/// global unicast space (1.0.0.0 to 223.255.255.255, 2000::/3: an ECS from 0.0.0.0/8 or a
/// multicast block would look odd to any server), sent with at least `min_len` bits (a /24
/// or /56, what resolvers send; a longer prefix stays inside the block).
fn default_block(ranges: &[Range], bits: u32, min_len: u8, idx: &LineIndex) -> Option<Ecs> {
    let (lo, hi) = if bits == 32 {
        (0x0100_0000, 0xDFFF_FFFF)
    } else {
        (0x2000u128 << 112, (0x4000u128 << 112) - 1)
    };
    let largest = |clip: bool| {
        ranges
            .iter()
            .filter(|r| r.line == 0)
            .filter_map(|r| {
                let r = if clip {
                    Range {
                        start: r.start.max(lo),
                        end: r.end.min(hi),
                        line: 0,
                    }
                } else {
                    *r
                };
                (r.start <= r.end).then(|| block_in(&r, bits)).flatten()
            })
            .min_by_key(|&(_, len)| len)
    };
    let (net, len) = largest(true).or_else(|| largest(false))?;
    let len = len.max(min_len);
    // The lookup agrees by construction; checked so a wrong row is never printed.
    (idx.lookup(client(bits, net)).0 == 0).then(|| Ecs {
        addr: addr(bits, net),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        u32::from(s.parse::<Ipv4Addr>().unwrap()) as u128
    }

    #[test]
    fn nested_prefixes_get_a_block_of_their_own_line() {
        let idx = LineIndex::build(
            &mut [(v4("10.0.0.0"), 8, 1), (v4("10.0.0.0"), 16, 2)],
            &mut [],
        );
        let ranges4 = idx.v4_ranges();
        // Line 1's network 10.0.0.0 belongs to line 2: its first range is 10.1.0.0 to
        // 10.255.255.255, whose largest block is 10.128.0.0/9.
        let e = representative([(v4("10.0.0.0"), 8)].into_iter(), &ranges4, 32, 1, &idx);
        assert_eq!(e.unwrap().to_string(), "10.128.0.0/9");
        let e = representative([(v4("10.0.0.0"), 16)].into_iter(), &ranges4, 32, 2, &idx);
        assert_eq!(e.unwrap().to_string(), "10.0.0.0/16");
        // Default: the largest unicast block outside 10/8 is 64.0.0.0/2 (0.0.0.0/5 and
        // 128.0.0.0/1 reach outside 1.0.0.0-223.255.255.255), sent as a /24.
        let d = default_block(&ranges4, 32, 24, &idx).unwrap();
        assert_eq!(d.to_string(), "64.0.0.0/24");
        assert_eq!(idx.lookup(ClientAddr::V4(v4("64.0.0.0") as u32)), (0, 2));
    }
}
