//! Response rate limiting through the real binary: a flood from many "spoofed" loopback
//! sources of one /24 (UDP sockets bound to 127.0.0.x), against a legitimate source in
//! another /24, an exempt source and a client with a valid server cookie inside the flooded
//! /24, and TCP from it. Bounded to a few seconds per backend.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::*;
use gtmd::tables::gslb::ClientAddr;
use gtmd::wire::cookie;

const A: u16 = 1;
const TXT: u16 = 16;
const SECRET: &str = "00112233445566778899aabbccddeeff";

fn config(dir: &TempDir, shards: &str, rrl: &str) -> std::path::PathBuf {
    dir.write("secret", SECRET);
    let mut names = String::new();
    for i in 0..10 {
        names.push_str(&format!("\"h{i} A 192.0.2.{i}\", "));
    }
    dir.write(
        "gtmd.toml",
        &format!(
            "version = 1\n[server]\nshards = {shards}\ncookie-secret-file = \"secret\"\n\
             [rrl]\n{rrl}\n\
             [[zone]]\nname = \"example.test.\"\nsoa = {{ mname = \"ns1\", rname = \"h\" }}\n\
             ns = [\"ns1\"]\nrecords = [\"ns1 A 192.0.2.53\", \"www A 192.0.2.10\", {names}\
             \"sub NS ns.sub\", \"ns.sub A 192.0.2.99\"]\n"
        ),
    )
}

fn bound(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// Per source: answers in full, answers truncated, and full answers that arrived in the
/// steady state (after the first second).
#[derive(Default, Debug)]
struct Got {
    full: usize,
    tc: usize,
    full_steady: usize,
}

fn drain(s: &UdpSocket, got: &mut Got, t0: Instant) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.recv(&mut buf) {
        let m = Msg::parse(&buf[..n]);
        if m.tc() {
            assert!(
                m.answer.is_empty() && m.counts[2] <= 1,
                "a slip has no records"
            );
            got.tc += 1;
        } else {
            assert_eq!(m.answers(A), ["192.0.2.10"]);
            got.full += 1;
            if t0.elapsed() >= Duration::from_secs(1) {
                got.full_steady += 1;
            }
        }
    }
}

fn flood(io: &str, shards: &str) {
    const RATE: usize = 100;
    const SOURCES: usize = 20;
    const ROUNDS: usize = 300; // 10 ms apart: 3 s at 2,000 queries/s from the /24
    let dir = TempDir::new(&format!("rrl-{io}"));
    let cfg = config(
        &dir,
        shards,
        &format!("rate = {RATE}\nslip = 2\nexempt = [\"127.0.0.200\", \"10.0.0.0/8\"]"),
    );
    let mut s = Server::start(&["--config", cfg.to_str().unwrap(), "--io", io]);
    let flooders: Vec<UdpSocket> = (2..2 + SOURCES)
        .map(|x| bound(&format!("127.0.0.{x}")))
        .collect();
    let legit = bound("127.1.0.1");
    let exempt = bound("127.0.0.200");
    let cookied = bound("127.0.0.201");
    let plain = Q::new("www.example.test", A).build();
    let client = [5u8; 8];
    let addr = Some(ClientAddr::V4(u32::from_be_bytes([127, 0, 0, 201])));
    let sc = cookie::make(
        &cookie::parse_secret(SECRET).unwrap(),
        &client,
        addr,
        cookie::now(),
    );
    let mut cookie_opt = client.to_vec();
    cookie_opt.extend_from_slice(&sc);
    let with_cookie = Q::new("www.example.test", A)
        .edns(1232)
        .opt(10, &cookie_opt)
        .build();
    let mut flood_got = Got::default();
    let (mut legit_got, mut exempt_got, mut cookie_got) =
        (Got::default(), Got::default(), Got::default());
    let mut tcp_ok = 0;
    let t0 = Instant::now();
    for round in 0..ROUNDS {
        for f in &flooders {
            f.send_to(&plain, s.addr).unwrap();
        }
        legit.send_to(&plain, s.addr).unwrap();
        exempt.send_to(&plain, s.addr).unwrap();
        cookied.send_to(&with_cookie, s.addr).unwrap();
        if round % 50 == 25 {
            // TCP from the flooded /24 (127.0.0.1) is never limited.
            if s.tcp(&plain).answers(A) == ["192.0.2.10"] {
                tcp_ok += 1;
            }
        }
        let next = t0 + Duration::from_millis(10 * (round as u64 + 1));
        loop {
            for f in &flooders {
                drain(f, &mut flood_got, t0);
            }
            drain(&legit, &mut legit_got, t0);
            drain(&exempt, &mut exempt_got, t0);
            drain(&cookied, &mut cookie_got, t0);
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(2)));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    for f in &flooders {
        drain(f, &mut flood_got, t0);
    }
    let sent = SOURCES * ROUNDS;
    eprintln!(
        "{io}, shards {shards}: {sent} queries from the /24 in {secs:.2} s: {} answered in full ({} after the \
         first second), {} truncated; legit {:?}, exempt {:?}, cookie {:?}, tcp {tcp_ok}",
        flood_got.full, flood_got.full_steady, flood_got.tc, legit_got, exempt_got, cookie_got
    );
    // Egress of full answers to the flooded /24 at the configured rate (within 20%): in
    // the steady state, RATE a second.
    let steady = (secs - 1.0) * RATE as f64;
    assert!(
        (flood_got.full_steady as f64 - steady).abs() <= 0.2 * steady,
        "{} full answers after the first second, expected ~{steady:.0}",
        flood_got.full_steady
    );
    // slip = 2: every second limited response goes out truncated, the others are dropped.
    let limited = sent - flood_got.full;
    assert!(
        (flood_got.tc as f64 - limited as f64 / 2.0).abs() <= 0.02 * limited as f64 + 2.0,
        "{} truncated of {limited} limited",
        flood_got.tc
    );
    for (who, g) in [
        ("legitimate", &legit_got),
        ("exempt", &exempt_got),
        ("cookie", &cookie_got),
    ] {
        assert_eq!(
            (g.full, g.tc),
            (ROUNDS, 0),
            "{who} source: every answer in full"
        );
    }
    assert_eq!(tcp_ok, ROUNDS / 50);
    // One log line for the one limited flow, not one per packet.
    assert_eq!(s.count_log("rate limiting responses"), 1, "{:?}", s.log);
    let line = s.wait_log("rate limiting responses", Duration::from_secs(1));
    assert!(
        line.contains("source=127.0.0.0/24") && line.contains("class=\"positive\""),
        "{line}"
    );
    // The counters agree with what arrived.
    s.stop();
    let summary = s.wait_log("shutdown summary", Duration::from_secs(2));
    let field = |k: &str| -> usize {
        summary
            .split(&format!("{k}="))
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("rrl_limited"), limited, "{summary}");
    assert_eq!(field("rrl_slipped"), flood_got.tc, "{summary}");
}

