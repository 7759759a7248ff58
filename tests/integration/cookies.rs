//! DNS cookies (RFC 7873, server cookies of RFC 9018) and NSID (RFC 5001) through the real
//! binary: hand-built COOKIE options, checked against the secret the test wrote, over UDP
//! and TCP, with and without `require-cookie`; and `kdig +cookie` for a second opinion.

use crate::harness::*;
use gtmd::tables::gslb::ClientAddr;
use gtmd::wire::cookie;

const A: u16 = 1;
const COOKIE: u16 = 10;
const NSID: u16 = 3;
const FORMERR: u16 = 1;
const BADCOOKIE: u16 = 23;

const CURRENT: &str = "00112233445566778899aabbccddeeff";
const PREVIOUS: &str = "ffeeddccbbaa99887766554433221100";
const LOCALHOST: Option<ClientAddr> = Some(ClientAddr::V4(0x7F00_0001));
const CLIENT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fn start(dir: &TempDir, server: &str) -> Server {
    dir.write(
        "secret",
        &format!("# current, then previous\n{CURRENT}\n{PREVIOUS}\n"),
    );
    let cfg = dir.write(
        "gtmd.toml",
        &format!(
            "version = 1\n[server]\nshards = [0]\ncookie-secret-file = \"secret\"\n{server}\n\
             [[zone]]\nname = \"example.test.\"\nsoa = {{ mname = \"ns1\", rname = \"h\" }}\n\
             ns = [\"ns1\"]\nrecords = [\"ns1 A 192.0.2.53\", \"www A 192.0.2.10\"]\n"
        ),
    );
    Server::start(&["--config", cfg.to_str().unwrap()])
}

fn q(opts: &[(u16, &[u8])]) -> Vec<u8> {
    let mut q = Q::new("www.example.test", A).edns(1232);
    for (c, d) in opts {
        q = q.opt(*c, d);
    }
    q.build()
}

fn with_server(sc: &[u8]) -> Vec<u8> {
    let mut d = CLIENT.to_vec();
    d.extend_from_slice(sc);
    d
}

fn secret(hex: &str) -> cookie::Secret {
    cookie::parse_secret(hex).unwrap()
}

/// The server cookie in `m` is ours: the client cookie echoed, version 1, a timestamp
/// within a few seconds of now, and the hash of the current secret for 127.0.0.1.
fn fresh_cookie(m: &Msg) -> [u8; 16] {
    let c = m.option(COOKIE).expect("a COOKIE option");
    assert_eq!(c.len(), 24);
    assert_eq!(c[..8], CLIENT, "client cookie echoed");
    let sc: [u8; 16] = c[8..].try_into().unwrap();
    let stamp = u32::from_be_bytes(sc[4..8].try_into().unwrap());
    assert!(
        cookie::now().abs_diff(stamp) <= 2,
        "timestamp {stamp} is now"
    );
    assert_eq!(sc[..4], [1, 0, 0, 0], "version 1, reserved 0");
    assert_eq!(
        cookie::make(&secret(CURRENT), &CLIENT, LOCALHOST, stamp),
        sc
    );
    sc
}

