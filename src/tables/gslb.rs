//! GSLB answer tables, read by shards together with the lock-free health bitmaps
//! ([`super::HealthState`]). Everything that does not depend on the query or on
//! health is precompiled: the line index (prefixes flattened into disjoint sorted ranges),
//! each access domain's route per line, each route's candidate pools, and each address's
//! record data in wire form. The fallback (no candidate pool up) is walked from the pools'
//! address lists, not stored per route: over pools of hundreds of addresses, a stored list
//! per candidate list was the largest of the tables, and every reload adding one copied
//! it. At query time a shard finds the asker's line (one binary search), reads the
//! route's active pool (one atomic load) or draws one among healthy pools, picks addresses
//! by the pool's policy from the address bitmap, and writes `owner-pointer TYPE CLASS TTL
//! RDLENGTH RDATA` per address.

use foldhash::HashMap;

use super::chunked::Chunked;
use super::HealthState;
use crate::config::gslb::{AddressPolicy, Fallback, PoolPolicy};

/// "No pool" in the active-pool slots.
pub const NO_POOL: u32 = u32::MAX;

/// The asker, as the line lookup sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// IPv4 address.
    V4(u32),
    /// IPv6 address.
    V6(u128),
}

impl ClientAddr {
    /// From a raw `sockaddr_in`/`sockaddr_in6` as the kernel wrote it; v4-mapped v6
    /// addresses count as IPv4.
    #[inline]
    pub fn from_sockaddr(sa: &[u8]) -> Option<Self> {
        if sa.len() < 2 {
            return None;
        }
        let family = u16::from_ne_bytes([sa[0], sa[1]]) as i32;
        if family == libc::AF_INET && sa.len() >= 8 {
            Some(Self::V4(u32::from_be_bytes([sa[4], sa[5], sa[6], sa[7]])))
        } else if family == libc::AF_INET6 && sa.len() >= 24 {
            let mut b = [0u8; 16];
            b.copy_from_slice(&sa[8..24]);
            Some(Self::from_v6(u128::from_be_bytes(b)))
        } else {
            None
        }
    }

    /// IPv6, unwrapping v4-mapped addresses.
    #[inline]
    pub fn from_v6(v: u128) -> Self {
        if v >> 32 == 0xFFFF {
            Self::V4(v as u32)
        } else {
            Self::V6(v)
        }
    }

    /// From a std address.
    pub fn from_ip(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(a) => Self::V4(a.into()),
            std::net::IpAddr::V6(a) => Self::from_v6(a.into()),
        }
    }
}

/// One disjoint range of the address space and the line that owns it.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// First address.
    pub start: u128,
    /// Last address.
    pub end: u128,
    /// Line index (0 = default).
    pub line: u32,
}

/// One disjoint range of the IPv4 space and its line: 12 bytes rather than a [`Range`]'s
/// 48 (the IPv4 table is most of the index: 100,000 prefixes make as many ranges).
#[derive(Debug, Clone, Copy)]
pub struct Range4 {
    /// First address.
    pub start: u32,
    /// Last address.
    pub end: u32,
    /// Line index (0 = default).
    pub line: u32,
}

/// Longest-prefix match compiled to disjoint sorted ranges (Knot's geoip module sorts and
/// links its prefixes the same way, so a lookup is one binary search).
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    /// IPv4 ranges, covering 0..=u32::MAX. (The arrays are shared, not copied, by the
    /// snapshots of reloads that keep the lines.)
    pub v4: std::sync::Arc<[Range4]>,
    /// The IPv4 ranges' starts alone, 4 bytes each, for a cache-friendly binary search.
    pub v4_start: std::sync::Arc<[u32]>,
    /// IPv6 ranges covering the whole space.
    pub v6: std::sync::Arc<[Range]>,
}

