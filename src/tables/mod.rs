//! Step 3 of `config -> compile -> tables -> shards`: the immutable answer tables a shard
//! reads. One [`Snapshot`] holds everything a query needs; the control thread swaps it whole
//! behind one pointer (see `control::Published`), so a shard sees either the old or the new
//! configuration, never a mix.
//!
//! Every possible answer is precompiled into an [`Answer`]: the wire bytes that follow the
//! question (answer, authority and additional sections), with name compression already done
//! against the question name. Answering is then: copy the header and question, copy the
//! tail, patch the few compression pointers that move when the question name is longer than
//! the name the tail was compiled for (wildcards, NXDOMAIN, referrals), append OPT.

pub mod chunked;
pub mod gslb;
mod health;
pub mod index;
pub mod lists;

pub use health::HealthState;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::gslb::Gslb;
use crate::dns::rtype;

/// Flag in a typed answer index: the rest is an access domain index (a GSLB answer).
pub const DYN: u32 = 1 << 31;

/// "No index" in the u32 index fields.
pub const NONE: u32 = u32::MAX;

/// Longest CNAME chain followed inside a zone (Knot and NSD stop in the same range): by the
/// compiler for the chains it precompiles, by the hot path for those it assembles.
pub const MAX_CHAIN: usize = 12;

/// One precompiled answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// RCODE (0 NOERROR, 3 NXDOMAIN).
    pub rcode: u8,
    /// Authoritative answer flag (false for referrals).
    pub aa: bool,
    /// Length of the name the tail was compiled against; the question name is this long
    /// or longer (it has that name as a suffix).
    pub qlen: u8,
    /// ANCOUNT, NSCOUNT, ARCOUNT of the tail.
    pub counts: [u16; 3],
    /// Tail bytes: `Snapshot::arena[start..start + len]`.
    pub start: u32,
    /// Tail length.
    pub len: u32,
    /// Positions (in the tail) of compression pointers to shift by the question-length
    /// difference: `Snapshot::fixups[fix_start..fix_start + fix_len]`.
    pub fix_start: u32,
    /// Number of fixups.
    pub fix_len: u32,
    /// Octets at the end of the tail that may be left out to fit (optional additional
    /// records: addresses of NS, MX and SRV targets), and how many records they hold.
    pub opt_len: u16,
    /// Records in `opt_len`.
    pub opt_count: u16,
    /// Where the answer goes on at query time: the node of a scheduled name that a CNAME
    /// chain reached (its records are chosen per query), or [`NONE`].
    pub next: u32,
    /// Tail offset of the name the answer goes on from (a CNAME's RDATA).
    pub next_at: u16,
}

/// One name in the index.
#[derive(Debug, Clone)]
pub struct Node {
    /// Zone index.
    pub zone: u32,
    /// Node index of this name's `*` child, or [`NONE`].
    pub wildcard: u32,
    /// At or below a zone cut: every query here gets the referral `other` (but a DS query
    /// at the cut itself, answered from `types`).
    pub cut: bool,
    /// The DNAME of this name, for names below it (RFC 6672): its answer, compiled against
    /// this name, or [`NONE`].
    pub dname: u32,
    /// Answers by qtype: `Snapshot::types[types_start..types_start + types_len]`.
    pub types_start: u32,
    /// Number of typed answers.
    pub types_len: u32,
    /// Answer for any other qtype (NODATA, CNAME chain, or the referral).
    pub other: u32,
    /// Answer to ANY over UDP (RFC 8482: one RRset).
    pub any_udp: u32,
    /// Answer to ANY over TCP (every RRset).
    pub any_tcp: u32,
}

/// Per-zone data.
#[derive(Debug, Clone)]
pub struct ZoneInfo {
    /// Lowercased wire name of the apex.
    pub name: Box<[u8]>,
    /// Answer for names that do not exist in the zone.
    pub nxdomain: u32,
    /// Answer for a type a name of the zone does not have (NODATA).
    pub nodata: u32,
}

