//! Failover on its own: real targets (HTTP and TCP listeners on 127.0.0.x, on a port free
//! when the test starts, started and stopped by the test), the real binary with the
//! `examples/` configs checking that port, and the answer switching within interval x
//! threshold + timeout (+ margin) when a target dies, then back (preemptive) or not
//! (non-preemptive) when it returns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;

const A: u16 = 1;

/// A port for a test's targets, free on each of `ips` (and on 127.0.0.1) when asked: every
/// test has its own, so tests of this run and of another run on the machine never answer
/// each other's checks.
pub(crate) fn target_port(ips: &[&str]) -> u16 {
    loop {
        let port = free_port();
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return port;
        }
    }
}

/// The text of the example `name` with its health checks on `port` instead of 18080.
fn example_text(name: &str, port: u16) -> String {
    let text = std::fs::read_to_string(example(name)).unwrap();
    assert!(text.contains("port = 18080"), "{name} checks port 18080");
    text.replace("port = 18080", &format!("port = {port}"))
}

/// [`example_text`] written to `dir`; its path.
fn example_on(dir: &TempDir, name: &str, port: u16) -> String {
    let path = dir.write(name, &example_text(name, port));
    path.display().to_string()
}
/// Every example: interval 1 s, 2 failures down, 2 successes up, timeout 0.5 s.
const DOWN_BOUND: Duration = Duration::from_millis(1000 * 2 + 500 + 1500);
const UP_BOUND: Duration = Duration::from_millis(1000 * 2 + 1500);

