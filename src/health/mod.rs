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

use crate::config::gslb::{Condition, Mode, PoolPolicy};
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
            Self::Active { access_domain, lines, pool } => match pool {
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

/// The single writer of a snapshot's [`HealthState`].
#[derive(Debug)]
pub struct Writer {
    snap: Arc<Snapshot>,
    /// Probe verdict per address (true until the prober says otherwise).
    probe: Vec<bool>,
    /// Operator overrides by address name (win over config mode and probes).
    overrides: HashMap<String, Mode>,
    /// Derived state as last written, for change detection.
    addr: Vec<bool>,
    pool: Vec<bool>,
    active: Vec<u32>,
    /// Changes counted per address and pool, for the metrics.
    transitions: Transitions,
}

impl Writer {
    /// A writer for `snap`, with `overrides` (e.g. loaded from the state file); fills the
    /// snapshot's health state.
    pub fn new(snap: Arc<Snapshot>, overrides: HashMap<String, Mode>) -> Self {
        let n = snap.model.addresses.len();
        let mut w = Self {
            probe: vec![true; n],
            overrides,
            addr: Vec::new(),
            pool: Vec::new(),
            active: Vec::new(),
            transitions: Transitions::default(),
            snap,
        };
        w.recompute(true);
        w
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
        let old_active: Vec<u32> = self
            .active
            .iter()
            .map(|&p| renumber.get(p as usize).copied().unwrap_or(NO_POOL))
            .collect();
        let old_keys: Vec<u64> = (0..om.slots.len()).map(|s| old.slot_digest(s)).collect();
        let new_keys: Vec<u64> = (0..nm.slots.len())
            .map(|s| self.snap.slot_digest(s))
            .collect();
        self.active = if old_keys == new_keys {
            old_active
        } else {
            carry(&old_keys, &old_active, &new_keys, NO_POOL)
        };
        self.apply(true)
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
        Ok(self.apply(false))
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
        self.apply(false)
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
            // Nothing else changed: recomputing keeps every slot, this one included.
            self.apply(false);
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
    fn apply(&mut self, full: bool) -> Vec<Change> {
        let changes = self.recompute(full);
        self.transitions.count(&changes);
        changes
    }

    /// Recomputes every derived bit and slot from the inputs and stores what changed.
    /// `full`: every slot afresh (a new snapshot); else only the slots whose candidate
    /// pools changed state, so a health change costs little even with millions of slots.
    fn recompute(&mut self, full: bool) -> Vec<Change> {
        let addr = self.addresses_up();
        let pool = pools_up(&self.snap.model, &addr);
        let active = self.active_pools(&pool, full);
        let mut changes = self.up_changes(&addr, &pool);
        // Shards see the new state first; the events that describe it come after.
        self.store(&addr, &pool, &active);
        self.route_changes(&active, &mut changes);
        self.addr = addr;
        self.pool = pool;
        self.active = active;
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

    /// The active pool of every route slot: the first healthy candidate, except that a
    /// non-preemptive route keeps a pool that is still healthy and still a candidate.
    /// Unless `full` (or the layout changed), only the slots with a candidate pool whose
    /// state changed are worked out; the others keep their pool.
    fn active_pools(&self, pool: &[bool], full: bool) -> Vec<u32> {
        let snap = &self.snap;
        let m = &snap.model;
        let full = full || self.pool.len() != pool.len() || self.active.len() != m.slots.len();
        let changed: Vec<bool> = if full {
            Vec::new()
        } else {
            pool.iter().zip(&self.pool).map(|(n, o)| n != o).collect()
        };
        let g = &snap.gslb;
        m.slots
            .iter()
            .enumerate()
            .map(|(s, slot)| {
                if !full {
                    let r = &g.routes[s];
                    let list = &g.route_pools[r.start as usize..(r.start + r.len) as usize];
                    if !list.iter().any(|&(p, _)| changed[p as usize]) {
                        return self.active[s];
                    }
                }
                let ad = &m.access_domains[slot.ad as usize];
                let first = snap
                    .slot_pools(s)
                    .find(|&p| pool[p])
                    .map_or(NO_POOL, |p| p as u32);
                match ad.policy {
                    PoolPolicy::GlobalAvailability { preemptive: false } => {
                        let cur = self.active.get(s).copied().unwrap_or(NO_POOL);
                        if cur != NO_POOL
                            && pool[cur as usize]
                            && snap.slot_pools(s).any(|p| p == cur as usize)
                        {
                            cur
                        } else {
                            first
                        }
                    }
                    _ => first,
                }
            })
            .collect()
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

    /// Stores the derived state where shards read it (an active slot only when it moved).
    fn store(&self, addr: &[bool], pool: &[bool], active: &[u32]) {
        let h = &self.snap.health;
        HealthState::store_bits(&h.addr_up, addr);
        HealthState::store_bits(&h.pool_up, pool);
        for (dst, &v) in h.active.iter().zip(active) {
            if dst.load(Relaxed) != v {
                dst.store(v, Relaxed);
            }
        }
    }

    /// The tracked routes that switched pools, one event each up to [`MAX_ROUTE_EVENTS`],
    /// then one event counting the rest.
    fn route_changes(&self, active: &[u32], changes: &mut Vec<Change>) {
        if self.active.len() != active.len() {
            return;
        }
        let snap = &self.snap;
        let (mut listed, mut more) = (0, 0);
        for (s, (&o, &n)) in self.active.iter().zip(active).enumerate() {
            if o != n && snap.slot_tracked(s) {
                if listed == MAX_ROUTE_EVENTS {
                    more += 1;
                    continue;
                }
                listed += 1;
                let (ad, lines) = snap.slot_key(s);
                changes.push(Change::Active {
                    access_domain: ad,
                    lines,
                    pool: (n != NO_POOL).then(|| snap.model.pools[n as usize].name.clone()),
                });
            }
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
