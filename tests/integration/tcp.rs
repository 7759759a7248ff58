//! TCP under abuse (RFC 7766 6.2.3 and 10), through the real `gtmd` binary: thousands of
//! slow-loris connections must not shut fresh clients out, and thousands of clients that
//! pipeline queries without reading their answers must not grow gtmd's memory.
//!
//! Each test holds a few thousand sockets: it raises this process's RLIMIT_NOFILE (gtmd,
//! its child, inherits it). The two tests run one after the other (they share 2 CPUs with
//! the rest of the suite).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const A: u16 = 1;
const TXT: u16 = 16;

/// One heavy test at a time.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
        r.rlim_cur
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open file descriptors of `pid`.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A non-blocking connection from `src` (any port) to `dst`; the handshake completes in
/// the background. `rcvbuf`: a small receive buffer, set before connecting.
fn connect_from(src: Ipv4Addr, dst: SocketAddr, rcvbuf: Option<usize>) -> Option<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).ok()?;
    if let Some(b) = rcvbuf {
        s.set_recv_buffer_size(b).ok()?;
    }
    s.bind(&SockAddr::from(SocketAddrV4::new(src, 0))).ok()?;
    s.set_nonblocking(true).ok()?;
    match s.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(_) => return None,
    }
    Some(s.into())
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut b = (q.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(q);
    b
}

/// `tcp.toml` in `dir`: one shard, `server` lines, example.test. with `records`.
fn config(dir: &TempDir, server: &str, records: &[String]) -> std::path::PathBuf {
    let cfg = dir.join("tcp.toml");
    let mut recs = vec!["\"ns1 A 192.0.2.53\"".to_string()];
    recs.extend(records.iter().map(|r| format!("{r:?}")));
    std::fs::write(
        &cfg,
        format!(
            "version = 1\n[server]\nshards = [0]\n{server}\n[[zone]]\nname = \"example.test.\"\n\
             soa = {{ mname = \"ns1\", rname = \"hostmaster\" }}\nns = [\"ns1\"]\n\
             records = [{}]\n",
            recs.join(", ")
        ),
    )
    .unwrap();
    cfg
}

/// One fresh TCP query from 127.0.0.1; true when it is answered (right id, NOERROR, the
/// A records) within 2 s.
fn fresh_query(addr: SocketAddr, id: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut q = Q::new("www.example.test", A);
    q.id = id;
    if s.write_all(&framed(&q.build())).is_err() {
        return false;
    }
    match tcp_recv(&mut s) {
        Some(r) => {
            let m = Msg::parse(&r);
            m.id == id && m.rcode() == 0 && m.answers(A) == ["192.0.2.10"]
        }
        None => false,
    }
}

