//! Differential test against Knot DNS (issue 9): one rich zone (tests/differential/) served
//! by gtmd and by knotd side by side, about 9,000 generated queries sent to both (every name
//! of the zones, names below them that do not exist, below wildcards, delegations and DNAMEs,
//! x 18 types x no EDNS / EDNS / EDNS+DO, in random 0x20 case, over UDP and a sample over
//! TCP; plus special queries: CH, opcodes, TSIG, zone transfers, malformed OPT and headers),
//! and every response compared section by section. A difference fails the test unless an
//! entry of `tests/differential/allow.txt` matches it (each entry says why the difference is
//! right); an entry that matches nothing fails it too. The grouped differences, with
//! examples, are written to `target/differential-report.txt`, and every difference, one per
//! line, to `target/differential-diffs.tsv`.
//!
//! What is compared, per query and transport: silence, ID, opcode, rcode (with the extended
//! bits), the flags QR AA TC RD RA Z AD CD, the question section byte for byte, the answer,
//! authority and additional sections as multisets of (owner case-insensitively, type, class,
//! TTL, rdata uncompressed with names lowercased), and the OPT record: present or not,
//! version, DO, the other flag bits and the option codes (not the payload size, which is
//! configuration).
//!
//! Both servers load the same zone files. gtmd's config (`gtmd.toml`) adds the access domains
//! gtm.z.test. A and gtm6.z.test. AAAA (addresses pinned up); Knot gets their answers as
//! plain records (`knot-gslb.zone`). Zone lines gtmd rejects are dropped for gtmd only, and a
//! nested zone it refuses is left out (its queries skipped); each rejection is a difference
//! (aspect `load`). knotd runs from its own temporary directory and is stopped on drop.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, wire, TempDir, Q};
use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential");

/// The DNS cookie secret both servers share (Knot's mod-cookies `secret`, gtmd's
/// `cookie-secret-file`), so that a server cookie the test makes is valid at both.
const COOKIE_SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

/// The zones both servers load: (origin, file). The child zone is nested in z.test.
const ZONES: [(&str, &str); 3] = [
    ("z.test.", "z.test.zone"),
    ("other.test.", "other.test.zone"),
    ("child.z.test.", "child.z.test.zone"),
];
const CHILD: &str = "child.z.test.";

// ---------------------------------------------------------------------------------------
// Names of types, classes, rcodes

fn type_name(t: u16) -> String {
    let s = match t {
        0 => "TYPE0",
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        44 => "SSHFP",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        51 => "NSEC3PARAM",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    s.to_string()
}

fn class_name(c: u16) -> String {
    match c {
        1 => "IN".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        254 => "NONE".into(),
        255 => "ANY".into(),
        _ => format!("CLASS{c}"),
    }
}

fn rcode_name(r: u16) -> String {
    let s = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        23 => "BADCOOKIE",
        _ => return format!("RCODE{r}"),
    };
    s.to_string()
}

const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const PTR: u16 = 12;
const HINFO: u16 = 13;
const MX: u16 = 15;
const TXT: u16 = 16;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const NAPTR: u16 = 35;
const DNAME: u16 = 39;
const DS: u16 = 43;
const SSHFP: u16 = 44;
const DNSKEY: u16 = 48;
const IXFR: u16 = 251;
const AXFR: u16 = 252;
const ANY: u16 = 255;
const CAA: u16 = 257;
const UNKNOWN: u16 = 65280;

/// Every existing name (and the ENTs) is asked these.
const TYPES: [u16; 18] = [
    A, AAAA, NS, SOA, CNAME, MX, TXT, SRV, PTR, CAA, DS, DNSKEY, NAPTR, HINFO, SSHFP, DNAME, ANY,
    UNKNOWN,
];
/// Names that do not exist (and the names a wildcard or DNAME answers) are asked these.
const NX_TYPES: [u16; 9] = [A, AAAA, TXT, MX, NS, DS, CNAME, SOA, ANY];

// ---------------------------------------------------------------------------------------
// A deterministic generator (xorshift64*)

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    /// Random 0x20 case (RFC 4343 / draft-vixie-dnsext-dns0x20).
    fn case(&mut self, name: &str) -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() && self.chance(50) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// The zone: owner names and their types, read from the zone files Knot serves

/// Owner names (lowercase, absolute) of a zone file, with the types at each.
fn zone_owners(origin: &str, text: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    let mut origin = origin.to_string();
    let mut last = origin.clone();
    let mut depth = 0i32;
    for line in text.lines() {
        let code = strip_comment(line);
        let opening = depth;
        depth += code.matches('(').count() as i32 - code.matches(')').count() as i32;
        if opening > 0 || code.trim().is_empty() {
            continue;
        }
        let mut tok = code.split_whitespace();
        if code.starts_with('$') {
            if let (Some("$ORIGIN"), Some(o)) = (tok.next(), tok.next()) {
                origin = o.to_ascii_lowercase();
            }
            continue;
        }
        let owner = if code.starts_with(char::is_whitespace) {
            last.clone()
        } else {
            let o = tok.next().unwrap().to_ascii_lowercase();
            if o == "@" {
                origin.clone()
            } else if o.ends_with('.') {
                o
            } else {
                format!("{o}.{origin}")
            }
        };
        last = owner.clone();
        // [ttl] [class] type, or [class] [ttl] type
        let rtype = tok
            .find(|t| {
                !t.starts_with(|c: char| c.is_ascii_digit()) && !matches!(*t, "IN" | "in" | "CH")
            })
            .unwrap_or("?")
            .to_ascii_uppercase();
        into.entry(owner).or_default().insert(rtype);
    }
}

fn strip_comment(line: &str) -> &str {
    let mut in_quote = false;
    let mut esc = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' => esc = true,
            '"' => in_quote = !in_quote,
            ';' if !in_quote => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parent(name: &str) -> Option<&str> {
    if name == "." {
        return None;
    }
    let p = name.split_once('.').unwrap().1;
    Some(if p.is_empty() { "." } else { p })
}

fn is_below_or_at(name: &str, apex: &str) -> bool {
    name == apex || apex == "." || name.ends_with(&format!(".{apex}"))
}

/// The zone structure as Knot sees it (all three zones), to tag the generated names.
struct Model {
    /// owner -> types, every zone.
    owners: BTreeMap<String, BTreeSet<String>>,
    /// Names that exist only as ancestors of owners (empty non-terminals).
    ents: BTreeSet<String>,
}

impl Model {
    fn load() -> Self {
        let mut owners = BTreeMap::new();
        for (origin, file) in ZONES {
            let text = std::fs::read_to_string(Path::new(DATA).join(file)).unwrap();
            zone_owners(origin, &text, &mut owners);
        }
        let text = std::fs::read_to_string(Path::new(DATA).join("knot-gslb.zone")).unwrap();
        zone_owners("z.test.", &text, &mut owners);
        let mut ents = BTreeSet::new();
        for o in owners.keys() {
            let zone = Self::zone_of(o).unwrap();
            let mut p = parent(o);
            while let Some(n) = p {
                if !is_below_or_at(n, zone) {
                    break;
                }
                if !owners.contains_key(n) {
                    ents.insert(n.to_string());
                }
                p = parent(n);
            }
        }
        Self { owners, ents }
    }

    /// The deepest zone that holds `name`.
    fn zone_of(name: &str) -> Option<&'static str> {
        ZONES
            .iter()
            .map(|z| z.0)
            .filter(|z| is_below_or_at(name, z))
            .max_by_key(|z| z.len())
    }

    fn exists(&self, n: &str) -> bool {
        self.owners.contains_key(n) || self.ents.contains(n)
    }

    fn has(&self, n: &str, t: &str) -> bool {
        self.owners.get(n).is_some_and(|s| s.contains(t))
    }

    /// A coarse category of a query name, to group differences.
    fn tag(&self, name: &str) -> String {
        let Some(zone) = Self::zone_of(name) else {
            return "outside".into();
        };
        let prefix = if zone == CHILD { "child:" } else { "" };
        // Walk from the apex down to the name: delegations and DNAMEs above it.
        let mut chain = Vec::new();
        let mut p = Some(name);
        while let Some(n) = p {
            chain.push(n);
            if n == zone {
                break;
            }
            p = parent(n);
        }
        chain.reverse();
        for (i, n) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            if *n != zone && self.has(n, "NS") {
                return format!(
                    "{prefix}{}",
                    if last {
                        "delegation"
                    } else {
                        "below-delegation"
                    }
                );
            }
            if self.has(n, "DNAME") && !last {
                return format!("{prefix}below-dname");
            }
        }
        let t = if name == zone {
            "apex"
        } else if self.has(name, "DNAME") {
            "dname"
        } else if self.has(name, "CNAME") {
            if name.starts_with("*.") {
                "wildcard-cname-literal"
            } else {
                "cname"
            }
        } else if name.starts_with("*.") && self.owners.contains_key(name) {
            "wildcard-literal"
        } else if self.owners.contains_key(name) {
            "owner"
        } else if self.ents.contains(name) {
            "ent"
        } else {
            // The closest encloser and its wildcard.
            let mut ce = parent(name).unwrap();
            while !self.exists(ce) {
                ce = parent(ce).unwrap();
            }
            let wild = format!("*.{ce}");
            if self.has(&wild, "CNAME") {
                "wildcard-cname"
            } else if self.owners.contains_key(&wild) {
                "wildcard"
            } else if self.ents.contains(&wild) {
                "wildcard-ent"
            } else {
                "nxdomain"
            }
        };
        format!("{prefix}{t}")
    }
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

