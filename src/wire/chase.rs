//! Answers assembled at query time from several parts, off the common path: a CNAME chain
//! that reaches a scheduled name, a CNAME access domain whose target is in the zone, a name
//! below a DNAME (RFC 6672 3.2). Each part is a precompiled answer (relocated: its
//! compression pointers re-aimed at where its name now lies in the message) or a GSLB
//! selection; the chain stays inside the zone it started in and stops after
//! [`MAX_CHAIN`] parts, as the compiler's static chains do.

use super::parse::Query;
use super::respond::Asker;
use crate::dns::{rtype, HEADER_LEN};
use crate::tables::gslb::{Local, Selected};
use crate::tables::{Answer, Lookup, Snapshot, MAX_CHAIN, NONE};

/// YXDOMAIN: a DNAME substitution overflowed the name length (RFC 6672 2.2).
const YXDOMAIN: u16 = 6;

/// The GSLB side of a chase: the asker and the shard's selection state.
pub(super) struct Sched<'l> {
    pub(super) asker: Asker,
    pub(super) local: &'l mut Local,
}

/// What a chase wrote after the question.
pub(super) struct Chased {
    /// End of the records.
    pub(super) pos: usize,
    /// Section counts.
    pub(super) counts: [u16; 3],
    /// RCODE of the last part.
    pub(super) rcode: u16,
    /// ECS scope: the narrowest (longest) of the selections made.
    pub(super) scope: u8,
    /// Authoritative (false only when the first part is a referral).
    pub(super) aa: bool,
    /// Set on an `Err` that is not about size.
    pub(super) servfail: bool,
}

/// The name a part continues from: lowercased, with the offsets of its labels, and where
/// it lies in the message.
struct Name {
    wire: [u8; 255],
    len: usize,
    offsets: [u8; 128],
    labels: usize,
    at: usize,
}

impl Name {
    fn wire(&self) -> &[u8] {
        &self.wire[..self.len]
    }

    fn new() -> Self {
        Self {
            wire: [0; 255],
            len: 0,
            offsets: [0; 128],
            labels: 0,
            at: 0,
        }
    }

    /// Reads the (possibly compressed, already written by us) name at `at` in `msg` into
    /// this one (reused: a chase moves no name around); `None` when it is not a name.
    fn read(&mut self, msg: &[u8], at: usize) -> Option<()> {
        let n = self;
        n.len = 0;
        n.labels = 0;
        n.at = at;
        let mut p = at;
        for _ in 0..255 {
            let l = *msg.get(p)? as usize;
            if l >= 0xC0 {
                p = ((l & 0x3F) << 8) | *msg.get(p + 1)? as usize;
                continue;
            }
            if l > 63 || n.len + 1 + l > 255 || n.labels >= 128 {
                return None;
            }
            if l == 0 {
                n.wire[n.len] = 0;
                n.len += 1;
                return Some(());
            }
            n.offsets[n.labels] = n.len as u8;
            n.labels += 1;
            n.wire[n.len] = l as u8;
            for (d, s) in n.wire[n.len + 1..n.len + 1 + l]
                .iter_mut()
                .zip(msg.get(p + 1..p + 1 + l)?)
            {
                *d = s.to_ascii_lowercase();
            }
            n.len += 1 + l;
            p += 1 + l;
        }
        None
    }

    /// Where the suffix of `suffix_len` octets of this name lies in `msg`.
    fn suffix_at(&self, msg: &[u8], suffix_len: usize) -> Option<usize> {
        let skip = self.len.checked_sub(suffix_len)?;
        let k = self.offsets[..self.labels]
            .iter()
            .position(|&o| o as usize == skip)?;
        // Walk to label k in the message, following pointers (bounded: never a hang).
        let mut p = self.at;
        let mut label = 0;
        for _ in 0..255 {
            let l = *msg.get(p)? as usize;
            if l >= 0xC0 {
                p = ((l & 0x3F) << 8) | *msg.get(p + 1)? as usize;
                continue;
            }
            if label == k {
                return Some(p);
            }
            label += 1;
            p += 1 + l;
        }
        None
    }
}

