//! The state file (`control.state-file`): what a restart must not forget. Operator
//! overrides (pins) and the end times of those set for a while, the prober's verdict per address, and the active pool of every
//! non-preemptive route (by access domain and lines), so a restart neither sends traffic
//! back to a primary that a non-preemptive access domain had left, nor serves an address
//! it last knew down until the prober's first verdict says otherwise.
//!
//! Written whole and atomically (a temporary file beside it, fsync, rename, fsync of the
//! folder): on every change, debounced by [`DEBOUNCE`] (a thread waits for the health
//! writer's word), at once when an operator changes an override (the API answers 500 if
//! that fails), and at shutdown. Loaded at start-up: names the configuration no longer
//! has are dropped; health and active pools saved longer ago than
//! `control.state-max-age` are ignored (overrides are operator decisions and are always
//! restored).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, RecvTimeoutError};
use serde_json::json;
use tracing::{info, warn};

use super::api::{mode_name, ApiContext};
use crate::config::gslb::Mode;
use crate::health::{non_preemptive, Restored, Writer};
use crate::tables::gslb::NO_POOL;
use crate::tables::Snapshot;

/// How long the writer thread gathers changes before it writes them (a flapping target
/// costs at most a few writes a second).
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// The format written (1: overrides only, still read).
const FORMAT: u64 = 2;

/// The health writer's state at one revision, copied under its lock (cheap: vectors of
/// flags and indices) and written after the lock is released.
pub struct Capture {
    snap: Arc<Snapshot>,
    revision: u64,
    generation: u64,
    overrides: HashMap<String, Mode>,
    /// When the overrides set for a while end (Unix milliseconds).
    expires: HashMap<String, u64>,
    probe: Vec<bool>,
    /// (slot, pool) of the non-preemptive routes that have a pool: the only active pools
    /// written (a million access domains have ~10M slots, which are not copied).
    active: Vec<(u32, u32)>,
}

impl Capture {
    /// A copy of `w`'s state.
    pub fn of(w: &Writer, generation: u64) -> Self {
        Self {
            snap: w.snapshot().clone(),
            revision: w.revision(),
            generation,
            overrides: w.overrides().clone(),
            expires: w.expiries().clone(),
            probe: w.probes().to_vec(),
            active: non_preemptive_pools(w),
        }
    }

    /// The document written.
    fn to_json(&self, now: SystemTime) -> serde_json::Value {
        let m = &self.snap.model;
        let overrides: serde_json::Map<String, serde_json::Value> = self
            .overrides
            .iter()
            .map(|(n, &mo)| (n.clone(), mode_name(mo).into()))
            .collect();
        let health: serde_json::Map<String, serde_json::Value> = m
            .addresses
            .iter()
            .zip(&self.probe)
            .map(|(a, &up)| (a.name.clone(), up.into()))
            .collect();
        let active: Vec<serde_json::Value> = self
            .active
            .iter()
            .map(|&(s, p)| {
                let (ad, lines) = self.snap.slot_key(s as usize);
                json!({
                    "access_domain": ad,
                    "lines": lines,
                    "pool": m.pools[p as usize].name,
                })
            })
            .collect();
        json!({
            "format": FORMAT,
            "saved_unix_ms": now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
            "generation": self.generation,
            "overrides": overrides,
            "expires": self.expires,
            "health": health,
            "active_pools": active,
        })
    }
}

/// The active pool of every non-preemptive route that has one, by slot.
fn non_preemptive_pools(w: &Writer) -> Vec<(u32, u32)> {
    let snap = w.snapshot();
    let m = &snap.model;
    let mut out = Vec::new();
    let active = w.state().2;
    let n = m.slots.len().min(active.len());
    let mut s = 0;
    // Slots are grouped by access domain: one policy test per access domain.
    while s < n {
        let ad = m.slots[s].ad;
        let end = s + m.slots.range(s..n).take_while(|x| x.ad == ad).count();
        if non_preemptive(snap, s) {
            out.extend(
                (s..end)
                    .filter(|&i| active[i] != NO_POOL)
                    .map(|i| (i as u32, active[i])),
            );
        }
        s = end;
    }
    out
}

/// The revision last written, and where: a copy older than one already on disk is not
/// written over it (the API and the writer thread save from different threads).
static WRITTEN: Mutex<Option<(PathBuf, u64)>> = Mutex::new(None);

/// Writes `c` to `path` atomically, unless a later revision is already there.
pub fn save(path: &Path, c: &Capture) -> std::io::Result<()> {
    let mut last = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, rev)) = last.as_ref() {
        if p == path && *rev >= c.revision {
            return Ok(());
        }
    }
    let text = serde_json::to_string_pretty(&c.to_json(SystemTime::now()))?;
    super::crud::store::write_atomic(path, text.as_bytes())?;
    *last = Some((path.to_path_buf(), c.revision));
    Ok(())
}

/// Saves the writer's state now to the state file the API's settings name (if any).
pub fn save_now(ctx: &ApiContext) -> std::io::Result<()> {
    let Some(path) = ctx.settings.load().state_file.clone() else {
        return Ok(());
    };
    let c = {
        let w = ctx.writer.lock().expect("writer lock");
        Capture::of(&w, ctx.generation.load(Ordering::Relaxed))
    };
    save(&path, &c)
}

