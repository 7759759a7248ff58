//! `io = "xdp"` end to end, as root: this process makes a network namespace
//! (`gtmdx-PID`, removed when the process exits, and swept by the next run if it was
//! killed) and, per gtmd, a veth pair whose one end stays in the root namespace with gtmd
//! attached to it and whose other end is in the namespace, where the queries come from (a
//! thread that entered it, [`in_ns`]). The DNS cases and the GSLB scenarios of
//! `tests/cases/` run over it as the `xdp` backend (`cases/mod.rs`); the tests here check
//! what is particular to XDP: IPv6, non-DNS traffic (ping, TCP) reaching the kernel, the
//! answers coming through the AF_XDP socket, the same GSLB answers by ECS as over kernel
//! sockets, and no program left attached after a stop. Without root every test here
//! passes with a message on stderr saying it was skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::harness::*;

/// Whether this process may run the XDP tests (root, `ip` present); says once why not.
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let ip = Command::new("ip").arg("-V").output().is_ok();
        if !root || !ip {
            eprintln!(
                "xdp tests skipped: they need root (network namespaces, veth, XDP, AF_XDP) and \
                 iproute2's ip"
            );
        }
        root && ip
    })
}

pub(crate) fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// This process's namespace, made on first use.
pub(crate) fn ns() -> &'static str {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| {
        // Namespaces of earlier runs that were killed before they could remove theirs.
        for line in ip(&["netns", "list"]).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name.strip_prefix("gtmdx-") {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
        let name = format!("gtmdx-{}", std::process::id());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // SAFETY: registers a plain extern "C" function, run once at exit.
        unsafe { libc::atexit(remove_ns) };
        name
    })
}

/// Removes the namespace at exit; its veth ends go with it, and with them the root ends
/// and any program still attached to them (the shared gtmds stop on their parent's death).
extern "C" fn remove_ns() {
    let name = format!("gtmdx-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
}

/// A veth pair: `root` in the root namespace with `v4`/`v6`, its peer in [`ns`] with the
/// next address. Deleted on drop.
pub(crate) struct Veth {
    pub(crate) root: String,
    /// The end in [`ns`].
    pub(crate) peer: String,
    pub(crate) v4: Ipv4Addr,
    pub(crate) v6: Ipv6Addr,
    /// RX (and TX) queues of each end.
    pub(crate) queues: u32,
}

impl Veth {
    pub(crate) fn new() -> Self {
        Self::with_queues(1)
    }

    /// A pair whose ends have `queues` RX and TX queues each.
    pub(crate) fn with_queues(queues: u32) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = ns();
        let pid = std::process::id();
        let k = N.fetch_add(1, Ordering::Relaxed);
        let (root, peer) = (format!("gx{pid}r{k}"), format!("gx{pid}n{k}"));
        // One /24 and one /64 per pair; the second octet from the PID keeps concurrent
        // runs apart.
        let s = 100 + (pid % 97) as u8;
        let (v4, v4p) = (
            Ipv4Addr::new(10, s, k as u8, 1),
            Ipv4Addr::new(10, s, k as u8, 2),
        );
        let (v6, v6p): (Ipv6Addr, Ipv6Addr) = (
            format!("fd00:6774:{s:x}:{k:x}::1").parse().unwrap(),
            format!("fd00:6774:{s:x}:{k:x}::2").parse().unwrap(),
        );
        let q = queues.to_string();
        let nq = ["numrxqueues", &q, "numtxqueues", &q];
        let mut add = vec!["link", "add", &root];
        add.extend(nq);
        add.extend(["type", "veth", "peer", "name", &peer]);
        add.extend(nq);
        add.extend(["netns", ns]);
        ip(&add);
        let me = Self {
            root,
            peer,
            v4,
            v6,
            queues,
        };
        ip(&["addr", "add", &format!("{v4}/24"), "dev", &me.root]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            &me.root,
            "nodad",
        ]);
        ip(&["link", "set", &me.root, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{v4p}/24"),
            "dev",
            &me.peer,
        ]);
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("{v6p}/64"),
            "dev",
            &me.peer,
            "nodad",
        ]);
        ip(&["-n", ns, "link", "set", &me.peer, "up"]);
        me
    }

    /// The `[server.xdp]` table for this pair.
    pub(crate) fn table(&self) -> String {
        format!(
            "\n[server.xdp]\ninterface = \"{}\"\nqueues = {}\n",
            self.root, self.queues
        )
    }

    /// Whether an XDP program is attached to the root end.
    pub(crate) fn attached(&self) -> bool {
        ip(&["link", "show", "dev", &self.root]).contains("xdp")
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.root])
            .status();
    }
}

