//! Shared health (issue 14, `[fleet] share-health`): on a fleet edge, this edge's verdicts
//! go to the other edges through the engine and theirs come back, and an address's
//! verdict is the failure-rate rule over every edge's *fresh* verdict
//! ([`super::verdict::fleet_up`]).
//!
//! This table sits between the prober and the control layer's `fleet` thread. The prober
//! writes this edge's verdict per (address, template) after each result ([`Shared::set_mine`])
//! and reads the other edges' fresh verdicts when it counts an address's votes; the
//! `fleet` thread takes this edge's changed verdicts to publish ([`Shared::take_outbox`],
//! [`Shared::mine`]) and stores what other edges publish ([`Shared::receive`]), waking
//! the prober, which recounts the addresses concerned. The prober also recounts an
//! address when one of its remote verdicts goes stale or is forgotten ([`Shared::due`]).
//!
//! A verdict is *fresh* for [`FRESH_PERIODS`] of its sender's refresh periods, then
//! *stale*, and forgotten after twice that. A stale verdict counts as up, never as down:
//! votes go stale one by one (each edge refreshes on its own phase), and a healthy view
//! going silent must not tip the balance towards a failover (with 1 edge of 3 seeing a
//! target down at a 50% rate, the other healthy edge going silent would otherwise make it
//! 1 of 2). When no other edge's verdict on a template is fresh (the edge alone, the
//! engine lost), the edge's own verdict decides, as on a single node.
//!
//! Freshness is judged by this edge's monotonic clock (receipt time, backdated by the age
//! the engine gives a verdict that was already stored), never by the sender's clock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::members::View;
use crate::config::fleet::{Anchor, Fleet};

/// A verdict counts while younger than this many of its sender's refresh periods (the
/// template's interval): two refreshes may be lost before it stops counting.
pub const FRESH_PERIODS: u32 = 3;
/// A verdict is written again at least this often, however long its interval.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);

/// How long a verdict refreshed every `interval` counts after it was written:
/// [`FRESH_PERIODS`] refresh periods (the period at least 1 s, at most [`MAX_REFRESH`]).
pub fn window(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), MAX_REFRESH) * FRESH_PERIODS
}

/// One other edge's verdict on one (address, template).
#[derive(Debug, Clone)]
pub struct Remote {
    /// The template.
    pub check: String,
    /// The edge (the vantage).
    pub edge: String,
    /// Its verdict.
    pub up: bool,
    /// When it arrived (this edge's clock, backdated by its age in the engine).
    pub received: Instant,
    /// It counts for this long after `received`: [`FRESH_PERIODS`] x its refresh period.
    pub window: Duration,
    /// Since when the sender has held this verdict (Unix ms, the sender's clock: shown,
    /// never compared).
    pub since_ms: u64,
    /// The sender said it was isolated when it wrote it: it does not count.
    pub isolated: bool,
    /// Whether it was fresh when its address was last counted.
    counted: bool,
}

impl Remote {
    /// A verdict just received, `age` old already.
    pub fn new(check: String, edge: String, up: bool, age: Duration, window: Duration) -> Self {
        let now = Instant::now();
        Self {
            check,
            edge,
            up,
            received: now.checked_sub(age).unwrap_or(now),
            window,
            since_ms: 0,
            isolated: false,
            counted: false,
        }
    }

    /// Whether it counts as itself at `now` (after that, as up).
    pub fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received) < self.window
    }

    /// Whether it is forgotten at `now`.
    fn forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.received) >= self.window * 2
    }
}

/// This edge's own verdict on one (address, template): the template's rule over this
/// edge's vantage points (its `sources`, or the default route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mine {
    /// The verdict.
    pub up: bool,
    /// The template's interval: the verdict is written again at least this often.
    pub interval: Duration,
    /// When it last changed (Unix ms, this edge's clock).
    pub since_ms: u64,
    /// When the last result came (this edge's clock).
    pub checked: Instant,
    /// When the `fleet` thread last wrote it to the engine (this edge's clock).
    pub written: Option<Instant>,
}

/// One vote as `GET /v1/state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VoteView {
    /// The edge that voted.
    pub edge: String,
    /// The template.
    pub check: String,
    /// `up` or `down`.
    pub verdict: &'static str,
    /// Milliseconds since the vote arrived (this edge's own: since its last result).
    pub age_ms: u64,
    /// Whether it counts (fresh).
    pub counted: bool,
    /// Since when the voter has held it (Unix ms, the voter's clock).
    pub since_ms: u64,
}

