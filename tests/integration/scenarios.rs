//! GSLB through the real binary with the configs in `examples/`, beyond what a scenario
//! file of `tests/cases/` says (S1, S2, S3 and S6 are `tests/cases/*.scenario`): health
//! switched with the control API's overrides, lines chosen with EDNS Client Subnet, the
//! API's view of routes, rotation and weights counted over many queries (S4, S5), lines
//! from files and MaxMind databases, persistence, pool conditions. Both I/O backends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::*;

const A: u16 = 1;
const AAAA: u16 = 28;

struct Gtm {
    s: Server,
    control: SocketAddr,
}

impl Gtm {
    fn start(config: &std::path::Path, io: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--config", config.to_str().unwrap(), "--io", io];
        args.extend_from_slice(extra);
        let s = Server::start(&args);
        let control = s.control_addr();
        Self { s, control }
    }

    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_auth(self.control, method, path, body)
    }

    fn set(&self, address: &str, state: &str) {
        let (st, body) = self.http("PUT", &format!("/v1/addresses/{address}/override"), state);
        assert_eq!(st, 200, "{body}");
    }

    fn state(&self) -> serde_json::Value {
        let (st, body) = self.http("GET", "/v1/state", "");
        assert_eq!(st, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Sorted A/AAAA answers for `name` asked from `subnet` (None: no ECS).
    fn ask(&self, name: &str, qtype: u16, subnet: Option<[u8; 4]>) -> (Vec<String>, Msg) {
        let mut q = Q::new(name, qtype).edns(1232);
        if let Some(a) = subnet {
            q = q.ecs(1, 32, 0, &a);
        }
        let m = self.s.udp(&q.build()).expect("answer");
        (m.answers(qtype), m)
    }
}

/// The nearest access domain `geo.example.test.` A: each (line, pool, address) answers
/// that line from a pool of that one address (named POOL-1), in order.
fn geo_nearest(routes: &[(&str, &str, &str)]) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    for (_, pool, ip) in routes {
        let _ = write!(t, "[[address]]\nname = \"{pool}-1\"\nvalue = \"{ip}\"\n");
    }
    for (_, pool, _) in routes {
        let _ = write!(
            t,
            "[[pool]]\nname = \"{pool}\"\ntype = \"ipv4\"\naddresses = [\"{pool}-1\"]\n"
        );
    }
    t.push_str(
        "[[access-domain]]\nname = \"geo.example.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
         [access-domain.lines]\n",
    );
    for (line, pool, _) in routes {
        let _ = writeln!(t, "{line} = [\"{pool}\"]");
    }
    t
}

fn ips(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// S2 with every address down, in the control API: each of the four routes (default and
/// three lines) is on its fallback, with no active pool. (The answers of every row of S2
/// are `tests/cases/s2-carrier-lines.scenario`.)
fn s2_state_all_down(io: &str) {
    let g = Gtm::start(&example("carrier-lines.toml"), io, &[]);
    for a in ["Mobile-Server-01", "Telecom-Server-01", "Unicom-Server-01"] {
        g.set(a, "down");
    }
    let (got, _) = g.ask("app.example.test", A, Some([192, 0, 2, 7]));
    assert_eq!(got, ips(&["127.0.0.21", "127.0.0.22", "127.0.0.23"]));
    let st = g.state();
    let routes = st["access_domains"][0]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4, "default + 3 lines");
    assert!(routes
        .iter()
        .all(|r| r["fallback"] == true && r["active"].is_null()));
}

/// S4: dual stack, both addresses in every answer, rotated evenly across shards.
fn s4(io: &str) {
    let g = Gtm::start(&example("dual-stack.toml"), io, &["--shards", "2"]);
    let mut first = BTreeMap::<String, usize>::new();
    for _ in 0..400 {
        let (got, m) = g.ask("dual.example.test", A, None);
        assert_eq!(got, ips(&["127.0.0.41", "127.0.0.42"]));
        *first.entry(m.answer[0].data.clone()).or_default() += 1;
    }
    for (ip, n) in &first {
        assert!(
            (160..=240).contains(n),
            "rotation uneven: {ip} first in {n}/400 ({first:?})"
        );
    }
    let (got, _) = g.ask("dual.example.test", AAAA, None);
    assert_eq!(got, ips(&["2001:db8::41", "2001:db8::42"]));
}