struct Query {
    wire: Vec<u8>,
    /// The name as sent (0x20 case), absolute.
    name: String,
    qtype: u16,
    qclass: u16,
    /// "none", "edns", "do", or "special".
    edns: &'static str,
    /// Category: the name's tag, or "special:<what>".
    tag: String,
    transports: Vec<Transport>,
}

impl Query {
    fn describe(&self) -> String {
        let mut s = format!(
            "{} {} {}",
            self.name,
            class_name(self.qclass),
            type_name(self.qtype)
        );
        if self.edns != "special" {
            let _ = write!(s, " edns={}", self.edns);
        }
        let _ = write!(s, " [{}]", self.tag);
        s
    }
}

/// The regular query set: names of the model x types x EDNS variants.
fn regular_queries(model: &Model, rng: &mut Rng, out: &mut Vec<Query>) {
    let mut names: Vec<(String, bool)> = Vec::new(); // (name, full type set)
    let mut seen = HashSet::new();
    let mut add = |n: String, full: bool, names: &mut Vec<(String, bool)>| {
        if seen.insert(n.clone()) {
            names.push((n, full));
        }
    };
    for o in model.owners.keys().chain(model.ents.iter()) {
        add(o.clone(), true, &mut names);
    }
    for o in model.owners.keys().chain(model.ents.iter()) {
        if let Some(w) = o.strip_prefix("*.") {
            // names the wildcard answers, one and two labels deep
            add(format!("synth.{w}"), true, &mut names);
            add(format!("a.b.{w}"), false, &mut names);
        }
        if model.has(o, "DNAME") {
            for l in ["a", "b", "x", "deep.a", "ns1"] {
                add(format!("{l}.{o}"), l.len() == 1, &mut names);
            }
        }
        // a name that does not exist below each existing one
        add(format!("nx.{o}"), false, &mut names);
    }
    for n in [
        "outside.example.",
        "test.",
        "zz.test.",
        "z.test.example.",
        "deep.nx.z.test.",
    ] {
        add(n.to_string(), false, &mut names);
    }
    for (name, full) in names {
        let tag = model.tag(&name);
        let types: &[u16] = if full { &TYPES } else { &NX_TYPES };
        let mut types = types.to_vec();
        // Zone transfers over UDP at the apexes and one plain name.
        if tag.ends_with("apex") || name == "host.z.test." {
            types.extend([AXFR, IXFR]);
        }
        for qtype in types {
            for edns in ["none", "edns", "do"] {
                let sent = rng.case(&name);
                let mut q = Q::new(&sent, qtype);
                q.id = (out.len() as u16).wrapping_add(1);
                // RD and CD at random (both must be copied), RD mostly set as resolvers do
                q.flags = if rng.chance(80) { 0x0100 } else { 0 }
                    | if rng.chance(20) { 0x0010 } else { 0 };
                if edns != "none" {
                    q = q.edns(1232);
                    if edns == "do" {
                        q.edns.as_mut().unwrap().2 = true;
                    }
                }
                let mut transports = vec![Transport::Udp];
                // a sample over TCP, and every ANY (RFC 8482 differs by transport)
                if rng.chance(8) || (qtype == ANY && full && edns == "edns") {
                    transports.push(Transport::Tcp);
                }
                out.push(Query {
                    wire: q.build(),
                    name: sent,
                    qtype,
                    qclass: 1,
                    edns,
                    tag: tag.clone(),
                    transports,
                });
            }
        }
    }
}

/// A TSIG record (RFC 8945) for a key no server knows, hmac-sha256, MAC of 32 zero octets.
fn tsig_rr(orig_id: u16) -> Vec<u8> {
    let mut r = wire("unknown-key.");
    r.extend_from_slice(&250u16.to_be_bytes());
    r.extend_from_slice(&255u16.to_be_bytes()); // class ANY
    r.extend_from_slice(&0u32.to_be_bytes());
    let mut rd = wire("hmac-sha256.");
    rd.extend_from_slice(&[0, 0, 0x65, 0x43, 0x21, 0x00]); // time signed (48 bits)
    rd.extend_from_slice(&300u16.to_be_bytes()); // fudge
    rd.extend_from_slice(&32u16.to_be_bytes());
    rd.extend_from_slice(&[0u8; 32]);
    rd.extend_from_slice(&orig_id.to_be_bytes());
    rd.extend_from_slice(&0u16.to_be_bytes()); // error
    rd.extend_from_slice(&0u16.to_be_bytes()); // other len
    r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    r.extend_from_slice(&rd);
    r
}

fn soa_rr(zone: &str, serial: u32) -> Vec<u8> {
    let mut r = wire(zone);
    r.extend_from_slice(&SOA.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&3600u32.to_be_bytes());
    let mut rd = wire(&format!("ns1.{zone}"));
    rd.extend(wire(&format!("hostmaster.{zone}")));
    for v in [serial, 7200, 900, 1_209_600, 300] {
        rd.extend_from_slice(&v.to_be_bytes());
    }
    r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    r.extend_from_slice(&rd);
    r
}

