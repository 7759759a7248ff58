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
//!
//! Those rules live in `verdict.rs`, without sockets or clocks; this file is the loop that
//! starts checks, moves their bytes, reads the clock and hands results to the rules.

mod fleet;
mod icmp;
pub mod latency;
pub mod members;
pub mod shared;
mod syn;
mod timers;
mod tls;
mod verdict;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tracing::info;

use crate::config::gslb::{AddrValue, HealthCheck, Protocol};
use crate::health::{log_changes, SharedWriter};
use crate::shard::WAIT_BOUND;
use crate::tables::Snapshot;
use shared::Shared;
use timers::Timers;
use verdict::{Echoes, Flap, HttpRule, Outcome, PingRule, Step, Thresholds, Vote};

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

impl Report {
    /// This report's vote for its address.
    fn vote(&self) -> Vote<'_> {
        Vote {
            check: &self.check,
            up: self.up,
            failure_rate: self.failure_rate,
        }
    }
}

enum Phase {
    Connecting,
    Writing(Vec<u8>, usize),
    Reading(Vec<u8>),
    /// Echo requests sent, and what came back.
    Ping(Echoes),
    /// HTTPS: the TLS connection (request queued inside it) and the plaintext response.
    Tls(Box<rustls::ClientConnection>, Vec<u8>),
    /// Half-open TCP: SYN sent, waiting for SYN-ACK or RST.
    Syn,
}

/// Tokens of the raw TCP sockets of half-open checks.
const SYN_TOKEN: usize = usize::MAX / 4;

/// Tokens of the ICMP sockets start here (check tasks use their index).
const ICMP_TOKEN: usize = usize::MAX / 2;

/// The token of the waker the `fleet` thread uses when other edges' verdicts arrive.
const WAKE_TOKEN: usize = usize::MAX;

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
    /// The thresholded state, carried over reloads.
    flap: Flap,
    inflight: Option<Inflight>,
    report: Option<Report>,
    /// The check's id for probe sharding ([`members::check_id`]).
    id: u64,
    /// This edge probes it (on a fleet edge, the check may be another edge's to probe;
    /// an anchor is probed only while this edge suspects it is isolated).
    probing: bool,
    /// An anchor of `[fleet] anchors`, not a check of an address.
    anchor: bool,
}

impl Task {
    /// A new check is due: none in flight and the interval has passed.
    fn due(&self, now: Instant) -> bool {
        self.inflight.is_none() && self.next <= now
    }

    /// When the loop must look at this task again: the deadline of the check in flight, or
    /// the start of the next one.
    fn wakeup(&self) -> Instant {
        self.inflight.as_ref().map_or(self.next, |f| f.deadline)
    }
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
                let (flap, report) = prev.map_or((Flap::default(), None), |t| (t.flap, t.report));
                out.push(Task {
                    address: a.name.clone(),
                    target: SocketAddr::new(ip, check.port),
                    source,
                    next: now,
                    flap,
                    inflight: None,
                    report,
                    id: members::check_id(&a.name, &check.name),
                    probing: true,
                    anchor: false,
                    check: check.clone(),
                });
            }
        }
    }
    out
}

/// Where results go: the control API's reports and the health writer; on a fleet edge
/// sharing health, also the shared verdicts (whose other edges' votes count too).
struct Outlet {
    writer: SharedWriter,
    reports: Reports,
    shared: Option<Arc<Shared>>,
    /// Each address's templates and their failure rates (a fleet edge counts votes on
    /// templates it does not probe itself).
    templates: HashMap<String, Vec<(String, u32)>>,
    /// The fleet's last verdict per (address, template), held while too few votes are
    /// fresh; and the templates holding.
    decided: std::cell::RefCell<fleet::Decided>,
}

/// The prober's state: its checks and the sockets they share.
struct Prober {
    poll: Poll,
    list: Vec<Task>,
    /// The ICMP sockets, opened when a ping check first appears.
    icmp: Option<icmp::Icmp>,
    /// The raw TCP sockets, opened when a half-open check first appears.
    syn: Option<syn::Syn>,
    out: Outlet,
    /// When each check must next be looked at.
    timers: Timers,
    /// Checks without a first result yet.
    undecided: usize,
    /// The membership generation the assignment was made from (none: make it again).
    view_gen: Option<u64>,
    /// Prober isolation (`[fleet] anchors`).
    isolation: fleet::Isolation,
}

