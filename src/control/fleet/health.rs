//! Shared health on an edge (`[fleet] share-health`): this edge's verdicts go to the
//! engine, the other edges' come back into the prober's table ([`Shared`]), where the
//! prober counts them with the failure-rate rule.
//!
//! **Why a KV bucket** (`gtmd_health`, one key per edge and check) rather than a stream
//! of verdict messages: what an edge needs is the *latest* verdict of every (edge, check),
//! not their history. A KV watch starts with exactly that (the last value of each key)
//! and then follows changes, so an edge that starts or reconnects is up to date at once,
//! and the engine keeps one message per key (history 1) however long the fleet runs; a
//! stream would have to be replayed or bounded by age. Every key has one writer (the
//! edge named in it), as MULTINODE.md's rule 2 asks. The bucket is in memory: verdicts
//! are rewritten at least every interval and re-published in full on every (re)connection,
//! so an engine restart loses nothing that matters; entries expire after
//! [`HEALTH_MAX_AGE`], which only collects the keys of edges that left (Debian's
//! nats-server 2.9 sends no delete markers: freshness is judged by the receiver).
//!
//! Keys are `v.<edge>.<check>`, `<check>` a hash of (address, template) because address
//! and template names may hold characters a key may not; the value names both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::members::{Members, MEMBERS_BUCKET};
use crate::control::api::ApiContext;
use crate::probe::shared::{Key, Mine, Remote, Shared, FRESH_PERIODS, MAX_REFRESH};

/// The KV bucket of the verdicts.
pub const HEALTH_BUCKET: &str = "gtmd_health";
/// Entries older than this are removed by the engine (the keys of edges that left).
pub const HEALTH_MAX_AGE: Duration = Duration::from_secs(4 * 3600);
/// Most verdicts written at once.
const IN_FLIGHT: usize = 64;
/// How often the loop looks at `stop` and for verdicts due again (a changed verdict is
/// written at once: the prober tells).
const TICK: Duration = Duration::from_millis(100);
/// How often the verdicts due again are looked for.
const REFRESH_SCAN: Duration = Duration::from_millis(500);
/// Most heartbeats already received that are read before the view is built.
const DRAIN: usize = 4096;
/// Pause before sharing is tried again after a failure.
const RETRY: Duration = Duration::from_secs(2);

/// One edge's verdict on one (address, template), as stored under its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    /// The edge that judged (the vantage).
    pub edge: String,
    /// The address's name.
    pub address: String,
    /// The template's name.
    pub check: String,
    /// Its verdict over the edge's vantage points.
    pub up: bool,
    /// The edge found itself isolated when it wrote this: the verdict does not count.
    #[serde(default)]
    pub isolated: bool,
    /// Since when it has held this verdict (Unix ms, the edge's clock).
    pub since_ms: u64,
    /// When it was written (Unix ms, the edge's clock).
    pub at_ms: u64,
    /// It is written again at least this often (ms): the template's interval. A reader
    /// counts it for [`FRESH_PERIODS`] of these after receiving it.
    pub refresh_ms: u64,
}

/// `v.<edge>.<hash of address and template>`.
pub fn key(edge: &str, address: &str, check: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(address.as_bytes());
    ctx.update(&[0]);
    ctx.update(check.as_bytes());
    let d = ctx.finish();
    let hex: String = d.as_ref()[..10]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    format!("v.{edge}.{hex}")
}

/// The edge's side of shared health, kept across sessions.
pub(super) struct Sharing {
    shared: Arc<Shared>,
    /// Notified by the prober when this edge's verdicts change.
    changed: Arc<tokio::sync::Notify>,
    /// When each of this edge's verdicts was last written, this session.
    written: HashMap<Key, Instant>,
    /// Keys whose value was not a verdict of the edge it names (warned about once).
    bad: std::collections::HashSet<String>,
    /// Verdicts received from other edges (for the log's first line and the status).
    received: u64,
    /// The last error (logged once until it changes or sharing works again).
    failing: Option<String>,
    /// For the heartbeats: the control API (the epoch served), this edge's boot id and
    /// start.
    api: Arc<ApiContext>,
    boot: u64,
    started: Instant,
}

/// The membership of one session, reset when the session ends however it ends (an
/// error, or its future dropped when the engine is lost): this edge then probes
/// everything itself until it has joined again.
struct Session(Members);

impl Drop for Session {
    fn drop(&mut self) {
        self.0.reset();
    }
}

