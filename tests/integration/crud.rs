//! Issue 13 item 4 through the real binary: the configuration API. Every kind of object
//! (addresses, pools, access domains, health checks, lines) created, changed and deleted
//! over HTTP and checked by the DNS answers that follow; invalid changes get 422 and leave
//! the file as it was; If-Match; the file as the source of truth across a restart;
//! comments kept; queries in flight during edits all answered right.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

const A: u16 = 1;

/// The config file the tests edit: comments to keep, two addresses, one pool, an access
/// domain, a zone record beside an access domain, and an included file.
pub(crate) const LAB: &str = r#"# The lab: a config the API edits (this comment stays).
version = 1
include = ["domains/*.toml"]

[server]
probe-before-ready = false

[control]
state-file = "STATE"

[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "hostmaster", serial = 1, minimum = 300 }
ns = ["ns1"]
records = ["ns1 A 127.0.0.53", "static A 192.0.2.80"]

# Addresses: the lab hosts
[[address]]
name = "a1"          # first host
value = "192.0.2.1"

[[address]]
name = "a2"
value = "192.0.2.2"

[[pool]]
name = "P1"
type = "ipv4"
addresses = ["a1"]

[[access-domain]]
name = "www.example.test."   # the service
type = "A"
ttl = 30
policy = "global-availability"
pools = ["P1"]
"#;

const INCLUDED: &str = r#"# Included access domains
[[access-domain]]
name = "inc.example.test."
type = "A"
policy = "global-availability"
pools = ["P1"]
"#;

/// A gtmd serving [`LAB`] from a temp dir, with the API's address.
pub(crate) struct Lab {
    pub dir: TempDir,
    pub s: Server,
    pub control: SocketAddr,
}

impl Lab {
    pub(crate) fn start() -> Self {
        Self::start_with(|_, text| text)
    }

    /// [`Lab::start`] with the config text as `edit` makes it (given the directory).
    pub(crate) fn start_with(edit: impl FnOnce(&TempDir, String) -> String) -> Self {
        let dir = TempDir::new("crud");
        std::fs::create_dir_all(dir.join("domains")).unwrap();
        dir.write("domains/inc.toml", INCLUDED);
        let state = dir.join("state.json");
        let text = edit(&dir, LAB.replace("STATE", state.to_str().unwrap()));
        dir.write("gtmd.toml", &text);
        let s = Self::serve(&dir);
        let control = s.control_addr();
        Self { dir, s, control }
    }

    fn serve(dir: &TempDir) -> Server {
        let cfg = dir.join("gtmd.toml");
        Server::start(&["--config", cfg.to_str().unwrap()])
    }

    /// Stops gtmd and starts it again on the same files.
    pub(crate) fn restart(&mut self) {
        self.s.stop();
        self.s = Self::serve(&self.dir);
        self.control = self.s.control_addr();
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.join("gtmd.toml")
    }

    pub(crate) fn text(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap()
    }

    /// A request with the test token and a JSON body; status, JSON answer, ETag.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        self.call_with(method, path, body, &[])
    }

    pub(crate) fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, Option<String>) {
        let auth = format!("Bearer {TEST_TOKEN}");
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(headers);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (st, raw, etag) = http_etag(self.control, method, path, &h, &body);
        let doc = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
        (st, doc, etag)
    }

    /// The addresses `name` is answered with (sorted), or the RCODE when there are none.
    pub(crate) fn ask(&self, name: &str) -> Vec<String> {
        self.ask_from(name, None)
    }

    pub(crate) fn ask_from(&self, name: &str, subnet: Option<[u8; 4]>) -> Vec<String> {
        let mut q = Q::new(name, A).edns(1232);
        if let Some(a) = subnet {
            q = q.ecs(1, 32, 0, &a);
        }
        let m = self.s.udp(&q.build()).expect("an answer");
        let got = m.answers(A);
        if got.is_empty() {
            vec![rcode_name(m.rcode())]
        } else {
            got
        }
    }
}

