//! `GET /metrics` through the real binary: S2 (carrier lines, TCP health checks against
//! listeners this test holds) with `[metrics] per-domain = true` on one shard; queries of
//! known types and RCODEs over UDP and TCP; then the scrape must hold exactly those counts
//! (per shard, transport, QTYPE group and RCODE; per access domain and line), the health
//! state the checks found, the reload record before and after a good and a bad reload, and
//! pass `promtool check metrics` (Debian's `prometheus`, which `tools/test` installs).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const MX: u16 = 15;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const ANY: u16 = 255;
const CAA: u16 = 257;

/// A scrape: status, `Content-Type`, body.
fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n".to_string();
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ct = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, ct, body.to_string())
}

/// The samples of an exposition: `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap();
            (series.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The scrape with the test token, its samples.
pub(crate) fn metrics(s: &Server) -> (String, HashMap<String, f64>) {
    let auth = format!("Bearer {TEST_TOKEN}");
    let (status, ct, body) = scrape(s.control_addr(), &[("Authorization", &auth)]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let m = samples(&body);
    (body, m)
}

/// `promtool check metrics` passes the exposition, lint included (skipped loudly where
/// promtool is missing and we are not root: tools/test installs it as root).
pub(crate) fn promtool_passes(text: &str) {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            !root,
            "promtool (Debian package prometheus) is not installed; tools/test installs it as root"
        );
        eprintln!("SKIPPED promtool check: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// Listeners that pass TCP checks on `ips` (accepting and closing), until dropped.
struct Targets {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Targets {
    fn start(ips: &[&str], port: u16) -> Self {
        let ls: Vec<TcpListener> = ips
            .iter()
            .map(|ip| {
                let l = TcpListener::bind((*ip, port)).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for l in &ls {
                    while l.accept().is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port free on every one of `ips`.
fn port_free_on(ips: &[&str]) -> u16 {
    loop {
        let port = free_port();
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
}

/// S2 with its checks on `port` and `metrics` as its `[metrics]` table, in `dir`.
fn carrier_lines(dir: &TempDir, port: u16, metrics: &str) -> String {
    let text = std::fs::read_to_string(example("carrier-lines.toml"))
        .unwrap()
        .replace("port = 18080", &format!("port = {port}"));
    let path = dir.write(
        "carrier-lines.toml",
        &format!("{text}\n[metrics]\n{metrics}\n"),
    );
    path.display().to_string()
}

/// Sends `q` over UDP; the answer's RCODE must be `rcode`.
fn udp(s: &Server, q: &Q, rcode: u16) {
    let r = udp_exchange(s.addr, &q.build(), Duration::from_secs(2)).expect("an answer");
    assert_eq!(Msg::parse(&r).rcode(), rcode, "{:?}", q.name);
}

/// The queries of the test over UDP: (QTYPE group, RCODE) -> count, what they must add up to.
fn send_udp(s: &Server) {
    let ecs = |a: [u8; 4]| Q::new("app.example.test", A).edns(1232).ecs(1, 32, 0, &a);
    for _ in 0..3 {
        udp(s, &ecs([192, 0, 2, 7]), 0); // line mobile
    }
    for _ in 0..2 {
        udp(s, &ecs([203, 0, 113, 7]), 0); // line unicom (its pool is down: Global answers)
    }
    udp(s, &Q::new("app.example.test", A), 0); // line default
    for _ in 0..2 {
        udp(s, &Q::new("nope.example.test", AAAA), 3);
    }
    for t in [SOA, NS, MX, ANY] {
        udp(s, &Q::new("example.test", t), 0);
    }
    for t in [TXT, CNAME, CAA] {
        udp(s, &Q::new("ns1.example.test", t), 0);
    }
    udp(s, &Q::new("www.example.com", A), 5);
    let mut notimp = Q::new("ns1.example.test", A);
    notimp.flags |= 2 << 11; // opcode STATUS
    udp(s, &notimp, 4);
    let mut formerr = Q::new("ns1.example.test", A);
    formerr.counts_override = Some([0, 0, 0, 0]);
    udp(s, &formerr, 1);
    let mut badvers = Q::new("ns1.example.test", A).edns(1232);
    badvers.edns.as_mut().unwrap().1 = 1;
    let r = udp_exchange(s.addr, &badvers.build(), Duration::from_secs(2)).unwrap();
    let m = Msg::parse(&r);
    let ext = m.opt().map_or(0, |o| (o.ttl >> 24) as u16);
    assert_eq!(ext << 4 | m.rcode(), 16, "BADVERS");
    // Shorter than a header: dropped without an answer.
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&[1, 2, 3], s.addr)
        .unwrap();
}

/// Over one TCP connection: app A twice (line default), nope AAAA, ns1 A; then closed.
fn send_tcp(s: &Server) {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for (name, t, rcode) in [
        ("app.example.test", A, 0),
        ("app.example.test", A, 0),
        ("nope.example.test", AAAA, 3),
        ("ns1.example.test", A, 0),
    ] {
        tcp_send(&mut c, &Q::new(name, t).build());
        let r = tcp_recv(&mut c).expect("a TCP answer");
        assert_eq!(Msg::parse(&r).rcode(), rcode, "{name}");
    }
}

fn q(transport: &str, qtype: &str, rcode: &str) -> String {
    format!("gtmd_queries_total{{shard=\"0\",transport=\"{transport}\",qtype=\"{qtype}\",rcode=\"{rcode}\"}}")
}

/// The query counts the two senders make, exactly: no other combination may appear.
fn expected_queries() -> BTreeMap<String, f64> {
    [
        (q("udp", "A", "NOERROR"), 6.0),
        (q("udp", "AAAA", "NXDOMAIN"), 2.0),
        (q("udp", "SOA", "NOERROR"), 1.0),
        (q("udp", "NS", "NOERROR"), 1.0),
        (q("udp", "MX", "NOERROR"), 1.0),
        (q("udp", "ANY", "NOERROR"), 1.0),
        (q("udp", "TXT", "NOERROR"), 1.0),
        (q("udp", "CNAME", "NOERROR"), 1.0),
        (q("udp", "other", "NOERROR"), 1.0),
        (q("udp", "A", "REFUSED"), 1.0),
        (q("udp", "A", "NOTIMP"), 1.0),
        (q("udp", "other", "FORMERR"), 1.0),
        (q("udp", "A", "BADVERS"), 1.0),
        (q("tcp", "A", "NOERROR"), 3.0),
        (q("tcp", "AAAA", "NXDOMAIN"), 1.0),
    ]
    .into_iter()
    .collect()
}

/// Asserts every `(series, value)` of `want` is in `m`.
fn has(m: &HashMap<String, f64>, want: &[(&str, f64)], text: &str) {
    for (k, v) in want {
        assert_eq!(m.get(*k), Some(v), "{k} in\n{text}");
    }
}

/// The counts of what was sent: queries, drops, TCP, per domain and line.
fn check_traffic(m: &HashMap<String, f64>, text: &str) {
    let seen: BTreeMap<String, f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("gtmd_queries_total{"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(seen, expected_queries(), "{text}");
    has(
        m,
        &[
            (
                "gtmd_queries_dropped_total{shard=\"0\",transport=\"udp\",reason=\"invalid\"}",
                1.0,
            ),
            (
                "gtmd_queries_dropped_total{shard=\"0\",transport=\"tcp\",reason=\"invalid\"}",
                0.0,
            ),
            (
                "gtmd_responses_truncated_total{shard=\"0\",transport=\"udp\"}",
                0.0,
            ),
            ("gtmd_rrl_limited_total{shard=\"0\"}", 0.0),
            ("gtmd_tcp_connections_accepted_total{shard=\"0\"}", 1.0),
            ("gtmd_tcp_connections_refused_total{shard=\"0\"}", 0.0),
            (
                "gtmd_tcp_connections_closed_total{shard=\"0\",reason=\"client\"}",
                1.0,
            ),
            (
                "gtmd_tcp_connections_closed_total{shard=\"0\",reason=\"idle_timeout\"}",
                0.0,
            ),
            ("gtmd_tcp_connections_open{shard=\"0\"}", 0.0),
            (
                "gtmd_access_domain_answers_total{access_domain=\"app.example.test.\",type=\"A\"}",
                8.0,
            ),
            (
                "gtmd_access_domain_answers_total{access_domain=\"_other\",type=\"_other\"}",
                0.0,
            ),
            ("gtmd_line_answers_total{line=\"mobile\"}", 3.0),
            ("gtmd_line_answers_total{line=\"unicom\"}", 2.0),
            ("gtmd_line_answers_total{line=\"default\"}", 3.0),
            ("gtmd_line_answers_total{line=\"telecom\"}", 0.0),
        ],
        text,
    );
}

/// What the checks found: Unicom-Server-01 has no listener.
fn check_health(m: &HashMap<String, f64>, text: &str) {
    let addr = |n: &str, a: &str| format!("{n}{{address=\"{a}\"}}");
    let pool = |n: &str, p: &str| format!("{n}{{pool=\"{p}\"}}");
    let route = |lines: &str, pool: &str| {
        format!("gtmd_route_active_pool{{access_domain=\"app.example.test.\",type=\"A\",lines=\"{lines}\",pool=\"{pool}\"}}")
    };
    let want = [
        (addr("gtmd_address_up", "Mobile-Server-01"), 1.0),
        (addr("gtmd_address_up", "Unicom-Server-01"), 0.0),
        (
            addr("gtmd_address_transitions_total", "Mobile-Server-01"),
            0.0,
        ),
        (
            addr("gtmd_address_transitions_total", "Unicom-Server-01"),
            1.0,
        ),
        (pool("gtmd_pool_up", "Unicom"), 0.0),
        (pool("gtmd_pool_up", "Global"), 1.0),
        (pool("gtmd_pool_transitions_total", "Unicom"), 1.0),
        (pool("gtmd_pool_transitions_total", "Global"), 0.0),
        (route("mobile", "Mobile"), 1.0),
        (route("unicom", "Global"), 1.0),
        (route("default", "Global"), 1.0),
    ];
    for (k, v) in &want {
        assert_eq!(m.get(k), Some(v), "{k} in\n{text}");
    }
    let check = |a: &str, more: &str| {
        format!("address=\"{a}\",check=\"tcp-18080\",vantage=\"default\"{more}")
    };
    let get = |k: String| *m.get(&k).unwrap_or_else(|| panic!("{k} in\n{text}"));
    let passed = get(format!(
        "gtmd_health_checks_total{{{}}}",
        check("Mobile-Server-01", ",result=\"passed\"")
    ));
    assert!(passed >= 1.0, "{text}");
    assert_eq!(
        get(format!(
            "gtmd_health_checks_total{{{}}}",
            check("Mobile-Server-01", ",result=\"failed\"")
        )),
        0.0
    );
    assert!(
        get(format!(
            "gtmd_health_checks_total{{{}}}",
            check("Unicom-Server-01", ",result=\"failed\"")
        )) >= 1.0
    );
    assert_eq!(
        get(format!(
            "gtmd_health_check_up{{{}}}",
            check("Unicom-Server-01", "")
        )),
        0.0
    );
    // The histogram: cumulative buckets up to +Inf, which is the count of passed checks.
    let h = "gtmd_health_check_duration_seconds";
    let mut last = 0.0;
    for le in ["0.001", "0.01", "0.1", "1", "10", "+Inf"] {
        let v = get(format!(
            "{h}_bucket{{{}}}",
            check("Mobile-Server-01", &format!(",le=\"{le}\""))
        ));
        assert!(v >= last, "{h} le={le} cumulative");
        last = v;
    }
    assert_eq!(
        last,
        get(format!("{h}_count{{{}}}", check("Mobile-Server-01", "")))
    );
    assert_eq!(last, passed);
    assert_eq!(
        get(format!("{h}_count{{{}}}", check("Unicom-Server-01", ""))),
        0.0
    );
}

/// Waits until the scrape shows `n` reloads (the record is written just after the reload's
/// log line).
fn after_reloads(s: &Server, n: f64) -> (String, HashMap<String, f64>) {
    let t0 = Instant::now();
    loop {
        let (text, m) = metrics(s);
        if m.get("gtmd_reloads_total") == Some(&n) || t0.elapsed() > Duration::from_secs(5) {
            return (text, m);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the scrape shows the TCP connection closed (the shard sees the close at
/// its next readiness event) and the unanswered datagram dropped (it has no answer to wait
/// for).
fn settled(s: &Server) -> (String, HashMap<String, f64>) {
    let t0 = Instant::now();
    loop {
        let (text, m) = metrics(s);
        let closed = "gtmd_tcp_connections_closed_total{shard=\"0\",reason=\"client\"}";
        let dropped =
            "gtmd_queries_dropped_total{shard=\"0\",transport=\"udp\",reason=\"invalid\"}";
        let done = m.get(closed) == Some(&1.0) && m.get(dropped) == Some(&1.0);
        if done || t0.elapsed() > Duration::from_secs(3) {
            return (text, m);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_what_was_sent() {
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let port = port_free_on(&ips);
    let _targets = Targets::start(&ips[..2], port);
    let dir = TempDir::new("metrics");
    let cfg = carrier_lines(&dir, port, "per-domain = true");
    let s = Server::start(&["--config", &cfg, "--shards", "1"]);
    send_udp(&s);
    send_tcp(&s);
    let (text, m) = settled(&s);
    check_traffic(&m, &text);
    check_health(&m, &text);
    has(
        &m,
        &[
            ("gtmd_build_info{version=\"0.1.0\"}", 1.0),
            ("gtmd_config_generation", 1.0),
            ("gtmd_reloads_total", 0.0),
            ("gtmd_reload_failures_total", 0.0),
        ],
        &text,
    );
    promtool_passes(&text);
    let started = m["gtmd_process_start_time_seconds"];
    assert!(m["gtmd_reload_last_success_timestamp_seconds"] >= started);
    assert!(m["gtmd_process_resident_memory_bytes"] > 1e6);
    // A good reload, then a bad one: counted, and no count lost or reset.
    s.signal(libc::SIGHUP);
    s.wait_log("reload: new configuration serving", Duration::from_secs(5));
    let (text, m) = after_reloads(&s, 1.0);
    has(
        &m,
        &[
            ("gtmd_reloads_total", 1.0),
            ("gtmd_reload_failures_total", 0.0),
            ("gtmd_config_generation", 2.0),
        ],
        &text,
    );
    check_traffic(&m, &text);
    std::fs::write(&cfg, "version = 1\n[server]\nno-such-setting = 1\n").unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("reload rejected: still serving", Duration::from_secs(5));
    let (text, m) = after_reloads(&s, 2.0);
    has(
        &m,
        &[
            ("gtmd_reloads_total", 2.0),
            ("gtmd_reload_failures_total", 1.0),
            ("gtmd_config_generation", 2.0),
        ],
        &text,
    );
    check_traffic(&m, &text);
    promtool_passes(&text);
}

#[test]
fn metrics_access_formats_and_caps() {
    // No targets: every address down, answers from the fallback; two lines fit the cap.
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let port = port_free_on(&ips);
    let dir = TempDir::new("metrics-cap");
    let cfg = carrier_lines(&dir, port, "per-domain = true\nmax-series = 2");
    let s = Server::start(&["--config", &cfg, "--shards", "1"]);
    let ecs = |a: [u8; 4]| Q::new("app.example.test", A).edns(1232).ecs(1, 32, 0, &a);
    udp(&s, &ecs([192, 0, 2, 7]), 0);
    udp(&s, &ecs([198, 51, 100, 7]), 0);
    udp(&s, &ecs([203, 0, 113, 7]), 0);
    let (text, m) = metrics(&s);
    has(
        &m,
        &[
            ("gtmd_line_answers_total{line=\"default\"}", 0.0),
            ("gtmd_line_answers_total{line=\"mobile\"}", 1.0),
            ("gtmd_line_answers_total{line=\"_other\"}", 2.0),
            ("gtmd_route_active_pool{access_domain=\"app.example.test.\",type=\"A\",lines=\"mobile\",pool=\"_fallback\"}", 1.0),
        ],
        &text,
    );
    assert!(!text.contains("line=\"telecom\""), "{text}");
    promtool_passes(&text);
    // Reads follow the API's rule: no token needed on loopback; a wrong one is refused,
    // and only GET is allowed.
    let ctl = s.control_addr();
    let (status, _, body) = scrape(ctl, &[]);
    assert_eq!(status, 200);
    assert_eq!(samples(&body)["gtmd_config_generation"], 1.0);
    let (status, _, _) = scrape(ctl, &[("Authorization", "Bearer wrong-token-0123456789")]);
    assert_eq!(status, 401);
    let (status, _) = http_auth(ctl, "POST", "/metrics", "");
    assert_eq!(status, 405);
    // OpenMetrics when asked: counter families without _total, and # EOF.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, ct, body) = scrape(ctl, &[("Accept", accept)]);
    assert_eq!(status, 200);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    assert!(body.contains("# TYPE gtmd_queries counter\n"), "{body}");
    assert!(body.contains("# TYPE gtmd_build info\n"), "{body}");
    let om = samples(&body.replace("# EOF\n", ""));
    assert_eq!(om["gtmd_line_answers_total{line=\"_other\"}"], 2.0);
    // Without [metrics] per-domain nothing is counted or shown per name.
    let plain = Server::start(&["--config", &fixture("zones.toml").display().to_string()]);
    let (text, _) = metrics(&plain);
    assert!(!text.contains("gtmd_access_domain_answers"), "{text}");
    assert!(!text.contains("gtmd_route_active_pool"), "{text}");
    promtool_passes(&text);
}