/// Runs `f` on a thread inside [`ns`] (sockets it opens are the namespace's); its panic
/// is this one's.
pub(crate) fn in_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns());
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace file we opened; it affects this thread only.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// `tests/fixtures/` copied (configurations name zone files beside them) into a
/// directory that lives as long as the process.
fn fixtures() -> &'static TempDir {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = TempDir::new("xdp-fixtures");
        for e in std::fs::read_dir(fixture("")).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        dir
    })
}

/// Starts gtmd with the configuration `text` plus `[server.xdp]` on `veth`, listening on
/// its addresses (`v6` too), `io = "xdp"`, shared as [`Server::shared`] when `shared`;
/// checks that the program attached (not the kernel-socket fallback).
fn start(text: &str, name: &str, veth: &Veth, v6: bool, dir: &TempDir) -> Server {
    let cfg = dir.write(name, &format!("{text}{}", veth.table()));
    let s = Server::start(&as_strs(&xdp_args(&cfg, veth, v6, &[])));
    s.wait_log("io=\"xdp-", Duration::from_secs(5));
    s
}

/// `gtmd run` arguments for `cfg` over XDP, listening on `veth`'s address (and its IPv6
/// one, on the same port, with `v6`), then `more`.
fn xdp_args(cfg: &std::path::Path, veth: &Veth, v6: bool, more: &[&str]) -> Vec<String> {
    // One port for both families (port 0 would pick one per listener).
    let port = if v6 { free_port() } else { 0 };
    let mut args: Vec<String> = ["--config", cfg.to_str().unwrap(), "--io", "xdp"]
        .map(String::from)
        .to_vec();
    args.extend(["--listen".into(), format!("{}:{port}", veth.v4)]);
    if v6 {
        args.extend(["--listen".into(), format!("[{}]:{port}", veth.v6)]);
    }
    args.extend(more.iter().map(|a| a.to_string()));
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// gtmd serving `tests/fixtures/zones.toml` plus `extra` over XDP on `veth` (see
/// [`start`]), its configuration written as `name`.
pub(crate) fn zones_server(name: &str, veth: &Veth, extra: &str, v6: bool) -> Server {
    let text = std::fs::read_to_string(fixture("zones.toml")).unwrap();
    start(&format!("{text}{extra}"), name, veth, v6, fixtures())
}

/// `tests/fixtures/zones.toml` with `veth`'s `[server.xdp]`, written as `name`.
fn zones_cfg(name: &str, veth: &Veth) -> std::path::PathBuf {
    let text = std::fs::read_to_string(fixture("zones.toml")).unwrap();
    fixtures().write(name, &format!("{text}{}", veth.table()))
}

/// How many of `n` exchanges of `q` with `to` from inside the namespace were answered.
fn answered(to: SocketAddr, q: &[u8], n: usize) -> usize {
    in_ns(|| {
        (0..n)
            .filter(|_| udp_exchange(to, q, Duration::from_secs(2)).is_some())
            .count()
    })
}

/// [`start`] for a server that lives as long as the test process, and dies with it
/// ([`Server::shared`]).
fn start_shared(text: &str, name: &str, veth: &Veth, dir: &TempDir) -> &'static Server {
    let cfg = dir.write(name, &format!("{text}{}", veth.table()));
    let s = Server::shared(&as_strs(&xdp_args(&cfg, veth, false, &[])));
    s.wait_log("io=\"xdp-", Duration::from_secs(5));
    s
}

