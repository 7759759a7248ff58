//! The health side of a fleet (issue 14): membership heartbeats, probe sharding by
//! rendezvous hashing, prober isolation and `gtmd ctl cluster`. One nats-server and three
//! gtmd edges on loopback, each probing from its own source address (127.0.0.11-13);
//! the targets are HTTP listeners on 127.0.1.1-N that record who probed them.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::{
    asker, checked_edge_file, nats_server, start_edge, switch_times, text, wait_www, Nats, BACKUP,
};
use crate::harness::{free_port, http, read_request, Server, TempDir, BIN};

/// The first target's address (`www.fleet.test.` answers it while it is up).
const T1: &str = "127.0.1.1";

/// HTTP targets on 127.0.1.1-N, one port: `/health` answers 200, or 503 to a source in
/// `deny`; every request is recorded (target, source).
struct Targets {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    seen: Arc<Mutex<Vec<(usize, IpAddr)>>>,
    deny: Arc<Mutex<Vec<IpAddr>>>,
}

impl Targets {
    fn ips(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("127.0.1.{i}")).collect()
    }

    fn start(n: usize, port: u16) -> Self {
        let ls: Vec<TcpListener> = Self::ips(n)
            .iter()
            .map(|ip| {
                let l = TcpListener::bind((ip.as_str(), port)).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let deny = Arc::new(Mutex::new(Vec::new()));
        let (st, sn, dn) = (stop.clone(), seen.clone(), deny.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for (i, l) in ls.iter().enumerate() {
                    while let Ok((mut c, peer)) = l.accept() {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
                        if read_request(&mut c).is_none() {
                            continue;
                        }
                        sn.lock().unwrap().push((i, peer.ip()));
                        let code = if dn.lock().unwrap().contains(&peer.ip()) {
                            "503 No"
                        } else {
                            "200 OK"
                        };
                        let _ = write!(
                            c,
                            "HTTP/1.1 {code}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            thread: Some(thread),
            seen,
            deny,
        }
    }

    /// The requests recorded since the last call, forgotten.
    fn take(&self) -> Vec<(usize, IpAddr)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
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

fn src(i: usize) -> IpAddr {
    format!("127.0.0.1{i}").parse().unwrap()
}

/// Edge `name`'s file: `n` addresses t01.. on the targets, each checked over HTTP every
/// 1 s from `source` (down after 2, timeout 0.5 s) at `failure-rate` `rate`;
/// `www.fleet.test.` answers t01, else `backup`; `[fleet]` plus `fleet_extra`.
fn edge_file(
    dir: &TempDir,
    name: &str,
    nats: &str,
    (n, port, rate): (usize, u16, u32),
    source: IpAddr,
    fleet_extra: &str,
) -> PathBuf {
    let checked: Vec<(String, String)> = Targets::ips(n)
        .into_iter()
        .enumerate()
        .map(|(i, ip)| (format!("t{:02}", i + 1), ip))
        .collect();
    let source = source.to_string();
    checked_edge_file(
        dir,
        (name, nats),
        (port, &source, rate),
        &checked,
        fleet_extra,
    )
}

/// `n` targets on a port free on each of their addresses; the port.
fn targets(n: usize) -> (Targets, u16) {
    let ips = Targets::ips(n);
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let port = crate::prober::target_port(&ip_refs);
    (Targets::start(n, port), port)
}

/// Edges e1..=`count` on `nats`, edge `i` probing from `src(i)` (the other settings as
/// `edge_file` takes them), each file passed through `edit`, started; each waited for
/// until it logs `ready` and answers t01.
fn fleet_of(
    dir: &TempDir,
    nats: &Nats,
    count: usize,
    (settings, fleet_extra): ((usize, u16, u32), &str),
    edit: impl Fn(String) -> String,
    ready: &str,
) -> Vec<Server> {
    let edges: Vec<Server> = (1..=count)
        .map(|i| {
            let f = edge_file(
                dir,
                &format!("e{i}"),
                &nats.url(),
                settings,
                src(i),
                fleet_extra,
            );
            let text = std::fs::read_to_string(&f).unwrap();
            std::fs::write(&f, edit(text)).unwrap();
            start_edge(&f)
        })
        .collect();
    for e in &edges {
        e.wait_log(ready, Duration::from_secs(10));
        wait_www(e, T1);
    }
    edges
}

/// `GET /v1/fleet` of `s`.
fn fleet(s: &Server) -> serde_json::Value {
    let (code, body) = http(s.control_addr(), "GET", "/v1/fleet", &[], "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Live members `s` knows.
fn live(f: &serde_json::Value) -> Vec<String> {
    f["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["live"] == true)
        .map(|m| m["edge"].as_str().unwrap().to_string())
        .collect()
}

/// Waits (bounded by `within`) until `ok` holds of every edge's `/v1/fleet`; how long.
fn wait_fleet(
    edges: &[&Server],
    within: Duration,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let docs: Vec<serde_json::Value> = edges.iter().map(|e| fleet(e)).collect();
        if docs.iter().all(&ok) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "never {what} within {within:?}: {docs:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Per target, the distinct sources in `seen`, and the requests.
fn sources(seen: &[(usize, IpAddr)], n: usize) -> (Vec<BTreeSet<IpAddr>>, Vec<usize>) {
    let mut by: Vec<BTreeSet<IpAddr>> = vec![BTreeSet::new(); n];
    let mut count = vec![0; n];
    for &(i, ip) in seen {
        by[i].insert(ip);
        count[i] += 1;
    }
    (by, count)
}

fn ctl(s: &Server, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["ctl", "--server", &format!("http://{}", s.control_addr())])
        .args(args)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    said
}

#[test]
fn k_probers_per_target_and_a_killed_edges_checks_move_to_the_others() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-s");
    let nats = Nats::start(&bin, &dir);
    let n = 30;
    let (targets, port) = targets(n);
    let edges = fleet_of(
        &dir,
        &nats,
        3,
        ((n, port, 50), "probes-per-group = 2"),
        |t| t,
        "fleet: connected to the engine",
    );
    // Joined: every edge hears all three, and they share the 30 checks two by two.
    let all: Vec<&Server> = edges.iter().collect();
    let took = wait_fleet(
        &all,
        Duration::from_secs(15),
        "3 live members, 60 probes",
        |f| live(f).len() == 3 && f["joined"] == true,
    );
    let t0 = Instant::now();
    loop {
        let probed: u64 = edges
            .iter()
            .map(|e| fleet(e)["probed"].as_u64().unwrap())
            .sum();
        if probed == 2 * n as u64 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{probed} probed, not {}",
            2 * n
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("fleet: 3 edges joined {took:?} after their engine link was up");
    // Checks in flight when the assignment changed have ended by now.
    std::thread::sleep(Duration::from_millis(1200));
    targets.take();
    let window = Duration::from_secs(4);
    std::thread::sleep(window);
    let (by, count) = sources(&targets.take(), n);
    for (i, s) in by.iter().enumerate() {
        assert_eq!(s.len(), 2, "target {} probed from {s:?}", i + 1);
    }
    let per_interval = count.iter().sum::<usize>() as f64 / n as f64 / window.as_secs_f64();
    eprintln!("fleet: 3 edges, K=2: {per_interval:.2} probes per target per 1 s interval (each target from exactly 2 sources)");
    assert!((1.5..=2.5).contains(&per_interval), "{per_interval}");
    // Every edge computes the same probers: e1's view of t01's matches what t01 saw.
    let f1 = fleet(&edges[0]);
    let v = f1["votes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["address"] == "t01")
        .unwrap()
        .clone();
    let probers: BTreeSet<IpAddr> = v["probers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| src(p.as_str().unwrap()[1..].parse().unwrap()))
        .collect();
    assert_eq!(probers, by[0], "{v}");
    assert_eq!(v["up"], 2, "{v}");
    // gtmd ctl cluster, as a table and as JSON.
    let said = ctl(&edges[1], &["cluster"]);
    eprintln!("{said}");
    assert!(
        said.contains("edge e2 (group default), joined, probes "),
        "{said}"
    );
    assert!(
        said.contains("of 30 checks, 2 per group, min-vantages 2, 0 holding"),
        "{said}"
    );
    for e in ["e1", "e2", "e3"] {
        assert!(
            said.lines()
                .any(|l| l.starts_with(e) && l.contains("default") && l.ends_with("live")),
            "{said}"
        );
    }
    assert!(said.contains("checks with fresh votes: 30"), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&ctl(&edges[1], &["cluster", "--json"])).unwrap();
    assert_eq!(json["members"].as_array().unwrap().len(), 3, "{json}");
    let (_, metrics) = http(edges[0].control_addr(), "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("gtmd_fleet_members{state=\"live\"} 3"),
        "{metrics}"
    );
    // e3 is killed: its checks move to e1 and e2 once its heartbeat is stale (6 s), and
    // meanwhile nobody fails t01 over.
    let asking = asker(edges[0].addr, &[T1]);
    let t0 = Instant::now();
    edges[2].signal(libc::SIGKILL);
    let survivors: Vec<&Server> = edges[..2].iter().collect();
    wait_fleet(&survivors, Duration::from_secs(10), "2 live members", |f| {
        live(f).len() == 2
    });
    loop {
        let probed: u64 = survivors
            .iter()
            .map(|e| fleet(e)["probed"].as_u64().unwrap())
            .sum();
        if probed == 2 * n as u64 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(12), "{probed} probed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved = t0.elapsed();
    eprintln!("fleet: e3 killed: its checks moved to e1 and e2 after {moved:?}");
    // Stale after 6 s from e3's last heartbeat, which came up to one beat (2 s, and a
    // little more) before the kill.
    assert!(
        moved >= Duration::from_secs(3),
        "moved after only {moved:?}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    targets.take();
    std::thread::sleep(Duration::from_secs(3));
    let (by, _) = sources(&targets.take(), n);
    let want: BTreeSet<IpAddr> = [src(1), src(2)].into();
    for (i, s) in by.iter().enumerate() {
        assert_eq!(*s, want, "target {} probed from {s:?}", i + 1);
    }
    let (asked, unanswered) = asking.finish();
    assert!(
        asked > 100 && unanswered == 0,
        "{asked} asked, {unanswered} unanswered"
    );
    // Failover still works: t01 fails for both probers.
    targets.deny.lock().unwrap().extend([src(1), src(2)]);
    let t = switch_times(&edges[..2], BACKUP, Instant::now(), Duration::from_secs(6));
    eprintln!("fleet: t01 failed for e1 and e2: both answered {BACKUP} after {t:?}");
    drop(edges);
}

#[test]
fn an_isolated_vantage_stops_voting_and_fails_nothing_over() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-t");
    let nats = Nats::start(&bin, &dir);
    let n = 5;
    let (targets, port) = targets(n);
    // The anchor: nothing listens there yet (refused).
    let anchor_port = free_port();
    let anchor = format!("anchors = [\"127.0.0.98:{anchor_port}\"]");
    // failure-rate 30: one edge of three seeing t01 down is enough to fail it over.
    let edges = fleet_of(
        &dir,
        &nats,
        3,
        ((n, port, 30), &anchor),
        // down-after 3: the isolation (one round of failures) has time to come first.
        |t| t.replace("down-after = 2", "down-after = 3"),
        "fleet: connected to the engine",
    );
    let all: Vec<&Server> = edges.iter().collect();
    wait_fleet(&all, Duration::from_secs(15), "3 live members", |f| {
        live(f).len() == 3 && f["probed"] == n as u64
    });
    // Every target refuses e1: e1 sees all its checks fail, its anchor fails too.
    let asking: Vec<_> = edges.iter().map(|e| asker(e.addr, &[T1])).collect();
    let t0 = Instant::now();
    targets.deny.lock().unwrap().push(src(1));
    edges[0].wait_log("this edge is isolated", Duration::from_secs(5));
    eprintln!("fleet: e1 isolated after {:?}", t0.elapsed());
    wait_fleet(&all[1..], Duration::from_secs(5), "e1 isolated", |f| {
        f["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["edge"] == "e1" && m["isolated"] == true)
    });
    // Past down-after: e1's "down" verdicts exist but do not count anywhere.
    std::thread::sleep(Duration::from_secs(3));
    for (i, a) in asking.into_iter().enumerate() {
        let (asked, unanswered) = a.finish();
        assert!(
            asked > 100 && unanswered == 0,
            "e{}: {asked} asked, {unanswered} unanswered",
            i + 1
        );
    }
    let f1 = fleet(&edges[0]);
    assert_eq!(
        (f1["isolated"].clone(), f1["probed"].clone()),
        (true.into(), 0.into()),
        "{f1}"
    );
    let f2 = fleet(&edges[1]);
    let t01 = f2["votes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["address"] == "t01")
        .unwrap()
        .clone();
    assert_eq!(
        (t01["up"].clone(), t01["down"].clone()),
        (2.into(), 0.into()),
        "{t01}"
    );
    let (_, metrics) = http(edges[0].control_addr(), "GET", "/metrics", &[], "");
    assert!(metrics.contains("gtmd_fleet_isolated 1"), "{metrics}");
    let (_, state) = http(edges[0].control_addr(), "GET", "/v1/state", &[], "");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["fleet"]["isolated"], true, "{}", state["fleet"]);
    assert_eq!(state["fleet"]["live_members"].as_array().unwrap().len(), 3);
    let said = ctl(&edges[1], &["cluster"]);
    assert!(
        said.lines()
            .any(|l| l.starts_with("e1") && l.contains(" yes ")),
        "{said}"
    );
    // The anchor answers: e1 is no longer isolated, probes again, and its "down" counts:
    // 1 of 3 reaches the 30% rate, every edge fails t01 over (what isolation held back).
    let _anchor = TcpListener::bind(("127.0.0.98", anchor_port)).unwrap();
    let t0 = Instant::now();
    edges[0].wait_log("no longer isolated", Duration::from_secs(5));
    let t = switch_times(&edges, BACKUP, t0, Duration::from_secs(10));
    eprintln!("fleet: e1's anchor answers: e1-e3 answered {BACKUP} after {t:?}");
}

/// CPU time (user + system, clock ticks) of `pid`'s thread named `name`.
fn thread_ticks(pid: i32, name: &str) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<&str> = after.split_whitespace().collect();
        total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    }
    total
}

/// 200 more members (heartbeats written by this test every 2 s, as edges do): one real
/// edge sees 201 live members, probes its share of the checks only, and its `fleet`
/// thread's CPU is measured while it follows them.
#[test]
fn an_edge_follows_200_members() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-u");
    let nats = Nats::start(&bin, &dir);
    let n = 30;
    let (_targets, port) = targets(n);
    let f = edge_file(&dir, "e1", &nats.url(), (n, port, 50), src(1), "");
    let e = start_edge(&f);
    e.wait_log("fleet: live members changed", Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..200).map(|i| format!("sim-{i:03}")).collect();
    let writers = simulate(&nats.url(), names, 0, stop.clone());
    let took = wait_fleet(&[&e], Duration::from_secs(15), "201 live members", |f| {
        live(f).len() == 201
    });
    eprintln!("fleet: 200 simulated members: the edge saw 201 live after {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    let f = fleet(&e);
    let probed = f["probed"].as_u64().unwrap();
    // K = 3 of 201: about 30 x 3 / 201 checks; the edge must not probe them all.
    assert!(probed < 10, "{probed} probed: {f}");
    let ticks = thread_ticks(e.pid(), "fleet");
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let used = thread_ticks(e.pid(), "fleet") - ticks;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = used as f64 / hz / window.as_secs_f64() * 100.0;
    eprintln!(
        "fleet: 201 members heartbeating every 2 s: the edge probes {probed} of {n} checks; \
         its fleet thread used {cpu:.1}% of a core over {window:?} (debug build)"
    );
    assert_eq!(live(&fleet(&e)).len(), 201);
    stop.store(true, Ordering::Relaxed);
    writers.join().unwrap();
}

/// Members that only heartbeat (as edges do, every 2 s, into `gtmd_members`, which must
/// exist) until `stop`: live members that never probe or vote.
fn simulate(
    url: &str,
    names: Vec<String>,
    epoch: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let url = url.to_string();
    std::thread::spawn(move || {
        crate::harness::nats::with_jetstream(&url, |js| async move {
            let kv = js.get_key_value("gtmd_members").await.unwrap();
            let t0 = Instant::now();
            // A fixed schedule (a beat every 2 s from t0, however long the puts took) and
            // the puts of a beat made concurrently: a loaded machine cannot stretch the
            // gap between two beats of a member towards the 6 s that make it stale.
            let mut beat = 0u32;
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                let puts = names.iter().enumerate().map(|(i, name)| {
                    let hb = serde_json::json!({
                        "edge": name, "boot": i, "group": "default",
                        "version": "sim", "epoch": epoch, "apply": "ok", "isolated": false,
                        "up_ms": t0.elapsed().as_millis() as u64, "at_ms": 0,
                    });
                    let body = serde_json::to_vec(&hb).unwrap();
                    let kv = &kv;
                    // A put that times out on a loaded machine is the next beat's to make.
                    async move {
                        let _ = kv.put(name.as_str(), body.into()).await;
                    }
                });
                futures_util::future::join_all(puts).await;
                beat += 1;
                let next = t0 + Duration::from_secs(2) * beat;
                while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    })
}

/// `min-vantages = 3` with two real edges and a third member that never votes (it only
/// heartbeats): the checks' probers are all three, so two fresh votes are too few and
/// t01, down for both real edges, holds up; once the silent member's heartbeat is stale,
/// the probers are two, two votes are enough, and both edges fail t01 over.
#[test]
fn too_few_fresh_votes_hold_the_state_until_the_probers_change() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-v");
    let nats = Nats::start(&bin, &dir);
    let n = 2;
    let (targets, port) = targets(n);
    let edges = fleet_of(
        &dir,
        &nats,
        2,
        ((n, port, 50), "min-vantages = 3"),
        |t| t,
        "fleet: live members changed",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = simulate(&nats.url(), vec!["silent".into()], 0, stop.clone());
    let all: Vec<&Server> = edges.iter().collect();
    wait_fleet(&all, Duration::from_secs(15), "3 live members", |f| {
        live(f).len() == 3 && f["expected_votes"] == 3 && f["probed"] == n as u64
    });
    // Both real edges see t01 fail: 2 fresh votes of the 3 needed, so it holds.
    let asking: Vec<_> = edges.iter().map(|e| asker(e.addr, &[T1])).collect();
    targets.deny.lock().unwrap().extend([src(1), src(2)]);
    for e in &edges {
        crate::fleet::wait_votes_on(e, "t01", |v| {
            v.iter()
                .filter(|x| x["verdict"] == "down" && x["counted"] == true)
                .count()
                == 2
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    for (i, a) in asking.into_iter().enumerate() {
        let (asked, unanswered) = a.finish();
        assert!(
            asked > 100 && unanswered == 0,
            "e{}: {asked} asked, {unanswered} unanswered",
            i + 1
        );
    }
    let (_, metrics) = http(edges[0].control_addr(), "GET", "/metrics", &[], "");
    // t01 and t02 (every target refuses both edges).
    assert!(metrics.contains("gtmd_fleet_holding 2"), "{metrics}");
    // The silent member goes: 2 probers, 2 fresh votes suffice, t01 fails over.
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let t0 = Instant::now();
    let t = switch_times(&edges, BACKUP, t0, Duration::from_secs(10));
    eprintln!("fleet: min-vantages 3, the silent third member stopped: e1, e2 answered {BACKUP} after {t:?}");
    assert!(t.iter().all(|d| *d >= Duration::from_secs(3)), "{t:?}");
}

/// Members on another epoch (here: three that only heartbeat, on epoch 5) may not have
/// this edge's checks: they are given none, so the one real edge (epoch 0) probes every
/// check itself with `probes-per-group = 1`, and a target it sees down fails over.
#[test]
fn members_on_another_epoch_are_given_no_checks() {
    let Some(bin) = nats_server() else { return };
    let dir = TempDir::new("fleet-w");
    let nats = Nats::start(&bin, &dir);
    let n = 6;
    let (targets, port) = targets(n);
    let f = edge_file(
        &dir,
        "e1",
        &nats.url(),
        (n, port, 50),
        src(1),
        "probes-per-group = 1",
    );
    let e = start_edge(&f);
    e.wait_log("fleet: live members changed", Duration::from_secs(10));
    wait_www(&e, T1);
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (1..=3).map(|i| format!("other-{i}")).collect();
    let writer = simulate(&nats.url(), names, 5, stop.clone());
    wait_fleet(&[&e], Duration::from_secs(15), "4 live members", |f| {
        live(f).len() == 4
    });
    // Two more beats: the view has settled.
    std::thread::sleep(Duration::from_secs(4));
    let f = fleet(&e);
    assert_eq!(f["probed"], n as u64, "{f}");
    assert_eq!(f["expected_votes"], 1, "{f}");
    targets.deny.lock().unwrap().push(src(1));
    let t0 = Instant::now();
    let t = switch_times(
        std::slice::from_ref(&e),
        BACKUP,
        t0,
        Duration::from_secs(10),
    );
    eprintln!("fleet: three members on another epoch: e1 probes all {n} checks, failed t01 over after {t:?}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// `[fleet]`'s sharding settings are checked with their lines; `gtmd ctl cluster` on a
/// node that is no fleet edge says so (exit 1).
#[test]
fn sharding_settings_are_checked_and_cluster_needs_an_edge() {
    let dir = TempDir::new("fleet-w");
    let extra = "group = \"a b\"\nprobes-per-group = 0\nmin-vantages = 101\nanchors = [\"192.0.2.1\", \"192.0.2.2:53\", \"nowhere:80\"]";
    let f = edge_file(&dir, "e1", "nats://127.0.0.1:1", (1, 1, 50), src(1), extra);
    let out = Command::new(BIN)
        .args(["check", "--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for want in [
        "edge.toml:46: fleet.group: 'a b' may hold only letters, digits, '-' and '_'\n",
        "edge.toml:47: fleet.probes-per-group: 0 is outside 1..=100",
        "edge.toml:48: fleet.min-vantages: 101 is outside 1..=100",
        "edge.toml:49: fleet.anchors: 'nowhere:80' is not IP (ICMP echo) or IP:PORT (TCP connect)",
    ] {
        assert!(said.contains(want), "{want}\n{said}");
    }
    assert!(!said.contains("192.0.2.2:53"), "{said}");
    let s = Server::start(&[]);
    let out = Command::new(BIN)
        .args([
            "ctl",
            "--server",
            &format!("http://{}", s.control_addr()),
            "cluster",
        ])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("not a fleet edge sharing health"), "{said}");
}