/// S5: weighted 3:1 within 3 points over 10,000 queries.
fn s5(io: &str) {
    let g = Gtm::start(&example("weighted.toml"), io, &["--shards", "2"]);
    let mut n51 = 0;
    let total = 10_000;
    for _ in 0..total {
        let (got, _) = g.ask("weighted.example.test", A, None);
        assert_eq!(got.len(), 1);
        if got[0] == "127.0.0.51" {
            n51 += 1;
        }
    }
    let share = n51 as f64 * 100.0 / total as f64;
    assert!(
        (72.0..=78.0).contains(&share),
        "127.0.0.51 share {share}% (want 75 +- 3)"
    );
}

#[test]
fn scenarios_io_uring() {
    s2_state_all_down("io-uring");
    s4("io-uring");
}

#[test]
fn scenarios_mmsg() {
    s2_state_all_down("mmsg");
    s4("mmsg");
}

#[test]
fn weighted_shares() {
    s5("auto");
}

/// Overrides are persisted and survive a restart; health and non-preemptive pools carry
/// over across a reload by name; a change is visible to the very next query.
#[test]
fn overrides_persist_and_state_carries_over() {
    let scratch = TempDir::new("persist");
    let dir = scratch.path();
    let cfg = dir.join("pb.toml");
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    // No health checks here: this test is about overrides, not probes.
    let text = std::fs::read_to_string(example("primary-backup-nonpreemptive.toml"))
        .unwrap()
        .replace("health-check = \"http-health\"\n", "")
        .replace(
            "listen = \"127.0.0.1:5380\"",
            &format!(
                "listen = \"127.0.0.1:5380\"\nstate-file = \"{}\"",
                state.display()
            ),
        );
    std::fs::write(&cfg, &text).unwrap();
    {
        let g = Gtm::start(&cfg, "auto", &["--shards", "2"]);
        for _ in 0..20 {
            g.set("Primary-Server-01", "down");
            assert_eq!(
                g.ask("www.example.test", A, None).0,
                vec!["127.0.0.12"],
                "seen at once"
            );
            g.set("Backup-Server-01", "down");
            g.set("Primary-Server-01", "up");
            assert_eq!(
                g.ask("www.example.test", A, None).0,
                vec!["127.0.0.11"],
                "seen at once"
            );
            g.set("Backup-Server-01", "up");
        }
        // Non-preemptive state: on the backup while the primary is back.
        g.set("Primary-Server-01", "down");
        g.set("Primary-Server-01", "up");
        assert_eq!(g.ask("www.example.test", A, None).0, vec!["127.0.0.12"]);
        // A reload (TTL change) keeps both the override-driven health and the pool in use.
        std::fs::write(&cfg, text.replace("ttl = 30", "ttl = 31")).unwrap();
        g.s.signal(libc::SIGHUP);
        g.s.wait_log("generation=2", Duration::from_secs(5));
        let (got, m) = g.ask("www.example.test", A, None);
        assert_eq!(
            got,
            vec!["127.0.0.12"],
            "non-preemptive pool kept across reload"
        );
        assert_eq!(m.answer[0].ttl, 31);
        g.set("Backup-Server-01", "down");
        assert_eq!(g.ask("www.example.test", A, None).0, vec!["127.0.0.11"]);
        let st = g.state();
        let backup = st["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "Backup-Server-01")
            .unwrap()
            .clone();
        assert_eq!(backup["override"], "down");
        assert_eq!(backup["up"], false);
        assert_eq!(st["generation"], 2);
        assert_eq!(
            st["access_domains"][0]["policy"],
            "global-availability (non-preemptive)"
        );
        assert_eq!(
            st["access_domains"][0]["routes"][0]["active"][0],
            "Primary-DC"
        );
        let (st, _) = g.http("PUT", "/v1/addresses/No-Such/override", "down");
        assert_eq!(st, 404);
        let (st, _) = g.http("PUT", "/v1/addresses/Backup-Server-01/override", "sideways");
        assert_eq!(st, 400);
    }
    // Restart: the override (backup down) is restored from the state file.
    let g = Gtm::start(&cfg, "auto", &[]);
    g.s.wait_log("operator overrides restored", Duration::from_secs(2));
    assert_eq!(g.ask("www.example.test", A, None).0, vec!["127.0.0.11"]);
    g.set("Primary-Server-01", "down");
    let (got, m) = g.ask("www.example.test", A, None);
    assert_eq!(
        got,
        ips(&["127.0.0.11", "127.0.0.12"]),
        "everything down: fallback returns all"
    );
    assert_eq!(m.rcode(), 0);
    let (st, _) = g.http("DELETE", "/v1/addresses/Backup-Server-01/override", "");
    assert_eq!(st, 200);
    assert_eq!(g.ask("www.example.test", A, None).0, vec!["127.0.0.12"]);
}

/// Lines from a file of 100,000 prefixes, parent chains (city -> country -> continent),
/// IPv6 ECS, the default line's order as the last resort, and the switch that ignores ECS.
#[test]
fn lines_files_parents_v6_and_ecs_switch() {
    let scratch = TempDir::new("lines");
    let dir = scratch.path();
    // 100,000 distinct /24s under 100.64.0.0/10 .. (deterministic), plus 11.22.33.0/24.
    let mut text = String::from("# generated\n11.22.33.0/24\n");
    for i in 0..100_000u32 {
        let a = 0x6440_0000u32 + (i << 8); // 100.64.0.0 + i*256
        text.push_str(&format!(
            "{}.{}.{}.0/24\n",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255
        ));
    }
    std::fs::write(dir.join("big.txt"), text).unwrap();
    let cfg = |ecs: bool| {
        format!(
            r#"version = 1
[server]
ecs = {ecs}
[[zone]]
name = "example.test."
soa = {{ mname = "ns1", rname = "hostmaster" }}
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[line]]
name = "big"
file = "big.txt"
[[line]]
name = "asia"
prefixes = ["10.0.0.0/8"]
[[line]]
name = "cn"
parent = "asia"
prefixes = ["10.1.0.0/16"]
[[line]]
name = "cn-bj"
parent = "cn"
prefixes = ["10.1.2.0/24", "2001:db8:100::/48"]
{geo}"#,
            geo = geo_nearest(&[
                ("big", "big", "127.0.0.71"),
                ("asia", "asia", "127.0.0.72"),
                ("cn", "cn", "127.0.0.73"),
                ("default", "def", "127.0.0.74"),
            ])
        )
    };
    std::fs::write(dir.join("geo.toml"), cfg(true)).unwrap();
    let t0 = std::time::Instant::now();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.join("geo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "100k prefixes checked in {:?}",
        t0.elapsed()
    );
    let g = Gtm::start(&dir.join("geo.toml"), "auto", &[]);
    fn geo(g: &Gtm, sub: [u8; 4]) -> (Vec<String>, u8) {
        let (got, m) = g.ask("geo.example.test", A, Some(sub));
        (got, m.opt().unwrap().rdata[7])
    }
    let ask = |sub| geo(&g, sub);
    assert_eq!(
        ask([100, 64, 0, 9]),
        (vec!["127.0.0.71".into()], 24),
        "first prefix of the file"
    );
    assert_eq!(
        ask([100, 65, 134, 200]),
        (vec!["127.0.0.71".into()], 24),
        "a prefix deep in the file"
    );
    assert_eq!(ask([11, 22, 33, 44]), (vec!["127.0.0.71".into()], 24));
    assert_eq!(ask([10, 9, 9, 9]).0, vec!["127.0.0.72"], "continent");
    // 10.1.0.0/16 holds the city's /24, so the answer is valid only for the largest block
    // around the address that avoids it: 10.1.8.0/21.
    assert_eq!(
        ask([10, 1, 9, 9]),
        (vec!["127.0.0.73".into()], 21),
        "country, scope avoids the city"
    );
    assert_eq!(
        ask([10, 1, 2, 3]),
        (vec!["127.0.0.73".into()], 24),
        "city inherits its country's pools, scope of its own /24"
    );
    assert_eq!(ask([9, 9, 9, 9]).0, vec!["127.0.0.74"], "default");
    // IPv6 ECS: city prefix, /56 source.
    let q = Q::new("geo.example.test", A).edns(1232).ecs(
        2,
        56,
        0,
        &[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00],
    );
    let m = g.s.udp(&q.build()).unwrap();
    assert_eq!(m.answers(A), vec!["127.0.0.73"]);
    assert_eq!(m.opt().unwrap().rdata[7], 48, "scope of the /48");
    // A v4-mapped IPv6 subnet (::ffff:10.1.2.0/120) is looked up as IPv4; its scope counts
    // the 96 bits of the mapping prefix (a /24 decided: 120), in the IPv6 option.
    let mut mapped = vec![0u8; 10];
    mapped.extend_from_slice(&[0xff, 0xff, 10, 1, 2]);
    let q = Q::new("geo.example.test", A)
        .edns(1232)
        .ecs(2, 120, 0, &mapped);
    let m = g.s.udp(&q.build()).unwrap();
    assert_eq!(m.answers(A), vec!["127.0.0.73"]);
    assert_eq!(
        m.opt().unwrap().rdata[4..8],
        [0, 2, 120, 120],
        "mapped scope"
    );
    // The country's pool down: the default line's order answers, not the continent's.
    g.set("cn-1", "down");
    assert_eq!(ask([10, 1, 2, 3]).0, vec!["127.0.0.74"]);
    drop(g);
    // ecs = false: the resolver's address (127.0.0.1) decides, ECS is echoed with scope 0.
    std::fs::write(dir.join("geo.toml"), cfg(false)).unwrap();
    let g = Gtm::start(&dir.join("geo.toml"), "auto", &[]);
    assert_eq!(geo(&g, [10, 1, 2, 3]), (vec!["127.0.0.74".into()], 0));
}