impl Sharing {
    pub(super) fn new(shared: Arc<Shared>, api: Arc<ApiContext>) -> Self {
        let changed = Arc::new(tokio::sync::Notify::new());
        let c = changed.clone();
        shared.on_change(Box::new(move || c.notify_one()));
        Self {
            shared,
            changed,
            written: HashMap::new(),
            bad: Default::default(),
            received: 0,
            failing: None,
            api,
            boot: super::edge::boot_id(),
            started: Instant::now(),
        }
    }

    /// Shares health over `js` until `stop`. A failure here (the bucket cannot be made,
    /// a write is refused) is logged once and retried every [`RETRY`], without ending the
    /// connection: epochs keep coming meanwhile, and the other edges' verdicts go stale,
    /// so this edge falls back on its own. When the engine itself is lost, the epoch
    /// side notices and the connection starts over.
    pub(super) async fn run(&mut self, js: &jetstream::Context, stop: &AtomicBool) {
        loop {
            let e = match self.session(js, stop).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if self.failing.as_ref() != Some(&e) {
                warn!(edge = %self.shared.edge(), "fleet: sharing health failed ({e}): this edge's own verdicts decide; retrying");
                self.failing = Some(e);
            }
            let until = Instant::now() + RETRY;
            while Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// One attempt: writes this edge's verdicts (all of them first, then the changed
    /// ones at once and every one again when its interval has passed) and stores the
    /// other edges'. Returns on an engine error, or `Ok` on `stop`.
    async fn session(&mut self, js: &jetstream::Context, stop: &AtomicBool) -> Result<(), String> {
        let bucket = super::kv_bucket(
            js,
            super::BucketSpec {
                name: HEALTH_BUCKET,
                description: "gtmd: each edge's health verdicts",
                history: 1,
                max_age: Some(HEALTH_MAX_AGE),
                memory: true,
            },
        )
        .await?;
        let mbucket = Members::bucket(js).await?;
        let mut mwatch = mbucket
            .watch_with_history(">")
            .await
            .map_err(|e| format!("cannot watch {MEMBERS_BUCKET}: {e}"))?;
        let mut members = Session(Members::new(
            self.shared.clone(),
            self.api.clone(),
            self.boot,
            self.started,
        ));
        // The engine's clock now: stored verdicts are aged against it (not this edge's
        // clock, which may be off), so a verdict an edge left long ago does not count.
        let mut newest = self.engine_now(&bucket).await?;
        // The last verdict of every key first (`watch_all` would start with new ones).
        let mut watch = bucket
            .watch_with_history(">")
            .await
            .map_err(|e| format!("cannot watch {HEALTH_BUCKET}: {e}"))?;
        self.written.clear();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan = Instant::now()
            .checked_sub(REFRESH_SCAN)
            .unwrap_or_else(Instant::now);
        loop {
            tokio::select! {
                w = watch.next() => match w {
                    Some(Ok(entry)) => self.receive(&entry, &mut newest),
                    Some(Err(e)) => return Err(format!("watch of {HEALTH_BUCKET} failed: {e}")),
                    None => return Err(format!("watch of {HEALTH_BUCKET} ended")),
                },
                w = mwatch.next() => match w {
                    Some(Ok(entry)) => members.0.receive(&entry),
                    Some(Err(e)) => return Err(format!("watch of {MEMBERS_BUCKET} failed: {e}")),
                    None => return Err(format!("watch of {MEMBERS_BUCKET} ended")),
                },
                () = self.changed.notified() => {
                    let due = self.shared.take_outbox();
                    self.write(&bucket, due).await?;
                }
                _ = tick.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    members.0.beat(&mbucket).await?;
                    // Every heartbeat already here first: the view is built from all.
                    for _ in 0..DRAIN {
                        let Some(w) = mwatch.next().now_or_never() else { break };
                        match w {
                            Some(Ok(entry)) => members.0.receive(&entry),
                            Some(Err(e)) => return Err(format!("watch of {MEMBERS_BUCKET} failed: {e}")),
                            None => return Err(format!("watch of {MEMBERS_BUCKET} ended")),
                        }
                    }
                    members.0.publish();
                    let mut due = self.shared.take_outbox();
                    if last_scan.elapsed() >= REFRESH_SCAN {
                        last_scan = Instant::now();
                        due.extend(self.refresh_due());
                    }
                    self.write(&bucket, due).await?;
                }
            }
        }
    }

    /// Writes this edge's heartbeat key and reads back when the engine stored it.
    async fn engine_now(&self, bucket: &kv::Store) -> Result<i128, String> {
        let k = format!("hb.{}", self.shared.edge());
        let fail = |e: String| format!("cannot write to {HEALTH_BUCKET}: {e}");
        let at = crate::control::ops::unix_ms().to_string();
        bucket
            .put(&k, at.into_bytes().into())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let e = bucket.entry(&k).await.map_err(|e| fail(e.to_string()))?;
        Ok(e.map_or(0, |e| e.created.unix_timestamp_nanos()))
    }

    /// This edge's verdicts not written this session, or written an interval ago.
    fn refresh_due(&self) -> Vec<(Key, Mine)> {
        let now = Instant::now();
        self.shared
            .mine()
            .into_iter()
            .filter(|(k, m)| {
                let every = m.interval.clamp(Duration::from_secs(1), MAX_REFRESH);
                self.written
                    .get(k)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= every)
            })
            .collect()
    }

