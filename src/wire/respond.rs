//! The answer path: query bytes + snapshot -> response bytes. Sans-I/O, allocation-free,
//! lock-free; shared by every backend (io_uring, mmsg, TCP) and the micro-benchmark.

use super::chase::{chase, Sched};
use super::cookie;
use super::parse::{parse, skip_name, Edns, Query, Reject, HAS_COOKIE, HAS_NSID};
use crate::dns::{
    rcode, rtype, CLASS_ANY, CLASS_CH, CLASS_IN, HEADER_LEN, OPT_COOKIE, OPT_ECS, OPT_NSID,
};
use crate::tables::gslb::{ClientAddr, Local, Selected};
pub use crate::tables::DYN;
use crate::tables::{Lookup, Snapshot, NONE};

/// Transport the query came over; decides the size limit and ANY handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: size-limited, TC on overflow.
    Udp,
    /// TCP: up to 65535 octets.
    Tcp,
}

/// What happened to one query; drives the shard's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Response length; 0 means no response (dropped).
    pub len: usize,
    /// Response RCODE including the extended bits.
    pub rcode: u16,
    /// TC was set.
    pub truncated: bool,
    /// What the answer was made from, for response rate limiting: a precompiled answer's
    /// index, [`DYN`] | an access domain, [`KEY_CHASE`], or [`NONE`] (an error reply).
    pub key: u32,
}

/// [`Outcome::key`] of an answer assembled per query (`wire/chase.rs`).
pub const KEY_CHASE: u32 = NONE - 1;

impl Outcome {
    const DROP: Self = Self {
        len: 0,
        rcode: 0,
        truncated: false,
        key: NONE,
    };
}

/// Smallest buffer [`respond`] may be given: the largest UDP payload we ever send. TCP
/// callers pass 65535.
pub const MIN_OUT: usize = 4096;

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const CD: u16 = 0x0010;
const OPCODE: u16 = 0x7800;

/// Answers one query. `q` and `local` are scratch and selection state owned by the caller
/// (kept per shard); `client` is the address the query came from (for GSLB lines).
///
/// `out` must hold at least [`MIN_OUT`] octets (65535 for TCP).
#[inline]
pub fn respond(
    snap: &Snapshot,
    pkt: &[u8],
    q: &mut Query,
    t: Transport,
    client: Option<ClientAddr>,
    local: &mut Local,
    out: &mut [u8],
) -> Outcome {
    match parse(pkt, q) {
        Ok(()) => {}
        Err(Reject::Drop) => return Outcome::DROP,
        Err(Reject::NotImp) => {
            // Question echoed when it parsed; no AA, no RD/CD (RFC 8906 8.1.4).
            let qd = q.qname_len != 0;
            return error(pkt, q, qd, rcode::NOTIMP, snap.udp_payload, out);
        }
        Err(Reject::FormErr { question }) => {
            return error(pkt, q, question, rcode::FORMERR, snap.udp_payload, out)
        }
        Err(Reject::BadKey) => {
            let n = error(pkt, q, true, rcode::NOTAUTH, snap.udp_payload, out);
            return fit_badkey(n, q, t, snap.udp_payload, out);
        }
    }
    let badcookie = match &q.edns {
        Some(e) if e.opts != 0 => options(snap, q, t, client),
        _ => false,
    };
    let edns = q.edns;
    let reply = Reply {
        pkt,
        q,
        edns: &edns,
        snap,
    };
    if edns.is_some_and(|e| e.version > 0) {
        return reply.finish(out, 0, [0; 3], rcode::BADVERS, 0, None);
    }
    if badcookie {
        return reply.finish(out, 0, [0; 3], rcode::BADCOOKIE, 0, None);
    }
    let limit = match t {
        Transport::Tcp => out.len().min(65535),
        Transport::Udp => match edns {
            Some(e) => e.payload.min(snap.udp_payload) as usize,
            None => 512,
        },
    };
    if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        // No transfers are configured: REFUSED over UDP and TCP, as NSD (RFC 5936 2.2
        // forbids a NOERROR that does not start with the SOA).
        return reply.finish(out, 0, [0; 3], rcode::REFUSED, 0, None);
    }
    let mut scope = 0;
    let tcp = t == Transport::Tcp;
    let answer = match q.qclass {
        // QCLASS * (RFC 1035 3.2.5) matches the IN data, as Knot and NSD answer it.
        CLASS_IN | CLASS_ANY => match snap.lookup(q, tcp) {
            Lookup::Answer(a) if snap.names.answers[a as usize].next == NONE => Some(a),
            Lookup::Gslb(ad) if snap.gslb.ads[ad as usize].rtype != rtype::CNAME => {
                match scheduled(&reply, ad, client, local, limit, out) {
                    Scheduled::Written(o) => return o,
                    Scheduled::NoData { answer, scope: s } => {
                        scope = s;
                        Some(answer)
                    }
                }
            }
            Lookup::Refused => None,
            link => return chained(&reply, link, tcp, client, local, limit, out),
        },
        CLASS_CH => snap.chaos(q),
        _ => None,
    };
    let Some(ai) = answer else {
        return reply.finish(out, 0, [0; 3], rcode::REFUSED, 0, None);
    };
    precompiled(&reply, ai, scope, limit, out)
}

