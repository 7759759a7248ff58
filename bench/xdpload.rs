//! `gtmd-xdpload`: a DNS load generator over AF_XDP, for when a kernel-socket generator
//! (`gtmd-load`) runs out of CPU before the server does (bench/xdp on veth). It binds an
//! AF_XDP socket to queue 0 of its interface (gtmd's own `shard::xdp::ring`, copy mode on
//! veth, need-wakeup), attaches gtmd's XDP program there with the generator's own address
//! and source ports as the "listeners" (so the answers come to its socket and everything
//! else, ARP included, to the kernel), prebuilds one Ethernet/IPv4 (or IPv6)/UDP frame per
//! flow (distinct source port and DNS ID, complete checksums), and sends them open loop
//! at `--rate` (0: as fast as it can) or closed loop with `--inflight` queries in flight.
//! Answers are matched by source, destination port, DNS ID and the QR bit.
//!
//! ```text
//! gtmd-xdpload --interface IF --server ADDR:PORT --dst-mac MAC [--secs 5]
//!              [--rate QPS | --inflight K] [--ports 16] [--flows 4096]
//! ```
//! Needs root (or CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW). The last line printed is
//! `key=value` pairs for scripts, as gtmd-load's.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Parser;
use gtmd::shard::xdp::{self, frame, ring::Xsk};
use gtmd::tables::gslb::ClientAddr;
use hdrhistogram::Histogram;

/// A query unanswered this long is lost (closed loop: its flow is sent again).
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long answers are still taken after the last query was sent.
const DRAIN: Duration = Duration::from_millis(100);

/// DNS load over AF_XDP: prebuilt query frames sent from an AF_XDP socket on queue 0 of
/// `--interface`, answers received through it (gtmd's XDP program redirects UDP to the
/// generator's address and source ports to the socket; the rest, ARP included, passes to
/// the kernel). Prints `sent=N answered=N lost=N qps=N p50_us=N p99_us=N p999_us=N ...` as
/// its last line. Root only (or CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW).
#[derive(Parser)]
#[command(name = "gtmd-xdpload")]
struct Args {
    /// Interface to send from and receive on (its RX queue 0): on a veth pair, the
    /// generator's end.
    #[arg(long)]
    interface: String,
    /// The server, ADDR:PORT (IPv4 or IPv6; the frames go to it directly, no router).
    #[arg(long)]
    server: SocketAddr,
    /// The server's MAC address (aa:bb:cc:dd:ee:ff): on a veth pair, the other end's
    /// (`cat /sys/class/net/IF/address` where it lives).
    #[arg(long, value_parser = mac)]
    dst_mac: Mac,
    /// The generator's address; default: the one the kernel would use to reach --server.
    #[arg(long)]
    source: Option<IpAddr>,
    /// First source port; queries come from --ports consecutive ports.
    #[arg(long, default_value_t = 40000)]
    port_base: u16,
    /// Source ports (distinct flows for RSS; at most 64, the size of the XDP program's
    /// address map).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    ports: u16,
    /// Prebuilt queries, each its own (source port, DNS ID) pair.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    flows: u32,
    /// Query name.
    #[arg(long, default_value = "www.example.test")]
    name: String,
    /// Query type: A, AAAA, NS, SOA, MX, TXT, or a number.
    #[arg(long, default_value = "A", value_parser = qtype)]
    qtype: u16,
    /// Seconds to send for (answers are taken 0.1 s longer).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Open loop: queries per second (0: as fast as the generator can). Ignored with
    /// --inflight.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Closed loop: this many queries in flight (at most --flows); an answer or a 1 s
    /// timeout frees a flow to be sent again.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    inflight: Option<u32>,
}

#[derive(Clone, Copy)]
struct Mac([u8; 6]);

fn mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let mut m = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s}: not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    for (o, p) in m.iter_mut().zip(&parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| format!("{s}: not a MAC address"))?;
    }
    Ok(Mac(m))
}

fn qtype(t: &str) -> Result<u16, String> {
    Ok(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        n => n.parse().map_err(|_| format!("unknown query type {t}"))?,
    })
}

/// The DNS query (ID 0, RD clear) for `name` and type `t`.
fn query(name: &str, t: u16) -> Result<Vec<u8>, String> {
    let mut p = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if l.len() > 63 {
            return Err(format!("--name: label '{l}' is over 63 octets"));
        }
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&t.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if p.len() > 12 + 255 + 4 {
        return Err("--name: over 255 octets".into());
    }
    Ok(p)
}

/// The prebuilt query frames, all of one length, flow `i` at `i * len`: source port
/// `port_base + i % ports`, DNS ID `i / ports`.
struct Flows {
    frames: Vec<u8>,
    len: usize,
    count: u32,
    ports: u16,
    port_base: u16,
}

