//! The operator tools through the real binary: `gtmd probe` against a running server with
//! two lines (each line's exact answer and ECS scope), `gtmd diff` between two servers
//! whose configurations differ in one planted place (and two that are equal; exit codes
//! 0, 1, 2), `gtmd explain` for clients of each line and of the default line, with an
//! address held down through the control API, checked against what the server answers.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::*;

/// Two lines (telecom with an IPv6 prefix too, mobile), a nearest access domain, a
/// weighted one drawing one of two addresses, and static names; `telecom` is the value of
/// the telecom server (the planted difference).
fn config(telecom: &str) -> String {
    format!(
        r#"version = 1

[[zone]]
name = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster", serial = 1, minimum = 300 }}
ns = ["ns1", "ns2"]
records = [
    "ns1 A 127.0.0.53",
    "ns2 A 127.0.0.54",
    "www 300 A 192.0.2.10",
    "mail MX 10 mx",
    "mx A 192.0.2.25",
    "txt TXT \"hello\"",
    "alias CNAME app",
]

[[line]]
name = "telecom"
prefixes = ["198.51.100.0/24", "2001:db8:100::/48"]

[[line]]
name = "mobile"
prefixes = ["192.0.2.0/24"]

[[address]]
name = "Telecom-1"
value = "{telecom}"

[[address]]
name = "Mobile-1"
value = "127.0.0.21"

[[address]]
name = "Global-3"
value = "127.0.0.23"

[[address]]
name = "W-1"
value = "127.0.0.51"

[[address]]
name = "W-2"
value = "127.0.0.52"

[[pool]]
name = "Telecom"
type = "ipv4"
addresses = ["Telecom-1"]

[[pool]]
name = "Mobile"
type = "ipv4"
addresses = ["Mobile-1"]

[[pool]]
name = "Global"
type = "ipv4"
addresses = ["Mobile-1", "Telecom-1", "Global-3"]
policy = "sequential"
answers = 1

[[pool]]
name = "Drawn"
type = "ipv4"
addresses = ["W-1", "W-2"]
policy = "weighted"
answers = 1

[[access-domain]]
name = "app.example.test."
type = "A"
ttl = 30
policy = "nearest"

[access-domain.lines]
telecom = ["Telecom"]
mobile = ["Mobile"]
default = ["Global"]

[[access-domain]]
name = "w.example.test."
type = "A"
ttl = 60
policy = "global-availability"
pools = ["Drawn"]
"#
    )
}

fn gtmd(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn start(cfg: &Path) -> Server {
    Server::start(&["--config", cfg.to_str().unwrap()])
}

/// The data of a reply's answer records, in order.
fn data(reply: &Value) -> Vec<String> {
    reply["answer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"].as_str().unwrap().to_string())
        .collect()
}

/// A probe row: line, ECS, answer data, scope, TTLs.
type ProbeRow = (String, String, Vec<String>, Value, Vec<u64>);

