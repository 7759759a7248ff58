//! Many edges over NATS JetStream (`gtmd publish`, `[fleet]`): a real `nats-server` with
//! JetStream on a free loopback port in a temp dir (stopped by PID), gtmd edges through
//! the harness, `gtmd publish` as a process.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{free_port, udp_exchange, Msg, Server, TempDir, BIN, Q};

/// `nats-server` from PATH or /usr/sbin (Debian puts it there); `None` only when it is
/// not installed and this is not root (tools/test installs it as root): then the test
/// says so and passes; as root a missing server fails it.
pub(crate) fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    for d in dirs {
        let p = d.join("nats-server");
        if p.is_file() {
            return Some(p);
        }
    }
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    assert!(
        !root,
        "nats-server is not installed (tools/test installs Debian's nats-server package)"
    );
    eprintln!("fleet: SKIPPED: nats-server is not installed and this is not root (run tools/test as root, or apt-get install nats-server)");
    None
}

/// A nats-server with JetStream, on 127.0.0.1, its store in a temp dir.
pub(crate) struct Nats {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Nats {
    pub(crate) fn start(bin: &Path, dir: &TempDir) -> Self {
        let mut n = Self {
            bin: bin.to_path_buf(),
            port: free_port(),
            store: dir.join("js"),
            child: None,
        };
        n.restart();
        n
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and store); waits until it accepts clients.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM by PID, then SIGKILL after 5 s; waits for it.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while c.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = c.kill();
                let _ = c.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A zone file for `fleet.test.` whose `www` is `addr`.
pub(crate) fn zone(addr: &str) -> String {
    format!(
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN A {addr}\n"
    )
}

/// The config `gtmd publish` sends: `fleet.test.` from `zones/fleet.zone`, plus `extra`.
pub(crate) fn published(dir: &TempDir, www: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("pub/zones")).unwrap();
    std::fs::write(dir.join("pub/zones/fleet.zone"), zone(www)).unwrap();
    let text = format!(
        "version = 1\n[[zone]]\nname = \"fleet.test.\"\nfile = \"zones/fleet.zone\"\n{extra}"
    );
    std::fs::write(dir.join("pub/gtmd.toml"), text).unwrap();
    dir.join("pub/gtmd.toml")
}

/// An edge's own file: `www` is 192.0.2.1 until an epoch arrives.
pub(crate) fn edge_file(dir: &TempDir, name: &str, nats: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("local.zone"), zone("192.0.2.1")).unwrap();
    let text = format!(
        "version = 1\n[[zone]]\nname = \"fleet.test.\"\nfile = \"local.zone\"\n\
         [fleet]\nnats = [\"{nats}\"]\nedge = \"{name}\"\nstate-dir = \"state\"\n"
    );
    std::fs::write(d.join("edge.toml"), text).unwrap();
    d.join("edge.toml")
}

pub(crate) fn start_edge(file: &Path) -> Server {
    Server::start(&["--config", file.to_str().unwrap()])
}

/// `gtmd publish --config FILE --nats URL --wait SECS`, to run.
fn publish_command(file: &Path, nats: &str, wait: u64) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "publish",
        "--config",
        file.to_str().unwrap(),
        "--nats",
        nats,
    ])
    .args(["--wait", &wait.to_string()])
    .env("RUST_LOG", "warn");
    c
}

/// `gtmd publish --config FILE --nats URL --wait SECS`.
pub(crate) fn publish(file: &Path, nats: &str, wait: u64) -> Output {
    (publish_command(file, nats, wait).output()).expect("run gtmd publish")
}

/// [`publish`], calling `numbered` once it has said which epoch it published (while it
/// waits for the edges).
fn publish_then(file: &Path, nats: &str, wait: u64, numbered: impl FnOnce()) -> Output {
    use std::io::{BufRead, Read};
    let mut child = publish_command(file, nats, wait)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gtmd publish");
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut stdout, mut line, mut numbered) = (Vec::new(), String::new(), Some(numbered));
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        if line.starts_with("published epoch ") {
            if let Some(f) = numbered.take() {
                f();
            }
        }
        stdout.extend_from_slice(line.as_bytes());
        line.clear();
    }
    // Whatever it said, the caller's `numbered` runs (an edge held still is let go).
    if let Some(f) = numbered {
        f();
    }
    let status = child.wait().expect("wait for gtmd publish");
    Output {
        status,
        stdout,
        stderr: errs.join().unwrap(),
    }
}