/// [`http`], with the answer's ETag header.
pub(crate) fn http_etag(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Option<String>) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    c.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .map(str::to_string);
    (status, body.to_string(), etag)
}

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Addresses and pools: created, replaced, patched and deleted, each step seen in the
/// answers for the access domain; the comments of the file stay; the audit log names the
/// token.
#[test]
fn addresses_and_pools_round_trip() {
    let lab = Lab::start();
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.1"]));
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/addresses",
        Some(json!({"name": "a3", "value": "192.0.2.3"})),
    );
    assert_eq!(st, 201, "{doc}");
    let (st, doc, tag) = lab.call(
        "POST",
        "/v1/pools",
        Some(json!({"name": "P2", "type": "ipv4", "addresses": ["a2", "a3"]})),
    );
    assert_eq!(st, 201, "{doc}");
    assert!(tag.is_some());
    let gen = doc["generation"].as_u64().unwrap();
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/access-domains/www.example.test./A",
        Some(json!({"pools": ["P2"]})),
    );
    assert_eq!(st, 200, "{doc}");
    assert_eq!(doc["generation"].as_u64().unwrap(), gen + 1);
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.2", "192.0.2.3"]));
    let (st, doc, _) = lab.call("POST", "/v1/addresses/a2/disable", None);
    assert_eq!(st, 200, "{doc}");
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.3"]));
    let (st, _, _) = lab.call("POST", "/v1/addresses/a2/enable", None);
    assert_eq!(st, 200);
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.2", "192.0.2.3"]));
    // PUT replaces the whole pool.
    let (st, doc, _) = lab.call(
        "PUT",
        "/v1/pools/P2",
        Some(json!({"type": "ipv4", "addresses": ["a3"]})),
    );
    assert_eq!(st, 200, "{doc}");
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.3"]));
    // An address's value changes.
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/addresses/a3",
        Some(json!({"value": "192.0.2.33"})),
    );
    assert_eq!(st, 200, "{doc}");
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.33"]));
    // The same again changes nothing: no reload, no write, no log line.
    let gen = doc["generation"].clone();
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/addresses/a3",
        Some(json!({"value": "192.0.2.33"})),
    );
    assert_eq!(
        (st, &doc["changed"], &doc["generation"]),
        (200, &json!(false), &gen),
        "{doc}"
    );
    // Reads: the list and one object, as written in the file.
    let (st, list, _) = lab.call("GET", "/v1/pools", None);
    assert_eq!(st, 200);
    assert_eq!(list["total"], 2);
    assert_eq!(
        list["items"][1],
        json!({"name": "P2", "type": "ipv4", "addresses": ["a3"]})
    );
    let (st, a1, _) = lab.call("GET", "/v1/addresses/a1", None);
    assert_eq!((st, a1), (200, json!({"name": "a1", "value": "192.0.2.1"})));
    // A pool in use cannot go; once unused it can.
    let before = lab.text();
    let (st, doc, _) = lab.call("DELETE", "/v1/pools/P2", None);
    assert_eq!(st, 422, "{doc}");
    assert_eq!(lab.text(), before, "nothing written");
    let (st, _, _) = lab.call(
        "PATCH",
        "/v1/access-domains/www.example.test.",
        Some(json!({"pools": ["P1"]})),
    );
    assert_eq!(st, 200);
    let (st, doc, _) = lab.call("DELETE", "/v1/pools/P2", None);
    assert_eq!(st, 200, "{doc}");
    let (st, _, _) = lab.call("DELETE", "/v1/addresses/a3", None);
    assert_eq!(st, 200);
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.1"]));
    let (st, _, _) = lab.call("GET", "/v1/pools/P2", None);
    assert_eq!(st, 404);
    let text = lab.text();
    for kept in [
        "# The lab: a config the API edits (this comment stays).\n",
        "# Addresses: the lab hosts\n[[address]]\nname = \"a1\"          # first host\n",
        "name = \"www.example.test.\"   # the service\n",
    ] {
        assert!(text.contains(kept), "{kept:?} kept in:\n{text}");
    }
    assert!(!text.contains("a3") && !text.contains("P2"), "{text}");
    let audit = lab
        .s
        .wait_log("configuration change", Duration::from_secs(2));
    assert!(
        audit.contains("actor=tests") && audit.contains("method=POST"),
        "{audit}"
    );
    assert!(
        audit.contains("resource=/v1/addresses/a3") && audit.contains("before=-"),
        "{audit}"
    );
    assert_eq!(lab.s.count_log("configuration change"), 10);
}

