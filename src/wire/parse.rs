//! Query parsing, in place: reads the received packet without copying it, except for the
//! lowercased question name the table lookup needs (kept on the stack).
//!
//! Every check here is one row of `DNS-CHECKLIST.md`: QR set or short packets are dropped,
//! a malformed question or additional section is FORMERR, EDNS and ECS are validated per
//! RFC 6891 and RFC 7871. Names are parsed loop-safe: compression pointers may only point
//! backwards, labels are at most 63 octets and names at most 255.

use crate::dns::{rtype, HEADER_LEN, OPT_COOKIE, OPT_ECS, OPT_NSID};

/// [`Edns::opts`]: the query asked for the NSID.
pub const HAS_NSID: u8 = 1;
/// [`Edns::opts`]: the query carried a well-formed COOKIE option (in [`Query::cookie`]).
pub const HAS_COOKIE: u8 = 2;

/// Why a packet is not answered normally. Tiny and `Copy`: no allocation on the hot path.
/// Every variant but `Drop` is answered with an OPT when `Query::edns` is set (the query's
/// OPT was well formed: RFC 6891 section 7), and without one otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Drop without reply (QR set, shorter than a header).
    Drop,
    /// Reply FORMERR; `question` says whether the question parsed and can be echoed.
    FormErr {
        /// The question section parsed and is echoed.
        question: bool,
    },
    /// Opcode other than QUERY.
    NotImp,
    /// A TSIG-signed query: no keys are configured, so NOTAUTH with TSIG error BADKEY
    /// (RFC 8945 section 5.2), the TSIG at `Query::tsig`.
    BadKey,
}

/// Where the TSIG record of a query lies (RFC 8945): offsets into the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsigAt {
    /// Start of the record (its owner, the key name).
    pub owner: u16,
    /// Start of its RDATA.
    pub rdata: u16,
    /// RDATA length.
    pub rdlen: u16,
}

/// EDNS Client Subnet option as received (RFC 7871 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    /// Source prefix length.
    pub source: u8,
    /// Address octets as received (only the first `addr_len` are meaningful).
    pub addr: [u8; 16],
    /// Number of address octets received.
    pub addr_len: u8,
}

/// The OPT record of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size, already raised to 512 when smaller.
    pub payload: u16,
    /// EDNS version; above 0 the reply is BADVERS.
    pub version: u8,
    /// DNSSEC OK bit, copied to the reply (RFC 3225).
    pub dnssec_ok: bool,
    /// Client subnet, when sent and valid.
    pub ecs: Option<Ecs>,
    /// Options that cost only when a query carries them: [`HAS_NSID`], [`HAS_COOKIE`].
    pub opts: u8,
    /// Octets our OPT carries for them (set by `respond`; 0 until then).
    pub extra: u16,
}

/// The COOKIE option of a query (RFC 7873), and the one we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    /// The option as received: client cookie (8) and server cookie (0 or 8..=32); after
    /// `respond`, the client cookie and our server cookie (24 octets).
    pub data: [u8; 40],
    /// Octets in `data`: 8 or 16..=40 as received, 24 once answered.
    pub len: u8,
    /// The query's server cookie was ours and fresh (RRL exempts the client, as Knot).
    pub valid: bool,
}

/// A parsed query. The question name is kept lowercased for lookup; the original bytes
/// (for case-preserving echo) stay in the packet at `HEADER_LEN..question_end`.
pub struct Query {
    /// Message ID.
    pub id: u16,
    /// Second header word of the query (opcode, RD, CD are read from it).
    pub flags: u16,
    /// Lowercased wire-format question name.
    pub qname: [u8; 255],
    /// Length of `qname` in octets (including the root label).
    pub qname_len: u8,
    /// Offsets of each label start in `qname`, root label excluded.
    pub label_offsets: [u8; 128],
    /// Number of labels, root excluded.
    pub labels: u8,
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
    /// Offset just past the question section in the packet.
    pub question_end: usize,
    /// The OPT record, when present.
    pub edns: Option<Edns>,
    /// The TSIG record, when the query carries one.
    pub tsig: Option<TsigAt>,
    /// The COOKIE option; meaningful only when `edns` has [`HAS_COOKIE`].
    pub cookie: Cookie,
}

impl Query {
    /// An empty query value, to be filled by [`parse`]; kept per shard to avoid re-zeroing.
    pub const fn new() -> Self {
        Self {
            id: 0,
            flags: 0,
            qname: [0; 255],
            qname_len: 0,
            label_offsets: [0; 128],
            labels: 0,
            qtype: 0,
            qclass: 0,
            question_end: 0,
            edns: None,
            tsig: None,
            cookie: Cookie {
                data: [0; 40],
                len: 0,
                valid: false,
            },
        }
    }

