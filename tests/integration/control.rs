//! Issue 10 through the real binary: one process per address (a second gtmd, or any
//! socket, on an address in use makes start-up fail with exit 2 before anything is
//! served), the control API's security (tokens, Host, Origin, TLS), and what a reload
//! applies (`[alerts]`, `[control]`, stale persisted overrides).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

const A: u16 = 1;

/// Runs `gtmd run ARGS` until it exits or `timeout` passes. `Ok((code, stderr))` when it
/// exited; `Err(stderr so far)` when it was still running (it is then killed by PID).
fn run_to_exit(args: &[&str], timeout: Duration) -> Result<(i32, String), String> {
    let mut child = Command::new(BIN)
        .arg("run")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Arc::new(Mutex::new(String::new()));
    let e2 = err.clone();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut e = e2.lock().unwrap();
            e.push_str(&l);
            e.push('\n');
        }
    });
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            reader.join().unwrap();
            let text = err.lock().unwrap().clone();
            return Ok((st.code().unwrap_or(-1), text));
        }
        if t0.elapsed() > timeout {
            // SAFETY: signalling our own child by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            let text = err.lock().unwrap().clone();
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that `gtmd run ARGS` fails with exit 2 naming `want`, before serving anything.
fn refused(args: &[&str], want: &str) -> String {
    match run_to_exit(args, Duration::from_secs(10)) {
        Ok((code, err)) => {
            assert_eq!(code, 2, "exit code; stderr:\n{err}");
            assert!(err.contains(want), "stderr names {want:?}:\n{err}");
            assert!(
                !err.contains("listening udp=") && !err.contains("control: ready"),
                "nothing served before failing:\n{err}"
            );
            err
        }
        Err(err) => panic!("gtmd started on an address in use (it should exit 2):\n{err}"),
    }
}

/// A socket as any other SO_REUSEPORT server of this user would hold it, on `ip` and a
/// free port (another is tried when a test beside this one takes the port first).
fn reuseport(tcp: bool, ip: &str) -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Protocol, Socket, Type};
    loop {
        let addr: SocketAddr = format!("{ip}:{}", free_port()).parse().unwrap();
        let (ty, proto) = if tcp {
            (Type::STREAM, Protocol::TCP)
        } else {
            (Type::DGRAM, Protocol::UDP)
        };
        let s = Socket::new(Domain::for_address(addr), ty, Some(proto)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        if s.bind(&addr.into()).is_ok() && (!tcp || s.listen(16).is_ok()) {
            return (s, addr);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. One process per address

/// A second gtmd on the address a first one serves exits 2 naming the address; the first
/// keeps every query.
#[test]
fn a_second_gtmd_on_a_served_address_exits_2() {
    let first = Server::start(&[]);
    let addr = first.addr.to_string();
    refused(
        &["--listen", &addr, "--control", "off"],
        &format!("cannot bind udp {addr}: address already in use"),
    );
    for _ in 0..20 {
        let m = first
            .udp(&Q::new("www.example.test", A).build())
            .expect("answer");
        assert_eq!(m.rcode(), 0);
    }
}

/// Overlapping addresses count: a wildcard listener covers 127.0.0.1 on its port, and a
/// listener on 127.0.0.1 is part of what a wildcard would serve.
#[test]
fn overlapping_wildcard_addresses_are_in_use() {
    let first = Server::start(&[]);
    let wild = format!("0.0.0.0:{}", first.addr.port());
    refused(
        &["--listen", &wild, "--control", "off"],
        &format!("cannot bind udp {wild}: address already in use"),
    );
    let (_held, wild) = reuseport(false, "0.0.0.0");
    let lo = format!("127.0.0.1:{}", wild.port());
    refused(
        &["--listen", &lo, "--control", "off"],
        &format!("cannot bind udp {lo}: address already in use"),
    );
}

/// A SO_REUSEPORT socket of the same user (which the kernel would let gtmd join, splitting
/// the traffic) makes start-up fail, for UDP and for TCP.
#[test]
fn a_reuseport_socket_of_the_same_user_is_not_joined() {
    for tcp in [false, true] {
        let (_held, addr) = reuseport(tcp, "127.0.0.1");
        let proto = if tcp { "tcp" } else { "udp" };
        refused(
            &["--listen", &addr.to_string(), "--control", "off"],
            &format!("cannot bind {proto} {addr}: address already in use"),
        );
    }
}

/// Two gtmds started at the same instant on one address: exactly one serves.
#[test]
fn simultaneous_starts_leave_one_server() {
    for round in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let go = |addr: String| {
            std::thread::spawn(move || {
                run_to_exit(
                    &["--listen", &addr, "--control", "off"],
                    Duration::from_secs(4),
                )
            })
        };
        let (a, b) = (go(addr.clone()), go(addr));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let exited: Vec<_> = [&a, &b]
            .into_iter()
            .filter_map(|r| r.as_ref().ok())
            .collect();
        assert_eq!(
            exited.len(),
            1,
            "round {round}: one serves, one exits:\n{a:?}\n{b:?}"
        );
        assert_eq!(exited[0].0, 2, "{:?}", exited[0]);
        assert!(
            exited[0].1.contains("address already in use"),
            "{:?}",
            exited[0]
        );
    }
}

/// A control port in use fails start-up before any DNS socket is bound.
#[test]
fn a_control_port_in_use_fails_before_dns_is_served() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let control = held.local_addr().unwrap().to_string();
    refused(
        &["--listen", "127.0.0.1:0", "--control", &control],
        &format!("cannot bind control API {control}"),
    );
}

// ---------------------------------------------------------------------------------------
// 4. Control API security

fn state_of(control: SocketAddr, address: &str) -> serde_json::Value {
    let (st, body) = http(control, "GET", "/v1/state", &[], "");
    assert_eq!(st, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == address)
        .unwrap()
        .clone()
}

fn weighted() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weighted.toml");
    p.to_str().unwrap().to_string()
}