/// Access domains: created in the config file and in an included file, disabled (the
/// zone's own record answers) and enabled, deleted.
#[test]
fn access_domains_round_trip() {
    let lab = Lab::start();
    assert_eq!(lab.ask("api.example.test"), v(&["NXDOMAIN"]));
    let ad = json!({"name": "api.example.test.", "type": "A", "policy": "global-availability", "pools": ["P1"]});
    let (st, doc, _) = lab.call("POST", "/v1/access-domains", Some(ad.clone()));
    assert_eq!(st, 201, "{doc}");
    assert_eq!(lab.ask("api.example.test"), v(&["192.0.2.1"]));
    let (st, _, _) = lab.call("POST", "/v1/access-domains", Some(ad));
    assert_eq!(st, 409, "a second one of the same name and type");
    // Beside the zone's record: enabled, the pool answers; disabled, the record.
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/access-domains?file=domains/inc.toml",
        Some(json!({"name": "static.example.test.", "type": "A", "policy": "global-availability", "pools": ["P1"]})),
    );
    assert_eq!(st, 201, "{doc}");
    assert!(
        doc["file"].as_str().unwrap().ends_with("domains/inc.toml"),
        "{doc}"
    );
    assert_eq!(lab.ask("static.example.test"), v(&["192.0.2.1"]));
    let inc = std::fs::read_to_string(lab.dir.join("domains/inc.toml")).unwrap();
    assert!(
        inc.starts_with(INCLUDED) && inc.contains("static.example.test."),
        "{inc}"
    );
    assert!(!lab.text().contains("static.example.test."));
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/access-domains/static.example.test/disable",
        None,
    );
    assert_eq!(st, 200, "{doc}");
    assert_eq!(doc["objects"][0]["enabled"], false);
    assert_eq!(lab.ask("static.example.test"), v(&["192.0.2.80"]));
    let (st, _, _) = lab.call(
        "POST",
        "/v1/access-domains/static.example.test./A/enable",
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(lab.ask("static.example.test"), v(&["192.0.2.1"]));
    // An included access domain is changed in its own file.
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/access-domains/inc.example.test./A",
        Some(json!({"ttl": 77})),
    );
    assert_eq!(st, 200, "{doc}");
    let inc = std::fs::read_to_string(lab.dir.join("domains/inc.toml")).unwrap();
    assert!(inc.contains("ttl = 77"), "{inc}");
    // A file the configuration does not include is refused, and left alone.
    lab.dir.write("other.toml", "");
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/access-domains?file=other.toml",
        Some(json!({"name": "x.example.test.", "type": "A", "policy": "global-availability", "pools": ["P1"]})),
    );
    assert_eq!(st, 422, "{doc}");
    assert_eq!(
        std::fs::read_to_string(lab.dir.join("other.toml")).unwrap(),
        ""
    );
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/access-domains?file=/etc/hostname",
        Some(json!({"name": "x.example.test.", "type": "A", "policy": "global-availability", "pools": ["P1"]})),
    );
    assert_eq!(st, 422, "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("include patterns"),
        "{doc}"
    );
    let (st, list, _) = lab.call("GET", "/v1/access-domains?offset=1&limit=2", None);
    assert_eq!(st, 200);
    assert_eq!(list["total"], 4, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api.example.test.", "inc.example.test."]);
    let (st, _, _) = lab.call("DELETE", "/v1/access-domains/api.example.test.", None);
    assert_eq!(st, 200);
    assert_eq!(lab.ask("api.example.test"), v(&["NXDOMAIN"]));
}

