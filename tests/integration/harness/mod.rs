//! Test harness: spawns the real `gtmd` binary on a free loopback port, learns the bound
//! address from its log, and stops it (SIGTERM, then SIGKILL) on drop. Plus a minimal DNS
//! client: query builder, UDP/TCP exchange and a response parser.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod mmdb;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gtmd");

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("gtmd-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    /// Writes `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The bearer token every test gtmd started by [`Server::start`] accepts (as `tests`).
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// A token file (mode 0600) with `name:token` lines, in a fresh folder of its own.
pub fn token_file(tokens: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gtmd-tokens-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens");
    let text: String = tokens.iter().map(|(n, t)| format!("{n}:{t}\n")).collect();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The token file holding [`TEST_TOKEN`].
pub fn test_token_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| token_file(&[("tests", TEST_TOKEN)]))
        .clone()
}

/// One request to a control API: `Host: localhost`, plus `headers`; the body with
/// `Content-Length`. Returns the status and the response body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    c.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// [`http`] with the test token.
pub fn http_auth(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {TEST_TOKEN}");
    http(addr, method, path, &[("Authorization", &auth)], body)
}

/// A running gtmd.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `gtmd run` with `args` plus `--listen 127.0.0.1:0` and, unless `args` say
    /// `--control`, `--control 127.0.0.1:0` with the test token; waits until ready.
    pub fn start(args: &[&str]) -> Self {
        Self::launch(args, true)
    }

    /// As [`Server::start`], but the control API is left as the config and `args` say.
    pub fn start_raw(args: &[&str]) -> Self {
        Self::launch(args, false)
    }

    fn launch(args: &[&str], control: bool) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").args(args);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if control && !args.contains(&"--control") {
            cmd.args(["--control", "127.0.0.1:0"]);
            if !args.contains(&"--control-token-file") {
                cmd.arg("--control-token-file").arg(test_token_file());
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gtmd");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let mut s = Self {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        let line = s.wait_log("listening udp=", Duration::from_secs(10));
        let a = line
            .split("udp=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        s.addr = a.parse().unwrap();
        s.wait_log(" ready", Duration::from_secs(10));
        s
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for a log line containing `needle`, returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if t0.elapsed() > timeout {
                panic!(
                    "no log line with {needle:?} within {timeout:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The control API's address, from its log line.
    pub fn control_addr(&self) -> SocketAddr {
        let line = self.wait_log("control API listening", Duration::from_secs(5));
        line.split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM and wait; returns how long the exit took and the exit status.
    pub fn stop(&mut self) -> (Duration, std::process::ExitStatus) {
        let t0 = Instant::now();
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                // let the log reader catch the last lines
                std::thread::sleep(Duration::from_millis(50));
                return (t0.elapsed(), st);
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("gtmd did not stop within 5 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn udp(&self, q: &[u8]) -> Option<Msg> {
        udp_exchange(self.addr, q, Duration::from_millis(1500)).map(|r| Msg::parse(&r))
    }

    pub fn udp_raw(&self, q: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        udp_exchange(self.addr, q, timeout)
    }

    pub fn tcp(&self, q: &[u8]) -> Msg {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        tcp_send(&mut s, q);
        Msg::parse(&tcp_recv(&mut s).expect("tcp answer"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(2) {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn udp_exchange(addr: SocketAddr, q: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.send_to(q, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    match s.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn tcp_send(s: &mut TcpStream, q: &[u8]) {
    let mut b = (q.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(q);
    s.write_all(&b).unwrap();
}

pub fn tcp_recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut l = [0u8; 2];
    s.read_exact(&mut l).ok()?;
    let mut b = vec![0u8; u16::from_be_bytes(l) as usize];
    s.read_exact(&mut b).ok()?;
    Some(b)
}

/// Wire-format name from "a.b.c" (case kept).
pub fn wire(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// (payload, version, DO, options) of a query's OPT.
pub type EdnsSpec = (u16, u8, bool, Vec<(u16, Vec<u8>)>);

/// A query under construction.
#[derive(Clone)]
pub struct Q {
    pub id: u16,
    pub flags: u16,
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsSpec>,
    pub extra_ar: Vec<Vec<u8>>,
    pub counts_override: Option<[u16; 4]>,
}

impl Q {
    pub fn new(name: &str, qtype: u16) -> Self {
        Self {
            id: 0xBEEF,
            flags: 0x0100,
            name: wire(name),
            qtype,
            qclass: 1,
            edns: None,
            extra_ar: Vec::new(),
            counts_override: None,
        }
    }
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns = Some((payload, 0, false, Vec::new()));
        self
    }
    pub fn opt(mut self, code: u16, data: &[u8]) -> Self {
        self.edns
            .as_mut()
            .expect("edns first")
            .3
            .push((code, data.to_vec()));
        self
    }
    pub fn ecs(self, family: u16, source: u8, scope: u8, addr: &[u8]) -> Self {
        let mut d = family.to_be_bytes().to_vec();
        d.push(source);
        d.push(scope);
        d.extend_from_slice(addr);
        self.opt(8, &d)
    }
    pub fn build(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.flags.to_be_bytes());
        let ar = self.edns.is_some() as u16 + self.extra_ar.len() as u16;
        let counts = self.counts_override.unwrap_or([1, 0, 0, ar]);
        for c in counts {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(&self.name);
        p.extend_from_slice(&self.qtype.to_be_bytes());
        p.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some((payload, version, dnssec_ok, opts)) = &self.edns {
            p.push(0);
            p.extend_from_slice(&41u16.to_be_bytes());
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(0);
            p.push(*version);
            p.push(if *dnssec_ok { 0x80 } else { 0 });
            p.push(0);
            let mut rd = Vec::new();
            for (c, d) in opts {
                rd.extend_from_slice(&c.to_be_bytes());
                rd.extend_from_slice(&(d.len() as u16).to_be_bytes());
                rd.extend_from_slice(d);
            }
            p.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            p.extend_from_slice(&rd);
        }
        for r in &self.extra_ar {
            p.extend_from_slice(r);
        }
        p
    }
}

/// One parsed resource record.
#[derive(Debug, Clone)]
pub struct Rr {
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: Vec<u8>,
    /// Decoded data for common types (address, name, SOA fields).
    pub data: String,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Msg {
    pub raw: Vec<u8>,
    pub id: u16,
    pub flags: u16,
    pub counts: [u16; 4],
    pub question_raw: Vec<u8>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
}

impl Msg {
    pub fn rcode(&self) -> u16 {
        let ext = self.opt().map_or(0, |o| (o.ttl >> 24) as u16);
        (ext << 4) | (self.flags & 0xF)
    }
    pub fn aa(&self) -> bool {
        self.flags & 0x0400 != 0
    }
    pub fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    pub fn opt(&self) -> Option<&Rr> {
        self.additional.iter().find(|r| r.rtype == 41)
    }
    /// The data of every EDNS option of the OPT with code `code`.
    pub fn options(&self, code: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some(o) = self.opt() else { return out };
        let rd = &o.rdata;
        let mut i = 0;
        while i + 4 <= rd.len() {
            let c = u16::from_be_bytes([rd[i], rd[i + 1]]);
            let l = u16::from_be_bytes([rd[i + 2], rd[i + 3]]) as usize;
            if c == code {
                out.push(rd[i + 4..i + 4 + l].to_vec());
            }
            i += 4 + l;
        }
        assert_eq!(i, rd.len(), "OPT options overrun its RDATA");
        out
    }
    /// The one option `code`, if present.
    pub fn option(&self, code: u16) -> Option<Vec<u8>> {
        let mut v = self.options(code);
        assert!(v.len() <= 1, "option {code} twice");
        v.pop()
    }
    /// Data of the answer records of type `t`, sorted.
    pub fn answers(&self, t: u16) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == t)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }

    pub fn parse(b: &[u8]) -> Self {
        let be = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let counts = [be(4), be(6), be(8), be(10)];
        let mut pos = 12;
        let qstart = pos;
        for _ in 0..counts[0] {
            let (_, p) = read_name(b, pos);
            pos = p + 4;
        }
        let question_raw = b[qstart..pos].to_vec();
        let mut secs = [Vec::new(), Vec::new(), Vec::new()];
        for (s, sec) in secs.iter_mut().enumerate() {
            for _ in 0..counts[s + 1] {
                let (name, p) = read_name(b, pos);
                let rtype = be(p);
                let class = be(p + 2);
                let ttl = u32::from_be_bytes([b[p + 4], b[p + 5], b[p + 6], b[p + 7]]);
                let len = be(p + 8) as usize;
                let rd = p + 10;
                let rdata = b[rd..rd + len].to_vec();
                let data = match rtype {
                    1 => format!("{}.{}.{}.{}", rdata[0], rdata[1], rdata[2], rdata[3]),
                    28 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&rdata[..]).unwrap())
                        .to_string(),
                    2 | 5 | 12 => read_name(b, rd).0,
                    6 => {
                        let (m, p1) = read_name(b, rd);
                        let (r, p2) = read_name(b, p1);
                        let mut t = Vec::new();
                        for k in 0..5 {
                            let o = p2 + 4 * k;
                            t.push(
                                u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
                                    .to_string(),
                            );
                        }
                        format!("{m} {r} {}", t.join(" "))
                    }
                    15 => format!("{} {}", be(rd), read_name(b, rd + 2).0),
                    16 | 13 => {
                        let mut s = Vec::new();
                        let mut i = 0;
                        while i < rdata.len() {
                            let l = rdata[i] as usize;
                            s.push(String::from_utf8_lossy(&rdata[i + 1..i + 1 + l]).to_string());
                            i += 1 + l;
                        }
                        s.join(" ")
                    }
                    _ => format!("{rdata:?}"),
                };
                sec.push(Rr {
                    name,
                    rtype,
                    class,
                    ttl,
                    rdata,
                    data,
                });
                pos = rd + len;
            }
        }
        assert_eq!(pos, b.len(), "trailing bytes in response");
        let [answer, authority, additional] = secs;
        Self {
            raw: b.to_vec(),
            id: be(0),
            flags: be(2),
            counts,
            question_raw,
            answer,
            authority,
            additional,
        }
    }
}

/// Reads a possibly compressed name (case kept), returns it and the position after it.
pub fn read_name(b: &[u8], mut pos: usize) -> (String, usize) {
    let mut out = String::new();
    let mut end = None;
    let mut hops = 0;
    loop {
        let l = b[pos] as usize;
        if l == 0 {
            pos += 1;
            break;
        }
        if l >= 0xC0 {
            let t = ((l & 0x3F) << 8) | b[pos + 1] as usize;
            assert!(t < pos, "compression pointer must point backwards");
            if end.is_none() {
                end = Some(pos + 2);
            }
            pos = t;
            hops += 1;
            assert!(hops < 64);
            continue;
        }
        out.push_str(&String::from_utf8_lossy(&b[pos + 1..pos + 1 + l]));
        out.push('.');
        pos += 1 + l;
    }
    if out.is_empty() {
        out.push('.');
    }
    (out, end.unwrap_or(pos))
}
