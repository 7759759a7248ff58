//! Encodes one answer's sections at compile time, compressing names against the question
//! name (at offset 12) and against names already written.
//!
//! A compression pointer that targets the question name itself stays valid for any question
//! that matched this answer exactly. Every other pointer targets either a proper suffix of
//! the question name or a name inside the tail; both move by `actual qname length -
//! compiled qname length` when a longer name is answered from this tail (a wildcard, an
//! NXDOMAIN or a referral below the cut). Those pointer positions are recorded as fixups.

use crate::config::{Rdata, Soa};
use crate::dns::name::label_starts;
use crate::dns::HEADER_LEN;

/// Largest offset a new compression target may have: leaves room for the largest shift
/// (a 255-octet question name) within the 14-bit pointer range.
const MAX_TARGET: usize = 0x3FFF - 255;

/// Section of a record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

pub(crate) struct Encoder {
    buf: Vec<u8>,
    tail_start: usize,
    qlen: usize,
    /// (lowercased suffix, offset, pointer needs a fixup)
    dict: Vec<(Vec<u8>, u16, bool)>,
    fixups: Vec<u16>,
    counts: [u16; 3],
    /// Buffer offset and additional count where the optional additional records start.
    optional: Option<(usize, u16)>,
    /// The question is a wildcard owner: records it owns point at the question name.
    wild_owner: bool,
}

/// A finished tail.
pub(crate) struct Encoded {
    pub(crate) tail: Vec<u8>,
    pub(crate) fixups: Vec<u16>,
    pub(crate) counts: [u16; 3],
    pub(crate) qlen: u8,
    /// Octets and records at the end of the tail that may be left out to fit a payload.
    pub(crate) optional: (u16, u16),
}

impl Encoder {
    /// Starts an answer compiled for question name `q`. `q_is_owner`: the question name will
    /// be exactly the name records here are owned by (exact or wildcard matches), so a
    /// pointer to it needs no fixup; otherwise (NXDOMAIN, referral) even it shifts.
    pub(crate) fn new(q: &[u8], q_is_owner: bool) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.resize(HEADER_LEN, 0);
        buf.extend_from_slice(q);
        buf.extend_from_slice(&[0; 4]);
        let mut dict = Vec::new();
        // A wildcard owner stands for the question name, but only as an owner: the same
        // name in record data is the literal `*` name (RFC 4592), written out.
        let wild_owner = q_is_owner && q.starts_with(b"\x01*");
        for i in label_starts(q) {
            if i == 0 && wild_owner {
                continue;
            }
            dict.push((
                q[i..].to_vec(),
                (HEADER_LEN + i) as u16,
                i != 0 || !q_is_owner,
            ));
        }
        Self {
            tail_start: buf.len(),
            buf,
            qlen: q.len(),
            dict,
            fixups: Vec::new(),
            counts: [0; 3],
            optional: None,
            wild_owner,
        }
    }

    /// Every additional record from here on is optional (RFC 1034 4.3.2 step 6: addresses
    /// of NS, MX and SRV targets), left out rather than truncating when space is short.
    pub(crate) fn optional_from_here(&mut self) {
        if self.optional.is_none() {
            self.optional = Some((self.buf.len(), self.counts[2]));
        }
    }

    /// Writes a (lowercased wire) name, compressed.
    fn name(&mut self, name: &[u8]) {
        let starts = label_starts(name);
        for (k, &i) in starts.iter().enumerate() {
            let suffix = &name[i..];
            if let Some(&(_, off, fix)) = self.dict.iter().find(|(n, _, _)| n == suffix) {
                self.labels(name, &starts[..k]);
                let pos = self.buf.len();
                self.buf.extend_from_slice(&(0xC000 | off).to_be_bytes());
                if fix {
                    self.fixups.push((pos - self.tail_start) as u16);
                }
                return;
            }
        }
        self.labels(name, &starts);
        self.buf.push(0);
    }

    /// Writes literal labels, registering each new suffix as a compression target.
    fn labels(&mut self, name: &[u8], starts: &[usize]) {
        for &i in starts {
            let pos = self.buf.len();
            if pos <= MAX_TARGET {
                self.dict.push((name[i..].to_vec(), pos as u16, true));
            }
            self.buf
                .extend_from_slice(&name[i..i + 1 + name[i] as usize]);
        }
    }

    /// Appends one resource record; returns the tail offset of its RDATA.
    pub(crate) fn rr(
        &mut self,
        sec: Section,
        owner: &[u8],
        rtype: u16,
        class: u16,
        ttl: u32,
        rdata: &Rdata,
    ) -> u16 {
        // Synthesised records are answers; an additional record of the `*` name itself
        // (the address of an MX target `*.x`) keeps the literal name.
        let synthesised = !matches!(sec, Section::Additional);
        if synthesised && self.wild_owner && owner == &self.buf[HEADER_LEN..HEADER_LEN + self.qlen]
        {
            self.buf
                .extend_from_slice(&(0xC000 | HEADER_LEN as u16).to_be_bytes());
        } else {
            self.name(owner);
        }
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&class.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        let rdata_at = (self.buf.len() - self.tail_start) as u16;
        match rdata {
            Rdata::Opaque(b) => self.buf.extend_from_slice(b),
            Rdata::Name(n) => self.name(n),
            Rdata::Mx(pref, n) => {
                self.buf.extend_from_slice(&pref.to_be_bytes());
                self.name(n);
            }
            Rdata::Soa(Soa {
                mname,
                rname,
                times,
            }) => {
                self.name(mname);
                self.name(rname);
                for t in times {
                    self.buf.extend_from_slice(&t.to_be_bytes());
                }
            }
        }
        let rdlen = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        self.counts[sec as usize] += 1;
        rdata_at
    }

    pub(crate) fn finish(self) -> Encoded {
        let optional = self.optional.map_or((0, 0), |(at, n)| {
            ((self.buf.len() - at) as u16, self.counts[2] - n)
        });
        Encoded {
            optional,
            tail: self.buf[self.tail_start..].to_vec(),
            fixups: self.fixups,
            counts: self.counts,
            qlen: self.qlen as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_against_question_and_records_fixups() {
        let q = b"\x03www\x07example\x04test\x00";
        let mut e = Encoder::new(q, true);
        e.rr(
            Section::Answer,
            q,
            5,
            1,
            30,
            &Rdata::Name(b"\x03web\x07example\x04test\x00".to_vec()),
        );
        e.rr(
            Section::Answer,
            b"\x03web\x07example\x04test\x00",
            1,
            1,
            30,
            &Rdata::Opaque(vec![1, 2, 3, 4]),
        );
        let enc = e.finish();
        // owner -> pointer to 12, no fixup
        assert_eq!(&enc.tail[..2], &[0xC0, 12]);
        // CNAME target: "web" + pointer to "example.test" at 16 (fixup), then owner of the
        // A record points at the target (fixup, inside the tail).
        assert_eq!(enc.fixups.len(), 2);
        assert_eq!(enc.counts, [2, 0, 0]);
    }
}