/// Health-check templates and lines: a TCP check on a port that listens keeps an address
/// up; pointed at a closed port the address goes down and the answer moves; a line
/// created and used by a `nearest` access domain answers its askers from its pool.
#[test]
fn health_checks_and_lines_round_trip() {
    let lab = Lab::start();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let closed = free_port();
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/health-checks",
        Some(json!({"name": "tcp", "protocol": "tcp", "port": port, "interval": 1, "timeout": 0.5, "down-after": 1, "up-after": 1})),
    );
    assert_eq!(st, 201, "{doc}");
    for (name, value) in [("h1", "127.0.0.1"), ("h2", "127.0.0.2")] {
        let (st, doc, _) = lab.call(
            "POST",
            "/v1/addresses",
            Some(json!({"name": name, "value": value})),
        );
        assert_eq!(st, 201, "{doc}");
    }
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/addresses/h1",
        Some(json!({"health-check": "tcp"})),
    );
    assert_eq!(st, 200, "{doc}");
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/pools",
        Some(json!({"name": "H", "type": "ipv4", "addresses": ["h1"]})),
    );
    assert_eq!(st, 201, "{doc}");
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/pools",
        Some(json!({"name": "H2", "type": "ipv4", "addresses": ["h2"]})),
    );
    assert_eq!(st, 201, "{doc}");
    let (st, doc, _) = lab.call(
        "PUT",
        "/v1/access-domains/www.example.test./A",
        Some(json!({"policy": "global-availability", "pools": ["H", "H2"]})),
    );
    assert_eq!(st, 200, "{doc}");
    let wait_for = |want: &[&str]| {
        let t0 = Instant::now();
        while lab.ask("www.example.test") != v(want) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "never answered {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&["127.0.0.1"]);
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/health-checks/tcp",
        Some(json!({"port": closed})),
    );
    assert_eq!(st, 200, "{doc}");
    wait_for(&["127.0.0.2"]);
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/health-checks/tcp",
        Some(json!({"port": port})),
    );
    assert_eq!(st, 200, "{doc}");
    wait_for(&["127.0.0.1"]);
    drop(open);
    // Lines.
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/lines",
        Some(json!({"name": "lab", "prefixes": ["198.51.100.0/24"]})),
    );
    assert_eq!(st, 201, "{doc}");
    let nearest = json!({"policy": "nearest", "lines": {"lab": ["H2"], "default": ["P1"]}});
    let (st, doc, _) = lab.call(
        "PUT",
        "/v1/access-domains/www.example.test./A",
        Some(nearest),
    );
    assert_eq!(st, 200, "{doc}");
    assert_eq!(
        lab.ask_from("www.example.test", Some([198, 51, 100, 7])),
        v(&["127.0.0.2"])
    );
    assert_eq!(
        lab.ask_from("www.example.test", Some([203, 0, 113, 7])),
        v(&["192.0.2.1"])
    );
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/lines/lab",
        Some(json!({"prefixes": ["203.0.113.0/24"]})),
    );
    assert_eq!(st, 200, "{doc}");
    assert_eq!(
        lab.ask_from("www.example.test", Some([198, 51, 100, 7])),
        v(&["192.0.2.1"])
    );
    assert_eq!(
        lab.ask_from("www.example.test", Some([203, 0, 113, 7])),
        v(&["127.0.0.2"])
    );
    let (st, _, _) = lab.call("DELETE", "/v1/lines/lab", None);
    assert_eq!(st, 422, "the access domain still routes the line");
    let (st, _, _) = lab.call("DELETE", "/v1/health-checks/tcp", None);
    assert_eq!(st, 422, "h1 still uses the template");
}