#[test]
fn cookies_and_nsid() {
    let dir = TempDir::new("cookies");
    let s = start(&dir, "nsid = \"0x6e73312e6564676521\"");
    // Client cookie only: answered in full, with a new server cookie.
    let m = s.udp(&q(&[(COOKIE, &CLIENT)])).unwrap();
    assert_eq!(m.rcode(), 0);
    assert_eq!(m.answers(A), ["192.0.2.10"]);
    let sc = fresh_cookie(&m);
    assert_eq!(m.option(NSID), None, "NSID only when asked for");
    // That cookie is echoed as it came while it is fresh.
    let m = s.udp(&q(&[(COOKIE, &with_server(&sc))])).unwrap();
    assert_eq!(m.option(COOKIE).unwrap(), with_server(&sc));
    // Older than half an hour (but within the hour), or made with the previous secret:
    // still valid, answered with a fresh one (RFC 9018 4.3).
    let now = cookie::now();
    for (key, age) in [(CURRENT, 1900), (PREVIOUS, 10)] {
        let old = cookie::make(&secret(key), &CLIENT, LOCALHOST, now - age);
        let m = s.udp(&q(&[(COOKIE, &with_server(&old))])).unwrap();
        assert_eq!(m.rcode(), 0);
        fresh_cookie(&m);
    }
    // Expired, from the future, not ours, of another version: without require-cookie,
    // answered in full with a new cookie.
    let expired = cookie::make(&secret(CURRENT), &CLIENT, LOCALHOST, now - 3700);
    let future = cookie::make(&secret(CURRENT), &CLIENT, LOCALHOST, now + 400);
    let other_addr = cookie::make(&secret(CURRENT), &CLIENT, Some(ClientAddr::V4(1)), now);
    let mut v2 = sc;
    v2[0] = 2;
    for bad in [expired, future, other_addr, v2] {
        let m = s.udp(&q(&[(COOKIE, &with_server(&bad))])).unwrap();
        assert_eq!(m.rcode(), 0);
        assert_eq!(m.answers(A), ["192.0.2.10"]);
        fresh_cookie(&m);
    }
    // Lengths RFC 7873 5.2.2 makes FORMERR (with an OPT, without a cookie).
    for len in [0usize, 7, 9, 15, 41] {
        let m = s.udp(&q(&[(COOKIE, &vec![7; len])])).unwrap();
        assert_eq!(m.rcode(), FORMERR, "cookie of {len} octets");
        assert!(m.opt().is_some());
        assert_eq!(m.option(COOKIE), None);
    }
    // NSID (hex in the config), alone and with a cookie, on answers and errors alike.
    let m = s.udp(&q(&[(NSID, b"")])).unwrap();
    assert_eq!(m.option(NSID).unwrap(), b"ns1.edge!");
    assert_eq!(m.option(COOKIE), None);
    let mut nx = Q::new("nope.example.test", A)
        .edns(1232)
        .opt(NSID, b"")
        .opt(COOKIE, &CLIENT);
    nx.id = 7;
    for m in [s.udp(&nx.build()).unwrap(), s.tcp(&nx.build())] {
        assert_eq!(m.rcode(), 3);
        assert_eq!(m.option(NSID).unwrap(), b"ns1.edge!");
        fresh_cookie(&m);
    }
    let outside = Q::new("example.com", A).edns(1232).opt(NSID, b"").build();
    let m = s.udp(&outside).unwrap();
    assert_eq!(m.rcode(), 5);
    assert_eq!(m.option(NSID).unwrap(), b"ns1.edge!");
    // No EDNS, no options.
    let m = s.udp(&Q::new("www.example.test", A).build()).unwrap();
    assert!(m.opt().is_none());

    // A second opinion: kdig sends a client cookie and checks the echo.
    if let Ok(out) = std::process::Command::new("kdig")
        .args([
            &format!("@{}", s.addr.ip()),
            "-p",
            &s.addr.port().to_string(),
            "+cookie",
            "+nsid",
            "www.example.test",
            "A",
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("status: NOERROR"), "{text}");
        assert!(text.contains("NSID: 6E73312E6564676521"), "{text}");
        let line = text.lines().find(|l| l.contains("COOKIE:")).expect(&text);
        assert_eq!(line.split_whitespace().last().unwrap().len(), 48, "{line}");
    }
}

#[test]
fn require_cookie() {
    let dir = TempDir::new("require-cookie");
    let s = start(&dir, "require-cookie = true\nnsid = \"edge\"");
    let now = cookie::now();
    let valid = cookie::make(&secret(CURRENT), &CLIENT, LOCALHOST, now);
    let expired = cookie::make(&secret(CURRENT), &CLIENT, LOCALHOST, now - 3700);
    let foreign = cookie::make(&secret(PREVIOUS), &CLIENT, Some(ClientAddr::V4(1)), now);
    // Over UDP without a valid server cookie: BADCOOKIE, no records, a new cookie to retry
    // with; over TCP a full answer.
    for sc in [&[][..], &expired[..], &foreign[..]] {
        let raw = q(&[(COOKIE, &with_server(sc)), (NSID, b"")]);
        let m = s.udp(&raw).unwrap();
        assert_eq!(m.rcode(), BADCOOKIE);
        assert_eq!(m.counts[1..3], [0, 0]);
        assert_eq!(m.option(NSID).unwrap(), b"edge");
        let fresh = fresh_cookie(&m);
        let m = s.tcp(&raw);
        assert_eq!(m.rcode(), 0);
        assert_eq!(m.answers(A), ["192.0.2.10"]);
        fresh_cookie(&m);
        // The retry with the cookie just handed out is answered.
        let m = s.udp(&q(&[(COOKIE, &with_server(&fresh))])).unwrap();
        assert_eq!(m.rcode(), 0);
        assert_eq!(m.answers(A), ["192.0.2.10"]);
    }
    let m = s.udp(&q(&[(COOKIE, &with_server(&valid))])).unwrap();
    assert_eq!(
        (m.rcode(), m.answers(A)),
        (0, vec!["192.0.2.10".to_string()])
    );
    // A query without a COOKIE option is not cookie-aware: answered (RFC 7873 5.2.1).
    let m = s.udp(&q(&[])).unwrap();
    assert_eq!(m.rcode(), 0);
    assert_eq!(m.answers(A), ["192.0.2.10"]);
    let (_, status) = {
        let mut s = s;
        let r = s.stop();
        let summary = s.wait_log("badcookie=", std::time::Duration::from_secs(2));
        assert!(summary.contains("badcookie=3"), "{summary}");
        r
    };
    assert!(status.success());
}

#[test]
fn cookies_off() {
    let dir = TempDir::new("cookies-off");
    let s = start(&dir, "cookies = false\nrequire-cookie = true");
    let m = s.udp(&q(&[(COOKIE, &CLIENT), (NSID, b"")])).unwrap();
    assert_eq!(m.rcode(), 0);
    assert_eq!(m.option(COOKIE), None, "ignored like any unknown option");
    assert_eq!(m.option(NSID), None, "no nsid configured");
    assert_eq!(m.opt().unwrap().rdata, Vec::<u8>::new());
}
