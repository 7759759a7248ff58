//! Asks a case's query over each of its transports and compares the answer with every
//! expectation of the case, collecting all the differences (not only the first), each with
//! its line; then the checks every answer gets (`tests/cases/README.md`, "Always checked").

use std::time::Duration;

use super::format::{flag_names, Case, Check, OptMatch, Transport, SECTIONS};
use crate::harness::{
    opcode_name, rcode_name, read_name, tcp_recv, tcp_send, udp_exchange, Msg, Rr, Server, Q,
};

/// How long a `dropped` query waits for the answer that must not come.
const DROP_WAIT: Duration = Duration::from_millis(300);
/// How long any other query waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_millis(1500);

/// Runs `case` against `s`; panics with every difference found.
pub(crate) fn run(s: &Server, case: &Case) {
    let mut failures = Vec::new();
    let mut dumps = Vec::new();
    for &t in &case.over {
        let at = |line: usize, what: String| format!("{}:{line}: {}: {what}", case.file, t.name());
        if case
            .expect
            .iter()
            .any(|e| matches!(e.check, Check::Dropped))
        {
            if let Some(r) = udp_exchange(s.addr, &case.query, DROP_WAIT) {
                let line = case.expect[0].line;
                failures.push(at(
                    line,
                    format!("answered ({} octets), not dropped", r.len()),
                ));
            }
            // Silence is a drop only if the server still answers.
            let alive = Q::new(".", 6).build();
            if udp_exchange(s.addr, &alive, ANSWER_WAIT).is_none() {
                failures.push(at(
                    case.line,
                    "no answer to a plain query afterwards".into(),
                ));
            }
            continue;
        }
        let raw = match t {
            Transport::Udp => udp_exchange(s.addr, &case.query, ANSWER_WAIT),
            Transport::Tcp => tcp_exchange(s.addr, &case.query),
        };
        let Some(raw) = raw else {
            failures.push(at(case.line, "no answer".into()));
            continue;
        };
        let m = match std::panic::catch_unwind(|| Msg::parse(&raw)) {
            Ok(m) => m,
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(at(case.line, format!("malformed answer: {why}")));
                dumps.push(format!(";; {}: {}", t.name(), crate::harness::hex(&raw)));
                continue;
            }
        };
        let before = failures.len();
        for why in always(&case.query, &m) {
            failures.push(at(case.line, why));
        }
        for e in case.expect.iter().filter(|e| e.only.is_none_or(|o| o == t)) {
            if let Err(why) = expect(&e.check, &case.query, &m) {
                failures.push(at(e.line, why));
            }
        }
        if failures.len() > before {
            dumps.push(show(t, &m));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} {} ({}:{}) failed:\n{}\n{}\n\n{}",
            case.kind,
            case.name,
            case.file,
            case.line,
            case.about
                .iter()
                .map(|a| format!("  # {a}"))
                .collect::<Vec<_>>()
                .join("\n"),
            failures.join("\n"),
            dumps.join("\n\n")
        );
    }
}

fn tcp_exchange(addr: std::net::SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(ANSWER_WAIT)).ok()?;
    tcp_send(&mut c, q);
    tcp_recv(&mut c)
}

/// What every answer must be: a response (QR), to this query (ID and opcode echoed), with
/// at most one OPT, owned by the root, and a TSIG only as the last record.
fn always(query: &[u8], m: &Msg) -> Vec<String> {
    let mut v = Vec::new();
    if m.flags & 0x8000 == 0 {
        v.push("QR clear: not a response".to_string());
    }
    if query.len() >= 2 && m.id != u16::from_be_bytes([query[0], query[1]]) {
        v.push(format!("id {:#06x} is not the query's", m.id));
    }
    if query.len() >= 3 && (m.flags >> 11) & 0xF != u16::from(query[2] >> 3) & 0xF {
        v.push(format!(
            "opcode {} is not the query's",
            opcode_name((m.flags >> 11) & 0xF)
        ));
    }
    let opts: Vec<&Rr> = m.additional.iter().filter(|r| r.rtype == 41).collect();
    if opts.len() > 1 {
        v.push(format!("{} OPT records", opts.len()));
    }
    if opts.iter().any(|o| o.name != ".") {
        v.push("an OPT not owned by the root".into());
    }
    let all: Vec<&Rr> = m
        .answer
        .iter()
        .chain(&m.authority)
        .chain(&m.additional)
        .collect();
    if let Some(i) = all.iter().position(|r| r.rtype == 250) {
        if i + 1 != all.len() {
            v.push("a TSIG that is not the last record".into());
        }
    }
    v
}