/// Sends `sig` to `pid` (a process this test started).
fn signal(pid: i32, sig: i32) {
    // SAFETY: signalling a process this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts the exit code and that the output holds each of `has`; returns the output.
pub(crate) fn expect(o: &Output, code: i32, has: &[&str]) -> String {
    let said = text(o);
    assert_eq!(o.status.code(), Some(code), "{said}");
    for h in has {
        assert!(said.contains(h), "no '{h}' in:\n{said}");
    }
    said
}

/// `www.fleet.test.` A as `s` answers it now.
pub(crate) fn www(s: &Server) -> Vec<String> {
    s.udp(&Q::new("www.fleet.test.", 1).build())
        .map(|m| m.answers(1))
        .unwrap_or_default()
}

/// Waits (bounded) until `s` answers `www` with `addr`.
pub(crate) fn wait_www(s: &Server, addr: &str) {
    let t0 = Instant::now();
    while www(s) != [addr] {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "www is {:?}, not {addr}; log:\n{}",
            www(s),
            s.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A thread asking `www` of `addr` in a loop until finished; each answer must be one of
/// `allowed`.
pub(crate) struct Asker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, usize)>,
}

pub(crate) fn asker(addr: SocketAddr, allowed: &[&str]) -> Asker {
    let stop = Arc::new(AtomicBool::new(false));
    let allowed: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let q = Q::new("www.fleet.test.", 1).build();
        let (mut asked, mut unanswered) = (0, 0);
        let t0 = Instant::now();
        while !s.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
            asked += 1;
            match udp_exchange(addr, &q, Duration::from_secs(1)) {
                Some(r) => {
                    let a = Msg::parse(&r).answers(1);
                    assert!(a.len() == 1 && allowed.contains(&a[0]), "answer {a:?}");
                }
                None => unanswered += 1,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (asked, unanswered)
    });
    Asker { stop, thread }
}

impl Asker {
    /// Stops it; how many queries it asked, and how many got no answer.
    pub(crate) fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn publish_reaches_every_edge_and_a_bad_config_is_refused() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-a");
    let nats = Nats::start(&bin, &dir);
    let edges: Vec<Server> = ["e1", "e2", "e3"]
        .iter()
        .map(|n| start_edge(&edge_file(&dir, n, &nats.url())))
        .collect();
    for e in &edges {
        e.wait_log("fleet: connected to the engine", Duration::from_secs(10));
        assert_eq!(www(e), ["192.0.2.1"], "the edge's own file serves first");
    }
    // Queries to e1 all along: every one is answered, from the old epoch or the new.
    let asker = asker(edges[0].addr, &["192.0.2.1", "192.0.2.11", "192.0.2.12"]);
    for (epoch, addr) in [(1, "192.0.2.11"), (2, "192.0.2.12")] {
        let cfg = published(&dir, addr, "");
        let t0 = Instant::now();
        let out = publish(&cfg, &nats.url(), 20);
        let took = t0.elapsed();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(0), "{said}");
        assert!(
            said.contains(&format!("published epoch {epoch} (sha256:")),
            "{said}"
        );
        for n in ["e1", "e2", "e3"] {
            assert!(
                said.contains(&format!("{n}: applied epoch {epoch} in")),
                "{said}"
            );
        }
        // publish returned once every edge reported: each answers from the epoch now.
        for e in &edges {
            assert_eq!(www(e), [addr]);
        }
        eprintln!("fleet: epoch {epoch} published and applied by 3 edges in {took:?}");
    }
    let (asked, unanswered) = asker.finish();
    assert!(asked > 20, "only {asked} queries asked");
    assert_eq!(
        unanswered, 0,
        "{unanswered} of {asked} queries unanswered while epochs applied"
    );
    // Invalid: refused before anything is uploaded, with file:line: field.
    let bad = published(&dir, "192.0.2.13", "[server]\nudp-payload = 5\n");
    let out = publish(&bad, &nats.url(), 5);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("gtmd.toml:6: server.udp-payload:"), "{said}");
    assert!(said.contains("nothing was published"), "{said}");
    // Nothing moved: the edges serve epoch 2 and the next publish is epoch 3. With
    // --keep 2, the bundle of epoch 1 goes (only it).
    let good = published(&dir, "192.0.2.14", "");
    let out = Command::new(BIN)
        .args([
            "publish",
            "--config",
            good.to_str().unwrap(),
            "--nats",
            &nats.url(),
        ])
        .args(["--wait", "20", "--keep", "2"])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("published epoch 3 "), "{said}");
    assert_eq!(
        said.matches("removed the bundle of an old epoch").count(),
        1,
        "{said}"
    );
    assert!(
        said.contains("removed the bundle of an old epoch: epoch-1-"),
        "{said}"
    );
    for e in &edges {
        assert_eq!(www(e), ["192.0.2.14"]);
        assert_eq!(e.count_log("fleet: epoch refused"), 0);
    }
}