impl Flows {
    fn build(a: &Args, src: IpAddr, src_mac: [u8; 6]) -> Result<Self, String> {
        let ports = a.ports;
        let max = 65536 * ports as u64; // a DNS ID per flow of each port
        if a.flows as u64 > max {
            return Err(format!("--flows: at most {max} with {ports} ports"));
        }
        if a.port_base as u32 + ports as u32 > 65536 {
            return Err("--port-base + --ports goes past port 65535".into());
        }
        let mut q = query(&a.name, a.qtype)?;
        let len = frame::header_len(a.server.is_ipv6()) + q.len();
        let mut frames = vec![0u8; len * a.flows as usize];
        for (i, f) in frames.chunks_exact_mut(len).enumerate() {
            let i = i as u32;
            q[0..2].copy_from_slice(&((i / ports as u32) as u16).to_be_bytes());
            let from = SocketAddr::new(src, a.port_base + (i % ports as u32) as u16);
            frame::udp(src_mac, a.dst_mac.0, from, a.server, &q, f)
                .ok_or("--source and --server are not of one family")?;
        }
        Ok(Self {
            frames,
            len,
            count: a.flows,
            ports,
            port_base: a.port_base,
        })
    }

    fn frame(&self, i: u32) -> &[u8] {
        &self.frames[i as usize * self.len..][..self.len]
    }

    /// The flow an answer to destination port `port` with DNS ID `id` belongs to.
    fn of(&self, port: u16, id: u16) -> Option<u32> {
        let k = port.checked_sub(self.port_base)?;
        let i = id as u32 * self.ports as u32 + k as u32;
        (k < self.ports && i < self.count).then_some(i)
    }
}

/// What a run counted, and the flows' state.
struct Run {
    sent: u64,
    answered: u64,
    /// Closed loop: queries that timed out.
    lost: u64,
    /// Answers that match no query in flight (late after a timeout, or not ours).
    unmatched: u64,
    /// Queries of each flow in flight, and when the last was sent.
    inflight: Vec<u32>,
    sent_at: Vec<Instant>,
    /// Closed loop: flows not in flight.
    free: VecDeque<u32>,
    /// Open loop: the next flow.
    next: u32,
    hist: Histogram<u64>,
}

impl Run {
    fn new(flows: u32, now: Instant) -> Self {
        Self {
            sent: 0,
            answered: 0,
            lost: 0,
            unmatched: 0,
            inflight: vec![0; flows as usize],
            sent_at: vec![now; flows as usize],
            free: (0..flows).collect(),
            next: 0,
            hist: Histogram::new_with_bounds(1, 10_000_000, 3).expect("histogram bounds"),
        }
    }

    /// The flow to send next: the next in turn (open loop) or a free one (closed loop).
    fn pick(&mut self, closed: bool, flows: u32) -> Option<u32> {
        if closed {
            self.free.pop_front()
        } else {
            let i = self.next;
            self.next = (i + 1) % flows;
            Some(i)
        }
    }

    /// Counts the answer frame `f` if it answers one of our queries in flight.
    fn answer(&mut self, f: &[u8], flows: &Flows, server: SocketAddr, closed: bool, now: Instant) {
        let Some(q) = frame::parse(f) else {
            return self.unmatched += 1;
        };
        let (sport, dport) = frame::ports(f, &q);
        let dns = &f[q.start..q.end];
        let from_server = q.v6 == server.is_ipv6()
            && q.client == client_addr(server.ip())
            && sport == server.port();
        let flow = (from_server && dns.len() >= 12 && dns[2] & 0x80 != 0)
            .then(|| flows.of(dport, u16::from_be_bytes([dns[0], dns[1]])))
            .flatten();
        let Some(i) = flow.filter(|&i| self.inflight[i as usize] > 0) else {
            return self.unmatched += 1;
        };
        let n = &mut self.inflight[i as usize];
        *n -= 1;
        self.answered += 1;
        if *n == 0 {
            let us = now.duration_since(self.sent_at[i as usize]).as_micros();
            let _ = self.hist.record((us as u64).clamp(1, 10_000_000));
        }
        if closed {
            self.free.push_back(i);
        }
    }

    /// Closed loop: counts as lost the queries unanswered for [`TIMEOUT`] and frees their
    /// flows.
    fn sweep(&mut self, now: Instant) {
        for (i, n) in self.inflight.iter_mut().enumerate() {
            if *n > 0 && now.duration_since(self.sent_at[i]) > TIMEOUT {
                self.lost += *n as u64;
                *n = 0;
                self.free.push_back(i as u32);
            }
        }
    }
}

/// `ip` as the frame parser reports a source address.
fn client_addr(ip: IpAddr) -> ClientAddr {
    match ip {
        IpAddr::V4(v4) => ClientAddr::V4(u32::from(v4)),
        IpAddr::V6(v6) => ClientAddr::from_v6(u128::from(v6)),
    }
}

/// How many queries may go now: the window's room (closed loop), what the rate allows so
/// far (open loop at a rate), or no limit (as fast as possible: the caller sends what one
/// kick sends).
fn due(a: &Args, run: &Run, start: Instant, now: Instant) -> u64 {
    match (a.inflight, a.rate) {
        (Some(k), _) => (k as u64).saturating_sub(run.sent - run.answered - run.lost),
        (None, 0) => u64::MAX, // as fast as possible: a kick's worth per turn
        (None, r) => {
            ((r as f64 * now.duration_since(start).as_secs_f64()) as u64).saturating_sub(run.sent)
        }
    }
}