impl LineIndex {
    /// Builds the index from per-line prefixes (network, length, line: sorted here, in
    /// place). Nested prefixes: the longest wins.
    pub fn build(v4: &mut [(u128, u8, u32)], v6: &mut [(u128, u8, u32)]) -> Self {
        let mut ranges4 = Vec::new();
        flatten(v4, 32, |start, end, line| {
            ranges4.push(Range4 {
                start: start as u32,
                end: end as u32,
                line,
            })
        });
        let mut ranges6 = Vec::new();
        flatten(v6, 128, |start, end, line| {
            ranges6.push(Range { start, end, line })
        });
        Self {
            v4_start: ranges4.iter().map(|r| r.start).collect(),
            v4: ranges4.into(),
            v6: ranges6.into(),
        }
    }

    /// The IPv4 ranges in the wide form the IPv6 ones have (control side).
    pub fn v4_ranges(&self) -> Vec<Range> {
        (self.v4.iter())
            .map(|r| Range {
                start: r.start as u128,
                end: r.end as u128,
                line: r.line,
            })
            .collect()
    }

    /// The asker's line and the ECS scope: the length of the largest aligned prefix around
    /// the address that lies wholly in its range, i.e. the prefix that decided the line.
    #[inline]
    pub fn lookup(&self, a: ClientAddr) -> (u32, u8) {
        match a {
            ClientAddr::V4(v) => {
                let i = self.v4_start.partition_point(|&s| s <= v);
                match i.checked_sub(1).and_then(|i| self.v4.get(i)) {
                    Some(r) => (r.line, scope(v as u128, r.start as u128, r.end as u128, 32)),
                    None => (0, 0),
                }
            }
            ClientAddr::V6(v) => {
                let i = self.v6.partition_point(|r| r.start <= v);
                match i.checked_sub(1).and_then(|i| self.v6.get(i)) {
                    Some(r) => (r.line, scope(v, r.start, r.end, 128)),
                    None => (0, 0),
                }
            }
        }
    }
}

/// The shortest prefix length `L` whose aligned block around `addr` lies in
/// `[start, end]`, in O(1): the block must not reach `start - 1` nor `end + 1`, i.e. `L`
/// must exceed the bits `addr` shares with each of them.
#[inline]
fn scope(addr: u128, start: u128, end: u128, bits: u32) -> u8 {
    let top = 128 - bits; // unused high bits of a v4 address held in a u128
    let shared = |other: u128| (addr ^ other).leading_zeros() - top;
    let below = if start == 0 { 0 } else { shared(start - 1) + 1 };
    let max = if bits == 32 { 0xFFFF_FFFF } else { u128::MAX };
    let above = if end >= max { 0 } else { shared(end + 1) + 1 };
    below.max(above).min(bits) as u8
}

/// The definition [`scope`] computes: the first length whose block fits (test oracle).
#[cfg(test)]
fn scope_by_scan(addr: u128, start: u128, end: u128, bits: u32) -> u8 {
    for len in 0..=bits {
        let host = bits - len;
        let mask: u128 = if host >= 128 {
            0
        } else {
            !((1u128 << host) - 1)
        };
        let lo = addr & mask;
        let hi = if host >= 128 {
            u128::MAX
        } else {
            lo | ((1u128 << host) - 1)
        };
        let hi = if bits == 32 { hi & 0xFFFF_FFFF } else { hi };
        if lo >= start && hi <= end {
            return len as u8;
        }
    }
    bits as u8
}

