//! `probe -> health -> shards`: the one writer of the health state shards read without
//! locks (the bitmaps and active-pool slots of [`HealthState`], which `tables` keeps beside
//! the tables they index), and where its changes go: the log and the alert webhook
//! ([`log_changes`], [`alerts`]).
//!
//! [`Writer`] is the only code that stores into that state: it keeps the inputs (probe results,
//! operator overrides), recomputes the derived bits on every change, and returns the list of
//! changes for the log. It lives behind a mutex on the control side; shards never touch it.
//! Health follows addresses by name across reloads, and a non-preemptive route keeps its
//! pool by name.

pub mod alerts;
mod transitions;
pub use transitions::Transitions;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tracing::info;

use crate::config::gslb::{AccessDomain, Condition, Mode, PoolPolicy};
use crate::tables::chunked::CHUNK;
use crate::tables::gslb::NO_POOL;
use crate::tables::{HealthState, Snapshot};

/// The health writer, shared by the reload path, the prober and the control API.
pub type SharedWriter = Arc<Mutex<Writer>>;

/// Logs state changes (one structured line each) and queues them for the alert webhook.
pub fn log_changes(changes: &[Change]) {
    for c in changes {
        info!(change = %c, "state change");
        alerts::push(c);
    }
}

/// One observable state change, for logs and alerts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Change {
    /// An address went up or down.
    Address {
        /// Address name.
        name: String,
        /// New state.
        up: bool,
    },
    /// A pool's health condition started or stopped holding.
    Pool {
        /// Pool name.
        name: String,
        /// New state.
        up: bool,
    },
    /// An access domain's route switched pools.
    #[serde(rename = "active_pool")]
    Active {
        /// Access domain, presentation form with type.
        access_domain: String,
        /// Line names of the route.
        lines: String,
        /// New pool (None: fallback).
        pool: Option<String>,
        /// The pool it answered from before (None: fallback).
        from: Option<String>,
    },
    /// More routes switched than are reported one by one ([`MAX_ROUTE_EVENTS`]).
    #[serde(rename = "active_pool_more")]
    ActiveMore {
        /// How many more.
        count: usize,
    },
}

/// Route switches reported one by one per health change; the rest are counted. One pool
/// going down can move a million routes, and a log line (and webhook event) each would
/// bury the address and pool events that say why.
pub const MAX_ROUTE_EVENTS: usize = 1000;

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Address { name, up } => write!(f, "address {name} is {}", if *up { "up" } else { "down" }),
            Self::Pool { name, up } => write!(f, "pool {name} is {}", if *up { "healthy" } else { "unhealthy" }),
            Self::Active { access_domain, lines, pool, .. } => match pool {
                Some(p) => write!(f, "access domain {access_domain} lines [{lines}] now answer from pool {p}"),
                None => write!(f, "access domain {access_domain} lines [{lines}]: no pool is healthy, answering the fallback"),
            },
            Self::ActiveMore { count } => write!(f, "{count} more routes switched pools (not listed one by one)"),
        }
    }
}

/// Values indexed like `old_keys`, moved to the positions of `new_keys` by key; keys that
/// are new get `missing`.
fn carry<K: Eq + std::hash::Hash, T: Copy>(
    old_keys: &[K],
    old: &[T],
    new_keys: &[K],
    missing: T,
) -> Vec<T> {
    let by_key: HashMap<&K, T> = old_keys.iter().zip(old.iter().copied()).collect();
    new_keys
        .iter()
        .map(|k| by_key.get(k).copied().unwrap_or(missing))
        .collect()
}

/// [`carry`] by slot key when both snapshots have the same access domains in the same
/// order (lines or pools changed, names did not): a slot's key names its access domain,
/// so each one's slots are matched among that access domain's old ones alone, walking
/// both key streams once, instead of through a map of every slot (at a million access
/// domains, nine million entries: 2.5 s and a few hundred MB). `None`: they differ.
fn carry_by_ad(old: &Snapshot, new: &Snapshot, active: &[u32]) -> Option<Vec<u32>> {
    let (oa, na) = (&old.model.access_domains, &new.model.access_domains);
    let shared = oa.segments().len() == na.segments().len()
        && oa
            .segments()
            .iter()
            .zip(na.segments())
            .all(|(a, b)| a.same(b));
    let same = |(x, y): (&AccessDomain, &AccessDomain)| (&x.name, x.rtype) == (&y.name, y.rtype);
    if active.len() != old.model.slots.len()
        || oa.len() != na.len()
        || !(shared || oa.iter().zip(na.iter()).all(same))
    {
        return None;
    }
    let (mut ok, mut nk) = (old.slot_digests(), new.slot_digests());
    let mut out = Vec::with_capacity(new.model.slots.len() + new.model.slots.len() / 16);
    let mut group: Vec<(u64, u32)> = Vec::new();
    let (mut at, mut to) = (0usize, 0usize);
    for i in 0..na.len() {
        let (o, n) = (old.gslb.ads.get(i)?, new.gslb.ads.get(i)?);
        // Slots follow their access domains in order, each one's together.
        if (o.routes as usize, n.routes as usize) != (at, to) {
            return None;
        }
        group.clear();
        for k in 0..o.nroutes as usize {
            group.push((ok.next()?, active[at + k]));
        }
        for _ in 0..n.nroutes {
            let key = nk.next()?;
            out.push(group.iter().find(|g| g.0 == key).map_or(NO_POOL, |g| g.1));
        }
        (at, to) = (at + o.nroutes as usize, to + n.nroutes as usize);
    }
    (at == active.len() && to == new.model.slots.len()).then_some(out)
}

