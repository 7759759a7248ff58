//! What a shard counts: one [`Counters`] per shard thread (the UDP loop and the TCP loop of
//! a shard each have their own), written only by that thread with relaxed load + store (no
//! read-modify-write, no shared cache line), read by the control thread when it sums them
//! (the shutdown summary, the `/metrics` scrape). No logic reads a counter.
//!
//! Answers are counted in one matrix by QTYPE group and RCODE: one table lookup each and one
//! counter per query, no more than the per-RCODE counters it replaced. Per access domain and
//! per line counts (`[metrics] per-domain`) go to fixed arrays indexed by the series slots
//! the snapshot carries ([`crate::tables::MetricSeries`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::tables::gslb::Selection;
use crate::tables::MetricSeries;
use crate::wire::{Outcome, Transport};

/// The QTYPE groups queries are counted by, in matrix order (`other`: every other type, and
/// queries whose question did not parse).
pub const QTYPE_GROUPS: [&str; 11] = [
    "A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "DS", "ANY", "other",
];
const QTYPE_OTHER: u8 = 10;

/// The RCODEs answers are counted by, in matrix order.
pub const RCODES: [&str; 11] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "NOTAUTH",
    "BADVERS",
    "BADCOOKIE",
    "other",
];
const RCODE_OTHER: u8 = 10;

/// QTYPE -> group, for QTYPEs up to 256 (every larger one is looked up as 256: `other`).
static QTYPE_INDEX: [u8; 257] = {
    let mut t = [QTYPE_OTHER; 257];
    let types: [usize; 10] = [1, 28, 5, 15, 16, 2, 6, 33, 43, 255];
    let mut i = 0;
    while i < types.len() {
        t[types[i]] = i as u8;
        i += 1;
    }
    t
};

/// RCODE (with the extended bits) -> column, for RCODEs up to 31 (every larger one is
/// looked up as 31, unassigned: `other`).
static RCODE_INDEX: [u8; 32] = {
    let mut t = [RCODE_OTHER; 32];
    let codes: [usize; 10] = [0, 1, 2, 3, 4, 5, 6, 9, 16, 23];
    let mut i = 0;
    while i < codes.len() {
        t[codes[i]] = i as u8;
        i += 1;
    }
    t
};

/// Why a TCP connection was closed, as [`Counters::tcp_closed`] indexes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it, an error ended it, or it sent a message shorter than a header.
    Client = 0,
    /// No complete query for `tcp-idle-timeout`.
    IdleTimeout = 1,
    /// A started message or an answer not moved within `tcp-io-timeout`.
    IoTimeout = 2,
    /// Closed to make room for a new connection (at `tcp-max-connections`, or out of file
    /// descriptors).
    Evicted = 3,
}

/// The label of each [`CloseReason`], in index order.
pub const CLOSE_REASONS: [&str; 4] = ["client", "idle_timeout", "io_timeout", "evicted"];

#[inline]
pub(super) fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

/// The counters of one shard thread.
#[derive(Debug)]
#[repr(align(128))]
pub struct Counters {
    /// The shard's number.
    pub shard: usize,
    /// The transport this thread serves.
    pub transport: Transport,
    /// Answers by QTYPE group and RCODE column, at `group << 4 | column` (16 x 16, so the
    /// index needs no bounds check; RRL-dropped answers included).
    answers: [AtomicU64; 256],
    /// Queries `respond` dropped without an answer (QR set, shorter than a header).
    pub dropped: AtomicU64,
    /// Packets lost to I/O: datagrams truncated on receipt, failed sends.
    pub io_dropped: AtomicU64,
    /// Responses with TC set.
    pub truncated: AtomicU64,
    /// TCP connections accepted.
    pub tcp_connections: AtomicU64,
    /// TCP connections closed at once for exceeding `tcp-max-connections-per-source`.
    pub tcp_refused: AtomicU64,
    /// TCP connections closed, by [`CloseReason`].
    pub tcp_closed: [AtomicU64; CLOSE_REASONS.len()],
    /// UDP responses response rate limiting held back (dropped or slipped).
    pub limited: AtomicU64,
    /// Of those, sent truncated (TC=1, no records) instead of dropped.
    pub slipped: AtomicU64,
    /// GSLB answers by access-domain series slot (the last is the overflow slot).
    domains: Box<[AtomicU64]>,
    /// GSLB answers by line series slot (the last is the overflow slot).
    lines: Box<[AtomicU64]>,
    /// Turns of the thread's loop (at least one per `WAIT_BOUND`): the liveness the
    /// systemd watchdog is fed from.
    pub heartbeat: AtomicU64,
}