#[test]
fn probe_asks_as_every_line() {
    let dir = TempDir::new("tools-probe");
    // 40 TXT records of 60 octets at big.example.test: more than a UDP answer holds.
    let big: String = (0..40)
        .map(|i| format!("\n    \"big TXT \\\"{i:02}{}\\\"\",", "x".repeat(58)))
        .collect();
    let text = config("127.0.0.22").replace(
        "\"alias CNAME app\",",
        &format!("\"alias CNAME app\",{big}"),
    );
    let cfg = dir.write("gtmd.toml", &text);
    let s = start(&cfg);
    let addr = s.addr.to_string();
    let cfg = cfg.to_str().unwrap();
    let out = gtmd(&[
        "probe",
        "--server",
        &addr,
        "--config",
        cfg,
        "app.example.test",
        "A",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let rows: Vec<ProbeRow> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let reply = &r["reply"];
            assert_eq!(reply["rcode"], "NOERROR");
            assert_eq!(reply["aa"], true);
            let ttls = reply["answer"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["ttl"].as_u64().unwrap())
                .collect();
            (
                r["line"].as_str().unwrap_or("(no ECS)").to_string(),
                r["ecs"].as_str().unwrap_or("-").to_string(),
                data(reply),
                reply["scope"].clone(),
                ttls,
            )
        })
        .collect();
    let want = [
        ("telecom", "198.51.100.0/24", "127.0.0.22", Value::from(24)),
        (
            "telecom",
            "2001:db8:100::/48",
            "127.0.0.22",
            Value::from(48),
        ),
        ("mobile", "192.0.2.0/24", "127.0.0.21", Value::from(24)),
        // The largest unicast block no line touches, 64.0.0.0/2, sent as a /24; the
        // scope is the block around it that no line prefix touches (0.0.0.0/1).
        ("default", "64.0.0.0/24", "127.0.0.21", Value::from(1)),
        // 3000::/4 lies wholly after 2001:db8:100::/48.
        ("default", "3000::/56", "127.0.0.21", Value::from(4)),
        // No ECS: the resolver's address (127.0.0.1, default line); no ECS option back.
        ("(no ECS)", "-", "127.0.0.21", Value::Null),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (got, want) in rows.iter().zip(&want) {
        assert_eq!((got.0.as_str(), got.1.as_str()), (want.0, want.1));
        assert_eq!(got.2, vec![want.2.to_string()], "{} {}", want.0, want.1);
        assert_eq!(got.3, want.3, "scope of {} {}", want.0, want.1);
        assert_eq!(got.4, vec![30], "TTL");
    }
    // The table says the same, one row per asker.
    let out = gtmd(&["probe", "-s", &addr, "-c", cfg, "app.example.test"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let table: Vec<Vec<&str>> = text
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        table[0],
        [
            "telecom",
            "198.51.100.0/24",
            "NOERROR",
            "24",
            "30",
            "127.0.0.22"
        ],
        "{text}"
    );
    assert_eq!(
        table[5],
        ["(no", "ECS)", "-", "NOERROR", "-", "30", "127.0.0.21"],
        "{text}"
    );
    // A chain and extra subnets: alias CNAME app, asked from a telecom address.
    let out = gtmd(&[
        "probe",
        "-s",
        &addr,
        "alias.example.test",
        "A",
        "--ecs",
        "198.51.100.7/32",
        "--json",
        "--tcp",
    ]);
    let doc = json(&out);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "no ECS, then --ecs");
    assert_eq!(data(&rows[1]["reply"]), ["app.example.test.", "127.0.0.22"]);
    assert_eq!(rows[1]["reply"]["transport"], "tcp");
    // Truncated over UDP: asked again over TCP, all 40 records.
    let out = gtmd(&["probe", "-s", &addr, "big.example.test", "TXT", "--json"]);
    let doc = json(&out);
    let reply = &doc["rows"][0]["reply"];
    assert_eq!(reply["transport"], "tcp");
    assert_eq!(reply["answer"].as_array().unwrap().len(), 40);
    // Nothing listens: exit 2, with the reason.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = gtmd(&[
        "probe",
        "-s",
        &dead,
        "app.example.test",
        "--timeout",
        "0.2",
        "--retries",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dead));
}