/// Each pool's health: enabled, at least one enabled member up, and its condition met
/// by its enabled members (`addr`: each address's state).
fn pools_up(m: &crate::tables::Model, addr: &[bool]) -> Vec<bool> {
    m.pools
        .iter()
        .map(|p| {
            let members: Vec<usize> = p
                .addresses
                .iter()
                .copied()
                .filter(|&a| m.addresses[a].enabled)
                .collect();
            let up = members.iter().filter(|&&a| addr[a]).count() as u32;
            let total = members.len() as u32;
            p.enabled
                && up > 0
                && match p.condition {
                    Condition::Any => true,
                    Condition::All => up == total,
                    Condition::AtLeast(n) => up >= n,
                    Condition::AtLeastPercent(pct) => up * 100 >= pct * total,
                }
        })
        .collect()
}

/// Whether slot `s` belongs to a non-preemptive global-availability access domain (the
/// routes whose active pool is history, not a function of health alone).
pub fn non_preemptive(snap: &Snapshot, s: usize) -> bool {
    let m = &snap.model;
    matches!(
        m.access_domains[m.slots[s].ad as usize].policy,
        PoolPolicy::GlobalAvailability { preemptive: false }
    )
}

/// Which active pools a recomputation works out again.
enum Redo {
    /// Every slot's (a new snapshot).
    All,
    /// Those of the slots with a candidate pool whose state changed.
    Changed,
    /// Those of these slots and of the slots with a candidate pool whose state changed
    /// (a new snapshot whose other slots were copied, with their active pools).
    Slots(Vec<std::ops::Range<usize>>),
    /// As `Slots`, in a new snapshot whose health state shares the last one's active
    /// pools but for copied chunks (the second list): only these slots, the copied
    /// chunks' and the ones that move are stored.
    Kept(Vec<std::ops::Range<usize>>, Vec<std::ops::Range<usize>>),
}

/// The single writer of a snapshot's [`HealthState`].
#[derive(Debug)]
pub struct Writer {
    snap: Arc<Snapshot>,
    /// Probe verdict per address (true until the prober says otherwise).
    probe: Vec<bool>,
    /// Operator overrides by address name (win over config mode and probes).
    overrides: HashMap<String, Mode>,
    /// When overrides set for a while end (Unix milliseconds), by address name; an
    /// override without an entry lasts until cleared.
    expires: HashMap<String, u64>,
    /// Derived state as last written, for change detection.
    addr: Vec<bool>,
    pool: Vec<bool>,
    active: Vec<u32>,
    /// Changes counted per address and pool, for the metrics.
    transitions: Transitions,
    /// Counts every recomputation (a probe verdict, an override, a reload), so a copy of
    /// the state can tell whether it is older than one already saved.
    revision: u64,
    /// Told (without waiting) after every recomputation: the state-file writer.
    notify: Option<crossbeam::channel::Sender<()>>,
}

/// State carried over a restart (the state file), by name: probe verdicts per address
/// and the active pool per (access domain key, lines) of non-preemptive routes. Names the
/// snapshot does not have are ignored.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    /// Probe verdict by address name.
    pub probe: HashMap<String, bool>,
    /// Active pool name by (access domain `name TYPE`, lines as [`Snapshot::slot_key`]).
    pub active: HashMap<(String, String), String>,
}

impl Writer {
    /// A writer for `snap`, with `overrides` (e.g. loaded from the state file); fills the
    /// snapshot's health state.
    pub fn new(snap: Arc<Snapshot>, overrides: HashMap<String, Mode>) -> Self {
        Self::restore(snap, overrides, &Restored::default())
    }