    /// The lowercased question name in wire format.
    #[inline]
    pub fn name(&self) -> &[u8] {
        &self.qname[..self.qname_len as usize]
    }

    /// The opcode of the query.
    #[inline]
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }
}

impl Default for Query {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// Parses a packet into `q`. On success the question and EDNS are valid.
///
/// Errors follow `DNS-CHECKLIST.md`: rows 1/2 drop, 4 NOTIMP, 5/10/14/15 FORMERR, 23 BADKEY.
/// Every record is parsed before any semantic check, so an error reply knows whether the
/// query's OPT was well formed (then it carries one, RFC 6891 section 7).
pub fn parse(pkt: &[u8], q: &mut Query) -> Result<(), Reject> {
    if pkt.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    q.id = be16(pkt, 0);
    q.flags = be16(pkt, 2);
    q.edns = None;
    q.tsig = None;
    q.qname_len = 0;
    // What the counters file a query under when its question does not parse: "other".
    q.qtype = 0;
    q.question_end = HEADER_LEN;
    if q.flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let qdcount = be16(pkt, 4);
    if qdcount != 1 {
        if q.opcode() != 0 {
            return Err(Reject::NotImp);
        }
        return Err(Reject::FormErr { question: false });
    }
    let end = parse_question(pkt, q).ok_or(Reject::FormErr { question: false })?;
    q.question_end = end;
    if pkt[6..12] == [0; 6] {
        // No records after the question: the common plain query.
        return if q.opcode() != 0 {
            Err(Reject::NotImp)
        } else {
            Ok(())
        };
    }
    let formerr = Reject::FormErr { question: true };
    let found = match records(pkt, end, q) {
        Some(f) if !f.broken => f,
        _ => {
            // Unparseable, two OPTs, a misplaced or second TSIG: no OPT in the reply.
            q.edns = None;
            q.tsig = None;
            return Err(formerr);
        }
    };
    if q.opcode() != 0 {
        return Err(Reject::NotImp);
    }
    if found.bad_opt || found.stray {
        return Err(formerr);
    }
    if q.tsig.is_some() {
        return Err(Reject::BadKey);
    }
    Ok(())
}

/// What the record sections of a query held, beyond the OPT and TSIG stored in the query.
struct Found {
    /// Two OPTs, an OPT not owned by the root, a TSIG not last or twice.
    broken: bool,
    /// Records in the answer or authority section (other than the SOA an IXFR carries).
    stray: bool,
    /// An ECS option that breaks RFC 7871 section 7.1, or a COOKIE option of a length
    /// RFC 7873 5.2.2 makes FORMERR.
    bad_opt: bool,
}

/// Parses every record after the question; `None` when one does not parse.
fn records(pkt: &[u8], mut pos: usize, q: &mut Query) -> Option<Found> {
    let ancount = be16(pkt, 6) as usize;
    let nscount = be16(pkt, 8) as usize;
    let arcount = be16(pkt, 10) as usize;
    let mut f = Found {
        broken: false,
        stray: false,
        bad_opt: false,
    };
    for i in 0..ancount + nscount {
        let (rtype, next) = skip_record(pkt, pos)?;
        // RFC 1995 3: an IXFR query carries the client's SOA in authority.
        let ixfr_soa = q.qtype == rtype::IXFR && rtype == rtype::SOA && ancount == 0;
        f.stray |= i < ancount || !ixfr_soa || nscount != 1;
        pos = next;
    }
    for i in 0..arcount {
        pos = parse_additional(pkt, pos, i + 1 == arcount, q, &mut f)?;
    }
    Some(f)
}

/// Skips one record; returns its type and the offset after it.
fn skip_record(pkt: &[u8], pos: usize) -> Option<(u16, usize)> {
    let pos = skip_name_here(pkt, pos)?;
    let fixed = pkt.get(pos..pos + 10)?;
    let end = pos + 10 + be16(fixed, 8) as usize;
    if end > pkt.len() {
        return None;
    }
    Some((be16(fixed, 0), end))
}

/// Parses the question: an uncompressed name (a pointer here could only point into the
/// header), type and class. Fills the lowercased name and label offsets.
fn parse_question(pkt: &[u8], q: &mut Query) -> Option<usize> {
    let mut pos = HEADER_LEN;
    let mut out = 0usize;
    let mut labels = 0usize;
    loop {
        let len = *pkt.get(pos)? as usize;
        if len == 0 {
            q.qname[out] = 0;
            out += 1;
            pos += 1;
            break;
        }
        if len > 63 {
            return None; // compression pointer or reserved label type in a question
        }
        if out + 1 + len + 1 > 255 || labels >= 127 {
            return None;
        }
        let label = pkt.get(pos + 1..pos + 1 + len)?;
        q.label_offsets[labels] = out as u8;
        labels += 1;
        q.qname[out] = len as u8;
        for (d, s) in q.qname[out + 1..out + 1 + len].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        out += 1 + len;
        pos += 1 + len;
    }
    let tail = pkt.get(pos..pos + 4)?;
    q.qname_len = out as u8;
    q.labels = labels as u8;
    q.qtype = be16(tail, 0);
    q.qclass = be16(tail, 2);
    Some(pos + 4)
}

/// Skips a possibly compressed name starting at `pos`, validating that every pointer
/// points strictly before the name's own start (so no loop is possible), label lengths
/// and total length. Returns the offset after the name in the record and the length of
/// the name's labels (0: the root).
pub(crate) fn skip_name(pkt: &[u8], mut pos: usize) -> Option<(usize, usize)> {
    let start = pos;
    let mut total = 0usize;
    loop {
        let len = *pkt.get(pos)? as usize;
        match len {
            0 => return Some((pos + 1, total)),
            1..=63 => {
                total += len + 1;
                if total > 254 {
                    return None;
                }
                pos += 1 + len;
                if pos > pkt.len() {
                    return None;
                }
            }
            0xC0..=0xFF => {
                let target = ((len & 0x3F) << 8) | *pkt.get(pos + 1)? as usize;
                if target >= start {
                    return None;
                }
                // The target lies earlier in the packet and was itself a parsed name or
                // question; its length is validated by walking it with a strict bound.
                let mut t = target;
                let mut hops = 0;
                loop {
                    let l = *pkt.get(t)? as usize;
                    match l {
                        0 => break,
                        1..=63 => {
                            total += l + 1;
                            if total > 254 {
                                return None;
                            }
                            t += 1 + l;
                        }
                        0xC0..=0xFF => {
                            let nt = ((l & 0x3F) << 8) | *pkt.get(t + 1)? as usize;
                            hops += 1;
                            if nt >= t || hops > 127 {
                                return None;
                            }
                            t = nt;
                        }
                        _ => return None,
                    }
                }
                return Some((pos + 2, total));
            }
            _ => return None,
        }
    }
}

/// Skips the name at `pos` without following its pointer, which must point backwards:
/// records the server does not read cost no more than their own octets (following every
/// pointer of thousands of records would let one query cost a hundred).
fn skip_name_here(pkt: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *pkt.get(pos)? as usize;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + len,
            0xC0..=0xFF => {
                let target = ((len & 0x3F) << 8) | *pkt.get(pos + 1)? as usize;
                return (target < start).then_some(pos + 2);
            }
            _ => return None,
        }
    }
}