impl Counters {
    /// Zeroed counters for the thread of shard `shard` serving `transport`, with room for
    /// `series` access domain and line series each (`[metrics] max-series`) plus their
    /// overflow slots.
    pub fn new(shard: usize, transport: Transport, series: usize) -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            shard,
            transport,
            answers: std::array::from_fn(|_| AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            io_dropped: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            tcp_connections: AtomicU64::new(0),
            tcp_refused: AtomicU64::new(0),
            tcp_closed: std::array::from_fn(|_| AtomicU64::new(0)),
            limited: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
            domains: zeros(series + 1),
            lines: zeros(series + 1),
            heartbeat: AtomicU64::new(0),
        }
    }

    /// Records the outcome of one query of type `qtype` (0 when its question did not parse).
    #[inline]
    pub fn record(&self, o: &Outcome, qtype: u16) {
        if o.len == 0 {
            bump(&self.dropped);
            return;
        }
        // Clamped, not tested: no branch, no bounds check.
        let g = QTYPE_INDEX[(qtype as usize).min(256)] as usize;
        let r = RCODE_INDEX[(o.rcode as usize).min(31)] as usize;
        bump(&self.answers[(g << 4 | r) & 0xFF]);
        if o.truncated {
            bump(&self.truncated);
        }
    }

    /// Records which access domain and line a GSLB selection answered (`[metrics]
    /// per-domain`). Out of line: only queries that made a selection call it.
    #[inline(never)]
    pub fn record_selection(&self, series: &MetricSeries, sel: Selection) {
        if let Some(&s) = series.ads.get(sel.ad as usize) {
            if let Some(c) = self.domains.get(s as usize) {
                bump(c);
            }
            if let Some(c) = series.lines.get(sel.line as usize) {
                if let Some(c) = self.lines.get(*c as usize) {
                    bump(c);
                }
            }
        }
    }

    /// Counts a packet dropped outside `respond` (a truncated datagram, a failed send).
    #[inline]
    pub fn drop_one(&self) {
        bump(&self.io_dropped);
    }

    /// Answers of QTYPE group `g` and RCODE column `r` (indices of [`QTYPE_GROUPS`] and
    /// [`RCODES`]).
    pub fn answers(&self, g: usize, r: usize) -> u64 {
        self.answers[(g << 4 | r) & 0xFF].load(Relaxed)
    }

    /// GSLB answers of access-domain series slot `s`.
    pub fn domain(&self, s: usize) -> u64 {
        self.domains.get(s).map_or(0, |c| c.load(Relaxed))
    }

    /// GSLB answers of line series slot `s`.
    pub fn line(&self, s: usize) -> u64 {
        self.lines.get(s).map_or(0, |c| c.load(Relaxed))
    }

    /// Adds these counters into a plain summary.
    pub fn add_to(&self, s: &mut Summary) {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let by_rcode =
            |r: usize| -> u64 { (0..QTYPE_GROUPS.len()).map(|q| self.answers(q, r)).sum() };
        let answered: u64 = (0..RCODES.len()).map(by_rcode).sum();
        let queries = answered + g(&self.dropped);
        s.queries += queries;
        if self.transport == Transport::Tcp {
            s.tcp_queries += queries;
        }
        s.noerror += by_rcode(0);
        s.formerr += by_rcode(1);
        s.servfail += by_rcode(2);
        s.nxdomain += by_rcode(3);
        s.notimp += by_rcode(4);
        s.refused += by_rcode(5);
        s.notauth += by_rcode(7);
        s.badvers += by_rcode(8);
        s.badcookie += by_rcode(9);
        s.dropped += g(&self.dropped) + g(&self.io_dropped);
        s.truncated += g(&self.truncated);
        s.tcp_connections += g(&self.tcp_connections);
        s.tcp_refused += g(&self.tcp_refused);
        s.limited += g(&self.limited);
        s.slipped += g(&self.slipped);
    }
}