/// The gtmd of the DNS cases for `fixture_name` over XDP, one per fixture for the whole
/// binary (its veth lives as long as the process).
pub(crate) fn shared_server(fixture_name: &str) -> &'static Server {
    static SERVERS: Mutex<Vec<(String, &'static Server)>> = Mutex::new(Vec::new());
    let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = servers.iter().find(|(f, _)| f == fixture_name) {
        return s;
    }
    let text = std::fs::read_to_string(fixture(fixture_name)).unwrap();
    let veth = Box::leak(Box::new(Veth::new()));
    let name = format!("xdp-{fixture_name}");
    let s = start_shared(&text, &name, veth, fixtures());
    servers.push((fixture_name.to_string(), s));
    s
}

/// A scenario's gtmd over XDP: its configuration `text` (written to `cfg` with the
/// `[server.xdp]` table, which the scenario's edits keep) on a veth of its own.
pub(crate) fn scenario_server(text: &mut String, cfg: &std::path::Path) -> (Server, Veth) {
    let veth = Veth::new();
    text.push_str(&veth.table());
    std::fs::write(cfg, &*text).unwrap();
    let s = Server::start(&as_strs(&xdp_args(cfg, &veth, false, &[])));
    s.wait_log("io=\"xdp-", Duration::from_secs(5));
    (s, veth)
}