/// Epochs are read through `state-dir/live`: an included file an epoch did not change is
/// shared with the serving model rather than validated again, a refused epoch leaves
/// `live` on the epoch serving, and a restarted edge boots through it.
#[test]
fn epochs_share_the_included_files_they_did_not_change() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-inc");
    let nats = Nats::start(&bin, &dir);
    let f = edge_file(&dir, "e1", &nats.url());
    let e = start_edge(&f);
    let pool = "[[address]]\nname = \"a1\"\nvalue = \"192.0.2.51\"\n\
                [[address]]\nname = \"a2\"\nvalue = \"192.0.2.52\"\n\
                [[pool]]\nname = \"p1\"\ntype = \"ipv4\"\naddresses = [\"a1\"]\n\
                [[pool]]\nname = \"p2\"\ntype = \"ipv4\"\naddresses = [\"a2\"]\n";
    let ad = |name: &str, pool: &str| {
        format!(
            "[[access-domain]]\nname = \"{name}.fleet.test.\"\ntype = \"A\"\n\
             policy = \"weighted\"\npools = [\"{pool}\"]\n"
        )
    };
    // `published`'s file with `extra`, including `ads/*.toml`.
    let with_ads = |extra: &str| {
        let main = published(&dir, "192.0.2.41", extra);
        let text = std::fs::read_to_string(&main).unwrap();
        let text = text.replacen(
            "version = 1\n",
            "version = 1\ninclude = [\"ads/*.toml\"]\n",
            1,
        );
        std::fs::write(&main, text).unwrap();
        main
    };
    let main = with_ads(pool);
    std::fs::create_dir_all(dir.join("pub/ads")).unwrap();
    std::fs::write(dir.join("pub/ads/a.toml"), ad("a", "p1")).unwrap();
    std::fs::write(dir.join("pub/ads/b.toml"), ad("b", "p1")).unwrap();
    let ask = |s: &Server, n: &str| {
        s.udp(&Q::new(&format!("{n}.fleet.test."), 1).build())
            .map(|m| m.answers(1))
            .unwrap_or_default()
    };
    expect(
        &publish(&main, &nats.url(), 20),
        0,
        &["e1: applied epoch 1"],
    );
    assert_eq!(ask(&e, "b"), ["192.0.2.51"]);
    // Epoch 2 changes b.toml alone: a.toml's access domains are shared.
    std::fs::write(dir.join("pub/ads/b.toml"), ad("b", "p2")).unwrap();
    expect(
        &publish(&main, &nats.url(), 20),
        0,
        &["e1: applied epoch 2"],
    );
    let line = e.wait_log("generation=3 ", Duration::from_secs(10));
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert_eq!(
        (ask(&e, "a"), ask(&e, "b")),
        (
            vec!["192.0.2.51".to_string()],
            vec!["192.0.2.52".to_string()]
        )
    );
    let state = f.parent().unwrap().join("state");
    let live = |s: &Path| std::fs::read_link(s.join("live")).unwrap();
    assert_eq!(live(&state), Path::new("epoch-2"));
    // Stopped, the edge misses epoch 3, which names an edge-local file it will not
    // have: restarted, it boots through `live` and refuses 3, and `live` stays on 2.
    drop(e);
    let local = dir.join("office.txt");
    std::fs::write(&local, "198.51.100.0/24\n").unwrap();
    let with_line = format!(
        "{pool}[[line]]\nname = \"office\"\nfile = \"{}\"\n",
        local.display()
    );
    with_ads(&with_line);
    expect(&publish(&main, &nats.url(), 0), 0, &["published epoch 3 "]);
    std::fs::remove_file(&local).unwrap();
    let e = start_edge(&f);
    e.wait_log(
        "fleet: serving the last-known-good epoch epoch=2",
        Duration::from_secs(10),
    );
    e.wait_log("fleet: epoch refused", Duration::from_secs(10));
    assert_eq!(live(&state), Path::new("epoch-2"));
    assert_eq!(ask(&e, "b"), ["192.0.2.52"]);
    // Epoch 4 changes b.toml alone again: a.toml is shared with what the edge booted.
    with_ads(pool);
    std::fs::write(dir.join("pub/ads/b.toml"), ad("b", "p1")).unwrap();
    expect(
        &publish(&main, &nats.url(), 20),
        0,
        &["e1: applied epoch 4"],
    );
    let line = e.wait_log("generation=2 ", Duration::from_secs(10));
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert_eq!(live(&state), Path::new("epoch-4"));
    assert_eq!(ask(&e, "b"), ["192.0.2.51"]);
}

