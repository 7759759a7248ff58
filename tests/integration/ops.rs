//! Running gtmd as an operator does: what the embedded default shows a newcomer, state
//! that survives a restart (the state file), alert rules posting to HTTPS webhooks, and
//! the systemd notifications (readiness, status, watchdog).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const A: u16 = 1;

fn ask(s: &Server, name: &str, subnet: Option<[u8; 4]>) -> (Vec<String>, Msg) {
    let mut q = Q::new(name, A).edns(1232);
    if let Some(a) = subnet {
        q = q.ecs(1, 32, 0, &a);
    }
    let m = s.udp(&q.build()).expect("answer");
    (m.answers(A), m)
}

/// Asks until the answer is `want` (bounded); panics with the last answer otherwise.
fn until(s: &Server, name: &str, want: &[&str], within: Duration) {
    let t0 = Instant::now();
    loop {
        let (got, _) = ask(s, name, None);
        if got == want {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{name}: {got:?}, not {want:?}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port free on `ip` now.
fn port_on(ip: &str) -> u16 {
    loop {
        let p = free_port();
        if TcpListener::bind((ip, p)).is_ok() {
            return p;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The embedded default

/// `gtmd run` without a config: app.example.test answers by the asker's line (loopback vs
/// an ECS subnet of the docs line) and by health (a TCP check of 127.0.0.21:8000 that the
/// test makes pass, then fail).
#[test]
fn the_embedded_default_schedules_by_line_and_health() {
    let s = Server::start(&[]);
    assert_eq!(
        ask(&s, "www.example.test", None).0.len(),
        2,
        "the static zone"
    );
    // Nothing listens on 127.0.0.21-22:8000 (the test holds no listener yet): the loopback
    // line's pool is down, so loopback askers get the default line's Standby.
    let (got, _) = ask(&s, "app.example.test", None);
    assert_eq!(got, vec!["192.0.2.41"]);
    let (got, m) = ask(&s, "app.example.test", Some([203, 0, 113, 7]));
    assert_eq!(got, vec!["192.0.2.31"], "docs line");
    let ecs = m.option(8).expect("ECS echoed");
    assert_eq!(ecs[3], 24, "scope: the docs line's /24");
    let (got, _) = ask(&s, "app.example.test", Some([198, 51, 100, 7]));
    assert_eq!(got, vec!["192.0.2.41"], "any other line: default");
    let target = TcpListener::bind("127.0.0.21:8000")
        .expect("127.0.0.21:8000 must be free for this test (the default's health check)");
    until(
        &s,
        "app.example.test",
        &["127.0.0.21"],
        Duration::from_secs(6),
    );
    drop(target);
    until(
        &s,
        "app.example.test",
        &["192.0.2.41"],
        Duration::from_secs(6),
    );
    let c = s.control_addr();
    let (st, body) = http(c, "GET", "/v1/state", &[], "");
    assert_eq!(st, 200);
    assert!(body.contains("\"Local-01\""), "{body}");
}

// ---------------------------------------------------------------------------------------
// State across a restart

fn state_doc(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A non-preemptive access domain that left its primary stays on the backup across a
/// restart, though the primary is healthy again: the active pool is in the state file.
#[test]
fn a_restart_keeps_the_non_preemptive_pool() {
    let dir = TempDir::new("ops-restart");
    let state = dir.join("state.json");
    let cfg = dir.join("pb.toml");
    let text = std::fs::read_to_string(example("primary-backup-nonpreemptive.toml"))
        .unwrap()
        .replace("health-check = \"http-health\"\n", "")
        .replace(
            "listen = \"127.0.0.1:5380\"",
            "listen = \"127.0.0.1:5380\"\nstate-file = \"state.json\"",
        );
    std::fs::write(&cfg, &text).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    {
        let mut s = Server::start(&args);
        let c = s.control_addr();
        assert_eq!(ask(&s, "www.example.test", None).0, vec!["127.0.0.11"]);
        let pin = "/v1/addresses/Primary-Server-01/override";
        assert_eq!(http_auth(c, "PUT", pin, "down").0, 200);
        assert_eq!(ask(&s, "www.example.test", None).0, vec!["127.0.0.12"]);
        assert_eq!(http_auth(c, "DELETE", pin, "").0, 200);
        assert_eq!(
            ask(&s, "www.example.test", None).0,
            vec!["127.0.0.12"],
            "non-preemptive: stays on the backup"
        );
        let (_, st) = s.stop();
        assert!(st.success());
    }
    let saved = state_doc(&state);
    let active = saved["active_pools"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{saved}");
    assert_eq!(active[0]["access_domain"], "www.example.test. A");
    assert_eq!(active[0]["pool"], "Backup-DC");
    assert_eq!(saved["overrides"], serde_json::json!({}));
    let s = Server::start(&args);
    s.wait_log("health and active pools restored", Duration::from_secs(2));
    assert_eq!(
        ask(&s, "www.example.test", None).0,
        vec!["127.0.0.12"],
        "after the restart: still the backup"
    );
    let c = s.control_addr();
    let (_, body) = http(c, "GET", "/v1/state", &[], "");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["access_domains"][0]["routes"][0]["active"][0],
        "Backup-DC"
    );
    // It is the route's history, not a pin: the backup failing moves it back.
    let pin = "/v1/addresses/Backup-Server-01/override";
    assert_eq!(http_auth(c, "PUT", pin, "down").0, 200);
    assert_eq!(ask(&s, "www.example.test", None).0, vec!["127.0.0.11"]);
}

/// The configuration of the down-after-restart test: a primary with an HTTP check on
/// 127.0.0.11:`port` (30 s apart, 8 s timeout) and an unchecked backup; served before the
/// first round of checks.
fn checked_primary(port: u16, max_age: &str) -> String {
    format!(
        r#"version = 1
[server]
probe-before-ready = false
[control]
state-file = "state.json"
{max_age}
[[zone]]
name = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster" }}
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[health-check]]
name = "http"
protocol = "http"
port = {port}
path = "/health"
interval = 30
timeout = 8
[[address]]
name = "Primary"
value = "127.0.0.11"
health-check = "http"
[[address]]
name = "Backup"
value = "127.0.0.12"
[[pool]]
name = "Primary-DC"
type = "ipv4"
addresses = ["Primary"]
[[pool]]
name = "Backup-DC"
type = "ipv4"
addresses = ["Backup"]
[[access-domain]]
name = "www.example.test."
type = "A"
policy = "global-availability"
pools = ["Primary-DC", "Backup-DC"]
"#
    )
}

/// An address the prober found down is written to the state file while gtmd runs, and
/// after a restart stays down until the prober's first verdict (here 8 s away: its target
/// accepts connections and never answers); state older than `state-max-age` is ignored.
#[test]
fn a_restart_keeps_a_down_address_down_until_probed() {
    let dir = TempDir::new("ops-down");
    let state = dir.join("state.json");
    let cfg = dir.join("down.toml");
    let port = port_on("127.0.0.11");
    std::fs::write(&cfg, checked_primary(port, "")).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    {
        // Nothing listens: the first check fails at once.
        let mut s = Server::start(&args);
        until(
            &s,
            "www.example.test",
            &["127.0.0.12"],
            Duration::from_secs(3),
        );
        let t0 = Instant::now();
        loop {
            // Written on change (debounced), not only at shutdown.
            if state.exists() && state_doc(&state)["health"]["Primary"] == false {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "state file not written"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s.stop();
    }
    let doc = state_doc(&state);
    assert_eq!(doc["health"]["Backup"], true);
    assert!(doc["saved_unix_ms"].as_u64().unwrap() > 0);
    // A target that accepts and never answers: the first verdict takes 8 s.
    let _hanging = TcpListener::bind(("127.0.0.11", port)).unwrap();
    {
        let mut s = Server::start(&args);
        assert_eq!(
            ask(&s, "www.example.test", None).0,
            vec!["127.0.0.12"],
            "the primary is still down after the restart, before any check ended"
        );
        s.wait_log("health and active pools restored", Duration::from_secs(1));
        let (_, body) = http(s.control_addr(), "GET", "/v1/state", &[], "");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["addresses"][0]["probe"], "down", "{body}");
        s.stop();
    }
    // The same state, but older than state-max-age: not restored, up until checked.
    std::fs::write(&cfg, checked_primary(port, "state-max-age = 1")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let s = Server::start(&args);
    s.wait_log("older than control.state-max-age", Duration::from_secs(1));
    assert_eq!(ask(&s, "www.example.test", None).0, vec!["127.0.0.11"]);
}

// ---------------------------------------------------------------------------------------
// Alerts

/// An HTTPS receiver on 127.0.0.1 with a self-signed certificate: every request's path and
/// JSON body, in arrival order.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Receiver {
    fn start(dir: &TempDir) -> (Self, std::path::PathBuf) {
        let (server_cfg, pem) = self_signed_tls(&["127.0.0.1", "localhost"]);
        let ca = dir.write("hooks-ca.pem", &pem);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = got.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let conn = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, c);
                let Some((path, body)) = read_request(&mut tls) else {
                    continue;
                };
                let _ = write!(
                    tls,
                    "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let doc = serde_json::from_str(&body).unwrap_or_default();
                g2.lock().unwrap().push((path, doc));
            }
        });
        (Self { port, got }, ca)
    }

    /// The bodies posted to `path` so far.
    fn at(&self, path: &str) -> Vec<serde_json::Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Waits until `path` got `n` posts.
    fn wait(&self, path: &str, n: usize) -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{path}: {} posts, not {n}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn alerts_config(port: u16, ca: &std::path::Path) -> String {
    format!(
        r#"version = 1
[server]
identity = "edge-test-7"
[[zone]]
name = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster" }}
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[address]]
name = "P1"
value = "127.0.0.11"
[[address]]
name = "B1"
value = "127.0.0.12"
[[address]]
name = "O1"
value = "127.0.0.13"
[[pool]]
name = "Primary"
type = "ipv4"
addresses = ["P1"]
[[pool]]
name = "Backup"
type = "ipv4"
addresses = ["B1"]
[[pool]]
name = "Other"
type = "ipv4"
addresses = ["O1"]
[[access-domain]]
name = "www.example.test."
type = "A"
policy = "global-availability"
pools = ["Primary", "Backup"]
[[access-domain]]
name = "other.example.test."
type = "A"
policy = "global-availability"
pools = ["Other"]
[alerts]
ca-file = "{ca}"
retries = 1
[[alerts.rule]]
name = "www-oncall"
webhook = "https://127.0.0.1:{port}/www"
access-domains = ["www.example.test."]
events = ["address-down", "pool-switch"]
[[alerts.rule]]
name = "other-team"
webhook = "https://127.0.0.1:{port}/other"
pools = ["Other"]
[[alerts.rule]]
name = "recoveries"
webhook = "https://127.0.0.1:{port}/ups"
events = ["address-up"]
"#,
        ca = ca.display()
    )
}

/// Alert rules send each event only to the webhooks whose rule selects it (kind, access
/// domain, pool), over HTTPS verified with `ca-file`; every payload names the edge and
/// the configuration generation.
#[test]
fn alert_rules_route_events_to_https_webhooks() {
    let dir = TempDir::new("ops-alerts");
    let (hooks, ca) = Receiver::start(&dir);
    let cfg = dir.join("alerts.toml");
    std::fs::write(&cfg, alerts_config(hooks.port, &ca)).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let c = s.control_addr();
    assert_eq!(
        http_auth(c, "PUT", "/v1/addresses/P1/override", "down").0,
        200
    );
    assert_eq!(
        http_auth(c, "PUT", "/v1/addresses/P1/override", "up").0,
        200
    );
    // The up event is queued after every event of the down; once it is in, the others
    // have been posted (one sender, in order).
    let ups = hooks.wait("/ups", 1);
    assert_eq!(ups.len(), 1, "{ups:?}");
    assert_eq!(ups[0]["event"], "address");
    assert_eq!(ups[0]["name"], "P1");
    assert_eq!(ups[0]["up"], true);
    assert_eq!(ups[0]["rules"], serde_json::json!(["recoveries"]));
    let www = hooks.wait("/www", 3);
    let kinds: Vec<String> = www
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d["event"],
                d["pool"]
                    .as_str()
                    .unwrap_or(d["name"].as_str().unwrap_or(""))
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "\"address\" P1",
            "\"active_pool\" Backup",
            "\"active_pool\" Primary"
        ],
        "address-down and both switches; no pool events, no address-up"
    );
    assert_eq!(www[0]["up"], false);
    assert_eq!(www[1]["from"], "Primary");
    assert_eq!(www[1]["access_domain"], "www.example.test. A");
    for d in www.iter().chain(&ups) {
        assert_eq!(d["identity"], "edge-test-7", "{d}");
        assert_eq!(d["generation"], 1, "{d}");
    }
    assert!(
        hooks.at("/other").is_empty(),
        "no event concerned the Other pool"
    );
    // A reload: generation 2 in what follows; the Other pool's rule gets its events.
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    assert_eq!(
        http_auth(c, "PUT", "/v1/addresses/O1/override", "down").0,
        200
    );
    let other = hooks.wait("/other", 3);
    let events: Vec<&str> = other.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, vec!["address", "pool", "active_pool"]);
    for d in &other {
        assert_eq!(d["generation"], 2, "{d}");
        assert_eq!(d["rules"], serde_json::json!(["other-team"]));
    }
    assert_eq!(hooks.at("/www").len(), 3, "nothing more for www");
    assert_eq!(hooks.at("/ups").len(), 1);
}

/// A webhook whose certificate the configured roots do not know gets nothing: delivery
/// fails verification (and says so), it is not sent in the clear.
#[test]
fn an_unknown_webhook_certificate_is_refused() {
    let dir = TempDir::new("ops-alerts-ca");
    let (hooks, _ca) = Receiver::start(&dir);
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let wrong = dir.write("wrong-ca.pem", &other.cert.pem());
    let cfg = dir.join("alerts.toml");
    std::fs::write(&cfg, alerts_config(hooks.port, &wrong)).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let c = s.control_addr();
    assert_eq!(
        http_auth(c, "PUT", "/v1/addresses/P1/override", "down").0,
        200
    );
    let line = s.wait_log("alert dropped after 2 attempts", Duration::from_secs(5));
    assert!(line.contains("certificate"), "{line}");
    assert!(hooks.at("/www").is_empty());
}

// ---------------------------------------------------------------------------------------
// systemd

/// Every datagram `sock` receives within `d`.
fn datagrams(sock: &UnixDatagram, d: Duration) -> Vec<String> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < d {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    out
}

/// `Type=notify` as systemd sees it: READY=1 then a STATUS line, WATCHDOG=1 every half
/// WatchdogSec while the shards turn, RELOADING=1 / READY=1 and a new STATUS on SIGHUP,
/// STOPPING=1 at the end; no watchdog pings when WATCHDOG_PID names another process.
#[test]
fn systemd_notifications_and_watchdog() {
    let dir = TempDir::new("ops-notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("default-config")
        .output()
        .unwrap();
    let cfg = dir.join("default.toml");
    std::fs::write(&cfg, &out.stdout).unwrap();
    let path = sock_path.to_str().unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let env = [("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "1000000")];
    let mut s = Server::start_env(&args, &env);
    let got = datagrams(&sock, Duration::from_millis(2200));
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    assert_eq!(
        got.get(1).map(String::as_str),
        Some("STATUS=serving 1 zones, 1 access domains; generation 1; last reload none"),
        "{got:?}"
    );
    let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((3..=7).contains(&pings), "every 0.5 s: {got:?}");
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    let got = datagrams(&sock, Duration::from_millis(600));
    let got: Vec<String> = got.into_iter().filter(|m| m != "WATCHDOG=1").collect();
    let text = got.join("\n");
    assert!(text.contains("RELOADING=1\nREADY=1\nSTATUS="), "{got:?}");
    assert!(text.contains("generation 2; last reload ok at "), "{got:?}");
    s.stop();
    let got = datagrams(&sock, Duration::from_millis(100));
    assert!(got.contains(&"STOPPING=1".to_string()), "{got:?}");
    // WATCHDOG_PID of another process: the watchdog is not ours.
    let env = [
        ("NOTIFY_SOCKET", path),
        ("WATCHDOG_USEC", "1000000"),
        ("WATCHDOG_PID", "1"),
    ];
    let _s = Server::start_env(&args, &env);
    let got = datagrams(&sock, Duration::from_millis(1500));
    assert!(got.contains(&"READY=1".to_string()), "{got:?}");
    assert!(!got.contains(&"WATCHDOG=1".to_string()), "{got:?}");
}

/// The unit file passes `systemd-analyze verify` (with this build's binary in its paths)
/// and keeps the exposure `systemd-analyze security` gives it at 1.6 or lower.
#[test]
fn the_unit_file_verifies_and_stays_hardened() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(analyze) = analyze else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/gtmd.service");
    let text = std::fs::read_to_string(unit)
        .unwrap()
        .replace("/usr/local/sbin/gtmd", BIN);
    let dir = TempDir::new("ops-unit");
    let path = dir.write("gtmd.service", &text);
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    let out = std::process::Command::new(analyze)
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for gtmd.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 1.6, "exposure {level}: {text}");
}