/// Parses one additional record: an OPT is decoded into `q.edns`, a TSIG (which must be
/// the last record, RFC 8945 section 5.1) is noted in `q.tsig`, anything else is skipped.
fn parse_additional(
    pkt: &[u8],
    pos: usize,
    last: bool,
    q: &mut Query,
    f: &mut Found,
) -> Option<usize> {
    let owner = pos;
    let pos = skip_name_here(pkt, pos)?;
    let fixed = pkt.get(pos..pos + 10)?;
    let rtype = be16(fixed, 0);
    // The names of the records read (OPT, TSIG) are followed and checked in full.
    let owner_len = match rtype {
        rtype::OPT | rtype::TSIG => skip_name(pkt, owner)?.1,
        _ => 0,
    };
    let class = be16(fixed, 2);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlen = be16(fixed, 8) as usize;
    let rdata = pkt.get(pos + 10..pos + 10 + rdlen)?;
    match rtype {
        rtype::OPT => {
            // Two OPTs, or one not owned by the root (a pointer to the root is the root).
            f.broken |= q.edns.is_some() || owner_len != 0;
            let mut edns = Edns {
                payload: class.max(512),
                version: ((ttl >> 16) & 0xFF) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
                ecs: None,
                opts: 0,
                extra: 0,
            };
            let mut o = 0;
            while o < rdata.len() {
                let hdr = rdata.get(o..o + 4)?;
                let code = be16(hdr, 0);
                let olen = be16(hdr, 2) as usize;
                let body = rdata.get(o + 4..o + 4 + olen)?;
                if edns.version == 0 {
                    match code {
                        OPT_ECS => match parse_ecs(body) {
                            Some(e) if edns.ecs.is_none() && !f.bad_opt => edns.ecs = Some(e),
                            _ => {
                                edns.ecs = None;
                                f.bad_opt = true;
                            }
                        },
                        OPT_NSID => edns.opts |= HAS_NSID,
                        // RFC 7873 5.2.2: a client cookie alone (8), or with a server
                        // cookie of 8 to 32 octets; anything else is FORMERR. A second
                        // COOKIE option is ignored.
                        OPT_COOKIE if edns.opts & HAS_COOKIE == 0 => {
                            if olen == 8 || (16..=40).contains(&olen) {
                                edns.opts |= HAS_COOKIE;
                                q.cookie.data[..olen].copy_from_slice(body);
                                q.cookie.len = olen as u8;
                                q.cookie.valid = false; // judged by `respond`
                            } else {
                                f.bad_opt = true;
                            }
                        }
                        _ => {}
                    }
                }
                o += 4 + olen;
            }
            q.edns = Some(edns);
        }
        rtype::TSIG => {
            // Algorithm name, time (6), fudge (2), MAC size (2) and MAC, original ID,
            // error, other length (6) and other data: one that does not parse is FORMERR.
            let well_formed = skip_name(pkt, pos + 10).is_some_and(|(alg, _)| {
                let mac = pkt
                    .get(alg + 8..alg + 10)
                    .map_or(usize::MAX, |m| be16(m, 0) as usize);
                let other = alg.saturating_add(10).saturating_add(mac).saturating_add(4);
                let olen = pkt
                    .get(other..other + 2)
                    .map_or(usize::MAX, |o| be16(o, 0) as usize);
                other.saturating_add(2).saturating_add(olen) == pos + 10 + rdlen
            });
            f.broken |= !last || q.tsig.is_some() || !well_formed;
            q.tsig = Some(TsigAt {
                owner: owner as u16,
                rdata: (pos + 10) as u16,
                rdlen: rdlen as u16,
            });
        }
        _ => {}
    }
    Some(pos + 10 + rdlen)
}