/// Defect 1 of issue 10: 2,100 slow-loris connections (from 42 addresses, 50 each, under
/// the per-source limit) against a 512-connection cap. Half send one octet of a query every
/// 4 s, half send nothing; each reconnects as soon as gtmd closes it. Fresh TCP queries
/// from another address, one every 10 ms for 10 s, must be answered (>= 99.9%): a started
/// message must complete within tcp-io-timeout, and at the cap the longest-idle
/// connection makes room.
#[test]
fn slow_loris_does_not_shut_out_fresh_clients() {
    let _g = heavy();
    const LORIS: usize = 2100;
    const SOURCES: usize = 42;
    let limit = raise_nofile();
    assert!(
        limit >= (LORIS + 600) as u64,
        "RLIMIT_NOFILE {limit} is too low for {LORIS} connections"
    );
    let dir = TempDir::new("tcp-loris");
    let cfg = config(
        &dir,
        "tcp-max-connections = 512",
        &["www A 192.0.2.10".to_string()],
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let addr = s.addr;
    let pid = s.pid();
    let fds0 = fds(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let (st, rc) = (stop.clone(), reconnects.clone());
    let loris = std::thread::spawn(move || {
        let q = framed(&Q::new("www.example.test", A).build());
        struct L {
            s: Option<TcpStream>,
            src: Ipv4Addr,
            talk: bool,
            sent: usize,
            next: Instant,
        }
        let t0 = Instant::now();
        let mut ls: Vec<L> = (0..LORIS)
            .map(|i| L {
                s: None,
                src: Ipv4Addr::new(127, 1, 0, 1 + (i % SOURCES) as u8),
                talk: i % 2 == 0,
                sent: 0,
                // spread the talkers' octets over the 4 s period
                next: t0 + Duration::from_millis((i as u64 * 4000 / LORIS as u64) % 4000),
            })
            .collect();
        let mut b = [0u8; 512];
        while !st.load(Relaxed) {
            let now = Instant::now();
            for l in &mut ls {
                let alive = match &mut l.s {
                    None => false,
                    Some(s) => match s.read(&mut b) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => true,
                        Err(_) => false,
                    },
                };
                if !alive {
                    if l.s.take().is_some() {
                        rc.fetch_add(1, Relaxed);
                    }
                    l.s = connect_from(l.src, addr, None);
                    l.sent = 0;
                    l.next = now + Duration::from_millis(100);
                    continue;
                }
                if l.talk && now >= l.next {
                    // one octet of a well-formed query, every 4 s
                    let octet = [q[l.sent % q.len()]];
                    if let Some(s) = &mut l.s {
                        if s.write(&octet).is_ok() {
                            l.sent += 1;
                        }
                    }
                    l.next = now + Duration::from_secs(4);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });

    // Let the loris fill the cap, and check that they do.
    std::thread::sleep(Duration::from_secs(3));
    let held = fds(pid).saturating_sub(fds0);
    assert!(
        held >= 500,
        "the slow-loris connections should fill the 512 cap; gtmd holds {held}"
    );
    let t0 = Instant::now();
    let mut asked = 0u32;
    let mut answered = 0u32;
    let mut held_min = usize::MAX;
    while t0.elapsed() < Duration::from_secs(10) {
        asked += 1;
        if fresh_query(addr, asked as u16) {
            answered += 1;
        }
        if asked.is_multiple_of(100) {
            held_min = held_min.min(fds(pid).saturating_sub(fds0));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    loris.join().unwrap();
    let frac = f64::from(answered) / f64::from(asked);
    eprintln!(
        "slow loris: {answered}/{asked} fresh TCP queries answered ({:.2}%); gtmd held \
         >= {held_min} connections throughout; {} loris reconnects",
        frac * 100.0,
        reconnects.load(Relaxed)
    );
    assert!(
        held_min >= 480,
        "the loris should keep the cap full during the run; gtmd held {held_min}"
    );
    assert!(
        frac >= 0.999,
        "{answered}/{asked} fresh TCP queries answered under slow loris"
    );
    // and UDP was never affected
    assert!(s.udp(&Q::new("www.example.test", A).build()).is_some());
}

/// Defect 2 of issue 10: 2,000 clients (40 addresses, 50 each) each pipeline 128 queries
/// for a ~4 KiB TXT RRset and never read. gtmd must stop reading a connection whose answers
/// are not read, hold only a few answers for it and close it when it does not drain within
/// tcp-io-timeout: its RSS stays within 100 MB of where it started, and comes back close
/// to it once the clients are gone.
#[test]
fn non_reading_clients_do_not_grow_memory() {
    let _g = heavy();
    const CLIENTS: usize = 2000;
    const SOURCES: usize = 40;
    const PIPELINED: usize = 128;
    let limit = raise_nofile();
    assert!(
        limit >= (CLIENTS * 2 + 200) as u64,
        "RLIMIT_NOFILE {limit} is too low for {CLIENTS} connections"
    );
    // 16 TXT strings of 250 octets: a ~4.2 KiB answer to a ~40-octet query
    let big: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "big TXT \"{}\"",
                char::from(b'a' + i as u8).to_string().repeat(250)
            )
        })
        .collect();
    let mut records = vec!["www A 192.0.2.10".to_string()];
    records.extend(big);
    let dir = TempDir::new("tcp-nonreading");
    let cfg = config(&dir, "tcp-max-connections = 2100", &records);
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let (addr, pid) = (s.addr, s.pid());
    let probe = s.tcp(&Q::new("big.example.test", TXT).build());
    assert_eq!(probe.answers(TXT).len(), 16);
    let answer_len = probe.raw.len();
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = rss_kib(pid);
    let fds0 = fds(pid);

    let q = framed(&Q::new("big.example.test", TXT).build());
    let burst: Vec<u8> = q.repeat(PIPELINED);
    let t0 = Instant::now();
    let mut peak = rss0;
    let sample = |peak: &mut u64| *peak = (*peak).max(rss_kib(pid));
    // (socket, octets written)
    let mut cs: Vec<(TcpStream, usize)> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let src = Ipv4Addr::new(127, 2, 0, 1 + (i % SOURCES) as u8);
        if let Some(c) = connect_from(src, addr, Some(4096)) {
            cs.push((c, 0));
        }
        if i % 200 == 0 {
            sample(&mut peak);
        }
    }
    assert!(
        cs.len() >= CLIENTS * 99 / 100,
        "only {} connected",
        cs.len()
    );
    // Write the pipelined queries (as far as the sockets take them), never read, for 4 s.
    while t0.elapsed() < Duration::from_secs(5) {
        for (c, done) in &mut cs {
            while *done < burst.len() {
                match c.write(&burst[*done..]) {
                    Ok(n) => *done += n,
                    Err(_) => break,
                }
            }
        }
        sample(&mut peak);
        std::thread::sleep(Duration::from_millis(100));
    }
    let written: usize = cs.iter().map(|(_, d)| d / q.len()).sum();
    sample(&mut peak);
    // gtmd closed them (none drained within tcp-io-timeout) while they were still open
    let open = fds(pid).saturating_sub(fds0);
    drop(cs);
    // after: give the allocator its purge delay, then take the lowest of a few samples
    let t1 = Instant::now();
    let mut after = u64::MAX;
    while t1.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(250));
        after = after.min(rss_kib(pid));
        if after <= rss0 + 8 * 1024 {
            break;
        }
    }
    eprintln!(
        "non-reading clients: {CLIENTS} clients, {written} queries written ({answer_len}-octet \
         answers); gtmd RSS before {} MiB, peak during {} MiB, after {} MiB; {open} of their \
         connections still open in gtmd after 5 s",
        rss0 / 1024,
        peak / 1024,
        after / 1024
    );
    assert!(
        peak <= rss0 + 100 * 1024,
        "RSS grew from {rss0} KiB to {peak} KiB under non-reading clients"
    );
    assert!(
        after <= rss0 + 16 * 1024,
        "RSS did not come back after the clients left: {rss0} KiB before, {after} KiB after"
    );
    assert!(
        open < CLIENTS / 20,
        "{open} connections that never drained are still open after 5 s"
    );
    // still serving
    assert_eq!(
        s.tcp(&Q::new("www.example.test", A).build())
            .answers(A)
            .len(),
        1
    );
}