/// Sends and receives until `--secs` have passed, then takes answers for [`DRAIN`] more.
fn run(a: &Args, xsk: &mut Xsk, flows: &Flows) -> (Run, f64) {
    let closed = a.inflight.is_some();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    let mut r = Run::new(flows.count, start);
    let mut last_sweep = start;
    loop {
        let now = Instant::now();
        let sending = now < end;
        if !sending && now >= end + DRAIN {
            break;
        }
        xsk.reclaim();
        let want = if sending { due(a, &r, start, now) } else { 0 };
        let n = xsk.transmit(want.min(xsk.tx_budget as u64) as u32, |buf| {
            let Some(i) = r.pick(closed, flows.count) else {
                return 0;
            };
            r.inflight[i as usize] += 1;
            r.sent_at[i as usize] = now;
            r.sent += 1;
            let f = flows.frame(i);
            buf[..f.len()].copy_from_slice(f);
            f.len()
        });
        if xsk.tx_pending() > 0 && xsk.tx_needs_kick() {
            xsk.kick();
        }
        let got = xsk.receive(256, |f| r.answer(f, flows, a.server, closed, now));
        if closed && now.duration_since(last_sweep) > Duration::from_millis(200) {
            last_sweep = now;
            r.sweep(now);
        }
        if n == 0 && got == 0 {
            xsk.wait(1);
        }
    }
    let secs = a.secs.max(1e-3);
    if !closed {
        r.lost = r.sent - r.answered;
    }
    (r, secs)
}

/// Prints the result: a sentence, then `key=value` pairs for scripts (gtmd-load's keys,
/// then this generator's own).
fn report(r: &Run, secs: f64, xsk: &Xsk) {
    let qps = r.answered as f64 / secs;
    let q = |p: f64| r.hist.value_at_quantile(p);
    let st = xsk.stats();
    let dropped = st.map_or(0, |s| s.rx_dropped + s.rx_ring_full);
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "sent {}, answered {} ({qps:.0} qps), lost {}, unmatched {}, dropped by the generator's RX {dropped}; latency us p50 {} p99 {} p99.9 {}",
        r.sent, r.answered, r.lost, r.unmatched, q(0.5), q(0.99), q(0.999)
    );
    let _ = writeln!(
        out,
        "sent={} answered={} lost={} qps={qps:.0} p50_us={} p99_us={} p999_us={} unmatched={} rx_dropped={dropped}",
        r.sent, r.answered, r.lost, q(0.5), q(0.99), q(0.999), r.unmatched
    );
}

/// The interface's MAC address.
fn own_mac(iface: &str) -> Result<[u8; 6], String> {
    let p = format!("/sys/class/net/{iface}/address");
    let s = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("--interface {iface}: no such interface here"),
        _ => format!("{p}: {e}"),
    })?;
    Ok(mac(&s)?.0)
}

/// The address the kernel would send from to reach `server`.
fn source_for(server: SocketAddr) -> Result<IpAddr, String> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(any).map_err(|e| e.to_string())?;
    s.connect(server)
        .map_err(|e| format!("no route to {server}: {e} (give --source)"))?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
}

fn main() {
    let a = Args::parse();
    if let Err(e) = go(&a) {
        eprintln!("gtmd-xdpload: {e}");
        std::process::exit(1);
    }
}

fn go(a: &Args) -> Result<(), String> {
    if a.inflight.is_some_and(|k| k > a.flows) {
        return Err("--inflight must be at most --flows".into());
    }
    if !(a.secs > 0.0 && a.secs <= 3600.0) {
        return Err("--secs must be above 0 and at most 3600".into());
    }
    let src = match a.source {
        Some(s) => s,
        None => source_for(a.server)?,
    };
    let flows = Flows::build(a, src, own_mac(&a.interface)?)?;
    let ifindex = xdp::ifindex(&a.interface)?;
    let mut xsk = Xsk::open(ifindex, 0)
        .map_err(|e| format!("AF_XDP socket on {} queue 0: {e}", a.interface))?;
    let to: Vec<SocketAddr> = (0..a.ports)
        .map(|k| SocketAddr::new(src, a.port_base + k))
        .collect();
    let (attached, mode) = xdp::redirect(&a.interface, &to, &xsk)?;
    eprintln!(
        "gtmd-xdpload: {} queue 0, program {mode}, socket {} need_wakeup={}, {} flows from {src} ports {}-{} to {}, {}",
        a.interface,
        if xsk.zero_copy { "zero-copy" } else { "copy" },
        xsk.need_wakeup,
        flows.count,
        a.port_base,
        a.port_base + a.ports - 1,
        a.server,
        match (a.inflight, a.rate) {
            (Some(k), _) => format!("closed loop, {k} in flight"),
            (None, 0) => "open loop, as fast as possible".into(),
            (None, r) => format!("open loop at {r} qps"),
        }
    );
    let (r, secs) = run(a, &mut xsk, &flows);
    drop(attached);
    report(&r, secs, &xsk);
    Ok(())
}