/// Without a token file the API is read-only, on loopback; a change says how to enable it.
#[test]
fn without_tokens_the_api_is_read_only() {
    let s = Server::start(&["--config", &weighted(), "--control", "127.0.0.1:0"]);
    let c = s.control_addr();
    let (st, body) = http(c, "PUT", "/v1/addresses/weighted-1/override", &[], "down");
    assert_eq!(st, 403, "{body}");
    assert!(
        body.contains("read-only") && body.contains("token-file"),
        "{body}"
    );
    for (m, b) in [("DELETE", ""), ("POST", "down")] {
        let (st, _) = http(c, m, "/v1/addresses/weighted-1/override", &[], b);
        assert_eq!(st, 403);
    }
    let a = state_of(c, "weighted-1");
    assert_eq!(a["override"], serde_json::Value::Null);
    assert_eq!(a["up"], true);
    assert!(s.count_log("control API request refused") >= 3);
}

/// Changes need one of the named tokens; each change is logged with the token's name and
/// the client's address; a wrong or missing token is 401.
#[test]
fn tokens_authorise_changes_and_name_the_actor() {
    let alice = "alice-0123456789abcdef0123";
    let dir = TempDir::new("ctl-tokens");
    let tokens = token_file(
        &dir,
        &[("alice", alice), ("bob", "bob-fedcba9876543210fedc")],
    );
    let s = Server::start(&[
        "--config",
        &weighted(),
        "--control",
        "127.0.0.1:0",
        "--control-token-file",
        tokens.to_str().unwrap(),
    ]);
    let c = s.control_addr();
    let path = "/v1/addresses/weighted-1/override";
    let (st, body) = http(c, "PUT", path, &[], "down");
    assert_eq!(st, 401, "{body}");
    for bad in [
        "Bearer alice-0123456789abcdef012",
        "Bearer alice-0123456789abcdef01234",
        "Bearer ",
        "Basic YWxpY2U6eA==",
        alice,
    ] {
        let (st, body) = http(c, "PUT", path, &[("Authorization", bad)], "down");
        assert_eq!(st, 401, "{bad}: {body}");
    }
    assert_eq!(
        state_of(c, "weighted-1")["override"],
        serde_json::Value::Null
    );
    let auth = format!("Bearer {alice}");
    let (st, body) = http(c, "PUT", path, &[("Authorization", &auth)], "down");
    assert_eq!(st, 200, "{body}");
    assert_eq!(state_of(c, "weighted-1")["override"], "down");
    let line = s.wait_log("operator override actor", Duration::from_secs(2));
    assert!(line.contains("alice"), "{line}");
    assert!(line.contains("client=127.0.0.1:"), "{line}");
    assert!(
        !line.contains(alice),
        "the token itself is never logged: {line}"
    );
    // Reads stay open on loopback.
    let (st, _) = http(c, "GET", "/v1/state", &[], "");
    assert_eq!(st, 200);
}