/// Pipelined queries with ~4 KiB answers, read through a small receive window at a modest
/// pace: every answer arrives whole and in order (the answers the kernel did not take wait
/// with the connection, and each is written well within tcp-io-timeout).
#[test]
fn pipelined_large_answers_read_slowly_arrive_in_order() {
    let _g = heavy();
    let big: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "big TXT \"{}\"",
                char::from(b'a' + i as u8).to_string().repeat(250)
            )
        })
        .collect();
    let mut records = vec!["www A 192.0.2.10".to_string()];
    records.extend(big);
    let dir = TempDir::new("tcp-slowreader");
    let cfg = config(&dir, "", &records);
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let c = connect_from(Ipv4Addr::LOCALHOST, s.addr, Some(4096)).unwrap();
    c.set_nonblocking(false).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = c;
    r.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    const N: u16 = 4000;
    let writer = std::thread::spawn(move || {
        for id in 1..=N {
            // big and small answers mixed, so that batches hold several
            let mut q = if id % 3 == 0 {
                Q::new("big.example.test", TXT)
            } else {
                Q::new("www.example.test", A)
            };
            q.id = id;
            w.write_all(&framed(&q.build())).unwrap();
        }
        w
    });
    for id in 1..=N {
        let m = Msg::parse(&tcp_recv(&mut r).unwrap_or_else(|| panic!("answer {id}")));
        assert_eq!(m.id, id, "answers in order");
        if id % 3 == 0 {
            assert_eq!(m.answers(TXT).len(), 16);
        } else {
            assert_eq!(m.answers(A), ["192.0.2.10"]);
        }
        if id % 50 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(writer.join().unwrap());
}

/// 1,000 clients each send 60,000 octets of a 65,535-octet message and stall: gtmd keeps
/// what they sent (no more), drops it when tcp-io-timeout cuts them off, and hands the
/// memory back to the system: RSS comes back close to where it started.
#[test]
fn memory_of_unfinished_messages_returns() {
    let _g = heavy();
    const CLIENTS: usize = 1000;
    let limit = raise_nofile();
    assert!(limit >= (CLIENTS * 2 + 200) as u64, "RLIMIT_NOFILE {limit}");
    let dir = TempDir::new("tcp-unfinished");
    let cfg = config(
        &dir,
        "tcp-max-connections = 2100",
        &["www A 192.0.2.10".to_string()],
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let (addr, pid) = (s.addr, s.pid());
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = rss_kib(pid);
    let mut msg = vec![0xffu8, 0xff];
    msg.extend(std::iter::repeat_n(0u8, 60_000));
    let mut cs: Vec<(TcpStream, usize)> = (0..CLIENTS)
        .filter_map(|i| connect_from(Ipv4Addr::new(127, 4, 0, 1 + (i % 40) as u8), addr, None))
        .map(|c| (c, 0))
        .collect();
    let t0 = Instant::now();
    let mut peak = rss0;
    while t0.elapsed() < Duration::from_millis(1500) {
        for (c, done) in &mut cs {
            while *done < msg.len() {
                match c.write(&msg[*done..]) {
                    Ok(n) => *done += n,
                    Err(_) => break,
                }
            }
        }
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent: usize = cs.iter().map(|(_, d)| d).sum();
    drop(cs);
    let t1 = Instant::now();
    let mut after = u64::MAX;
    while t1.elapsed() < Duration::from_secs(4) && after > rss0 + 8 * 1024 {
        std::thread::sleep(Duration::from_millis(250));
        after = rss_kib(pid);
    }
    eprintln!(
        "unfinished messages: {CLIENTS} clients sent {} MiB; gtmd RSS before {} MiB, peak {} \
         MiB, after {} MiB ({:?} after they left)",
        sent >> 20,
        rss0 / 1024,
        peak / 1024,
        after / 1024,
        t1.elapsed()
    );
    assert!(
        peak <= rss0 + 100 * 1024,
        "RSS grew from {rss0} KiB to {peak} KiB"
    );
    assert!(
        after <= rss0 + 16 * 1024,
        "RSS did not come back: {rss0} KiB before, {after} KiB after"
    );
    assert_eq!(
        s.tcp(&Q::new("www.example.test", A).build())
            .answers(A)
            .len(),
        1
    );
}