/// What a state file holds, as read.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Operator overrides (always restored).
    pub overrides: HashMap<String, Mode>,
    /// When those set for a while end (Unix milliseconds), by name.
    pub expires: HashMap<String, u64>,
    /// Health and active pools, unless too old (or absent).
    pub restored: Restored,
}

/// Reads the state file; a missing one is empty, an unreadable one is logged and empty.
/// Health and active pools older than `max_age` (or without a time) are left out.
pub fn load(path: Option<&Path>, max_age: Duration) -> Loaded {
    let Some(p) = path else {
        return Loaded::default();
    };
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::default(),
        Err(e) => {
            warn!(file = %p.display(), "ignoring unreadable state file: {e}");
            return Loaded::default();
        }
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => parse(&v, p, max_age, SystemTime::now()),
        Err(e) => {
            warn!(file = %p.display(), "ignoring unreadable state file: {e}");
            Loaded::default()
        }
    }
}

/// The parts of a state document, health and active pools only when younger than
/// `max_age` at `now`.
fn parse(v: &serde_json::Value, p: &Path, max_age: Duration, now: SystemTime) -> Loaded {
    let overrides = v
        .get("overrides")
        .and_then(|o| serde_json::from_value::<HashMap<String, Mode>>(o.clone()).ok())
        .unwrap_or_default();
    let expires = v
        .get("expires")
        .and_then(|o| serde_json::from_value::<HashMap<String, u64>>(o.clone()).ok())
        .unwrap_or_default();
    let mut out = Loaded {
        overrides,
        expires,
        restored: Restored::default(),
    };
    let Some(saved) = v.get("saved_unix_ms").and_then(serde_json::Value::as_u64) else {
        return out;
    };
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let age = Duration::from_millis(now_ms.saturating_sub(saved));
    // 0 restores nothing; a file saved "later than now" (the clock stepped back) has no
    // age to trust.
    if max_age.is_zero() || saved > now_ms {
        info!(
            file = %p.display(),
            "state file not restored: control.state-max-age is 0 or it is dated in the \
             future (overrides are)"
        );
        return out;
    }
    if age > max_age {
        info!(
            file = %p.display(),
            age_s = age.as_secs(),
            max_age_s = max_age.as_secs(),
            "state file older than control.state-max-age: health and active pools not restored \
             (overrides are)"
        );
        return out;
    }
    if let Some(h) = v.get("health").and_then(serde_json::Value::as_object) {
        for (name, up) in h {
            if let Some(up) = up.as_bool() {
                out.restored.probe.insert(name.clone(), up);
            }
        }
    }
    for a in v
        .get("active_pools")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |k: &str| {
            a.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        if let (Some(ad), Some(lines), Some(pool)) =
            (field("access_domain"), field("lines"), field("pool"))
        {
            out.restored.active.insert((ad, lines), pool);
        }
    }
    out
}

/// Starts the thread that saves the state [`DEBOUNCE`] after the health writer reports a
/// change (`changed`), until `stop`.
pub fn spawn_writer(
    ctx: Arc<ApiContext>,
    changed: Receiver<()>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("state-file".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match changed.recv_timeout(crate::shard::WAIT_BOUND) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let t0 = std::time::Instant::now();
                while t0.elapsed() < DEBOUNCE && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                while changed.try_recv().is_ok() {}
                if let Err(e) = save_now(&ctx) {
                    let file = ctx.settings.load().state_file.clone().unwrap_or_default();
                    warn!(file = %file.display(), "cannot save the state file: {e}");
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::{parse, Duration, UNIX_EPOCH};
    use std::path::Path;

    #[test]
    fn fresh_state_is_restored_and_stale_state_is_not() {
        let doc = serde_json::json!({
            "format": 2,
            "saved_unix_ms": 1_000_000u64,
            "overrides": {"A": "down"},
            "health": {"A": false, "B": true, "C": "junk"},
            "active_pools": [
                {"access_domain": "www.example.test. A", "lines": "default", "pool": "Backup"},
                {"access_domain": "x", "lines": "default"},
            ],
        });
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let max = Duration::from_secs(60);
        let fresh = parse(&doc, Path::new("s"), max, at(1_000_000 + 59_000));
        assert_eq!(fresh.overrides.len(), 1);
        assert_eq!(fresh.restored.probe.len(), 2);
        assert!(!fresh.restored.probe["A"]);
        assert_eq!(fresh.restored.active.len(), 1);
        let key = ("www.example.test. A".to_string(), "default".to_string());
        assert_eq!(fresh.restored.active[&key], "Backup");
        let stale = parse(&doc, Path::new("s"), max, at(1_000_000 + 61_000));
        assert_eq!(
            stale.overrides.len(),
            1,
            "overrides are kept whatever their age"
        );
        assert!(stale.restored.probe.is_empty());
        assert!(stale.restored.active.is_empty());
        // Dated after now (the clock went back), or a bound of 0: not restored.
        let future = parse(&doc, Path::new("s"), max, at(1_000_000 - 5_000));
        assert!(future.restored.probe.is_empty() && future.restored.active.is_empty());
        let never = parse(&doc, Path::new("s"), Duration::ZERO, at(1_000_000));
        assert!(never.restored.probe.is_empty() && never.overrides.len() == 1);
        // Format 1 (overrides only, no time): overrides only.
        let old = serde_json::json!({"overrides": {"A": "up"}});
        let old = parse(&old, Path::new("s"), max, at(0));
        assert_eq!(old.overrides.len(), 1);
        assert!(old.restored.probe.is_empty());
    }
}