#[test]
fn diff_reports_exactly_the_planted_difference() {
    let dir = TempDir::new("tools-diff");
    let a = dir.write("a.toml", &config("127.0.0.22"));
    let same = dir.write("same.toml", &config("127.0.0.22"));
    let b = dir.write("b.toml", &config("127.0.0.29"));
    let (sa, ssame, sb) = (start(&a), start(&same), start(&b));
    let (old, eq, new) = (
        sa.addr.to_string(),
        ssame.addr.to_string(),
        sb.addr.to_string(),
    );
    let a = a.to_str().unwrap();
    // `gtmd diff --old OLD --new NEW --config CFG MORE...`
    let diff = |new: &str, cfg: &str, more: &[&str]| {
        gtmd(
            &[
                &["diff", "--old", &old, "--new", new, "--config", cfg],
                more,
            ]
            .concat(),
        )
    };
    // The same configuration: no difference, even for the weighted name (sampled).
    let out = diff(&eq, a, &["--samples", "24", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let doc = json(&out);
    assert_eq!(doc["differences"], Value::Array(Vec::new()));
    let sum = &doc["summary"];
    assert_eq!(sum["different"], 0);
    assert_eq!(sum["askers"], 6);
    // w.example.test. A on 6 askers is sampled (and nothing else).
    assert_eq!(sum["sampled"], 6);
    assert_eq!(sum["compared"], sum["equal"]);
    // Telecom-1 moved in the new server's configuration.
    let out = diff(&new, a, &["--samples", "24", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let diffs: Vec<(String, String, String, String, String, String)> = doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
            (
                s("name"),
                s("type"),
                s("line"),
                s("ecs"),
                s("what"),
                format!("{} -> {}", s("old"), s("new")),
            )
        })
        .collect();
    // The planted change shows wherever app.example.test. A is answered to a telecom
    // asker: asked itself, and through alias CNAME app.
    let change = "app.example.test. A 127.0.0.22 -> app.example.test. A 127.0.0.29".to_string();
    let want = |name: &str, ecs: &str| {
        let t = (name, "A", "telecom", ecs, "answer");
        (
            t.0.into(),
            t.1.into(),
            t.2.into(),
            t.3.into(),
            t.4.into(),
            change.clone(),
        )
    };
    assert_eq!(
        diffs,
        [
            want("alias.example.test.", "198.51.100.0/24"),
            want("alias.example.test.", "2001:db8:100::/48"),
            want("app.example.test.", "198.51.100.0/24"),
            want("app.example.test.", "2001:db8:100::/48"),
        ]
    );
    // 25 questions (10 names, the types each has and A and AAAA) x 6 askers.
    assert_eq!(doc["summary"]["compared"], 150);
    assert_eq!(doc["summary"]["different"], 4);
    // The table and the summary line.
    let out = diff(&new, a, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("NAME"), "{text}");
    assert!(
        text.contains(": 146 equal, 4 different (answer 4)"),
        "{text}"
    );
    // A server that cannot be asked, a configuration that does not load: exit 2.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = gtmd(&[
        "diff",
        "--old",
        &old,
        "--new",
        &dead,
        "-c",
        a,
        "--timeout",
        "0.2",
        "--retries",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot ask the new server"));
    // A TTL changed: reported as such on every asker (app, and alias through it), and
    // left out with --ignore-ttl.
    let c = dir.write(
        "c.toml",
        &config("127.0.0.22").replace("ttl = 30", "ttl = 31"),
    );
    let sc = start(&c);
    let ttl = sc.addr.to_string();
    let out = diff(&ttl, a, &["--json", "--parallel", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    let diffs = doc["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 12, "{diffs:#?}");
    assert!(diffs.iter().all(|d| d["what"] == "ttl"
        && d["old"] == "app.example.test. A: 30"
        && d["new"] == "app.example.test. A: 31"));
    assert_eq!(diffs[0]["name"], "alias.example.test.");
    assert_eq!(diffs[11]["name"], "app.example.test.");
    let out = diff(&ttl, a, &["--ignore-ttl"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = dir.write("bad.toml", "version = 1\n[[zone]]\nname = 3\n");
    let out = diff(&new, bad.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.toml:3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gtmd explain` for `client` (and `ecs`) against the running server; returns the JSON.
fn explain(cfg: &Path, control: &str, client: &str, ecs: Option<&str>, extra: &[&str]) -> Value {
    let mut args = vec![
        "explain",
        "app.example.test",
        "A",
        "--client",
        client,
        "-c",
        cfg.to_str().unwrap(),
        "--json",
    ];
    if let Some(e) = ecs {
        args.extend(["--ecs", e]);
    }
    if !control.is_empty() {
        args.extend(["--server", control]);
    }
    args.extend_from_slice(extra);
    let out = gtmd(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out)
}

#[test]
fn explain_follows_the_server_with_an_address_down() {
    let dir = TempDir::new("tools-explain");
    let cfg = dir.write("gtmd.toml", &config("127.0.0.22"));
    let s = start(&cfg);
    let control = format!("http://{}", s.control_addr());
    let (st, body) = http_auth(
        s.control_addr(),
        "PUT",
        "/v1/addresses/Mobile-1/override",
        "down",
    );
    assert_eq!(st, 200, "{body}");
    // (client, ecs) -> line, prefix, pool, answer, scope; each checked against the server.
    let cases = [
        (
            "127.0.0.1",
            Some("198.51.100.7/32"),
            "telecom",
            Some("198.51.100.0/24"),
            "Telecom",
            "127.0.0.22",
            Some(24),
        ),
        (
            "127.0.0.1",
            Some("2001:db8:100::1/128"),
            "telecom",
            Some("2001:db8:100::/48"),
            "Telecom",
            "127.0.0.22",
            Some(48),
        ),
        // Mobile-1 is down: the mobile line's pool is unhealthy, the default line's
        // Global answers its first address up.
        (
            "127.0.0.1",
            Some("192.0.2.7/32"),
            "mobile",
            Some("192.0.2.0/24"),
            "Global",
            "127.0.0.22",
            Some(24),
        ),
        (
            "127.0.0.1",
            None,
            "default",
            None,
            "Global",
            "127.0.0.22",
            None,
        ),
        // No ECS: the resolver's own address decides.
        (
            "198.51.100.9",
            None,
            "telecom",
            Some("198.51.100.0/24"),
            "Telecom",
            "127.0.0.22",
            None,
        ),
    ];
    for (client, ecs, line, prefix, pool, answer, scope) in cases {
        let doc = explain(&cfg, &control, client, ecs, &[]);
        let e = &doc["explanation"];
        assert_eq!(e["line"]["name"], line, "{e:#}");
        assert_eq!(e["line"]["prefix"].as_str(), prefix, "{client} {ecs:?}");
        let step = &e["steps"][0];
        assert_eq!(step["access_domain"], "app.example.test. A");
        assert_eq!(step["pool"], pool, "{client} {ecs:?}: {step:#}");
        assert_eq!(step["possible"], serde_json::json!([answer]));
        assert_eq!(step["varies"], false);
        assert_eq!(data(&e["reply"]), [answer]);
        assert_eq!(e["reply"]["scope"].as_u64(), scope.map(|s: u64| s));
        // The down address is shown down, with the server's reason.
        let all: Vec<&Value> = step["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["addresses"].as_array().unwrap())
            .collect();
        for a in all.iter().filter(|a| a["name"] == "Mobile-1") {
            assert_eq!(a["up"], false);
            assert_eq!(a["why"], "server: override down");
        }
        // What the server itself answers for an asker of that line.
        if let Some(e) = ecs {
            let out = gtmd(&[
                "probe",
                "-s",
                &s.addr.to_string(),
                "app.example.test",
                "--ecs",
                e,
                "--json",
            ]);
            let doc = json(&out);
            assert_eq!(data(&doc["rows"][1]["reply"]), [answer], "server, ECS {e}");
        }
    }
    // Without --server every address counts as up: mobile gets its own pool.
    let doc = explain(&cfg, "", "127.0.0.1", Some("192.0.2.7/32"), &[]);
    assert_eq!(doc["explanation"]["steps"][0]["pool"], "Mobile");
    assert_eq!(data(&doc["explanation"]["reply"]), ["127.0.0.21"]);
    // A weighted draw: the possible set, and that it varies.
    let out = gtmd(&[
        "explain",
        "w.example.test",
        "--client",
        "127.0.0.1",
        "-c",
        cfg.to_str().unwrap(),
        "--json",
    ]);
    let doc = json(&out);
    let step = &doc["explanation"]["steps"][0];
    assert_eq!(
        step["possible"],
        serde_json::json!(["127.0.0.51", "127.0.0.52"])
    );
    assert_eq!(step["varies"], true);
    // A static name: a note, no step.
    let out = gtmd(&[
        "explain",
        "www.example.test",
        "--client",
        "127.0.0.1",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is not scheduled"), "{text}");
    assert!(
        text.contains("www.example.test. 300 IN A 192.0.2.10"),
        "{text}"
    );
    // What-if: the telecom server moves in the new file.
    let new = dir.write("new.toml", &config("127.0.0.29"));
    let args = ["--compare", cfg.to_str().unwrap()];
    let doc = explain(&new, &control, "127.0.0.1", Some("198.51.100.7/32"), &args);
    let changes: Vec<(String, String, String)> = doc["compare"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("what"), s("old"), s("new"))
        })
        .collect();
    assert_eq!(
        changes,
        [
            (
                "app.example.test. A: possible addresses".into(),
                "127.0.0.22".into(),
                "127.0.0.29".into()
            ),
            (
                "answer".into(),
                "app.example.test. 30 A 127.0.0.22".into(),
                "app.example.test. 30 A 127.0.0.29".into()
            ),
        ]
    );
    // The text form says it too.
    let out = gtmd(&[
        "explain",
        "app.example.test",
        "--client",
        "127.0.0.1",
        "--ecs",
        "198.51.100.7",
        "-c",
        new.to_str().unwrap(),
        "--compare",
        cfg.to_str().unwrap(),
        "--server",
        &control,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line       telecom by prefix 198.51.100.0/24"),
        "{text}"
    );
    assert!(
        text.contains("Mobile-1 127.0.0.21 weight 1: down (server: override down)"),
        "{text}"
    );
    assert!(
        text.contains(
            "answer: app.example.test. 30 A 127.0.0.22 -> app.example.test. 30 A 127.0.0.29"
        ),
        "{text}"
    );
}

#[test]
fn explain_keeps_a_non_preemptive_route_where_the_server_has_it() {
    let dir = TempDir::new("tools-explain-np");
    let cfg = dir.write(
        "gtmd.toml",
        r#"version = 1

[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "hostmaster", serial = 1, minimum = 300 }
ns = ["ns1"]
records = ["ns1 A 127.0.0.53"]

[[address]]
name = "Primary-1"
value = "127.0.0.11"

[[address]]
name = "Backup-1"
value = "127.0.0.12"

[[pool]]
name = "Primary"
type = "ipv4"
addresses = ["Primary-1"]

[[pool]]
name = "Backup"
type = "ipv4"
addresses = ["Backup-1"]

[[access-domain]]
name = "www.example.test."
type = "A"
ttl = 30
policy = "global-availability"
preemptive = false
pools = ["Primary", "Backup"]
"#,
    );
    let s = start(&cfg);
    let control = format!("http://{}", s.control_addr());
    // The primary fails, then comes back: the route stays on the backup.
    for state in ["down", "up"] {
        let (st, body) = http_auth(
            s.control_addr(),
            "PUT",
            "/v1/addresses/Primary-1/override",
            state,
        );
        assert_eq!(st, 200, "{body}");
    }
    let m = s
        .udp(&Q::new("www.example.test", 1).edns(1232).build())
        .unwrap();
    assert_eq!(
        m.answers(1),
        ["127.0.0.12"],
        "the server stays on the backup"
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "www.example.test",
            "--client",
            "127.0.0.1",
            "-c",
            cfg.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&gtmd(&args))
    };
    let doc = run(&["--server", &control]);
    let step = &doc["explanation"]["steps"][0];
    assert_eq!(step["pool"], "Backup");
    assert!(
        step["pool_why"]
            .as_str()
            .unwrap()
            .starts_with("non-preemptive: stays on Backup"),
        "{step:#}"
    );
    assert_eq!(data(&doc["explanation"]["reply"]), ["127.0.0.12"]);
    // From the configuration alone, the first pool.
    let doc = run(&[]);
    assert_eq!(doc["explanation"]["steps"][0]["pool"], "Primary");
    assert_eq!(data(&doc["explanation"]["reply"]), ["127.0.0.11"]);
}

/// An HTTPS control API: verified against its own certificate (`--cacert`); without it
/// the certificate is unknown and explain stops with exit 2.
#[test]
fn explain_reads_an_https_control_api() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("tools-explain-tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let crt = dir.join("api.crt");
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(dir.join("api.key"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("api.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let text =
        config("127.0.0.22") + "\n[control]\ntls-cert = \"api.crt\"\ntls-key = \"api.key\"\n";
    let cfg = dir.write("gtmd.toml", &text);
    let s = start(&cfg);
    let url = format!("https://localhost:{}", s.control_addr().port());
    let args = |extra: &[&str]| {
        let mut v = vec![
            "explain",
            "app.example.test",
            "--client",
            "198.51.100.9",
            "-c",
            cfg.to_str().unwrap(),
            "--server",
            &url,
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let out = Command::new(BIN)
        .args(args(&["--cacert", crt.to_str().unwrap(), "--json"]))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let e = &doc["explanation"];
    assert_eq!(e["health"], format!("{url}/v1/state (generation 1)"));
    assert_eq!(
        e["steps"][0]["candidates"][0]["addresses"][0]["why"],
        "server: probe up"
    );
    assert_eq!(data(&e["reply"]), ["127.0.0.22"]);
    let out = Command::new(BIN).args(args(&[])).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(TLS)") && err.contains("certificate"),
        "{err}"
    );
}