/// Where the prober's results go: the health writer, the control API's reports, and on
/// a fleet edge sharing health the shared verdicts.
pub struct Sinks {
    /// The health writer.
    pub writer: SharedWriter,
    /// The control API's table of last results.
    pub reports: Reports,
    /// The shared verdicts (`[fleet] share-health`).
    pub shared: Option<Arc<Shared>>,
}

/// Runs the prober until `stop`. New snapshots (reloads) arrive on `reloads`; one message
/// on `first_round` says every check has its first verdict.
pub fn run(
    snap: Arc<Snapshot>,
    sinks: Sinks,
    reloads: Receiver<Arc<Snapshot>>,
    first_round: Sender<()>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let Sinks {
        writer,
        reports,
        shared,
    } = sinks;
    let mut p = Prober {
        poll: Poll::new()?,
        list: Vec::new(),
        icmp: None,
        syn: None,
        out: Outlet {
            writer,
            reports,
            shared,
            templates: HashMap::new(),
            decided: Default::default(),
        },
        timers: Timers::default(),
        undecided: 0,
        view_gen: None,
        isolation: fleet::Isolation::default(),
    };
    if let Some(s) = &p.out.shared {
        s.set_waker(mio::Waker::new(p.poll.registry(), Token(WAKE_TOKEN))?);
    }
    p.set_list(tasks(&snap, Vec::new()))?;
    // The tasks are made: the start-up snapshot is not kept (held here for the thread's
    // life, it stayed in memory after every reload replaced it).
    drop(snap);
    let mut events = Events::with_capacity(1024);
    let mut first_round = Some(first_round);
    info!(checks = p.list.len(), "prober started");
    while !stop.load(Ordering::Relaxed) {
        if let Ok(next) = reloads.try_recv() {
            p.reload(&next)?;
        }
        p.take_view();
        p.run_due(Instant::now())?;
        p.register_icmp()?;
        let wait = p.wait(Instant::now());
        match p.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        p.take_ready(&mut events)?;
        p.out.recount(Instant::now());
        p.watch_isolation();
        if first_round.is_some() && p.undecided == 0 {
            let _ = first_round.take().expect("some").send(());
        }
    }
    Ok(())
}

/// A check just started: its connection (TCP and HTTP checks) and first phase, or why it
/// could not start.
type Started = Result<(Option<TcpStream>, Phase), String>;