// The steps of `respond` below are `#[inline(always)]`: split for reading, they compile
// into the one function as before, at no more instructions per query (PERF.md, "Short
// functions on the answer path").

/// What an access domain's selection gave.
enum Scheduled {
    /// The reply, its records selected and written.
    Written(Outcome),
    /// No address to give: this precompiled NODATA answer, with this ECS scope.
    NoData { answer: u32, scope: u8 },
}

/// A GSLB access domain (not a CNAME one): the records selected for the asker's line from
/// the healthy pools, written straight after the question.
#[inline(always)]
fn scheduled(
    reply: &Reply<'_>,
    ad: u32,
    client: Option<ClientAddr>,
    local: &mut Local,
    limit: usize,
    out: &mut [u8],
) -> Scheduled {
    let snap = reply.snap;
    let asker = Asker::new(snap, reply.edns, client);
    let qend = reply.q.question_end;
    let room = limit.saturating_sub(qend + opt_len(reply.edns));
    let records = &mut out[qend..qend + room];
    let g = &snap.gslb;
    match g.select(ad, &snap.health, asker.line, local, OWNER_Q, records) {
        Selected::Records { count, len, scope } => {
            let scope = asker.scope(scope);
            let mut o = if len > room {
                reply.finish(out, AA | TC, [0; 3], 0, scope, None)
            } else {
                reply.finish_written(out, [count, 0, 0], len, scope)
            };
            o.key = DYN | ad;
            Scheduled::Written(o)
        }
        Selected::NoData { answer, scope } => Scheduled::NoData {
            answer,
            scope: asker.scope(scope),
        },
    }
}

/// A CNAME chain through a scheduled name, a CNAME access domain, or a name below a
/// DNAME: assembled from several parts (`wire/chase.rs`).
#[inline(always)]
fn chained(
    reply: &Reply<'_>,
    link: Lookup,
    tcp: bool,
    client: Option<ClientAddr>,
    local: &mut Local,
    limit: usize,
    out: &mut [u8],
) -> Outcome {
    let snap = reply.snap;
    let asker = Asker::new(snap, reply.edns, client);
    let room = limit.saturating_sub(opt_len(reply.edns));
    let mut sched = Sched { asker, local };
    let mut o = match chase(snap, reply.pkt, reply.q, link, tcp, room, &mut sched, out) {
        Ok(c) => {
            let flags = if c.aa { AA } else { 0 };
            reply.head(out, flags, c.counts, c.rcode);
            reply.opt(out, c.pos, c.rcode, c.scope, flags)
        }
        Err(c) if c.servfail => reply.finish(out, 0, [0; 3], rcode::SERVFAIL, c.scope, None),
        Err(c) => reply.finish(out, AA | TC, [0; 3], c.rcode, c.scope, None),
    };
    o.key = KEY_CHASE;
    o
}