/// The chase under way.
struct Chase<'a> {
    snap: &'a Snapshot,
    q: &'a Query,
    tcp: bool,
    limit: usize,
    zone: u32,
    done: Chased,
    /// Digests of the names followed, to stop at the first repeat.
    seen: [u64; MAX_CHAIN],
}

/// Follows `first` (the question's lookup) to the end of its chain, writing after the
/// question in `out`; `limit` is where the records must end. `Err` when they do not fit.
/// Kept out of line: the common answer path stays small.
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
pub(super) fn chase(
    snap: &Snapshot,
    pkt: &[u8],
    q: &Query,
    first: Lookup,
    tcp: bool,
    limit: usize,
    sched: &mut Sched<'_>,
    out: &mut [u8],
) -> Result<Chased, Chased> {
    let qend = q.question_end;
    // The question goes in first: the parts' pointers are aimed at it.
    out[HEADER_LEN..qend].copy_from_slice(&pkt[HEADER_LEN..qend]);
    let labels = q.labels as usize;
    let mut c = Chase {
        snap,
        q,
        tcp,
        limit,
        zone: snap
            .lookup_in(q.name(), &q.label_offsets[..labels], q.qtype, tcp)
            .1,
        done: Chased {
            pos: qend,
            counts: [0; 3],
            rcode: 0,
            scope: 0,
            aa: !matches!(first, Lookup::Answer(a) if !snap.names.answers[a as usize].aa),
            servfail: false,
        },
        seen: [0; MAX_CHAIN],
    };
    let mut name = Name::new();
    if name.read(out, HEADER_LEN).is_none() {
        return Err(c.broken());
    }
    let mut link = first;
    for _ in 0..MAX_CHAIN {
        let next = match link {
            Lookup::Answer(ai) => c.answer(ai, &mut name, out)?,
            Lookup::Gslb(ad) => c.gslb(ad, &mut name, sched, out)?,
            Lookup::Dname(ai) => c.dname(ai, &mut name, out)?,
            Lookup::Refused => None,
        };
        let Some(l) = next else { break };
        link = l;
    }
    Ok(c.done)
}