pub use index::{NameHasher, NameIndex};

/// The name tables: every name's node and precompiled answers, as the zone compiler
/// builds them. A reload whose zones and access-domain names are those of the snapshot it
/// replaces shares them with it ([`Names::digest`]).
#[derive(Debug, Default)]
pub struct Names {
    /// Lowercased wire name -> node index, for every name in every zone (empty
    /// non-terminals included, so the closest encloser is found by suffix lookups).
    pub index: NameIndex,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// (qtype, answer index), grouped per node.
    pub types: Vec<(u16, u32)>,
    /// Answers.
    pub answers: Vec<Answer>,
    /// Tail bytes of all answers.
    pub arena: Vec<u8>,
    /// Fixup positions of all answers.
    pub fixups: Vec<u16>,
    /// Zones.
    pub zones: Vec<ZoneInfo>,
    /// One of them is the root zone `.` (names outside the others are its).
    pub root_zone: bool,
    /// Most labels of any name in the index.
    pub max_labels: u8,
    /// CH TXT names (lowercased wire) and their answers.
    pub chaos: Vec<(Box<[u8]>, u32)>,
    /// Each access domain's NODATA answer (its zone's), for [`gslb::AdTable::nodata`].
    pub ad_nodata: Vec<u32>,
    /// Digest of everything the tables were compiled from: the zones, the CH TXT texts,
    /// and the name, type, zone and `enabled` of every access domain in order.
    pub digest: u64,
    /// The digest of each access-domain segment's part of that, in segment order (a
    /// segment shared with the next configuration is not hashed again).
    pub seg_digests: Vec<u64>,
    /// Digest of the zones and CH TXT texts alone: with it unchanged, names added,
    /// removed or given other access domains are patched into a copy of these tables
    /// rather than compiled again (`compile::patch`).
    pub zones_digest: u64,
    /// Per node: some other name lies directly below it (control side: a name that
    /// loses its access domains is then kept as an empty non-terminal). May say so of a
    /// name whose children have all gone since the last full compile.
    pub has_child: Vec<bool>,
    /// Nodes and typed answers no name refers to any more, left by patches (a full
    /// compile starts again from none).
    pub garbage: usize,
    /// Made by patching the tables of the snapshot before (not compiled).
    pub patched: bool,
}

/// Everything a shard needs to answer, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// Configuration generation (1 for the first load, +1 per successful reload).
    pub generation: u64,
    /// The name tables (shared with the previous snapshot when they would be the same).
    pub names: Arc<Names>,
    /// Largest UDP payload we send.
    pub udp_payload: u16,
    /// NSID (RFC 5001) for queries that ask for it; `None`: none is sent.
    pub nsid: Option<Box<[u8]>>,
    /// DNS cookie secrets (RFC 7873, RFC 9018); `None`: cookies are off and the option is
    /// ignored like any unknown one.
    pub cookies: Option<crate::dns::cookie::Secrets>,
    /// Over UDP, BADCOOKIE for a query with a client cookie but no valid server cookie.
    pub require_cookie: bool,
    /// Response rate limiting settings (each shard keeps its own table), or off.
    pub rrl: Option<Arc<crate::config::Rrl>>,
    /// GSLB tables (empty without access domains).
    pub gslb: gslb::GslbTables,
    /// Health bitmaps of this snapshot (written by `health::Writer` only).
    pub health: Arc<HealthState>,
    /// The GSLB model by name, for the health writer and the control API.
    pub model: Model,
    /// Which route slots were copied from the snapshot this one replaces (for the health
    /// writer, which then copies their active pools too).
    pub reuse: Reuse,
    /// Per-domain metrics: the counter slot of each access domain and line (empty when
    /// `[metrics] per-domain` is off). Set by the control side before publishing.
    pub metric_series: MetricSeries,
}

impl Reuse {
    /// Made from generation `from` (0: nothing) with slot runs `slots` copied and
    /// `compiled` access domains compiled.
    pub fn made(from: u64, slots: Vec<(u32, u32, u32)>, compiled: u32) -> Self {
        Self {
            from,
            slots,
            compiled,
            ..Self::default()
        }
    }
}

