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

mod icmp;
pub mod latency;
mod syn;
mod tls;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use tracing::info;

use crate::config::gslb::{AddrValue, HealthCheck, Protocol};
use crate::health::{log_changes, SharedWriter};
use crate::shard::WAIT_BOUND;
use crate::tables::Snapshot;

/// Most of an HTTP response read: status line, headers and the first 4 KiB of body.
const HTTP_READ_LIMIT: usize = 8192;

/// The last result of one check, for the control API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Template name.
    pub check: String,
    /// Vantage point (source address), when the template names some.
    pub source: Option<String>,
    /// Current (thresholded) state of this check.
    pub up: bool,
    /// Whether the last check passed.
    pub last_ok: bool,
    /// Round trip of the last check, milliseconds.
    pub latency_ms: f64,
    /// Why the last check failed.
    pub error: Option<String>,
    /// The template's failure rate (for the address verdict).
    #[serde(skip)]
    failure_rate: u32,
    /// Results of this check so far (for the metrics).
    #[serde(skip)]
    pub stats: latency::CheckStats,
}

/// Last results by address name, shared with the control API.
pub type Reports = Arc<std::sync::Mutex<HashMap<String, Vec<Report>>>>;

enum Phase {
    Connecting,
    Writing(Vec<u8>, usize),
    Reading(Vec<u8>),
    /// Echo requests sent, replies received, their summed round trips.
    Ping(u32, u32, Duration),
    /// HTTPS: the TLS connection (request queued inside it) and the plaintext response.
    Tls(Box<rustls::ClientConnection>, Vec<u8>),
    /// Half-open TCP: SYN sent, waiting for SYN-ACK or RST.
    Syn,
}

/// Tokens of the raw TCP sockets of half-open checks.
const SYN_TOKEN: usize = usize::MAX / 4;

/// Tokens of the ICMP sockets start here (check tasks use their index).
const ICMP_TOKEN: usize = usize::MAX / 2;

struct Inflight {
    /// The connection (TCP and HTTP checks).
    stream: Option<TcpStream>,
    phase: Phase,
    deadline: Instant,
    started: Instant,
}