/// (address, template).
pub type Key = (String, String);

/// An edge's `[fleet]` settings for sharing probes.
#[derive(Debug, Clone)]
pub struct Sharding {
    /// Its vantage group.
    pub group: String,
    /// Probers per check and group.
    pub probes_per_group: usize,
    /// Fresh votes a check needs before its verdict changes.
    pub min_vantages: usize,
    /// Its anchors.
    pub anchors: Vec<Anchor>,
}

impl Default for Sharding {
    fn default() -> Self {
        Self {
            group: "default".into(),
            probes_per_group: 3,
            min_vantages: 2,
            anchors: Vec::new(),
        }
    }
}

/// The table; see the module's documentation.
pub struct Shared {
    /// This edge's name: its own verdicts are never taken from the engine.
    edge: String,
    /// Its `[fleet]` sharding settings.
    sharding: Sharding,
    /// The membership (from the `fleet` thread) and its generation.
    view: Mutex<Arc<View>>,
    view_gen: AtomicU64,
    /// This edge found itself isolated (its checks and anchors failing).
    isolated: AtomicBool,
    /// Checks (address, template, vantage point) this edge probes, of how many.
    probed: AtomicU64,
    checks: AtomicU64,
    /// Templates whose fleet verdict holds (too few fresh votes).
    held: AtomicU64,
    state: Mutex<State>,
    /// Wakes the prober's loop when remote verdicts arrive.
    waker: OnceLock<mio::Waker>,
    /// Tells the `fleet` thread that this edge's verdicts changed.
    on_change: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
struct State {
    /// The other edges' verdicts, by address.
    others: HashMap<String, Vec<Remote>>,
    /// Addresses whose remote verdicts changed since the prober last counted them.
    dirty: HashSet<String>,
    /// This edge's verdicts.
    mine: HashMap<Key, Mine>,
    /// Keys of `mine` whose verdict changed since the `fleet` thread last took them.
    outbox: HashSet<Key>,
    /// When the prober last looked for verdicts that aged out.
    last_sweep: Option<Instant>,
}

/// How often the prober looks for remote verdicts that aged out.
const SWEEP: Duration = Duration::from_millis(200);

impl Shared {
    /// An empty table for the edge `edge`, with the default sharding settings.
    pub fn new(edge: &str) -> Self {
        Self::with(edge, Sharding::default())
    }

    /// An empty table for the edge of `f`.
    pub fn for_fleet(f: &Fleet) -> Self {
        Self::with(
            &f.edge,
            Sharding {
                group: f.group.clone(),
                probes_per_group: f.probes_per_group,
                min_vantages: f.min_vantages,
                anchors: f.anchors.clone(),
            },
        )
    }

    fn with(edge: &str, sharding: Sharding) -> Self {
        Self {
            edge: edge.to_string(),
            sharding,
            view: Mutex::new(Arc::new(View::default())),
            view_gen: AtomicU64::new(0),
            isolated: AtomicBool::new(false),
            probed: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            held: AtomicU64::new(0),
            state: Mutex::default(),
            waker: OnceLock::new(),
            on_change: OnceLock::new(),
        }
    }

    /// This edge's name.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    /// Its sharding settings.
    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    /// The membership view now.
    pub fn view(&self) -> Arc<View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Bumped at every new view that changes who probes what.
    pub(super) fn view_generation(&self) -> u64 {
        self.view_gen.load(Ordering::Acquire)
    }

    /// A new membership view (from the `fleet` thread); when it changes who probes
    /// what, the prober is woken to take it.
    pub fn set_view(&self, v: View) {
        let mut cur = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let moved = cur.key() != v.key();
        *cur = Arc::new(v);
        drop(cur);
        if moved {
            self.view_gen.fetch_add(1, Ordering::AcqRel);
            if let Some(w) = self.waker.get() {
                let _ = w.wake();
            }
        }
    }