/// Access domains in included files: each file's domains serve with their lines and
/// pools from the main file, files that do not match the pattern are ignored, the slot
/// state reaches /v1/state, and a reload re-reads the files.
#[test]
fn included_access_domain_files() {
    let scratch = TempDir::new("include");
    let dir = scratch.path();
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    std::fs::write(
        dir.join("main.toml"),
        r#"version = 1
include = ["ads/*.toml"]
[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "hostmaster" }
ns = ["ns1"]
records = ["ns1 A 192.0.2.1", "plain A 192.0.2.9"]
[[line]]
name = "east"
prefixes = ["10.1.0.0/16"]
[[address]]
name = "e1"
value = "127.0.0.81"
[[address]]
name = "d1"
value = "127.0.0.82"
[[pool]]
name = "east"
type = "ipv4"
addresses = ["e1"]
[[pool]]
name = "def"
type = "ipv4"
addresses = ["d1"]
"#,
    )
    .unwrap();
    let ad = |name: &str, policy: &str| {
        format!(
            "[[access-domain]]\nname = \"{name}.example.test.\"\ntype = \"A\"\npolicy = \"{policy}\"\n\
             [access-domain.lines]\ndefault = [\"def\"]\neast = [\"east\"]\n"
        )
    };
    std::fs::write(dir.join("ads/01-a.toml"), ad("a", "nearest")).unwrap();
    std::fs::write(
        dir.join("ads/02-b.toml"),
        format!("{}{}", ad("b", "nearest"), ad("c", "nearest")),
    )
    .unwrap();
    std::fs::write(dir.join("ads/notes.txt"), "not toml, not matched").unwrap();
    let g = Gtm::start(&dir.join("main.toml"), "auto", &[]);
    for n in ["a", "b", "c"] {
        let name = format!("{n}.example.test");
        assert_eq!(
            g.ask(&name, A, Some([10, 1, 2, 3])).0,
            vec!["127.0.0.81"],
            "{n} east"
        );
        assert_eq!(
            g.ask(&name, A, Some([10, 2, 2, 3])).0,
            vec!["127.0.0.82"],
            "{n} default"
        );
    }
    assert_eq!(g.ask("plain.example.test", A, None).0, vec!["192.0.2.9"]);
    assert_eq!(
        g.ask("d.example.test", A, None).1.rcode(),
        3,
        "not yet declared"
    );
    let st = g.state();
    let ads = st["access_domains"].as_array().unwrap();
    assert_eq!(ads.len(), 3);
    let routes = ads[1]["routes"].as_array().unwrap();
    assert_eq!(routes[0]["lines"], "default");
    assert_eq!(routes[0]["active"][0], "def");
    assert_eq!(routes[1]["lines"], "east");
    assert_eq!(routes[1]["active"][0], "east");
    // A new file, picked up by a reload.
    std::fs::write(dir.join("ads/03-d.toml"), ad("d", "nearest")).unwrap();
    g.s.signal(libc::SIGHUP);
    g.s.wait_log("new configuration serving", Duration::from_secs(10));
    assert_eq!(
        g.ask("d.example.test", A, Some([10, 1, 0, 1])).0,
        vec!["127.0.0.81"]
    );
    assert_eq!(
        g.ask("a.example.test", A, Some([10, 1, 0, 1])).0,
        vec!["127.0.0.81"]
    );
    drop(g);
}