#[test]
fn an_edge_refuses_an_epoch_it_cannot_load_and_keeps_serving() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-b");
    let nats = Nats::start(&bin, &dir);
    let f1 = edge_file(&dir, "e1", &nats.url());
    let f2 = edge_file(&dir, "e2", &nats.url());
    let e1 = start_edge(&f1);
    let mut e2 = start_edge(&f2);
    let out = publish(&published(&dir, "192.0.2.21", ""), &nats.url(), 20);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_www(&e2, "192.0.2.21");
    // Epoch 2 names an edge-local file (an absolute path: each edge reads its own),
    // which e2 will not have when it gets the epoch.
    let local = dir.join("office.txt");
    std::fs::write(&local, "198.51.100.0/24\n").unwrap();
    let extra = format!(
        "[[line]]\nname = \"office\"\nfile = \"{}\"\n",
        local.display()
    );
    let cfg = published(&dir, "192.0.2.22", &extra);
    e2.stop();
    let (url, c) = (nats.url(), cfg.clone());
    let publisher = std::thread::spawn(move || publish(&c, &url, 20));
    wait_www(&e1, "192.0.2.22");
    std::fs::remove_file(&local).unwrap();
    // e2 comes back from its last-known-good (epoch 1), gets epoch 2 and refuses it.
    let e2 = start_edge(&f2);
    let out = publisher.join().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "edge-local (each edge reads its own): {}",
            local.display()
        )),
        "{said}"
    );
    assert!(said.contains("e1: applied epoch 2"), "{said}");
    assert!(
        said.contains("e2: REFUSED epoch 2 (serving epoch 1)"),
        "{said}"
    );
    assert!(said.contains("line.file: cannot read"), "{said}");
    e2.wait_log(
        "fleet: epoch 2 refused: still serving epoch 1",
        Duration::from_secs(5),
    );
    assert_eq!(www(&e2), ["192.0.2.21"]);
    assert_eq!(www(&e1), ["192.0.2.22"]);
    // The edges' own status says the same: the API's JSON and `gtmd ctl status`.
    let (code, body) = crate::harness::http(e2.control_addr(), "GET", "/v1/status", &[], "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let f = &v["fleet"];
    assert_eq!(
        (f["edge"].as_str(), f["epoch"].as_u64()),
        (Some("e2"), Some(1)),
        "{body}"
    );
    assert_eq!(f["engine"], "connected", "{body}");
    assert_eq!(f["refused"]["epoch"], 2, "{body}");
    assert!(
        f["config_file"]
            .as_str()
            .unwrap()
            .ends_with("epoch-1/gtmd.toml"),
        "{body}"
    );
    let out = Command::new(BIN)
        .args([
            "ctl",
            "--server",
            &format!("http://{}", e1.control_addr()),
            "status",
        ])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        said.contains("fleet        edge e1, epoch 2, engine connected"),
        "{said}"
    );
    // A later good epoch applies on e2, and the refusal of epoch 2 is history.
    let out = publish(&published(&dir, "192.0.2.23", ""), &nats.url(), 20);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_www(&e2, "192.0.2.23");
    let (_, body) = crate::harness::http(e2.control_addr(), "GET", "/v1/status", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["fleet"]["epoch"], 3, "{body}");
    assert!(v["fleet"]["refused"].is_null(), "{body}");
}

#[test]
fn an_edge_boots_from_last_known_good_and_epochs_only_move_forward() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-c");
    let mut nats = Nats::start(&bin, &dir);
    let f = edge_file(&dir, "e1", &nats.url());
    let mut e = start_edge(&f);
    for addr in ["192.0.2.31", "192.0.2.32"] {
        let out = publish(&published(&dir, addr, ""), &nats.url(), 20);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert_eq!(www(&e), ["192.0.2.32"]);
    // No engine, and the edge's own file no longer loads (its zone file gone): a
    // restarted edge serves its last-known-good epoch all the same.
    e.stop();
    nats.stop();
    std::fs::remove_file(f.parent().unwrap().join("local.zone")).unwrap();
    let mut e = start_edge(&f);
    e.wait_log(
        "fleet: serving the last-known-good epoch epoch=2",
        Duration::from_secs(5),
    );
    e.wait_log("fleet: engine unreachable", Duration::from_secs(5));
    assert_eq!(www(&e), ["192.0.2.32"]);
    e.stop();
    // The engine comes back empty; a publish there is epoch 1, older than the edge's 2.
    std::fs::remove_dir_all(&nats.store).unwrap();
    nats.restart();
    let out = publish(&published(&dir, "192.0.2.33", ""), &nats.url(), 0);
    assert!(text(&out).contains("published epoch 1 "), "{}", text(&out));
    let e = start_edge(&f);
    e.wait_log(
        "fleet: epoch 1 is older than the epoch serving: ignored",
        Duration::from_secs(10),
    );
    assert_eq!(www(&e), ["192.0.2.32"]);
    // The engine emptied again under the running edge: a publish before the edge's report
    // is back is numbered 1 again; it waits for the edge, which serves epoch 2 and never
    // applies it, and says so (exit 1).
    // The edge is held still until the publish has numbered its epoch: else its report,
    // written as soon as it reconnects, can be back first (and the epoch is then 3).
    nats.stop();
    std::fs::remove_dir_all(&nats.store).unwrap();
    signal(e.pid(), libc::SIGSTOP);
    nats.restart();
    let out = publish_then(&published(&dir, "192.0.2.35", ""), &nats.url(), 20, || {
        signal(e.pid(), libc::SIGCONT)
    });
    let said = text(&out);
    assert!(said.contains("published epoch 1 "), "{said}");
    assert!(
        said.contains("e1: NOT APPLIED: serves epoch 2, above this epoch 1"),
        "{said}"
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(www(&e), ["192.0.2.32"]);
    // The next publish numbers its epoch above what the edge reports: 3, applied.
    let out = publish(&published(&dir, "192.0.2.34", ""), &nats.url(), 20);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("published epoch 3 "), "{said}");
    assert!(said.contains("e1: applied epoch 3"), "{said}");
    assert_eq!(www(&e), ["192.0.2.34"]);
}

