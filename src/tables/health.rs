//! The health state of one snapshot, stored beside the tables it indexes (addresses, pools
//! and route slots are numbered by the compiler): three flat arrays of atomics, a bit per
//! address (up after operator pins and probes), a bit per pool (its health condition
//! holds), and a slot per route of every access domain holding the active pool (global
//! availability and nearest policies). Shards do one relaxed load per word they need;
//! `health::Writer` is the only code that stores into them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::chunked::Chunked;
use super::gslb::NO_POOL;

/// The bitmaps and active-pool slots of one snapshot.
#[derive(Debug)]
pub struct HealthState {
    // Stored into by `health::Writer` alone; shards read through the methods below.
    pub(crate) addr_up: Box<[AtomicU64]>,
    pub(crate) pool_up: Box<[AtomicU64]>,
    pub(crate) active: Chunked<AtomicU32>,
}

fn words(n: usize) -> Box<[AtomicU64]> {
    (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

impl HealthState {
    /// Everything down, no active pool; the writer fills it before it is published.
    pub fn new(addrs: usize, pools: usize, slots: usize) -> Self {
        Self::with_active(
            addrs,
            pools,
            Chunked::from_fn(slots, |_| AtomicU32::new(NO_POOL)),
        )
    }

    /// Fresh bitmaps (the writer fills them) beside `active`.
    fn with_active(addrs: usize, pools: usize, active: Chunked<AtomicU32>) -> Self {
        Self {
            addr_up: words(addrs),
            pool_up: words(pools),
            active,
        }
    }

    /// The state of a snapshot with `old`'s slots first (`slots` in all, new ones
    /// after): fresh bitmaps (the writer fills them), and `old`'s active pools, shared
    /// but for the chunks that hold one of `touched` (the slots whose route changed) or
    /// a new slot, which are copies (new slots: none until the writer fills them): the
    /// snapshot being replaced goes on reading the pools of its own routes.
    pub fn sharing(
        old: &Self,
        addrs: usize,
        pools: usize,
        slots: usize,
        touched: impl Iterator<Item = usize>,
    ) -> Self {
        let fresh =
            |s: usize| AtomicU32::new(old.active.get(s).map_or(NO_POOL, |a| a.load(Relaxed)));
        let active = old.active.with_fresh_chunks(slots, touched, fresh);
        Self::with_active(addrs, pools, active)
    }

    /// The state of a snapshot whose first `keep` slots are `old`'s (the same routes, in
    /// the same places), of `slots` in all: fresh bitmaps, the active pools of the whole
    /// chunks among those `keep` shared with `old`, the others none until the writer
    /// fills them.
    pub fn sharing_prefix(
        old: &Self,
        addrs: usize,
        pools: usize,
        keep: usize,
        slots: usize,
    ) -> Self {
        let none = |_| AtomicU32::new(NO_POOL);
        Self::with_active(addrs, pools, old.active.sharing_prefix(keep, slots, none))
    }

    /// Whether address `i` may be answered.
    #[inline]
    pub fn addr_up(&self, i: u32) -> bool {
        self.addr_up[(i / 64) as usize].load(Relaxed) & (1 << (i % 64)) != 0
    }

    /// Whether pool `i` is healthy.
    #[inline]
    pub fn pool_up(&self, i: u32) -> bool {
        self.pool_up[(i / 64) as usize].load(Relaxed) & (1 << (i % 64)) != 0
    }

    /// The active pool of route slot `s` ([`NO_POOL`]: none is healthy).
    #[inline]
    pub fn active(&self, s: u32) -> u32 {
        self.active[s as usize].load(Relaxed)
    }

    pub(crate) fn store_bits(dst: &[AtomicU64], bits: &[bool]) {
        for (w, chunk) in dst.iter().zip(bits.chunks(64)) {
            let mut v = 0u64;
            for (i, &b) in chunk.iter().enumerate() {
                v |= (b as u64) << i;
            }
            if w.load(Relaxed) != v {
                w.store(v, Relaxed);
            }
        }
    }
}