/// The disjoint ranges `prefixes` (network, length, line) make, in order, to `emit` as
/// (first, last, line); the space no prefix covers is line 0's. Sorts `prefixes` (the
/// only working memory besides a stack as deep as prefixes nest: the index of 100,000
/// prefixes is rebuilt whenever a line changes).
fn flatten(prefixes: &mut [(u128, u8, u32)], bits: u32, mut emit: impl FnMut(u128, u128, u32)) {
    let max: u128 = if bits == 32 { 0xFFFF_FFFF } else { u128::MAX };
    let span = |net: u128, len: u8| -> (u128, u128) {
        let host = bits - len as u32;
        let size_m1 = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        (net, net + size_m1)
    };
    // Networks aligned (the config's are: a caller's may not be), so that a shorter
    // prefix at the same start ends later.
    for p in prefixes.iter_mut() {
        let host = bits - p.1 as u32;
        p.0 = if host >= 128 { 0 } else { p.0 >> host << host };
    }
    // Outer prefixes first at the same start, so inner ones stack on top.
    prefixes.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    // Adjacent ranges of one line stay apart: each keeps the bounds of the prefix that
    // decided it, which the ECS scope is computed from.
    let mut emit = |s: u128, e: u128, line: u32| {
        if s <= e {
            emit(s, e, line);
        }
    };
    let mut stack: Vec<(u128, u128, u32)> = Vec::new();
    let mut cur: u128 = 0;
    let mut done = false; // `cur` passed the end of the space
    for &(n, l, line) in prefixes.iter() {
        let (s, e) = span(n, l);
        while let Some(&(_, te, tl)) = stack.last() {
            if te >= s {
                break;
            }
            emit(cur, te, tl);
            stack.pop();
            match te.checked_add(1) {
                Some(n) => cur = n,
                None => done = true,
            }
        }
        if !done && cur < s {
            let owner = stack.last().map_or(0, |t| t.2);
            emit(cur, s - 1, owner);
        }
        cur = s;
        stack.push((s, e, line));
    }
    while let Some((_, te, tl)) = stack.pop() {
        if !done {
            emit(cur, te, tl);
        }
        match te.checked_add(1) {
            Some(n) if n <= max => cur = n,
            _ => done = true,
        }
    }
    if !done && cur <= max {
        emit(cur, max, 0);
    }
}

/// An address as an answer: its record data.
#[derive(Debug, Clone, Copy)]
pub struct AddrTable {
    /// RDLENGTH + RDATA in `GslbTables::arena`.
    pub rdata_start: u32,
    /// Length of that.
    pub rdata_len: u16,
    /// In more than one pool's list (`GslbTables::addr_pools`): a fallback over several
    /// pools answers it once, so its pools are compared with the candidates before.
    pub shared: bool,
    /// Weight (weighted pools).
    pub weight: u32,
}

/// A pool as the shard sees it.
#[derive(Debug, Clone, Copy)]
pub struct PoolTable {
    /// Address indices: `GslbTables::pool_addrs[start..start + len]`.
    pub start: u32,
    /// Number of addresses.
    pub len: u32,
    /// Address policy.
    pub policy: AddressPolicy,
    /// Addresses per answer.
    pub answers: u32,
}

/// One route of an access domain: the candidate pools for a set of lines.
#[derive(Debug, Clone, Copy)]
pub struct RouteTable {
    /// (pool, weight): `GslbTables::route_pools[start..start + len]`, in order.
    pub start: u32,
    /// Number of pools.
    pub len: u32,
}

/// [`AdTable::fallback`]: NODATA.
pub const FALLBACK_NODATA: u32 = u32::MAX;
/// [`AdTable::fallback`]: every enabled address of the route's candidate pools.
pub const FALLBACK_ALL: u32 = u32::MAX - 1;

/// [`AdTable::fallback`] of a fallback rule (a pool's index for `fallback-pool`).
pub fn fallback_code(f: Fallback) -> u32 {
    match f {
        Fallback::NoData => FALLBACK_NODATA,
        Fallback::All => FALLBACK_ALL,
        Fallback::Pool(p) => p as u32,
    }
}

/// One access domain.
#[derive(Debug, Clone, Copy)]
pub struct AdTable {
    /// Record type answered.
    pub rtype: u16,
    /// TTL of the answers.
    pub ttl: u32,
    /// Pool policy.
    pub policy: PoolPolicy,
    /// First route of this access domain in [`GslbTables::routes`] (its default route).
    pub routes: u32,
    /// Number of routes.
    pub nroutes: u32,
    /// Route per line, relative to `routes`: row `pattern` of
    /// [`GslbTables::line_routes`] (rows are shared: most access domains map lines alike).
    pub pattern: u32,
    /// NODATA answer (static table index) for the NODATA fallback.
    pub nodata: u32,
    /// What it answers when no candidate pool is up: [`FALLBACK_NODATA`],
    /// [`FALLBACK_ALL`], or a pool's index ([`fallback_code`]). A CNAME answers the first
    /// address only.
    pub fallback: u32,
}