/// An OPT record with raw fields.
fn opt_rr(owner: &[u8], payload: u16, ttl: u32, rdata: &[u8], rdlen: Option<u16>) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&41u16.to_be_bytes());
    r.extend_from_slice(&payload.to_be_bytes());
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&rdlen.unwrap_or(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// The special queries: classes, opcodes, TSIG, transfers, malformed OPT and headers, ...
fn special_queries(out: &mut Vec<Query>) {
    let both = vec![Transport::Udp, Transport::Tcp];
    let mut push = |what: &str, name: &str, qtype: u16, qclass: u16, wire: Vec<u8>| {
        let mut wire = wire;
        let id = (out.len() as u16).wrapping_add(1);
        if wire.len() >= 2 {
            wire[..2].copy_from_slice(&id.to_be_bytes());
        }
        out.push(Query {
            wire,
            name: name.to_string(),
            qtype,
            qclass,
            edns: "special",
            tag: format!("special:{what}"),
            transports: both.clone(),
        });
    };
    let q = |name: &str, t: u16| Q::new(name, t);
    let with_class = |name: &str, t: u16, c: u16| {
        let mut x = Q::new(name, t);
        x.qclass = c;
        x
    };
    // classes
    for (n, t) in [
        ("version.bind.", TXT),
        ("VERSION.BIND.", TXT),
        ("id.server.", TXT),
        ("hostname.bind.", TXT),
        ("version.server.", TXT),
        ("authors.bind.", TXT),
        ("version.bind.", A),
        ("version.bind.", ANY),
    ] {
        push(&format!("chaos {n}"), n, t, 3, with_class(n, t, 3).build());
    }
    push(
        "chaos version.bind edns",
        "version.bind.",
        TXT,
        3,
        with_class("version.bind.", TXT, 3).edns(1232).build(),
    );
    for c in [3u16, 4, 254, 255, 0, 1234] {
        push(
            &format!("class {}", class_name(c)),
            "z.test.",
            SOA,
            c,
            with_class("z.test.", SOA, c).build(),
        );
    }
    // names outside every zone
    for n in ["example.com.", ".", "test.", "arpa.", "zz.z.test.example."] {
        push(&format!("outside {n}"), n, A, 1, q(n, A).edns(1232).build());
    }
    // opcodes other than QUERY
    for (op, name) in [
        (1u16, "IQUERY"),
        (2, "STATUS"),
        (3, "opcode3"),
        (4, "NOTIFY"),
        (5, "UPDATE"),
        (6, "DSO"),
        (15, "opcode15"),
    ] {
        let t = if op == 4 || op == 5 { SOA } else { A };
        let mut x = q(if t == SOA { "z.test." } else { "host.z.test." }, t);
        x.flags = (op << 11) | if op == 4 { 0x0400 } else { 0 };
        push(&format!("opcode {name}"), "z.test.", t, 1, x.build());
        let mut x = x.edns(1232);
        x.id = 0;
        push(&format!("opcode {name} edns"), "z.test.", t, 1, x.build());
    }
    // TSIG with a key nobody has
    let mut x = q("z.test.", SOA);
    x.extra_ar.push(tsig_rr(1));
    push("tsig unknown key", "z.test.", SOA, 1, x.build());
    let mut x = q("z.test.", SOA).edns(1232);
    x.extra_ar.push(tsig_rr(1));
    push("tsig unknown key + edns", "z.test.", SOA, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.extra_ar.push(tsig_rr(1));
    x.extra_ar.push(opt_rr(&[0], 1232, 0, &[], None));
    push("tsig not last", "host.z.test.", A, 1, x.build());
    let mut x = q("z.test.", AXFR);
    x.extra_ar.push(tsig_rr(1));
    push("tsig axfr", "z.test.", AXFR, 1, x.build());
    // zone transfers
    push("axfr", "z.test.", AXFR, 1, q("z.test.", AXFR).build());
    push(
        "axfr other",
        "other.test.",
        AXFR,
        1,
        q("other.test.", AXFR).build(),
    );
    push(
        "axfr not apex",
        "host.z.test.",
        AXFR,
        1,
        q("host.z.test.", AXFR).build(),
    );
    push("ixfr plain", "z.test.", IXFR, 1, q("z.test.", IXFR).build());
    for serial in [2024010100u32, 2024010101] {
        let mut x = q("z.test.", IXFR);
        x.counts_override = Some([1, 0, 1, 0]);
        x.extra_ar.push(soa_rr("z.test.", serial));
        push(&format!("ixfr soa {serial}"), "z.test.", IXFR, 1, x.build());
    }
    // EDNS: versions, payloads, flags, options, malformed OPT records
    push(
        "edns version 1",
        "host.z.test.",
        A,
        1,
        Q {
            edns: Some((1232, 1, false, Vec::new())),
            ..q("host.z.test.", A)
        }
        .build(),
    );
    push(
        "edns version 1 do",
        "host.z.test.",
        A,
        1,
        Q {
            edns: Some((1232, 1, true, Vec::new())),
            ..q("host.z.test.", A)
        }
        .build(),
    );
    push(
        "edns version 1 nxdomain",
        "nx.z.test.",
        A,
        1,
        Q {
            edns: Some((1232, 1, false, Vec::new())),
            ..q("nx.z.test.", A)
        }
        .build(),
    );
    for (what, payload, name, t) in [
        ("payload 0", 0u16, "big.z.test.", TXT),
        ("payload 511", 511, "big.z.test.", TXT),
        ("payload 512", 512, "big.z.test.", TXT),
        ("payload 1232 big", 1232, "big.z.test.", TXT),
        ("payload 1232 huge", 1232, "huge.z.test.", TXT),
        ("payload 4096 huge", 4096, "huge.z.test.", TXT),
        ("payload 65535 huge", 65535, "huge.z.test.", TXT),
        ("payload 512 any apex", 512, "z.test.", ANY),
        ("payload 512 mx additional", 512, "mx.z.test.", MX),
    ] {
        push(what, name, t, 1, q(name, t).edns(payload).build());
    }
    push(
        "no edns big",
        "big.z.test.",
        TXT,
        1,
        q("big.z.test.", TXT).build(),
    );
    push(
        "no edns huge",
        "huge.z.test.",
        TXT,
        1,
        q("huge.z.test.", TXT).build(),
    );
    let mut x = q("host.z.test.", A);
    x.extra_ar.push(opt_rr(&[0], 1232, 0x0000_4000, &[], None));
    push("edns unknown flag", "host.z.test.", A, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.extra_ar.push(opt_rr(&[0], 1232, 0x0100_0000, &[], None));
    push(
        "edns extended rcode in query",
        "host.z.test.",
        A,
        1,
        x.build(),
    );
    push(
        "edns unknown option",
        "host.z.test.",
        A,
        1,
        q("host.z.test.", A).edns(1232).opt(65001, b"xyz").build(),
    );
    push(
        "edns nsid",
        "host.z.test.",
        A,
        1,
        q("host.z.test.", A).edns(1232).opt(3, b"").build(),
    );
    push(
        "edns cookie",
        "host.z.test.",
        A,
        1,
        q("host.z.test.", A)
            .edns(1232)
            .opt(10, &[1, 2, 3, 4, 5, 6, 7, 8])
            .build(),
    );
    // RFC 7873 and RFC 9018, both servers insisting on a valid server cookie over UDP
    // (gtmd `require-cookie`, Knot's mod-cookies): a fresh one made with the shared secret
    // for 127.0.0.1, one that is not theirs, one from another secret version, and lengths
    // that are FORMERR.
    let secret = gtmd::wire::cookie::parse_secret(COOKIE_SECRET).unwrap();
    let client = [9u8, 8, 7, 6, 5, 4, 3, 2];
    let local = Some(gtmd::tables::gslb::ClientAddr::V4(0x7F00_0001));
    let good = gtmd::wire::cookie::make(&secret, &client, local, gtmd::wire::cookie::now());
    let mut bad = good;
    bad[15] ^= 1;
    for (tag, server) in [
        ("edns cookie valid", &good[..]),
        ("edns cookie wrong hash", &bad[..]),
        ("edns cookie short server cookie", &good[..8]),
    ] {
        let mut data = client.to_vec();
        data.extend_from_slice(server);
        push(
            tag,
            "host.z.test.",
            A,
            1,
            q("host.z.test.", A).edns(1232).opt(10, &data).build(),
        );
    }
    for len in [7usize, 9, 15, 41] {
        push(
            &format!("edns cookie length {len}"),
            "host.z.test.",
            A,
            1,
            q("host.z.test.", A)
                .edns(1232)
                .opt(10, &vec![1; len])
                .build(),
        );
    }
    push(
        "edns nsid and cookie",
        "nope.z.test.",
        A,
        1,
        q("nope.z.test.", A)
            .edns(1232)
            .opt(3, b"")
            .opt(10, &[1, 2, 3, 4, 5, 6, 7, 8])
            .build(),
    );
    push(
        "edns padding",
        "host.z.test.",
        A,
        1,
        q("host.z.test.", A).edns(1232).opt(12, &[0; 16]).build(),
    );
    push(
        "edns ecs",
        "host.z.test.",
        A,
        1,
        q("host.z.test.", A)
            .edns(1232)
            .ecs(1, 24, 0, &[192, 0, 2])
            .build(),
    );
    push(
        "edns ecs gslb",
        "gtm.z.test.",
        A,
        1,
        q("gtm.z.test.", A)
            .edns(1232)
            .ecs(1, 24, 0, &[192, 0, 2])
            .build(),
    );
    push(
        "edns ecs scope nonzero",
        "host.z.test.",
        A,
        1,
        q("host.z.test.", A)
            .edns(1232)
            .ecs(1, 24, 8, &[192, 0, 2])
            .build(),
    );
    let mut x = q("host.z.test.", A);
    x.extra_ar.push(opt_rr(&wire("x."), 1232, 0, &[], None));
    push("opt owner not root", "host.z.test.", A, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.extra_ar
        .push(opt_rr(&[0], 1232, 0, &[0, 3, 0, 9, 1], None));
    push("opt option overruns rdata", "host.z.test.", A, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.extra_ar.push(opt_rr(&[0], 1232, 0, &[], Some(4)));
    push(
        "opt rdlen overruns message",
        "host.z.test.",
        A,
        1,
        x.build(),
    );
    let mut x = q("host.z.test.", A).edns(1232);
    x.extra_ar.push(opt_rr(&[0], 1232, 0, &[], None));
    push("two opt", "host.z.test.", A, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.counts_override = Some([1, 1, 0, 0]);
    x.extra_ar.push(opt_rr(&[0], 1232, 0, &[], None));
    push("opt in answer section", "host.z.test.", A, 1, x.build());
    // header oddities
    let mut x = q("host.z.test.", A);
    x.counts_override = Some([0, 0, 0, 0]);
    let mut raw = x.build();
    raw.truncate(12);
    push("qdcount 0", "", A, 1, raw);
    let mut x = q("host.z.test.", A);
    x.counts_override = Some([2, 0, 0, 0]);
    let mut raw = x.build();
    raw.extend(wire("mail.z.test."));
    raw.extend_from_slice(&[0, 1, 0, 1]);
    push("qdcount 2", "host.z.test.", A, 1, raw);
    let mut x = q("host.z.test.", A);
    x.counts_override = Some([1, 1, 0, 0]);
    x.extra_ar
        .push(vec![0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    push("ancount 1", "host.z.test.", A, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.counts_override = Some([1, 0, 1, 0]);
    x.extra_ar
        .push(vec![0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    push("nscount 1 (A)", "host.z.test.", A, 1, x.build());
    let mut x = q("host.z.test.", A);
    x.counts_override = Some([1, 0, 0, 1]);
    x.extra_ar
        .push(vec![0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
    push("arcount 1 (A)", "host.z.test.", A, 1, x.build());
    let mut raw = q("host.z.test.", A).build();
    raw.extend_from_slice(&[1, 2, 3]);
    push("trailing garbage", "host.z.test.", A, 1, raw);
    let mut raw = q("host.z.test.", A).build();
    raw.truncate(raw.len() - 2);
    push("question cut short", "host.z.test.", A, 1, raw);
    for (what, flags) in [
        ("qr set", 0x8100u16),
        ("tc set", 0x0300),
        ("z bit set", 0x0140),
        ("ad set", 0x0120),
        ("aa set", 0x0500),
        ("ra set", 0x0180),
        ("all flags", 0x07F0),
    ] {
        let mut x = q("host.z.test.", A);
        x.flags = flags;
        push(what, "host.z.test.", A, 1, x.build());
    }
    push("short 5 octets", "", 0, 0, vec![0, 0, 1, 0, 0]);
    // question names: a compression loop, a 64-octet label, a 256-octet name, a pointer
    let mut raw = q("host.z.test.", A).build();
    raw.truncate(12);
    raw.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    push("qname pointer loop", "", A, 1, raw);
    let mut raw = q("host.z.test.", A).build();
    raw.truncate(12);
    raw.push(64);
    raw.extend_from_slice(&[b'a'; 64]);
    raw.extend(wire("z.test."));
    raw.extend_from_slice(&[0, 1, 0, 1]);
    push("qname label 64", "", A, 1, raw);
    let long = format!("{}z.test.", "abcdefghi.".repeat(25));
    push("qname 257 octets", "", A, 1, {
        let mut raw = q("host.z.test.", A).build();
        raw.truncate(12);
        raw.extend(wire(&long));
        raw.extend_from_slice(&[0, 1, 0, 1]);
        raw
    });
    let max = format!("{}z.test.", "abcdefghi.".repeat(24));
    push("qname 247 octets", &max, A, 1, q(&max, A).build());
    push("qname with escaped dot", "a\\.b.z.test.", A, 1, {
        let mut raw = q("host.z.test.", A).build();
        raw.truncate(12);
        raw.extend_from_slice(&[3, b'a', b'.', b'b']);
        raw.extend(wire("z.test."));
        raw.extend_from_slice(&[0, 1, 0, 1]);
        raw
    });
    // meta and DNSSEC types
    for t in [0u16, 41, 46, 47, 50, 51, 249, 250, 253, 254, 65535, 128] {
        push(
            &format!("qtype {}", type_name(t)),
            "host.z.test.",
            t,
            1,
            q("host.z.test.", t).edns(1232).build(),
        );
    }
    push("qtype RRSIG apex do", "z.test.", 46, 1, {
        let mut x = q("z.test.", 46).edns(1232);
        x.edns.as_mut().unwrap().2 = true;
        x.build()
    });
    push(
        "ds child apex",
        CHILD,
        DS,
        1,
        q(CHILD, DS).edns(1232).build(),
    );
    push(
        "ds zone apex",
        "z.test.",
        DS,
        1,
        q("z.test.", DS).edns(1232).build(),
    );
}

// ---------------------------------------------------------------------------------------
// Responses

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    /// Lowercase absolute owner (compared), then the rest.
    owner: String,
    rtype: u16,
    class: u16,
    ttl: u32,
    /// Uncompressed rdata, names lowercased (canonical form, RFC 4034 6.2).
    rdata: Vec<u8>,
    text: String,
}

impl Rec {
    fn show(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.owner,
            self.ttl,
            class_name(self.class),
            type_name(self.rtype),
            self.text
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Opt {
    version: u8,
    dnssec_ok: bool,
    /// Flag bits other than DO.
    z: u16,
    payload: u16,
    /// Option codes, padding (12) left out.
    options: Vec<u16>,
}

#[derive(Clone, Debug)]
struct Resp {
    id: u16,
    flags: u16,
    rcode: u16,
    question: Vec<u8>,
    counts: [u16; 4],
    sections: [Vec<Rec>; 3],
    opt: Option<Opt>,
    /// Set when the message could not be parsed completely.
    error: Option<String>,
}

fn absolute(n: String) -> String {
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

fn parse_response(raw: &[u8]) -> Resp {
    let be = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
    let mut r = Resp {
        id: 0,
        flags: 0,
        rcode: 0,
        question: Vec::new(),
        counts: [0; 4],
        sections: [Vec::new(), Vec::new(), Vec::new()],
        opt: None,
        error: None,
    };
    if raw.len() < 12 {
        r.error = Some(format!("{} octets: shorter than a header", raw.len()));
        return r;
    }
    r.id = be(0);
    r.flags = be(2);
    r.counts = [be(4), be(6), be(8), be(10)];
    // the question section, raw
    let mut pos = 12;
    for _ in 0..r.counts[0] {
        loop {
            match raw.get(pos) {
                Some(0) => {
                    pos += 1;
                    break;
                }
                Some(l) if *l >= 0xC0 => {
                    pos += 2;
                    break;
                }
                Some(l) => pos += 1 + *l as usize,
                None => break,
            }
        }
        pos += 4;
    }
    r.question = raw[12..pos.min(raw.len())].to_vec();
    let mut ext = 0u16;
    let res: Result<(), String> = (|| {
        let msg = Message::from_octets(raw.to_vec()).map_err(|e| e.to_string())?;
        let (_, an, ns, ar) = msg.sections().map_err(|e| e.to_string())?;
        for (i, sec) in [an, ns, ar].into_iter().enumerate() {
            for rr in sec {
                let rr = rr.map_err(|e| e.to_string())?;
                let rec = rr
                    .to_any_record::<AllRecordData<&[u8], ParsedName<&[u8]>>>()
                    .map_err(|e| format!("{} record: {e}", type_name(rr.rtype().to_int())))?;
                // Names in rdata lowercased (RFC 4034 6.2): with 0x20 queries their case
                // depends on where each server chose to compress against the question.
                let mut rdata = Vec::new();
                domain::base::rdata::ComposeRecordData::compose_canonical_rdata(
                    rec.data(),
                    &mut rdata,
                )
                .map_err(|e| e.to_string())?;
                let rtype = rr.rtype().to_int();
                let ttl = rr.ttl().as_secs();
                if rtype == 41 {
                    let mut options = Vec::new();
                    let mut p = 0;
                    while p + 4 <= rdata.len() {
                        let code = u16::from_be_bytes([rdata[p], rdata[p + 1]]);
                        let len = u16::from_be_bytes([rdata[p + 2], rdata[p + 3]]) as usize;
                        if code != 12 {
                            options.push(code);
                        }
                        p += 4 + len;
                    }
                    options.sort_unstable();
                    ext = (ttl >> 24) as u16;
                    r.opt = Some(Opt {
                        version: (ttl >> 16) as u8,
                        dnssec_ok: ttl & 0x8000 != 0,
                        z: (ttl & 0x7FFF) as u16,
                        payload: rr.class().to_int(),
                        options,
                    });
                    continue;
                }
                r.sections[i].push(Rec {
                    owner: absolute(rr.owner().to_string()).to_ascii_lowercase(),
                    rtype,
                    class: rr.class().to_int(),
                    ttl,
                    rdata,
                    text: rec.data().to_string(),
                });
            }
        }
        Ok(())
    })();
    if let Err(e) = res {
        r.error = Some(e);
    }
    r.rcode = (ext << 4) | (r.flags & 0xF);
    for s in &mut r.sections {
        s.sort();
    }
    r
}

fn flag_names(flags: u16) -> String {
    let mut v = Vec::new();
    for (bit, n) in [
        (0x8000u16, "qr"),
        (0x0400, "aa"),
        (0x0200, "tc"),
        (0x0100, "rd"),
        (0x0080, "ra"),
        (0x0040, "z"),
        (0x0020, "ad"),
        (0x0010, "cd"),
    ] {
        if flags & bit != 0 {
            v.push(n);
        }
    }
    v.join(" ")
}

/// A response in a dig-like form, several lines, indented.
fn show(resp: &Option<Resp>) -> String {
    let Some(r) = resp else {
        return "    (no response)\n".into();
    };
    let mut s = format!(
        "    {} opcode={} flags=[{}] counts={:?}",
        rcode_name(r.rcode),
        (r.flags >> 11) & 0xF,
        flag_names(r.flags),
        r.counts
    );
    match &r.opt {
        Some(o) => {
            let _ = write!(
                s,
                " OPT(v{} do={} z={:#x} payload={} options={:?})",
                o.version, o.dnssec_ok as u8, o.z, o.payload, o.options
            );
        }
        None => s.push_str(" no OPT"),
    }
    s.push('\n');
    if let Some(e) = &r.error {
        let _ = writeln!(s, "    PARSE ERROR: {e}");
    }
    for (i, name) in ["ANSWER", "AUTHORITY", "ADDITIONAL"].iter().enumerate() {
        for rec in &r.sections[i] {
            let _ = writeln!(s, "    {name:<10} {}", rec.show());
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// Comparison

#[derive(Clone, Debug)]
struct Diff {
    query: usize,
    transport: Transport,
    /// silence, parse, id, opcode, rcode, flag.XX, question, answer, authority,
    /// additional, opt, opt.version, opt.do, opt.flags, opt.options
    aspect: String,
    /// The shape of the difference, e.g. "knot=NOTAUTH gtmd=NOERROR".
    detail: String,
}

fn types_of(v: &[&Rec]) -> String {
    let set: BTreeSet<String> = v.iter().map(|r| type_name(r.rtype)).collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

/// Differences of one section: records only in one response, and TTL-only differences.
fn section_diff(knot: &[Rec], gtmd: &[Rec]) -> Option<String> {
    let key = |r: &Rec| (r.owner.clone(), r.rtype, r.class, r.ttl, r.rdata.clone());
    let mut k_only: Vec<&Rec> = Vec::new();
    let mut g_left: Vec<&Rec> = gtmd.iter().collect();
    for r in knot {
        if let Some(i) = g_left.iter().position(|g| key(g) == key(r)) {
            g_left.remove(i);
        } else {
            k_only.push(r);
        }
    }
    if k_only.is_empty() && g_left.is_empty() {
        return None;
    }
    // TTL-only: same owner, type, class and rdata
    let mut ttl = Vec::new();
    k_only.retain(|r| {
        if let Some(i) = g_left.iter().position(|g| {
            g.owner == r.owner && g.rtype == r.rtype && g.class == r.class && g.rdata == r.rdata
        }) {
            ttl.push(g_left.remove(i));
            false
        } else {
            true
        }
    });
    let mut parts = Vec::new();
    if !k_only.is_empty() {
        parts.push(format!("knot-only {}", types_of(&k_only)));
    }
    if !g_left.is_empty() {
        parts.push(format!("gtmd-only {}", types_of(&g_left)));
    }
    if !ttl.is_empty() {
        parts.push(format!("ttl {}", types_of(&ttl)));
    }
    Some(parts.join("; "))
}

fn compare(q: usize, t: Transport, knot: &Option<Resp>, gtmd: &Option<Resp>, out: &mut Vec<Diff>) {
    let mut d = |aspect: &str, detail: String| {
        out.push(Diff {
            query: q,
            transport: t,
            aspect: aspect.to_string(),
            detail,
        })
    };
    let (k, g) = match (knot, gtmd) {
        (None, None) => return,
        (Some(_), None) => return d("silence", "knot answered, gtmd silent".into()),
        (None, Some(g)) => {
            return d(
                "silence",
                format!("knot silent, gtmd answered {}", rcode_name(g.rcode)),
            )
        }
        (Some(k), Some(g)) => (k, g),
    };
    if k.error.is_some() || g.error.is_some() {
        let e = |r: &Resp| {
            if r.error.is_some() {
                "unparseable"
            } else {
                "ok"
            }
        };
        if k.error.is_some() != g.error.is_some() {
            d("parse", format!("knot {} gtmd {}", e(k), e(g)));
        }
    }
    if k.id != g.id {
        d("id", format!("knot={:#x} gtmd={:#x}", k.id, g.id));
    }
    let op = |r: &Resp| (r.flags >> 11) & 0xF;
    if op(k) != op(g) {
        d("opcode", format!("knot={} gtmd={}", op(k), op(g)));
    }
    if k.rcode != g.rcode {
        d(
            "rcode",
            format!("knot={} gtmd={}", rcode_name(k.rcode), rcode_name(g.rcode)),
        );
    }
    for (bit, n) in [
        (0x8000u16, "QR"),
        (0x0400, "AA"),
        (0x0200, "TC"),
        (0x0100, "RD"),
        (0x0080, "RA"),
        (0x0040, "Z"),
        (0x0020, "AD"),
        (0x0010, "CD"),
    ] {
        let (kb, gb) = (k.flags & bit != 0, g.flags & bit != 0);
        if kb != gb {
            d(
                &format!("flag.{n}"),
                format!("knot={} gtmd={}", kb as u8, gb as u8),
            );
        }
    }
    if k.question != g.question {
        d(
            "question",
            format!(
                "knot qdcount={} ({} octets) gtmd qdcount={} ({} octets){}",
                k.counts[0],
                k.question.len(),
                g.counts[0],
                g.question.len(),
                if k.question.eq_ignore_ascii_case(&g.question) {
                    ", case differs"
                } else {
                    ""
                }
            ),
        );
    }
    for (i, name) in ["answer", "authority", "additional"].iter().enumerate() {
        if let Some(detail) = section_diff(&k.sections[i], &g.sections[i]) {
            d(name, detail);
        }
    }
    match (&k.opt, &g.opt) {
        (Some(_), None) => d("opt", "knot has OPT, gtmd none".into()),
        (None, Some(_)) => d("opt", "knot none, gtmd has OPT".into()),
        (Some(ko), Some(go)) => {
            if ko.version != go.version {
                d(
                    "opt.version",
                    format!("knot={} gtmd={}", ko.version, go.version),
                );
            }
            if ko.dnssec_ok != go.dnssec_ok {
                d(
                    "opt.do",
                    format!("knot={} gtmd={}", ko.dnssec_ok as u8, go.dnssec_ok as u8),
                );
            }
            if ko.z != go.z {
                d("opt.flags", format!("knot={:#x} gtmd={:#x}", ko.z, go.z));
            }
            if ko.options != go.options {
                d(
                    "opt.options",
                    format!("knot={:?} gtmd={:?}", ko.options, go.options),
                );
            }
        }
        (None, None) => {}
    }
}

// ---------------------------------------------------------------------------------------
// The allow-list

/// One entry: `key=glob ...` conditions (all must hold) `|` why.
struct Allow {
    line: usize,
    conds: Vec<(String, String)>,
    why: String,
    hits: usize,
}

const ALLOW_KEYS: [&str; 8] = [
    "aspect",
    "detail",
    "tag",
    "qtype",
    "qclass",
    "name",
    "transport",
    "edns",
];

fn load_allow() -> Vec<Allow> {
    let path = Path::new(DATA).join("allow.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (conds, why) = l
            .split_once('|')
            .unwrap_or_else(|| panic!("allow.txt:{}: no `| why`", i + 1));
        let why = why.trim().to_string();
        assert!(!why.is_empty(), "allow.txt:{}: empty reason", i + 1);
        let mut cv = Vec::new();
        for c in split_conds(conds) {
            let (k, val) = c
                .split_once('=')
                .unwrap_or_else(|| panic!("allow.txt:{}: {c:?} is not key=glob", i + 1));
            assert!(
                ALLOW_KEYS.contains(&k),
                "allow.txt:{}: unknown key {k:?} (keys: {ALLOW_KEYS:?})",
                i + 1
            );
            cv.push((k.to_string(), val.trim_matches('"').to_string()));
        }
        assert!(!cv.is_empty(), "allow.txt:{}: no condition", i + 1);
        v.push(Allow {
            line: i + 1,
            conds: cv,
            why,
            hits: 0,
        });
    }
    v
}

/// Splits on whitespace outside double quotes.
fn split_conds(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut cur = String::new();
    let mut q = false;
    for c in s.chars() {
        match c {
            '"' => {
                q = !q;
                cur.push(c);
            }
            c if c.is_whitespace() && !q => {
                if !cur.is_empty() {
                    v.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        v.push(cur);
    }
    v
}

/// Case-insensitive glob: `*` any run, `?` one character; `a,b` alternatives.
fn glob(pat: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len()).any(|i| m(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && m(&p[1..], &s[1..]),
            Some(c) => !s.is_empty() && c.eq_ignore_ascii_case(&s[0]) && m(&p[1..], &s[1..]),
        }
    }
    pat.split(',').any(|alt| m(alt.as_bytes(), s.as_bytes()))
}

fn allow_matches(a: &Allow, d: &Diff, q: &Query) -> bool {
    a.conds.iter().all(|(k, pat)| {
        let val = match k.as_str() {
            "aspect" => d.aspect.clone(),
            "detail" => d.detail.clone(),
            "tag" => q.tag.clone(),
            "qtype" => type_name(q.qtype),
            "qclass" => class_name(q.qclass),
            "name" => q.name.to_ascii_lowercase(),
            "transport" => d.transport.name().to_string(),
            "edns" => q.edns.to_string(),
            _ => unreachable!(),
        };
        glob(pat, &val)
    })
}

/// Entries for gtmd's rejections of zone lines or config parts: only the keys aspect (the
/// value is "load"), detail (gtmd's reason) and name (`file:line: text`) apply.
fn allow_matches_load(a: &Allow, (what, why): &(String, String)) -> bool {
    a.conds.iter().all(|(k, pat)| match k.as_str() {
        "aspect" => glob(pat, "load"),
        "detail" => glob(pat, why),
        "name" => glob(pat, what),
        _ => false,
    })
}

// ---------------------------------------------------------------------------------------
// Knot DNS

/// knotd from `$GTMD_KNOTD` if set (empty: as if absent), else PATH and the sbin dirs.
fn find_knotd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GTMD_KNOTD") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join("knotd"))
        .find(|p| p.is_file());
    found
}

/// A running knotd, stopped (SIGTERM, then SIGKILL) and its directory removed on drop.
struct Knot {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Knot {
    fn start(knotd: &Path, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // the zone files; z.test. also gets the fixed answers of gtmd's access domains
        for (_, file) in ZONES {
            std::fs::copy(Path::new(DATA).join(file), dir.join(file)).unwrap();
        }
        let mut z = std::fs::read_to_string(dir.join("z.test.zone")).unwrap();
        z.push_str(&std::fs::read_to_string(Path::new(DATA).join("knot-gslb.zone")).unwrap());
        std::fs::write(dir.join("z.test.zone"), z).unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut conf = format!(
                "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    identity: \"diff-node\"\n    nsid: \"diff-node\"\n    version: \"gtmd-diff\"\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\nlog:\n  - target: stderr\n    any: info\ndatabase:\n    storage: {d}\nmod-cookies:\n  - id: diff\n    secret: 0x{COOKIE_SECRET}\ntemplate:\n  - id: default\n    global-module: mod-cookies/diff\n    storage: {d}\n    semantic-checks: off\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\nzone:\n",
                d = dir.display()
            );
            for (origin, file) in ZONES {
                let _ = write!(conf, "  - domain: {origin}\n    file: {file}\n");
            }
            std::fs::write(dir.join("knot.conf"), conf).unwrap();
            let log = std::fs::File::create(dir.join("knotd.log")).unwrap();
            let child = Command::new(knotd)
                .arg("-c")
                .arg(dir.join("knot.conf"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn knotd");
            let mut k = Self {
                child: Some(child),
                dir: dir.to_path_buf(),
                addr,
            };
            if k.wait_ready() {
                return k;
            }
            eprintln!(
                "knotd attempt {attempt} on port {port} failed; log:\n{}",
                k.log()
            );
            k.stop();
        }
        panic!("knotd did not start");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default()
    }

    /// Until every zone answers its SOA with AA.
    fn wait_ready(&mut self) -> bool {
        let t0 = Instant::now();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        'zones: for (origin, _) in ZONES {
            let q = Q::new(origin, SOA).build();
            while t0.elapsed() < Duration::from_secs(15) {
                if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                    return false;
                }
                let _ = sock.send_to(&q, self.addr);
                let mut buf = [0u8; 4096];
                if let Ok(n) = sock.recv(&mut buf) {
                    let r = parse_response(&buf[..n]);
                    if r.rcode == 0 && r.flags & 0x0400 != 0 && !r.sections[0].is_empty() {
                        continue 'zones;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return false;
        }
        true
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by its PID.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// gtmd: the same zone files, minus what it rejects (each rejection is a difference)

struct GtmdSetup {
    config: PathBuf,
    /// (file:line text, reason) of every zone line or config part gtmd rejected.
    rejected: Vec<(String, String)>,
    nested: bool,
}

fn prepare_gtmd(dir: &Path) -> GtmdSetup {
    std::fs::create_dir_all(dir).unwrap();
    let mut toml = std::fs::read_to_string(Path::new(DATA).join("gtmd.toml")).unwrap();
    for (_, file) in ZONES {
        std::fs::copy(Path::new(DATA).join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("cookie.secret"), format!("{COOKIE_SECRET}\n")).unwrap();
    let config = dir.join("gtmd.toml");
    let mut rejected = Vec::new();
    let mut nested = true;
    for _ in 0..100 {
        std::fs::write(&config, &toml).unwrap();
        let out = Command::new(crate::harness::BIN)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("gtmd check");
        if out.status.success() {
            return GtmdSetup {
                config,
                rejected,
                nested,
            };
        }
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        let mut progress = false;
        for line in text.lines() {
            // "<path>:<line>: <field>: <reason>"
            let Some((loc, reason)) = line.split_once(": ") else {
                continue;
            };
            let Some((path, lno)) = loc.rsplit_once(':') else {
                continue;
            };
            let Ok(lno) = lno.parse::<usize>() else {
                continue;
            };
            let file = Path::new(path).file_name().unwrap().to_string_lossy();
            if file == "gtmd.toml" && reason.contains("nest") && nested {
                // drop the child zone's [[zone]] table
                let start = toml
                    .find(&format!("name = \"{CHILD}\""))
                    .and_then(|i| toml[..i].rfind("[[zone]]"))
                    .expect("child zone table");
                let end = toml[start + 8..]
                    .find("\n[")
                    .map_or(toml.len(), |e| start + 8 + e + 1);
                toml.replace_range(start..end, "");
                nested = false;
                rejected.push((format!("gtmd.toml: zone {CHILD}"), reason.to_string()));
                progress = true;
            } else if ZONES.iter().any(|z| z.1 == file) {
                let p = dir.join(&*file);
                let zt = std::fs::read_to_string(&p).unwrap();
                let mut lines: Vec<String> = zt.lines().map(str::to_string).collect();
                let l = &mut lines[lno - 1];
                if !l.starts_with(";REJECTED ") {
                    rejected.push((format!("{file}:{lno}: {}", l.trim()), reason.to_string()));
                    *l = format!(";REJECTED {l}");
                    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
                    progress = true;
                }
            }
        }
        assert!(
            progress,
            "gtmd rejects the config in a way the test cannot work around:\n{text}"
        );
    }
    panic!("gtmd check kept failing");
}

// ---------------------------------------------------------------------------------------
// Exchanges

struct Client {
    addr: SocketAddr,
    udp: UdpSocket,
    tcp: Option<TcpStream>,
}

/// How long to wait for an answer: generous (the debug build shares the machine with other
/// builds), short for the few queries a server may rightly drop.
fn patience(q: &Query) -> Duration {
    if DROPPED.iter().any(|d| q.tag == format!("special:{d}")) {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    }
}

/// Special queries a server may rightly drop: a response, a runt, and the malformed
/// messages Knot does not answer.
const DROPPED: [&str; 9] = [
    "qr set",
    "short 5 octets",
    "qdcount 2",
    "qname 257 octets",
    "qname label 64",
    "qname pointer loop",
    "question cut short",
    "opt in answer section",
    "opt rdlen overruns message",
];

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(addr).unwrap();
        Self {
            addr,
            udp,
            tcp: None,
        }
    }

    fn ask(&mut self, q: &[u8], t: Transport, wait: Duration) -> Option<Vec<u8>> {
        match t {
            Transport::Udp => self.udp(q, wait),
            Transport::Tcp => self.tcp(q, wait),
        }
    }

    fn udp(&mut self, q: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let _ = self.udp.send(q);
        let mut buf = vec![0u8; 65535];
        let t0 = Instant::now();
        // skip late answers to earlier queries (their ID differs)
        loop {
            let left = wait.checked_sub(t0.elapsed())?;
            self.udp
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.udp.recv(&mut buf) {
                Ok(n) if q.len() < 2 || (n >= 2 && buf[..2] == q[..2]) => {
                    return Some(buf[..n].to_vec())
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// One query on the open connection; when that connection fails (the server closed it
    /// after an earlier query, or for idleness), once more on a new one.
    fn tcp(&mut self, q: &[u8], wait: Duration) -> Option<Vec<u8>> {
        for _ in 0..2 {
            let fresh = self.tcp.is_none();
            if fresh {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
                s.set_nodelay(true).ok()?;
                self.tcp = Some(s);
            }
            let s = self.tcp.as_mut().unwrap();
            s.set_read_timeout(Some(wait)).ok()?;
            let mut b = (q.len() as u16).to_be_bytes().to_vec();
            b.extend_from_slice(q);
            let mut answer = || -> std::io::Result<Vec<u8>> {
                s.write_all(&b)?;
                let mut l = [0u8; 2];
                s.read_exact(&mut l)?;
                let mut m = vec![0u8; u16::from_be_bytes(l) as usize];
                s.read_exact(&mut m)?;
                Ok(m)
            };
            match answer() {
                Ok(m) => return Some(m),
                Err(_) => {
                    self.tcp = None;
                    if fresh {
                        return None;
                    }
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// The test

#[test]
fn differential_against_knot() {
    let t0 = Instant::now();
    let Some(knotd) = find_knotd() else {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            !root,
            "knotd (Debian package knot) is not installed; tools/test installs it when run as root"
        );
        eprintln!(
            "SKIPPED differential_against_knot: knotd is not installed and we are not root \
             (apt-get install knot, or run tools/test as root)"
        );
        return;
    };
    let model = Model::load();
    let mut queries = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    regular_queries(&model, &mut rng, &mut queries);
    special_queries(&mut queries);

    let gdir = TempDir::new("differential-gtmd");
    let setup = prepare_gtmd(gdir.path());
    let kdir = TempDir::new("differential-knot");
    let knot = Knot::start(&knotd, kdir.path());
    let gtmd = crate::harness::Server::start(&["--config", setup.config.to_str().unwrap()]);

    let mut kc = Client::new(knot.addr);
    let mut gc = Client::new(gtmd.addr);
    let mut diffs = Vec::new();
    let mut responses: BTreeMap<(usize, Transport), (Option<Resp>, Option<Resp>)> = BTreeMap::new();
    let mut skipped = 0usize;
    let mut sent = 0usize;
    for (i, q) in queries.iter().enumerate() {
        if !setup.nested && is_below_or_at(&q.name.to_ascii_lowercase(), CHILD) {
            skipped += 1;
            continue;
        }
        for &t in &q.transports {
            sent += 1;
            let wait = patience(q);
            let k = kc.ask(&q.wire, t, wait).map(|r| parse_response(&r));
            let g = gc.ask(&q.wire, t, wait).map(|r| parse_response(&r));
            let before = diffs.len();
            compare(i, t, &k, &g, &mut diffs);
            if diffs.len() > before {
                responses.insert((i, t), (k, g));
            }
        }
    }
    drop(knot);
    drop(gtmd);

    // the allow-list
    let mut allow = load_allow();
    let mut allowed = vec![None; diffs.len()];
    for (di, d) in diffs.iter().enumerate() {
        if let Some(a) = allow
            .iter_mut()
            .find(|a| allow_matches(a, d, &queries[d.query]))
        {
            a.hits += 1;
            allowed[di] = Some(a.line);
        }
    }
    // gtmd's rejections of the zone files and config are differences too (aspect "load")
    let mut rejected = Vec::new();
    let mut rejected_allowed = Vec::new();
    for r in &setup.rejected {
        match allow.iter_mut().find(|a| allow_matches_load(a, r)) {
            Some(a) => {
                a.hits += 1;
                rejected_allowed.push((r, a.line));
            }
            None => rejected.push(r),
        }
    }

    // groups: (allowed, aspect, detail) -> diff indexes
    let mut groups: BTreeMap<(bool, String, String), Vec<usize>> = BTreeMap::new();
    for (di, d) in diffs.iter().enumerate() {
        groups
            .entry((allowed[di].is_some(), d.aspect.clone(), d.detail.clone()))
            .or_default()
            .push(di);
    }
    let failing = diffs.len() - allowed.iter().filter(|a| a.is_some()).count();
    let stale: Vec<&Allow> = allow.iter().filter(|a| a.hits == 0).collect();

    let mut rep = String::new();
    let _ = writeln!(
        rep,
        "Differential test gtmd vs Knot DNS: {} queries ({} exchanges with each server; {} \
         skipped because gtmd refused the nested zone) in {:.1} s",
        queries.len(),
        sent,
        skipped,
        t0.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        rep,
        "{} differences: {} not allowed in {} groups, {} allowed; {} zone/config rejections; \
         {} stale allow entries\n",
        diffs.len(),
        failing,
        groups.keys().filter(|k| !k.0).count(),
        diffs.len() - failing,
        rejected.len(),
        stale.len()
    );
    if !rejected.is_empty() {
        let _ = writeln!(
            rep,
            "== gtmd rejected these (Knot loads them); the test served gtmd without them:"
        );
        for (what, why) in &rejected {
            let _ = writeln!(rep, "  {what}\n      -> {why}");
        }
        rep.push('\n');
    }
    for ((what, why), line) in &rejected_allowed {
        let _ = writeln!(
            rep,
            "== gtmd rejected (allowed by allow.txt:{line}): {what}\n      -> {why}"
        );
    }
    for a in &stale {
        let _ = writeln!(
            rep,
            "== STALE allow.txt:{} matches no difference: {}",
            a.line,
            a.conds
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let hist = |ids: &[usize], f: &dyn Fn(&Diff, &Query) -> String| {
        let mut h: BTreeMap<String, usize> = BTreeMap::new();
        for &di in ids {
            *h.entry(f(&diffs[di], &queries[diffs[di].query]))
                .or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = h.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for pass in [false, true] {
        let title = if pass {
            "ALLOWED (allow.txt)"
        } else {
            "NOT ALLOWED"
        };
        let _ = writeln!(rep, "\n######## {title} differences: summary\n");
        for ((_, aspect, detail), ids) in groups.iter().filter(|g| g.0 .0 == pass) {
            let _ = writeln!(
                rep,
                "{:>6}  [{aspect}] {detail}   tags: {}",
                ids.len(),
                hist(ids, &|_, q| q.tag.clone())
            );
        }
        let _ = writeln!(rep, "\n######## {title} differences: details\n");
        for ((_, aspect, detail), ids) in groups.iter().filter(|g| g.0 .0 == pass) {
            let _ = writeln!(
                rep,
                "=== [{aspect}] {detail}  count={}{}",
                ids.len(),
                allowed[ids[0]].map_or(String::new(), |l| format!("  (allow.txt:{l})"))
            );
            let _ = writeln!(rep, "  tags: {}", hist(ids, &|_, q| q.tag.clone()));
            let _ = writeln!(rep, "  qtypes: {}", hist(ids, &|_, q| type_name(q.qtype)));
            let _ = writeln!(
                rep,
                "  transport/edns: {}",
                hist(ids, &|d, q| format!("{}/{}", d.transport.name(), q.edns))
            );
            let mut names: Vec<String> = ids
                .iter()
                .map(|&di| queries[diffs[di].query].name.to_ascii_lowercase())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let more = names.len().saturating_sub(12);
            names.truncate(12);
            let _ = writeln!(
                rep,
                "  names: {}{}",
                names.join(" "),
                if more > 0 {
                    format!(" (+{more})")
                } else {
                    String::new()
                }
            );
            // an example for each of the first three tags
            let mut tags_seen = Vec::new();
            for &di in ids {
                let d = &diffs[di];
                let q = &queries[d.query];
                if tags_seen.contains(&&q.tag) || tags_seen.len() == 3 {
                    continue;
                }
                tags_seen.push(&q.tag);
                let (k, g) = &responses[&(d.query, d.transport)];
                let _ = writeln!(
                    rep,
                    "  example: #{} {} {}\n  Knot:\n{}  gtmd:\n{}",
                    d.query,
                    d.transport.name(),
                    q.describe(),
                    show(k),
                    show(g)
                );
            }
        }
    }
    let _ = writeln!(rep, "\n######## allow.txt entries\n");
    for a in &allow {
        let _ = writeln!(rep, "allow.txt:{}: {} hits: {}", a.line, a.hits, a.why);
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/differential-report.txt");
    let _ = std::fs::create_dir_all(path.parent().unwrap());
    if let Err(e) = std::fs::write(&path, &rep) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    // every difference, one per line, for grep and scripts
    let mut tsv =
        String::from("query\ttransport\ttag\tname\tqtype\tedns\taspect\tdetail\tallowed_by\n");
    for (di, d) in diffs.iter().enumerate() {
        let q = &queries[d.query];
        let _ = writeln!(
            tsv,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.query,
            d.transport.name(),
            q.tag,
            q.name.to_ascii_lowercase(),
            type_name(q.qtype),
            q.edns,
            d.aspect,
            d.detail,
            allowed[di].map_or(String::from("-"), |l| format!("allow.txt:{l}"))
        );
    }
    let _ = std::fs::write(path.with_file_name("differential-diffs.tsv"), tsv);
    // the not-allowed part on stderr (the report file has everything)
    let cut = rep
        .find("\n######## NOT ALLOWED differences: details")
        .unwrap_or(rep.len());
    eprintln!("{}\n(full report: {})", &rep[..cut], path.display());
    assert!(
        failing == 0 && rejected.is_empty() && stale.is_empty(),
        "gtmd differs from Knot DNS: {failing} differences not in allow.txt, {} zone/config \
         rejections, {} stale allow.txt entries; see {}",
        rejected.len(),
        stale.len(),
        path.display()
    );
}