/// One address going down moves 1,200 routes: shards switch them all, the log lists the
/// first 1,000 route switches one by one and counts the rest in one event.
#[test]
fn many_route_switches_are_counted_not_listed() {
    let scratch = TempDir::new("many");
    let dir = scratch.path();
    let mut text = String::from(
        r#"version = 1
[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "hostmaster" }
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[address]]
name = "p1"
value = "127.0.0.91"
[[address]]
name = "b1"
value = "127.0.0.92"
[[pool]]
name = "primary"
type = "ipv4"
addresses = ["p1"]
[[pool]]
name = "backup"
type = "ipv4"
addresses = ["b1"]
"#,
    );
    for i in 0..1200 {
        text.push_str(&format!(
            "[[access-domain]]\nname = \"s{i}.example.test.\"\ntype = \"A\"\n\
             policy = \"global-availability\"\npools = [\"primary\", \"backup\"]\n"
        ));
    }
    std::fs::write(dir.join("many.toml"), text).unwrap();
    let g = Gtm::start(&dir.join("many.toml"), "auto", &[]);
    assert_eq!(g.ask("s1199.example.test", A, None).0, vec!["127.0.0.91"]);
    g.set("p1", "down");
    g.s.wait_log("200 more routes switched pools", Duration::from_secs(5));
    assert_eq!(g.s.count_log("now answer from pool backup"), 1000);
    for n in ["s0", "s600", "s1199"] {
        assert_eq!(
            g.ask(&format!("{n}.example.test"), A, None).0,
            vec!["127.0.0.92"],
            "{n}"
        );
    }
    drop(g);
}