impl Chase<'_> {
    /// The answer does not fit: TC.
    fn fail(&self) -> Chased {
        Chased { ..self.done }
    }

    /// The parts cannot be put together (a name beyond the reach of a compression
    /// pointer in a very large TCP answer): SERVFAIL, never a TC a client cannot act on.
    fn broken(&self) -> Chased {
        Chased {
            servfail: true,
            ..self.done
        }
    }

    /// Looks up the name a part ended on, inside the chase's zone; `None` when it left
    /// the zone or came back to a name already followed (a loop through a CNAME access
    /// domain: stopped, as the compiler stops static loops).
    fn follow(&mut self, name: &Name) -> Option<Lookup> {
        use std::hash::{BuildHasher, Hasher};
        let mut h = foldhash::fast::FixedState::with_seed(0x6368_6173).build_hasher();
        h.write(name.wire());
        let digest = h.finish() | 1;
        let slot = self.seen.iter().position(|&d| d == 0 || d == digest)?;
        if self.seen[slot] == digest {
            return None;
        }
        self.seen[slot] = digest;
        let (l, zone) = self.snap.lookup_in(
            name.wire(),
            &name.offsets[..name.labels],
            self.q.qtype,
            self.tcp,
        );
        (zone == self.zone && l != Lookup::Refused).then_some(l)
    }

    /// A precompiled part; continues at its `next` node if it has one.
    fn answer(
        &mut self,
        ai: u32,
        name: &mut Name,
        out: &mut [u8],
    ) -> Result<Option<Lookup>, Chased> {
        let a = &self.snap.names.answers[ai as usize];
        let base = self.done.pos;
        self.append(a, name, out)?;
        self.done.rcode = a.rcode as u16;
        if a.next == NONE {
            return Ok(None);
        }
        if name.read(out, base + a.next_at as usize).is_none() {
            return Ok(None);
        }
        Ok(Some(self.snap.pick_node(a.next, self.q.qtype, self.tcp)))
    }

    /// A GSLB selection owned by `name`; a CNAME access domain continues at its target.
    fn gslb(
        &mut self,
        ad: u32,
        name: &mut Name,
        sched: &mut Sched<'_>,
        out: &mut [u8],
    ) -> Result<Option<Lookup>, Chased> {
        let snap = self.snap;
        let g = &snap.gslb;
        if name.at > 0x3FFF {
            return Err(self.broken());
        }
        let base = self.done.pos;
        let room = self.limit.saturating_sub(base);
        let owner = 0xC000 | name.at as u16;
        let line = sched.asker.line;
        self.done.rcode = 0;
        match g.select(
            ad,
            &snap.health,
            line,
            sched.local,
            owner,
            &mut out[base..base + room],
        ) {
            Selected::Records { count, len, scope } => {
                self.done.scope = self.done.scope.max(sched.asker.scope(scope));
                if len > room {
                    return Err(self.fail());
                }
                self.done.pos += len;
                self.done.counts[0] += count;
                // The CNAME alone answers a CNAME or ANY query (RFC 1034 4.3.2 step 3a).
                let qt = self.q.qtype;
                if g.ads[ad as usize].rtype != rtype::CNAME
                    || count != 1
                    || qt == rtype::CNAME
                    || qt == rtype::ANY
                {
                    return Ok(None);
                }
                // owner pointer (2), type, class, TTL, RDLENGTH (10): then the target.
                Ok(name.read(out, base + 12).and_then(|()| self.follow(name)))
            }
            Selected::NoData { answer, scope } => {
                self.done.scope = self.done.scope.max(sched.asker.scope(scope));
                let a = &snap.names.answers[answer as usize];
                self.append(a, name, out)?;
                self.done.rcode = a.rcode as u16;
                Ok(None)
            }
        }
    }

    /// Below a DNAME: the DNAME, the CNAME synthesised from it (TTL of the DNAME), then the
    /// new name (RFC 6672 3.2).
    fn dname(
        &mut self,
        ai: u32,
        name: &mut Name,
        out: &mut [u8],
    ) -> Result<Option<Lookup>, Chased> {
        let a = &self.snap.names.answers[ai as usize];
        let at = self.done.pos;
        self.append(a, name, out)?;
        self.done.rcode = 0;
        // The DNAME's owner is a 2-octet pointer: TTL at 6, the target (uncompressed) at 12.
        let target = at + 12;
        let tlen = wire_len(out, target);
        let prefix = &name.wire()[..name.len - a.qlen as usize];
        if prefix.len() + tlen > 255 || tlen == 0 {
            self.done.rcode = YXDOMAIN;
            return Ok(None);
        }
        let rdlen = prefix.len() + 2;
        let pos = self.done.pos;
        if pos + 12 + rdlen > self.limit {
            return Err(self.fail());
        }
        if name.at > 0x3FFF || target > 0x3FFF {
            return Err(self.broken());
        }
        let ttl = [out[at + 6], out[at + 7], out[at + 8], out[at + 9]];
        out[pos..pos + 2].copy_from_slice(&(0xC000 | name.at as u16).to_be_bytes());
        out[pos + 2..pos + 6].copy_from_slice(&[0, rtype::CNAME as u8, 0, 1]);
        out[pos + 6..pos + 10].copy_from_slice(&ttl);
        out[pos + 10..pos + 12].copy_from_slice(&(rdlen as u16).to_be_bytes());
        out[pos + 12..pos + 12 + prefix.len()].copy_from_slice(prefix);
        let ptr = pos + 12 + prefix.len();
        out[ptr..ptr + 2].copy_from_slice(&(0xC000 | target as u16).to_be_bytes());
        self.done.pos = ptr + 2;
        self.done.counts[0] += 1;
        if self.q.qtype == rtype::CNAME {
            return Ok(None); // the synthesised CNAME is the answer (as Knot)
        }
        Ok(name.read(out, pos + 12).and_then(|()| self.follow(name)))
    }

    /// Appends a precompiled answer whose name now lies at `name.at`: copies its tail
    /// (without the optional additional records when short of room) and re-aims every
    /// compression pointer: into its own tail by the tail's new position, into its
    /// compiled question name at the same suffix of `name`.
    fn append(&mut self, a: &Answer, name: &Name, out: &mut [u8]) -> Result<(), Chased> {
        let (tail, fixups) = self.snap.tail(a);
        let base = self.done.pos;
        let mut len = tail.len();
        let mut ar = a.counts[2];
        if base + len > self.limit {
            len -= a.opt_len as usize;
            ar -= a.opt_count;
            if base + len > self.limit {
                return Err(self.fail());
            }
        }
        out[base..base + len].copy_from_slice(&tail[..len]);
        let compiled_tail = HEADER_LEN + a.qlen as usize + 4;
        let records = (a.counts[0] + a.counts[1] + ar) as usize;
        let relocate = |p: usize, out: &[u8]| -> Option<usize> {
            let t = ((out[p] as usize & 0x3F) << 8) | out[p + 1] as usize;
            if t >= compiled_tail {
                Some(base + t - compiled_tail)
            } else if t == HEADER_LEN && !fixups.contains(&((p - base) as u16)) {
                Some(name.at) // the question name itself (exact or wildcard owner)
            } else {
                name.suffix_at(out, a.qlen as usize - (t - HEADER_LEN))
            }
        };
        let mut p = base;
        for _ in 0..records {
            p = rewrite_name(out, p, &relocate).ok_or_else(|| self.broken())?;
            let rt = u16::from_be_bytes([out[p], out[p + 1]]);
            let rdlen = u16::from_be_bytes([out[p + 8], out[p + 9]]) as usize;
            let rd = p + 10;
            // The types the compiler writes compressed (`compile::encode`, `Rdata`).
            match rt {
                rtype::NS | rtype::CNAME | rtype::PTR => {
                    rewrite_name(out, rd, &relocate).ok_or_else(|| self.broken())?;
                }
                rtype::MX => {
                    rewrite_name(out, rd + 2, &relocate).ok_or_else(|| self.broken())?;
                }
                rtype::SOA => {
                    let m = rewrite_name(out, rd, &relocate).ok_or_else(|| self.broken())?;
                    rewrite_name(out, m, &relocate).ok_or_else(|| self.broken())?;
                }
                _ => {}
            }
            p = rd + rdlen;
        }
        self.done.pos = base + len;
        self.done.counts[0] += a.counts[0];
        self.done.counts[1] += a.counts[1];
        self.done.counts[2] += ar;
        Ok(())
    }
}

/// Walks the name at `p`, re-aiming its pointer (if any) with `relocate`; returns the
/// offset after the name.
fn rewrite_name(
    out: &mut [u8],
    mut p: usize,
    relocate: &dyn Fn(usize, &[u8]) -> Option<usize>,
) -> Option<usize> {
    loop {
        let l = *out.get(p)? as usize;
        if l == 0 {
            return Some(p + 1);
        }
        if l >= 0xC0 {
            let to = relocate(p, out)?;
            if to > 0x3FFF {
                return None;
            }
            out[p..p + 2].copy_from_slice(&(0xC000 | to as u16).to_be_bytes());
            return Some(p + 2);
        }
        p += 1 + l;
    }
}

/// Length of the uncompressed name at `at` (0 when it is not one).
fn wire_len(msg: &[u8], at: usize) -> usize {
    let mut p = at;
    while let Some(&l) = msg.get(p) {
        match l {
            0 => return p + 1 - at,
            1..=63 if p + 1 - at <= 255 => p += 1 + l as usize,
            _ => return 0,
        }
    }
    0
}
