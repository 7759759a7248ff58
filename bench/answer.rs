//! Micro-benchmark of the answer path without sockets: parse + lookup + build, per query,
//! over a mix of query kinds, against a compiled snapshot of 100,000 names.
//!
//! `cargo bench --bench answer` (add `-- --quick` for a short run; `ANSWER_CASES='a;b'` runs
//! only the cases named so, or whose names start with one of those). Prints the median of several
//! rounds in ns/query for each kind; PERF.md quotes it.

use std::hint::black_box;
use std::time::Instant;

use gtmd::compile::compile;
use gtmd::config::{Config, Rrl};
use gtmd::shard::rrl;
use gtmd::tables::gslb::{ClientAddr, Local};
use gtmd::tables::Snapshot;
use gtmd::wire::{respond, Query, Transport};

fn query(name: &str, qtype: u16, edns: Option<&[u8]>) -> Vec<u8> {
    let mut p = vec![
        0x12,
        0x34,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        edns.is_some() as u8,
    ];
    for l in name.split('.').filter(|l| !l.is_empty()) {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if let Some(opts) = edns {
        p.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0]);
        p.extend_from_slice(&(opts.len() as u16).to_be_bytes());
        p.extend_from_slice(opts);
    }
    p
}

/// The benchmark's configuration: one zone of 100,000 names (and a wildcard, a CNAME, MX,
/// DNAME, a delegation with DS) and the GSLB model below.
fn config_text() -> String {
    let mut records = String::new();
    for i in 0..100_000 {
        records.push_str(&format!(
            "    \"host{i} 300 A 10.{}.{}.{}\",\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    let gslb = gslb_text();
    format!(
        "version = 1\n[server]\nnsid = \"edge-1.example\"\n[[zone]]\nname = \"example.test.\"\nsoa = {{ mname = \"ns1\", rname = \"h\" }}\n\
         ns = [\"ns1\", \"ns2\"]\nrecords = [\n    \"ns1 A 192.0.2.53\",\n    \"*.wild A 192.0.2.99\",\n\
         \"alias CNAME host7\",\n    \"mx MX 10 host7\",\n    \"dn DNAME example.test.\",\n\
         \"gw CNAME gslb\",\n    \"sub NS ns.sub\",\n    \"sub DS 1 8 2 00112233\",\n\
         \"ns.sub A 192.0.2.54\",\n{records}]\n{gslb}"
    )
}

/// GSLB: 32 lines of ~3,000 prefixes each (96k /24s), health-checked pools, one nearest
/// access domain mapping every line, and a weighted one.
fn gslb_text() -> String {
    let mut gslb = String::new();
    for l in 0..32u32 {
        gslb.push_str(&format!("[[line]]\nname = \"line{l}\"\nprefixes = ["));
        for k in 0..3000u32 {
            let a = 0x0B00_0000u32 + ((l * 3000 + k) << 8);
            gslb.push_str(&format!(
                "\"{}.{}.{}.0/24\",",
                a >> 24,
                (a >> 16) & 255,
                (a >> 8) & 255
            ));
        }
        gslb.push_str("]\n");
        gslb.push_str(&format!(
            "[[address]]\nname = \"a{l}\"\nvalue = \"127.0.{l}.1\"\nhealth-check = \"hc\"\n\
             [[address]]\nname = \"b{l}\"\nvalue = \"127.0.{l}.2\"\nhealth-check = \"hc\"\n\
             [[pool]]\nname = \"p{l}\"\ntype = \"ipv4\"\naddresses = [\"a{l}\", \"b{l}\"]\n"
        ));
    }
    gslb.push_str("[[health-check]]\nname = \"hc\"\nprotocol = \"tcp\"\nport = 80\n");
    // Two pools taken out (disabled), sharing an address: the fallback answers every
    // enabled address of both, each once (7 records).
    for i in 0..7 {
        gslb.push_str(&format!(
            "[[address]]\nname = \"f{i}\"\nvalue = \"127.1.0.{i}\"\n"
        ));
    }
    gslb.push_str(
        "[[pool]]\nname = \"pf0\"\ntype = \"ipv4\"\nenabled = false\n\
         addresses = [\"f0\", \"f1\", \"f2\", \"f3\"]\n\
         [[pool]]\nname = \"pf1\"\ntype = \"ipv4\"\nenabled = false\n\
         addresses = [\"f3\", \"f4\", \"f5\", \"f6\"]\n\
         [[access-domain]]\nname = \"fb.example.test.\"\ntype = \"A\"\n\
         policy = \"weighted\"\npools = [\"pf0\", \"pf1\"]\nfallback = \"all\"\n",
    );
    // The [access-domain.lines] table must follow its access domain: the weighted one first.
    gslb.push_str("[[access-domain]]\nname = \"wrr.example.test.\"\ntype = \"A\"\npolicy = \"weighted\"\npools = [\"p0\", \"p1\"]\n");
    gslb.push_str(
        "[[access-domain]]\nname = \"gslb.example.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n",
    );
    gslb.push_str("[access-domain.lines]\n");
    for l in 0..32 {
        gslb.push_str(&format!("line{l} = [\"p{l}\"]\n"));
    }
    gslb.push_str("default = [\"p0\"]\n");
    gslb
}

/// The query of every case, by name.
fn cases(snap: &Snapshot) -> Vec<(&'static str, Vec<u8>)> {
    let ecs_line = [0u8, 8, 0, 7, 0, 1, 24, 0, 11, 0x2E, 0xE1]; // 11.46.225.0/24: inside line 4
    let ecs = [0u8, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100];
    // A client cookie alone (a new server cookie is made), and with a valid server cookie.
    let mut cookie_new = vec![0u8, 10, 0, 8];
    cookie_new.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let secret = snap.cookies.as_ref().expect("cookies on").current;
    let sc = gtmd::wire::cookie::make(
        &secret,
        &[1, 2, 3, 4, 5, 6, 7, 8],
        Some(ClientAddr::V4(0x7F00_0001)),
        gtmd::wire::cookie::now(),
    );
    let mut cookie_valid = vec![0u8, 10, 0, 24, 1, 2, 3, 4, 5, 6, 7, 8];
    cookie_valid.extend_from_slice(&sc);
    let nsid = [0u8, 3, 0, 0];
    vec![
        ("A, exact name", query("host4242.example.test", 1, None)),
        (
            "A, exact, EDNS",
            query("host4242.example.test", 1, Some(&[])),
        ),
        (
            "A, exact, EDNS+ECS",
            query("host4242.example.test", 1, Some(&ecs)),
        ),
        ("A, mixed case", query("HoSt4242.ExAmPlE.TeSt", 1, None)),
        ("A, wildcard", query("a.b.wild.example.test", 1, None)),
        ("A, CNAME chain", query("alias.example.test", 1, None)),
        ("NXDOMAIN", query("nothere.example.test", 1, None)),
        (
            "GSLB nearest, ECS line",
            query("gslb.example.test", 1, Some(&ecs_line)),
        ),
        ("GSLB nearest, no ECS", query("gslb.example.test", 1, None)),
        ("GSLB weighted pools", query("wrr.example.test", 1, None)),
        ("GSLB fallback, all down", query("fb.example.test", 1, None)),
        ("REFUSED", query("www.example.com", 1, None)),
        ("MX + additional A", query("mx.example.test", 15, None)),
        ("DS at a delegation", query("sub.example.test", 43, None)),
        ("DNAME, chased", query("host4242.dn.example.test", 1, None)),
        (
            "CNAME to GSLB, ECS",
            query("gw.example.test", 1, Some(&ecs_line)),
        ),
        (
            "A, exact, EDNS+NSID",
            query("host4242.example.test", 1, Some(&nsid)),
        ),
        (
            "A, exact, client cookie",
            query("host4242.example.test", 1, Some(&cookie_new)),
        ),
        (
            "A, exact, valid cookie",
            query("host4242.example.test", 1, Some(&cookie_valid)),
        ),
        // Response rate limiting on (rate 1,000,000/s, Knot's table size), not limiting:
        // the queries come from 1,024 or 100,000 /24s in turn, so no bucket runs dry.
        (
            "RRL on, 1k sources",
            query("host4242.example.test", 1, None),
        ),
        (
            "RRL on, 100k sources",
            query("host4242.example.test", 1, None),
        ),
    ]
}

/// The cases `ANSWER_CASES` picks (all without it). A pattern that is a case's whole name
/// picks that case alone (`A, exact, EDNS` is also the start of `A, exact, EDNS+ECS`); any
/// other picks the cases it starts.
fn picked(cases: Vec<(&'static str, Vec<u8>)>) -> Vec<(&'static str, Vec<u8>)> {
    let only = only_cases();
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let picks = |n: &str, p: &str| {
        if names.contains(&p) {
            n == p
        } else {
            n.starts_with(p)
        }
    };
    cases
        .into_iter()
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o.iter().any(|p| picks(n, p))))
        .collect()
}

/// The patterns of `ANSWER_CASES` (`;`-separated), if set.
fn only_cases() -> Option<Vec<String>> {
    std::env::var("ANSWER_CASES")
        .ok()
        .map(|v| v.split(';').map(str::to_string).collect())
}

/// Response rate limiting as the RRL cases run it: 1,000,000/s (so it never limits here),
/// Knot's table size.
fn rrl_table() -> rrl::Table {
    rrl::Table::new(std::sync::Arc::new(Rrl {
        rate: 1_000_000,
        slip: 1,
        table_size: gtmd::config::RRL_TABLE_SIZE,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        exempt: Vec::new(),
    }))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let text = config_text();
    let t0 = Instant::now();
    let cfg = Config::from_str(&text, "bench".into(), std::path::Path::new(".")).expect("config");
    let snap = std::sync::Arc::new(compile(&cfg, 1).expect("compile"));
    eprintln!(
        "compiled 100k names, 32 lines, 96k prefixes in {:?}",
        t0.elapsed()
    );
    // The health writer fills the bitmaps (every address up until probed).
    let _writer = gtmd::health::Writer::new(snap.clone(), Default::default());
    let cases = picked(cases(&snap));
    let iters = if quick { 200_000 } else { 2_000_000 };
    let rounds = if quick { 3 } else { 7 };
    let mut q = Query::new();
    let mut local = Local::new(1);
    let client = Some(ClientAddr::V4(0x7F00_0001));
    let mut out = vec![0u8; 4096];
    let mut table = rrl_table();
    println!(
        "{:<22} {:>10}  (median of {rounds} rounds x {iters} queries)",
        "case", "ns/query"
    );
    for (name, pkt) in &cases {
        let mut per = Vec::new();
        let sources: u32 = match *name {
            "RRL on, 1k sources" => 1024,
            "RRL on, 100k sources" => 100_000,
            _ => 0,
        };
        let mut limited = 0u64;
        for _ in 0..rounds {
            let t = Instant::now();
            if sources == 0 {
                for _ in 0..iters {
                    let o = respond(
                        &snap,
                        black_box(pkt),
                        &mut q,
                        Transport::Udp,
                        client,
                        &mut local,
                        &mut out,
                    );
                    black_box(o.len);
                }
            } else {
                // What `ShardCtx::answer` does with RRL on: answer, then check.
                let mut src = 0u32;
                for _ in 0..iters {
                    src = if src + 1 == sources { 0 } else { src + 1 };
                    let c = Some(ClientAddr::V4(0x1000_0000 + (src << 8)));
                    let o = respond(
                        &snap,
                        black_box(pkt),
                        &mut q,
                        Transport::Udp,
                        c,
                        &mut local,
                        &mut out,
                    );
                    let v = table.check(&snap, &o, &q, c, 0);
                    limited += (v != rrl::Verdict::Pass) as u64;
                    black_box(o.len);
                }
            }
            per.push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
        assert_eq!(limited, 0, "{name}: RRL limited {limited} responses");
        per.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let o = respond(
            &snap,
            pkt,
            &mut q,
            Transport::Udp,
            client,
            &mut local,
            &mut out,
        );
        assert!(o.len > 0, "{name} answered");
        if *name == "GSLB fallback, all down" {
            assert_eq!(out[6..8], [0, 7], "the fallback answers 7 records");
        }
        println!("{name:<24} {:>10.1}", per[per.len() / 2]);
    }
    shard_path(&cfg, only_cases().as_deref(), iters, rounds);
}

/// The shard's whole answer path, as `ShardCtx::answer` runs it for a UDP query: snapshot
/// load, `respond`, the counters, per-domain counts (`[metrics] per-domain`, the
/// `shard+domains:` cases), the RRL test and the query log's tap (`[dnstap]`, the
/// `shard+dnstap:` cases, sampling 1 in 1, and `shard+dnstap/10:`, 1 in 10). Callgrind
/// counts `shard_loop` alone with `--toggle-collect=*shard_loop*` (PERF.md, "Metrics" and
/// "Query log"); the loop answers [`CHUNK`] queries a call, and the ring is emptied between
/// calls (as the writer thread does), outside what is counted.
fn shard_path(cfg: &Config, only: Option<&[String]>, iters: u32, rounds: u32) {
    use gtmd::shard::tap::{Ring, Tap, UDP_MESSAGE, UDP_SLOTS};
    use gtmd::shard::{Counters, ShardCtx};
    let ecs_line = [0u8, 8, 0, 7, 0, 1, 24, 0, 11, 0x2E, 0xE1];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("A exact", query("host4242.example.test", 1, None)),
        ("NXDOMAIN", query("nothere.example.test", 1, None)),
        (
            "GSLB nearest, ECS line",
            query("gslb.example.test", 1, Some(&ecs_line)),
        ),
    ];
    // A sockaddr_in as the kernel gives it: 127.0.0.1, port 53000.
    let mut sa = [0u8; 16];
    sa[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sa[2..4].copy_from_slice(&53000u16.to_be_bytes());
    sa[4..8].copy_from_slice(&[127, 0, 0, 1]);
    for (prefix, per_domain, sample) in [
        ("shard: ", false, None),
        ("shard+domains: ", true, None),
        ("shard+dnstap: ", false, Some(1)),
        ("shard+dnstap/10: ", false, Some(10)),
    ] {
        let wanted = |case: &str| {
            let name = format!("{prefix}{case}");
            only.is_none_or(|o| o.iter().any(|p| name.starts_with(p.as_str())))
        };
        if !cases.iter().any(|(case, _)| wanted(case)) {
            continue; // no snapshot to compile for this variant
        }
        let mut snap = compile(cfg, 1).expect("compile");
        if per_domain {
            // What control/metrics gives every access domain and line when they fit.
            let ads = snap.model.access_domains.len() as u32;
            let lines = snap.model.lines.len() as u32;
            snap.metric_series = gtmd::tables::MetricSeries {
                ads: (0..ads).collect(),
                lines: (0..lines).collect(),
            };
        }
        let snap = std::sync::Arc::new(snap);
        let _writer = gtmd::health::Writer::new(snap.clone(), Default::default());
        let published = std::sync::Arc::new(arc_swap::ArcSwap::new(snap));
        let counters = std::sync::Arc::new(Counters::new(0, Transport::Udp, 1000));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut ctx = ShardCtx::new(0, &published, counters, stop);
        let ring = std::sync::Arc::new(Ring::new(0, UDP_SLOTS, UDP_MESSAGE).expect("ring"));
        if let Some(n) = sample {
            let logged = gtmd::shard::tap::Logged {
                queries: true,
                responses: true,
                responses_with_queries: false,
            };
            ctx.set_tap(Tap::new(ring.clone(), n, logged));
        }
        let client = Some(ClientAddr::V4(0x7F00_0001));
        let mut out = vec![0u8; 4096];
        for (case, pkt) in &cases {
            let name = format!("{prefix}{case}");
            if !wanted(case) {
                continue;
            }
            let mut per: Vec<f64> = (0..rounds)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..iters / CHUNK {
                        black_box(shard_loop(&mut ctx, pkt, client, &sa, &mut out));
                        while let Some(slot) = ring.pop() {
                            ring.recycle(slot);
                        }
                    }
                    t.elapsed().as_nanos() as f64 / (iters / CHUNK * CHUNK) as f64
                })
                .collect();
            per.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert!(
                ctx.answer(pkt, client, &sa, &mut out) > 0,
                "{name} answered"
            );
            assert_eq!(
                ring.queue_full.load(std::sync::atomic::Ordering::Relaxed),
                0,
                "{name}: every sampled query found a slot"
            );
            println!("{name:<24} {:>10.1}", per[per.len() / 2]);
        }
    }
}

/// Queries [`shard_loop`] answers a call (fewer than a ring's slots).
const CHUNK: u32 = 500;

#[inline(never)]
fn shard_loop(
    ctx: &mut gtmd::shard::ShardCtx,
    pkt: &[u8],
    client: Option<ClientAddr>,
    sa: &[u8],
    out: &mut [u8],
) -> usize {
    let mut n = 0;
    for _ in 0..CHUNK {
        n += ctx.answer(black_box(pkt), client, sa, out);
    }
    n
}