/// One expectation.
fn expect(check: &Check, query: &[u8], m: &Msg) -> Result<(), String> {
    let differ = |what: &str, want: String, got: String| {
        if want == got {
            Ok(())
        } else {
            Err(format!("{what}: want {want}, got {got}"))
        }
    };
    match check {
        Check::Dropped => Ok(()),
        Check::Rcode(r) => differ("rcode", rcode_name(*r), rcode_name(m.rcode())),
        Check::Opcode(o) => differ(
            "opcode",
            opcode_name(*o),
            opcode_name((m.flags >> 11) & 0xF),
        ),
        Check::Flags { mask, want } => {
            differ("flags", flag_names(*want), flag_names(m.flags & mask))
        }
        Check::Counts(c) => {
            let names = ["qd", "an", "ns", "ar"];
            let fmt = |f: &dyn Fn(usize) -> u16| {
                (0..4)
                    .filter(|&i| c[i].is_some())
                    .map(|i| format!("{}={}", names[i], f(i)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            differ("counts", fmt(&|i| c[i].unwrap_or(0)), fmt(&|i| m.counts[i]))
        }
        Check::QuestionEchoed => {
            let q = question_of(query);
            if m.question_raw == q {
                Ok(())
            } else {
                Err(format!(
                    "question: want the query's {}, got {}",
                    crate::harness::hex(&q),
                    crate::harness::hex(&m.question_raw)
                ))
            }
        }
        Check::Size { at_most, octets } => {
            let n = m.raw.len();
            if (*at_most && n <= *octets) || n == *octets {
                Ok(())
            } else {
                let op = if *at_most { "<= " } else { "" };
                Err(format!("size: want {op}{octets}, got {n} octets"))
            }
        }
        Check::NoEdns => match m.opt() {
            None => Ok(()),
            Some(_) => Err("edns: want no OPT, got one".into()),
        },
        Check::Edns {
            payload,
            version,
            dnssec_ok,
            options,
        } => {
            let o = m.opt().ok_or("edns: want an OPT, got none")?;
            let mut bad = Vec::new();
            if payload.is_some_and(|p| p != o.class) {
                bad.push(format!(
                    "payload {} (want {})",
                    o.class,
                    payload.unwrap_or(0)
                ));
            }
            let v = ((o.ttl >> 16) & 0xFF) as u8;
            if version.is_some_and(|x| x != v) {
                bad.push(format!("version {v} (want {})", version.unwrap_or(0)));
            }
            if (o.ttl & 0x8000 != 0) != *dnssec_ok {
                bad.push(format!("DO {} (want {dnssec_ok})", o.ttl & 0x8000 != 0));
            }
            let mut got = opt_list(&o.rdata);
            for (line, want) in options {
                let i = got.iter().position(|(c, d)| match want {
                    OptMatch::Exact(wc, wd) => c == wc && d == wd,
                    OptMatch::Prefix { code, prefix, rest } => {
                        c == code && d.len() == prefix.len() + rest && d.starts_with(prefix)
                    }
                });
                match i {
                    Some(i) => {
                        got.remove(i);
                    }
                    None => bad.push(format!("no option as on line {line}")),
                }
            }
            for (c, d) in got {
                bad.push(format!("unexpected option {c} {}", crate::harness::hex(&d)));
            }
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!("edns: {}", bad.join(", ")))
            }
        }
        Check::Section {
            index,
            ordered,
            rrsets,
            records,
        } => {
            let sec = [&m.answer, &m.authority, &m.additional][*index];
            let got: Vec<String> = sec
                .iter()
                .filter(|r| r.rtype != 41)
                .map(|r| normal(&r.show()))
                .collect();
            let name = SECTIONS[*index];
            if let Some(n) = rrsets {
                let mut sets: Vec<(String, u16, u16)> = sec
                    .iter()
                    .filter(|r| r.rtype != 41)
                    .map(|r| (r.name.to_ascii_lowercase(), r.rtype, r.class))
                    .collect();
                sets.sort();
                sets.dedup();
                if sets.len() != *n {
                    return Err(format!("{name}: want {n} RRsets, got {}", sets.len()));
                }
            }
            let Some(records) = records else {
                return Ok(());
            };
            let mut want: Vec<String> = records.iter().map(|(_, r)| normal(r)).collect();
            let mut have = got.clone();
            if *ordered {
                if in_rrsets(&want) == in_rrsets(&have) {
                    return Ok(());
                }
            } else {
                want.sort();
                have.sort();
                if want == have {
                    return Ok(());
                }
            }
            let missing: Vec<&String> = want.iter().filter(|w| !have.contains(w)).collect();
            let extra: Vec<&String> = have.iter().filter(|h| !want.contains(h)).collect();
            let mut why = format!("{name}: ");
            if missing.is_empty() && extra.is_empty() {
                why.push_str("the RRsets in another order, or records another number of times");
            }
            for r in missing {
                why.push_str(&format!("\n    missing    {r}"));
            }
            for r in extra {
                why.push_str(&format!("\n    unexpected {r}"));
            }
            Err(why)
        }
    }
}

/// Records as their RRsets in order, each RRset's records sorted: the order between
/// RRsets is a message's, the order within one is not promised (RFC 2181 5).
fn in_rrsets(records: &[String]) -> Vec<Vec<String>> {
    let key = |r: &str| {
        let w: Vec<String> = r.split(' ').take(4).map(str::to_ascii_lowercase).collect();
        (w.first().cloned(), w.get(2).cloned(), w.get(3).cloned())
    };
    let mut sets: Vec<Vec<String>> = Vec::new();
    for r in records {
        match sets.last_mut() {
            Some(set) if key(&set[0]) == key(r) => set.push(r.clone()),
            _ => sets.push(vec![r.clone()]),
        }
    }
    for set in &mut sets {
        set.sort();
    }
    sets
}

/// A record line with single blanks between its words.
fn normal(r: &str) -> String {
    super::format::split(r).map_or_else(|_| r.to_string(), |w| w.join(" "))
}

/// The query's question section, as it was sent.
fn question_of(query: &[u8]) -> Vec<u8> {
    if query.len() < 12 {
        return Vec::new();
    }
    let qd = u16::from_be_bytes([query[4], query[5]]);
    let mut pos = 12;
    for _ in 0..qd {
        let (_, p) = read_name(query, pos);
        pos = (p + 4).min(query.len());
    }
    query[12..pos].to_vec()
}

/// (code, data) of each option in an OPT's data.
fn opt_list(rd: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i + 4 <= rd.len() {
        let c = u16::from_be_bytes([rd[i], rd[i + 1]]);
        let l = u16::from_be_bytes([rd[i + 2], rd[i + 3]]) as usize;
        v.push((c, rd[i + 4..(i + 4 + l).min(rd.len())].to_vec()));
        i += 4 + l;
    }
    v
}

/// The answer, as dig would print it, for the failure message.
fn show(t: Transport, m: &Msg) -> String {
    let mut s = format!(
        ";; over {}: {} octets, id {:#06x}, opcode {}, rcode {}, flags {}\n;; counts qd={} an={} ns={} ar={}",
        t.name(),
        m.raw.len(),
        m.id,
        opcode_name((m.flags >> 11) & 0xF),
        rcode_name(m.rcode()),
        flag_names(m.flags),
        m.counts[0],
        m.counts[1],
        m.counts[2],
        m.counts[3],
    );
    if let Some(o) = m.opt() {
        s.push_str(&format!(
            "\n;; edns payload={} version={}{} options:",
            o.class,
            (o.ttl >> 16) & 0xFF,
            if o.ttl & 0x8000 != 0 { " do" } else { "" }
        ));
        for (c, d) in opt_list(&o.rdata) {
            s.push_str(&format!(" {c}:{}", crate::harness::hex(&d)));
        }
    }
    for (name, sec) in SECTIONS
        .iter()
        .zip([&m.answer, &m.authority, &m.additional])
    {
        s.push_str(&format!("\n;; {name}"));
        for r in sec.iter().filter(|r| r.rtype != 41) {
            s.push_str(&format!("\n{}", r.show()));
        }
    }
    s
}