/// One ICMP echo from inside the namespace to `to`: whether the reply came.
fn ping(to: Ipv4Addr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    in_ns(|| {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut pkt = [8u8, 0, 0, 0, 0x67, 0x74, 0, 1, b'g', b't', b'm', b'd'];
        let mut sum: u32 = pkt
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        pkt[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        s.send_to(&pkt, &SocketAddr::new(IpAddr::V4(to), 0).into())
            .unwrap();
        for _ in 0..10 {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            let Ok((n, _)) = s.recv_from(&mut buf) else {
                continue;
            };
            // SAFETY: recv_from initialised the first n octets.
            let b: Vec<u8> = buf[..n]
                .iter()
                .map(|x| unsafe { x.assume_init() })
                .collect();
            let ihl = ((b[0] & 0x0F) * 4) as usize;
            if b[12..16] == to.octets() && b.get(ihl) == Some(&0) && b.get(ihl + 4) == Some(&0x67) {
                return true;
            }
        }
        false
    })
}

const A: u16 = 1;
const AAAA: u16 = 28;

/// UDP over IPv4 and IPv6 through the AF_XDP socket (bound with need-wakeup), TCP and ping
/// through the kernel, on the same addresses; after the stop the interface has no program and the socket's
/// count shows the UDP queries went through it.
#[test]
fn non_dns_reaches_the_kernel_and_stop_detaches() {
    if !available() {
        return;
    }
    let veth = Veth::new();
    let mut s = zones_server("xdp-own-zones.toml", &veth, "", true);
    assert!(veth.attached(), "program attached while serving");
    // Bound with XDP_USE_NEED_WAKEUP (kernel 5.4 and later).
    let attached = s.wait_log("xdp: program attached", Duration::from_secs(1));
    assert!(attached.contains("need_wakeup=true"), "{attached}");
    let a6 = SocketAddr::new(IpAddr::V6(veth.v6), s.addr.port());
    let q = Q::new("www.example.test", A).build();
    let q6 = Q::new("www.example.test", AAAA).build();
    let (a, b, c, d) = in_ns(|| {
        let a = udp_exchange(s.addr, &q, Duration::from_secs(2)).map(|r| Msg::parse(&r));
        let b = udp_exchange(a6, &q6, Duration::from_secs(2)).map(|r| Msg::parse(&r));
        let c = s.tcp(&q);
        let mut t = std::net::TcpStream::connect(a6).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        tcp_send(&mut t, &q6);
        let d = Msg::parse(&tcp_recv(&mut t).expect("tcp answer over IPv6"));
        (a, b, c, d)
    });
    let a = a.expect("UDP answer over IPv4 (AF_XDP)");
    let b = b.expect("UDP answer over IPv6 (AF_XDP)");
    assert_eq!((a.rcode(), a.answer.len()), (0, 2), "{a:?}");
    assert_eq!((b.rcode(), b.answer.len()), (0, 1), "{b:?}");
    let same = |x: &Msg, y: &Msg| format!("{:?}", x.answer) == format!("{:?}", y.answer);
    assert!(
        same(&a, &c),
        "UDP (XDP) and TCP (kernel) answer alike: {a:?} {c:?}"
    );
    assert!(same(&b, &d), "{b:?} {d:?}");
    assert!(ping(veth.v4), "ping (ICMP) reaches the kernel");
    // UDP to another port of the same address reaches the kernel too.
    let other = std::net::UdpSocket::bind((veth.v4, 0)).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let to = other.local_addr().unwrap();
    in_ns(|| {
        let c = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        c.send_to(b"not dns", to).unwrap();
    });
    let mut buf = [0u8; 16];
    let got = other
        .recv(&mut buf)
        .expect("UDP to another port reaches the kernel");
    assert_eq!(&buf[..got], b"not dns");
    // A reload keeps the program and the sockets.
    s.signal(libc::SIGHUP);
    s.wait_log("generation=2", Duration::from_secs(5));
    assert!(veth.attached(), "program attached after a reload");
    assert_eq!(answered(s.addr, &q, 1), 1, "answered after a reload");
    let (_, status) = s.stop();
    assert!(status.success(), "{status}");
    let closed = s.wait_log("xdp: AF_XDP socket closed", Duration::from_secs(1));
    assert!(closed.contains("received=3 answered=3"), "{closed}");
    s.wait_log("xdp: program detached", Duration::from_secs(1));
    assert!(!veth.attached(), "no program attached after the stop");
}

/// Without the capability to attach (here: an interface that does not exist), gtmd says
/// why and serves UDP on kernel sockets.
#[test]
fn falls_back_to_kernel_sockets() {
    let dir = TempDir::new("xdp-fallback");
    let text = std::fs::read_to_string(fixture("zones.toml")).unwrap();
    let cfg = dir.write(
        "zones.toml",
        &format!("{text}\n[server.xdp]\ninterface = \"gtmd-none0\"\n"),
    );
    let _ = std::fs::copy(fixture("other.test.zone"), dir.join("other.test.zone"));
    let s = Server::start(&["--config", cfg.to_str().unwrap(), "--io", "xdp"]);
    let why = s.wait_log("xdp:", Duration::from_secs(5));
    assert!(
        why.contains("no interface 'gtmd-none0'") && why.contains("kernel sockets"),
        "{why}"
    );
    s.wait_log("io=\"mmsg\"", Duration::from_secs(2));
    let r = s
        .udp(&Q::new("www.example.test", A).build())
        .expect("answered");
    assert_eq!(r.answer.len(), 2);
    // No AF_XDP socket, no AF_XDP series.
    let (text, _) = crate::metrics::metrics(&s);
    assert!(text.contains("gtmd_queries_total"), "{text}");
    assert!(!text.contains("gtmd_xdp_"), "{text}");
}

/// A GSLB configuration answers the same over XDP as over kernel sockets, for clients of
/// different lines given by ECS and for one without ECS.
#[test]
fn gslb_by_ecs_same_as_kernel_sockets() {
    if !available() {
        return;
    }
    let dir = TempDir::new("xdp-gslb");
    let text = std::fs::read_to_string(example("carrier-lines.toml")).unwrap();
    let kernel_cfg = dir.write("kernel.toml", &text);
    let kernel = Server::start(&["--config", kernel_cfg.to_str().unwrap(), "--io", "mmsg"]);
    let mut xdp_text = text.clone();
    let (xdp, _veth) = scenario_server(&mut xdp_text, &dir.join("xdp.toml"));
    let mut queries = vec![Q::new("app.example.test", A).build()];
    for client in [[192, 0, 2], [198, 51, 100], [203, 0, 113], [10, 1, 2]] {
        let q = Q::new("app.example.test", A)
            .edns(1232)
            .ecs(1, 24, 0, &client);
        queries.push(q.build());
    }
    let over_xdp: Vec<Msg> = in_ns(|| {
        queries
            .iter()
            .map(|q| xdp.udp(q).expect("xdp answer"))
            .collect()
    });
    for (q, x) in queries.iter().zip(&over_xdp) {
        let k = kernel.udp(q).expect("kernel answer");
        let show = |m: &Msg| format!("{} {:?} {:?}", m.rcode(), m.answer, m.option(8));
        assert_eq!(show(x), show(&k), "query {}", hex(q));
    }
    let distinct: std::collections::HashSet<String> =
        over_xdp.iter().map(|m| format!("{:?}", m.answer)).collect();
    assert!(
        distinct.len() > 1,
        "the lines give different answers: {distinct:?}"
    );
}

/// The program is attached through a bpf_link: when gtmd is killed (no clean-up of its
/// own), the kernel removes it with gtmd's descriptors.
#[test]
fn killed_gtmd_leaves_no_program() {
    if !available() {
        return;
    }
    let veth = Veth::new();
    let mut s = zones_server("xdp-killed-zones.toml", &veth, "", false);
    assert!(veth.attached(), "program attached while serving");
    s.wait_log("attach=\"bpf_link\"", Duration::from_secs(1));
    s.signal(libc::SIGKILL);
    let (_, status) = s.stop();
    assert!(!status.success(), "killed: {status}");
    // The link goes when the last reference to it does; give the kernel a moment.
    let t0 = std::time::Instant::now();
    while veth.attached() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!veth.attached(), "no program attached after SIGKILL");
}