#[test]
fn publish_refuses_a_path_leaving_the_folder_and_check_explains_fleet_mistakes() {
    // Neither needs the engine: both are refused before any connection.
    let dir = TempDir::new("fleet-d");
    published(&dir, "192.0.2.41", "");
    std::fs::create_dir_all(dir.join("pub/sub")).unwrap();
    let up = dir.write(
        "pub/sub/up.toml",
        "version = 1\n[[zone]]\nname = \"fleet.test.\"\nfile = \"../zones/fleet.zone\"\n",
    );
    let out = publish(&up, "nats://127.0.0.1:1", 0);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("a relative path that leaves the configuration's folder"),
        "{said}"
    );
    assert!(said.contains("nothing was published"), "{said}");
    // A token file travels (a relative path) and loads back as private as it was: the
    // bundle is good, and only the engine (nobody listens on port 1) is missing: exit 2.
    let tokens = crate::harness::token_file(&dir, &[("ops", "fleet-token-0123456789abcdef")]);
    std::fs::rename(&tokens, dir.join("pub/tokens")).unwrap();
    let cfg = published(&dir, "192.0.2.42", "[control]\ntoken-file = \"tokens\"\n");
    let out = publish(&cfg, "nats://127.0.0.1:1", 0);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("cannot connect to nats://127.0.0.1:1"),
        "{said}"
    );
    // A file gtmd writes may not lie in the epoch's folder.
    let state = published(
        &dir,
        "192.0.2.44",
        "[control]\nstate-file = \"state.json\"\n",
    );
    let out = publish(&state, "nats://127.0.0.1:1", 0);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("gtmd.toml: control.state-file: "), "{said}");
    assert!(
        said.contains("is a relative path: on an edge it would lie in the epoch's folder"),
        "{said}"
    );
    // Named by its bare name from its folder, with an absolute (edge-local) line file.
    let office = dir.write("office.txt", "198.51.100.0/24\n");
    let extra = format!(
        "[[line]]\nname = \"office\"\nfile = \"{}\"\n",
        office.display()
    );
    published(&dir, "192.0.2.43", &extra);
    let out = Command::new(BIN)
        .args([
            "publish",
            "--config",
            "gtmd.toml",
            "--nats",
            "nats://127.0.0.1:1",
        ])
        .current_dir(dir.join("pub"))
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "edge-local (each edge reads its own): {}",
            office.display()
        )),
        "{said}"
    );
    let bad = dir.write(
        "bad.toml",
        "version = 1\n[[zone]]\nname = \"fleet.test.\"\nfile = \"pub/zones/fleet.zone\"\n\
         [fleet]\nnats = [\"http://x/y\"]\nedge = \"a.b\"\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("bad.toml:5: fleet.state-dir: missing"),
        "{said}"
    );
    assert!(
        said.contains("bad.toml:6: fleet.nats: 'http://x/y' is not a NATS server URL"),
        "{said}"
    );
    assert!(
        said.contains("bad.toml:7: fleet.edge: 'a.b' may hold only"),
        "{said}"
    );
}

#[test]
fn an_edge_rides_out_an_engine_outage_and_logs_it_once() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-e");
    let mut nats = Nats::start(&bin, &dir);
    let e = start_edge(&edge_file(&dir, "e1", &nats.url()));
    let out = publish(&published(&dir, "192.0.2.51", ""), &nats.url(), 20);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The engine goes away for a few of the edge's attempts; the edge serves on.
    nats.stop();
    e.wait_log("fleet: engine unreachable", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(www(&e), ["192.0.2.51"]);
    let (_, body) = crate::harness::http(e.control_addr(), "GET", "/v1/status", &[], "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["fleet"]["engine"], "unreachable", "{body}");
    assert_eq!(v["fleet"]["epoch"], 1, "{body}");
    nats.restart();
    // The edge's last report is fresh: publish waits for it to reconnect and apply.
    let out = publish(&published(&dir, "192.0.2.52", ""), &nats.url(), 20);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("e1: applied epoch 2"), "{said}");
    assert_eq!(www(&e), ["192.0.2.52"]);
    // One line per change of the link, not one per attempt.
    assert_eq!(e.count_log("fleet: engine unreachable"), 1);
    assert_eq!(e.count_log("fleet: connected to the engine"), 2);
}

/// Two gtmd under one edge name overwrite each other's report: within two heartbeats one
/// of them says so.
#[test]
fn two_edges_under_one_name_are_warned_about() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-twin");
    let nats = Nats::start(&bin, &dir);
    let first = edge_file(&dir, "e1", &nats.url());
    let twin = dir.join("twin");
    std::fs::create_dir_all(&twin).unwrap();
    for f in ["edge.toml", "local.zone"] {
        std::fs::copy(first.parent().unwrap().join(f), twin.join(f)).unwrap();
    }
    let (a, b) = (start_edge(&first), start_edge(&twin.join("edge.toml")));
    let said = "fleet: another gtmd reports as edge e1";
    let t0 = Instant::now();
    while a.count_log(said) + b.count_log(said) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no warning about the twin"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        a.count_log(said) + b.count_log(said) <= 2,
        "said once each at most"
    );
}

//--- Shared health ----------------------------------------------------------------------

/// The shared-health edges' target: `primary` (127.0.0.51, checked over HTTP on a port
/// of the test's own); `backup` (127.0.0.52, unchecked) answers when it is down.
pub(crate) const PRIMARY: &str = "127.0.0.51";
pub(crate) const BACKUP: &str = "127.0.0.52";

