//! systemd notification (`Type=notify`): datagrams to `$NOTIFY_SOCKET` (`READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=...`), and the watchdog: with `WatchdogSec=` set
//! (`$WATCHDOG_USEC`, for this process when `$WATCHDOG_PID` is unset or names it),
//! `WATCHDOG=1` every half interval, but only while every shard thread's loop has turned
//! since the last one (each beats a heartbeat counter at least once per
//! [`crate::shard::WAIT_BOUND`]); a stuck shard stops the pings and systemd restarts the
//! service. No-op when not started by systemd.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::shard::{Counters, WAIT_BOUND};

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one.
pub(super) fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
}

/// How a reload went, for the status line.
#[derive(Debug, Clone, Copy)]
pub(super) enum LastReload {
    /// None since start-up.
    None,
    /// At this time (Unix seconds), accepted or not.
    At(u64, bool),
}

impl LastReload {
    /// A reload that just ended.
    pub(super) fn now(ok: bool) -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self::At(t.as_secs(), ok)
    }
}

/// The `STATUS=` line `systemctl status` shows: what is served, the generation, and the
/// last reload (time of day UTC).
pub(super) fn status(snap: &crate::tables::Snapshot, generation: u64, last: LastReload) -> String {
    let reload = match last {
        LastReload::None => "none".to_string(),
        LastReload::At(t, ok) => {
            let d = t % 86_400;
            format!(
                "{} at {:02}:{:02}:{:02} UTC",
                if ok { "ok" } else { "rejected" },
                d / 3600,
                d % 3600 / 60,
                d % 60
            )
        }
    };
    format!(
        "STATUS=serving {} zones, {} access domains; generation {generation}; last reload {reload}",
        snap.names.zones.len(),
        snap.model.access_domains.len()
    )
}

/// The watchdog interval asked of this process: `$WATCHDOG_USEC`, unless `$WATCHDOG_PID`
/// names another process.
fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Starts the watchdog thread when systemd asks for one (see the module documentation):
/// it watches the heartbeats of `shards` until `stop`.
pub(super) fn spawn_watchdog(
    shards: Vec<Arc<Counters>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let Some(interval) = watchdog_interval() else {
        return Ok(None);
    };
    let every = interval / 2;
    if every < WAIT_BOUND * 2 {
        warn!(
            watchdog_ms = interval.as_millis() as u64,
            "WatchdogSec is shorter than shards need to show they are alive (0.4 s): use 1 s or more"
        );
    }
    info!(
        every_ms = every.as_millis() as u64,
        "systemd watchdog: WATCHDOG=1 while every shard thread turns"
    );
    let t = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let beats = |s: &[Arc<Counters>]| -> Vec<u64> {
                s.iter()
                    .map(|c| c.heartbeat.load(Ordering::Relaxed))
                    .collect()
            };
            let mut last = beats(&shards);
            send("WATCHDOG=1");
            let mut due = Instant::now() + every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < due {
                    std::thread::sleep(WAIT_BOUND.min(due - Instant::now()));
                    continue;
                }
                due += every;
                let now = beats(&shards);
                let stuck = stuck(&shards, &now, &last);
                if stuck.is_empty() {
                    send("WATCHDOG=1");
                } else {
                    warn!(
                        ?stuck,
                        "shard threads did not turn: no WATCHDOG=1 to systemd"
                    );
                }
                last = now;
            }
        })?;
    Ok(Some(t))
}

/// The shard threads (`shard/transport`) whose heartbeat did not move from `last` to `now`.
fn stuck(shards: &[Arc<Counters>], now: &[u64], last: &[u64]) -> Vec<String> {
    shards
        .iter()
        .zip(now.iter().zip(last))
        .filter(|(_, (n, l))| n == l)
        .map(|(c, _)| format!("{}/{:?}", c.shard, c.transport))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{stuck, Arc, Counters};
    use crate::wire::Transport;

    #[test]
    fn a_shard_whose_heartbeat_did_not_move_is_stuck() {
        let shards: Vec<Arc<Counters>> = (0..2)
            .flat_map(|i| {
                [Transport::Udp, Transport::Tcp].map(|t| Arc::new(Counters::new(i, t, 1)))
            })
            .collect();
        assert!(stuck(&shards, &[5, 6, 7, 8], &[1, 2, 3, 4]).is_empty());
        assert_eq!(stuck(&shards, &[5, 6, 3, 8], &[1, 2, 3, 4]), vec!["1/Udp"]);
        assert_eq!(stuck(&shards, &[1, 2, 3, 4], &[1, 2, 3, 4]).len(), 4);
    }
}