impl Prober {
    /// Handles the events of the poll just made, and while a batch came full, polls again
    /// at once: every connection ready now is read before the next [`Prober::run_due`]
    /// judges deadlines. (Thousands of checks start together each interval; with one
    /// batch per turn, the ready ones beyond it were expired as timed out.)
    fn take_ready(&mut self, events: &mut Events) -> io::Result<()> {
        loop {
            let mut n = 0;
            for ev in events.iter() {
                self.on_ready(ev.token().0);
                n += 1;
            }
            if n < events.capacity() {
                return Ok(());
            }
            match self.poll.poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A new snapshot: the checks in flight are dropped and the list rebuilt, the state
    /// of each check carried over.
    fn reload(&mut self, next: &Snapshot) -> io::Result<()> {
        for t in &mut self.list {
            if let Some(f) = t.inflight.take() {
                release(&self.poll, f);
            }
        }
        if let Some(i) = self.icmp.as_mut() {
            i.forget_all();
        }
        if let Some(s) = self.syn.as_mut() {
            s.forget_all();
        }
        let list = tasks(next, std::mem::take(&mut self.list));
        if let Some(s) = &self.out.shared {
            let keep = list
                .iter()
                .map(|t| (t.address.clone(), t.check.name.clone()))
                .collect();
            s.retain_mine(&keep);
        }
        self.set_list(list)?;
        info!(checks = self.list.len(), "prober reloaded");
        Ok(())
    }

    /// Takes a new task list: opens the raw sockets it needs and queues every task's
    /// wake-up.
    fn set_list(&mut self, mut list: Vec<Task>) -> io::Result<()> {
        self.out.set_templates(&list);
        self.add_anchors(&mut list);
        self.list = list;
        self.view_gen = None;
        self.undecided = self
            .list
            .iter()
            .filter(|t| !t.anchor && t.flap.up().is_none())
            .count();
        self.timers.clear();
        for (i, t) in self.list.iter().enumerate() {
            self.timers.schedule(t.wakeup(), i);
        }
        self.open_raw_sockets()?;
        self.check_anchors();
        Ok(())
    }

    /// Opens the ICMP and raw TCP sockets the first time a check needs them.
    fn open_raw_sockets(&mut self) -> io::Result<()> {
        let list = &self.list;
        if self.icmp.is_none() && list.iter().any(|t| t.check.protocol == Protocol::Ping) {
            self.icmp = Some(icmp::Icmp::new());
        }
        if self.syn.is_none() && list.iter().any(|t| t.check.half_open) {
            let s = syn::Syn::open();
            for (k, fd) in s.fds().into_iter().enumerate() {
                let token = Token(SYN_TOKEN + k);
                let registry = self.poll.registry();
                registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
            }
            self.syn = Some(s);
        }
        Ok(())
    }

    /// Runs what the timers say is due by `now`: starts the checks whose interval has
    /// passed and ends those past their deadline. Entries a task has moved away from are
    /// skipped: the task is neither due nor expired.
    fn run_due(&mut self, now: Instant) -> io::Result<()> {
        while let Some(i) = self.timers.pop_due(now) {
            let Some(t) = self.list.get(i) else {
                continue;
            };
            if t.due(now) && t.probing {
                self.start(i, now)?;
            } else if t.inflight.as_ref().is_some_and(|f| f.deadline <= now) {
                self.expire(i);
            }
        }
        Ok(())
    }

    /// Starts check `i`: echo requests, a SYN (half-open checks, when a raw socket could
    /// be opened for the target's family), or a connection.
    fn start(&mut self, i: usize, now: Instant) -> io::Result<()> {
        let Self {
            poll,
            list,
            icmp,
            syn,
            ..
        } = self;
        let t = &mut list[i];
        t.next = now + t.check.interval;
        let started = if t.check.protocol == Protocol::Ping {
            start_ping(icmp.as_mut().expect("opened"), i, t)
        } else if t.check.half_open && syn.as_ref().is_some_and(|s| s.can(&t.target)) {
            start_syn(syn.as_mut().expect("checked"), i, t)
        } else {
            start_connect(poll, i, t)?
        };
        match started {
            Ok((stream, phase)) => {
                // The deadline from the clock now, not from the turn's start: starting
                // thousands of checks in one turn takes a while.
                let started = Instant::now();
                t.inflight = Some(Inflight {
                    stream,
                    phase,
                    deadline: started + t.check.timeout,
                    started,
                });
                let at = t.wakeup();
                self.timers.schedule(at, i);
            }
            Err(e) if self.list[i].anchor && fleet::local_error(&e) => self.anchor_unusable(i, &e),
            Err(e) => self.finish(i, Err(e), Duration::ZERO),
        }
        Ok(())
    }

    /// Applies the result of check `i` (none in flight any more) and queues its next start.
    fn finish(&mut self, i: usize, outcome: Outcome, took: Duration) {
        if self.list[i].anchor {
            self.anchor_result(i, outcome);
            let at = self.list[i].wakeup();
            self.timers.schedule(at, i);
            return;
        }
        let t = &mut self.list[i];
        let decided = t.flap.up().is_some();
        finish(t, outcome, took, &self.out);
        if !decided && t.flap.up().is_some() {
            self.undecided = self.undecided.saturating_sub(1);
        }
        let at = t.wakeup();
        self.timers.schedule(at, i);
        self.result_came();
    }

    /// Registers the ICMP sockets opened since the last round (one per family and source).
    fn register_icmp(&mut self) -> io::Result<()> {
        if let Some(p) = self.icmp.as_mut() {
            for (k, fd) in p.new_fds() {
                let token = Token(ICMP_TOKEN + k);
                let registry = self.poll.registry();
                registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
            }
        }
        Ok(())
    }

    /// How long to wait for readiness: until the nearest deadline or start, and no longer
    /// than [`WAIT_BOUND`] (so that a stop or a reload is seen).
    fn wait(&self, now: Instant) -> Duration {
        self.timers
            .next()
            .map_or(WAIT_BOUND, |d| d.saturating_duration_since(now))
            .min(WAIT_BOUND)
    }

    /// A socket is ready: a raw TCP socket, an ICMP socket, or a check's connection.
    fn on_ready(&mut self, token: usize) {
        if token == WAKE_TOKEN {
            // Other edges' verdicts: counted after this round of events.
        } else if (SYN_TOKEN..ICMP_TOKEN).contains(&token) {
            self.on_syn_replies();
        } else if token >= ICMP_TOKEN {
            self.on_echo_replies();
        } else {
            self.on_connection(token);
        }
    }

    /// SYN-ACKs and RSTs: a half-open check passes on a SYN-ACK.
    fn on_syn_replies(&mut self) {
        for (task, open) in self.syn.as_mut().map(|p| p.recv()).unwrap_or_default() {
            let Some(f) = self.list.get_mut(task).and_then(|t| t.inflight.take()) else {
                continue;
            };
            let outcome = if open {
                Ok(())
            } else {
                Err("connection refused (RST)".to_string())
            };
            self.finish(task, outcome, f.started.elapsed());
        }
    }

    /// Echo replies: a ping check is judged once every request has had its reply.
    fn on_echo_replies(&mut self) {
        for (task, rtt) in self.icmp.as_mut().map(|p| p.recv()).unwrap_or_default() {
            let Some(t) = self.list.get_mut(task) else {
                continue;
            };
            let Some(Phase::Ping(echoes)) = t.inflight.as_mut().map(|f| &mut f.phase) else {
                continue;
            };
            if echoes.reply(rtt) {
                let (outcome, avg) = echoes.verdict(PingRule::of(&t.check));
                t.inflight = None;
                self.finish(task, outcome, avg);
            }
        }
    }

    /// A check's connection is ready: moves it on, and finishes the check once decided.
    fn on_connection(&mut self, i: usize) {
        let Some(t) = self.list.get_mut(i) else {
            return;
        };
        let Some(f) = t.inflight.as_mut() else {
            return;
        };
        if let Step::Done(outcome) = advance(f, &t.check, t.target) {
            let f = t.inflight.take().expect("in flight");
            let took = f.started.elapsed();
            release(&self.poll, f);
            self.finish(i, outcome, took);
        }
    }

    /// Ends check `i`, past its deadline: a ping round is judged on what came back, any
    /// other check fails as timed out.
    fn expire(&mut self, i: usize) {
        let t = &mut self.list[i];
        let f = t.inflight.take().expect("in flight");
        if let Phase::Ping(echoes) = f.phase {
            if let Some(p) = self.icmp.as_mut() {
                p.forget(i);
            }
            let (outcome, avg) = echoes.verdict(PingRule::of(&t.check));
            self.finish(i, outcome, avg);
            return;
        }
        let what = match f.phase {
            Phase::Connecting => "connect",
            Phase::Syn => "SYN-ACK",
            _ => "response",
        };
        if let (Phase::Syn, Some(p)) = (&f.phase, self.syn.as_mut()) {
            p.forget(i);
        }
        let took = f.started.elapsed();
        release(&self.poll, f);
        self.finish(i, Err(format!("{what} timed out")), took);
    }
}

/// Sends a ping check's echo requests.
fn start_ping(pinger: &mut icmp::Icmp, i: usize, t: &Task) -> Started {
    let sent = pinger.send(i, t.source, t.target.ip(), t.check.packets)?;
    Ok((None, Phase::Ping(Echoes::sent(sent))))
}

/// Sends a half-open check's SYN.
fn start_syn(syn: &mut syn::Syn, i: usize, t: &Task) -> Started {
    syn.send(i, t.target)?;
    Ok((None, Phase::Syn))
}

/// Starts a TCP, HTTP or HTTPS check's connection and registers it under the task's
/// index. A failed registration is the poller's failure, not the check's.
fn start_connect(poll: &Poll, i: usize, t: &Task) -> io::Result<Started> {
    match connect(t.target, t.source) {
        Ok(mut s) => {
            let interest = Interest::WRITABLE | Interest::READABLE;
            poll.registry().register(&mut s, Token(i), interest)?;
            Ok(Ok((Some(s), Phase::Connecting)))
        }
        Err(e) => Ok(Err(format!("connect: {e}"))),
    }
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

/// The HTTP request of a check: `Host` is the template's or the target address; also
/// returns the host (the default SNI).
fn http_request(c: &HealthCheck, target: SocketAddr) -> (String, String) {
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
    (host, request)
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
                    return Step::fail(format!("connect: {e}"));
                }
                match stream.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Pending,
                    Err(e) => return Step::fail(format!("connect: {e}")),
                }
                if c.protocol == Protocol::Tcp {
                    return Step::Done(Ok(()));
                }
                let (host, request) = http_request(c, target);
                if c.protocol == Protocol::Https {
                    let name = c.sni.clone().unwrap_or(host);
                    let mut conn = match tls::connect(c.tls_verify, &name) {
                        Ok(conn) => conn,
                        Err(e) => return Step::fail(e),
                    };
                    if let Err(e) = conn.writer().write_all(request.as_bytes()) {
                        return Step::fail(format!("tls: {e}"));
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
                Err(e) => return Step::fail(format!("send: {e}")),
            },
            Phase::Ping(..) | Phase::Syn => return Step::Pending,
            Phase::Tls(conn, resp) => return tls_step(conn, resp, stream, c),
            Phase::Reading(buf) => {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk) {
                    Ok(0) => return verdict::http(buf, HttpRule::of(c), true),
                    Ok(n) => {
                        if let Some(done) = verdict::absorb(buf, &chunk[..n], HttpRule::of(c)) {
                            return done;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Step::fail(format!("receive: {e}")),
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
    let rule = HttpRule::of(c);
    loop {
        let mut progressed = false;
        while conn.wants_write() {
            match conn.write_tls(stream) {
                Ok(_) => progressed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::fail(format!("send: {e}")),
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
                        return Step::fail(format!("tls: {e}"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                Err(e) => return Step::fail(format!("receive: {e}")),
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            match conn.reader().read(&mut chunk) {
                Ok(0) => return verdict::http(resp, rule, true),
                Ok(n) => {
                    if let Some(done) = verdict::absorb(resp, &chunk[..n], rule) {
                        return done;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return verdict::http(resp, rule, true)
                }
                Err(e) => return Step::fail(format!("tls: {e}")),
            }
        }
        if eof {
            return verdict::http(resp, rule, true);
        }
        if !progressed {
            return Step::Pending;
        }
    }
}

/// Applies one result: the anti-flap rule, the report, and on a change of the check's
/// state the address verdict to the writer.
fn finish(t: &mut Task, outcome: Outcome, took: Duration, out: &Outlet) {
    let ok = outcome.is_ok();
    let err = outcome.err();
    tracing::debug!(address = %t.address, ok, error = err.as_deref().unwrap_or(""), "check result");
    let changed = t.flap.record(ok, Thresholds::of(&t.check));
    let report = Report {
        check: t.check.name.clone(),
        source: t.source.map(|s| s.to_string()),
        failure_rate: t.check.failure_rate,
        up: t.flap.up().unwrap_or(true),
        last_ok: ok,
        latency_ms: took.as_secs_f64() * 1000.0,
        error: err.clone(),
        stats: Default::default(),
    };
    out.publish(&t.address, &report, ok, took);
    out.share(&t.address, &t.check);
    t.report = Some(report);
    if changed {
        let up = t.flap.up().unwrap_or(true);
        let source = t.source.map(|s| s.to_string()).unwrap_or_default();
        info!(address = %t.address, check = %t.check.name, target = %t.target, source = %source, up, error = err.as_deref().unwrap_or(""), "health check state");
        out.vote(&t.address);
    }
}

impl Outlet {
    /// Puts a check's report in the control API's table, in place of the last one of the
    /// same check from the same vantage point.
    fn publish(&self, address: &str, report: &Report, ok: bool, took: Duration) {
        latency::store(&self.reports, address, report.clone(), ok, took);
    }

    /// On a fleet edge sharing health: this edge's verdict on `check` of `address` (over
    /// its vantage points), for the other edges.
    fn share(&self, address: &str, check: &HealthCheck) {
        let Some(s) = &self.shared else {
            return;
        };
        let up = self
            .reports
            .lock()
            .expect("reports lock")
            .get(address)
            .and_then(|v| verdict::template_up(v.iter().map(Report::vote), &check.name));
        if let Some(up) = up {
            s.set_mine(address, &check.name, up, check.interval);
        }
    }

    /// Counts again the addresses whose other edges' verdicts arrived or aged out.
    fn recount(&self, now: Instant) {
        let Some(s) = &self.shared else {
            return;
        };
        for a in s.due(now) {
            self.vote(&a);
        }
    }

    /// Counts the votes of an address's checks and vantage points (and, sharing health,
    /// the other edges' fresh verdicts) and hands the verdict to the health writer.
    fn vote(&self, address: &str) {
        if self.shared.is_some() {
            self.fleet_vote(address);
            return;
        }
        // An address without a result yet is left as it is.
        let Some(all_up) = self
            .reports
            .lock()
            .expect("reports lock")
            .get(address)
            .map(|v| verdict::address_up(v.iter().map(Report::vote)))
        else {
            return;
        };
        self.set_probe(address, all_up);
    }

    /// Hands an address's verdict to the health writer.
    fn set_probe(&self, address: &str, up: bool) {
        let changes = self
            .writer
            .lock()
            .expect("writer lock")
            .set_probe(address, up);
        log_changes(&changes);
    }
}