/// How a snapshot's GSLB rows were made from those of the snapshot it replaces: the
/// access-domain segments (included files) the two configurations share were copied, not
/// compiled again.
#[derive(Debug, Default)]
pub struct Reuse {
    /// The generation of the snapshot they were copied from (0: nothing was).
    pub from: u64,
    /// Route slots copied, as runs: (first slot here, first slot there, count). A copied
    /// slot has the same access domain (by name and type), lines and candidate pools.
    pub slots: Vec<(u32, u32, u32)>,
    /// Access domains compiled afresh (the others were copied).
    pub compiled: u32,
    /// Compiled in place: every slot is where it was in the snapshot replaced, and so is
    /// its active pool (the `HealthState` shares the untouched chunks); these slots' routes
    /// were compiled again. `None`: the layout is new (see `slots`).
    pub in_place: Option<Vec<std::ops::Range<usize>>>,
    /// Compiled in place: the access domains whose rows were (by index).
    pub rows: Vec<std::ops::Range<usize>>,
    /// The pools' members, their number or which addresses are enabled changed: the
    /// health state shares no chunk of active pools with the snapshot replaced, whose
    /// pools answer as they did until the swap. (A change of an address's mode or a
    /// pool's health condition moves active pools in the shared chunks before the swap,
    /// as a probe verdict would: the tables they index are the same.)
    pub health_fresh: bool,
    /// Entries of the stored-once lists after the last full compile or reclaim
    /// (incremental compiles append; past twice as many, the lists no row names are
    /// reclaimed in place).
    pub lists_baseline: usize,
    /// This compile reclaimed the lists no row names any more (`compile/compact.rs`).
    pub compacted: bool,
    /// The compiler's list index, handed from snapshot to snapshot ([`gslb::RouteInterner`];
    /// taken by the compile that uses it).
    pub interner: std::sync::Mutex<Option<Box<gslb::RouteInterner>>>,
}

/// The counter slot of each access domain and line, for the shards' per-domain counters:
/// slots are given by name and kept across reloads (`control/metrics`), so a shard's
/// counts stay attributed to the right name whichever snapshot it answered from.
#[derive(Debug, Default)]
pub struct MetricSeries {
    /// Slot per access domain index (empty: per-domain metrics off).
    pub ads: Box<[u32]>,
    /// Slot per line index.
    pub lines: Box<[u32]>,
}

/// One route slot: an access domain's candidate pools for some lines. Slot `s` is route `s`
/// of [`gslb::GslbTables::routes`], whose candidate list it shares.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Access domain index.
    pub ad: u32,
    /// The line whose own route this is, or [`NONE`] for the access domain's default route
    /// (which also answers every line without pools of its own).
    pub line: u32,
}

/// The GSLB model by name (control side; the hot path reads `gslb` and `health`): the
/// validated configuration, shared with [`crate::config::Config`] rather than copied, and
/// one [`Slot`] per route.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Lines, health checks, addresses, pools and access domains, as configured.
    pub gslb: Arc<Gslb>,
    /// Route slots.
    pub slots: chunked::Chunked<Slot>,
}

impl std::ops::Deref for Model {
    type Target = Gslb;
    fn deref(&self) -> &Gslb {
        &self.gslb
    }
}

impl Snapshot {
    /// Candidate pools of slot `s`, in order.
    pub fn slot_pools(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        let r = &self.gslb.routes[s];
        self.gslb.route_pools[r.start as usize..(r.start + r.len) as usize]
            .iter()
            .map(|&(p, _)| p as usize)
    }

