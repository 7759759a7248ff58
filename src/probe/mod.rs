//! `probe -> health -> shards`: the prober. One thread, separate from the shards, runs
//! every health check of every address on a readiness loop (mio): non-blocking connects,
//! HTTP requests and reads, each bounded by the template's timeout, so a slow or
//! black-holed target never delays the others. Results pass anti-flap thresholds
//! (`down-after` consecutive failures, `up-after` consecutive successes, as gdnsd's
//! monitors and GTM's evaluation counts); a verdict change goes to the single health
//! writer, which updates the bitmaps the shards read.
//!
//! The first result of a check decides its state directly (no threshold), so a target
//! that is down at start-up is not served for `down-after` intervals. An address is up
//! when every one of its checks is.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tracing::{info, warn};

use crate::config::gslb::{AddrValue, HealthCheck, Protocol};
use crate::control::api::{log_changes, SharedWriter};
use crate::shard::WAIT_BOUND;
use crate::tables::Snapshot;

/// Most of an HTTP response read: status line, headers and the first 4 KiB of body.
const HTTP_READ_LIMIT: usize = 8192;

/// The last result of one check, for the control API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Template name.
    pub check: String,
    /// Current (thresholded) state of this check.
    pub up: bool,
    /// Whether the last check passed.
    pub last_ok: bool,
    /// Round trip of the last check, milliseconds.
    pub latency_ms: f64,
    /// Why the last check failed.
    pub error: Option<String>,
}

/// Last results by address name, shared with the control API.
pub type Reports = Arc<std::sync::Mutex<HashMap<String, Vec<Report>>>>;

enum Phase {
    Connecting,
    Writing(Vec<u8>, usize),
    Reading(Vec<u8>),
}

struct Inflight {
    stream: TcpStream,
    phase: Phase,
    deadline: Instant,
    started: Instant,
}

struct Task {
    address: String,
    target: SocketAddr,
    check: HealthCheck,
    next: Instant,
    ok_run: u32,
    fail_run: u32,
    up: Option<bool>,
    inflight: Option<Inflight>,
    report: Option<Report>,
}

/// Builds the task list for a snapshot, carrying counters and state over by
/// (address name, template name) from `old`.
fn tasks(snap: &Snapshot, old: Vec<Task>) -> Vec<Task> {
    let mut carried: HashMap<(String, String), Task> = old
        .into_iter()
        .map(|t| ((t.address.clone(), t.check.name.clone()), t))
        .collect();
    let m = &snap.model;
    let now = Instant::now();
    let mut out = Vec::new();
    for a in m.addresses.iter().filter(|a| a.enabled) {
        let ip: IpAddr = match &a.value {
            AddrValue::V4(v) => (*v).into(),
            AddrValue::V6(v) => (*v).into(),
            AddrValue::Name(_) => continue, // domain addresses are checked by their owner
        };
        for &c in &a.checks {
            let check = m.checks[c].clone();
            if !matches!(check.protocol, Protocol::Tcp | Protocol::Http) {
                continue;
            }
            let key = (a.name.clone(), check.name.clone());
            let prev = carried.remove(&key);
            let (ok_run, fail_run, up, report) = prev.map_or((0, 0, None, None), |t| {
                (t.ok_run, t.fail_run, t.up, t.report)
            });
            out.push(Task {
                address: a.name.clone(),
                target: SocketAddr::new(ip, check.port),
                next: now,
                ok_run,
                fail_run,
                up,
                inflight: None,
                report,
                check,
            });
        }
    }
    out
}

/// Runs the prober until `stop`. New snapshots (reloads) arrive on `reloads`; one message
/// on `first_round` says every check has its first verdict.
pub fn run(
    snap: Arc<Snapshot>,
    writer: SharedWriter,
    reports: Reports,
    reloads: Receiver<Arc<Snapshot>>,
    first_round: Sender<()>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut first_round = Some(first_round);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut list = tasks(&snap, Vec::new());
    let unsupported: Vec<String> = snap
        .model
        .checks
        .iter()
        .filter(|c| !matches!(c.protocol, Protocol::Tcp | Protocol::Http))
        .map(|c| c.name.clone())
        .collect();
    if !unsupported.is_empty() {
        warn!(templates = ?unsupported, "ping and https checks are not run by this build: their addresses follow their mode and overrides only");
    }
    info!(checks = list.len(), "prober started");
    while !stop.load(Ordering::Relaxed) {
        if let Ok(next) = reloads.try_recv() {
            for t in &mut list {
                if let Some(mut f) = t.inflight.take() {
                    let _ = poll.registry().deregister(&mut f.stream);
                }
            }
            list = tasks(&next, list);
            info!(checks = list.len(), "prober reloaded");
        }
        let now = Instant::now();
        for (i, t) in list.iter_mut().enumerate() {
            if t.inflight.is_none() && t.next <= now {
                t.next = now + t.check.interval;
                match TcpStream::connect(t.target) {
                    Ok(mut s) => {
                        poll.registry().register(
                            &mut s,
                            Token(i),
                            Interest::WRITABLE | Interest::READABLE,
                        )?;
                        t.inflight = Some(Inflight {
                            stream: s,
                            phase: Phase::Connecting,
                            deadline: now + t.check.timeout,
                            started: now,
                        });
                    }
                    Err(e) => finish(
                        t,
                        false,
                        Duration::ZERO,
                        Some(format!("connect: {e}")),
                        &writer,
                        &reports,
                    ),
                }
            }
        }
        let wait = list
            .iter()
            .map(|t| t.inflight.as_ref().map_or(t.next, |f| f.deadline))
            .min()
            .map_or(WAIT_BOUND, |d| d.saturating_duration_since(Instant::now()))
            .min(WAIT_BOUND);
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(t) = list.get_mut(i) else { continue };
            let Some(f) = t.inflight.as_mut() else {
                continue;
            };
            match advance(f, &t.check, t.target) {
                Step::Pending => {}
                Step::Done(ok, err) => {
                    let mut f = t.inflight.take().expect("in flight");
                    let _ = poll.registry().deregister(&mut f.stream);
                    finish(t, ok, f.started.elapsed(), err, &writer, &reports);
                }
            }
        }
        if first_round.is_some() && list.iter().all(|t| t.up.is_some()) {
            let _ = first_round.take().expect("some").send(());
        }
        let now = Instant::now();
        for t in &mut list {
            if t.inflight.as_ref().is_some_and(|f| f.deadline <= now) {
                let mut f = t.inflight.take().expect("in flight");
                let _ = poll.registry().deregister(&mut f.stream);
                let what = match f.phase {
                    Phase::Connecting => "connect",
                    _ => "response",
                };
                finish(
                    t,
                    false,
                    f.started.elapsed(),
                    Some(format!("{what} timed out")),
                    &writer,
                    &reports,
                );
            }
        }
    }
    Ok(())
}