/// Invalid changes: 422 with `file:line: field: reason`, the file unchanged, the
/// generation unchanged; malformed requests 400; changes without a token 401.
#[test]
fn invalid_changes_are_refused_and_nothing_is_written() {
    let lab = Lab::start();
    let before = lab.text();
    let cfg = lab.config().display().to_string();
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/pools",
        Some(json!({"name": "P9", "type": "ipv4", "addresses": ["nope"]})),
    );
    assert_eq!(st, 422, "{doc}");
    let errs: Vec<&str> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&format!("{cfg}:")), "{errs:?}");
    assert!(
        errs[0].contains("pool.addresses") && errs[0].contains("nope"),
        "{errs:?}"
    );
    let (st, doc, _) = lab.call("PATCH", "/v1/addresses/a1", Some(json!({"colour": "red"})));
    assert_eq!(st, 422, "{doc}");
    assert!(
        doc["errors"][0].as_str().unwrap().contains("colour"),
        "{doc}"
    );
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/addresses/a1",
        Some(json!({"value": "not an address"})),
    );
    assert_eq!(st, 422, "{doc}");
    assert_eq!(lab.text(), before);
    for (method, path, body) in [
        ("POST", "/v1/pools", "not json"),
        ("POST", "/v1/pools", "[1]"),
        ("POST", "/v1/pools", "{\"type\": \"ipv4\"}"),
        ("PATCH", "/v1/addresses/a1", "{\"name\": null}"),
        (
            "PUT",
            "/v1/addresses/a1",
            "{\"name\": \"zz\", \"value\": \"192.0.2.9\"}",
        ),
    ] {
        let auth = format!("Bearer {TEST_TOKEN}");
        let (st, body, _) = http_etag(lab.control, method, path, &[("Authorization", &auth)], body);
        assert_eq!(st, 400, "{method} {path}: {body}");
    }
    let (st, _) = http(
        lab.control,
        "PATCH",
        "/v1/addresses/a1",
        &[],
        "{\"weight\": 5}",
    );
    assert_eq!(st, 401);
    let (st, _, _) = lab.call("PATCH", "/v1/addresses/nobody", Some(json!({"weight": 5})));
    assert_eq!(st, 404);
    assert_eq!(lab.text(), before);
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.1"]));
    let (_, status, _) = lab.call("GET", "/v1/status", None);
    assert_eq!(status["generation"], 1, "no reload served: {status}");
}

/// If-Match: a stale ETag gets 412 and changes nothing; the current one is accepted.
#[test]
fn if_match_guards_changes() {
    let lab = Lab::start();
    let (st, obj, tag) = lab.call("GET", "/v1/addresses/a2", None);
    assert_eq!(st, 200);
    let tag = tag.expect("ETag");
    let (st, doc, tag2) = lab.call_with(
        "PATCH",
        "/v1/addresses/a2",
        Some(json!({"weight": 7})),
        &[("If-Match", &tag)],
    );
    assert_eq!(st, 200, "{doc}");
    let tag2 = tag2.expect("ETag of the new version");
    assert_ne!(tag, tag2);
    let before = lab.text();
    for method in ["PATCH", "PUT", "DELETE"] {
        let body = (method != "DELETE").then(|| obj.clone());
        let (st, doc, _) = lab.call_with(method, "/v1/addresses/a2", body, &[("If-Match", &tag)]);
        assert_eq!(st, 412, "{method}: {doc}");
        assert_eq!(doc["etag"].as_str(), Some(tag2.as_str()));
    }
    assert_eq!(lab.text(), before);
    let (st, _, tag3) = lab.call("GET", "/v1/addresses/a2", None);
    assert_eq!((st, tag3.as_deref()), (200, Some(tag2.as_str())));
}

/// The file is the source of truth: a change survives a restart.
#[test]
fn changes_survive_a_restart() {
    let mut lab = Lab::start();
    let (st, doc, _) = lab.call(
        "PATCH",
        "/v1/addresses/a1",
        Some(json!({"value": "192.0.2.111"})),
    );
    assert_eq!(st, 200, "{doc}");
    lab.restart();
    assert_eq!(lab.ask("www.example.test"), v(&["192.0.2.111"]));
    let (st, a1, _) = lab.call("GET", "/v1/addresses/a1", None);
    assert_eq!((st, a1["value"].as_str()), (200, Some("192.0.2.111")));
}