/// All GSLB tables of a snapshot.
#[derive(Debug, Clone, Default)]
pub struct GslbTables {
    /// Access domains.
    pub ads: Chunked<AdTable>,
    /// Routes.
    pub routes: Chunked<RouteTable>,
    /// Route pool lists (identical lists are stored once).
    pub route_pools: Vec<(u32, u32)>,
    /// Line -> route rows, `nlines` per row, relative to an access domain's first route.
    pub line_routes: Vec<u32>,
    /// Number of lines (row length of `line_routes`).
    pub nlines: u32,
    /// Pools.
    pub pools: Vec<PoolTable>,
    /// Pool address lists.
    pub pool_addrs: Vec<u32>,
    /// Each address's pools, in pool order: `addr_pools[addr_pools_at[a]..addr_pools_at[a
    /// + 1]]` (read for an address in several pools, by a fallback over them).
    pub addr_pools: Vec<u32>,
    /// Where each address's pools start in `addr_pools` (one more entry than addresses).
    pub addr_pools_at: Vec<u32>,
    /// Addresses.
    pub addrs: Vec<AddrTable>,
    /// Address record data.
    pub arena: Vec<u8>,
    /// The line index.
    pub lines: LineIndex,
    /// Use ECS for the line.
    pub use_ecs: bool,
}

impl GslbTables {
    /// The enabled addresses of pool `p` (none for an index out of range).
    #[inline]
    fn members(&self, p: u32) -> &[u32] {
        self.pools.get(p as usize).map_or(&[], |p| {
            &self.pool_addrs[p.start as usize..(p.start + p.len) as usize]
        })
    }

    /// Each fallback address of access domain `a` on `route`, in answer order, given to
    /// `f` until it returns `false`: every enabled address of the candidate pools (each
    /// once), or of the fallback pool; one only for a CNAME; none for NODATA.
    #[inline]
    pub fn each_fallback(&self, a: &AdTable, route: &RouteTable, mut f: impl FnMut(u32) -> bool) {
        let one = a.rtype == crate::dns::rtype::CNAME;
        match a.fallback {
            FALLBACK_NODATA => {}
            FALLBACK_ALL => {
                let pools =
                    &self.route_pools[route.start as usize..(route.start + route.len) as usize];
                for (k, &(p, _)) in pools.iter().enumerate() {
                    let earlier = &pools[..k];
                    if earlier.iter().any(|&(q, _)| q == p) {
                        continue; // a pool named twice: answered already
                    }
                    for &ai in self.members(p) {
                        // A pool lists an address once (the config says so): an address in
                        // several pools was answered if one of its pools came before (a
                        // few pools each, against the few candidates: never a scan of
                        // the members).
                        let before = |ai: u32| {
                            let of = self.addr_pools_at.get(ai as usize..ai as usize + 2);
                            let of = of.map_or(&[][..], |r| {
                                &self.addr_pools[r[0] as usize..r[1] as usize]
                            });
                            of.iter().any(|&q| earlier.iter().any(|&(e, _)| e == q))
                        };
                        if self.addrs[ai as usize].shared && before(ai) {
                            continue;
                        }
                        if !f(ai) || one {
                            return;
                        }
                    }
                }
            }
            p => {
                for &ai in self.members(p) {
                    if !f(ai) || one {
                        return;
                    }
                }
            }
        }
    }

    /// A copy of everything but the per-access-domain rows (`ads`, `routes`, left empty):
    /// the start of tables that keep these parts and replace some rows; `room`: the
    /// candidate-list entries to make room for.
    pub fn clone_shared(&self, room: usize) -> Self {
        let mut route_pools = Vec::with_capacity(self.route_pools.len() + room);
        route_pools.extend_from_slice(&self.route_pools);
        Self {
            ads: Chunked::default(),
            routes: Chunked::default(),
            route_pools,
            line_routes: self.line_routes.clone(),
            nlines: self.nlines,
            pools: self.pools.clone(),
            pool_addrs: self.pool_addrs.clone(),
            addr_pools: self.addr_pools.clone(),
            addr_pools_at: self.addr_pools_at.clone(),
            addrs: self.addrs.clone(),
            arena: self.arena.clone(),
            lines: self.lines.clone(),
            use_ecs: self.use_ecs,
        }
    }
}