/// interval 1 s x down-after 2 + timeout 0.5 s, + margin (propagation included).
const FAILOVER_BOUND: Duration = Duration::from_millis(1000 * 2 + 500 + 2000);

/// An edge's own file for the shared-health tests: `www.fleet.test.` answers `primary`
/// while it is up, else `backup`; the check probes from `source` (each edge its own
/// address, so that the target can fail one edge's checks and not another's), with
/// `failure-rate` 50. `share` is `[fleet] share-health`.
fn health_edge_file(
    dir: &TempDir,
    name: &str,
    nats: &str,
    port: u16,
    source: &str,
    share: bool,
) -> PathBuf {
    let checked = [("primary".to_string(), PRIMARY.to_string())];
    let share = format!("share-health = {share}");
    checked_edge_file(dir, (name, nats), (port, source, 50), &checked, &share)
}

/// Edge `name`'s file (on `nats`) for the shared-health tests: the `checked` addresses
/// (name, IP), each checked over HTTP on `port` every 1 s from `source` (down after 2,
/// timeout 0.5 s) at `failure-rate` `rate`; `www.fleet.test.` answers the first, else
/// `backup`; `[fleet]` plus `fleet_extra` (its first line is line 46 of the file when one
/// address is checked).
pub(crate) fn checked_edge_file(
    dir: &TempDir,
    (name, nats): (&str, &str),
    (port, source, rate): (u16, &str, u32),
    checked: &[(String, String)],
    fleet_extra: &str,
) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let main = &checked[0].0;
    let mut text = format!(
        r#"version = 1
[[zone]]
name = "fleet.test."
soa = {{ mname = "ns1", rname = "hostmaster", serial = 1, minimum = 60 }}
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[health-check]]
name = "web"
protocol = "http"
port = {port}
method = "GET"
path = "/health"
expect = [200]
interval = 1
timeout = 0.5
down-after = 2
up-after = 2
sources = ["{source}"]
failure-rate = {rate}
[[address]]
name = "backup"
value = "{BACKUP}"
[[pool]]
name = "main"
type = "ipv4"
addresses = ["{main}"]
[[pool]]
name = "spare"
type = "ipv4"
addresses = ["backup"]
[[access-domain]]
name = "www.fleet.test."
type = "A"
ttl = 30
policy = "global-availability"
preemptive = true
pools = ["main", "spare"]
"#
    );
    for (a, ip) in checked {
        text.push_str(&format!(
            "[[address]]\nname = \"{a}\"\nvalue = \"{ip}\"\nhealth-check = \"web\"\n"
        ));
    }
    text.push_str(&format!(
        "[fleet]\nnats = [\"{nats}\"]\nedge = \"{name}\"\nstate-dir = \"state\"\n{fleet_extra}\n"
    ));
    std::fs::write(d.join("edge.toml"), text).unwrap();
    d.join("edge.toml")
}

/// Three edges e1-e3 probing from 127.0.0.11-13, sharing health, and the target.
/// Also the target's port.
fn health_fleet(dir: &TempDir, nats: &Nats) -> (Vec<Server>, crate::prober::Target, u16) {
    let port = crate::prober::target_port(&[PRIMARY]);
    let target = crate::prober::Target::start(PRIMARY, port);
    let edges: Vec<Server> = (1..=3)
        .map(|i| {
            let n = format!("e{i}");
            let src = format!("127.0.0.1{i}");
            start_edge(&health_edge_file(dir, &n, &nats.url(), port, &src, true))
        })
        .collect();
    for e in &edges {
        e.wait_log("fleet: connected to the engine", Duration::from_secs(10));
        wait_www(e, PRIMARY);
    }
    // Sharing is live once every edge counts all three edges' votes.
    for e in &edges {
        wait_votes(
            e,
            |v| v.iter().filter(|x| x.counted).count() == 3,
            "3 counted votes",
        );
    }
    (edges, target, port)
}

/// One vote on `primary` as `GET /v1/state` shows it.
#[derive(Debug)]
struct ShownVote {
    edge: String,
    verdict: String,
    counted: bool,
    age_ms: u64,
}

