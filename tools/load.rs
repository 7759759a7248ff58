//! `gtmd-load`: a DNS load generator that does not become the bottleneck. One thread drives
//! several UDP sockets (different source ports, so SO_REUSEPORT spreads them over the
//! server's shards) with recvmmsg/sendmmsg batches, keeps a fixed number of queries in
//! flight per socket (closed loop, `--rate 0`) or sends at a fixed rate (open loop), adds
//! ECS from a prefix list when asked, and reports answered queries per second and latency
//! percentiles from an HDR histogram.
//!
//! ```text
//! gtmd-load --server 127.0.0.1:5300 --queries q.txt --duration 10 [--sockets 4]
//!           [--inflight 32] [--rate 0] [--ecs-prefixes lines.txt]
//! ```
//! The query file has dnsperf's format: `name TYPE` per line. The last line printed is
//! `key=value` pairs for scripts.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const BATCH: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(1);

struct Args {
    server: SocketAddr,
    queries: Vec<Vec<u8>>,
    duration: Duration,
    sockets: usize,
    inflight: usize,
    rate: u64,
    ecs: Vec<(u32, u8)>,
}

fn usage(msg: &str) -> ! {
    eprintln!("gtmd-load: {msg}\nusage: gtmd-load --server ADDR:PORT [--queries FILE] [--duration SECS] [--sockets N] [--inflight N] [--rate QPS] [--ecs-prefixes FILE]");
    std::process::exit(2)
}

fn qtype(t: &str) -> u16 {
    match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "ANY" => 255,
        other => other
            .trim_start_matches("TYPE")
            .parse()
            .unwrap_or_else(|_| usage(&format!("unknown type {other}"))),
    }
}

fn query(name: &str, t: u16) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&t.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

fn args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:5300".parse().expect("literal"),
        queries: Vec::new(),
        duration: Duration::from_secs(10),
        sockets: 4,
        inflight: 32,
        rate: 0,
        ecs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--server" => a.server = val().parse().unwrap_or_else(|_| usage("bad --server")),
            "--queries" => {
                let f = val();
                let text =
                    std::fs::read_to_string(&f).unwrap_or_else(|e| usage(&format!("{f}: {e}")));
                for l in text
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
                {
                    let mut w = l.split_whitespace();
                    let (n, t) = (w.next().unwrap_or("."), w.next().unwrap_or("A"));
                    a.queries.push(query(n, qtype(t)));
                }
            }
            "--duration" => {
                a.duration = Duration::from_secs_f64(
                    val().parse().unwrap_or_else(|_| usage("bad --duration")),
                )
            }
            "--sockets" => a.sockets = val().parse().unwrap_or_else(|_| usage("bad --sockets")),
            "--inflight" => a.inflight = val().parse().unwrap_or_else(|_| usage("bad --inflight")),
            "--rate" => a.rate = val().parse().unwrap_or_else(|_| usage("bad --rate")),
            "--ecs-prefixes" => {
                let f = val();
                let text =
                    std::fs::read_to_string(&f).unwrap_or_else(|e| usage(&format!("{f}: {e}")));
                for l in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    let (ip, len) = l.split_once('/').unwrap_or((l, "32"));
                    let ip: std::net::Ipv4Addr = ip
                        .parse()
                        .unwrap_or_else(|_| usage(&format!("bad prefix {l}")));
                    a.ecs.push((u32::from(ip), len.parse().unwrap_or(32)));
                }
            }
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if a.queries.is_empty() {
        a.queries.push(query("www.example.test", 1));
    }
    if a.sockets == 0 || a.inflight == 0 || a.inflight > 30_000 {
        usage("--sockets and --inflight must be positive, --inflight at most 30000");
    }
    if !a.ecs.is_empty() {
        // Add an OPT with an ECS option (source /24) to every query; the address is drawn per
        // send from the prefixes.
        for q in &mut a.queries {
            q[11] = 1;
            q.extend_from_slice(&[
                0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 0, 0, 0,
            ]);
        }
    }
    a
}