/// The compiler's index of the lists stored once in [`GslbTables`] (`route_pools`,
/// `line_routes` rows): kept with the snapshot (control side, never read by
/// shards), so that a reload compiling only some access domains appends to those arrays
/// rather than storing again the lists that are already there.
#[derive(Debug, Default, Clone)]
pub struct RouteInterner {
    /// Line -> route rows, by content: their row number.
    pub patterns: HashMap<Vec<u32>, u32>,
    /// Candidate lists, by content: their start in `route_pools`.
    pub pool_lists: super::lists::ListIndex,
}

impl RouteInterner {
    /// `patterns` made anew over `line_routes`, `nlines` per row. Rows alike (those only
    /// gone access domains used may have come to be) all stay stored; any of them will
    /// do, the first is indexed.
    pub fn index_rows(&mut self, line_routes: &[u32], nlines: usize) {
        self.patterns.clear();
        for (i, row) in line_routes.chunks_exact(nlines.max(1)).enumerate() {
            self.patterns.entry(row.to_vec()).or_insert(i as u32);
        }
    }

    /// Lists and rows it holds.
    pub fn len(&self) -> usize {
        self.patterns.len() + self.pool_lists.len()
    }

    /// It holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-shard mutable state of the selection: a rotation counter and a PRNG. Owned by one
/// shard, so no atomics; round-robin is even per shard and therefore across shards.
#[derive(Debug, Clone)]
pub struct Local {
    rotation: u64,
    rng: u64,
    /// The access domain and line of the last selection, for per-domain metrics: the shard
    /// sets [`Selection::NONE`] before a query when it counts them.
    pub selected: Selection,
}

/// An access domain and the asker's line, as a selection answered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Access domain index (`tables::NONE` for none).
    pub ad: u32,
    /// Line index (0: default).
    pub line: u32,
}

impl Selection {
    /// No selection.
    pub const NONE: Self = Self {
        ad: super::NONE,
        line: 0,
    };
}

impl Local {
    /// A fresh state; `seed` differs per shard.
    pub fn new(seed: u64) -> Self {
        Self {
            rotation: seed,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            selected: Selection::NONE,
        }
    }

    #[inline]
    fn next_rotation(&mut self) -> u64 {
        self.rotation = self.rotation.wrapping_add(1);
        self.rotation
    }

    /// xorshift64*: fast, good enough for weight draws.
    #[inline]
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.random() >> 32) * n) >> 32
    }
}

impl Default for Local {
    fn default() -> Self {
        Self::new(1)
    }
}

/// What the GSLB selection produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// `count` records written; `scope` is the ECS scope.
    Records {
        /// Records written.
        count: u16,
        /// Bytes written.
        len: usize,
        /// ECS scope prefix length.
        scope: u8,
    },
    /// Answer NODATA (static answer index), with this ECS scope.
    NoData {
        /// Static answer to use.
        answer: u32,
        /// ECS scope.
        scope: u8,
    },
}

impl GslbTables {
    /// The route access domain `a` answers `line` from (its default route for a line
    /// index out of range).
    #[inline]
    pub fn route_of(&self, a: &AdTable, line: usize) -> u32 {
        let row = a.pattern as usize * self.nlines as usize;
        let rel = if line < self.nlines as usize {
            self.line_routes.get(row + line).copied().unwrap_or(0)
        } else {
            0
        };
        a.routes + rel
    }

    /// The asker's line and scope, or (default, 0) when unknown.
    #[inline]
    pub fn line_of(&self, client: Option<ClientAddr>) -> (u32, u8) {
        match client {
            Some(c) => self.lines.lookup(c),
            None => (0, 0),
        }
    }