/// A precompiled answer: its tail copied after the question, pointers fixed up for the
/// question's length, shortened (optional addresses first) or truncated to fit `limit`.
#[inline(always)]
fn precompiled(reply: &Reply<'_>, ai: u32, scope: u8, limit: usize, out: &mut [u8]) -> Outcome {
    let (snap, q) = (reply.snap, reply.q);
    let a = &snap.names.answers[ai as usize];
    let mut counts = a.counts;
    let mut len = a.len as usize;
    let full = q.question_end + len + opt_len(reply.edns);
    let flags = if a.aa { AA } else { 0 };
    if full > limit {
        if full - (a.opt_len as usize) > limit {
            // TC with no records at all (gdnsd's choice): no partial RRsets can result.
            let mut o = reply.finish(out, flags | TC, [0; 3], a.rcode as u16, scope, None);
            o.key = ai;
            return o;
        }
        // Addresses of NS/MX/SRV targets are the first to go (RFC 1034 4.3.2 step 6).
        len -= a.opt_len as usize;
        counts[2] -= a.opt_count;
    }
    let (tail, mut fixups) = snap.tail(a);
    if len < tail.len() {
        // Fixups are in tail order: those past the shortened tail go with it.
        fixups = &fixups[..fixups.partition_point(|&f| (f as usize) < len)];
    }
    let delta = q.qname_len as u16 - a.qlen as u16;
    let mut o = reply.finish(
        out,
        flags,
        counts,
        a.rcode as u16,
        scope,
        Some((&tail[..len], fixups, delta)),
    );
    o.key = ai;
    o
}

/// The options that cost only when a query carries them: NSID (RFC 5001) and COOKIE
/// (RFC 7873). Works out the server cookie to answer with and the octets both add to our
/// OPT (`Edns::extra`); returns whether the answer is BADCOOKIE.
#[cold]
#[inline(never)]
fn options(snap: &Snapshot, q: &mut Query, t: Transport, client: Option<ClientAddr>) -> bool {
    let Some(e) = q.edns.as_mut() else {
        return false;
    };
    let mut extra = 0;
    if e.opts & HAS_NSID != 0 {
        match &snap.nsid {
            Some(n) => extra += 4 + n.len(),
            None => e.opts &= !HAS_NSID,
        }
    }
    let mut badcookie = false;
    if e.opts & HAS_COOKIE != 0 {
        match &snap.cookies {
            Some(secrets) => {
                let c = &mut q.cookie;
                let now = cookie::now();
                let (client_cookie, server) = c.data[..c.len as usize].split_at(8);
                let verdict = cookie::check(secrets, client_cookie, server, client, now);
                c.valid = verdict != cookie::Verdict::Invalid;
                if verdict != cookie::Verdict::Valid {
                    let sc = cookie::make(&secrets.current, &c.data[..8], client, now);
                    c.data[8..24].copy_from_slice(&sc);
                }
                c.len = 24;
                extra += 4 + 24;
                // RFC 7873 5.2.3/5.2.4: only when asked to insist, and never over TCP (a
                // connection already proves the address).
                badcookie = !c.valid && snap.require_cookie && t == Transport::Udp;
            }
            None => e.opts &= !HAS_COOKIE,
        }
    }
    e.extra = extra as u16;
    badcookie
}

/// Rewrites the reply of `len` octets in `out` to `q` as a truncated one: TC set, no
/// records, the OPT kept (response rate limiting's slip). Returns the new length, or 0 when
/// the reply cannot be truncated (it carries a TSIG after its OPT): then it is dropped.
pub fn slip(out: &mut [u8], len: usize, q: &Query) -> usize {
    if q.tsig.is_some() || len < HEADER_LEN {
        return 0;
    }
    let qend = if out[4..6] == [0, 1] {
        q.question_end
    } else {
        HEADER_LEN
    };
    let optl = opt_len(&q.edns);
    if len < qend + optl {
        return 0;
    }
    out.copy_within(len - optl..len, qend);
    out[2] |= (TC >> 8) as u8;
    out[6..10].fill(0);
    out[10..12].copy_from_slice(&(q.edns.is_some() as u16).to_be_bytes());
    qend + optl
}