/// `queues = 2` on a pair with two queues: each shard's socket gets the queries of its
/// queue (the peer spreads flows over its TX queues by hash, each source port a flow), and
/// every query is answered.
#[test]
fn two_queues_two_sockets() {
    if !available() {
        return;
    }
    let veth = Veth::with_queues(2);
    let mut s = zones_server("xdp-two-queues.toml", &veth, "", false);
    let q = Q::new("www.example.test", A).build();
    assert_eq!(answered(s.addr, &q, 40), 40);
    s.stop();
    let closed: Vec<String> = s
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("AF_XDP socket closed"))
        .cloned()
        .collect();
    assert_eq!(closed.len(), 2, "{closed:?}");
    let received = |l: &str| -> u32 {
        l.split("received=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let counts: Vec<u32> = closed.iter().map(|l| received(l)).collect();
    assert_eq!(counts.iter().sum::<u32>(), 40, "{closed:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "both queues served: {closed:?}"
    );
}

/// Without the capabilities (gtmd as `nobody`), opening the AF_XDP socket fails: gtmd says
/// what it needs and answers over kernel sockets; no program is attached.
#[test]
fn without_capabilities_falls_back() {
    if !available() {
        return;
    }
    let veth = Veth::new();
    let cfg = zones_cfg("xdp-nobody.toml", &veth);
    let args = xdp_args(&cfg, &veth, false, &["--control", "off"]);
    let s = Server::start_as(&as_strs(&args), 65534);
    let why = s.wait_log("xdp:", Duration::from_secs(5));
    assert!(
        why.contains("Operation not permitted")
            && why.contains("CAP_NET_RAW")
            && why.contains("kernel sockets"),
        "{why}"
    );
    s.wait_log("io=\"mmsg\"", Duration::from_secs(2));
    assert!(!veth.attached());
    let q = Q::new("www.example.test", A).build();
    assert_eq!(answered(s.addr, &q, 1), 1, "answered over kernel sockets");
}

/// An MTU below `udp-payload` + 48 is warned about at start-up (answers are not
/// fragmented); small answers go out whole, one over the MTU truncated (TC=1, no records),
/// counted as truncated.
#[test]
fn mtu_below_udp_payload_warns() {
    if !available() {
        return;
    }
    let veth = Veth::new();
    ip(&["link", "set", "dev", &veth.root, "mtu", "800"]);
    let s = zones_server("xdp-mtu.toml", &veth, "", false);
    let w = s.wait_log("do not fit the MTU", Duration::from_secs(2));
    assert!(
        w.contains("mtu=800") && w.contains("udp_payload=1232"),
        "{w}"
    );
    let q = Q::new("www.example.test", A).build();
    // big.example.test TXT: 901 octets (tests/cases/truncation.case), over the MTU.
    let big = Q::new("big.example.test", 16).edns(4096).build();
    let (small, big) = in_ns(|| {
        let small = udp_exchange(s.addr, &q, Duration::from_secs(2)).map(|r| Msg::parse(&r));
        let big = udp_exchange(s.addr, &big, Duration::from_secs(2)).map(|r| Msg::parse(&r));
        (small, big)
    });
    assert_eq!(small.expect("small answer").answer.len(), 2);
    let big = big.expect("a truncated answer");
    assert!(big.flags & 0x0200 != 0, "TC set: {big:?}");
    assert_eq!(big.counts[1], 0, "no records: {big:?}");
    assert!(big.opt().is_some(), "the OPT kept");
}

/// `[dnstap]` logs queries answered over XDP with the client's address and port as the
/// frame gave them (the sockaddr the XDP backend builds), IPv4 and IPv6.
#[test]
fn dnstap_logs_queries_answered_over_xdp() {
    if !available() {
        return;
    }
    let veth = Veth::new();
    let tap = fixtures().join("xdp-tap.fstrm");
    let _ = std::fs::remove_file(&tap);
    let extra = "\n[dnstap]\nfile = \"xdp-tap.fstrm\"\n";
    let mut s = zones_server("xdp-dnstap.toml", &veth, extra, true);
    let a6 = SocketAddr::new(IpAddr::V6(veth.v6), s.addr.port());
    let (p4, p6) = in_ns(|| {
        let c4 = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let c6 = std::net::UdpSocket::bind("[::]:0").unwrap();
        let mut buf = [0u8; 512];
        for (c, to, t) in [(&c4, s.addr, A), (&c6, a6, AAAA)] {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c.send_to(&Q::new("www.example.test", t).build(), to)
                .unwrap();
            assert!(
                c.recv(&mut buf).is_ok(),
                "answered from {}",
                c.local_addr().unwrap()
            );
        }
        (
            c4.local_addr().unwrap().port(),
            c6.local_addr().unwrap().port(),
        )
    });
    s.stop();
    let out = Command::new("dnstap-ldns")
        .arg("-r")
        .arg(&tap)
        .arg("-y")
        .output()
        .expect("dnstap-ldns (Debian package dnstap-ldns; tools/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let peer4 = Ipv4Addr::from(u32::from(veth.v4) + 1);
    let peer6 = Ipv6Addr::from(u128::from(veth.v6) + 1);
    for (addr, port, family) in [
        (peer4.to_string(), p4, "INET"),
        (peer6.to_string(), p6, "INET6"),
    ] {
        let msg = text
            .split("---")
            .find(|m| m.contains(&format!("query_address: \"{addr}\"")))
            .unwrap_or_else(|| panic!("no message from {addr} in:\n{text}"));
        assert!(msg.contains(&format!("query_port: {port}")), "{msg}");
        assert!(msg.contains(&format!("socket_family: {family}")), "{msg}");
        assert!(msg.contains("socket_protocol: UDP"), "{msg}");
    }
}

/// `/metrics` shows each AF_XDP socket's counters by shard: after N queries over XDP, gtmd
/// received and answered N frames, and the kernel's `XDP_STATISTICS` (read by the shard
/// about once a second) show no drop and at least one send that emptied the TX ring.
#[test]
fn metrics_show_af_xdp_counters() {
    if !available() {
        return;
    }
    const N: usize = 25;
    let veth = Veth::new();
    let s = zones_server("xdp-metrics.toml", &veth, "", false);
    let q = Q::new("www.example.test", A).build();
    assert_eq!(answered(s.addr, &q, N), N);
    // The kernel's counters are read once a second.
    std::thread::sleep(Duration::from_millis(1300));
    let (text, m) = crate::metrics::metrics(&s);
    crate::metrics::promtool_passes(&text);
    let get = |name: &str| -> f64 {
        let key = format!("gtmd_xdp_{name}_total{{shard=\"0\"}}");
        *m.get(&key)
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
    };
    assert_eq!(get("received"), N as f64, "{text}");
    assert_eq!(get("answered"), N as f64, "{text}");
    for zero in [
        "rx_dropped",
        "rx_invalid_descs",
        "tx_invalid_descs",
        "rx_ring_full",
    ] {
        assert_eq!(get(zero), 0.0, "{zero}: {text}");
    }
    // Every send kick ends on an empty TX ring (copy mode): the kernel's count came in.
    assert!(get("tx_ring_empty_descs") >= 1.0, "{text}");
    get("rx_fill_ring_empty_descs");
    // The UDP queries were counted as answers too, as over any backend.
    let udp: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("gtmd_queries_total{") && k.contains("transport=\"udp\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(udp, N as f64, "{text}");
}

/// The capabilities `AmbientCapabilities=` lines of a unit file grant, as setpriv's names
/// (`CAP_BPF` -> `bpf`).
fn ambient_caps(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("AmbientCapabilities="))
        .flat_map(str::split_whitespace)
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// `systemd/gtmd-xdp.conf` installed as a drop-in of `systemd/gtmd.service`
/// (`gtmd.service.d/xdp.conf`): `systemd-analyze verify` passes with nothing on stderr
/// (an unknown or misspelt key would be reported there), the drop-in is read (the offline
/// security report then lists the BPF capability and the bpf syscall) and the exposure
/// stays at 2.1 or lower (the unit alone: 1.6). As root: gtmd run as `nobody` with exactly
/// the capabilities the unit and the drop-in grant (setpriv sets the ambient, inheritable
/// and bounding sets) attaches XDP and answers through the AF_XDP socket.
#[test]
fn systemd_drop_in_verifies_and_its_capabilities_suffice() {
    let sd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let unit = std::fs::read_to_string(sd.join("gtmd.service")).unwrap();
    let drop_in = std::fs::read_to_string(sd.join("gtmd-xdp.conf")).unwrap();
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match analyze {
        Some(analyze) => drop_in_verifies(analyze, &unit, &drop_in),
        None => eprintln!("SKIPPED (systemd-analyze part): systemd-analyze is not installed"),
    }
    if !available() {
        return;
    }
    let caps: Vec<String> = ambient_caps(&unit)
        .into_iter()
        .chain(ambient_caps(&drop_in))
        .map(|c| format!("+{c}"))
        .collect();
    let caps = caps.join(",");
    let veth = Veth::new();
    let cfg = zones_cfg("xdp-caps.toml", &veth);
    let args = xdp_args(&cfg, &veth, false, &["--control", "off"]);
    let (inh, amb, bnd) = (
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
    );
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inh,
        &amb,
        &bnd,
        "--",
    ];
    let mut s = Server::start_wrapped(&wrapper, &as_strs(&args));
    let line = s.wait_log("xdp:", Duration::from_secs(5));
    assert!(line.contains("program attached"), "{caps}: {line}");
    assert!(veth.attached());
    let q = Q::new("www.example.test", A).build();
    assert_eq!(answered(s.addr, &q, 1), 1);
    let (_, status) = s.stop();
    assert!(status.success(), "{status}");
    let closed = s.wait_log("xdp: AF_XDP socket closed", Duration::from_secs(1));
    assert!(closed.contains("received=1 answered=1"), "{closed}");
}

/// The systemd-analyze half of the test above.
fn drop_in_verifies(analyze: &str, unit: &str, drop_in: &str) {
    let dir = TempDir::new("xdp-unit");
    let path = dir.write("gtmd.service", &unit.replace("/usr/local/sbin/gtmd", BIN));
    std::fs::create_dir(dir.join("gtmd.service.d")).unwrap();
    std::fs::write(dir.join("gtmd.service.d/xdp.conf"), drop_in).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    let out = Command::new(analyze)
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Service may load BPF programs") && text.contains("bpf is allowed"),
        "the drop-in was not read: {text}"
    );
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for gtmd.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.1, "exposure {level}: {text}");
}