    /// [`Writer::new`], starting from the probe verdicts and non-preemptive active pools
    /// of `restored` (a restart resumes with the last known health, and a non-preemptive
    /// route stays on the pool it had moved to while that pool is healthy).
    pub fn restore(
        snap: Arc<Snapshot>,
        overrides: HashMap<String, Mode>,
        restored: &Restored,
    ) -> Self {
        let m = &snap.model;
        let probe = m
            .addresses
            .iter()
            .map(|a| restored.probe.get(&a.name).copied().unwrap_or(true))
            .collect();
        let mut active = Vec::new();
        if !restored.active.is_empty() {
            let pool_index: HashMap<&str, u32> = m
                .pools
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), i as u32))
                .collect();
            active = (0..m.slots.len())
                .map(|s| {
                    if !non_preemptive(&snap, s) {
                        return NO_POOL;
                    }
                    restored
                        .active
                        .get(&snap.slot_key(s))
                        .and_then(|p| pool_index.get(p.as_str()).copied())
                        .unwrap_or(NO_POOL)
                })
                .collect();
        }
        let mut w = Self {
            probe,
            overrides,
            expires: HashMap::new(),
            addr: Vec::new(),
            pool: Vec::new(),
            active,
            transitions: Transitions::default(),
            revision: 0,
            notify: None,
            snap,
        };
        w.recompute(Redo::All);
        w
    }

    /// Tells `tx` (a bounded channel; a full one means it already knows) after every
    /// recomputation.
    pub fn set_notify(&mut self, tx: crossbeam::channel::Sender<()>) {
        self.notify = Some(tx);
    }

    /// How many recomputations so far (see the field).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The probe verdict of every address, in model order.
    pub fn probes(&self) -> &[bool] {
        &self.probe
    }

    /// The snapshot being written.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Moves to a new snapshot (reload): probe results, overrides and non-preemptive
    /// pools carry over by name; the new state is fully written before this returns, so
    /// the caller publishes a snapshot whose health is already right.
    pub fn replace(&mut self, snap: Arc<Snapshot>) -> Vec<Change> {
        let old = std::mem::replace(&mut self.snap, snap);
        let (om, nm) = (&old.model, &self.snap.model);
        let addr_names = |m: &crate::tables::Model| {
            m.addresses
                .iter()
                .map(|a| a.name.clone())
                .collect::<Vec<_>>()
        };
        let pool_names =
            |m: &crate::tables::Model| m.pools.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let (old_addrs, new_addrs) = (addr_names(om), addr_names(nm));
        let (old_pools, new_pools) = (pool_names(om), pool_names(nm));
        self.probe = carry(&old_addrs, &self.probe, &new_addrs, true);
        self.addr = carry(&old_addrs, &self.addr, &new_addrs, true);
        self.pool = carry(&old_pools, &self.pool, &new_pools, true);
        // Active pools follow (access domain, lines) -> pool name: old pool indices are
        // renumbered into the new model once, then carried by slot key (a digest; when
        // the slot layout is unchanged, as on most reloads, position for position).
        let pool_index: HashMap<&str, u32> = new_pools
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let renumber: Vec<u32> = old_pools
            .iter()
            .map(|n| pool_index.get(n.as_str()).copied().unwrap_or(NO_POOL))
            .collect();
        let identity = renumber.iter().enumerate().all(|(i, &p)| p == i as u32);
        if !identity {
            for p in &mut self.active {
                *p = renumber.get(*p as usize).copied().unwrap_or(NO_POOL);
            }
        }
        // Compiled in place: every slot is where it was, and so is its active pool (in
        // the shared chunks of the health state); a touched slot whose key changed starts
        // afresh, as the carry by key below would have it; new slots come after.
        let reuse = &self.snap.reuse;
        // Pools at other indices: only when every chunk of active pools is new (the
        // serving snapshot's keep the old indices).
        if let (Some(touched), true) = (&reuse.in_place, identity || reuse.health_fresh) {
            if reuse.from == old.generation && self.active.len() == om.slots.len() {
                let touched = touched.clone();
                let (reset, carried) = self.moved(&old, &touched);
                grow(&mut self.active, nm.slots.len());
                for s in reset {
                    self.active[s] = NO_POOL;
                }
                for (s, p) in carried {
                    self.active[s] = p;
                }
                // Every slot of a chunk the new state does not share was copied at
                // compile time: a pool moved since then is stored again.
                let fresh = &self.snap.health.active;
                let copied: Vec<std::ops::Range<usize>> = (0..fresh.chunks())
                    .filter(|&c| !fresh.shares_chunk(&old.health.active, c))
                    .map(|c| c * CHUNK..((c + 1) * CHUNK).min(fresh.len()))
                    .collect();
                return self.apply(Redo::Kept(touched, copied));
            }
        }
        // Slots the compiler copied from the old snapshot take their active pool from
        // the same place; the others are carried by slot key.
        if reuse.from != 0 && reuse.from == old.generation && self.active.len() == om.slots.len() {
            let fresh = self.carry_runs(&old);
            // The chunks of active pools the new state shares with the old one (those of
            // the leading copied rows) hold what the writer stored there: only the others
            // are stored.
            let new = &self.snap.health.active;
            let shared = |c: &usize| new.shares_chunk(&old.health.active, *c);
            if identity && (0..new.chunks()).any(|c| shared(&c)) {
                let copied: Vec<std::ops::Range<usize>> = (0..new.chunks())
                    .filter(|c| !shared(c))
                    .map(|c| c * CHUNK..((c + 1) * CHUNK).min(new.len()))
                    .collect();
                return self.apply(Redo::Kept(fresh, copied));
            }
            return self.apply(Redo::Slots(fresh));
        }
        // Position for position when the slot layout is unchanged, as on most reloads
        // (compared as the digests are made, nothing stored); else by slot key.
        let same = om.slots.len() == nm.slots.len()
            && self.active.len() == om.slots.len()
            && old.slot_digests().eq(self.snap.slot_digests());
        if !same {
            self.active = match carry_by_ad(&old, &self.snap, &self.active) {
                Some(active) => active,
                None => {
                    let old_keys: Vec<u64> = old.slot_digests().collect();
                    let new_keys: Vec<u64> = self.snap.slot_digests().collect();
                    carry(&old_keys, &self.active, &new_keys, NO_POOL)
                }
            };
        }
        self.apply(Redo::All)
    }

    /// After an in-place compile (`self.active` still `old`'s): each `touched` slot whose key is not the one at its
    /// place in `old` (an access domain edited, or one that took another's place, or
    /// new) starts afresh, but that a non-preemptive route keeps the pool it had wherever
    /// it was, as the carry by key would have it (the old slots' keys are worked out only
    /// then: at a million access domains, tens of milliseconds).
    /// Returns the slots to start afresh, and the pools carried.
    fn moved(&self, old: &Snapshot, touched: &[std::ops::Range<usize>]) -> Moved {
        let olen = old.model.slots.len();
        let mut reset = Vec::new();
        let mut sticky: HashMap<u64, Vec<usize>> = HashMap::default();
        for r in touched {
            let mut was = old.slot_digests_in(r.start.min(olen)..r.end.min(olen));
            for (s, n) in r.clone().zip(self.snap.slot_digests_in(r.clone())) {
                if was.next() == Some(n) {
                    continue;
                }
                reset.push(s);
                if non_preemptive(&self.snap, s) {
                    sticky.entry(n).or_default().push(s);
                }
            }
        }
        let mut carried = Vec::new();
        if !sticky.is_empty() {
            for (os, k) in old.slot_digests().enumerate() {
                for &s in sticky.get(&k).into_iter().flatten() {
                    carried.push((s, self.active[os]));
                }
            }
        }
        (reset, carried)
    }

    /// The active pools of a snapshot made from `old` by copying runs of slots
    /// ([`crate::tables::Reuse`]): those runs' pools copied, the other slots' carried by
    /// key from `old`'s slots outside the runs. Returns the slots outside the runs, as
    /// ranges.
    fn carry_runs(&mut self, old: &Snapshot) -> Vec<std::ops::Range<usize>> {
        let runs = &self.snap.reuse.slots;
        // A leading run keeps its slots where they were: their pools stay in place, and
        // every other run and gap of the old slots lies after it (`prev`).
        let lead = match runs.first() {
            Some(&(0, 0, len)) => (len as usize).min(self.active.len()),
            _ => 0,
        };
        let prev = self.active.split_off(lead);
        let mut active = std::mem::take(&mut self.active);
        grow(&mut active, self.snap.model.slots.len());
        for &(n, o, len) in runs.iter().skip((lead > 0) as usize) {
            // Runs are disjoint in the old slots, and the leading one starts them.
            debug_assert!(o as usize >= lead, "a copied run inside the leading one");
            let (n, o, len) = (n as usize, o as usize - lead, len as usize);
            active[n..n + len].copy_from_slice(&prev[o..o + len]);
        }
        let gaps = |runs: &mut dyn Iterator<Item = (usize, usize)>, total: usize| {
            let mut at = 0;
            let mut out = Vec::new();
            for (start, len) in runs {
                if start > at {
                    out.push(at..start);
                }
                at = start + len;
            }
            if total > at {
                out.push(at..total);
            }
            out
        };
        let mut old_runs: Vec<(usize, usize)> = runs
            .iter()
            .map(|&(_, o, len)| (o as usize, len as usize))
            .collect();
        old_runs.sort_unstable();
        let old_gaps = gaps(&mut old_runs.into_iter(), old.model.slots.len());
        let new_gaps = gaps(
            &mut runs.iter().map(|&(n, _, len)| (n as usize, len as usize)),
            active.len(),
        );
        let mut by_key: HashMap<u64, u32> = HashMap::new();
        for r in &old_gaps {
            for (s, key) in r.clone().zip(old.slot_digests_in(r.clone())) {
                by_key.insert(key, prev[s - lead]);
            }
        }
        for r in &new_gaps {
            for (s, key) in r.clone().zip(self.snap.slot_digests_in(r.clone())) {
                active[s] = by_key.get(&key).copied().unwrap_or(NO_POOL);
            }
        }
        self.active = active;
        new_gaps
    }

    /// Sets (or with `None` clears) the operator override of an address.
    pub fn set_override(&mut self, name: &str, mode: Option<Mode>) -> Result<Vec<Change>, String> {
        if !self.snap.model.addresses.iter().any(|a| a.name == name) {
            return Err(format!("unknown address '{name}'"));
        }
        match mode {
            Some(m) => self.overrides.insert(name.to_string(), m),
            None => self.overrides.remove(name),
        };
        self.expires.remove(name);
        Ok(self.apply(Redo::Changed))
    }

    /// Sets the operator override of an address until `until` (Unix milliseconds), after
    /// which [`Writer::expire`] clears it.
    pub fn set_override_until(
        &mut self,
        name: &str,
        mode: Mode,
        until: u64,
    ) -> Result<Vec<Change>, String> {
        let changes = self.set_override(name, Some(mode))?;
        self.expires.insert(name.to_string(), until);
        Ok(changes)
    }

    /// Gives the overrides of `overrides` the end times `expires` holds for them (restored
    /// from the state file); nothing is recomputed.
    pub fn restore_expiries(&mut self, expires: HashMap<String, u64>) {
        self.expires = expires
            .into_iter()
            .filter(|(n, _)| self.overrides.contains_key(n))
            .collect();
    }

    /// Clears the overrides whose time is up at `now` (Unix milliseconds); returns each
    /// cleared address with the state changes it caused.
    pub fn expire(&mut self, now: u64) -> Vec<(String, Vec<Change>)> {
        let mut due: Vec<String> = self
            .expires
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        due.sort();
        let mut out = Vec::new();
        for n in due {
            self.expires.remove(&n);
            self.overrides.remove(&n);
            out.push((n, self.apply(Redo::Changed)));
        }
        out
    }

    /// When the next override ends (Unix milliseconds), if one is set for a while.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expires.values().copied().min()
    }

    /// The end times of the overrides set for a while (Unix milliseconds), by name.
    pub fn expiries(&self) -> &HashMap<String, u64> {
        &self.expires
    }

    /// Records a probe verdict for the address called `name` (by name, so a verdict that
    /// races a reload lands on the right address, or nowhere).
    pub fn set_probe(&mut self, name: &str, up: bool) -> Vec<Change> {
        let Some(i) = self
            .snap
            .model
            .addresses
            .iter()
            .position(|a| a.name == name)
        else {
            return Vec::new();
        };
        if self.probe[i] == up {
            return Vec::new();
        }
        self.probe[i] = up;
        self.apply(Redo::Changed)
    }

    /// Puts non-preemptive route slot `slot` on `pool`, as a running server that chose it
    /// earlier would hold it (`gtmd explain` replaying a server's state): only when that
    /// pool is one of the slot's candidates and healthy; otherwise nothing changes.
    /// Returns whether it applied.
    pub fn keep_active(&mut self, slot: usize, pool: u32) -> bool {
        let snap = self.snap.clone();
        let Some(s) = snap.model.slots.get(slot) else {
            return false;
        };
        let policy = snap.model.access_domains[s.ad as usize].policy;
        let ok = policy == (PoolPolicy::GlobalAvailability { preemptive: false })
            && self.pool.get(pool as usize).copied().unwrap_or(false)
            && snap.slot_pools(slot).any(|p| p == pool as usize);
        if ok {
            self.active[slot] = pool;
            // Nothing else changed: only this slot is stored where answers read it.
            self.snap.health.active[slot].store(pool, Relaxed);
        }
        ok
    }

    /// Removes the overrides of the addresses `keep` rejects (names a new configuration
    /// no longer has) and returns them, so one never comes back unannounced when the name
    /// reappears. Nothing is recomputed: [`Writer::replace`] follows.
    pub fn drop_overrides(&mut self, keep: impl Fn(&str) -> bool) -> Vec<(String, Mode)> {
        let mut gone: Vec<(String, Mode)> = self
            .overrides
            .iter()
            .filter(|(n, _)| !keep(n))
            .map(|(n, &m)| (n.clone(), m))
            .collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (n, _) in &gone {
            self.overrides.remove(n);
            self.expires.remove(n);
        }
        gone
    }

    /// The operator overrides.
    pub fn overrides(&self) -> &HashMap<String, Mode> {
        &self.overrides
    }

    /// Probe verdict of address `i`.
    pub fn probe(&self, i: usize) -> bool {
        self.probe[i]
    }

    /// Address and pool transitions so far, by name.
    pub fn transitions(&self) -> &Transitions {
        &self.transitions
    }

    /// [`Self::recompute`], its changes counted.
    fn apply(&mut self, redo: Redo) -> Vec<Change> {
        let changes = self.recompute(redo);
        self.transitions.count(&changes);
        self.revision += 1;
        if let Some(tx) = &self.notify {
            let _ = tx.try_send(());
        }
        changes
    }

    /// Recomputes every derived bit and slot from the inputs and stores what changed.
    /// `full`: every slot afresh (a new snapshot); else only the slots with a candidate
    /// pool that changed state. Either way the active pools are updated in place and only
    /// the slots that moved are listed, so no array in proportion to the routes is
    /// allocated (a million access domains have ~10M slots: a fresh array per change was
    /// most of its cost).
    fn recompute(&mut self, redo: Redo) -> Vec<Change> {
        let addr = self.addresses_up();
        let pool = pools_up(&self.snap.model, &addr);
        let mut changes = self.up_changes(&addr, &pool);
        let slots = self.snap.model.slots.len();
        // No earlier derived state (a new writer, restored or not): nothing to report
        // against.
        let fresh = self.active.len() != slots || self.pool.len() != pool.len();
        let redo = if fresh { Redo::All } else { redo };
        grow(&mut self.active, slots);
        let every = matches!(redo, Redo::All | Redo::Slots(_));
        let mut kept = Vec::new();
        let moved = match redo {
            Redo::All => self.move_all(&pool, !fresh),
            Redo::Changed => self.move_active(&pool),
            Redo::Slots(ranges) => {
                // The copied slots were right for the pools' last states: they move only
                // if a pool changed (`move_active`, after the others are worked out).
                let mut moved = self.move_ranges(&pool, &ranges);
                moved.append(&mut self.move_active(&pool));
                moved
            }
            Redo::Kept(ranges, copied) => {
                let mut moved = self.move_ranges(&pool, &ranges);
                moved.append(&mut self.move_active(&pool));
                kept = ranges;
                kept.extend(copied);
                moved
            }
        };
        // Shards see the new state first; the events that describe it come after.
        self.store(&addr, &pool, (!every).then_some(&moved[..]));
        let h = &self.snap.health;
        for s in kept.into_iter().flatten().filter(|_| !every) {
            h.active[s].store(self.active[s], Relaxed);
        }
        self.moved_changes(&moved, &mut changes);
        self.addr = addr;
        self.pool = pool;
        changes
    }

    /// Each address's state: enabled, and up by its operator override, else its
    /// configured mode, else (auto) the prober's verdict.
    fn addresses_up(&self) -> Vec<bool> {
        self.snap
            .model
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.enabled
                    && match self.overrides.get(&a.name).copied().unwrap_or(a.mode) {
                        Mode::Up => true,
                        Mode::Down => false,
                        Mode::Auto => self.probe[i],
                    }
            })
            .collect()
    }

    /// The active pool of slot `s` given each pool's state: the first healthy candidate,
    /// except that a non-preemptive route keeps `cur` while it is healthy and still a
    /// candidate. The access domain's policy is read only when that question arises (a
    /// healthy `cur` that is not the first): a health change can touch a million slots,
    /// and each policy read is a cache miss.
    fn active_of(&self, s: usize, pool: &[bool], cur: u32) -> u32 {
        let snap = &self.snap;
        let first = snap
            .slot_pools(s)
            .find(|&p| pool[p])
            .map_or(NO_POOL, |p| p as u32);
        if first == cur || cur == NO_POOL || !pool.get(cur as usize).copied().unwrap_or(false) {
            return first;
        }
        let ad = &snap.gslb.ads[snap.model.slots[s].ad as usize];
        let sticky = ad.policy == (PoolPolicy::GlobalAvailability { preemptive: false });
        if sticky && snap.slot_pools(s).any(|p| p == cur as usize) {
            cur
        } else {
            first
        }
    }

    /// Works out the active pool of every slot afresh, in place, and returns the slots
    /// that moved with their previous pool (none listed unless `list`).
    fn move_all(&mut self, pool: &[bool], list: bool) -> Vec<(u32, u32)> {
        self.move_slots(pool, 0..self.active.len(), list)
    }

    /// [`Self::move_all`] for the slots in `ranges` only (they are listed).
    fn move_ranges(&mut self, pool: &[bool], ranges: &[std::ops::Range<usize>]) -> Vec<(u32, u32)> {
        self.move_slots(pool, ranges.iter().flat_map(Clone::clone), true)
    }

    /// Works out the active pool of `slots` afresh, in place, and returns those that
    /// moved with their previous pool (none listed unless `list`).
    fn move_slots(
        &mut self,
        pool: &[bool],
        slots: impl Iterator<Item = usize>,
        list: bool,
    ) -> Vec<(u32, u32)> {
        let mut moved = Vec::new();
        let mut active = std::mem::take(&mut self.active);
        for s in slots {
            let now = self.active_of(s, pool, active[s]);
            if now != active[s] {
                if list {
                    moved.push((s as u32, active[s]));
                }
                active[s] = now;
            }
        }
        self.active = active;
        moved
    }

    /// Updates `self.active` in place for the slots with a candidate pool whose state
    /// changed, and returns the slots that moved with their previous pool, in slot order.
    fn move_active(&mut self, pool: &[bool]) -> Vec<(u32, u32)> {
        let changed: Vec<bool> = pool.iter().zip(&self.pool).map(|(n, o)| n != o).collect();
        if !changed.contains(&true) {
            return Vec::new();
        }
        // Held by this frame, so the slots can be read while `self.active` is written.
        let snap = self.snap.clone();
        let g = &snap.gslb;
        // Per entry of the shared candidate lists (stored once, routes share them; a list
        // no route names any more may name a pool since removed): `next[i]` is the first
        // entry at or after `i` whose pool changed, so that a route's test is one load
        // (this scan reads every route: ~10M at a million access domains).
        let n = g.route_pools.len();
        let mut next = vec![n as u32; n + 1];
        for (i, &(p, _)) in g.route_pools.iter().enumerate().rev() {
            let hit = changed.get(p as usize).copied().unwrap_or(false);
            next[i] = if hit { i as u32 } else { next[i + 1] };
        }
        let hit_slots = g
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| next[r.start as usize] < r.start + r.len)
            .map(|(s, _)| s);
        self.move_slots(pool, hit_slots, true)
    }

    /// The addresses and pools whose state differs from the last written (none on a new
    /// layout: a reload's carried state is not news).
    fn up_changes(&self, addr: &[bool], pool: &[bool]) -> Vec<Change> {
        let m = &self.snap.model;
        let mut changes = Vec::new();
        if self.addr.len() != addr.len() {
            return changes;
        }
        for (i, (&o, &n)) in self.addr.iter().zip(addr).enumerate() {
            if o != n {
                changes.push(Change::Address {
                    name: m.addresses[i].name.clone(),
                    up: n,
                });
            }
        }
        for (i, (&o, &n)) in self.pool.iter().zip(pool).enumerate() {
            if o != n {
                changes.push(Change::Pool {
                    name: m.pools[i].name.clone(),
                    up: n,
                });
            }
        }
        changes
    }

    /// Stores the derived state where shards read it: the bitmaps, and the active pool of
    /// the slots in `moved`, or of every slot that differs (`None`: a new snapshot).
    fn store(&self, addr: &[bool], pool: &[bool], moved: Option<&[(u32, u32)]>) {
        let h = &self.snap.health;
        HealthState::store_bits(&h.addr_up, addr);
        HealthState::store_bits(&h.pool_up, pool);
        match moved {
            Some(moved) => {
                for &(s, _) in moved {
                    h.active[s as usize].store(self.active[s as usize], Relaxed);
                }
            }
            None => {
                for (dst, &v) in h.active.iter().zip(&self.active) {
                    if dst.load(Relaxed) != v {
                        dst.store(v, Relaxed);
                    }
                }
            }
        }
    }

    /// The tracked routes that switched pools, one event each up to [`MAX_ROUTE_EVENTS`],
    /// then one event counting the rest.
    fn moved_changes(&self, moved: &[(u32, u32)], changes: &mut Vec<Change>) {
        let snap = &self.snap;
        let (mut listed, mut more) = (0, 0);
        for &(s, o) in moved {
            let s = s as usize;
            if !snap.slot_tracked(s) {
                continue;
            }
            if listed == MAX_ROUTE_EVENTS {
                more += 1;
                continue;
            }
            listed += 1;
            let n = self.active[s];
            let (ad, lines) = snap.slot_key(s);
            changes.push(Change::Active {
                access_domain: ad,
                lines,
                pool: (n != NO_POOL).then(|| snap.model.pools[n as usize].name.clone()),
                from: (o != NO_POOL).then(|| snap.model.pools[o as usize].name.clone()),
            });
        }
        if more > 0 {
            changes.push(Change::ActiveMore { count: more });
        }
    }

    /// Current derived state: (addresses up, pools up, active pool per slot).
    pub fn state(&self) -> (&[bool], &[bool], &[u32]) {
        (&self.addr, &self.pool, &self.active)
    }
}