/// Validates an ECS option per RFC 7871 sections 6 and 7.1: known family, source prefix
/// within the family, scope 0, exactly the octets the prefix needs, no bits past it.
fn parse_ecs(body: &[u8]) -> Option<Ecs> {
    let hdr = body.get(..4)?;
    let family = be16(hdr, 0);
    let source = hdr[2];
    let scope = hdr[3];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source > max || scope != 0 {
        return None;
    }
    let addr_bytes = &body[4..];
    let need = (source as usize).div_ceil(8);
    if addr_bytes.len() != need {
        return None;
    }
    if source % 8 != 0 {
        let last = addr_bytes[need - 1];
        let mask = 0xFFu8 >> (source % 8);
        if last & mask != 0 {
            return None;
        }
    }
    let mut addr = [0u8; 16];
    addr[..need].copy_from_slice(addr_bytes);
    Some(Ecs {
        family,
        source,
        addr,
        addr_len: need as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p
    }

    #[test]
    fn lowercases_and_counts_labels() {
        let p = query(b"\x03WwW\x07Example\x04TEST\x00", 1);
        let mut q = Query::new();
        parse(&p, &mut q).unwrap();
        assert_eq!(q.name(), b"\x03www\x07example\x04test\x00");
        assert_eq!(q.labels, 3);
        assert_eq!(&q.label_offsets[..3], &[0, 4, 12]);
        assert_eq!(q.question_end, p.len());
    }

    #[test]
    fn pointer_in_question_is_formerr() {
        let p = query(b"\xc0\x0c", 1);
        let mut q = Query::new();
        assert_eq!(parse(&p, &mut q), Err(Reject::FormErr { question: false }));
    }

    #[test]
    fn forward_pointer_in_additional_is_formerr() {
        let mut p = query(b"\x01a\x00", 1);
        p[11] = 1; // arcount
        let here = p.len();
        p.extend_from_slice(&[0xC0, (here + 2) as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        let mut q = Query::new();
        assert!(matches!(parse(&p, &mut q), Err(Reject::FormErr { .. })));
    }

    #[test]
    fn ecs_validation() {
        assert!(parse_ecs(&[0, 1, 24, 0, 198, 51, 100]).is_some());
        assert!(parse_ecs(&[0, 1, 24, 1, 198, 51, 100]).is_none()); // scope set
        assert!(parse_ecs(&[0, 3, 0, 0]).is_none()); // family
        assert!(parse_ecs(&[0, 1, 33, 0, 1, 2, 3, 4, 5]).is_none()); // too long prefix
        assert!(parse_ecs(&[0, 1, 24, 0, 198, 51, 100, 7]).is_none()); // extra octet
        assert!(parse_ecs(&[0, 1, 23, 0, 198, 51, 101]).is_none()); // bits past prefix
        assert!(parse_ecs(&[0, 1, 0, 0]).is_some());
        assert!(parse_ecs(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0]).is_some());
    }
}