/// One iovec and one mmsghdr per buffer. The headers point into the returned iovec vector
/// and the buffers: keep all three alive and unmoved while the kernel uses them.
fn headers<const N: usize>(bufs: &mut [[u8; N]]) -> (Vec<libc::iovec>, Vec<libc::mmsghdr>) {
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: N,
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is a valid value; each then points at its own iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..bufs.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    (iov, msgs)
}

struct Sock {
    s: UdpSocket,
    sent_at: Vec<Option<Instant>>,
    next_id: u16,
    outstanding: usize,
}

/// One connected, non-blocking socket per `--sockets`, each from its own source port.
fn open_sockets(a: &Args) -> Vec<Sock> {
    (0..a.sockets)
        .map(|_| {
            let s = UdpSocket::bind(if a.server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })
            .expect("bind");
            s.connect(a.server).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            // As the server's: a generator descheduled for a few milliseconds must not
            // count the answers its own receive buffer dropped as lost.
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
            Sock {
                s,
                sent_at: vec![None; 65536],
                next_id: 0,
                outstanding: 0,
            }
        })
        .collect()
}

/// What a run counted.
struct Tally {
    sent: u64,
    answered: u64,
    lost: u64,
    /// Latency of the answered queries, microseconds.
    hist: Histogram<u64>,
}

/// How many queries to send now: closed loop fills the window (no limit here), open loop
/// follows the rate.
fn due(a: &Args, start: Instant, now: Instant, sent: u64) -> u64 {
    if a.rate == 0 {
        u64::MAX
    } else {
        ((a.rate as f64 * now.duration_since(start).as_secs_f64()) as u64).saturating_sub(sent)
    }
}

/// The send side: fixed query buffers and the kernel's headers over them, built once (a
/// round only sets lengths), and where the query list and the ECS draws are.
struct Sender {
    out: Vec<[u8; 512]>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Index of the next query (modulo the list).
    qi: usize,
    /// xorshift state for the ECS addresses.
    rng: u64,
}

