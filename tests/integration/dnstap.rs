//! `[dnstap]` through the real binary: queries over UDP and TCP logged to a Frame Streams
//! file and read back by Debian's `dnstap-ldns` (names, types, transports, identity,
//! version, counts), sampling, a socket reader (`fstrm_capture`, Debian's `fstrm-bin`)
//! that goes away and comes back, and the drops `/metrics` counts when there is no reader
//! or a reader that does not read (while every query is still answered at once).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{http, udp_exchange, Server, TempDir, Q};

const A: u16 = 1;
const AAAA: u16 = 28;

fn config(dir: &TempDir, dnstap: &str) -> PathBuf {
    dir.write(
        "gtmd.toml",
        &format!(
            r#"version = 1

[[zone]]
name = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster" }}
ns = ["ns1"]
records = ["ns1 A 192.0.2.1", "www A 192.0.2.10", "www AAAA 2001:db8::10"]

[dnstap]
{dnstap}
"#
        ),
    )
}

fn start(cfg: &Path) -> Server {
    Server::start(&["--config", cfg.to_str().unwrap(), "--shards", "1"])
}

/// One message of `dnstap-ldns -y`: the top-level and `message:` keys, and the text of
/// the query or response message.
#[derive(Debug, Default)]
struct Logged {
    fields: std::collections::BTreeMap<String, String>,
    dns: String,
}

impl Logged {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map_or("", String::as_str)
    }
}

/// Reads a Frame Streams file with `dnstap-ldns -r FILE -y`.
fn read_back(file: &Path) -> Vec<Logged> {
    let out = Command::new("dnstap-ldns")
        .arg("-r")
        .arg(file)
        .arg("-y")
        .output()
        .expect("dnstap-ldns (Debian package dnstap-ldns; tools/test installs it)");
    assert!(
        out.status.success(),
        "dnstap-ldns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut all = Vec::new();
    for doc in text.split("---\n").filter(|d| !d.trim().is_empty()) {
        let mut m = Logged::default();
        for line in doc.lines() {
            let t = line.trim_start();
            let nested = if line.starts_with("    ") {
                m.dns.push_str(t);
                m.dns.push('\n');
                continue;
            } else {
                line.starts_with("  ")
            };
            if let Some((k, v)) = t.split_once(':') {
                let k = if nested {
                    format!("message.{k}")
                } else {
                    k.to_string()
                };
                m.fields.insert(k, v.trim().trim_matches('"').to_string());
            }
        }
        all.push(m);
    }
    all
}

/// `dnstap-ldns -r FILE -q`: one line per message, `TYPE ADDRESS PROTOCOL NAME CLASS
/// QTYPE` of each (`AQ 127.0.0.1 UDP "www.example.test." IN A`), in file order.
fn summary(file: &Path) -> Vec<String> {
    let out = Command::new("dnstap-ldns")
        .arg("-r")
        .arg(file)
        .arg("-q")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            // Date and time first, the size after the protocol: left out.
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 9, "{l}");
            [w[2], w[3], w[4], w[6], w[7], w[8]].join(" ")
        })
        .collect()
}

