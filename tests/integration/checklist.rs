//! End-to-end DNS behaviour beyond one query and its answer: TCP pipelining, short
//! messages and timeouts, connection limits, counters and a clean shutdown, reloads under
//! queries. What one query must get is a case in `tests/cases/` (module `cases`).

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

const A: u16 = 1;
const NOERROR: u16 = 0;

/// A gtmd of its own with the fixture of the cases, on `io`.
fn server(io: &str) -> Server {
    let cfg = fixture("zones.toml");
    let s = Server::start(&["--config", cfg.to_str().unwrap(), "--io", io]);
    // `auto` is recvmmsg/sendmmsg (the measured cheaper backend, PERF.md).
    let want = if io == "io-uring" {
        "io=\"io-uring"
    } else {
        "io=\"mmsg\""
    };
    s.wait_log(want, Duration::from_secs(2));
    s
}

/// TCP (RFC 7766): pipelined queries all answered, a message shorter than a header closes
/// the connection, an idle connection is closed after the idle timeout (2 s in the
/// fixture).
fn tcp_behaviour(s: &Server) {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let names = [
        "www.example.test",
        "nope.example.test",
        "alias.example.test",
        "b.ent.example.test",
    ];
    let mut burst = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut q = Q::new(n, A);
        q.id = 100 + i as u16;
        let b = q.build();
        burst.extend_from_slice(&(b.len() as u16).to_be_bytes());
        burst.extend_from_slice(&b);
    }
    c.write_all(&burst).unwrap(); // all four in one segment
    let mut ids: Vec<u16> = (0..4)
        .map(|_| Msg::parse(&tcp_recv(&mut c).unwrap()).id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec![100, 101, 102, 103]);
    // a message shorter than a header closes the connection
    c.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap();
    assert!(tcp_recv(&mut c).is_none(), "closed after a short message");
    // idle timeout (2 s in the fixture)
    let mut idle = TcpStream::connect(s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    let r = std::io::Read::read(&mut idle, &mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "idle connection closed");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "idle close after {waited:?}"
    );
}

#[test]
fn tcp_behaviour_mmsg() {
    tcp_behaviour(crate::cases::server("zones.toml", "mmsg"));
}

#[test]
fn tcp_behaviour_uring() {
    tcp_behaviour(crate::cases::server("zones.toml", "io-uring"));
}