/// A target: an HTTP server answering `GET /health` with 200 (any accepted socket also
/// passes a TCP check). Dropping it closes the listening socket.
pub(crate) struct Target {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Health answers served, in order (true = 200).
    served: Arc<std::sync::Mutex<Vec<bool>>>,
    /// Requests from these source addresses get 503.
    pub(crate) deny: Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>,
    /// Connections accepted.
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Target {
    pub(crate) fn start(ip: &str, port: u16) -> Self {
        Self::start_with(ip, port, None)
    }

    /// `random`: answer /health with 200 or 503 at random from this seed.
    fn start_with(ip: &str, port: u16, random: Option<u64>) -> Self {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.set_reuse_address(true).unwrap();
        l.bind(&addr.into()).unwrap();
        l.listen(64).unwrap();
        let l: TcpListener = l.into();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let served = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = served.clone();
        let deny = Arc::new(std::sync::Mutex::new(Vec::new()));
        let denied = deny.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepts = accepted.clone();
        let mut seed = random.unwrap_or(0);
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        accepts.fetch_add(1, Ordering::Relaxed);
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 1024];
                        let n = c.read(&mut buf).unwrap_or(0);
                        let req = String::from_utf8_lossy(&buf[..n]);
                        let ok = !denied.lock().unwrap().contains(&peer.ip())
                            && (random.is_none() || {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                seed.is_multiple_of(2)
                            });
                        let resp = if req.starts_with("GET /health ") && ok {
                            log.lock().unwrap().push(true);
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        } else if req.starts_with("GET /health ") {
                            log.lock().unwrap().push(false);
                            "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        } else {
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        };
                        let _ = c.write_all(resp.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
            served,
            deny,
            accepted,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(s: &Server, name: &str, subnet: Option<[u8; 4]>) -> Vec<String> {
    let mut q = Q::new(name, A).edns(1232);
    if let Some(a) = subnet {
        q = q.ecs(1, 32, 0, &a);
    }
    s.udp(&q.build()).expect("answer").answers(A)
}

/// Waits until the answer is `want`; returns how long it took.
fn until(
    s: &Server,
    name: &str,
    subnet: Option<[u8; 4]>,
    want: &[&str],
    bound: Duration,
    what: &str,
) -> Duration {
    let mut want: Vec<String> = want.iter().map(|x| x.to_string()).collect();
    want.sort();
    let t0 = Instant::now();
    loop {
        let got = answer(s, name, subnet);
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < bound,
            "{what}: still {got:?} after {:?}, want {want:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stays `want` for `d`.
fn stays(s: &Server, name: &str, want: &str, d: Duration, what: &str) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        assert_eq!(answer(s, name, None), vec![want.to_string()], "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn s1_http_failover_preemptive_and_not() {
    let port = target_port(&["127.0.0.11", "127.0.0.12"]);
    let dir = TempDir::new("s1");
    let mut p = Some(Target::start("127.0.0.11", port));
    let mut b = Some(Target::start("127.0.0.12", port));
    let pre = Server::start(&["--config", &example_on(&dir, "primary-backup.toml", port)]);
    let non = Server::start(&[
        "--config",
        &example_on(&dir, "primary-backup-nonpreemptive.toml", port),
    ]);
    let n = "www.example.test";
    for s in [&pre, &non] {
        until(s, n, None, &["127.0.0.11"], UP_BOUND, "step 1");
    }
    drop(p.take()); // the primary dies
    let took = until(
        &pre,
        n,
        None,
        &["127.0.0.12"],
        DOWN_BOUND,
        "step 2 preemptive",
    );
    until(
        &non,
        n,
        None,
        &["127.0.0.12"],
        DOWN_BOUND,
        "step 2 non-preemptive",
    );
    eprintln!("failover after the primary died: {took:?}");
    p = Some(Target::start("127.0.0.11", port)); // it comes back
    let back = until(
        &pre,
        n,
        None,
        &["127.0.0.11"],
        UP_BOUND,
        "step 3 preemptive",
    );
    eprintln!("failback after the primary returned: {back:?}");
    stays(
        &non,
        n,
        "127.0.0.12",
        Duration::from_secs(3),
        "step 3 non-preemptive stays",
    );
    drop(b.take()); // the backup dies
    until(
        &pre,
        n,
        None,
        &["127.0.0.11"],
        DOWN_BOUND,
        "step 4 preemptive",
    );
    until(
        &non,
        n,
        None,
        &["127.0.0.11"],
        DOWN_BOUND,
        "step 4 non-preemptive",
    );
    // Both down: the fallback answers every address.
    drop(p.take());
    until(
        &pre,
        n,
        None,
        &["127.0.0.11", "127.0.0.12"],
        DOWN_BOUND,
        "all down",
    );
    assert!(pre.count_log("state change") >= 4);
    assert!(pre.count_log("health check state") >= 3);
}

#[test]
fn s2_tcp_carrier_lines_row_by_row() {
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let port = target_port(&ips);
    let dir = TempDir::new("s2");
    let s = Server::start(&["--config", &example_on(&dir, "carrier-lines.toml", port)]);
    let mut targets: Vec<Option<Target>> =
        ips.iter().map(|ip| Some(Target::start(ip, port))).collect();
    let lines = [
        Some([192, 0, 2, 7]),
        Some([198, 51, 100, 7]),
        Some([203, 0, 113, 7]),
        None,
    ];
    let all: &[&str] = &ips;
    let rows: [([bool; 3], [&[&str]; 4]); 4] = [
        (
            [true, true, true],
            [
                &["127.0.0.21"],
                &["127.0.0.22"],
                &["127.0.0.23"],
                &["127.0.0.21"],
            ],
        ),
        (
            [false, true, true],
            [
                &["127.0.0.22"],
                &["127.0.0.22"],
                &["127.0.0.23"],
                &["127.0.0.22"],
            ],
        ),
        (
            [false, false, true],
            [
                &["127.0.0.23"],
                &["127.0.0.23"],
                &["127.0.0.23"],
                &["127.0.0.23"],
            ],
        ),
        ([false, false, false], [all, all, all, all]),
    ];
    for (up, want) in rows {
        for (i, &u) in up.iter().enumerate() {
            if !u {
                targets[i] = None;
            }
        }
        // The switch happens within the bound; the first line waits, the others follow.
        for (l, w) in lines.iter().zip(want) {
            until(
                &s,
                "app.example.test",
                *l,
                w,
                DOWN_BOUND,
                &format!("{up:?} {l:?}"),
            );
        }
    }
    targets[0] = Some(Target::start(ips[0], port));
    until(
        &s,
        "app.example.test",
        lines[0],
        &["127.0.0.21"],
        UP_BOUND,
        "mobile back",
    );
}

#[test]
fn s3_tcp_cdn_origins_row_by_row() {
    let port = target_port(&["127.0.0.31", "127.0.0.32", "127.0.0.33"]);
    let dir = TempDir::new("s3");
    let s = Server::start(&["--config", &example_on(&dir, "cdn-origins.toml", port)]);
    let n = "origin.example.test";
    let mut o1 = Some(Target::start("127.0.0.31", port));
    let mut o2 = Some(Target::start("127.0.0.32", port));
    let _o3 = Target::start("127.0.0.33", port);
    until(&s, n, None, &["127.0.0.31"], UP_BOUND, "all up");
    drop(o1.take());
    until(&s, n, None, &["127.0.0.32"], DOWN_BOUND, "origin-1 down");
    drop(o2.take());
    until(
        &s,
        n,
        None,
        &["127.0.0.33"],
        DOWN_BOUND,
        "origin-1 and 2 down",
    );
    o1 = Some(Target::start("127.0.0.31", port));
    until(&s, n, None, &["127.0.0.31"], UP_BOUND, "origin-1 back");
    assert!(o1.is_some() && o2.is_none());
}

/// A target failing 50% of its checks at random flips exactly as often as the thresholds
/// allow (2 failures to go down, 2 successes to come up), no more: the test replays the
/// target's own record of what it answered through the same rule.
#[test]
fn flapping_is_damped_by_thresholds() {
    let port = target_port(&["127.0.0.11", "127.0.0.12"]);
    let dir = TempDir::new("flapping");
    let t = Target::start_with("127.0.0.11", port, Some(0x9E37_79B9_7F4A_7C15));
    let _b = Target::start("127.0.0.12", port);
    let mut s = Server::start(&["--config", &example_on(&dir, "primary-backup.toml", port)]);
    std::thread::sleep(Duration::from_secs(10));
    s.stop();
    let served = t.served.lock().unwrap().clone();
    let changes = s.count_log("health check state address=Primary-Server-01");
    assert!(served.len() >= 8, "{} checks in 10 s", served.len());
    assert!(
        served.iter().filter(|&&x| x).count() >= 2 && served.iter().filter(|&&x| !x).count() >= 2
    );
    let allowed = state_changes(&served);
    // The last answer may still have been in flight when gtmd stopped.
    let allowed_before_last = state_changes(&served[..served.len() - 1]);
    assert!(
        changes == allowed || changes == allowed_before_last,
        "gtmd changed state {changes} times; the thresholds allow {allowed} for {served:?}"
    );
    assert!(
        allowed < served.len() / 2,
        "damped: {allowed} changes for {} checks",
        served.len()
    );
}

/// State changes the rule allows for a sequence of results: the first result decides, then
/// 2 consecutive failures take it down and 2 consecutive successes bring it up.
fn state_changes(results: &[bool]) -> usize {
    let mut state: Option<bool> = None;
    let (mut ok_run, mut fail_run, mut changes) = (0, 0, 0);
    for &ok in results {
        if ok {
            ok_run += 1;
            fail_run = 0;
        } else {
            fail_run += 1;
            ok_run = 0;
        }
        let next = match state {
            None => Some(ok),
            Some(true) if fail_run >= 2 => Some(false),
            Some(false) if ok_run >= 2 => Some(true),
            x => x,
        };
        if next != state {
            changes += 1;
        }
        state = next;
    }
    changes
}

/// The first round of checks finishes before gtmd serves: a primary that is down at
/// start-up is never answered, not even by the first query.
#[test]
fn first_round_before_ready() {
    let port = target_port(&["127.0.0.11", "127.0.0.12"]);
    let dir = TempDir::new("first-round");
    let _b = Target::start("127.0.0.12", port);
    // No target on 127.0.0.11: the primary is down from the start.
    let s = Server::start(&["--config", &example_on(&dir, "primary-backup.toml", port)]);
    s.wait_log("first round of health checks done", Duration::from_secs(1));
    assert_eq!(answer(&s, "www.example.test", None), vec!["127.0.0.12"]);
}

/// State changes reach the alert webhook as JSON, retried when the receiver fails.
#[test]
fn alerts_reach_the_webhook_with_retries() {
    let rx = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = rx.local_addr().unwrap();
    let got = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let g2 = got.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for c in rx.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let body = read_request(&mut c).map(|(_, b)| b).unwrap_or_default();
            n += 1;
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if n > 1 {
                g2.lock().unwrap().push(body);
            }
        }
    });
    let scratch = TempDir::new("alerts");
    let dir = scratch.path();
    let cfg = dir.join("weighted.toml");
    let text = std::fs::read_to_string(example("weighted.toml")).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[alerts]\nwebhook = \"http://{hook}/gtmd\"\nretries = 2\n"),
    )
    .unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let control = s.control_addr();
    let (status, resp) = http_auth(control, "PUT", "/v1/addresses/weighted-1/override", "down");
    assert_eq!(status, 200, "{resp}");
    let t0 = Instant::now();
    while got.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "no alert delivered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body: serde_json::Value = serde_json::from_str(&got.lock().unwrap()[0]).unwrap();
    assert_eq!(body["event"], "address");
    assert_eq!(body["name"], "weighted-1");
    assert_eq!(body["up"], false);
    assert_eq!(body["message"], "address weighted-1 is down");
    assert!(
        s.count_log("alert not delivered") >= 1,
        "the first attempt failed and was retried"
    );
    // Answers never waited for the webhook.
    assert_eq!(
        answer(&s, "weighted.example.test", None),
        vec!["127.0.0.52"]
    );
}

