//! The rollout's edge cases against one real nats-server: a CLI host whose clock is off
//! (libfaketime), a plain publish racing a canary (the publisher held at a test pause
//! between its look and its write), a write whose acknowledgement is lost, a bundle the
//! engine cannot hand out for a while or holds damaged, an edge fetching for long, a pin
//! of an edge long gone, a hand-written canary, and an engine that does not answer at all.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::fleet::{
    edge_file, expect, nats_server, publish, published, start_edge, text, wait_www, www, Nats,
};
use crate::harness::nats::{kv_get, kv_put, with_jetstream};
use crate::harness::{Server, TempDir, BIN};

/// A NATS server in a directory of its own, and its URL; `None` (the test is skipped)
/// without a `nats-server` binary.
fn engine(what: &str) -> Option<(TempDir, Nats, String)> {
    let bin = nats_server()?;
    let dir = TempDir::new(what);
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
    Some((dir, nats, url))
}

/// `gtmd ARGS... --nats URL` (RUST_LOG=warn), under `wrapper` when given.
fn gtmd(wrapper: &[&str], args: &[&str], nats: &str) -> Output {
    let (cmd, pre) = match wrapper.split_first() {
        Some((w, rest)) => (*w, rest.iter().chain([&BIN]).copied().collect::<Vec<_>>()),
        None => (BIN, Vec::new()),
    };
    Command::new(cmd)
        .args(pre)
        .args(args)
        .args(["--nats", nats])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gtmd")
}

/// `gtmd ARGS... --nats URL` with the environment `env` added.
fn gtmd_env(args: &[&str], nats: &str, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--nats", nats])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run gtmd")
}

/// A child process killed (SIGKILL) and reaped when dropped, should a test fail before
/// it ends: no process is left behind.
struct Reaped(Option<Child>);