/// The votes on `primary` that `s` shows.
fn votes(s: &Server) -> Vec<ShownVote> {
    let (code, body) = crate::harness::http(s.control_addr(), "GET", "/v1/state", &[], "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = v["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "primary")
        .unwrap()
        .clone();
    a["votes"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| ShownVote {
                    edge: x["edge"].as_str().unwrap().into(),
                    verdict: x["verdict"].as_str().unwrap().into(),
                    counted: x["counted"].as_bool().unwrap(),
                    age_ms: x["age_ms"].as_u64().unwrap(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until `s`'s votes on `address` (as `GET /v1/state` shows them)
/// satisfy `ok`.
pub(crate) fn wait_votes_on(s: &Server, address: &str, ok: impl Fn(&[serde_json::Value]) -> bool) {
    let t0 = Instant::now();
    loop {
        let (_, body) = crate::harness::http(s.control_addr(), "GET", "/v1/state", &[], "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let votes = v["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == address)
            .and_then(|a| a["votes"].as_array().cloned())
            .unwrap_or_default();
        if ok(&votes) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "votes on {address}: {votes:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until `s`'s votes on `primary` satisfy `ok`.
fn wait_votes(s: &Server, ok: impl Fn(&[ShownVote]) -> bool, what: &str) {
    let t0 = Instant::now();
    loop {
        let v = votes(s);
        if ok(&v) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "votes never showed {what}: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `edge`'s counted vote in `v` says `verdict`.
fn counted(v: &[ShownVote], edge: &str, verdict: &str) -> bool {
    v.iter()
        .any(|x| x.edge == edge && x.counted && x.verdict == verdict)
}

/// Polls every edge's answer until each answers `addr`; when each switched, from `t0`.
pub(crate) fn switch_times(
    edges: &[Server],
    addr: &str,
    t0: Instant,
    bound: Duration,
) -> Vec<Duration> {
    let mut when: Vec<Option<Duration>> = vec![None; edges.len()];
    while when.iter().any(Option::is_none) {
        for (i, e) in edges.iter().enumerate() {
            if when[i].is_none() && www(e) == [addr] {
                when[i] = Some(t0.elapsed());
            }
        }
        assert!(
            t0.elapsed() < bound,
            "not every edge answered {addr} within {bound:?}: {when:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    when.into_iter().map(Option::unwrap).collect()
}

#[test]
fn shared_health_fails_over_on_every_edge_and_never_for_a_minority() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-h");
    let nats = Nats::start(&bin, &dir);
    let (mut edges, target, port) = health_fleet(&dir, &nats);
    let src = |i: u8| -> std::net::IpAddr { format!("127.0.0.1{i}").parse().unwrap() };
    // e1 alone sees the target fail: 1 of 3 is below the 50% failure rate, so no edge
    // fails over, e1 included, whose own check says down (it would fail over alone).
    let asking: Vec<Asker> = edges.iter().map(|e| asker(e.addr, &[PRIMARY])).collect();
    target.deny.lock().unwrap().push(src(1));
    for e in &edges {
        wait_votes(e, |v| counted(v, "e1", "down"), "e1 down");
    }
    std::thread::sleep(Duration::from_secs(3));
    for (i, a) in asking.into_iter().enumerate() {
        let (asked, unanswered) = a.finish();
        assert!(
            asked > 100 && unanswered == 0,
            "e{}: {asked} asked, {unanswered} unanswered",
            i + 1
        );
    }
    // e2 too: 2 of 3, every edge fails over, e3 (whose own check passes) on e2's verdict.
    // The time from e2 switching (its own verdict, the deciding one) to the last edge
    // switching is the verdict's way to every edge.
    let mut spread = Vec::new();
    for round in 0..3 {
        let t0 = Instant::now();
        target.deny.lock().unwrap().push(src(2));
        let t = switch_times(&edges, BACKUP, t0, FAILOVER_BOUND);
        let last = t.iter().max().unwrap();
        spread.push(*last - t[1]);
        eprintln!(
            "fleet: 2 of 3 edges failing (round {round}): e1-e3 answered {BACKUP} after {t:?}"
        );
        assert_eq!(www(&edges[2]), [BACKUP]);
        let t0 = Instant::now();
        target.deny.lock().unwrap().retain(|a| *a != src(2));
        let t = switch_times(&edges, PRIMARY, t0, FAILOVER_BOUND);
        eprintln!("fleet: back to 1 of 3 failing: e1-e3 answered {PRIMARY} after {t:?}");
    }
    spread.sort();
    eprintln!(
        "fleet: verdict to every edge (deciding edge switched -> last edge switched): {spread:?}"
    );
    // What each edge shows: e1's and e2's votes down.
    let (_, body) = crate::harness::http(edges[2].control_addr(), "GET", "/v1/status", &[], "");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["fleet"]["share_health"], true, "{body}");
    let out = Command::new(BIN)
        .args([
            "ctl",
            "--server",
            &format!("http://{}", edges[2].control_addr()),
        ])
        .arg("status")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        said.contains("fleet        edge e3, epoch 0, engine connected, sharing health"),
        "{said}"
    );
    let v = votes(&edges[2]);
    assert!(
        counted(&v, "e3", "up") && counted(&v, "e1", "down"),
        "{v:?}"
    );
    assert!(v.iter().all(|x| x.age_ms < 3000), "{v:?}");
    let (_, metrics) = crate::harness::http(edges[2].control_addr(), "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("gtmd_fleet_votes{address=\"primary\",check=\"web\",verdict=\"down\"} 1"),
        "{metrics}"
    );
    // The target dies: every edge fails over within interval x threshold + propagation.
    let t0 = Instant::now();
    drop(target);
    let t = switch_times(&edges, BACKUP, t0, FAILOVER_BOUND);
    eprintln!("fleet: target killed: e1-e3 answered {BACKUP} after {t:?}");
    // Verdicts stored long ago do not count: e1 and e2 stop, their "down" verdicts stay in
    // the engine; the target comes back, and e3 follows its own verdict once theirs are
    // stale. A while later e3 restarts and reads theirs back from the engine: aged by the
    // engine's clock, they are forgotten, and e3 never fails over.
    let mut e3 = edges.pop().unwrap();
    wait_votes(
        &e3,
        |v| counted(v, "e1", "down") && counted(v, "e2", "down"),
        "e1 and e2 down",
    );
    for mut e in edges {
        e.stop();
    }
    let _target = crate::prober::Target::start(PRIMARY, port);
    wait_www(&e3, PRIMARY);
    std::thread::sleep(Duration::from_secs(6));
    e3.stop();
    let e3 = start_edge(&dir.join("e3/edge.toml"));
    let asking = asker(e3.addr, &[PRIMARY]);
    e3.wait_log("fleet: connected to the engine", Duration::from_secs(10));
    e3.wait_log(
        "first verdict of another edge received",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (asked, unanswered) = asking.finish();
    assert!(
        asked > 100 && unanswered == 0,
        "{asked} asked, {unanswered} unanswered"
    );
    let v = votes(&e3);
    assert!(v.iter().all(|x| x.edge == "e3"), "{v:?}");
}

#[test]
fn without_the_engine_edges_keep_their_state_and_fall_back_on_their_own_verdicts() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-i");
    let mut nats = Nats::start(&bin, &dir);
    let (edges, target, _) = health_fleet(&dir, &nats);
    let e1_src: std::net::IpAddr = "127.0.0.11".parse().unwrap();
    // e1 alone fails the target: outvoted, it answers primary like the others.
    target.deny.lock().unwrap().push(e1_src);
    for e in &edges {
        wait_votes(e, |v| counted(v, "e1", "down"), "e1 down");
    }
    assert_eq!(www(&edges[0]), [PRIMARY]);
    // The engine stops. e2 and e3 lose the other edges' verdicts: missing is not down,
    // they answer primary all along (no premature failover).
    let asking: Vec<Asker> = edges[1..]
        .iter()
        .map(|e| asker(e.addr, &[PRIMARY]))
        .collect();
    let t0 = Instant::now();
    nats.stop();
    // e1 keeps the fleet's verdict while the others' votes are fresh (3 intervals from
    // their last refresh), then falls back on its own: down, so it fails over.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        www(&edges[0]),
        [PRIMARY],
        "e1 dropped the fleet's verdict at once"
    );
    let t = switch_times(&edges[..1], BACKUP, t0, Duration::from_secs(3 + 2));
    eprintln!("fleet: engine stopped: e1 fell back on its own verdict after {t:?}");
    assert!(
        t[0] >= Duration::from_millis(1000),
        "e1 fell back after only {t:?}"
    );
    for e in &edges {
        wait_votes(
            e,
            |v| v.iter().filter(|x| x.counted).count() == 1,
            "its own vote alone",
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    for (i, a) in asking.into_iter().enumerate() {
        let (asked, unanswered) = a.finish();
        assert!(
            asked > 100 && unanswered == 0,
            "e{}: {asked} asked, {unanswered} unanswered",
            i + 2
        );
    }
    // Each edge still probes on its own: the target dies, e2 and e3 fail over too.
    let port_target = target;
    let t0 = Instant::now();
    drop(port_target);
    let t = switch_times(&edges[1..], BACKUP, t0, FAILOVER_BOUND);
    eprintln!("fleet: engine stopped, target killed: e2, e3 answered {BACKUP} after {t:?}");
    // The engine comes back (empty: verdicts are kept in memory): the edges reconnect
    // and publish their verdicts again; all three count three votes.
    nats.restart();
    for e in &edges {
        wait_votes(
            e,
            |v| v.iter().filter(|x| x.counted).count() == 3,
            "3 counted votes again",
        );
    }
}

#[test]
fn share_health_must_be_a_boolean() {
    let dir = TempDir::new("fleet-j");
    let file = health_edge_file(&dir, "e1", "nats://127.0.0.1:1", 1, "127.0.0.11", true);
    let toml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        toml.replace("share-health = true", "share-health = \"yes\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "edge.toml:46: fleet.share-health: invalid type: string \"yes\", expected a boolean"
        ),
        "{said}"
    );
}

/// A stream of the engine's that holds `$KV.gtmd_health.>`, so that the health bucket
/// cannot be made (created with async-nats, as gtmd does).
fn block_health_bucket(url: &str) {
    crate::harness::nats::with_jetstream(url, |js| async move {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "blocker".into(),
            subjects: vec!["$KV.gtmd_health.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

#[test]
fn an_edge_whose_health_sharing_fails_still_applies_epochs() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-k");
    let nats = Nats::start(&bin, &dir);
    block_health_bucket(&nats.url());
    let port = crate::prober::target_port(&[PRIMARY]);
    let _target = crate::prober::Target::start(PRIMARY, port);
    let file = health_edge_file(&dir, "e1", &nats.url(), port, "127.0.0.11", true);
    let e = start_edge(&file);
    e.wait_log("fleet: sharing health failed (", Duration::from_secs(10));
    let out = publish(&published(&dir, "192.0.2.61", ""), &nats.url(), 20);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("e1: applied epoch 1"), "{said}");
    // Logged once, not at every retry (every 2 s).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(e.count_log("fleet: sharing health failed"), 1);
    assert_eq!(e.count_log("fleet: engine unreachable"), 0);
}
