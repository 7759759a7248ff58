//! The rollout's edge cases against one real nats-server: a CLI host whose clock is off
//! (libfaketime), a plain publish racing a canary (the publisher stopped by SIGSTOP in the
//! middle), a bundle the engine cannot hand out for a while, a pin of an edge long gone,
//! a hand-written canary, and an engine that does not answer at all.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::fleet::{
    edge_file, nats_server, publish, published, start_edge, text, wait_www, www, Nats,
};
use crate::harness::nats::{kv_get, kv_put, with_jetstream};
use crate::harness::{Server, TempDir, BIN};

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

/// Asserts the exit code and that the output holds each of `has`; returns the output.
fn expect(o: &Output, code: i32, has: &[&str]) -> String {
    let said = text(o);
    assert_eq!(o.status.code(), Some(code), "{said}");
    for h in has {
        assert!(said.contains(h), "no '{h}' in:\n{said}");
    }
    said
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
/// behind) still sees the edges that just reported, waits for them and promotes.
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

/// A plain publish stopped (SIGSTOP) between reading the bucket and pointing `current`
/// at its epoch, while a canary is published: resumed, it finds the canary and publishes
/// nothing, rather than moving `current` beside it.
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
    let big = big_published(&dir, "192.0.2.52", 8);
    let nats_url = url.clone();
    let plain = with_jetstream(&url, |js| async move {
        // Every chunk of a bundle being uploaded: the first says the publisher is past
        // its look at the canary and not yet at its write.
        let mut chunks = js.client().subscribe("$O.gtmd_epochs.C.>").await.unwrap();
        js.client().flush().await.unwrap();
        let child = Command::new(BIN)
            .args(["publish", "--config", big.to_str().unwrap(), "--wait", "0"])
            .args(["--nats", &nats_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(60), chunks.next()).await;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
        assert!(matches!(first, Ok(Some(_))), "no chunk uploaded");
        child
    });
    assert_eq!(
        current_epoch(&url),
        1,
        "the publish was not stopped before its write: make its bundle bigger"
    );
    let canary = published(&other, "192.0.2.53", "");
    // Quick (no wait): the stopped publisher's chunk acks must not time out meanwhile.
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
    // SAFETY: signalling our own child.
    unsafe { libc::kill(plain.id() as i32, libc::SIGCONT) };
    let out = plain.wait_with_output().unwrap();
    expect(&out, 1, &["a canary is out", "nothing was published"]);
    assert_eq!(current_epoch(&url), 1, "{said}\n{}", text(&out));
    // The canary is intact: promoted, it reaches the edge.
    expect(
        &gtmd(&[], &["promote", "--wait", "20"], &url),
        0,
        &["promoted epoch 2 (the canary for e1) to current"],
    );
    wait_www(&e[0], "192.0.2.53");
}

/// A bundle the engine cannot hand out (its object gone for a while, as when the engine
/// is away) is fetched again later, on the same session: never refused, the link never
/// dropped; once it is back, the edge applies it.
#[test]
fn a_bundle_that_cannot_be_fetched_is_retried_not_refused() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-fetch");
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
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
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-prune");
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
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
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-garbage");
    let nats = Nats::start(&bin, &dir);
    let url = nats.url();
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
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
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
    drop(silent);
}