    /// Selects and writes the answer records of access domain `ad` into `out`, each owned
    /// by `owner` (a compression pointer to the name: `0xC00C` for the question name).
    #[inline]
    pub fn select(
        &self,
        ad: u32,
        health: &HealthState,
        line: (u32, u8),
        local: &mut Local,
        owner: u16,
        out: &mut [u8],
    ) -> Selected {
        let a = &self.ads[ad as usize];
        local.selected = Selection { ad, line: line.0 };
        // Route i's active pool is slot i of the health state.
        let route_i = self.route_of(a, line.0 as usize);
        let route = &self.routes[route_i as usize];
        let scope = if a.policy == PoolPolicy::Nearest {
            line.1
        } else {
            0
        };
        let pools = &self.route_pools[route.start as usize..(route.start + route.len) as usize];
        // The address rotation of the chosen pool: the shard's counter, except under pool
        // round-robin, where one counter value picks both and must be split between them
        // (else the pool and the first address would move in lockstep).
        let mut turn = None;
        let pool = match a.policy {
            PoolPolicy::GlobalAvailability { .. } | PoolPolicy::Nearest => health.active(route_i),
            PoolPolicy::Weighted => {
                let total: u64 = pools
                    .iter()
                    .filter(|p| health.pool_up(p.0))
                    .map(|p| p.1 as u64)
                    .sum();
                if total == 0 {
                    NO_POOL
                } else {
                    let mut r = local.below(total);
                    let mut chosen = NO_POOL;
                    for &(p, w) in pools.iter().filter(|p| health.pool_up(p.0)) {
                        if r < w as u64 {
                            chosen = p;
                            break;
                        }
                        r -= w as u64;
                    }
                    chosen
                }
            }
            PoolPolicy::RoundRobin => {
                let healthy = pools.iter().filter(|p| health.pool_up(p.0)).count() as u64;
                let r = local.next_rotation();
                match r.checked_div(healthy) {
                    None => NO_POOL,
                    Some(t) => {
                        turn = Some(t);
                        let k = r % healthy;
                        pools
                            .iter()
                            .filter(|p| health.pool_up(p.0))
                            .nth(k as usize)
                            .map_or(NO_POOL, |p| p.0)
                    }
                }
            }
        };
        let mut w = Writer {
            out,
            pos: 0,
            count: 0,
            ad: a,
            owner: owner.to_be_bytes(),
        };
        if pool != NO_POOL {
            self.pick(pool, health, local, turn, &mut w);
        }
        if w.count == 0 {
            // Stops at the first record that does not fit: the size check truncates.
            self.each_fallback(a, route, |ai| w.rr(self, ai));
            if w.count == 0 && w.pos == 0 {
                return Selected::NoData {
                    answer: a.nodata,
                    scope,
                };
            }
        }
        Selected::Records {
            count: w.count,
            len: w.pos,
            scope,
        }
    }

    /// Addresses of one pool by its policy; only addresses that are up.
    #[inline]
    fn pick(
        &self,
        pool: u32,
        health: &HealthState,
        local: &mut Local,
        turn: Option<u64>,
        w: &mut Writer<'_, '_>,
    ) {
        let p = &self.pools[pool as usize];
        let addrs = &self.pool_addrs[p.start as usize..(p.start + p.len) as usize];
        let want = p.answers as usize;
        match p.policy {
            AddressPolicy::Sequential => {
                for &a in addrs.iter().filter(|&&a| health.addr_up(a)).take(want) {
                    w.rr(self, a);
                }
            }
            AddressPolicy::RoundRobin => {
                let up = addrs.iter().filter(|&&a| health.addr_up(a)).count();
                if up == 0 {
                    return;
                }
                let turn = turn.unwrap_or_else(|| local.next_rotation());
                let first = (turn % up as u64) as usize;
                let mut it = addrs
                    .iter()
                    .filter(|&&a| health.addr_up(a))
                    .cycle()
                    .skip(first);
                for _ in 0..want.min(up) {
                    if let Some(&a) = it.next() {
                        w.rr(self, a);
                    }
                }
            }
            AddressPolicy::Weighted => {
                let mut chosen = [u32::MAX; crate::config::gslb::MAX_ANSWERS];
                let mut n = 0;
                while n < want {
                    let total: u64 = addrs
                        .iter()
                        .filter(|&&a| health.addr_up(a) && !chosen[..n].contains(&a))
                        .map(|&a| self.addrs[a as usize].weight as u64)
                        .sum();
                    if total == 0 {
                        break;
                    }
                    let mut r = local.below(total);
                    for &a in addrs
                        .iter()
                        .filter(|&&a| health.addr_up(a) && !chosen[..n].contains(&a))
                    {
                        let wt = self.addrs[a as usize].weight as u64;
                        if r < wt {
                            chosen[n] = a;
                            n += 1;
                            break;
                        }
                        r -= wt;
                    }
                }
                for &a in &chosen[..n] {
                    w.rr(self, a);
                }
            }
        }
    }
}

