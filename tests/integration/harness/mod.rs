//! Test harness: spawns the real `gtmd` binary on a free loopback port, learns the bound
//! address from its log, and stops it (SIGTERM, then SIGKILL) on drop, or shares one per
//! configuration for the whole binary ([`Server::shared`]); temp dirs removed on drop;
//! free ports. `dns` is the DNS client (query builder, UDP/TCP exchange, response parser).
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod dns;
pub mod mmdb;
pub mod nats;

pub use dns::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gtmd");

/// A fresh directory under the system's temp dir (`gtmd-WHAT-PID-N`, unique to this
/// process and call), removed with everything in it on drop: at the end of the test, and
/// when it panics (unwinding drops it).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("gtmd-{what}-{}-{n}", std::process::id()));
        // A directory of that name can only be a leftover of a killed run with our PID.
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path of `name` in the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
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

/// An example configuration of `examples/`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A port free on 127.0.0.1 for both UDP and TCP when asked (the kernel's choice for port
/// 0); bind it soon, someone else may take it.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The bearer token every test gtmd started by [`Server::start`] accepts (as `tests`).
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// A token file (mode 0600) with `name:token` lines, in `dir`.
pub fn token_file(dir: &TempDir, tokens: &[(&str, &str)]) -> PathBuf {
    let text: String = tokens.iter().map(|(n, t)| format!("{n}:{t}\n")).collect();
    write_private(&dir.join("tokens"), &text);
    dir.join("tokens")
}

/// Writes `text` to `path` with mode 0600, whole: written beside it, then renamed, so a
/// reader (another test run sharing the file) never sees half of it.
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    static N: AtomicUsize = AtomicUsize::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The token file holding [`TEST_TOKEN`]: one file under cargo's scratch folder for tests
/// (`target/tmp`), the same for every run, so nothing is left behind in the temp dir.
pub fn test_token_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gtmd-test-token");
        write_private(&path, &format!("tests:{TEST_TOKEN}\n"));
        path
    })
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
        Self::launch(args, true, false, &[])
    }

    /// As [`Server::start`], with these environment variables set for gtmd.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(args, true, false, env)
    }

    /// As [`Server::start`], but the control API is left as the config and `args` say.
    pub fn start_raw(args: &[&str]) -> Self {
        Self::launch(args, false, false, &[])
    }

    /// One server per `args` for the whole test binary, started as [`Server::start`] on
    /// first use and shared by every test asking for the same `args` (the DNS cases: one
    /// per fixture and backend). It is never dropped: it gets SIGTERM when this process
    /// ends, as its parent-death signal, asked for from a thread that lives as long as the
    /// process (the signal follows the thread that forked, not the process).
    pub fn shared(args: &[&str]) -> &'static Self {
        type Cells = Vec<(Vec<String>, &'static OnceLock<Server>)>;
        static SERVERS: Mutex<Cells> = Mutex::new(Vec::new());
        let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let cell: &'static OnceLock<Self> = {
            let mut cells = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
            match cells.iter().find(|(k, _)| *k == key) {
                Some((_, cell)) => cell,
                None => {
                    let cell = Box::leak(Box::new(OnceLock::new()));
                    cells.push((key.clone(), cell));
                    cell
                }
            }
        };
        cell.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let args: Vec<&str> = key.iter().map(String::as_str).collect();
                let _ = tx.send(Self::launch(&args, true, true, &[]));
                loop {
                    std::thread::park();
                }
            });
            rx.recv()
                .unwrap_or_else(|_| panic!("shared gtmd {args:?} did not start (panic above)"))
        })
    }

    /// As [`Server::start_raw`], run as user and group `uid` (when the tests run as root:
    /// a gtmd without capabilities).
    pub fn start_as(args: &[&str], uid: u32) -> Self {
        Self::launch_as(args, false, false, &[], Some(uid), &[])
    }

    /// As [`Server::start_raw`], run through `wrapper` (a program and its arguments, which
    /// then runs gtmd, e.g. `setpriv ... --`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Self {
        Self::launch_as(args, false, false, &[], None, wrapper)
    }

    fn launch(args: &[&str], control: bool, die_with_parent: bool, env: &[(&str, &str)]) -> Self {
        Self::launch_as(args, control, die_with_parent, env, None, &[])
    }

    fn launch_as(
        args: &[&str],
        control: bool,
        die_with_parent: bool,
        env: &[(&str, &str)],
        uid: Option<u32>,
        wrapper: &[&str],
    ) -> Self {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        cmd.arg("run").args(args);
        cmd.envs(env.iter().copied());
        if die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only calls
            // prctl, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if control && !args.contains(&"--control") {
            cmd.args(["--control", "127.0.0.1:0"]);
            if !args.contains(&"--control-token-file") {
                cmd.arg("--control-token-file").arg(test_token_file());
            }
        }
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
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

/// One HTTP request: its path and body (by Content-Length).
pub fn read_request(s: &mut impl std::io::Read) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let k = s.read(&mut chunk).ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(i) = text.find("\r\n\r\n") else {
            continue;
        };
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if text.len() >= i + 4 + len {
            let path = text.split_whitespace().nth(1)?.to_string();
            return Some((path, text[i + 4..i + 4 + len].to_string()));
        }
    }
}

/// A TLS server configuration with a fresh self-signed certificate for `names`, and that
/// certificate in PEM (for a client to trust).
pub fn self_signed_tls(names: &[&str]) -> (Arc<rustls::ServerConfig>, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    (Arc::new(cfg), cert.cert.pem())
}