/// Slots to start afresh, and (slot, pool) carried: see [`Writer::moved`].
type Moved = (Vec<usize>, Vec<(usize, u32)>);

/// `v` resized to `len` slots (new ones [`NO_POOL`]), with room for a sixteenth more when
/// it has to grow: a reload that adds access domains then resizes it in place rather than
/// copying it (36 MB at a million of them).
fn grow(v: &mut Vec<u32>, len: usize) {
    if v.capacity() < len {
        v.reserve_exact(len + len / 16 - v.len());
    }
    v.resize(len, NO_POOL);
}

#[cfg(test)]
mod incremental_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of 8 addresses, 6 pools with every health condition, and access domains of
    /// every pool policy (non-preemptive included, nearest over two lines).
    fn config() -> String {
        let mut t = String::from(crate::config::DEFAULT_CONFIG);
        t.push_str("\n[[line]]\nname = \"l1\"\nprefixes = [\"198.51.100.0/24\"]\n");
        t.push_str("[[line]]\nname = \"l2\"\nprefixes = [\"198.18.0.0/24\"]\n");
        // A line no access domain names: nearest default routes answer it too.
        t.push_str("[[line]]\nname = \"l3\"\nprefixes = [\"198.18.1.0/24\"]\n");
        for a in 0..8 {
            t.push_str(&format!(
                "[[address]]\nname = \"a{a}\"\nvalue = \"192.0.2.{}\"\n",
                a + 1
            ));
        }
        let conditions = ["any", "all", "at least 2", "at least 50%", "any", "any"];
        for (p, cond) in conditions.iter().enumerate() {
            let (x, y, z) = (p, (p + 3) % 8, (p + 5) % 8);
            t.push_str(&format!(
                "[[pool]]\nname = \"p{p}\"\ntype = \"ipv4\"\nhealth = \"{cond}\"\n\
                 addresses = [\"a{x}\", \"a{y}\", \"a{z}\"]\n"
            ));
        }
        for d in 0..12 {
            let (p, q, r) = (d % 6, (d + 1) % 6, (d + 4) % 6);
            let policy = match d % 4 {
                0 => "policy = \"global-availability\"\npreemptive = true".to_string(),
                1 => "policy = \"global-availability\"\npreemptive = false".to_string(),
                2 => "policy = \"weighted\"".to_string(),
                _ => String::new(),
            };
            if policy.is_empty() {
                t.push_str(&format!(
                    "[[access-domain]]\nname = \"d{d}.example.test.\"\ntype = \"A\"\n\
                     policy = \"nearest\"\n[access-domain.lines]\nl1 = [\"p{p}\", \"p{q}\"]\n\
                     l2 = [\"p{r}\"]\ndefault = [\"p{q}\", \"p{r}\"]\n"
                ));
            } else {
                t.push_str(&format!(
                    "[[access-domain]]\nname = \"d{d}.example.test.\"\ntype = \"A\"\n{policy}\n\
                     pools = [\"p{p}\", \"p{q}\", \"p{r}\"]\n"
                ));
            }
        }
        t
    }

    fn writer() -> Writer {
        // A name of its own: a running server lays a model out after the last one loaded
        // under the same name (`config::gslb::layout`).
        let cfg = crate::config::Config::from_str(
            &config(),
            "t-writer".into(),
            std::path::Path::new("."),
        )
        .expect("valid test model");
        let snap = Arc::new(crate::compile::compile(&cfg, 1).expect("compiles"));
        Writer::new(snap, HashMap::new())
    }

    /// What shards read: the bitmaps and every active slot.
    fn published(w: &Writer) -> (Vec<bool>, Vec<bool>, Vec<u32>) {
        let h = &w.snap.health;
        let m = &w.snap.model;
        (
            (0..m.addresses.len() as u32)
                .map(|i| h.addr_up(i))
                .collect(),
            (0..m.pools.len() as u32).map(|i| h.pool_up(i)).collect(),
            (0..m.slots.len() as u32).map(|s| h.active(s)).collect(),
        )
    }

    /// The in-place update after a probe verdict or an override gives exactly the state,
    /// the published slots and the events of recomputing every slot from the same inputs
    /// (non-preemptive history included), over random sequences of flips.
    #[test]
    fn incremental_recompute_equals_full() {
        for seed in 1..=20u64 {
            let (mut inc, mut full) = (writer(), writer());
            assert!(
                inc.snap.model.slots.len() > 12,
                "routes of every access domain"
            );
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut moved_any = false;
            for step in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let a = format!("a{}", x % 8);
                let (a_inc, a_full);
                if x % 5 == 0 {
                    let mode = [None, Some(Mode::Up), Some(Mode::Down)][(x / 5 % 3) as usize];
                    a_inc = inc.set_override(&a, mode).unwrap();
                    full.overrides = inc.overrides.clone();
                } else {
                    let up = (x >> 20) % 2 == 0;
                    a_inc = inc.set_probe(&a, up);
                    full.probe.clone_from(&inc.probe);
                }
                a_full = full.recompute(Redo::All);
                moved_any |= a_inc.iter().any(|c| matches!(c, Change::Active { .. }));
                let at = format!("seed {seed} step {step}");
                assert_eq!(a_inc, a_full, "events, {at}");
                assert_eq!(inc.state(), full.state(), "state, {at}");
                assert_eq!(published(&inc), published(&full), "published, {at}");
            }
            assert!(moved_any, "seed {seed}: some route switched pools");
        }
    }

    /// Slot digests are equal exactly when slot keys are, within a snapshot and across
    /// two snapshots whose access domains are listed in another order (one left out), with
    /// another line set on the default routes of nearest ones.
    #[test]
    fn slot_digests_follow_slot_keys() {
        let text = config();
        let first = text.find("[[access-domain]]\nname = \"d0.").expect("ads");
        let (head, ads) = text.split_at(first);
        let mut blocks: Vec<String> = ads
            .split("[[access-domain]]")
            .filter(|b| !b.is_empty())
            .map(|b| format!("[[access-domain]]{b}"))
            .collect();
        blocks.reverse();
        blocks.pop();
        // And l3 gets routes of its own: default routes there answer fewer lines.
        let other = format!("{head}{}", blocks.concat()).replace("l2 = [", "l3 = [\"p0\"]\nl2 = [");
        // Names of their own, or the second would be laid out after the first (in the
        // first's order: `config::gslb::layout`).
        let snap = |t: &str, name: &str| {
            let cfg = crate::config::Config::from_str(t, name.into(), std::path::Path::new("."))
                .expect("valid");
            crate::compile::compile(&cfg, 1).expect("compiles")
        };
        let (a, b) = (snap(&text, "t-digests-a"), snap(&other, "t-digests-b"));
        let count = |s: &crate::tables::Snapshot| s.model.access_domains.len();
        assert_eq!(count(&b) + 1, count(&a), "one access domain fewer");
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        let mut digests: HashMap<u64, (String, String)> = HashMap::new();
        for s in [&a, &b] {
            for (i, d) in s.slot_digests().enumerate() {
                let key = s.slot_key(i);
                assert_eq!(*seen.entry(key.clone()).or_insert(d), d, "{key:?}");
                assert_eq!(*digests.entry(d).or_insert(key.clone()), key, "collision");
            }
        }
        assert!(seen.len() > 12, "routes of every access domain");
    }
}