/// Owner of records written for the question name itself: a pointer to offset 12.
const OWNER_Q: u16 = 0xC000 | HEADER_LEN as u16;

/// Who asks, as the GSLB line lookup sees it.
pub(super) struct Asker {
    /// The asker's line and ECS scope.
    pub(super) line: (u32, u8),
    /// An ECS option decided the address (else the answer's scope is 0).
    ecs: bool,
    /// The ECS address was a v4-mapped IPv6 subnet.
    mapped: bool,
}

impl Asker {
    /// The asker: the ECS address when sent (RFC 7871) and not switched off, else the
    /// resolver's own address.
    #[inline]
    fn new(snap: &Snapshot, edns: &Option<Edns>, client: Option<ClientAddr>) -> Self {
        let g = &snap.gslb;
        let ecs = edns
            .and_then(|e| e.ecs)
            .filter(|c| g.use_ecs && c.source > 0);
        let src = match ecs {
            Some(c) if c.family == 1 => Some(ClientAddr::V4(u32::from_be_bytes([
                c.addr[0], c.addr[1], c.addr[2], c.addr[3],
            ]))),
            Some(c) => Some(ClientAddr::from_v6(u128::from_be_bytes(c.addr))),
            None => client,
        };
        Self {
            line: g.line_of(src),
            ecs: ecs.is_some(),
            mapped: ecs.is_some_and(|c| c.family == 2) && matches!(src, Some(ClientAddr::V4(_))),
        }
    }

    /// The ECS scope to answer with for a selection's scope: 0 without ECS; a v4-mapped
    /// IPv6 subnet was looked up as IPv4, so its scope counts after the 96 bits of the
    /// mapping prefix.
    #[inline]
    pub(super) fn scope(&self, s: u8) -> u8 {
        match (self.ecs, self.mapped) {
            (false, _) => 0,
            (true, true) if s > 0 => s + 96,
            (true, _) => s,
        }
    }
}

/// What every reply to a parsed query shares.
pub(super) struct Reply<'a> {
    pkt: &'a [u8],
    q: &'a Query,
    edns: &'a Option<Edns>,
    snap: &'a Snapshot,
}

impl Reply<'_> {
    /// Header and echoed question.
    #[inline(always)]
    pub(super) fn head(&self, out: &mut [u8], flags: u16, counts: [u16; 3], rc: u16) {
        let q = self.q;
        let qend = q.question_end;
        let hdr_flags = QR | (q.flags & (OPCODE | RD | CD)) | flags | (rc & 0xF);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        out[2..4].copy_from_slice(&hdr_flags.to_be_bytes());
        out[4..6].copy_from_slice(&1u16.to_be_bytes());
        out[6..8].copy_from_slice(&counts[0].to_be_bytes());
        out[8..10].copy_from_slice(&counts[1].to_be_bytes());
        let arcount = counts[2] + self.edns.is_some() as u16;
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
        out[HEADER_LEN..qend].copy_from_slice(&self.pkt[HEADER_LEN..qend]);
    }

    /// Header, question, a precompiled tail (fix-ups applied) and OPT.
    #[inline(always)]
    fn finish(
        &self,
        out: &mut [u8],
        flags: u16,
        counts: [u16; 3],
        rc: u16,
        ecs_scope: u8,
        tail: Option<(&[u8], &[u16], u16)>,
    ) -> Outcome {
        self.head(out, flags, counts, rc);
        let mut pos = self.q.question_end;
        if let Some((bytes, fixups, delta)) = tail {
            out[pos..pos + bytes.len()].copy_from_slice(bytes);
            if delta != 0 {
                for &f in fixups {
                    let at = pos + f as usize;
                    let p = u16::from_be_bytes([out[at], out[at + 1]]) + delta;
                    out[at..at + 2].copy_from_slice(&p.to_be_bytes());
                }
            }
            pos += bytes.len();
        }
        self.opt(out, pos, rc, ecs_scope, flags)
    }

    /// Header and question around answer records already written after the question.
    #[inline]
    fn finish_written(
        &self,
        out: &mut [u8],
        counts: [u16; 3],
        len: usize,
        ecs_scope: u8,
    ) -> Outcome {
        self.head(out, AA, counts, 0);
        self.opt(out, self.q.question_end + len, 0, ecs_scope, AA)
    }

    #[inline(always)]
    pub(super) fn opt(
        &self,
        out: &mut [u8],
        mut pos: usize,
        rc: u16,
        ecs_scope: u8,
        flags: u16,
    ) -> Outcome {
        if let Some(e) = self.edns {
            pos = write_opt(out, pos, e, rc, ecs_scope, self.snap.udp_payload);
            if e.extra != 0 {
                pos = write_options(out, pos, e, self.q, self.snap);
            }
        }
        Outcome {
            len: pos,
            rcode: rc,
            truncated: flags & TC != 0,
            key: NONE,
        }
    }
}