struct Writer<'o, 't> {
    out: &'o mut [u8],
    pos: usize,
    count: u16,
    ad: &'t AdTable,
    owner: [u8; 2],
}

impl Writer<'_, '_> {
    /// `owner TYPE IN TTL` + the address's RDLENGTH and RDATA; `false` (and nothing
    /// more written) once the buffer is full: the caller's size check then truncates.
    #[inline]
    fn rr(&mut self, t: &GslbTables, a: u32) -> bool {
        let at = &t.addrs[a as usize];
        let rd = &t.arena[at.rdata_start as usize..at.rdata_start as usize + at.rdata_len as usize];
        let need = 10 + rd.len();
        if self.pos + need > self.out.len() {
            self.pos = self.out.len() + 1; // marks overflow
            return false;
        }
        let o = &mut self.out[self.pos..self.pos + need];
        o[0..2].copy_from_slice(&self.owner);
        o[2..4].copy_from_slice(&self.ad.rtype.to_be_bytes());
        o[4..6].copy_from_slice(&1u16.to_be_bytes());
        o[6..10].copy_from_slice(&self.ad.ttl.to_be_bytes());
        o[10..].copy_from_slice(rd);
        self.pos += need;
        self.count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()) as u128
    }

    /// xorshift64 from `seed`: reproducible numbers without a dependency.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn scope_in_constant_time_agrees_with_the_scan() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200_000 {
            for bits in [32u32, 128] {
                let max: u128 = if bits == 32 { 0xFFFF_FFFF } else { u128::MAX };
                let mut r = || ((next() as u128) << 64 | next() as u128) & max;
                let (mut a, mut b) = (r(), r());
                // Mostly aligned blocks, sometimes arbitrary bounds.
                if a % 2 == 0 {
                    let host = (b % bits as u128) as u32;
                    let m = if host == 0 { 0 } else { (1u128 << host) - 1 };
                    a &= !m;
                    b = a | m;
                }
                let (start, end) = (a.min(b), a.max(b));
                let span = end - start;
                let off = r();
                let addr = start
                    + if span == u128::MAX {
                        off
                    } else {
                        off % (span + 1)
                    };
                assert_eq!(
                    scope(addr, start, end, bits),
                    scope_by_scan(addr, start, end, bits),
                    "{addr:x} in {start:x}..={end:x} ({bits} bits)"
                );
            }
        }
    }

    #[test]
    fn nested_prefixes_longest_wins_with_scope() {
        let idx = LineIndex::build(
            &mut [
                (v4("10.0.0.0"), 8, 1),
                (v4("10.1.0.0"), 16, 2),
                (v4("192.0.2.0"), 24, 3),
            ],
            &mut [],
        );
        let look = |s: &str| idx.lookup(ClientAddr::V4(v4(s) as u32));
        assert_eq!(look("10.1.2.3"), (2, 16));
        assert_eq!(look("10.2.0.1"), (1, 15)); // 10.2.0.0/15 lies in 10/8 minus 10.1/16
        assert_eq!(look("10.128.0.1"), (1, 9));
        assert_eq!(look("192.0.2.7"), (3, 24));
        assert_eq!(look("192.0.3.7").0, 0);
        assert_eq!(look("8.8.8.8").0, 0);
        assert_eq!(look("255.255.255.255").0, 0);
        assert_eq!(look("0.0.0.0").0, 0);
        // ranges are disjoint and cover the space
        for w in idx.v4.windows(2) {
            assert_eq!(w[0].end + 1, w[1].start);
        }
        assert_eq!(idx.v4.last().unwrap().end, 0xFFFF_FFFF);
    }

    /// The line of the longest prefix holding `a` (0: none), by a scan.
    fn longest(prefixes: &[(u128, u8, u32)], a: u128, bits: u32) -> u32 {
        let holds = |&&(n, len, _): &&(u128, u8, u32)| {
            let host = bits - len as u32;
            host >= 128 || (a >> host) == (n >> host)
        };
        let best = prefixes.iter().filter(holds).max_by_key(|p| p.1);
        best.map_or(0, |p| p.2)
    }

    /// Random nested prefixes (distinct networks) in both families: every lookup gives
    /// the longest prefix's line, at and around each prefix's bounds and anywhere, and
    /// the ranges cover the space in order.
    #[test]
    fn lookups_give_the_longest_prefix_as_a_scan_does() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for _ in 0..200 {
            let mut fams: Vec<Vec<(u128, u8, u32)>> = vec![Vec::new(), Vec::new()];
            for (f, bits) in [(0, 32u32), (1, 128)] {
                // A small region, so that prefixes nest and touch.
                let base: u128 = if bits == 32 {
                    0x0A00_0000
                } else {
                    0x2001_0db8 << 96
                };
                for _ in 0..next() % 40 {
                    let len = (bits - 12 + (next() % 13) as u32) as u8;
                    let host = bits - len as u32;
                    let n = (base + next() as u128 % (1 << 12)) >> host << host;
                    if !fams[f].iter().any(|p| (p.0, p.1) == (n, len)) {
                        fams[f].push((n, len, 1 + (next() % 5) as u32));
                    }
                }
            }
            let (v4, v6) = (fams[0].clone(), fams[1].clone());
            let idx = LineIndex::build(&mut fams[0].clone(), &mut fams[1].clone());
            assert_eq!(idx.v4.first().map(|r| r.start), Some(0));
            assert_eq!(idx.v4.last().map(|r| r.end), Some(u32::MAX));
            assert!(idx
                .v4
                .windows(2)
                .all(|w| w[0].end as u64 + 1 == w[1].start as u64));
            assert!(idx.v6.windows(2).all(|w| w[0].end + 1 == w[1].start));
            assert_eq!(idx.v6.last().map(|r| r.end), Some(u128::MAX));
            for (prefixes, bits) in [(&v4, 32u32), (&v6, 128)] {
                let mut probes: Vec<u128> = Vec::new();
                for &(n, len, _) in prefixes.iter() {
                    let host = bits - len as u32;
                    let end = n + ((1u128 << host) - 1);
                    probes.extend([
                        n,
                        n.wrapping_sub(1),
                        end,
                        end + 1,
                        n + (next() as u128 % (end - n + 1)),
                    ]);
                }
                let base: u128 = if bits == 32 {
                    0x0A00_0000
                } else {
                    0x2001_0db8 << 96
                };
                probes.extend((0..20).map(|_| base + next() as u128 % (1 << 13)));
                for a in probes {
                    let (a, c) = if bits == 32 {
                        let a = a & 0xFFFF_FFFF;
                        (a, ClientAddr::V4(a as u32))
                    } else {
                        (a, ClientAddr::V6(a))
                    };
                    if bits == 128 && a >> 32 == 0xFFFF {
                        continue; // v4-mapped: looked up as IPv4
                    }
                    assert_eq!(
                        idx.lookup(c).0,
                        longest(prefixes, a, bits),
                        "{a:x} in {prefixes:x?}"
                    );
                }
            }
        }
    }

    #[test]
    fn v6_and_mapped() {
        let net: u128 = "2001:db8::".parse::<std::net::Ipv6Addr>().unwrap().into();
        let idx = LineIndex::build(&mut [], &mut [(net, 32, 5)]);
        let a: u128 = "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().into();
        assert_eq!(idx.lookup(ClientAddr::V6(a)), (5, 32));
        assert_eq!(
            ClientAddr::from_v6(0xFFFF_0A00_0001),
            ClientAddr::V4(0x0A00_0001)
        );
    }
}
