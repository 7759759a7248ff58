//! Many edges on a 3-node nats-server cluster (JetStream, buckets with 3 replicas): the
//! rollout (canary, promote, abort, pin), a killed server, an edge cut off from the
//! engine by a test-owned TCP proxy, a boot from last-known-good with the engine down,
//! and the time an epoch takes to reach every edge.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fleet::{asker, expect, nats_server, published, start_edge, text, wait_www, www, zone};
use crate::harness::{free_port, Server, TempDir, BIN};

/// One nats-server of the cluster.
struct Node {
    port: u16,
    http: u16,
    child: Option<Child>,
}

/// Three nats-servers with JetStream, routed to each other on loopback (`--no_advertise`:
/// clients use the URLs they are given, so a proxy in front of a server stays in the path).
struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    fn start(bin: &Path, dir: &TempDir) -> Self {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (port, http) = (free_port(), free_port());
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats://127.0.0.1:{r}"))
                .collect();
            let child = Command::new(bin)
                .args(["-js", "-a", "127.0.0.1", "-n", &format!("n{i}")])
                .args(["-p", &port.to_string(), "-m", &http.to_string()])
                .args(["--cluster_name", "t", "--no_advertise"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &others.join(",")])
                .arg("-sd")
                .arg(dir.join(format!("js{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nats-server");
            nodes.push(Node {
                port,
                http,
                child: Some(child),
            });
        }
        let c = Self { nodes };
        c.wait_ready();
        c
    }

    /// Until every server sees a JetStream meta leader of a cluster of 3 (bounded).
    fn wait_ready(&self) {
        let t0 = Instant::now();
        for n in &self.nodes {
            loop {
                let addr: SocketAddr = ([127, 0, 0, 1], n.http).into();
                let ready = TcpStream::connect(addr).is_ok();
                let ready = ready
                    && std::panic::catch_unwind(|| {
                        let (code, body) = crate::harness::http(addr, "GET", "/jsz", &[], "");
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        code == 200
                            && v["meta_cluster"]["leader"].is_string()
                            && v["meta_cluster"]["cluster_size"] == 3
                    })
                    .unwrap_or(false);
                if ready {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "the nats cluster did not form"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Until each server left (`alive`) sees a JetStream meta leader other than `gone`'s
    /// (bounded): the cluster has re-elected after losing it.
    fn wait_meta_leader(&self, alive: &[usize], gone: &str) {
        let t0 = Instant::now();
        for &i in alive {
            let addr: SocketAddr = ([127, 0, 0, 1], self.nodes[i].http).into();
            loop {
                let (code, body) = crate::harness::http(addr, "GET", "/jsz", &[], "");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let leader = v["meta_cluster"]["leader"].as_str().unwrap_or(gone);
                if code == 200 && leader != gone {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "no new meta leader: {body}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every server's URL, comma-separated (`--nats`).
    fn urls(&self) -> String {
        (0..3).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// SIGKILL by PID.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A TCP proxy in front of one server that the test can blackhole: connections stay open
/// and accepted but no byte passes (a partition, not a refusal); healed, the connections
/// cut are closed and new ones pass again.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped by every cut: a connection older than the last cut is closed once healed.
    era: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, era, stop): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicBool>) =
            Default::default();
        let (cut2, era2, stop2) = (cut.clone(), era.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) if cut.load(Ordering::Relaxed) => held.push(down),
                    Ok((down, _)) => {
                        let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let born = era.load(Ordering::Relaxed);
                        for (from, to) in [
                            (down.try_clone().unwrap(), up.try_clone().unwrap()),
                            (up, down),
                        ] {
                            let (cut, era, stop) = (cut.clone(), era.clone(), stop.clone());
                            std::thread::spawn(move || pump(from, to, born, (&cut, &era, &stop)));
                        }
                    }
                    Err(_) => {
                        if !cut.load(Ordering::Relaxed) {
                            held.clear();
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        });
        Self {
            port,
            cut: cut2,
            era: era2,
            stop: stop2,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        if cut {
            self.era.fetch_add(1, Ordering::Relaxed);
        }
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until either closes; while cut, what arrives is dropped; a
/// connection cut once is closed when healed.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    born: u64,
    (cut, era, stop): (&AtomicBool, &AtomicU64, &AtomicBool),
) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        let severed = era.load(Ordering::Relaxed) != born;
        if severed && !cut.load(Ordering::Relaxed) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(_) if severed => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// An edge's own file: all of `nats`, buckets with 3 replicas.
fn edge_file(dir: &TempDir, name: &str, nats: &[String]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("local.zone"), zone("192.0.2.1")).unwrap();
    let list: Vec<String> = nats.iter().map(|u| format!("\"{u}\"")).collect();
    let text = format!(
        "version = 1\n[[zone]]\nname = \"fleet.test.\"\nfile = \"local.zone\"\n\
         [fleet]\nnats = [{}]\nedge = \"{name}\"\nstate-dir = \"state\"\nreplicas = 3\n",
        list.join(", ")
    );
    std::fs::write(d.join("edge.toml"), text).unwrap();
    d.join("edge.toml")
}

/// `gtmd ARGS... --nats URLS` (RUST_LOG=warn).
fn gtmd(args: &[&str], nats: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--nats", nats])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gtmd")
}

/// `gtmd publish --config FILE --wait SECS [--canary SEL]`.
fn publish(file: &Path, nats: &str, wait: u64, canary: Option<&str>) -> Output {
    let wait = wait.to_string();
    let mut args = vec![
        "publish",
        "--config",
        file.to_str().unwrap(),
        "--wait",
        &wait,
        "--replicas",
        "3",
    ];
    if let Some(c) = canary {
        args.extend(["--canary", c]);
    }
    gtmd(&args, nats)
}

/// Three edges on the cluster, each connected.
fn edges(dir: &TempDir, urls: &[Vec<String>]) -> Vec<Server> {
    let edges: Vec<Server> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| start_edge(&edge_file(dir, &format!("e{}", i + 1), u)))
        .collect();
    for e in &edges {
        e.wait_log("fleet: connected to the engine", Duration::from_secs(15));
    }
    edges
}

/// The p-th percentile (0-100) of sorted `v`.
fn pct(v: &[Duration], p: usize) -> Duration {
    v[((v.len() - 1) * p).div_ceil(100)]
}

#[test]
fn cluster_rollout_canary_promote_abort_and_pin() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-cluster-a");
    let cluster = Cluster::start(&bin, &dir);
    let all: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let nats = cluster.urls();
    let e = edges(&dir, &[all.clone(), all.clone(), all]);
    // 20 epochs: from `gtmd publish` starting to the last of 3 edges answering from it.
    let mut took = Vec::new();
    for i in 0..20 {
        let addr = format!("192.0.2.{}", 100 + i);
        let cfg = published(&dir, &addr, "");
        let t0 = Instant::now();
        let child = Command::new(BIN)
            .args(["publish", "--config", cfg.to_str().unwrap(), "--wait", "0"])
            .args(["--nats", &nats])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while e.iter().any(|s| www(s) != [addr.as_str()]) {
            if t0.elapsed() > Duration::from_secs(10) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let out = child.wait_with_output().unwrap();
                let logs: Vec<String> =
                    e.iter().map(|s| s.log.lock().unwrap().join("\n")).collect();
                panic!(
                    "epoch {i} not everywhere:\n{}\n{}",
                    text(&out),
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // The first epoch after the buckets are made is not counted: the edges' watches,
        // made while the new streams settle, may miss it (then the 5 s re-read finds it).
        if i > 0 {
            took.push(t0.elapsed());
        } else {
            eprintln!("fleet cluster: the first epoch took {:?}", t0.elapsed());
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "publish of epoch {i}: {}", text(&out));
    }
    took.sort();
    eprintln!(
        "fleet cluster: publish to 3 edges answering, 19 epochs: p50 {:?}, p99 {:?}, max {:?}",
        pct(&took, 50),
        pct(&took, 99),
        took[18]
    );
    // A canary for e1: only e1 takes epoch 21; the others are not waited for.
    let cfg = published(&dir, "192.0.2.200", "");
    let said = expect(
        &publish(&cfg, &nats, 20, Some("e1")),
        0,
        &[
            "published epoch 21 as a canary for e1",
            "e1: applied epoch 21",
        ],
    );
    assert!(
        said.contains("e2: not in the canary, serving epoch 20"),
        "{said}"
    );
    assert_eq!(www(&e[0]), ["192.0.2.200"]);
    assert_eq!(
        (www(&e[1]), www(&e[2])),
        (
            vec!["192.0.2.119".to_string()],
            vec!["192.0.2.119".to_string()]
        )
    );
    e[0].wait_log(
        "fleet: this edge follows canary (epoch 21)",
        Duration::from_secs(5),
    );
    // No second epoch while a canary is out.
    expect(
        &publish(&published(&dir, "192.0.2.201", ""), &nats, 5, None),
        1,
        &["a canary is out (epoch 21 for e1)", "nothing was published"],
    );
    // Promoted: every edge serves epoch 21.
    expect(
        &gtmd(&["promote", "--wait", "20"], &nats),
        0,
        &[
            "promoted epoch 21 (the canary for e1) to current",
            "e2: applied epoch 21",
            "e3: applied epoch 21",
        ],
    );
    for s in &e {
        assert_eq!(www(s), ["192.0.2.200"]);
    }
    expect(&gtmd(&["promote"], &nats), 1, &["no canary is out"]);
    // A canary for e2 (epoch 22), aborted: epoch 23 carries epoch 21's configuration to
    // every edge, e2 included (it serves 22, so 21 itself would be older).
    let cfg = published(&dir, "192.0.2.202", "");
    expect(
        &publish(&cfg, &nats, 20, Some("e2")),
        0,
        &["e2: applied epoch 22"],
    );
    assert_eq!(www(&e[1]), ["192.0.2.202"]);
    expect(
        &gtmd(&["abort", "--wait", "20"], &nats),
        0,
        &[
            "aborted the canary (epoch 22): epoch 23 carries epoch 21's configuration",
            "e1: applied epoch 23",
            "e2: applied epoch 23",
            "e3: applied epoch 23",
        ],
    );
    for s in &e {
        assert_eq!(www(s), ["192.0.2.200"]);
    }
    // e3 pinned to epoch 23: a publish moves e1 and e2 only; unpinned, e3 follows.
    expect(
        &gtmd(&["pin", "e3", "23"], &nats),
        0,
        &["pinned e3 to epoch 23"],
    );
    let said = expect(
        &publish(&published(&dir, "192.0.2.204", ""), &nats, 20, None),
        0,
        &[
            "e1: applied epoch 24",
            "e2: applied epoch 24",
            "e3: pinned to epoch 23, serving epoch 23: not waited for",
        ],
    );
    assert!(!said.contains("e3: applied"), "{said}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(www(&e[2]), ["192.0.2.200"]);
    expect(
        &gtmd(&["unpin", "e3"], &nats),
        0,
        &[
            "unpinned e3: it follows current again (epoch 24)",
            "e3: applied epoch 24",
        ],
    );
    assert_eq!(www(&e[2]), ["192.0.2.204"]);
    // A pin to an epoch whose bundle the engine does not have is refused.
    expect(
        &gtmd(&["pin", "e3", "99"], &nats),
        1,
        &["no bundle of epoch 99", "nothing was pinned"],
    );
    // A percentage selects by the hash of the name: 100% is every edge.
    expect(
        &publish(&published(&dir, "192.0.2.205", ""), &nats, 20, Some("100%")),
        0,
        &[
            "e1: applied epoch 25",
            "e2: applied epoch 25",
            "e3: applied epoch 25",
        ],
    );
    expect(
        &gtmd(&["promote", "--wait", "0"], &nats),
        0,
        &["promoted epoch 25"],
    );
    // A canary that reaches no edge (a misspelt name) proves nothing: promote refuses it
    // unless forced.
    publish(&published(&dir, "192.0.2.205", ""), &nats, 0, Some("e9"));
    expect(
        &gtmd(&["promote"], &nats),
        1,
        &[
            "no edge of the canary (e9) has applied epoch 26",
            "not promoted",
        ],
    );
    expect(
        &gtmd(&["promote", "--force", "--wait", "20"], &nats),
        0,
        &["promoted epoch 26"],
    );
    // A smaller `current` written by hand (a stale restore): every edge ignores it and
    // says so; the next publish goes above it.
    write_current_epoch(&cluster.url(1), 3);
    for s in &e {
        s.wait_log(
            "fleet: epoch 3 is older than the epoch serving: ignored",
            Duration::from_secs(10),
        );
        assert_eq!(www(s), ["192.0.2.205"]);
    }
    expect(
        &publish(&published(&dir, "192.0.2.206", ""), &nats, 20, None),
        0,
        &["published epoch 27 ", "e3: applied epoch 27"],
    );
}

/// Rewrites `current` with its epoch number set to `epoch` (as a stale restore would).
fn write_current_epoch(url: &str, epoch: u64) {
    crate::harness::nats::with_jetstream(url, |js| async move {
        let kv = js.get_key_value("gtmd_config").await.unwrap();
        let v = kv.get("current").await.unwrap().unwrap();
        let mut p: serde_json::Value = serde_json::from_slice(&v).unwrap();
        p["epoch"] = epoch.into();
        kv.put("current", serde_json::to_vec(&p).unwrap().into())
            .await
            .unwrap();
    });
}

#[test]
fn cluster_publishes_and_answers_with_a_server_killed() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-cluster-b");
    let mut cluster = Cluster::start(&bin, &dir);
    let all: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let e = edges(&dir, &[all.clone(), all.clone(), all]);
    let nats = cluster.urls();
    expect(
        &publish(&published(&dir, "192.0.2.51", ""), &nats, 20, None),
        0,
        &["e3: applied epoch 1"],
    );
    let asking: Vec<_> = e
        .iter()
        .map(|s| asker(s.addr, &["192.0.2.51", "192.0.2.52"]))
        .collect();
    // One server SIGKILLed: publishing goes on (R3 buckets, 2 of 3 left) once the
    // streams it led have elected another leader, and every query is answered meanwhile.
    cluster.kill(0);
    let t0 = Instant::now();
    // The cluster re-elects its meta leader first; publish then tries the engine again
    // until the streams have leaders too (up to --timeout: 15-33 s here, requests timing
    // out meanwhile), however long the election takes.
    cluster.wait_meta_leader(&[1, 2], "n0");
    let cfg = published(&dir, "192.0.2.52", "");
    let out = gtmd(
        &[
            "publish",
            "--config",
            cfg.to_str().unwrap(),
            "--wait",
            "45",
            "--timeout",
            "90",
            "--replicas",
            "3",
        ],
        &nats,
    );
    let said = text(&out);
    let logs = || -> String {
        e.iter()
            .map(|s| s.log.lock().unwrap().join("\n"))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", logs());
    for n in ["e1", "e2", "e3"] {
        assert!(said.contains(&format!("{n}: applied epoch 2")), "{said}");
    }
    eprintln!(
        "fleet cluster: epoch 2 with a server killed reached 3 edges in {:?}:\n{said}",
        t0.elapsed()
    );
    for a in asking {
        let (asked, unanswered) = a.finish();
        assert!(
            asked > 20 && unanswered == 0,
            "{unanswered} of {asked} unanswered"
        );
    }
}

#[test]
fn cluster_edge_cut_off_by_a_proxy_keeps_answering_and_catches_up() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-cluster-d");
    let cluster = Cluster::start(&bin, &dir);
    let all: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let proxies: Vec<Proxy> = (0..3)
        .map(|i| Proxy::start(cluster.nodes[i].port))
        .collect();
    let via: Vec<String> = proxies.iter().map(Proxy::url).collect();
    // e3 reaches every server through a proxy of the test's.
    let e = edges(&dir, &[all.clone(), all, via]);
    let nats = cluster.urls();
    expect(
        &publish(&published(&dir, "192.0.2.52", ""), &nats, 20, None),
        0,
        &["e3: applied epoch 1"],
    );
    // e3 cut off: it keeps answering from epoch 1 while epoch 2 reaches the others.
    let cut_asker = asker(e[2].addr, &["192.0.2.52"]);
    // (Counted from here: a start-up race with the new streams may log a pair already.)
    let links = |s: &Server| {
        let log = s.log.lock().unwrap().join("\n");
        (
            log.matches("fleet: connected to the engine").count(),
            log.matches("fleet: engine unreachable").count(),
        )
    };
    let before = links(&e[2]);
    for p in &proxies {
        p.set_cut(true);
    }
    expect(
        &publish(&published(&dir, "192.0.2.53", ""), &nats, 0, None),
        0,
        &["published epoch 2 "],
    );
    wait_www(&e[0], "192.0.2.53");
    wait_www(&e[1], "192.0.2.53");
    let t0 = Instant::now();
    while links(&e[2]).1 == before.1 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "e3 never saw the cut"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(www(&e[2]), ["192.0.2.52"]);
    let (asked, unanswered) = cut_asker.finish();
    assert!(
        asked > 20 && unanswered == 0,
        "{unanswered} of {asked} unanswered while cut off"
    );
    // Healed: e3 catches up to epoch 2.
    for p in &proxies {
        p.set_cut(false);
    }
    let t0 = Instant::now();
    while www(&e[2]) != ["192.0.2.53"] {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "e3 did not catch up:\n{}",
            e[2].log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "fleet cluster: e3 caught up {:?} after the partition healed",
        t0.elapsed()
    );
    // The link logged once each way, not per attempt.
    let (connected, unreachable) = links(&e[2]);
    assert_eq!(
        (connected - before.0, unreachable - before.1),
        (1, 1),
        "{}",
        e[2].log.lock().unwrap().join("\n")
    );
}

#[test]
fn cluster_canary_refused_halts_the_rollout_and_an_edge_boots_from_lkg_without_the_engine() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-cluster-c");
    let mut cluster = Cluster::start(&bin, &dir);
    let all: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let nats = cluster.urls();
    let f1 = edge_file(&dir, "e1", &all);
    let mut e = edges(&dir, &[all.clone(), all]);
    expect(
        &publish(&published(&dir, "192.0.2.61", ""), &nats, 20, None),
        0,
        &["e1: applied epoch 1", "e2: applied epoch 1"],
    );
    // Epoch 2, a canary for e1, names an edge-local file that e1 will not have.
    let local = dir.join("office.txt");
    std::fs::write(&local, "198.51.100.0/24\n").unwrap();
    let extra = format!(
        "[[line]]\nname = \"office\"\nfile = \"{}\"\n",
        local.display()
    );
    e[0].stop();
    expect(
        &publish(&published(&dir, "192.0.2.62", &extra), &nats, 0, Some("e1")),
        0,
        &["published epoch 2 as a canary for e1"],
    );
    std::fs::remove_file(&local).unwrap();
    let e1 = start_edge(&f1);
    e1.wait_log(
        "fleet: epoch 2 refused: still serving epoch 1",
        Duration::from_secs(15),
    );
    assert_eq!(www(&e1), ["192.0.2.61"]);
    // The rollout halts: no promotion of a refused epoch (unless --force).
    let said = expect(
        &gtmd(&["promote"], &nats),
        1,
        &[
            "e1: REFUSED epoch 2",
            "line.file: cannot read",
            "not promoted",
        ],
    );
    assert!(!said.contains("promoted epoch"), "{said}");
    assert_eq!(www(&e[1]), ["192.0.2.61"]);
    // Aborted: epoch 3 (epoch 1's content) reaches both, and e1's refusal is history.
    expect(
        &gtmd(&["abort", "--wait", "20"], &nats),
        0,
        &["e1: applied epoch 3", "e2: applied epoch 3"],
    );
    // The whole engine down: e2 restarted boots from its last-known-good epoch 3.
    for i in 0..3 {
        cluster.kill(i);
    }
    e[1].stop();
    let e2 = start_edge(&dir.join("e2/edge.toml"));
    e2.wait_log(
        "fleet: serving the last-known-good epoch epoch=3",
        Duration::from_secs(5),
    );
    e2.wait_log("fleet: engine unreachable", Duration::from_secs(10));
    assert_eq!(www(&e2), ["192.0.2.61"]);
}