    /// Indices of the lines slot `s` answers: its own line, or for a default route every
    /// line that takes it.
    pub fn slot_lines(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        let slot = self.model.slots[s];
        let ad = &self.gslb.ads[slot.ad as usize];
        let nearest = ad.policy == crate::config::gslb::PoolPolicy::Nearest;
        // A line's own route answers that line alone; a default route answers `default`
        // (and under nearest, every line that maps to it).
        let range = if slot.line != NONE {
            slot.line as usize..slot.line as usize + 1
        } else if nearest {
            0..self.model.lines.len()
        } else {
            0..1
        };
        range.filter(move |&l| {
            slot.line != NONE || !nearest || self.gslb.route_of(ad, l) == ad.routes
        })
    }

    /// Whether slot `s` has an active pool that matters (global availability, nearest).
    pub fn slot_tracked(&self, s: usize) -> bool {
        let ad = &self.gslb.ads[self.model.slots[s].ad as usize];
        matches!(
            ad.policy,
            crate::config::gslb::PoolPolicy::GlobalAvailability { .. }
                | crate::config::gslb::PoolPolicy::Nearest
        )
    }

    /// Name key of a slot: (`name TYPE` of its access domain, its line names joined by
    /// commas).
    pub fn slot_key(&self, s: usize) -> (String, String) {
        let ad = &self.model.access_domains[self.model.slots[s].ad as usize];
        let lines: Vec<&str> = self
            .slot_lines(s)
            .map(|l| self.model.lines[l].name.as_str())
            .collect();
        (crate::config::gslb::ad_key(ad), lines.join(","))
    }

    /// A 64-bit digest of every slot's [`Self::slot_key`], without building its strings:
    /// what health carries state by across reloads (a million access domains have ~10M
    /// slots). Equal keys give equal digests in any snapshot: the line set of a default
    /// route depends only on its access domain's row of `line_routes`, so it is hashed
    /// once per row, and every slot costs one hash of two words.
    pub fn slot_digests(&self) -> impl Iterator<Item = u64> + '_ {
        self.slot_digests_in(0..self.model.slots.len())
    }

    /// [`Self::slot_digests`] of the slots in `range`.
    pub fn slot_digests_in(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = u64> + '_ {
        use std::hash::{BuildHasher, Hash, Hasher};
        let fixed = foldhash::fast::FixedState::with_seed(0x67746d64);
        let line_hash: Vec<u64> = self
            .model
            .lines
            .iter()
            .map(|l| fixed.hash_one(&l.name))
            .collect();
        let count = line_hash.len();
        let set_hash = move |lines: &mut dyn Iterator<Item = usize>| {
            let mut h = foldhash::fast::FixedState::with_seed(0x67746d64).build_hasher();
            for l in lines {
                line_hash[l].hash(&mut h);
            }
            h.finish()
        };
        let single: Vec<u64> = (0..count)
            .map(|l| set_hash(&mut std::iter::once(l)))
            .collect();
        let mut by_row: HashMap<u32, u64> = HashMap::new();
        let mut last = (NONE, 0u64);
        self.model.slots.range(range).map(move |slot| {
            let ad = &self.gslb.ads[slot.ad as usize];
            if last.0 != slot.ad {
                let m = &self.model.access_domains[slot.ad as usize];
                let mut h = fixed.build_hasher();
                m.name.hash(&mut h);
                m.rtype.hash(&mut h);
                last = (slot.ad, h.finish());
            }
            let lines = if slot.line != NONE {
                single[slot.line as usize]
            } else if ad.policy == crate::config::gslb::PoolPolicy::Nearest {
                *by_row.entry(ad.pattern).or_insert_with(|| {
                    let mut lines = (0..self.model.lines.len())
                        .filter(|&l| self.gslb.route_of(ad, l) == ad.routes);
                    set_hash(&mut lines)
                })
            } else {
                single[0]
            };
            fixed.hash_one((last.1, lines))
        })
    }
}

/// Where a name is in the index.
pub(crate) enum Located {
    /// The name itself.
    Exact(u32),
    /// Its closest existing ancestor.
    Below(u32),
    /// In no zone.
    Nowhere,
}