impl Reaped {
    /// Waits for it to end; its output.
    fn output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until a command at a test pause (`GTMD_TEST_PAUSE=STEP:GATE`) got there.
fn wait_paused(gate: &Path, limit: Duration) {
    let waiting = PathBuf::from(format!("{}.waiting", gate.display()));
    let t0 = Instant::now();
    while !waiting.exists() {
        assert!(
            t0.elapsed() < limit,
            "never reached the test pause {gate:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `fleet` of `GET /v1/status`.
fn fleet_status(s: &Server) -> serde_json::Value {
    let (_, body) = crate::harness::http(s.control_addr(), "GET", "/v1/status", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["fleet"].clone()
}

/// `faketime` (Debian's faketime package, which tools/test installs); `None` only when it
/// is missing and this is not root (then the test says so and passes).
fn faketime() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(p) = std::env::split_paths(&path)
        .map(|d| d.join("faketime"))
        .find(|p| p.is_file())
    {
        return Some(p);
    }
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    assert!(!root, "faketime is not installed (tools/test installs it)");
    eprintln!("fleet: SKIPPED: faketime is not installed and this is not root");
    None
}

/// Edges `names`, each connected.
fn edges_on(dir: &TempDir, nats: &Nats, names: &[&str]) -> Vec<Server> {
    let edges: Vec<Server> = names
        .iter()
        .map(|n| start_edge(&edge_file(dir, n, &nats.url())))
        .collect();
    for e in &edges {
        e.wait_log("fleet: connected to the engine", Duration::from_secs(15));
    }
    edges
}

/// Whether a report is fresh is the engine's business: a CLI host two hours ahead (or
/// behind) still sees the edges that just reported, waits for them and promotes. The
/// regression is the +2h publish (with the host's clock, every report looks two hours
/// old: nobody to wait for); the -2h promote passes with either clock (reports look two
/// hours ahead, hence fresh), kept for the symmetry.
#[test]
fn a_skewed_cli_clock_still_sees_fresh_edges() {
    let Some(bin) = nats_server() else { return };
    let Some(faketime) = faketime() else { return };
    let faketime = faketime.to_str().unwrap();
    let dir = TempDir::new("fleet-skew");
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
    let e = edges_on(&dir, &nats, &["e1", "e2"]);
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 20),
        0,
        &["e1: applied epoch 1", "e2: applied epoch 1"],
    );
    let ahead = [faketime, "-f", "+2h"];
    let cfg = published(&dir, "192.0.2.52", "");
    let cfg = cfg.to_str().unwrap();
    expect(
        &gtmd(
            &ahead,
            &["publish", "--config", cfg, "--canary", "e1", "--wait", "20"],
            &url,
        ),
        0,
        &[
            "published epoch 2 as a canary for e1",
            "e1: applied epoch 2",
            "e2: not in the canary, serving epoch 1",
        ],
    );
    let behind = [faketime, "-f", "-2h"];
    expect(
        &gtmd(&behind, &["promote", "--wait", "20"], &url),
        0,
        &["promoted epoch 2", "e2: applied epoch 2"],
    );
    for s in &e {
        assert_eq!(www(s), ["192.0.2.52"]);
    }
}

/// A zone file of `mb` MiB (comments after the records): a bundle that takes a while to
/// upload.
fn big_published(dir: &TempDir, www: &str, mb: usize) -> PathBuf {
    let cfg = published(dir, www, "");
    let zone = dir.join("pub/zones/fleet.zone");
    let mut text = std::fs::read_to_string(&zone).unwrap();
    let line = format!("; {}\n", "x".repeat(125));
    text.push_str(&line.repeat(mb * 8192));
    std::fs::write(&zone, text).unwrap();
    cfg
}

/// A TCP proxy to `to` on loopback whose client-to-server direction carries at most
/// `rate` bytes a second (a slow uplink); it stops accepting when dropped, and each
/// connection ends when either side closes it.
struct SlowLink {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl SlowLink {
    fn start(to: std::net::SocketAddr, rate: usize) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = std::net::TcpStream::connect(to).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server, rate));
                std::thread::spawn(move || pipe(s2, c2, usize::MAX));
            }
        });
        Self {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to`, at most `rate` bytes a second, until either fails or ends.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream, rate: usize) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 16 << 10];
    let t0 = Instant::now();
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if rate != usize::MAX {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// A bundle that takes several times --timeout to upload (a slow uplink) uploads all the
/// same: the limit is on the engine's silence (no chunk acknowledged for that long), not
/// on the upload's length.
#[test]
fn a_large_bundle_uploads_past_the_timeout() {
    let Some((dir, _nats, url)) = engine("fleet-large") else {
        return;
    };
    let to = url.strip_prefix("nats://").unwrap().parse().unwrap();
    // 16 MiB at 2 MiB/s: 8 s, with --timeout 2.
    let link = SlowLink::start(to, 2 << 20);
    let big = big_published(&dir, "192.0.2.52", 16);
    let args = [
        "publish",
        "--config",
        big.to_str().unwrap(),
        "--timeout",
        "2",
        "--wait",
        "0",
    ];
    let slow_url = format!("nats://{}", link.addr);
    let t0 = Instant::now();
    let said = expect(&gtmd(&[], &args, &slow_url), 0, &["published epoch 1 "]);
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(6), "not slow enough: {took:?}");
    assert!(!said.contains("trying again"), "{said}");
    assert_eq!(current_epoch(&url), 1);
    // `abort` uploads current's bundle again, as epoch 3: as slow, as fine.
    let canary = published(&dir, "192.0.2.53", "");
    let args = ["publish", "--config", canary.to_str().unwrap()];
    let args = [&args[..], &["--canary", "e1", "--wait", "0"]].concat();
    expect(
        &gtmd(&[], &args, &url),
        0,
        &["published epoch 2 as a canary"],
    );
    let t0 = Instant::now();
    let abort = ["abort", "--timeout", "2", "--wait", "0"];
    let said = expect(
        &gtmd(&[], &abort, &slow_url),
        0,
        &["aborted the canary (epoch 2): epoch 3 carries epoch 1's configuration"],
    );
    assert!(t0.elapsed() >= Duration::from_secs(6), "{said}");
    assert_eq!(current_epoch(&url), 3);
}

/// `current`'s epoch in the engine (0: none).
fn current_epoch(url: &str) -> u64 {
    kv_get(url, "gtmd_config", "current")
        .map(|v| {
            serde_json::from_slice::<serde_json::Value>(&v).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .unwrap_or(0)
}

/// A plain publish held (a test pause) between reading the bucket and pointing `current`
/// at its epoch, while a canary is published: let go, its compare-and-set loses (said),
/// it reads the bucket again, finds the canary and publishes nothing, rather than moving
/// `current` beside it.
#[test]
fn a_plain_publish_cannot_slip_in_beside_a_canary() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-race");
    let other = TempDir::new("fleet-race-canary");
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
    let e = edges_on(&dir, &nats, &["e1"]);
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 20),
        0,
        &["e1: applied epoch 1"],
    );
    let plain = published(&dir, "192.0.2.52", "");
    let gate = dir.join("gate");
    let child = Command::new(BIN)
        .args([
            "publish",
            "--config",
            plain.to_str().unwrap(),
            "--wait",
            "0",
        ])
        .args(["--nats", &url])
        .env("GTMD_TEST_PAUSE", format!("pointer:{}", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Reaped(Some(child));
    // Past its look at the canary (none), its bundle uploaded, not yet at its write.
    wait_paused(&gate, Duration::from_secs(60));
    assert_eq!(current_epoch(&url), 1);
    let canary = published(&other, "192.0.2.53", "");
    let said = expect(
        &gtmd(
            &[],
            &[
                "publish",
                "--config",
                canary.to_str().unwrap(),
                "--canary",
                "e1",
                "--wait",
                "0",
            ],
            &url,
        ),
        0,
        &["published epoch 2 as a canary for e1"],
    );
    std::fs::write(&gate, b"").unwrap();
    let out = child.output();
    let told = expect(
        &out,
        1,
        &[
            "another command wrote gtmd_config first (compare-and-set lost): reading it again",
            "a canary is out",
            "nothing was published",
        ],
    );
    // The compare-and-set decided it, not a retry after an engine error.
    assert!(!told.contains("trying again"), "{told}");
    assert_eq!(current_epoch(&url), 1, "{said}\n{told}");
    // The canary is intact: promoted, it reaches the edge.
    expect(
        &gtmd(&[], &["promote", "--wait", "20"], &url),
        0,
        &["promoted epoch 2 (the canary for e1) to current"],
    );
    wait_www(&e[0], "192.0.2.53");
}

/// A write of the pointer that the engine took but whose acknowledgement was lost (a
/// leader election; here a test hook) is found on the next try: the canary is reported
/// published (not taken for another's), a plain publish writes no second epoch.
#[test]
fn a_pointer_whose_acknowledgement_was_lost_is_published_once() {
    let Some((dir, _nats, url)) = engine("fleet-lost-ack") else {
        return;
    };
    let lose = [("GTMD_TEST_LOSE_ACK", "pointer")];
    let cfg = published(&dir, "192.0.2.51", "");
    let plain = ["publish", "--config", cfg.to_str().unwrap(), "--wait", "0"];
    let said = expect(
        &gtmd_env(&plain, &url, &lose),
        0,
        &[
            "acknowledgement lost (GTMD_TEST_LOSE_ACK): trying again in 2 s",
            "the pointer to epoch 1 was written, its acknowledgement lost",
            "published epoch 1 ",
        ],
    );
    assert_eq!(current_epoch(&url), 1, "{said}");
    let cfg = published(&dir, "192.0.2.52", "");
    let canary = [
        "publish",
        "--config",
        cfg.to_str().unwrap(),
        "--canary",
        "e1",
        "--wait",
        "0",
    ];
    let said = expect(
        &gtmd_env(&canary, &url, &lose),
        0,
        &[
            "the pointer to epoch 2 was written, its acknowledgement lost",
            "published epoch 2 as a canary for e1",
        ],
    );
    assert!(!said.contains("a canary is out"), "{said}");
    let c: serde_json::Value =
        serde_json::from_slice(&kv_get(&url, "gtmd_config", "canary").unwrap()).unwrap();
    assert_eq!(c["epoch"], 2, "{c}");
    assert_eq!(current_epoch(&url), 1);
    expect(&gtmd(&[], &["abort", "--wait", "0"], &url), 0, &["epoch 3"]);
    // Landed, then another publish moved `current` on before the look: still found (by
    // its place in the bucket's stream), not published again above the other.
    let gate = dir.join("gate");
    let cfg = published(&dir, "192.0.2.54", "");
    let child = Command::new(BIN)
        .args(["publish", "--config", cfg.to_str().unwrap(), "--wait", "0"])
        .args(["--nats", &url])
        .env("GTMD_TEST_LOSE_ACK", "pointer")
        .env("GTMD_TEST_PAUSE", format!("landed:{}", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Reaped(Some(child));
    wait_paused(&gate, Duration::from_secs(30));
    assert_eq!(current_epoch(&url), 4);
    let other = TempDir::new("fleet-lost-ack-other");
    expect(
        &publish(&published(&other, "192.0.2.55", ""), &url, 0),
        0,
        &["published epoch 5 "],
    );
    std::fs::write(&gate, b"").unwrap();
    expect(
        &child.output(),
        0,
        &[
            "the pointer to epoch 4 was written, its acknowledgement lost",
            "published epoch 4 ",
        ],
    );
    assert_eq!(current_epoch(&url), 5);
}

/// Removing old bundles comes after the epoch is out and is bounded on its own: an engine
/// that stops answering then (a test pause) leaves them, and the publish is reported
/// (exit 0), not given up on.
#[test]
fn a_publish_is_reported_though_pruning_times_out() {
    let Some((dir, _nats, url)) = engine("fleet-prune-timeout") else {
        return;
    };
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 0),
        0,
        &["published epoch 1 "],
    );
    let gate = dir.join("gate");
    let cfg = published(&dir, "192.0.2.52", "");
    let args = [
        "publish",
        "--config",
        cfg.to_str().unwrap(),
        "--keep",
        "1",
        "--timeout",
        "2",
        "--wait",
        "0",
    ];
    let pause = format!("prune:{}", gate.display());
    let t0 = Instant::now();
    let said = expect(
        &gtmd_env(&args, &url, &[("GTMD_TEST_PAUSE", &pause)]),
        0,
        &[
            "published epoch 2 ",
            "no old bundle removed: the engine did not answer in 2 s",
        ],
    );
    assert!(t0.elapsed() >= Duration::from_secs(2), "{said}");
    assert!(!said.contains("gave up"), "{said}");
    assert_eq!(current_epoch(&url), 2);
}

/// An edge fetching a bundle for long (held at a test pause) keeps reporting every
/// heartbeat: a publisher waiting for it does not drop it as gone.
#[test]
fn an_edge_reports_while_it_fetches() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-fetch-beat");
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
    let gate = dir.join("gate");
    let pause = format!("fetch:{}", gate.display());
    let file = edge_file(&dir, "e1", &url);
    let e = Server::start_env(
        &["--config", file.to_str().unwrap()],
        &[("GTMD_TEST_PAUSE", &pause)],
    );
    e.wait_log("fleet: connected to the engine", Duration::from_secs(15));
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 0),
        0,
        &["published epoch 1 "],
    );
    wait_paused(&gate, Duration::from_secs(15));
    let beat = |url: &str| -> u64 {
        let v = kv_get(url, "gtmd_edges", "e1").unwrap();
        serde_json::from_slice::<serde_json::Value>(&v).unwrap()["heartbeat_ms"]
            .as_u64()
            .unwrap()
    };
    let first = beat(&url);
    // Two heartbeats' time into the fetch: a report written since.
    std::thread::sleep(Duration::from_secs(11));
    let later = beat(&url);
    assert!(
        later >= first + 4_000,
        "no report while fetching: {first} then {later}"
    );
    std::fs::write(&gate, b"").unwrap();
    wait_www(&e, "192.0.2.51");
}

/// The user a client without credentials gets may not write `gtmd_edges` (nor so the
/// clock key); `edge` may.
const AUTH_EDGES_READ_ONLY: &str = r#"authorization { users = [
  { user: "edge", password: "e" }
  { user: "ops", password: "o", permissions: { publish: { deny: ["$KV.gtmd_edges.>"] } } }
] }
no_auth_user: "ops"
"#;

/// The user a client without credentials gets may not write the pointers.
const AUTH_NO_POINTER: &str = r#"authorization { users = [
  { user: "ops", password: "o", permissions: { publish: { deny: ["$KV.gtmd_config.current", "$KV.gtmd_config.canary"] } } }
] }
no_auth_user: "ops"
"#;

/// A nats-server (JetStream, loopback, a free port, store in `dir`) with the configuration
/// `conf`, up; stopped when the guard drops. Returns the guard and the port.
fn nats_with_conf(bin: &Path, dir: &TempDir, conf: &str) -> (Reaped, u16) {
    let file = dir.join("nats.conf");
    std::fs::write(&file, conf).unwrap();
    let port = crate::harness::free_port();
    let child = Command::new(bin)
        .args(["-c", file.to_str().unwrap(), "-js", "-a", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-sd",
            dir.join("js").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Reaped(Some(child));
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "nats-server not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (guard, port)
}

/// A user that may not write `gtmd_edges` (so not the clock key either; here the user a
/// client without credentials gets) still publishes and waits: the newest edge report's
/// time stands in for the engine's, with a warning. The edge's report is written as
/// another user (gtmd's edges carry no credentials yet).
#[test]
fn a_user_without_write_access_to_the_reports_still_waits() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-readonly");
    let (_nats, port) = nats_with_conf(&bin, &dir, AUTH_EDGES_READ_ONLY);
    let url = format!("nats://127.0.0.1:{port}");
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 0),
        0,
        &["published epoch 1 "],
    );
    // Edge e1 reports serving epoch 0 (its own file).
    let addr = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password("edge".into(), "e".into())
            .connect(addr)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value("gtmd_edges").await.unwrap();
        let report = serde_json::json!({
            "edge": "e1", "epoch": 0, "digest": "", "refused": null, "ignored": null,
            "heartbeat_ms": 0, "version": "test"
        });
        kv.put("e1", serde_json::to_vec(&report).unwrap().into())
            .await
            .unwrap();
    });
    let cfg = published(&dir, "192.0.2.52", "");
    let args = ["publish", "--config", cfg.to_str().unwrap(), "--wait", "3"];
    // Seen as fresh, waited for: it does not move (no edge behind the report).
    expect(
        &gtmd(&[], &args, &url),
        3,
        &[
            "warning: cannot write gtmd.clock in gtmd_edges",
            "e1: no answer in 3 s (serving epoch 0)",
        ],
    );
}

/// An engine that answers but refuses every try (here: no right to write the pointer)
/// ends the publish with the engine error after --timeout; each try's upload moved the
/// deadline on, and the publish was tried for ever (killed by `timeout` here: 124).
#[test]
fn a_publish_the_engine_refuses_every_time_ends() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-refused");
    let (_nats, port) = nats_with_conf(&bin, &dir, AUTH_NO_POINTER);
    let url = format!("nats://127.0.0.1:{port}");
    let cfg = published(&dir, "192.0.2.51", "");
    let args = [
        "publish",
        "--config",
        cfg.to_str().unwrap(),
        "--wait",
        "0",
        "--timeout",
        "10",
    ];
    let t0 = Instant::now();
    expect(
        &gtmd(&["timeout", "90"], &args, &url),
        2,
        &["the engine did not answer in time"],
    );
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());
}

/// Another command's write of `gtmd.clock` between this one's write and its read (held
/// there by a test pause) removes this one's (the bucket keeps one value per key): the
/// later stamp is taken, and promote goes on.
#[test]
fn a_clock_key_overwritten_by_another_command_is_read_all_the_same() {
    let Some((dir, nats, url)) = engine("fleet-clock-race") else {
        return;
    };
    let e = edges_on(&dir, &nats, &["e1"]);
    let cfg = published(&dir, "192.0.2.51", "");
    let args = ["publish", "--config", cfg.to_str().unwrap()];
    let args = [&args[..], &["--canary", "e1", "--wait", "20"]].concat();
    expect(&gtmd(&[], &args, &url), 0, &["e1: applied epoch 1"]);
    let gate = dir.join("gate");
    let child = Command::new(BIN)
        .args(["promote", "--wait", "20", "--nats", &url])
        .env("GTMD_TEST_PAUSE", format!("clock:{}", gate.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Reaped(Some(child));
    wait_paused(&gate, Duration::from_secs(30));
    kv_put(&url, "gtmd_edges", "gtmd.clock", b"");
    std::fs::write(&gate, b"").unwrap();
    expect(
        &child.output(),
        0,
        &["promoted epoch 1 (the canary for e1) to current"],
    );
    assert_eq!(www(&e[0]), ["192.0.2.51"]);
}

/// A rollout command against an engine where nothing was published says so at once
/// (the buckets do not exist: no retry until --timeout).
#[test]
fn a_rollout_command_on_an_empty_engine_says_so_at_once() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-empty");
    let nats = Nats::start(&bin, &dir);
    let t0 = Instant::now();
    let said = expect(
        &gtmd(&[], &["promote", "--timeout", "20"], &nats.url()),
        2,
        &[
            "cannot open gtmd_config",
            "nothing was published to this engine yet?",
        ],
    );
    assert!(!said.contains("trying again"), "{said}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A bundle the engine holds damaged (its data does not match the object store's own
/// digest, found once all of it arrived) is refused, not fetched again for ever.
#[test]
fn a_damaged_bundle_is_refused_not_fetched_again() {
    let Some((dir, _nats, url)) = engine("fleet-damaged") else {
        return;
    };
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 0),
        0,
        &["published epoch 1 "],
    );
    // The object's metadata rewritten with another digest.
    with_jetstream(&url, |js| async move {
        let stream = js.get_stream("OBJ_gtmd_epochs").await.unwrap();
        let mut info = stream
            .info_with_subjects("$O.gtmd_epochs.M.>")
            .await
            .unwrap();
        let (subject, _) = info.next().await.unwrap().unwrap();
        let m = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .unwrap();
        let mut meta: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        meta["digest"] = "SHA-256=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        js.publish(subject, serde_json::to_vec(&meta).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let e = start_edge(&edge_file(&dir, "e1", &url));
    e.wait_log("fleet: epoch 1 refused", Duration::from_secs(15));
    // Several heartbeats on: refused once, never fetched again.
    std::thread::sleep(Duration::from_secs(6));
    let f = fleet_status(&e);
    assert_eq!(f["refused"]["epoch"], 1, "{f}");
    let why = f["refused"]["errors"][0].as_str().unwrap_or("");
    assert!(
        why.contains("bad bundle") && why.contains("wrong digest"),
        "{f}"
    );
    assert_eq!(e.count_log("fleet: cannot fetch epoch 1"), 0);
    assert_eq!(e.count_log("fleet: epoch 1 refused"), 1);
    assert_eq!(www(&e), ["192.0.2.1"]);
}

/// A bundle the engine cannot hand out (its object gone for a while, as when the engine
/// is away) is fetched again later, on the same session: never refused, the link never
/// dropped; once it is back, the edge applies it.
#[test]
fn a_bundle_that_cannot_be_fetched_is_retried_not_refused() {
    let Some((dir, _nats, url)) = engine("fleet-fetch") else {
        return;
    };
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 0),
        0,
        &["published epoch 1 "],
    );
    // The bundle taken out of the engine, `current` left naming it.
    let current: serde_json::Value =
        serde_json::from_slice(&kv_get(&url, "gtmd_config", "current").unwrap()).unwrap();
    let object = current["object"].as_str().unwrap().to_string();
    let name = object.clone();
    let (blob, meta) = with_jetstream(&url, |js| async move {
        use tokio::io::AsyncReadExt;
        let store = js.get_object_store("gtmd_epochs").await.unwrap();
        let info = store.info(&name).await.unwrap();
        let mut blob = Vec::new();
        store
            .get(&name)
            .await
            .unwrap()
            .read_to_end(&mut blob)
            .await
            .unwrap();
        store.delete(&name).await.unwrap();
        (blob, info.metadata)
    });
    let e = start_edge(&edge_file(&dir, "e1", &url));
    e.wait_log("fleet: connected to the engine", Duration::from_secs(15));
    // Several tries (after 1 s, 2 s, 4 s): the session kept, nothing refused, said once.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(e.count_log("fleet: engine unreachable"), 0);
    assert_eq!(e.count_log("fleet: connected to the engine"), 1);
    assert_eq!(e.count_log("fleet: cannot fetch epoch 1"), 1);
    let f = fleet_status(&e);
    assert!(f["refused"].is_null(), "{f}");
    assert!(
        f["fetch_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("epoch 1:"),
        "{f}"
    );
    assert_eq!(www(&e), ["192.0.2.1"]);
    // Back in the engine: applied at the next try (the pause is at most 10 s).
    with_jetstream(&url, |js| async move {
        let store = js.get_object_store("gtmd_epochs").await.unwrap();
        let m = async_nats::jetstream::object_store::ObjectMetadata {
            name: object,
            metadata: meta,
            ..Default::default()
        };
        store.put(m, &mut &blob[..]).await.unwrap();
    });
    let t0 = Instant::now();
    while www(&e) != ["192.0.2.51"] {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "epoch 1 not applied:\n{}",
            e.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    e.wait_log("fleet: epoch 1 fetched", Duration::from_secs(5));
    // (Shown once the epoch is applied, a moment after it answers.)
    let t0 = Instant::now();
    while fleet_status(&e)["epoch"] != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{}",
            fleet_status(&e)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fleet_status(&e)["fetch_error"].is_null());
    assert_eq!(e.count_log("fleet: engine unreachable"), 0);
}

/// A pin keeps its epoch's bundle from `publish --keep` even when its edge has not
/// reported for longer than the engine keeps reports (its report gone).
#[test]
fn a_pinned_epoch_is_never_pruned() {
    let Some((dir, nats, url)) = engine("fleet-prune") else {
        return;
    };
    let mut e = edges_on(&dir, &nats, &["e1", "e2"]);
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 20),
        0,
        &["e2: applied epoch 1"],
    );
    expect(
        &gtmd(&[], &["pin", "e2", "1"], &url),
        0,
        &["pinned e2 to epoch 1"],
    );
    // e2 away, its report expired (purged here rather than waited an hour for).
    e[1].stop();
    with_jetstream(&url, |js| async move {
        let kv = js.get_key_value("gtmd_edges").await.unwrap();
        kv.purge("e2").await.unwrap();
    });
    for (i, addr) in ["192.0.2.52", "192.0.2.53"].iter().enumerate() {
        let cfg = published(&dir, addr, "");
        let said = expect(
            &gtmd(
                &[],
                &[
                    "publish",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--keep",
                    "1",
                    "--wait",
                    "20",
                ],
                &url,
            ),
            0,
            &[&format!("e1: applied epoch {}", i + 2)],
        );
        assert!(
            !said.contains("removed the bundle of an old epoch: epoch-1-"),
            "{said}"
        );
    }
    // Epoch 2 went; epoch 1, pinned, is still there to pin another edge to.
    expect(
        &gtmd(&[], &["pin", "e1", "2"], &url),
        1,
        &["no bundle of epoch 2"],
    );
    expect(
        &gtmd(&[], &["pin", "e1", "1"], &url),
        0,
        &["pinned e1 to epoch 1"],
    );
}

/// Garbage in `canary` is a clear error naming the key (exit 1, at once), `abort`
/// removes it, and an edge ignores a canary no publish writes (warned once), following
/// `current`.
#[test]
fn a_malformed_canary_is_a_clear_error_and_edges_follow_current() {
    let Some((dir, nats, url)) = engine("fleet-garbage") else {
        return;
    };
    let e = edges_on(&dir, &nats, &["e1"]);
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &url, 20),
        0,
        &["e1: applied epoch 1"],
    );
    kv_put(&url, "gtmd_config", "canary", br#"{"epoch":"x"}"#);
    let said =
        "the key canary of gtmd_config holds no valid canary (not a canary: missing field `selector`";
    expect(
        &gtmd(&[], &["promote"], &url),
        1,
        &[said, "nothing was promoted"],
    );
    let t0 = Instant::now();
    let out = publish(&published(&dir, "192.0.2.52", ""), &url, 0);
    expect(&out, 1, &[said, "nothing was published"]);
    assert!(!text(&out).contains("trying again"), "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    expect(
        &gtmd(&[], &["abort"], &url),
        0,
        &["removed canary, which was not a canary"],
    );
    // A canary for nobody, then rewritten to a selector no publish writes (150%).
    let cfg = published(&dir, "192.0.2.53", "");
    expect(
        &gtmd(
            &[],
            &[
                "publish",
                "--config",
                cfg.to_str().unwrap(),
                "--canary",
                "e9",
                "--wait",
                "0",
            ],
            &url,
        ),
        0,
        &["published epoch 2 as a canary for e9"],
    );
    let mut c: serde_json::Value =
        serde_json::from_slice(&kv_get(&url, "gtmd_config", "canary").unwrap()).unwrap();
    c["selector"] = serde_json::json!({"edges": [], "percent": 150});
    kv_put(
        &url,
        "gtmd_config",
        "canary",
        &serde_json::to_vec(&c).unwrap(),
    );
    let warned = "fleet: the key canary holds no valid value (selector: percent 150 is above 100)";
    e[0].wait_log(warned, Duration::from_secs(10));
    // A heartbeat on (the keys read again): still on current's epoch, warned once.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(www(&e[0]), ["192.0.2.51"]);
    assert_eq!(e[0].count_log(warned), 1);
    assert_eq!(fleet_status(&e[0])["follows"], "current");
    expect(
        &gtmd(&[], &["promote"], &url),
        1,
        &["holds no valid canary (selector: percent 150 is above 100)"],
    );
}

/// Every fleet command gives up in bounded time, saying so, when the engine does not
/// answer: a port that accepts and stays silent (a blackhole), or nothing listening.
#[test]
fn fleet_commands_give_up_when_the_engine_does_not_answer() {
    let dir = TempDir::new("fleet-timeout");
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    // Bound, never listening: connections are refused, and no parallel test can take
    // the port meanwhile.
    let closed = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    closed
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let closed_addr = closed.local_addr().unwrap().as_socket().unwrap();
    let closed_url = format!("nats://{closed_addr}");
    let silent_url = format!("nats://{}", silent.local_addr().unwrap());
    let cfg = published(&dir, "192.0.2.51", "");
    let cfg = cfg.to_str().unwrap();
    let publish_args = ["publish", "--config", cfg, "--timeout", "3", "--wait", "0"];
    let runs: [(&[&str], &str); 6] = [
        (&publish_args, &silent_url),
        (&publish_args, &closed_url),
        (&["promote", "--timeout", "3"], &silent_url),
        (&["abort", "--timeout", "3"], &silent_url),
        (&["pin", "e1", "1", "--timeout", "3"], &silent_url),
        (&["unpin", "e1", "--timeout", "3"], &silent_url),
    ];
    for (args, url) in runs {
        let t0 = Instant::now();
        let out = gtmd(&[], args, url);
        let took = t0.elapsed();
        expect(
            &out,
            2,
            &["the engine did not answer in time: gave up after 3 s"],
        );
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(6),
            "{args:?}: {took:?}"
        );
    }
    let help = Command::new(BIN)
        .args(["publish", "--help"])
        .output()
        .unwrap();
    assert!(text(&help).contains("--timeout <SECS>"), "{}", text(&help));
    drop((silent, closed));
}