enum Step {
    Pending,
    Done(bool, Option<String>),
}

/// Moves one check forward as far as the socket allows.
fn advance(f: &mut Inflight, c: &HealthCheck, target: SocketAddr) -> Step {
    loop {
        match &mut f.phase {
            Phase::Connecting => {
                if let Ok(Some(e)) | Err(e) = f.stream.take_error() {
                    return Step::Done(false, Some(format!("connect: {e}")));
                }
                match f.stream.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Pending,
                    Err(e) => return Step::Done(false, Some(format!("connect: {e}"))),
                }
                if c.protocol == Protocol::Tcp {
                    return Step::Done(true, None);
                }
                let host = c.host.clone().unwrap_or_else(|| match target.ip() {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                });
                let req = format!(
                    "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gtmd-health/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                    c.method,
                    c.path,
                    env!("CARGO_PKG_VERSION")
                );
                f.phase = Phase::Writing(req.into_bytes(), 0);
            }
            Phase::Writing(buf, pos) => match f.stream.write(&buf[*pos..]) {
                Ok(n) => {
                    *pos += n;
                    if *pos == buf.len() {
                        f.phase = Phase::Reading(Vec::with_capacity(1024));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::Done(false, Some(format!("send: {e}"))),
            },
            Phase::Reading(buf) => {
                let mut chunk = [0u8; 4096];
                match f.stream.read(&mut chunk) {
                    Ok(0) => return http_verdict(buf, c, true),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() >= HTTP_READ_LIMIT {
                            return http_verdict(buf, c, true);
                        }
                        if let Step::Done(ok, e) = http_verdict(buf, c, false) {
                            return Step::Done(ok, e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Step::Done(false, Some(format!("receive: {e}"))),
                }
            }
        }
    }
}

/// Judges an HTTP response: status in `expect`, and `body-contains` found in the first
/// 4 KiB of the body. `complete`: nothing more will come.
fn http_verdict(buf: &[u8], c: &HealthCheck, complete: bool) -> Step {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if complete {
            Step::Done(false, Some("incomplete HTTP response".into()))
        } else {
            Step::Pending
        };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status: Option<u16> = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    let Some(status) = status else {
        return Step::Done(false, Some("not an HTTP response".into()));
    };
    if !c.expect.contains(&status) {
        return Step::Done(false, Some(format!("HTTP status {status}")));
    }
    let Some(want) = &c.body_contains else {
        return Step::Done(true, None);
    };
    let body = &buf[head_end + 4..buf.len().min(head_end + 4 + 4096)];
    if body
        .windows(want.len().max(1))
        .any(|w| w == want.as_bytes())
    {
        Step::Done(true, None)
    } else if complete || body.len() >= 4096 {
        Step::Done(false, Some(format!("body lacks {want:?}")))
    } else {
        Step::Pending
    }
}

/// Applies one result: thresholds, report, and the address verdict to the writer.
fn finish(
    t: &mut Task,
    ok: bool,
    took: Duration,
    err: Option<String>,
    writer: &SharedWriter,
    reports: &Reports,
) {
    if ok {
        t.ok_run += 1;
        t.fail_run = 0;
    } else {
        t.fail_run += 1;
        t.ok_run = 0;
    }
    tracing::debug!(address = %t.address, ok, error = err.as_deref().unwrap_or(""), "check result");
    let before = t.up;
    t.up = match t.up {
        None => Some(ok),
        Some(true) if t.fail_run >= t.check.down_after => Some(false),
        Some(false) if t.ok_run >= t.check.up_after => Some(true),
        same => same,
    };
    let report = Report {
        check: t.check.name.clone(),
        up: t.up.unwrap_or(true),
        last_ok: ok,
        latency_ms: took.as_secs_f64() * 1000.0,
        error: err.clone(),
    };
    {
        let mut r = reports.lock().expect("reports lock");
        let v = r.entry(t.address.clone()).or_default();
        match v.iter_mut().find(|x| x.check == report.check) {
            Some(x) => *x = report.clone(),
            None => v.push(report.clone()),
        }
    }
    t.report = Some(report);
    if before != t.up {
        let up = t.up.unwrap_or(true);
        info!(address = %t.address, check = %t.check.name, target = %t.target, up, error = err.as_deref().unwrap_or(""), "health check state");
        // The address is up when all of its checks are.
        let all_up = reports
            .lock()
            .expect("reports lock")
            .get(&t.address)
            .is_none_or(|v| v.iter().all(|r| r.up));
        let changes = writer
            .lock()
            .expect("writer lock")
            .set_probe(&t.address, all_up && up);
        log_changes(&changes);
    }
}