impl Sender {
    fn new() -> Self {
        let mut out = vec![[0u8; 512]; BATCH];
        let (iov, msgs) = headers(&mut out);
        Self {
            out,
            iov,
            msgs,
            qi: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Sends up to `n` (at most [`BATCH`]) queries on `sk` with one sendmmsg; returns how
    /// many went out.
    fn send(&mut self, a: &Args, sk: &mut Sock, n: usize, tally: &mut Tally) -> usize {
        for k in 0..n {
            let q = &a.queries[self.qi % a.queries.len()];
            self.qi += 1;
            self.iov[k].iov_len = q.len();
            let id = sk.next_id;
            sk.next_id = sk.next_id.wrapping_add(1);
            let ecs = (!a.ecs.is_empty()).then(|| self.draw_subnet(&a.ecs));
            fill(&mut self.out[k][..q.len()], q, id, ecs);
        }
        // SAFETY: msgs/iov/out stay alive for the call; the socket is connected.
        let r = unsafe { libc::sendmmsg(sk.s.as_raw_fd(), self.msgs.as_mut_ptr(), n as u32, 0) };
        let r = r.max(0) as usize;
        let t = Instant::now();
        for o in &self.out[..r] {
            let id = u16::from_be_bytes([o[0], o[1]]) as usize;
            if sk.sent_at[id].replace(t).is_some() {
                tally.lost += 1; // the id wrapped over an unanswered query
                sk.outstanding -= 1;
            }
        }
        sk.outstanding += r;
        tally.sent += r as u64;
        r
    }

    /// The /24 of a random address in a random one of the prefixes.
    fn draw_subnet(&mut self, prefixes: &[(u32, u8)]) -> u32 {
        let rng = &mut self.rng;
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let (net, len) = prefixes[(*rng % prefixes.len() as u64) as usize];
        let host = if len >= 32 {
            0
        } else {
            (*rng >> 32) as u32 & (u32::MAX >> len)
        };
        (net | host) & 0xFFFF_FF00
    }
}

/// Writes query `q` into `o` (as long as `q`) with `id`, and the ECS subnet when given
/// (the last three octets of the query's ECS option).
fn fill(o: &mut [u8], q: &[u8], id: u16, ecs: Option<u32>) {
    o.copy_from_slice(q);
    o[0..2].copy_from_slice(&id.to_be_bytes());
    if let Some(addr) = ecs {
        let l = o.len();
        o[l - 3..].copy_from_slice(&addr.to_be_bytes()[..3]);
    }
}

/// The receive side: answer buffers and the kernel's headers over them.
struct Receiver {
    bufs: Vec<[u8; 4096]>,
    /// The iovecs `msgs` point at.
    _iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Receiver {
    fn new() -> Self {
        let mut bufs = vec![[0u8; 4096]; BATCH];
        let (iov, msgs) = headers(&mut bufs);
        Self {
            bufs,
            _iov: iov,
            msgs,
        }
    }

    /// Takes one batch of answers from `sk` without waiting and records their latency;
    /// returns whether any came.
    fn receive(&mut self, sk: &mut Sock, tally: &mut Tally) -> bool {
        // SAFETY: BATCH headers over BATCH buffers, all alive for the call.
        let r = unsafe {
            libc::recvmmsg(
                sk.s.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            return false;
        }
        let t = Instant::now();
        for (m, b) in self.msgs.iter().zip(&self.bufs).take(r as usize) {
            if m.msg_len < 12 {
                continue;
            }
            let id = u16::from_be_bytes([b[0], b[1]]) as usize;
            if let Some(at) = sk.sent_at[id].take() {
                sk.outstanding -= 1;
                tally.answered += 1;
                let us = t.duration_since(at).as_micros().max(1) as u64;
                let _ = tally.hist.record(us.min(10_000_000));
            }
        }
        true
    }
}

/// Counts as lost the queries unanswered for [`TIMEOUT`], freeing their ids.
fn sweep(socks: &mut [Sock], now: Instant, tally: &mut Tally) {
    for sk in socks {
        for slot in sk.sent_at.iter_mut() {
            if slot.is_some_and(|at| now.duration_since(at) > TIMEOUT) {
                *slot = None;
                sk.outstanding -= 1;
                tally.lost += 1;
            }
        }
    }
}

/// Prints the result: a sentence, then `key=value` pairs for scripts.
fn report(t: &Tally, secs: f64) {
    let Tally {
        sent,
        answered,
        lost,
        hist,
    } = t;
    let qps = *answered as f64 / secs;
    // A closed stdout (e.g. `| head -1`) is not an error worth a panic.
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "sent {sent}, answered {answered} ({qps:.0} qps), lost {lost}; latency us p50 {} p99 {} p99.9 {}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999)
    );
    let _ = writeln!(
        stdout,
        "sent={sent} answered={answered} lost={lost} qps={qps:.0} p50_us={} p99_us={} p999_us={}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999)
    );
}

fn main() {
    let a = args();
    let mut socks = open_sockets(&a);
    let mut tally = Tally {
        sent: 0,
        answered: 0,
        lost: 0,
        hist: Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram bounds"),
    };
    let mut tx = Sender::new();
    let mut rx = Receiver::new();
    let start = Instant::now();
    let end = start + a.duration;
    let mut last_sweep = start;
    while Instant::now() < end {
        let now = Instant::now();
        let mut budget = due(&a, start, now, tally.sent);
        for sk in socks.iter_mut() {
            let room = if a.rate == 0 {
                a.inflight.saturating_sub(sk.outstanding)
            } else {
                BATCH
            };
            let n = room.min(BATCH).min(budget.min(BATCH as u64) as usize);
            if n == 0 {
                continue;
            }
            let r = tx.send(&a, sk, n, &mut tally);
            budget = budget.saturating_sub(r as u64);
        }
        let mut got_any = false;
        for sk in &mut socks {
            got_any |= rx.receive(sk, &mut tally);
        }
        if now.duration_since(last_sweep) > Duration::from_millis(200) {
            last_sweep = now;
            sweep(&mut socks, now, &mut tally);
        }
        if !got_any && a.rate == 0 {
            std::hint::spin_loop();
        }
    }
    report(&tally, start.elapsed().as_secs_f64());
}