    /// Writes `due`, [`IN_FLIGHT`] at a time.
    async fn write(&mut self, bucket: &kv::Store, due: Vec<(Key, Mine)>) -> Result<(), String> {
        if due.is_empty() {
            return Ok(());
        }
        let edge = self.shared.edge().to_string();
        let at_ms = crate::control::ops::unix_ms();
        let isolated = self.shared.isolated();
        let puts = due.into_iter().map(|((address, check), m)| {
            let k = key(&edge, &address, &check);
            let v = Verdict {
                edge: edge.clone(),
                address: address.clone(),
                check: check.clone(),
                up: m.up,
                isolated,
                since_ms: m.since_ms,
                at_ms,
                refresh_ms: u64::try_from(m.interval.as_millis()).unwrap_or(u64::MAX),
            };
            let body = serde_json::to_vec(&v).unwrap_or_default();
            async move {
                let r = bucket.put(&k, body.into()).await;
                (address, check, r)
            }
        });
        let mut results = futures_util::stream::iter(puts).buffer_unordered(IN_FLIGHT);
        while let Some((address, check, r)) = results.next().await {
            r.map_err(|e| format!("cannot write a verdict to {HEALTH_BUCKET}: {e}"))?;
            let key = (address, check);
            let now = Instant::now();
            self.shared.written(&key, now);
            self.written.insert(key, now);
        }
        if self.failing.take().is_some() {
            info!(edge = %self.shared.edge(), "fleet: sharing health again");
        }
        Ok(())
    }

    /// An entry of the bucket: another edge's verdict goes to the table, aged by the
    /// engine's clock against the newest entry seen (`newest`, Unix ns).
    fn receive(&mut self, entry: &kv::Entry, newest: &mut i128) {
        let created = entry.created.unix_timestamp_nanos();
        *newest = (*newest).max(created);
        if entry.operation != kv::Operation::Put || !entry.key.starts_with("v.") {
            return;
        }
        let v = match serde_json::from_slice::<Verdict>(&entry.value) {
            Ok(v) if key(&v.edge, &v.address, &v.check) == entry.key => v,
            other => {
                if self.bad.insert(entry.key.clone()) {
                    let why = other
                        .err()
                        .map_or("written under another edge's key".into(), |e| e.to_string());
                    warn!(key = %entry.key, "fleet: {HEALTH_BUCKET} holds something that is not this key's verdict ({why}): ignored");
                }
                return;
            }
        };
        if v.edge == self.shared.edge() {
            return;
        }
        let age = Duration::from_nanos(u64::try_from(*newest - created).unwrap_or(0));
        let period = Duration::from_millis(v.refresh_ms).clamp(Duration::from_secs(1), MAX_REFRESH);
        debug!(edge = %v.edge, address = %v.address, check = %v.check, up = v.up, age_ms = age.as_millis() as u64, "fleet: verdict received");
        if self.received == 0 {
            info!(edge = %v.edge, "fleet: sharing health: first verdict of another edge received");
        }
        self.received += 1;
        let mut r = Remote::new(v.check, v.edge, v.up, age, period * FRESH_PERIODS);
        r.since_ms = v.since_ms;
        r.isolated = v.isolated;
        self.shared.receive(&v.address, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys_and_distinct() {
        let a = key("e1", "Primary Server/01", "http health");
        assert!(a.starts_with("v.e1."));
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
        assert_ne!(a, key("e1", "Primary Server/0", "1http health"));
        assert_ne!(a, key("e2", "Primary Server/01", "http health"));
        assert_eq!(a, key("e1", "Primary Server/01", "http health"));
    }
}