/// Queries in flight while the pool of an access domain is switched back and forth:
/// every query is answered, each with one of the two right answers.
#[test]
fn queries_during_edits_are_all_answered_right() {
    let lab = Arc::new(Lab::start());
    let (st, doc, _) = lab.call(
        "POST",
        "/v1/pools",
        Some(json!({"name": "P2", "type": "ipv4", "addresses": ["a2"]})),
    );
    assert_eq!(st, 201, "{doc}");
    let stop = Arc::new(AtomicBool::new(false));
    let asker = {
        let (lab, stop) = (lab.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut n, mut wrong) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                let got = lab.ask("www.example.test");
                if got != v(&["192.0.2.1"]) && got != v(&["192.0.2.2"]) {
                    wrong.push(got);
                }
                n += 1;
            }
            (n, wrong)
        })
    };
    for i in 0..12 {
        let pool = if i % 2 == 0 { "P2" } else { "P1" };
        let (st, doc, _) = lab.call(
            "PATCH",
            "/v1/access-domains/www.example.test./A",
            Some(json!({"pools": [pool]})),
        );
        assert_eq!(st, 200, "{doc}");
        assert_eq!(
            lab.ask("www.example.test"),
            v(&[if pool == "P1" {
                "192.0.2.1"
            } else {
                "192.0.2.2"
            }])
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (n, wrong) = asker.join().unwrap();
    assert!(n > 100, "only {n} queries");
    assert!(
        wrong.is_empty(),
        "{} wrong answers of {n}: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Two changes at once with the same If-Match: they run one after the other, so exactly
/// one applies and the other gets 412.
#[test]
fn concurrent_changes_are_serialised() {
    let lab = Arc::new(Lab::start());
    let (_, _, tag) = lab.call("GET", "/v1/addresses/a2", None);
    let tag = tag.unwrap();
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let (lab, tag) = (lab.clone(), tag.clone());
            std::thread::spawn(move || {
                let body = json!({ "weight": 10 + i });
                lab.call_with(
                    "PATCH",
                    "/v1/addresses/a2",
                    Some(body),
                    &[("If-Match", &tag)],
                )
                .0
            })
        })
        .collect();
    let mut got: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, [200, 412, 412, 412]);
    let (_, status, _) = lab.call("GET", "/v1/status", None);
    assert_eq!(status["generation"], 2);
}

/// Serving the embedded default there is no file to change: 409, as for a reload.
#[test]
fn the_embedded_default_has_no_file_to_change() {
    let s = Server::start(&[]);
    let c = s.control_addr();
    for (method, path, body) in [
        ("GET", "/v1/pools", ""),
        (
            "POST",
            "/v1/pools",
            "{\"name\": \"x\", \"type\": \"ipv4\", \"addresses\": []}",
        ),
        ("POST", "/v1/reload", ""),
    ] {
        let (st, body) = http_auth(c, method, path, body);
        assert_eq!(st, 409, "{method} {path}: {body}");
        assert!(body.contains("embedded default"), "{body}");
    }
}

/// docs/openapi.yaml names every path the API serves (the list its 404 answer gives).
#[test]
fn the_openapi_document_names_every_path() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"),
    )
    .unwrap();
    let s = Server::start(&[]);
    let (st, body) = http(s.control_addr(), "GET", "/v1/nothing-here", &[], "");
    assert_eq!(st, 404);
    let listed: Value = serde_json::from_str(&body).unwrap();
    let endpoints = listed["endpoints"].as_array().unwrap();
    assert!(endpoints.len() >= 10, "{listed}");
    for e in endpoints {
        let path = e.as_str().unwrap().split(' ').next_back().unwrap();
        let key = path.replace("NAME", "{name}");
        assert!(
            doc.contains(&format!("\n  {key}:\n")),
            "{key} is not in docs/openapi.yaml"
        );
    }
    for item in [
        "/v1/access-domains/{name}/{type}:",
        "/v1/pools/{name}:",
        "/v1/lines/{name}:",
    ] {
        assert!(doc.contains(item), "{item}");
    }
}