/// One sample of `/metrics`, by its whole series name (`name{labels}`).
fn metric(s: &Server, series: &str) -> u64 {
    let (st, body) = http(s.control_addr(), "GET", "/metrics", &[], "");
    assert_eq!(st, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file sink: every query and response, UDP and TCP, with the configured identity and
/// version, read back by dnstap-ldns after gtmd is stopped by its PID.
#[test]
fn file_holds_every_query_and_response() {
    let dir = TempDir::new("dnstap-file");
    let cfg = config(
        &dir,
        "file = \"tap.fstrm\"\nidentity = \"edge-test\"\nversion = \"v-test\"",
    );
    let mut s = start(&cfg);
    let www = Q::new("www.example.test", A).build();
    assert_eq!(s.udp(&www).unwrap().rcode(), 0);
    let nx = Q::new("nothere.example.test", A).build();
    assert_eq!(s.udp(&nx).unwrap().rcode(), 3);
    let aaaa = Q::new("www.example.test", AAAA).build();
    assert_eq!(s.udp(&aaaa).unwrap().rcode(), 0);
    assert_eq!(s.tcp(&aaaa).rcode(), 0);
    assert_eq!(s.tcp(&Q::new("other.test", A).build()).rcode(), 5);
    wait_until("10 frames written", Duration::from_secs(5), || {
        metric(&s, "gtmd_dnstap_frames_total") == 10
    });
    s.stop();
    let file = dir.join("tap.fstrm");
    let mut lines = summary(&file);
    lines.sort();
    let want = [
        "AQ 127.0.0.1 TCP \"other.test.\" IN A",
        "AQ 127.0.0.1 TCP \"www.example.test.\" IN AAAA",
        "AQ 127.0.0.1 UDP \"nothere.example.test.\" IN A",
        "AQ 127.0.0.1 UDP \"www.example.test.\" IN A",
        "AQ 127.0.0.1 UDP \"www.example.test.\" IN AAAA",
        "AR 127.0.0.1 TCP \"other.test.\" IN A",
        "AR 127.0.0.1 TCP \"www.example.test.\" IN AAAA",
        "AR 127.0.0.1 UDP \"nothere.example.test.\" IN A",
        "AR 127.0.0.1 UDP \"www.example.test.\" IN A",
        "AR 127.0.0.1 UDP \"www.example.test.\" IN AAAA",
    ];
    assert_eq!(lines, want);
    let all = read_back(&file);
    assert_eq!(all.len(), 10);
    for m in &all {
        assert_eq!(
            (m.get("type"), m.get("identity"), m.get("version")),
            ("MESSAGE", "edge-test", "v-test"),
            "{m:#?}"
        );
        assert_eq!(m.get("message.socket_family"), "INET");
        assert!(m
            .get("message.query_port")
            .parse::<u16>()
            .is_ok_and(|p| p > 0));
        let query = m.get("message.type") == "AUTH_QUERY";
        let (time, text) = if query {
            ("message.query_time", "message.query_message")
        } else {
            ("message.response_time", "message.response_message")
        };
        assert!(m.get(time).starts_with("!!timestamp 20"), "{m:#?}");
        assert!(m.fields.contains_key(text), "{m:#?}");
        // Queries without QR; responses with it, the RCODE each got.
        let flags = m.dns.lines().find(|l| l.starts_with(";; flags:")).unwrap();
        assert_eq!(flags.contains(" qr "), !query, "{flags}");
    }
    let rcode = |name: &str| -> Vec<String> {
        all.iter()
            .filter(|m| m.get("message.type") == "AUTH_RESPONSE")
            .filter(|m| m.dns.contains(&format!(";{name}")))
            .map(|m| {
                let h = m.dns.lines().next().unwrap();
                h.split("rcode: ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(rcode("nothere.example.test."), ["NXDOMAIN"]);
    assert_eq!(rcode("other.test."), ["REFUSED"]);
    assert_eq!(rcode("www.example.test."), ["NOERROR"; 3]);
    let answered = all.iter().filter(|m| {
        m.dns
            .lines()
            .any(|l| l.starts_with("www.example.test.\t") && l.ends_with("IN\tA\t192.0.2.10"))
    });
    assert_eq!(answered.count(), 1, "the A answer's record");
}

/// `sample = 3` logs queries 1, 4, 7, 10 of each shard thread; `log-responses = false`
/// keeps responses out; a reload does not change the sample (restart).
#[test]
fn sampling_and_queries_only() {
    let dir = TempDir::new("dnstap-sample");
    let cfg = config(
        &dir,
        "file = \"tap.fstrm\"\nsample = 3\nlog-responses = false",
    );
    let mut s = start(&cfg);
    for i in 0..9 {
        let q = Q::new(&format!("q{i}.example.test"), A).build();
        assert!(s.udp(&q).is_some());
    }
    for i in 0..2 {
        s.tcp(&Q::new(&format!("t{i}.example.test"), A).build());
    }
    // A reload that changes [dnstap] says it waits for a restart; the sample stays 3.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("sample = 3", "sample = 1")).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log(
        "reload: [dnstap] takes effect at restart",
        Duration::from_secs(5),
    );
    s.wait_log("generation=2", Duration::from_secs(5));
    for i in 9..12 {
        let q = Q::new(&format!("q{i}.example.test"), A).build();
        assert!(s.udp(&q).is_some());
    }
    s.stop();
    // Sorted: the UDP and TCP threads' rings are drained in turn, not in arrival order.
    let mut lines = summary(&dir.join("tap.fstrm"));
    lines.sort();
    assert_eq!(
        lines,
        [
            "AQ 127.0.0.1 TCP \"t0.example.test.\" IN A",
            "AQ 127.0.0.1 UDP \"q0.example.test.\" IN A",
            "AQ 127.0.0.1 UDP \"q3.example.test.\" IN A",
            "AQ 127.0.0.1 UDP \"q6.example.test.\" IN A",
            "AQ 127.0.0.1 UDP \"q9.example.test.\" IN A",
        ]
    );
}

/// The io_uring backend, IPv6 clients and `responses-with-queries` (queries off): each
/// AUTH_RESPONSE carries the query too, INET6 and the client's address and port.
#[test]
fn uring_ipv6_responses_with_queries() {
    let dir = TempDir::new("dnstap-v6");
    let cfg = config(
        &dir,
        "file = \"tap.fstrm\"\nlog-queries = false\nresponses-with-queries = true",
    );
    let args = ["--io", "io-uring", "--listen", "[::1]:0", "--shards", "1"];
    let mut s = Server::start(&[&["--config", cfg.to_str().unwrap()][..], &args].concat());
    let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&Q::new("www.example.test", AAAA).build(), s.addr)
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(udp.recv(&mut buf).is_ok(), "answered over IPv6");
    s.tcp(&Q::new("www.example.test", A).build());
    s.stop();
    let file = dir.join("tap.fstrm");
    assert_eq!(
        summary(&file),
        [
            "AR ::1 UDP \"www.example.test.\" IN AAAA",
            "AR ::1 TCP \"www.example.test.\" IN A",
        ]
    );
    let all = read_back(&file);
    assert_eq!(
        all[0].get("message.query_port"),
        udp.local_addr().unwrap().port().to_string()
    );
    for m in &all {
        assert_eq!(m.get("message.socket_family"), "INET6", "{m:#?}");
        assert_eq!(m.get("message.query_address"), "::1", "{m:#?}");
        for k in [
            "query_time",
            "query_message",
            "response_time",
            "response_message",
        ] {
            assert!(
                m.fields.contains_key(&format!("message.{k}")),
                "{k}: {m:#?}"
            );
        }
    }
}

/// A reader process, killed by its PID if the test ends without stopping it.
struct Capture(Child);

impl Drop for Capture {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `fstrm_capture` as the reader: frames arrive over the socket with the handshake; the
/// reader goes away (frames dropped and counted as no_reader) and comes back (gtmd
/// reconnects within a few seconds and logs again).
#[test]
fn socket_reader_goes_away_and_comes_back() {
    let dir = TempDir::new("dnstap-socket");
    let sock = dir.join("tap.sock");
    let capture = |out: &str| -> Capture {
        let _ = std::fs::remove_file(&sock);
        let c = Command::new("fstrm_capture")
            .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
            .arg(&sock)
            .arg("-w")
            .arg(dir.join(out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fstrm_capture (Debian package fstrm-bin; tools/test installs it)");
        let c = Capture(c);
        wait_until("fstrm_capture listening", Duration::from_secs(5), || {
            sock.exists()
        });
        c
    };
    let stop_capture = |mut c: Capture| {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.0.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while c.0.try_wait().unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(5), "fstrm_capture stops");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let first = capture("first.fstrm");
    let cfg = config(&dir, "socket = \"tap.sock\"");
    let mut s = start(&cfg);
    assert_eq!(metric(&s, "gtmd_dnstap_connected"), 1);
    for _ in 0..3 {
        s.udp(&Q::new("www.example.test", A).build()).unwrap();
    }
    wait_until("6 frames written", Duration::from_secs(5), || {
        metric(&s, "gtmd_dnstap_frames_total") == 6
    });
    stop_capture(first);
    // Gone: the next frames fail to be written and are counted.
    for _ in 0..4 {
        s.udp(&Q::new("nothere.example.test", A).build()).unwrap();
    }
    let no_reader = "gtmd_dnstap_dropped_total{reason=\"no_reader\"}";
    wait_until("8 frames dropped", Duration::from_secs(5), || {
        metric(&s, no_reader) == 8
    });
    assert_eq!(metric(&s, "gtmd_dnstap_connected"), 0);
    // The reader comes back while queries keep coming: gtmd reconnects all the same.
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = {
        let (addr, on) = (s.addr, flooding.clone());
        std::thread::spawn(move || {
            let q = Q::new("flood.example.test", A).build();
            let mut n = 0u64;
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                n += u64::from(udp_exchange(addr, &q, Duration::from_secs(1)).is_some());
            }
            n
        })
    };
    let second = capture("second.fstrm");
    wait_until("reconnected under traffic", Duration::from_secs(5), || {
        metric(&s, "gtmd_dnstap_connected") == 1
    });
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let flooded = flood.join().unwrap();
    let total = 6 + 2 * (4 + flooded);
    let accounted = || {
        let dropped: u64 = ["no_reader", "slow_reader", "queue_full"]
            .iter()
            .map(|r| metric(&s, &format!("gtmd_dnstap_dropped_total{{reason=\"{r}\"}}")))
            .sum();
        (metric(&s, "gtmd_dnstap_frames_total"), dropped)
    };
    wait_until(
        "every frame written or dropped",
        Duration::from_secs(5),
        || {
            let (w, d) = accounted();
            w + d == total
        },
    );
    let (written, dropped) = accounted();
    assert!(dropped > 8, "the flood met no reader first: {dropped}");
    for _ in 0..2 {
        s.tcp(&Q::new("www.example.test", AAAA).build());
    }
    wait_until("4 more frames written", Duration::from_secs(5), || {
        metric(&s, "gtmd_dnstap_frames_total") == written + 4
    });
    s.stop();
    std::thread::sleep(Duration::from_millis(200));
    stop_capture(second);
    let first = read_back(&dir.join("first.fstrm"));
    assert_eq!(first.len(), 6);
    assert!(first.iter().all(|m| m.dns.contains("www.example.test.")));
    let second = read_back(&dir.join("second.fstrm"));
    let (flood, rest): (Vec<&Logged>, Vec<&Logged>) = second
        .iter()
        .partition(|m| m.dns.contains("flood.example.test."));
    assert_eq!(
        flood.len() as u64,
        written - 6,
        "the flood's frames after the reconnection"
    );
    assert_eq!(rest.len(), 4, "{rest:#?}");
    assert!(rest
        .iter()
        .all(|m| m.get("message.socket_protocol") == "TCP" && m.dns.contains("AAAA")));
}

/// No reader at all: every frame is dropped and counted; queries are answered as ever.
#[test]
fn no_reader_drops_are_counted() {
    let dir = TempDir::new("dnstap-absent");
    let cfg = config(&dir, "socket = \"nobody.sock\"");
    let s = start(&cfg);
    s.wait_log("dnstap: no reader", Duration::from_secs(2));
    for _ in 0..10 {
        assert_eq!(
            s.udp(&Q::new("www.example.test", A).build())
                .unwrap()
                .rcode(),
            0
        );
    }
    wait_until("20 frames dropped", Duration::from_secs(5), || {
        metric(&s, "gtmd_dnstap_dropped_total{reason=\"no_reader\"}") == 20
    });
    assert_eq!(metric(&s, "gtmd_dnstap_frames_total"), 0);
    assert_eq!(metric(&s, "gtmd_dnstap_connected"), 0);
    // The rings (1,024 slots of 8 KiB for UDP, 256 of 128 KiB for TCP: 40 MiB mapped) are
    // resident only where written: with small pages, a page per used slot at most.
    let rss = metric(&s, "gtmd_process_resident_memory_bytes");
    assert!(rss < 48 << 20, "{} MiB resident", rss >> 20);
    // The dnstap families pass promtool's checks.
    let (st, body) = http(s.control_addr(), "GET", "/metrics", &[], "");
    assert_eq!(st, 200);
    assert!(
        body.contains("# TYPE gtmd_dnstap_dropped_total counter"),
        "{body}"
    );
    crate::metrics::promtool_passes(&body);
}

/// A reader that shakes hands and then does not read: gtmd never waits for it (every query
/// is answered), drops what does not fit and counts it; once the reader reads, what was
/// kept arrives, and frames written plus frames dropped is every frame.
#[test]
fn slow_reader_drops_instead_of_blocking() {
    const QUERIES: u64 = 5000;
    let dir = TempDir::new("dnstap-slow");
    let listener = UnixListener::bind(dir.join("slow.sock")).unwrap();
    let cfg = config(&dir, "socket = \"slow.sock\"");
    let (go, read_now) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let frame = |c: &mut std::os::unix::net::UnixStream| -> (u32, Vec<u8>) {
            let mut len = [0u8; 4];
            c.read_exact(&mut len).unwrap();
            let mut n = u32::from_be_bytes(len);
            let control = n == 0;
            if control {
                c.read_exact(&mut len).unwrap();
                n = u32::from_be_bytes(len);
            }
            let mut body = vec![0u8; n as usize];
            c.read_exact(&mut body).unwrap();
            (if control { 0 } else { 1 }, body)
        };
        let (kind, ready) = frame(&mut c);
        assert_eq!((kind, &ready[..4]), (0, &[0, 0, 0, 4][..]), "READY");
        let ct = b"protobuf:dnstap.Dnstap";
        let mut accept = vec![0, 0, 0, 0];
        let body_len = 4 + 8 + ct.len();
        accept.extend_from_slice(&(body_len as u32).to_be_bytes());
        accept.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        accept.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        accept.extend_from_slice(ct);
        c.write_all(&accept).unwrap();
        let (kind, start) = frame(&mut c);
        assert_eq!((kind, &start[..4]), (0, &[0, 0, 0, 2][..]), "START");
        // Not reading until the test says so.
        read_now.recv().unwrap();
        let mut data = 0u64;
        loop {
            let (kind, body) = frame(&mut c);
            if kind == 1 {
                data += 1;
            } else if body[..4] == [0, 0, 0, 3] {
                c.write_all(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5]).unwrap(); // FINISH
                return data;
            }
        }
    });
    let mut s = start(&cfg);
    let t0 = Instant::now();
    let q = Q::new("www.example.test", A).build();
    for _ in 0..QUERIES {
        assert!(
            s.udp(&q).is_some(),
            "answered while the reader does not read"
        );
    }
    let took = t0.elapsed();
    let slow = "gtmd_dnstap_dropped_total{reason=\"slow_reader\"}";
    let full = "gtmd_dnstap_dropped_total{reason=\"queue_full\"}";
    wait_until("drops counted", Duration::from_secs(5), || {
        metric(&s, slow) > 0
    });
    let written = metric(&s, "gtmd_dnstap_frames_total");
    assert!(written < 2 * QUERIES, "{written}");
    go.send(()).unwrap();
    wait_until(
        "every frame written or dropped",
        Duration::from_secs(10),
        || {
            metric(&s, "gtmd_dnstap_frames_total") + metric(&s, slow) + metric(&s, full)
                == 2 * QUERIES
        },
    );
    let written = metric(&s, "gtmd_dnstap_frames_total");
    s.stop();
    let read = reader.join().unwrap();
    assert_eq!(read, written, "frames the reader got");
    eprintln!("slow reader: {QUERIES} queries in {took:?}, {written} frames written");
}