/// A host in a network namespace of our own, behind a veth pair; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn create() -> Option<Self> {
        let k = std::process::id() % 250 + 1;
        let name = format!("gtmd-t{}", std::process::id());
        let (vh, vn) = (format!("gth{k}"), format!("gtn{k}"));
        let host_ip = format!("10.213.{k}.2");
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Self {
            name: name.clone(),
            host_ip,
        };
        let ok = ip(&["link", "add", &vh, "type", "veth", "peer", "name", &vn])
            && ip(&["link", "set", &vn, "netns", &name])
            && ip(&["addr", "add", &format!("10.213.{k}.1/30"), "dev", &vh])
            && ip(&["link", "set", &vh, "up"])
            && ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("10.213.{k}.2/30"),
                "dev",
                &vn,
            ])
            && ip(&["-n", &name, "link", "set", &vn, "up"])
            && ip(&["-n", &name, "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    fn link(&self, up: bool) {
        let k = std::process::id() % 250 + 1;
        assert!(ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            &format!("gtn{k}"),
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the veth pair, and with it ours.
        ip(&["netns", "del", &self.name]);
    }
}

/// Ping checks (raw ICMP) against a host in a network namespace: its link goes down, the
/// answer moves to the backup; it comes back, the answer returns (preemptive).
#[test]
fn icmp_failover_with_a_host_in_a_namespace() {
    let Some(ns) = Netns::create() else {
        eprintln!("\n*** SKIPPED icmp_failover_with_a_host_in_a_namespace: cannot create network namespaces here (needs root and iproute2) ***\n");
        return;
    };
    let scratch = TempDir::new("icmp");
    let dir = scratch.path();
    let cfg = dir.join("ping.toml");
    let text = ping_failover("origin", "A", &ns.host_ip, "127.0.0.99");
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let n = "origin.example.test";
    until(&s, n, None, &[&ns.host_ip], UP_BOUND, "namespace host up");
    assert!(s.count_log("ping checks use a raw ICMP socket") >= 1);
    ns.link(false);
    let took = until(&s, n, None, &["127.0.0.99"], DOWN_BOUND, "link down");
    eprintln!("ICMP failover after the link went down: {took:?}");
    ns.link(true);
    until(
        &s,
        n,
        None,
        &[&ns.host_ip],
        UP_BOUND + Duration::from_secs(1),
        "link up again",
    );
    drop(ns); // the host disappears entirely
    until(
        &s,
        n,
        None,
        &["127.0.0.99"],
        DOWN_BOUND,
        "namespace deleted",
    );
}

/// Vantage points: four source addresses probe the primary; it is down only when the share
/// of failing vantage points reaches the failure rate (50%).
#[test]
fn vantage_points_and_failure_rate() {
    let port = target_port(&["127.0.0.11", "127.0.0.12"]);
    let p = Target::start("127.0.0.11", port);
    let _b = Target::start("127.0.0.12", port);
    let scratch = TempDir::new("vantage");
    let dir = scratch.path();
    let cfg = dir.join("pb.toml");
    let text = example_text("primary-backup.toml", port).replace(
        "up-after = 2",
        "up-after = 2\nsources = [\"127.0.0.1\", \"127.0.0.2\", \"127.0.0.3\", \"127.0.0.4\"]\nfailure-rate = 50",
    );
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let n = "www.example.test";
    until(
        &s,
        n,
        None,
        &["127.0.0.11"],
        UP_BOUND,
        "all vantage points see it up",
    );
    let ip = |x: &str| x.parse::<std::net::IpAddr>().unwrap();
    p.deny.lock().unwrap().push(ip("127.0.0.1"));
    stays(
        &s,
        n,
        "127.0.0.11",
        DOWN_BOUND,
        "one of four vantage points (25%) fails: still up",
    );
    p.deny.lock().unwrap().push(ip("127.0.0.2"));
    until(
        &s,
        n,
        None,
        &["127.0.0.12"],
        DOWN_BOUND,
        "two of four (50%) fail: down",
    );
    p.deny.lock().unwrap().clear();
    until(&s, n, None, &["127.0.0.11"], UP_BOUND, "all pass again");
    assert!(
        s.count_log("source=127.0.0.2") >= 2,
        "vantage point named in the log"
    );
}

/// HTTPS checks: SNI is sent, `tls-verify = false` accepts a self-signed certificate,
/// `tls-verify = true` rejects it (the system's roots do not know it).
#[test]
fn https_checks_sni_and_verification() {
    let (server_cfg, _) = self_signed_tls(&["health.example.test"]);
    let l = TcpListener::bind("127.0.0.45:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let snis = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = snis.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let cfg = server_cfg.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, c);
                let mut buf = [0u8; 2048];
                let Ok(n) = tls.read(&mut buf) else { return };
                let sni = tls.conn.server_name().unwrap_or("").to_string();
                seen.lock().unwrap().push(sni.clone());
                let ok = sni == "health.example.test" && buf[..n].starts_with(b"GET /health ");
                let status = if ok {
                    "200 OK"
                } else {
                    "421 Misdirected Request"
                };
                let _ = write!(
                    tls,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    let scratch = TempDir::new("https");
    let dir = scratch.path();
    let cfg = dir.join("https.toml");
    let mut text = String::from(
        "version = 1\n[[zone]]\nname = \"example.test.\"\nsoa = { mname = \"ns1\", rname = \"hostmaster\" }\n\
         ns = [\"ns1\"]\nrecords = [\"ns1 A 192.0.2.1\"]\n",
    );
    for (name, verify) in [("trusting", false), ("verifying", true)] {
        text.push_str(&format!(
            "[[health-check]]\nname = \"{name}\"\nprotocol = \"https\"\nport = {port}\npath = \"/health\"\n\
             sni = \"health.example.test\"\ntls-verify = {verify}\ninterval = 1\ntimeout = 1\n\
             [[address]]\nname = \"{name}-1\"\nvalue = \"127.0.0.45\"\nhealth-check = \"{name}\"\n\
             [[pool]]\nname = \"{name}\"\ntype = \"ipv4\"\naddresses = [\"{name}-1\"]\n\
             [[access-domain]]\nname = \"{name}.example.test.\"\ntype = \"A\"\npolicy = \"global-availability\"\n\
             pools = [\"{name}\"]\nfallback = \"nodata\"\n"
        ));
    }
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    s.wait_log("first round of health checks done", Duration::from_secs(3));
    assert_eq!(
        answer(&s, "trusting.example.test", None),
        vec!["127.0.0.45"],
        "self-signed accepted without verification"
    );
    assert!(
        answer(&s, "verifying.example.test", None).is_empty(),
        "self-signed rejected with verification: NODATA fallback"
    );
    assert!(
        snis.lock()
            .unwrap()
            .iter()
            .any(|n| n == "health.example.test"),
        "SNI sent"
    );
    let line = s.wait_log("address=verifying-1", Duration::from_secs(1));
    assert!(line.contains("up=false") && line.contains("tls:"), "{line}");
}

/// Probe results carry over a reload: a primary the prober found down stays down from the
/// first query the new configuration answers (no optimistic "up" until re-checked).
#[test]
fn probe_state_survives_reload() {
    let port = target_port(&["127.0.0.11", "127.0.0.12"]);
    let _b = Target::start("127.0.0.12", port);
    let scratch = TempDir::new("carry");
    let dir = scratch.path();
    let cfg = dir.join("pb.toml");
    let text = example_text("primary-backup.toml", port);
    std::fs::write(&cfg, &text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let n = "www.example.test";
    assert_eq!(
        answer(&s, n, None),
        vec!["127.0.0.12"],
        "primary down from the first round"
    );
    std::fs::write(&cfg, text.replace("ttl = 30", "ttl = 40")).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    let m = s.udp(&Q::new(n, A).build()).unwrap();
    assert_eq!(m.answer[0].ttl, 40, "new configuration serving");
    assert_eq!(
        m.answers(A),
        vec!["127.0.0.12"],
        "probe verdict carried over"
    );
    s.wait_log("prober reloaded", Duration::from_secs(2));
}

/// Half-open TCP checks (raw SYN): a listening port answers SYN-ACK (up), a closed one RST
/// (down); the target application never accepts a connection from them.
#[test]
fn half_open_syn_checks() {
    let scratch = TempDir::new("syn");
    let dir = scratch.path();
    let cfg = dir.join("syn.toml");
    let port = target_port(&["127.0.0.66", "127.0.0.67", "127.0.0.68"]);
    let text = example_text("cdn-origins.toml", port)
        .replace("protocol = \"tcp\"", "protocol = \"tcp\"\nhalf-open = true")
        .replace("127.0.0.31", "127.0.0.66")
        .replace("127.0.0.32", "127.0.0.67")
        .replace("127.0.0.33", "127.0.0.68");
    std::fs::write(&cfg, text).unwrap();
    let first = Target::start("127.0.0.66", port);
    let _second = Target::start("127.0.0.67", port);
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    if s.count_log("half-open TCP checks use a raw socket") == 0 {
        eprintln!("\n*** SKIPPED half_open_syn_checks: no CAP_NET_RAW here ***\n");
        return;
    }
    let n = "origin.example.test";
    until(&s, n, None, &["127.0.0.66"], UP_BOUND, "SYN-ACK: up");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        first.accepted.load(Ordering::Relaxed),
        0,
        "no connection reached the application"
    );
    drop(first);
    until(&s, n, None, &["127.0.0.67"], DOWN_BOUND, "RST: down");
    assert!(s.count_log("connection refused (RST)") >= 1);
}

/// A scratch nftables table, deleted on drop.
struct NftTable(String);

impl NftTable {
    fn create(rule: &str) -> Option<Self> {
        let name = format!("gtmd_test_{}", std::process::id());
        let nft = |args: &[&str]| {
            std::process::Command::new("nft")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !nft(&["add", "table", "inet", &name]) {
            return None;
        }
        let t = Self(name.clone());
        let ok = nft(&[
            "add",
            "chain",
            "inet",
            &name,
            "out",
            "{ type filter hook output priority 0; }",
        ]) && nft(&["add", "rule", "inet", &name, "out", rule]);
        ok.then_some(t)
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .status();
    }
}

/// A ping-checked address (`local`) with a backup (unchecked) in one sequential pool,
/// answered by `NAME.example.test.` of type `rtype` under global availability.
fn ping_failover(name: &str, rtype: &str, local: &str, backup: &str) -> String {
    let family = if rtype == "AAAA" { "ipv6" } else { "ipv4" };
    format!(
        r#"version = 1
[[zone]]
name = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster" }}
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[health-check]]
name = "ping"
protocol = "ping"
packets = 2
max-loss = 50
interval = 1
timeout = 0.5
down-after = 2
up-after = 2
[[address]]
name = "local"
value = "{local}"
health-check = "ping"
[[address]]
name = "backup"
value = "{backup}"
[[pool]]
name = "pool"
type = "{family}"
addresses = ["local", "backup"]
policy = "sequential"
[[access-domain]]
name = "{name}.example.test."
type = "{rtype}"
policy = "global-availability"
pools = ["pool"]
"#
    )
}

/// IPv6 ping checks: ::1 answers; with its echo requests dropped by an nftables rule the
/// address goes down and the AAAA answer moves to the backup.
#[test]
fn icmpv6_ping_checks() {
    let scratch = TempDir::new("icmp6");
    let dir = scratch.path();
    let cfg = dir.join("v6.toml");
    let text = ping_failover("six", "AAAA", "::1", "2001:db8::99");
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let ask = || {
        s.udp(&Q::new("six.example.test", 28).build())
            .unwrap()
            .answers(28)
    };
    assert_eq!(ask(), vec!["::1"], "::1 answers pings");
    assert!(s.count_log("family=\"IPv6\"") + s.count_log("family=IPv6") >= 1);
    let Some(_drop) = NftTable::create("ip6 daddr ::1 icmpv6 type echo-request drop") else {
        eprintln!("\n*** SKIPPED the down half of icmpv6_ping_checks: nftables unavailable ***\n");
        return;
    };
    let t0 = Instant::now();
    while ask() != vec!["2001:db8::99"] {
        assert!(t0.elapsed() < DOWN_BOUND, "still {:?}", ask());
        std::thread::sleep(Duration::from_millis(20));
    }
}