    /// The prober's counts: (checks probed here, checks, templates holding).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.probed.load(Ordering::Relaxed),
            self.checks.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
        )
    }

    pub(super) fn set_probed(&self, probed: usize, of: usize) {
        self.probed.store(probed as u64, Ordering::Relaxed);
        self.checks.store(of as u64, Ordering::Relaxed);
    }

    pub(super) fn set_held(&self, n: usize) {
        self.held.store(n as u64, Ordering::Relaxed);
    }

    /// Whether this edge found itself isolated.
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Acquire)
    }

    /// Sets this edge's isolation; on a change every verdict of this edge is queued to be
    /// written again (with the flag), and the `fleet` thread told.
    pub(super) fn set_isolated(&self, on: bool) {
        if self.isolated.swap(on, Ordering::AcqRel) == on {
            return;
        }
        let mut s = self.lock();
        let keys: Vec<Key> = s.mine.keys().cloned().collect();
        s.outbox.extend(keys);
        drop(s);
        if let Some(f) = self.on_change.get() {
            f();
        }
    }

    /// This edge no longer probes `check` of `address`: its verdict is no longer written,
    /// and the other edges let it age out from when it was last written. So that every
    /// edge counts the same votes, this edge keeps counting it as they do: it joins the
    /// remote verdicts (under this edge's name), fresh then stale then forgotten by the
    /// same rule. One never written is dropped (no other edge has it).
    pub(super) fn drop_mine(&self, address: &str, check: &str) {
        let mut s = self.lock();
        let key = (address.to_string(), check.to_string());
        s.outbox.remove(&key);
        let Some(m) = s.mine.remove(&key) else {
            return;
        };
        let Some(written) = m.written else {
            return;
        };
        let r = Remote {
            check: check.to_string(),
            edge: self.edge.clone(),
            up: m.up,
            received: written,
            window: window(m.interval),
            since_ms: m.since_ms,
            isolated: self.isolated(),
            counted: true,
        };
        let list = s.others.entry(address.to_string()).or_default();
        list.retain(|x| !(x.edge == r.edge && x.check == r.check));
        list.push(r);
    }

    /// The `fleet` thread wrote this edge's verdict on `key` at `at`.
    pub fn written(&self, key: &Key, at: Instant) {
        if let Some(m) = self.lock().mine.get_mut(key) {
            m.written = Some(at);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding it leaves plain data: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The prober's waker (set once, when the prober starts).
    pub(super) fn set_waker(&self, w: mio::Waker) {
        let _ = self.waker.set(w);
    }

    /// Stores another edge's verdict on `address` (in place of its last one on the same
    /// template) and wakes the prober to recount the address. This edge's own verdicts
    /// are ignored.
    pub fn receive(&self, address: &str, mut r: Remote) {
        if r.edge == self.edge {
            return;
        }
        let mut s = self.lock();
        let list = s.others.entry(address.to_string()).or_default();
        match list
            .iter_mut()
            .find(|x| x.check == r.check && x.edge == r.edge)
        {
            Some(x) => {
                r.counted = x.counted;
                *x = r;
            }
            None => list.push(r),
        }
        s.dirty.insert(address.to_string());
        drop(s);
        if let Some(w) = self.waker.get() {
            let _ = w.wake();
        }
    }

    /// What the `fleet` thread runs when this edge's verdicts change (set once).
    pub fn on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_change.set(f);
    }

    /// Records this edge's verdict after a result; a changed (or first) verdict is queued
    /// for the `fleet` thread, which is told.
    pub(super) fn set_mine(&self, address: &str, check: &str, up: bool, interval: Duration) {
        if self.record_mine(address, check, up, interval) {
            if let Some(f) = self.on_change.get() {
                f();
            }
        }
    }

    /// [`Shared::set_mine`]'s record; whether the verdict was queued.
    fn record_mine(&self, address: &str, check: &str, up: bool, interval: Duration) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        let key = (address.to_string(), check.to_string());
        match s.mine.get_mut(&key) {
            Some(m) if m.up == up && m.interval == interval => {
                m.checked = now;
                return false;
            }
            Some(m) => {
                if m.up != up {
                    m.since_ms = unix_ms();
                }
                m.up = up;
                m.interval = interval;
                m.checked = now;
                s.outbox.insert(key);
            }
            None => {
                let m = Mine {
                    up,
                    interval,
                    since_ms: unix_ms(),
                    checked: now,
                    written: None,
                };
                // Its last verdict from before (kept while it aged out) gives way.
                if let Some(l) = s.others.get_mut(address) {
                    l.retain(|r| !(r.edge == self.edge && r.check == check));
                }
                s.mine.insert(key.clone(), m);
                s.outbox.insert(key);
            }
        }
        true
    }

    /// After a reload: forgets this edge's verdicts on what it no longer checks (they are
    /// no longer written; the other edges let them age out).
    pub(super) fn retain_mine(&self, keep: &HashSet<Key>) {
        let mut s = self.lock();
        s.mine.retain(|k, _| keep.contains(k));
        s.outbox.retain(|k| keep.contains(k));
    }

    /// This edge's verdicts changed since the last call, to publish.
    pub fn take_outbox(&self) -> Vec<(Key, Mine)> {
        let mut s = self.lock();
        let keys: Vec<Key> = s.outbox.drain().collect();
        keys.into_iter()
            .filter_map(|k| s.mine.get(&k).map(|m| (k, *m)))
            .collect()
    }

    /// Every verdict of this edge (to publish again when due).
    pub fn mine(&self) -> Vec<(Key, Mine)> {
        let s = self.lock();
        s.mine.iter().map(|(k, m)| (k.clone(), *m)).collect()
    }

    /// The addresses to count again: those with new remote verdicts, and (every
    /// [`SWEEP`]) those with a remote verdict that went stale, or was forgotten, since
    /// they were last counted.
    pub(super) fn due(&self, now: Instant) -> Vec<String> {
        let mut s = self.lock();
        let mut out: Vec<String> = s.dirty.drain().collect();
        if s.last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP)
        {
            s.last_sweep = Some(now);
            for (a, list) in &mut s.others {
                let before = list.len();
                list.retain(|r| !r.forgotten(now));
                if list.len() != before || list.iter().any(|r| r.fresh(now) != r.counted) {
                    out.push(a.clone());
                }
            }
            s.others.retain(|_, l| !l.is_empty());
            out.sort();
            out.dedup();
        }
        out
    }

    /// The remote verdicts on `address` as (template, `Some(up)` fresh or `None` stale),
    /// for the vote; records which were fresh. An isolated edge's verdict is no vote,
    /// unless `ignore_isolation` (most members are isolated).
    pub(super) fn remote_votes(
        &self,
        address: &str,
        now: Instant,
        ignore_isolation: bool,
    ) -> Vec<(String, Option<bool>)> {
        let mut s = self.lock();
        let Some(list) = s.others.get_mut(address) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in list.iter_mut().filter(|r| !r.forgotten(now)) {
            if r.isolated && !ignore_isolation {
                // Neither fresh nor stale: an isolated vantage's verdict is no vote.
                r.counted = false;
                continue;
            }
            r.counted = r.fresh(now);
            out.push((r.check.clone(), r.counted.then_some(r.up)));
        }
        out
    }

    /// Every vote on `address`: this edge's, then the others' by edge and template.
    pub fn votes(&self, address: &str) -> Vec<VoteView> {
        let now = Instant::now();
        // An isolated member's own verdicts do not count, even here.
        let view = self.view();
        let ignore = view.isolation_ignored();
        let own_counts = !(self.isolated() && view.joined) || ignore;
        let s = self.lock();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut mine: Vec<VoteView> = s
            .mine
            .iter()
            .filter(|(k, _)| k.0 == address)
            .map(|(k, m)| VoteView {
                edge: self.edge.clone(),
                check: k.1.clone(),
                verdict: if m.up { "up" } else { "down" },
                age_ms: ms(now.saturating_duration_since(m.checked)),
                counted: own_counts,
                since_ms: m.since_ms,
            })
            .collect();
        mine.sort_by(|a, b| a.check.cmp(&b.check));
        let mut others: Vec<VoteView> = s
            .others
            .get(address)
            .into_iter()
            .flatten()
            .map(|r| VoteView {
                edge: r.edge.clone(),
                check: r.check.clone(),
                verdict: if r.up { "up" } else { "down" },
                age_ms: ms(now.saturating_duration_since(r.received)),
                counted: r.fresh(now) && (!r.isolated || ignore),
                since_ms: r.since_ms,
            })
            .collect();
        others.sort_by(|a, b| (&a.edge, &a.check).cmp(&(&b.edge, &b.check)));
        mine.extend(others);
        mine
    }

    /// Addresses with votes, for the metrics: (address, template, fresh up, fresh down),
    /// this edge's vote included.
    pub fn tally(&self) -> Vec<(String, String, u32, u32)> {
        let now = Instant::now();
        let s = self.lock();
        let mut t: HashMap<Key, (u32, u32)> = HashMap::new();
        for (k, m) in &s.mine {
            let e = t.entry(k.clone()).or_default();
            if m.up {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        for (a, list) in &s.others {
            for r in list.iter().filter(|r| r.fresh(now) && !r.isolated) {
                let e = t.entry((a.clone(), r.check.clone())).or_default();
                if r.up {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
        }
        let mut out: Vec<_> = t.into_iter().map(|((a, c), (u, d))| (a, c, u, d)).collect();
        out.sort();
        out
    }
}

/// Now, Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(check: &str, edge: &str, up: bool, age_ms: u64) -> Remote {
        Remote::new(
            check.into(),
            edge.into(),
            up,
            Duration::from_millis(age_ms),
            Duration::from_secs(3),
        )
    }

    #[test]
    fn fresh_votes_age_out_and_own_name_is_ignored() {
        let s = Shared::new("e1");
        s.receive("a", remote("http", "e2", false, 0));
        s.receive("a", remote("http", "e3", false, 5_000));
        s.receive("a", remote("http", "e1", false, 0));
        let now = Instant::now();
        assert_eq!(s.due(now), ["a"]);
        let mut v = s.remote_votes("a", now, false);
        v.sort();
        assert_eq!(
            v,
            [
                ("http".to_string(), None),
                ("http".to_string(), Some(false))
            ]
        );
        // Counted once; nothing changes until e2's verdict goes stale.
        assert!(s.due(now + SWEEP).is_empty());
        assert_eq!(s.due(now + SWEEP * 2 + Duration::from_secs(3)), ["a"]);
        assert_eq!(
            s.remote_votes("a", now + Duration::from_secs(4), false),
            [("http".to_string(), None)]
        );
        // (e3's, sent 5 s before, was forgotten at 6 s.) e2's is forgotten at 6 s too:
        // counted again.
        assert_eq!(s.due(now + Duration::from_millis(6500)), ["a"]);
        assert!(s
            .remote_votes("a", now + Duration::from_millis(6500), false)
            .is_empty());
        // A newer verdict from e2 replaces its old one.
        s.receive("a", remote("http", "e2", true, 0));
        assert_eq!(
            s.remote_votes("a", Instant::now(), false),
            [("http".to_string(), Some(true))]
        );
        assert_eq!(s.votes("a").len(), 1);
    }

    #[test]
    fn a_dropped_own_verdict_ages_out_as_on_the_other_edges() {
        let s = Shared::new("e1");
        let i = Duration::from_secs(1);
        // Never written: nobody else has it, it goes at once.
        s.set_mine("a", "http", false, i);
        s.drop_mine("a", "http");
        assert!(s.remote_votes("a", Instant::now(), false).is_empty());
        // Written: it counts (fresh) for 3 periods from the write, then stale, then gone,
        // exactly as the other edges count it.
        s.set_mine("a", "http", false, i);
        let at = Instant::now();
        s.written(&("a".into(), "http".into()), at);
        s.drop_mine("a", "http");
        assert!(s.mine().is_empty());
        let http = || "http".to_string();
        assert_eq!(s.remote_votes("a", at, false), [(http(), Some(false))]);
        let later = at + Duration::from_millis(3100);
        assert_eq!(s.remote_votes("a", later, false), [(http(), None)]);
        assert!(s
            .remote_votes("a", at + Duration::from_millis(6100), false)
            .is_empty());
        // Probing it again: the new verdict replaces the old one.
        s.set_mine("a", "http", true, i);
        assert!(s.remote_votes("a", at, false).is_empty());
    }

    #[test]
    fn own_verdicts_queue_on_change_only() {
        let s = Shared::new("e1");
        let i = Duration::from_secs(1);
        s.set_mine("a", "http", true, i);
        assert_eq!(s.take_outbox().len(), 1);
        s.set_mine("a", "http", true, i);
        assert!(s.take_outbox().is_empty());
        s.set_mine("a", "http", false, i);
        let out = s.take_outbox();
        assert_eq!((out.len(), out[0].1.up), (1, false));
        s.retain_mine(&HashSet::new());
        assert!(s.mine().is_empty());
    }
}