/// Result of a table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Answer with this precompiled answer.
    Answer(u32),
    /// Answer from access domain N (GSLB).
    Gslb(u32),
    /// Below a DNAME: synthesise from this answer (the DNAME RRset, compiled against its
    /// owner, which is a suffix of the question name).
    Dname(u32),
    /// Not ours: REFUSED.
    Refused,
}

// `lookup` and `chaos`, which take a parsed query, are the hot path's: `wire/lookup.rs`.
impl Snapshot {
    /// [`Self::lookup`] for any lowercased wire name with the offsets of its labels; also
    /// returns the zone that answers ([`NONE`] when none does).
    pub fn lookup_in(&self, name: &[u8], offsets: &[u8], qtype: u16, tcp: bool) -> (Lookup, u32) {
        match self.locate(name, offsets) {
            Located::Exact(n) => (
                self.pick_node(n, qtype, tcp),
                self.names.nodes[n as usize].zone,
            ),
            Located::Below(e) => (self.below(e, qtype, tcp), self.names.nodes[e as usize].zone),
            Located::Nowhere => (Lookup::Refused, NONE),
        }
    }

    /// The node of `name`, or of its closest existing ancestor.
    #[inline]
    pub(crate) fn locate(&self, name: &[u8], offsets: &[u8]) -> Located {
        if let Some(n) = self.names.index.get(name) {
            return Located::Exact(n);
        }
        // Suffixes with more labels than any indexed name cannot be found: a deep random
        // name costs no more probes than the deepest name served.
        let first = offsets
            .len()
            .saturating_sub(self.names.max_labels as usize)
            .max(1);
        for &off in &offsets[first.min(offsets.len())..] {
            if let Some(e) = self.names.index.get(&name[off as usize..]) {
                return Located::Below(e);
            }
        }
        // A zone named `.` encloses every name (its apex is not among the label offsets).
        if self.names.root_zone && name.len() > 1 {
            if let Some(e) = self.names.index.get(&[0u8][..]) {
                return Located::Below(e);
            }
        }
        Located::Nowhere
    }

    /// The answer for a name that does not exist below node `e` (its closest encloser): the
    /// referral below a cut, DNAME synthesis, the wildcard, or NXDOMAIN.
    #[inline]
    pub(crate) fn below(&self, e: u32, qtype: u16, tcp: bool) -> Lookup {
        let node = &self.names.nodes[e as usize];
        if node.cut {
            Lookup::Answer(node.other)
        } else if node.dname != NONE {
            Lookup::Dname(node.dname)
        } else if node.wildcard != NONE {
            self.pick_node(node.wildcard, qtype, tcp)
        } else {
            Lookup::Answer(self.names.zones[node.zone as usize].nxdomain)
        }
    }

    /// The answer at node `n` for `qtype`.
    #[inline]
    pub fn pick_node(&self, n: u32, qtype: u16, tcp: bool) -> Lookup {
        let a = self.pick(n, qtype, tcp);
        if a & DYN != 0 {
            Lookup::Gslb(a & !DYN)
        } else {
            Lookup::Answer(a)
        }
    }

    #[inline]
    fn pick(&self, n: u32, qtype: u16, tcp: bool) -> u32 {
        let node = &self.names.nodes[n as usize];
        if node.cut {
            // The parent answers DS at the cut (RFC 4035 3.1.4.1): the only typed entry.
            if qtype == rtype::DS && node.types_len > 0 {
                return self.names.types[node.types_start as usize].1;
            }
            return node.other;
        }
        if qtype == rtype::ANY {
            return if tcp { node.any_tcp } else { node.any_udp };
        }
        let s = node.types_start as usize;
        for &(t, a) in &self.names.types[s..s + node.types_len as usize] {
            if t == qtype {
                return a;
            }
        }
        node.other
    }

    /// The tail bytes and fixups of an answer.
    #[inline]
    pub fn tail(&self, a: &Answer) -> (&[u8], &[u16]) {
        (
            &self.names.arena[a.start as usize..(a.start + a.len) as usize],
            &self.names.fixups[a.fix_start as usize..(a.fix_start + a.fix_len) as usize],
        )
    }
}