/// Country, continent and ASN lines from MaxMind-format databases the test writes itself.
#[test]
fn lines_from_maxmind_databases() {
    use crate::harness::mmdb::{write, V};
    let scratch = TempDir::new("geo");
    let dir = scratch.path();
    let geo = |cc: &'static str, cont: &'static str| {
        V::Map(vec![
            ("continent", V::Map(vec![("code", V::Str(cont))])),
            ("country", V::Map(vec![("iso_code", V::Str(cc))])),
        ])
    };
    write(
        &dir.join("country.mmdb"),
        &[
            ([1, 2, 3, 0], 24, geo("CN", "AS")),
            ([5, 6, 0, 0], 16, geo("JP", "AS")),
            ([9, 9, 9, 0], 24, geo("US", "NA")),
            ([7, 7, 0, 0], 16, geo("CN", "AS")),
        ],
    );
    write(
        &dir.join("asn.mmdb"),
        &[(
            [7, 7, 7, 0],
            24,
            V::Map(vec![("autonomous_system_number", V::U32(4134))]),
        )],
    );
    let cfg = r#"version = 1
[geoip]
databases = ["country.mmdb", "asn.mmdb"]
[[zone]]
name = "example.test."
soa = { mname = "ns1", rname = "hostmaster" }
ns = ["ns1"]
records = ["ns1 A 192.0.2.1"]
[[line]]
name = "asia"
continents = ["AS"]
[[line]]
name = "cn"
countries = ["cn"]
parent = "asia"
[[line]]
name = "chinanet"
asns = [4134]
parent = "cn"
"#
    .to_string()
        + &geo_nearest(&[
            ("asia", "asia", "127.0.0.81"),
            ("cn", "cn", "127.0.0.82"),
            ("chinanet", "ct", "127.0.0.83"),
            ("default", "def", "127.0.0.84"),
        ]);
    std::fs::write(dir.join("geo.toml"), &cfg).unwrap();
    let g = Gtm::start(&dir.join("geo.toml"), "auto", &[]);
    let ask = |a: [u8; 4]| {
        let (got, m) = g.ask("geo.example.test", A, Some(a));
        (got, m.opt().unwrap().rdata[7])
    };
    assert_eq!(
        ask([1, 2, 3, 4]),
        (vec!["127.0.0.82".into()], 24),
        "country CN"
    );
    assert_eq!(
        ask([5, 6, 7, 8]),
        (vec!["127.0.0.81".into()], 16),
        "JP: continent AS"
    );
    assert_eq!(
        ask([7, 7, 7, 7]),
        (vec!["127.0.0.83".into()], 24),
        "ASN 4134 inside a CN /16"
    );
    assert_eq!(
        ask([7, 7, 8, 8]).0,
        vec!["127.0.0.82"],
        "rest of the CN /16"
    );
    assert_eq!(ask([9, 9, 9, 9]).0, vec!["127.0.0.84"], "US: default");
    // A database that cannot be read is a config error with its line.
    std::fs::write(
        dir.join("bad.toml"),
        cfg.replace("asn.mmdb", "missing.mmdb"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(dir)
        .args(["check", "--config", "bad.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("bad.toml:3: geoip.databases: cannot open missing.mmdb"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pool health conditions: all, at least N, at least P%, each deciding when global
/// availability moves to the next pool; round-robin answers only the addresses up.
#[test]
fn pool_health_conditions() {
    let scratch = TempDir::new("cond");
    let dir = scratch.path();
    let mut text = String::from(
        "version = 1\n[[zone]]\nname = \"example.test.\"\nsoa = { mname = \"ns1\", rname = \"hostmaster\" }\n\
         ns = [\"ns1\"]\nrecords = [\"ns1 A 192.0.2.1\"]\n[[address]]\nname = \"spare\"\nvalue = \"127.0.0.200\"\n\
         [[pool]]\nname = \"spare\"\ntype = \"ipv4\"\naddresses = [\"spare\"]\n",
    );
    for (k, cond) in [(1, "all"), (2, "at least 2"), (3, "at least 75%")] {
        for i in 1..=4 {
            text.push_str(&format!(
                "[[address]]\nname = \"c{k}-{i}\"\nvalue = \"127.0.{k}.{i}\"\n"
            ));
        }
        text.push_str(&format!(
            "[[pool]]\nname = \"c{k}\"\ntype = \"ipv4\"\naddresses = [\"c{k}-1\", \"c{k}-2\", \"c{k}-3\", \"c{k}-4\"]\nhealth = \"{cond}\"\n\
             [[access-domain]]\nname = \"c{k}.example.test.\"\ntype = \"A\"\npolicy = \"global-availability\"\npools = [\"c{k}\", \"spare\"]\n"
        ));
    }
    std::fs::write(dir.join("cond.toml"), text).unwrap();
    let g = Gtm::start(&dir.join("cond.toml"), "auto", &[]);
    let four = |k: u8| {
        ips(&[
            &format!("127.0.{k}.1"),
            &format!("127.0.{k}.2"),
            &format!("127.0.{k}.3"),
            &format!("127.0.{k}.4"),
        ])
    };
    for k in 1..=3u8 {
        assert_eq!(
            g.ask(&format!("c{k}.example.test"), A, None).0,
            four(k),
            "all up"
        );
    }
    // One of four down: "all" fails; "at least 2" and "at least 75%" hold (3 of 4).
    for k in 1..=3 {
        g.set(&format!("c{k}-1"), "down");
    }
    assert_eq!(g.ask("c1.example.test", A, None).0, vec!["127.0.0.200"]);
    assert_eq!(
        g.ask("c2.example.test", A, None).0,
        ips(&["127.0.2.2", "127.0.2.3", "127.0.2.4"])
    );
    assert_eq!(
        g.ask("c3.example.test", A, None).0,
        ips(&["127.0.3.2", "127.0.3.3", "127.0.3.4"])
    );
    // Two of four down: "at least 2" still holds, 75% does not.
    for k in 2..=3 {
        g.set(&format!("c{k}-2"), "down");
    }
    assert_eq!(
        g.ask("c2.example.test", A, None).0,
        ips(&["127.0.2.3", "127.0.2.4"])
    );
    assert_eq!(g.ask("c3.example.test", A, None).0, vec!["127.0.0.200"]);
    // Three down: "at least 2" fails too.
    g.set("c2-3", "down");
    assert_eq!(g.ask("c2.example.test", A, None).0, vec!["127.0.0.200"]);
    let st = g.state();
    let healthy: Vec<bool> = ["c1", "c2", "c3"]
        .iter()
        .map(|n| {
            st["pools"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == *n)
                .unwrap()["healthy"]
                == true
        })
        .collect();
    assert_eq!(healthy, vec![false, false, false]);
}

/// Pool policy round-robin: pools are taken in turn and each pool's addresses rotate on
/// their own, on every shard (two shards here): every address comes first in about a
/// quarter of the answers.
#[test]
fn round_robin_pools_rotate_pools_and_addresses() {
    let scratch = TempDir::new("rr");
    let dir = scratch.path();
    let mut text = String::from(
        "version = 1\n[server]\nshards = [0, 1]\n[[zone]]\nname = \"example.test.\"\n\
         soa = { mname = \"ns1\", rname = \"hostmaster\" }\nns = [\"ns1\"]\nrecords = [\"ns1 A 192.0.2.1\"]\n",
    );
    for i in 1..=4 {
        text.push_str(&format!(
            "[[address]]\nname = \"r{i}\"\nvalue = \"127.0.9.{i}\"\nmode = \"up\"\n"
        ));
    }
    text.push_str(
        "[[pool]]\nname = \"RA\"\ntype = \"ipv4\"\naddresses = [\"r1\", \"r2\"]\n\
         [[pool]]\nname = \"RB\"\ntype = \"ipv4\"\naddresses = [\"r3\", \"r4\"]\n\
         [[access-domain]]\nname = \"rr.example.test.\"\ntype = \"A\"\npolicy = \"round-robin\"\n\
         pools = [\"RA\", \"RB\"]\n",
    );
    std::fs::write(dir.join("rr.toml"), text).unwrap();
    let g = Gtm::start(&dir.join("rr.toml"), "auto", &[]);
    let mut first = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..400 {
        // A fresh socket per query: the kernel spreads them over both shards.
        let m = g.s.udp(&Q::new("rr.example.test", A).build()).unwrap();
        // In answer order (`answers` sorts).
        let got: Vec<String> = m.answer.iter().map(|r| r.data.clone()).collect();
        assert_eq!(got.len(), 2, "a whole pool: {got:?}");
        let pool_a = got.iter().all(|a| a == "127.0.9.1" || a == "127.0.9.2");
        let pool_b = got.iter().all(|a| a == "127.0.9.3" || a == "127.0.9.4");
        assert!(pool_a || pool_b, "one pool per answer: {got:?}");
        *first.entry(got[0].clone()).or_default() += 1;
    }
    for i in 1..=4 {
        let n = first.get(&format!("127.0.9.{i}")).copied().unwrap_or(0);
        assert!(
            (60..=140).contains(&n),
            "127.0.9.{i} first {n} of 400: {first:?}"
        );
    }
}