struct Task {
    address: String,
    target: SocketAddr,
    source: Option<IpAddr>,
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
    let mut carried: HashMap<(String, String, Option<IpAddr>), Task> = old
        .into_iter()
        .map(|t| ((t.address.clone(), t.check.name.clone(), t.source), t))
        .collect();
    let m = &snap.model;
    let now = Instant::now();
    let mut out = Vec::new();
    for a in m.addresses.iter().filter(|a| a.enabled) {
        let ip: IpAddr = match &a.value {
            AddrValue::V4(v) => (*v).into(),
            AddrValue::V6(v) => (*v).into(),
            // A domain name has no address to probe: its state follows its mode and overrides.
            AddrValue::Name(_) => continue,
        };
        for &c in &a.checks {
            let check = m.checks[c].clone();
            let sources: Vec<Option<IpAddr>> = if check.sources.is_empty() {
                vec![None]
            } else {
                check
                    .sources
                    .iter()
                    .filter(|s| s.is_ipv4() == ip.is_ipv4())
                    .map(|&s| Some(s))
                    .collect()
            };
            for source in sources {
                let key = (a.name.clone(), check.name.clone(), source);
                let prev = carried.remove(&key);
                let (ok_run, fail_run, up, report) = prev.map_or((0, 0, None, None), |t| {
                    (t.ok_run, t.fail_run, t.up, t.report)
                });
                out.push(Task {
                    address: a.name.clone(),
                    target: SocketAddr::new(ip, check.port),
                    source,
                    next: now,
                    ok_run,
                    fail_run,
                    up,
                    inflight: None,
                    report,
                    check: check.clone(),
                });
            }
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
    let mut icmp: Option<icmp::Icmp> = None;
    let mut syn: Option<syn::Syn> = None;
    info!(checks = list.len(), "prober started");
    while !stop.load(Ordering::Relaxed) {
        if let Ok(next) = reloads.try_recv() {
            for t in &mut list {
                if let Some(f) = t.inflight.take() {
                    release(&poll, f);
                }
            }
            if let Some(i) = icmp.as_mut() {
                i.forget_all();
            }
            if let Some(s) = syn.as_mut() {
                s.forget_all();
            }
            list = tasks(&next, list);
            info!(checks = list.len(), "prober reloaded");
        }
        if icmp.is_none() && list.iter().any(|t| t.check.protocol == Protocol::Ping) {
            icmp = Some(icmp::Icmp::new());
        }
        if syn.is_none() && list.iter().any(|t| t.check.half_open) {
            let s = syn::Syn::open();
            for (k, fd) in s.fds().into_iter().enumerate() {
                poll.registry().register(
                    &mut mio::unix::SourceFd(&fd),
                    Token(SYN_TOKEN + k),
                    Interest::READABLE,
                )?;
            }
            syn = Some(s);
        }
        let now = Instant::now();
        for (i, t) in list.iter_mut().enumerate() {
            if t.inflight.is_none() && t.next <= now && t.check.protocol == Protocol::Ping {
                t.next = now + t.check.interval;
                let pinger = icmp.as_mut().expect("opened above");
                match pinger.send(i, t.source, t.target.ip(), t.check.packets) {
                    Ok(sent) => {
                        t.inflight = Some(Inflight {
                            stream: None,
                            phase: Phase::Ping(sent, 0, Duration::ZERO),
                            deadline: now + t.check.timeout,
                            started: now,
                        })
                    }
                    Err(e) => finish(t, false, Duration::ZERO, Some(e), &writer, &reports),
                }
                continue;
            }
            if t.inflight.is_none()
                && t.next <= now
                && t.check.half_open
                && syn.as_ref().is_some_and(|s| s.can(&t.target))
            {
                t.next = now + t.check.interval;
                match syn.as_mut().expect("checked").send(i, t.target) {
                    Ok(()) => {
                        t.inflight = Some(Inflight {
                            stream: None,
                            phase: Phase::Syn,
                            deadline: now + t.check.timeout,
                            started: now,
                        })
                    }
                    Err(e) => finish(t, false, Duration::ZERO, Some(e), &writer, &reports),
                }
                continue;
            }
            if t.inflight.is_none() && t.next <= now {
                t.next = now + t.check.interval;
                match connect(t.target, t.source) {
                    Ok(mut s) => {
                        poll.registry().register(
                            &mut s,
                            Token(i),
                            Interest::WRITABLE | Interest::READABLE,
                        )?;
                        t.inflight = Some(Inflight {
                            stream: Some(s),
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
        if let Some(p) = icmp.as_mut() {
            for (k, fd) in p.new_fds() {
                poll.registry().register(
                    &mut mio::unix::SourceFd(&fd),
                    Token(ICMP_TOKEN + k),
                    Interest::READABLE,
                )?;
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
            if (SYN_TOKEN..ICMP_TOKEN).contains(&i) {
                for (task, open) in syn.as_mut().map(|p| p.recv()).unwrap_or_default() {
                    let Some(t) = list.get_mut(task) else {
                        continue;
                    };
                    if let Some(f) = t.inflight.take() {
                        let err = (!open).then(|| "connection refused (RST)".to_string());
                        finish(t, open, f.started.elapsed(), err, &writer, &reports);
                    }
                }
                continue;
            }
            if i >= ICMP_TOKEN {
                for (task, rtt) in icmp.as_mut().map(|p| p.recv()).unwrap_or_default() {
                    let Some(t) = list.get_mut(task) else {
                        continue;
                    };
                    let done = match t.inflight.as_mut().map(|f| &mut f.phase) {
                        Some(Phase::Ping(sent, got, total)) => {
                            *got += 1;
                            *total += rtt;
                            got == sent
                        }
                        _ => false,
                    };
                    if done {
                        let f = t.inflight.take().expect("in flight");
                        let (ok, err, took) = ping_verdict(&t.check, &f.phase);
                        finish(t, ok, took, err, &writer, &reports);
                    }
                }
                continue;
            }
            let Some(t) = list.get_mut(i) else { continue };
            let Some(f) = t.inflight.as_mut() else {
                continue;
            };
            match advance(f, &t.check, t.target) {
                Step::Pending => {}
                Step::Done(ok, err) => {
                    let f = t.inflight.take().expect("in flight");
                    let took = f.started.elapsed();
                    release(&poll, f);
                    finish(t, ok, took, err, &writer, &reports);
                }
            }
        }
        if first_round.is_some() && list.iter().all(|t| t.up.is_some()) {
            let _ = first_round.take().expect("some").send(());
        }
        let now = Instant::now();
        for (i, t) in list.iter_mut().enumerate() {
            if t.inflight.as_ref().is_some_and(|f| f.deadline <= now) {
                let f = t.inflight.take().expect("in flight");
                if let Phase::Ping(..) = f.phase {
                    // The time is up: judge on what came back.
                    if let Some(p) = icmp.as_mut() {
                        p.forget(i);
                    }
                    let (ok, err, took) = ping_verdict(&t.check, &f.phase);
                    finish(t, ok, took, err, &writer, &reports);
                    continue;
                }
                if let Phase::Syn = f.phase {
                    if let Some(p) = syn.as_mut() {
                        p.forget(i);
                    }
                }
                let what = match f.phase {
                    Phase::Connecting => "connect",
                    Phase::Syn => "SYN-ACK",
                    _ => "response",
                };
                let took = f.started.elapsed();
                release(&poll, f);
                finish(
                    t,
                    false,
                    took,
                    Some(format!("{what} timed out")),
                    &writer,
                    &reports,
                );
            }
        }
    }
    Ok(())
}

/// A non-blocking connect, from `source` when given (a vantage point).
fn connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(src) = source else {
        return TcpStream::connect(target);
    };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

fn release(poll: &Poll, f: Inflight) {
    if let Some(mut s) = f.stream {
        let _ = poll.registry().deregister(&mut s);
    }
}

/// A ping check passes when the loss stays below `max-loss` percent and the average round
/// trip within `max-rtt`.
fn ping_verdict(c: &HealthCheck, phase: &Phase) -> (bool, Option<String>, Duration) {
    let Phase::Ping(sent, got, total) = *phase else {
        return (false, Some("not a ping".into()), Duration::ZERO);
    };
    let loss = if sent == 0 {
        100.0
    } else {
        (sent - got) as f64 * 100.0 / sent as f64
    };
    let avg = if got == 0 {
        Duration::ZERO
    } else {
        total / got
    };
    if loss >= c.max_loss {
        (
            false,
            Some(format!("{got} of {sent} echo replies ({loss:.0}% loss)")),
            avg,
        )
    } else if avg > c.max_rtt {
        (
            false,
            Some(format!("average round trip {avg:?} above {:?}", c.max_rtt)),
            avg,
        )
    } else {
        (true, None, avg)
    }
}

enum Step {
    Pending,
    Done(bool, Option<String>),
}

/// Moves one check forward as far as the socket allows.
fn advance(f: &mut Inflight, c: &HealthCheck, target: SocketAddr) -> Step {
    let Some(stream) = f.stream.as_mut() else {
        return Step::Pending;
    };
    loop {
        match &mut f.phase {
            Phase::Connecting => {
                if let Ok(Some(e)) | Err(e) = stream.take_error() {
                    return Step::Done(false, Some(format!("connect: {e}")));
                }
                match stream.peer_addr() {
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
                let request = format!(
                    "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gtmd-health/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                    c.method,
                    c.path,
                    env!("CARGO_PKG_VERSION")
                );
                if c.protocol == Protocol::Https {
                    let name = c.sni.clone().unwrap_or(host);
                    let mut conn = match tls::connect(c.tls_verify, &name) {
                        Ok(conn) => conn,
                        Err(e) => return Step::Done(false, Some(e)),
                    };
                    if let Err(e) = conn.writer().write_all(request.as_bytes()) {
                        return Step::Done(false, Some(format!("tls: {e}")));
                    }
                    f.phase = Phase::Tls(Box::new(conn), Vec::with_capacity(1024));
                    continue;
                }
                f.phase = Phase::Writing(request.into_bytes(), 0);
            }
            Phase::Writing(buf, pos) => match stream.write(&buf[*pos..]) {
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
            Phase::Ping(..) | Phase::Syn => return Step::Pending,
            Phase::Tls(conn, resp) => return tls_step(conn, resp, stream, c),
            Phase::Reading(buf) => {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) => return http_verdict(buf, c, true),
                    Ok(n) => {
                        if let Some(done) = absorb(buf, &chunk[..n], c) {
                            return done;
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

/// Moves a TLS exchange on: ciphertext out, ciphertext in, plaintext response judged.
fn tls_step(
    conn: &mut rustls::ClientConnection,
    resp: &mut Vec<u8>,
    stream: &mut TcpStream,
    c: &HealthCheck,
) -> Step {
    loop {
        let mut progressed = false;
        while conn.wants_write() {
            match conn.write_tls(stream) {
                Ok(_) => progressed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::Done(false, Some(format!("send: {e}"))),
            }
        }
        let mut eof = false;
        if conn.wants_read() {
            match conn.read_tls(stream) {
                Ok(0) => eof = true,
                Ok(_) => {
                    progressed = true;
                    if let Err(e) = conn.process_new_packets() {
                        let _ = conn.write_tls(stream); // send the alert, best effort
                        return Step::Done(false, Some(format!("tls: {e}")));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                Err(e) => return Step::Done(false, Some(format!("receive: {e}"))),
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            match conn.reader().read(&mut chunk) {
                Ok(0) => return http_verdict(resp, c, true),
                Ok(n) => {
                    if let Some(done) = absorb(resp, &chunk[..n], c) {
                        return done;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return http_verdict(resp, c, true)
                }
                Err(e) => return Step::Done(false, Some(format!("tls: {e}"))),
            }
        }
        if eof {
            return http_verdict(resp, c, true);
        }
        if !progressed {
            return Step::Pending;
        }
    }
}

/// Appends response bytes; returns the verdict once one is possible (enough read, or the
/// status and body already decide).
fn absorb(resp: &mut Vec<u8>, bytes: &[u8], c: &HealthCheck) -> Option<Step> {
    resp.extend_from_slice(bytes);
    if resp.len() >= HTTP_READ_LIMIT {
        return Some(http_verdict(resp, c, true));
    }
    match http_verdict(resp, c, false) {
        Step::Pending => None,
        done => Some(done),
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
        source: t.source.map(|s| s.to_string()),
        failure_rate: t.check.failure_rate,
        up: t.up.unwrap_or(true),
        last_ok: ok,
        latency_ms: took.as_secs_f64() * 1000.0,
        error: err.clone(),
        stats: Default::default(),
    };
    latency::store(reports, &t.address, report.clone(), ok, took);
    t.report = Some(report);
    if before != t.up {
        let up = t.up.unwrap_or(true);
        let source = t.source.map(|s| s.to_string()).unwrap_or_default();
        info!(address = %t.address, check = %t.check.name, target = %t.target, source = %source, up, error = err.as_deref().unwrap_or(""), "health check state");
        // The address is up when every template passes: fewer than `failure-rate` percent
        // of its vantage points see it down.
        let all_up = reports
            .lock()
            .expect("reports lock")
            .get(&t.address)
            .is_none_or(|v| {
                let mut by_check: HashMap<&str, (u32, u32, u32)> = HashMap::new();
                for r in v {
                    let e = by_check.entry(r.check.as_str()).or_default();
                    e.0 += 1;
                    e.1 += (!r.up) as u32;
                    e.2 = r.failure_rate;
                }
                by_check
                    .values()
                    .all(|&(total, down, rate)| down * 100 < rate * total)
            });
        let changes = writer
            .lock()
            .expect("writer lock")
            .set_probe(&t.address, all_up);
        log_changes(&changes);
    }
}