/// DNS rebinding and CSRF: a foreign Host or Origin is refused even with a valid token.
#[test]
fn foreign_host_and_origin_are_refused() {
    let dir = TempDir::new("ctl-hosts");
    let cfg = dir.join("hosts.toml");
    let text = std::fs::read_to_string(weighted()).unwrap().replace(
        "listen = \"127.0.0.1:5380\"",
        "listen = \"127.0.0.1:5380\"\nallowed-hosts = [\"gtmd.test\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let c = s.control_addr();
    let auth = format!("Bearer {TEST_TOKEN}");
    let here = c.to_string();
    let path = "/v1/addresses/weighted-1/override";
    for host in [
        "evil.example",
        "evil.example:5380",
        "127.0.0.2",
        "localhost.evil.example",
    ] {
        let (st, body) = http(c, "GET", "/v1/state", &[("Host", host)], "");
        assert_eq!(st, 403, "Host {host}: {body}");
        let h = [("Host", host), ("Authorization", auth.as_str())];
        let (st, _) = http(c, "PUT", path, &h, "down");
        assert_eq!(st, 403, "Host {host}");
    }
    for host in [
        here.as_str(),
        "127.0.0.1",
        "localhost",
        "LOCALHOST:1",
        "gtmd.test:443",
    ] {
        let (st, body) = http(c, "GET", "/v1/state", &[("Host", host)], "");
        assert_eq!(st, 200, "Host {host}: {body}");
    }
    // A text/plain POST from a page elsewhere (no preflight) is refused.
    let foreign = [
        ("Host", here.as_str()),
        ("Origin", "http://evil.example"),
        ("Content-Type", "text/plain"),
        ("Authorization", auth.as_str()),
    ];
    let (st, body) = http(c, "POST", path, &foreign, "down");
    assert_eq!(st, 403, "{body}");
    let null = [("Host", here.as_str()), ("Origin", "null")];
    assert_eq!(http(c, "GET", "/v1/state", &null, "").0, 403);
    assert_eq!(
        state_of(c, "weighted-1")["override"],
        serde_json::Value::Null
    );
    let origin = format!("http://{here}");
    let same = [
        ("Host", here.as_str()),
        ("Origin", origin.as_str()),
        ("Authorization", auth.as_str()),
    ];
    let (st, body) = http(c, "POST", path, &same, "down");
    assert_eq!(st, 200, "{body}");
    // No Host at all (HTTP/1.0 style): refused.
    let mut raw = TcpStream::connect(c).unwrap();
    raw.write_all(b"GET /v1/state HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    raw.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

/// Beyond loopback the API does not start without a token file (file or command line);
/// a token file every user may read is refused.
#[test]
fn remote_api_needs_tokens_and_private_token_files() {
    let dir = TempDir::new("ctl-remote");
    let cfg = dir.join("remote.toml");
    let base = std::fs::read_to_string(weighted()).unwrap();
    std::fs::write(
        &cfg,
        base.replace(
            "listen = \"127.0.0.1:5380\"",
            "listen = \"0.0.0.0:5380\"\nallow-remote = true",
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control.listen: 0.0.0.0:5380 is not a loopback address: a control API beyond loopback needs [control] token-file"),
        "{err}"
    );
    let (code, err) = run_to_exit(
        &[
            "--config",
            &weighted(),
            "--listen",
            "127.0.0.1:0",
            "--control",
            "0.0.0.0:0",
        ],
        Duration::from_secs(10),
    )
    .expect("exits");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--control: 0.0.0.0:0 is not a loopback address"),
        "{err}"
    );
    // World-readable tokens are refused.
    let tokens = token_file(&dir, &[("ops", "ops-0123456789abcdef0123")]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run_to_exit(
        &[
            "--config",
            &weighted(),
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--control-token-file",
            tokens.to_str().unwrap(),
        ],
        Duration::from_secs(10),
    )
    .expect("exits");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("open to every user"), "{err}");
    // With a token file the wildcard listener starts; beyond loopback reads need it too.
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Server::start(&[
        "--config",
        &weighted(),
        "--control",
        "0.0.0.0:0",
        "--control-token-file",
        tokens.to_str().unwrap(),
    ]);
    let port = s.control_addr().port();
    s.wait_log(
        "without TLS: tokens cross the network",
        Duration::from_secs(2),
    );
    let lo: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        http(lo, "GET", "/v1/state", &[], "").0,
        200,
        "loopback reads"
    );
    let auth = ("Authorization", "Bearer ops-0123456789abcdef0123");
    assert_eq!(
        http(
            lo,
            "PUT",
            "/v1/addresses/weighted-1/override",
            &[auth],
            "down"
        )
        .0,
        200
    );
}

/// With tls-cert and tls-key the API speaks HTTPS only, and the same rules hold.
#[test]
fn tls_api() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("ctl-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("api.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("api.key"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("api.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.join("tls.toml");
    let text = std::fs::read_to_string(weighted()).unwrap().replace(
        "listen = \"127.0.0.1:5380\"",
        "listen = \"127.0.0.1:5380\"\ntls-cert = \"api.crt\"\ntls-key = \"api.key\"",
    );
    std::fs::write(&cfg, &text).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let line = s.wait_log("control API listening", Duration::from_secs(2));
    assert!(line.contains("tls=true"), "{line}");
    let c = s.control_addr();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert.der().to_vec(),
        ))
        .unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let https = |req: String| -> String {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let tcp = TcpStream::connect(c).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp);
        String::from_utf8_lossy(&resp).into_owned()
    };
    let port = c.port();
    let resp = https(format!(
        "GET /v1/state HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let put = |origin: &str| {
        https(format!(
            "PUT /v1/addresses/weighted-1/override HTTP/1.1\r\nHost: localhost:{port}\r\n\
             Origin: {origin}\r\nAuthorization: Bearer {TEST_TOKEN}\r\nContent-Length: 4\r\n\
             Connection: close\r\n\r\ndown"
        ))
    };
    let resp = put(&format!("http://localhost:{port}"));
    assert!(
        resp.starts_with("HTTP/1.1 403"),
        "http origin on https: {resp}"
    );
    let resp = put(&format!("https://localhost:{port}"));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Plain HTTP gets no answer.
    let mut plain = TcpStream::connect(c).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = plain.write_all(b"GET /v1/state HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut resp = Vec::new();
    let _ = plain.read_to_end(&mut resp);
    assert!(!String::from_utf8_lossy(&resp).contains("HTTP/1.1 200"));
}

// ---------------------------------------------------------------------------------------
// 5. Reload

/// A webhook receiver: the bodies it got.
fn receiver() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let rx = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    std::thread::spawn(move || {
        for c in rx.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let body = read_request(&mut c).map(|(_, b)| b).unwrap_or_default();
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            g2.lock().unwrap().push(body);
        }
    });
    (addr, got)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reload(s: &Server, generation: u32) {
    s.signal(libc::SIGHUP);
    s.wait_log(&format!("generation={generation}"), Duration::from_secs(5));
}

/// `[alerts]` added by a reload posts alerts; a changed webhook URL is used at once.
#[test]
fn reload_applies_alerts() {
    let (hook1, got1) = receiver();
    let (hook2, got2) = receiver();
    let dir = TempDir::new("ctl-alerts");
    let cfg = dir.join("weighted.toml");
    let base = std::fs::read_to_string(weighted()).unwrap();
    std::fs::write(&cfg, &base).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let c = s.control_addr();
    let path = "/v1/addresses/weighted-1/override";
    assert_eq!(http_auth(c, "PUT", path, "down").0, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(got1.lock().unwrap().is_empty());
    std::fs::write(
        &cfg,
        format!("{base}\n[alerts]\nwebhook = \"http://{hook1}/gtmd\"\n"),
    )
    .unwrap();
    reload(&s, 2);
    s.wait_log("alerts go to the webhook", Duration::from_secs(2));
    assert_eq!(http_auth(c, "PUT", path, "up").0, 200);
    wait_for(
        "an alert at the first webhook",
        Duration::from_secs(5),
        || {
            got1.lock()
                .unwrap()
                .iter()
                .any(|b| b.contains("weighted-1 is up"))
        },
    );
    std::fs::write(
        &cfg,
        format!("{base}\n[alerts]\nwebhook = \"http://{hook2}/other\"\n"),
    )
    .unwrap();
    reload(&s, 3);
    s.wait_log("alerts: webhook settings changed", Duration::from_secs(2));
    assert_eq!(http_auth(c, "PUT", path, "down").0, 200);
    wait_for(
        "an alert at the second webhook",
        Duration::from_secs(5),
        || {
            got2.lock()
                .unwrap()
                .iter()
                .any(|b| b.contains("weighted-1 is down"))
        },
    );
    assert_eq!(
        got1.lock().unwrap().len(),
        1,
        "the old webhook gets nothing more"
    );
}

/// A reload moves the API to its new address and applies new tokens and hosts.
#[test]
fn reload_applies_control() {
    let dir = TempDir::new("ctl-control");
    let tokens = dir.join("tokens");
    let write_tokens = |text: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&tokens, text).unwrap();
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let alice = "alice-0123456789abcdef0123";
    let bob = "bob-fedcba9876543210fedcba";
    write_tokens(&format!("alice:{alice}\n"));
    let cfg = dir.join("weighted.toml");
    let base = std::fs::read_to_string(weighted()).unwrap();
    let with = |listen: &str, extra: &str| {
        base.replace(
            "listen = \"127.0.0.1:5380\"",
            &format!("listen = \"{listen}\"\ntoken-file = \"tokens\"\n{extra}"),
        )
    };
    std::fs::write(&cfg, with("127.0.0.1:0", "")).unwrap();
    let s = Server::start_raw(&["--config", cfg.to_str().unwrap()]);
    let c1 = s.control_addr();
    let path = "/v1/addresses/weighted-1/override";
    let put = |c: SocketAddr, token: &str, host: &str| {
        let auth = format!("Bearer {token}");
        http(
            c,
            "PUT",
            path,
            &[("Authorization", &auth), ("Host", host)],
            "down",
        )
        .0
    };
    assert_eq!(put(c1, alice, "localhost"), 200);
    assert_eq!(put(c1, bob, "localhost"), 401);
    // New tokens, a new host name and a new address.
    write_tokens(&format!("bob:{bob}\n"));
    std::fs::write(
        &cfg,
        with("127.0.0.2:0", "allowed-hosts = [\"api.gtmd.test\"]\n"),
    )
    .unwrap();
    reload(&s, 2);
    wait_for("the API on its new address", Duration::from_secs(5), || {
        s.count_log("control API listening") == 2
    });
    let line = s
        .log
        .lock()
        .unwrap()
        .iter()
        .rfind(|l| l.contains("control API listening"))
        .unwrap()
        .clone();
    let c2: SocketAddr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c2.ip().to_string(), "127.0.0.2");
    assert!(TcpStream::connect(c1).is_err(), "the old address is closed");
    assert_eq!(put(c2, alice, "localhost"), 401, "alice's token is gone");
    assert_eq!(put(c2, bob, "localhost"), 200);
    assert_eq!(put(c2, bob, "api.gtmd.test"), 200);
    assert!(s.count_log("reload: control API tokens changed") == 1);
    // A token file that does not load rejects the reload; the running tokens stay.
    write_tokens("bob:short\n");
    s.signal(libc::SIGHUP);
    s.wait_log("reload rejected: still serving", Duration::from_secs(5));
    assert_eq!(put(c2, bob, "localhost"), 200);
}

/// A persisted override for an address the configuration does not have is logged and
/// dropped at start-up and at reload; it does not come back with the name.
#[test]
fn stale_overrides_are_dropped_and_logged() {
    let dir = TempDir::new("ctl-stale");
    let state = dir.join("state.json");
    std::fs::write(
        &state,
        r#"{"overrides": {"Ghost": "down", "weighted-2": "down"}}"#,
    )
    .unwrap();
    let cfg = dir.join("weighted.toml");
    let base = std::fs::read_to_string(weighted()).unwrap().replace(
        "listen = \"127.0.0.1:5380\"",
        "listen = \"127.0.0.1:5380\"\nstate-file = \"state.json\"",
    );
    std::fs::write(&cfg, &base).unwrap();
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let line = s.wait_log("operator override dropped", Duration::from_secs(2));
    assert!(line.contains("Ghost"), "{line}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["overrides"],
        serde_json::json!({"weighted-2": "down"})
    );
    let c = s.control_addr();
    assert_eq!(state_of(c, "weighted-2")["override"], "down");
    // weighted-2 leaves the configuration: its override goes, with a word.
    let without = base
        .replace(
            "[[address]]\nname = \"weighted-2\"\nvalue = \"127.0.0.52\"\nweight = 1\n",
            "",
        )
        .replace(
            "addresses = [\"weighted-1\", \"weighted-2\"]",
            "addresses = [\"weighted-1\"]",
        );
    assert_ne!(without, base);
    std::fs::write(&cfg, &without).unwrap();
    reload(&s, 2);
    wait_for(
        "weighted-2's override dropped",
        Duration::from_secs(2),
        || {
            s.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("operator override dropped") && l.contains("weighted-2"))
        },
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["overrides"], serde_json::json!({}));
    // It comes back: configured mode, up, answered.
    std::fs::write(&cfg, &base).unwrap();
    reload(&s, 3);
    let a = state_of(c, "weighted-2");
    assert_eq!(a["override"], serde_json::Value::Null);
    assert_eq!(a["up"], true);
    assert_eq!(
        http_auth(c, "PUT", "/v1/addresses/weighted-1/override", "down").0,
        200
    );
    let m = s.udp(&Q::new("weighted.example.test", A).build()).unwrap();
    assert_eq!(m.answers(A), vec!["127.0.0.52"]);
}