#[test]
fn counters_and_clean_shutdown() {
    let mut s = server("auto");
    for _ in 0..5 {
        s.udp(&Q::new("www.example.test", A).build()).unwrap();
    }
    s.udp(&Q::new("nope.example.test", A).build()).unwrap();
    s.udp(&Q::new("www.example.com", A).build()).unwrap();
    let _ = s.udp_raw(&[1, 2, 3], Duration::from_millis(100));
    s.tcp(&Q::new("www.example.test", A).build());
    let (took, status) = s.stop();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
    let line = s.wait_log("shutdown summary", Duration::from_secs(1));
    for want in [
        "queries=9 ",
        "noerror=6 ",
        "nxdomain=1 ",
        "refused=1 ",
        "dropped=1 ",
        "tcp_queries=1 ",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

/// A config from the fixture with one shard and `server` lines added to `[server]`.
fn tcp_limits_config(name: &str, server: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("checklist");
    let cfg = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(fixture("zones.toml"))
        .unwrap()
        .replace("tcp-max-connections = 64", server)
        .replace("shards = [0, 1]", "shards = [0]")
        .replace(
            "file = \"other.test.zone\"",
            &format!("file = \"{}\"", fixture("other.test.zone").display()),
        );
    std::fs::write(&cfg, text).unwrap();
    (dir, cfg)
}

/// A blocking connection from the loopback address `src` (any port).
fn tcp_from(src: [u8; 4], dst: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SockAddr::from(std::net::SocketAddr::from((src, 0))))
        .unwrap();
    s.connect(&SockAddr::from(dst)).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Whether `c` answers a query within its read timeout.
fn tcp_answers(c: &mut TcpStream) -> bool {
    let q = Q::new("www.example.test", A).build();
    let mut b = (q.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(&q);
    c.write_all(&b).is_ok() && tcp_recv(c).is_some_and(|r| Msg::parse(&r).answers(A).len() == 2)
}

/// Whether gtmd closed `c` (EOF or reset within its read timeout).
fn tcp_closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match std::io::Read::read(c, &mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// RFC 7766 6.2.3: at the cap the connection idle the longest is closed to admit a new
/// one; a source over its own limit is closed at once and takes no one's place.
#[test]
fn tcp_connection_cap() {
    let (_dir, cfg) = tcp_limits_config(
        "cap",
        "tcp-max-connections = 3\ntcp-max-connections-per-source = 2",
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    // two idle connections from 127.0.0.1: its limit
    let mut oldest = tcp_from([127, 0, 0, 1], s.addr);
    std::thread::sleep(Duration::from_millis(50));
    let mut second = tcp_from([127, 0, 0, 1], s.addr);
    std::thread::sleep(Duration::from_millis(50));
    let mut over = tcp_from([127, 0, 0, 1], s.addr);
    assert!(tcp_closed(&mut over), "a third from one source is closed");
    // another source fills the cap, and queries
    let mut active = tcp_from([127, 3, 0, 1], s.addr);
    assert!(tcp_answers(&mut active));
    // a new connection at the cap: the longest-idle one makes room
    let mut fresh = tcp_from([127, 3, 0, 2], s.addr);
    assert!(
        tcp_answers(&mut fresh),
        "a new connection at the cap is served"
    );
    assert!(
        tcp_closed(&mut oldest),
        "the longest-idle connection was closed"
    );
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(!tcp_closed(&mut second), "the others stay");
    assert!(tcp_answers(&mut active));
    assert!(tcp_answers(&mut second));
}

/// RFC 7766 10 (Knot's tcp-io-timeout): a message whose first octet arrived must be
/// complete within the I/O timeout, however the octets trickle in; a silent connection
/// lasts until the idle timeout (2 s), and a message split in parts that come within the
/// I/O timeout is answered.
#[test]
fn tcp_io_timeout() {
    let (_dir, cfg) = tcp_limits_config("io", "tcp-max-connections = 64\ntcp-io-timeout = 0.3");
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let q = Q::new("www.example.test", A).build();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    // split in three parts 100 ms apart: answered
    let mut split = tcp_from([127, 0, 0, 1], s.addr);
    for part in [&framed[..1], &framed[1..9], &framed[9..]] {
        split.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(tcp_recv(&mut split).is_some_and(|r| Msg::parse(&r).answers(A).len() == 2));
    // one octet every 100 ms: closed about 0.3 s after the first
    let mut trickle = tcp_from([127, 0, 0, 1], s.addr);
    let silent = tcp_from([127, 0, 0, 1], s.addr);
    let t0 = Instant::now();
    let mut closed_after = None;
    for &octet in framed.iter() {
        if trickle.write_all(&[octet]).is_err() {
            closed_after = Some(t0.elapsed());
            break;
        }
        trickle
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if tcp_closed(&mut trickle) {
            closed_after = Some(t0.elapsed());
            break;
        }
    }
    let after = closed_after.expect("a trickled message is cut off");
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1000),
        "closed {after:?} after its first octet"
    );
    // the silent one is still there (idle timeout 2 s)
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        !tcp_closed(&mut silent),
        "a silent connection waits for the idle timeout"
    );
    assert!(tcp_answers(&mut silent));
}

/// Reload while queries flow: the good config takes over with no query lost or wrong; a
/// bad one is rejected, logged, and the previous one keeps serving.
#[test]
fn reload_good_and_bad_while_querying() {
    let dir = TempDir::new("reload");
    let cfg = dir.join("reload.toml");
    let write = |addr: &str| {
        std::fs::write(
            &cfg,
            format!(
                "version = 1\n[server]\nshards = [0, 1]\n[[zone]]\nname = \"r.test.\"\n\
                 soa = {{ mname = \"ns\", rname = \"h\" }}\nns = [\"ns\"]\n\
                 records = [\"ns A 192.0.2.1\", \"svc 30 A {addr}\"]\n"
            ),
        )
        .unwrap()
    };
    write("192.0.2.100");
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let querier = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        let mut lost = 0;
        let mut n = 0u32;
        while !st.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
            n += 1;
            let mut q = Q::new("svc.r.test", A);
            q.id = n as u16;
            match udp_exchange(addr, &q.build(), Duration::from_secs(1)) {
                Some(r) => {
                    let m = Msg::parse(&r);
                    assert_eq!(m.id, n as u16);
                    assert_eq!(m.rcode(), NOERROR, "answer during reload");
                    assert_eq!(m.answer.len(), 1);
                    *seen.entry(m.answer[0].data.clone()).or_default() += 1;
                }
                None => lost += 1,
            }
        }
        (seen, lost, n)
    });
    std::thread::sleep(Duration::from_millis(300));
    write("192.0.2.200");
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    // A bad config: rejected, old one serves.
    std::fs::write(
        &cfg,
        "version = 1\n[[zone]]\nname = \"r.test.\"\nsoa = { mname = \"ns\" }\n",
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("reload rejected: still serving", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seen, lost, n) = querier.join().unwrap();
    assert_eq!(lost, 0, "no query lost during reloads ({n} sent)");
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        vec!["192.0.2.100", "192.0.2.200"],
        "{seen:?}"
    );
    assert!(
        s.count_log("reload rejected: ") >= 2,
        "the error itself is logged too"
    );
    let m = s.udp(&Q::new("svc.r.test", A).build()).unwrap();
    assert_eq!(
        m.answers(A),
        vec!["192.0.2.200"],
        "previous config still serving"
    );
    // Zone data cut short mid-record (a deploy caught half way), as a file and inline:
    // rejected with its place named; the process lives on and the old snapshot serves.
    let zone = dir.join("r.zone");
    let cut = "$ORIGIN r.test.\n@ 60 SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\np TXT ( \"a\"";
    std::fs::write(&zone, cut).unwrap();
    let inline = "version = 1\n[[zone]]\nname = \"r.test.\"\n\
                  soa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
                  records = [\"ns A 192.0.2.1\", \"p TXT ( \\\"a\\\"\"]\n";
    let file = "version = 1\n[[zone]]\nname = \"r.test.\"\nfile = \"r.zone\"\n";
    for (k, text) in [inline, file].into_iter().enumerate() {
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "check exits 1: {err}");
        let place = ["reload.toml:6: record: ", "r.zone:5: record: "][k];
        assert!(err.contains(place), "the place {place}: {err}");
        assert!(
            !err.contains("internal"),
            "an error, not a contained bug: {err}"
        );
        s.signal(libc::SIGHUP);
        let t0 = Instant::now();
        while s.count_log("still serving the previous configuration") < 2 + k {
            assert!(t0.elapsed() < Duration::from_secs(5), "reload rejected");
            std::thread::sleep(Duration::from_millis(20));
        }
        let m = s
            .udp(&Q::new("svc.r.test", A).build())
            .expect("still alive");
        assert_eq!(m.answers(A), vec!["192.0.2.200"]);
    }
}