/// Summed counters (the shutdown summary).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Summary {
    pub queries: u64,
    pub noerror: u64,
    pub formerr: u64,
    pub servfail: u64,
    pub nxdomain: u64,
    pub notimp: u64,
    pub refused: u64,
    pub notauth: u64,
    pub badvers: u64,
    pub dropped: u64,
    pub truncated: u64,
    pub tcp_queries: u64,
    pub tcp_connections: u64,
    pub tcp_refused: u64,
    pub badcookie: u64,
    pub limited: u64,
    pub slipped: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queries={} noerror={} nxdomain={} refused={} formerr={} servfail={} notimp={} \
             notauth={} badvers={} dropped={} truncated={} tcp_queries={} tcp_connections={} \
             tcp_refused={} badcookie={} rrl_limited={} rrl_slipped={}",
            self.queries,
            self.noerror,
            self.nxdomain,
            self.refused,
            self.formerr,
            self.servfail,
            self.notimp,
            self.notauth,
            self.badvers,
            self.dropped,
            self.truncated,
            self.tcp_queries,
            self.tcp_connections,
            self.tcp_refused,
            self.badcookie,
            self.limited,
            self.slipped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_columns() {
        let at = |t: u16| QTYPE_GROUPS[QTYPE_INDEX[(t as usize).min(256)] as usize];
        for (t, want) in [
            (1, "A"),
            (28, "AAAA"),
            (5, "CNAME"),
            (15, "MX"),
            (16, "TXT"),
            (2, "NS"),
            (6, "SOA"),
            (33, "SRV"),
            (43, "DS"),
            (255, "ANY"),
            (0, "other"),
            (257, "other"),
            (65535, "other"),
        ] {
            assert_eq!(at(t), want, "{t}");
        }
        let col = |r: u16| RCODES[RCODE_INDEX[(r as usize).min(31)] as usize];
        for (r, want) in [
            (0, "NOERROR"),
            (3, "NXDOMAIN"),
            (6, "YXDOMAIN"),
            (9, "NOTAUTH"),
            (16, "BADVERS"),
            (23, "BADCOOKIE"),
            (8, "other"),
            (4095, "other"),
        ] {
            assert_eq!(col(r), want, "{r}");
        }
    }

    #[test]
    fn summary_sums_the_matrix() {
        let c = Counters::new(0, Transport::Tcp, 0);
        let o = |rcode, len| Outcome {
            len,
            rcode,
            truncated: false,
            key: 0,
        };
        c.record(&o(0, 40), 1);
        c.record(&o(0, 40), 28);
        c.record(&o(3, 40), 1);
        c.record(&o(0, 0), 1);
        c.drop_one();
        assert_eq!(c.answers(0, 0), 1);
        assert_eq!(c.answers(1, 0), 1);
        assert_eq!(c.answers(0, 3), 1);
        let mut s = Summary::default();
        c.add_to(&mut s);
        assert_eq!(
            (s.queries, s.tcp_queries, s.noerror, s.nxdomain),
            (4, 4, 2, 1)
        );
        assert_eq!(s.dropped, 2);
    }
}