#[inline(always)]
fn opt_len(edns: &Option<Edns>) -> usize {
    match edns {
        None => 0,
        Some(Edns {
            ecs: None, extra, ..
        }) => 11 + *extra as usize,
        Some(Edns {
            ecs: Some(ecs),
            extra,
            ..
        }) => 11 + 8 + ecs.addr_len as usize + *extra as usize,
    }
}

/// The NSID and COOKIE options after the rest of our OPT (whose RDLENGTH counts them).
#[cold]
#[inline(never)]
fn write_options(out: &mut [u8], mut pos: usize, e: &Edns, q: &Query, snap: &Snapshot) -> usize {
    if e.opts & HAS_NSID != 0 {
        if let Some(n) = &snap.nsid {
            out[pos..pos + 2].copy_from_slice(&OPT_NSID.to_be_bytes());
            out[pos + 2..pos + 4].copy_from_slice(&(n.len() as u16).to_be_bytes());
            out[pos + 4..pos + 4 + n.len()].copy_from_slice(n);
            pos += 4 + n.len();
        }
    }
    if e.opts & HAS_COOKIE != 0 {
        let c = &q.cookie;
        let l = c.len as usize;
        out[pos..pos + 2].copy_from_slice(&OPT_COOKIE.to_be_bytes());
        out[pos + 2..pos + 4].copy_from_slice(&(l as u16).to_be_bytes());
        out[pos + 4..pos + 4 + l].copy_from_slice(&c.data[..l]);
        pos += 4 + l;
    }
    pos
}

/// Our OPT: payload = our cap, extended RCODE, version 0, DO copied, ECS echoed with our
/// scope; no other option is echoed.
#[inline(always)]
fn write_opt(out: &mut [u8], mut pos: usize, e: &Edns, rc: u16, scope: u8, payload: u16) -> usize {
    out[pos] = 0;
    out[pos + 1..pos + 3].copy_from_slice(&41u16.to_be_bytes());
    out[pos + 3..pos + 5].copy_from_slice(&payload.to_be_bytes());
    out[pos + 5] = (rc >> 4) as u8;
    out[pos + 6] = 0;
    out[pos + 7] = if e.dnssec_ok { 0x80 } else { 0 };
    out[pos + 8] = 0;
    let rdlen = e.ecs.map_or(0, |c| 8 + c.addr_len as u16) + e.extra;
    out[pos + 9..pos + 11].copy_from_slice(&rdlen.to_be_bytes());
    pos += 11;
    if let Some(c) = e.ecs {
        out[pos..pos + 2].copy_from_slice(&OPT_ECS.to_be_bytes());
        out[pos + 2..pos + 4].copy_from_slice(&(4 + c.addr_len as u16).to_be_bytes());
        out[pos + 4..pos + 6].copy_from_slice(&c.family.to_be_bytes());
        out[pos + 6] = c.source;
        out[pos + 7] = scope;
        out[pos + 8..pos + 8 + c.addr_len as usize].copy_from_slice(&c.addr[..c.addr_len as usize]);
        pos += 8 + c.addr_len as usize;
    }
    pos
}