#[test]
fn flood_mmsg() {
    // Two shards: queries reach them by source prefix, so one table sees the whole /24.
    flood("mmsg", "[0, 1]");
}

#[test]
fn flood_io_uring() {
    flood("io-uring", "[0]");
}

/// Response classes share buckets as Knot's: NXDOMAIN and NODATA per zone, referrals per
/// cut, errors per source, positive answers per name and type.
#[test]
fn classes() {
    const RATE: usize = 10;
    let dir = TempDir::new("rrl-classes");
    let cfg = config(&dir, "[0]", &format!("rate = {RATE}\nslip = 0"));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let sock = UdpSocket::bind("127.0.2.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let answered = |qs: &[Vec<u8>]| -> usize {
        for q in qs {
            sock.send_to(q, s.addr).unwrap();
        }
        let mut n = 0;
        let mut buf = [0u8; 4096];
        while sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    };
    let many = |f: &dyn Fn(usize) -> Q| -> Vec<Vec<u8>> { (0..30).map(|i| f(i).build()).collect() };
    let one_bucket = RATE..=RATE + 1;
    let n = answered(&many(&|i| Q::new(&format!("nx{i}.example.test"), A)));
    assert!(one_bucket.contains(&n), "NXDOMAIN for 30 names: {n}");
    let n = answered(&many(&|i| {
        Q::new(&format!("h{}.example.test", i % 10), TXT)
    }));
    assert!(one_bucket.contains(&n), "NODATA for 10 names: {n}");
    let n = answered(&many(&|i| Q::new(&format!("x{i}.sub.example.test"), A)));
    assert!(one_bucket.contains(&n), "referrals below one cut: {n}");
    let n = answered(&many(&|i| Q::new(&format!("x{i}.example.com"), A)));
    assert!(one_bucket.contains(&n), "REFUSED: {n}");
    // Positive answers: a bucket per name and type (3 x 10 = 30, under each name's rate).
    let n = answered(&many(&|i| Q::new(&format!("h{}.example.test", i % 10), A)));
    assert_eq!(n, 30, "positive answers for 10 names");
    let n = answered(&many(&|_| Q::new("www.example.test", A)));
    assert!(one_bucket.contains(&n), "one name: {n}");
}

/// RRL turned on and off by a reload (one shard: nothing to steer).
#[test]
fn reload_turns_it_on_and_off() {
    let dir = TempDir::new("rrl-reload");
    let off = config(&dir, "[0]", "");
    let s = Server::start(&["--config", off.to_str().unwrap()]);
    let sock = UdpSocket::bind("127.0.3.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let q = Q::new("www.example.test", A).build();
    let answered = || {
        for _ in 0..30 {
            sock.send_to(&q, s.addr).unwrap();
        }
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while sock.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    };
    assert_eq!(answered(), 30, "no [rrl]: off");
    config(&dir, "[0]", "rate = 10\nslip = 0");
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    let n = answered();
    assert!((10..=11).contains(&n), "on after the reload: {n}");
    config(&dir, "[0]", "rate = 0");
    s.signal(libc::SIGHUP);
    s.wait_log("generation=3", Duration::from_secs(5));
    assert_eq!(answered(), 30, "rate 0: off again");
    assert_eq!(s.count_log("not steered"), 0, "one shard needs no steering");
}