/// FORMERR / NOTIMP / NOTAUTH-BADKEY: header, the question when it parsed, the OPT when
/// the query's was well formed, and for BADKEY the unsigned TSIG of RFC 8945 5.3.2.
#[cold]
#[inline(never)]
fn error(
    pkt: &[u8],
    q: &Query,
    with_question: bool,
    rc: u16,
    payload: u16,
    out: &mut [u8],
) -> Outcome {
    let qend = if with_question {
        q.question_end
    } else {
        HEADER_LEN
    };
    let copied = if rc == rcode::NOTIMP { 0 } else { RD | CD };
    let flags = QR | (q.flags & (OPCODE | copied)) | rc;
    let tsig = q.tsig.filter(|_| rc == rcode::NOTAUTH);
    let arcount = q.edns.is_some() as u16 + tsig.is_some() as u16;
    out[0..2].copy_from_slice(&pkt[0..2]);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&(with_question as u16).to_be_bytes());
    out[6..10].fill(0);
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
    out[HEADER_LEN..qend].copy_from_slice(&pkt[HEADER_LEN..qend]);
    let mut pos = qend;
    if let Some(e) = &q.edns {
        pos = write_opt(out, pos, e, rc, 0, payload);
    }
    if let Some(t) = tsig {
        pos = write_badkey(pkt, q, t, out, pos);
    }
    Outcome {
        len: pos,
        rcode: rc,
        truncated: false,
        key: NONE,
    }
}

/// A BADKEY reply whose TSIG (long key and algorithm names) does not fit a UDP payload:
/// the TSIG is left out and TC set, so the client retries over TCP.
#[cold]
fn fit_badkey(n: Outcome, q: &Query, t: Transport, payload: u16, out: &mut [u8]) -> Outcome {
    let limit = match (t, q.edns) {
        (Transport::Tcp, _) => return n,
        (Transport::Udp, Some(e)) => e.payload.min(payload) as usize,
        (Transport::Udp, None) => 512,
    };
    if n.len <= limit || q.tsig.is_none() {
        return n;
    }
    let len = q.question_end + opt_len(&q.edns);
    out[2] |= (TC >> 8) as u8;
    out[10..12].copy_from_slice(&(q.edns.is_some() as u16).to_be_bytes());
    Outcome {
        len,
        truncated: true,
        ..n
    }
}

/// TSIG error 17 (BADKEY): the key and algorithm names, time signed and fudge of the
/// request, no MAC, the original ID (RFC 8945 5.2, 5.3.2). Names are written expanded.
fn write_badkey(
    pkt: &[u8],
    q: &Query,
    t: super::parse::TsigAt,
    out: &mut [u8],
    mut pos: usize,
) -> usize {
    let start = pos;
    pos = copy_name(pkt, t.owner as usize, out, pos);
    out[pos..pos + 8].copy_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]); // TSIG ANY TTL 0
    let len_at = pos + 8;
    pos += 10;
    let rd = t.rdata as usize;
    let rd_end = rd + t.rdlen as usize;
    let Some((alg_end, _)) = skip_name(pkt, rd).filter(|&(e, _)| e + 10 <= rd_end) else {
        // A TSIG whose RDATA does not even hold its fixed fields: leave it out.
        out[10..12].copy_from_slice(&(q.edns.is_some() as u16).to_be_bytes());
        return start;
    };
    pos = copy_name(pkt, rd, out, pos);
    out[pos..pos + 8].copy_from_slice(&pkt[alg_end..alg_end + 8]); // time signed, fudge
    out[pos + 8..pos + 10].fill(0); // MAC size 0
    out[pos + 10..pos + 12].copy_from_slice(&q.id.to_be_bytes()); // original ID, as Knot
    out[pos + 12..pos + 16].copy_from_slice(&[0, 17, 0, 0]); // BADKEY, no other data
    pos += 16;
    let rdlen = (pos - len_at - 2) as u16;
    out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    pos
}

/// Writes the (already validated) possibly compressed name at `at` expanded.
fn copy_name(pkt: &[u8], mut at: usize, out: &mut [u8], mut pos: usize) -> usize {
    loop {
        let l = pkt[at] as usize;
        if l >= 0xC0 {
            at = ((l & 0x3F) << 8) | pkt[at + 1] as usize;
            continue;
        }
        out[pos..pos + 1 + l].copy_from_slice(&pkt[at..at + 1 + l]);
        pos += 1 + l;
        if l == 0 {
            return pos;
        }
        at += 1 + l;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::Query;

    /// A snapshot with every kind of answer: the embedded example zone, DNAME, DS at a cut,
    /// MX with additional, CNAMEs into access domains, a CNAME access domain, nearest lines.
    fn snapshot() -> (std::sync::Arc<Snapshot>, crate::health::Writer) {
        let text = format!(
            "{}\n{}",
            crate::config::DEFAULT_CONFIG,
            "[[address]]\nname = \"a\"\nvalue = \"192.0.2.7\"\n[[pool]]\nname = \"p\"\ntype = \"ipv4\"\n\
             addresses = [\"a\"]\n[[line]]\nname = \"l\"\nprefixes = [\"198.51.100.0/24\"]\n\
             [[address]]\nname = \"c\"\nvalue = \"x.dn.c.test.\"\n[[pool]]\nname = \"pc\"\n\
             type = \"domain\"\naddresses = [\"c\"]\n\
             [[zone]]\nname = \"c.test.\"\nsoa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
             records = [\"ns A 192.0.2.1\", \"dn DNAME c.test.\", \"x MX 1 ns\", \"w CNAME g\",\n\
             \"v CNAME gc\", \"d NS ns.d\", \"ns.d A 192.0.2.2\", \"d DS 1 8 2 00\"]\n\
             [[access-domain]]\nname = \"g.c.test.\"\ntype = \"A\"\npolicy = \"weighted\"\npools = [\"p\"]\n\
             [[access-domain]]\nname = \"gc.c.test.\"\ntype = \"CNAME\"\npolicy = \"weighted\"\n\
             pools = [\"pc\"]\n\
             [[access-domain]]\nname = \"gslb.example.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
             [access-domain.lines]\nl = [\"p\"]\ndefault = [\"p\"]\n"
        );
        let cfg =
            crate::config::Config::from_str(&text, "t-respond".into(), std::path::Path::new("."))
                .unwrap();
        let snap = std::sync::Arc::new(crate::compile::compile(&cfg, 1).unwrap());
        let w = crate::health::Writer::new(snap.clone(), Default::default());
        (snap, w)
    }

    /// Queries for every kind of name of [`snapshot`], several types, with EDNS and ECS.
    fn seeds() -> Vec<Vec<u8>> {
        [
            "www.example.test",
            "x.y.wild.example.test",
            "gslb.example.test",
            "nope.example.test",
            "sub.example.test",
            "a.b.dn.c.test",
            "x.c.test",
            "w.c.test",
            "v.c.test",
            "d.c.test",
            "gc.c.test",
        ]
        .iter()
        .flat_map(|n| [1u16, 5, 15, 43, 255].map(|t| (n, t)))
        .map(|(n, t)| {
            let mut p = vec![0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
            for l in n.split('.') {
                p.push(l.len() as u8);
                p.extend_from_slice(l.as_bytes());
            }
            p.push(0);
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&[0, 1]);
            p.extend_from_slice(&[
                0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100,
            ]);
            p
        })
        .collect()
    }

    /// Allocations made by this thread (the test binary's allocator counts them).
    pub(crate) mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static ALLOCS: Cell<u64> = const { Cell::new(0) };
        }

        pub(super) struct Counting;

        // SAFETY: every call is forwarded unchanged to the system allocator; the counter is
        // a const-initialised thread local, which never allocates.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                ALLOCS.with(|c| c.set(c.get() + 1));
                // SAFETY: the caller's contract is passed on as is.
                unsafe { System.alloc(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                // SAFETY: as above.
                unsafe { System.dealloc(p, l) }
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
                ALLOCS.with(|c| c.set(c.get() + 1));
                // SAFETY: as above.
                unsafe { System.realloc(p, l, n) }
            }
        }

        pub(crate) fn allocs() -> u64 {
            ALLOCS.with(Cell::get)
        }
    }

    #[global_allocator]
    static ALLOCATOR: counting::Counting = counting::Counting;

    /// The hot path's promise: answering allocates nothing, for every kind of answer
    /// (static, wildcard, NXDOMAIN, referral, DS, DNAME and chains assembled per query, GSLB
    /// with ECS, errors), over UDP and TCP.
    #[test]
    fn answering_allocates_nothing() {
        let (snap, _w) = snapshot();
        let mut queries = seeds();
        let mut tsig = queries[0].clone();
        tsig[11] = 2; // ARCOUNT: OPT and a TSIG (unknown key: BADKEY)
        tsig.extend_from_slice(b"\x01k\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x1a");
        tsig.extend_from_slice(
            b"\x01h\x00\x00\x00\x65\x00\x00\x01\x01\x2c\x00\x00\xbe\xef\x00\x00\x00\x00",
        );
        queries.push(tsig);
        // A client cookie (RFC 7873): a server cookie is made for it.
        let mut cookie = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x04test\x00\x00\x01\x00\x01".to_vec();
        cookie.extend_from_slice(
            b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08abcdefgh",
        );
        queries.push(cookie);
        let mut notimp = queries[1].clone();
        notimp[2] = 0x28; // opcode UPDATE
        queries.push(notimp);
        let mut q = Query::new();
        let mut local = Local::new(7);
        let mut out = vec![0u8; 65535];
        let client = Some(ClientAddr::V4(0xC633_6407));
        for t in [Transport::Udp, Transport::Tcp] {
            for pkt in &queries {
                let buf = if t == Transport::Udp {
                    &mut out[..MIN_OUT]
                } else {
                    &mut out[..]
                };
                let before = counting::allocs();
                let o = respond(&snap, pkt, &mut q, t, client, &mut local, buf);
                let made = counting::allocs() - before;
                assert!(o.len > 0, "answered");
                assert_eq!(made, 0, "allocations answering {pkt:02x?} over {t:?}");
            }
        }
    }

    /// Random and mutated packets never panic the answer path, and every answer fits the
    /// transport's limit.
    #[test]
    fn random_and_mutated_packets_never_panic() {
        let (snap, _w) = snapshot();
        let seeds = seeds();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut q = Query::new();
        let mut local = Local::new(7);
        let mut out = vec![0u8; 65535];
        for i in 0..200_000u32 {
            let mut pkt = if i % 4 == 0 {
                (0..(next() % 300) as usize)
                    .map(|_| next() as u8)
                    .collect::<Vec<u8>>()
            } else {
                seeds[(next() % seeds.len() as u64) as usize].clone()
            };
            for _ in 0..(next() % 4) {
                if pkt.is_empty() {
                    break;
                }
                let at = (next() % pkt.len() as u64) as usize;
                match next() % 3 {
                    0 => pkt[at] = next() as u8,
                    1 => pkt.truncate(at),
                    _ => pkt.insert(at, next() as u8),
                }
            }
            let t = if i % 2 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            };
            let client = Some(ClientAddr::V4(next() as u32));
            let buf = if t == Transport::Udp {
                &mut out[..MIN_OUT]
            } else {
                &mut out[..]
            };
            let o = respond(&snap, &pkt, &mut q, t, client, &mut local, buf);
            let cap = if t == Transport::Udp { 1232 } else { 65535 };
            assert!(
                o.len <= cap.max(HEADER_LEN + 259 + 11 + 8 + 16),
                "{} bytes",
                o.len
            );
        }
    }
}
