//! `gtmd diff`: the migration check of the GTM upgrade guide ("verify that resolution
//! results match the legacy instance before switching traffic"). Every name of a
//! configuration (zone owners, zone apexes, access domains) with every type it has plus A
//! and AAAA, asked as every line would (see [`super::lines`]), of an old and a new server;
//! the two replies compared:
//!
//! * RCODE, the AA flag, and the answer and authority sections as sets of records (order ignored, TTL
//!   left out; the additional section is optional data and not compared);
//! * TTLs of each RRset both have, unless `--ignore-ttl`;
//! * the ECS scope, unless `--ignore-scope`.
//!
//! Answers that the configuration lets vary from query to query (an access domain whose
//! pool policy is weighted or round-robin over more than one pool, or with a candidate
//! pool that draws fewer addresses than it has by weight or in turn; also a name whose
//! answer chains into one) are asked `--samples` times of each server and compared by the
//! union of what each gave: the set of possible addresses, as seen.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::client::{self, Ecs, Options, Reply};
use super::lines::{self, Row};
use super::probe::render;
use super::{load, Failure};
use crate::config::gslb::{AddressPolicy, Gslb, PoolPolicy};
use crate::config::Config;
use crate::dns::name::display_name;
use crate::dns::rtype;

/// What to compare.
#[derive(Debug, Clone)]
pub struct Args {
    /// The server answering now.
    pub old: SocketAddr,
    /// The server to move to.
    pub new: SocketAddr,
    /// The configuration naming the names and lines.
    pub config: PathBuf,
    /// JSON output.
    pub json: bool,
    /// Do not report TTL differences.
    pub ignore_ttl: bool,
    /// Do not report ECS scope differences.
    pub ignore_scope: bool,
    /// Queries per server for an answer that may vary.
    pub samples: u32,
    /// Comparisons run at once (threads, each with one query in flight per server).
    pub parallel: usize,
    /// Transport, timeout, retries.
    pub opts: Options,
}

/// One difference.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    /// Query name.
    pub name: String,
    /// Query type.
    #[serde(rename = "type")]
    pub qtype: String,
    /// The asker's line (`(no ECS)` for none).
    pub line: String,
    /// The ECS sent.
    pub ecs: Option<Ecs>,
    /// What differs: `rcode`, `aa`, `answer`, `authority`, `ttl`, `scope`.
    pub what: &'static str,
    /// The old server's side (for record sets: the records only it gave).
    pub old: String,
    /// The new server's side.
    pub new: String,
}

/// The counts.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Names asked about.
    pub names: usize,
    /// (name, type) questions.
    pub questions: usize,
    /// Askers per question (lines, default, no ECS).
    pub askers: usize,
    /// Comparisons: questions x askers.
    pub compared: usize,
    /// Of those, sampled several times (answers that may vary).
    pub sampled: usize,
    /// Comparisons without a difference.
    pub equal: usize,
    /// Comparisons with at least one.
    pub different: usize,
    /// Queries sent to each server.
    pub queries: usize,
    /// Differences by kind.
    pub by_kind: BTreeMap<&'static str, usize>,
}

/// Runs the comparison and prints it; `Ok(true)` when the servers agree.
pub fn run(a: &Args) -> Result<bool, Failure> {
    let (cfg, snap) = load(Some(a.config.as_path()))?;
    let rows = lines::rows(&snap.model, &snap.gslb.lines);
    let names = targets(&cfg);
    let varying = varying(&cfg.gslb);
    let work: Vec<(&str, u16, &Row)> = names
        .iter()
        .flat_map(|(n, types)| {
            let rows = &rows;
            types
                .iter()
                .flat_map(move |&t| rows.iter().map(move |r| (n.as_str(), t, r)))
        })
        .collect();
    let outcomes = in_parallel(a.parallel, &work, |&(n, t, r)| {
        compare(a, n, t, r, &varying)
    })?;
    let mut sum = Summary {
        names: names.len(),
        questions: names.values().map(BTreeSet::len).sum(),
        askers: rows.len(),
        ..Summary::default()
    };
    let mut diffs = Vec::new();
    for o in outcomes {
        sum.compared += 1;
        sum.queries += o.queries;
        sum.sampled += o.sampled as usize;
        if o.found.is_empty() {
            sum.equal += 1;
        } else {
            sum.different += 1;
        }
        for d in &o.found {
            *sum.by_kind.entry(d.what).or_default() += 1;
        }
        diffs.extend(o.found);
    }
    print(a, &diffs, &sum);
    Ok(diffs.is_empty())
}

/// `f` over every item of `work` on up to `n` threads (queries in flight), the results in
/// the order of `work`; the first error stops every thread and is returned.
fn in_parallel<T: Sync, R: Send>(
    n: usize,
    work: &[T],
    f: impl Fn(&T) -> Result<R, Failure> + Sync,
) -> Result<Vec<R>, Failure> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<Failure>> = Mutex::new(None);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(work.len()));
    let worker = || {
        let mut mine = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = work.get(i) else { break };
            match f(item) {
                Ok(r) => mine.push((i, r)),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(e);
                }
            }
        }
        done.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
    };
    std::thread::scope(|s| {
        for _ in 1..n.clamp(1, work.len().max(1)) {
            // A thread that cannot be had leaves its share to the others.
            let _ = std::thread::Builder::new().spawn_scoped(s, worker);
        }
        worker();
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|&(i, _)| i);
    Ok(done.into_iter().map(|(_, r)| r).collect())
}

/// Every name to ask about, with its types: each zone's apex and record owners with the
/// types they hold, each access domain with its type, and A and AAAA everywhere.
pub fn targets(cfg: &Config) -> BTreeMap<String, BTreeSet<u16>> {
    let mut m: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for z in &cfg.zones {
        m.entry(display_name(&z.name)).or_default();
        for r in &z.records {
            m.entry(display_name(&r.owner)).or_default().insert(r.rtype);
        }
    }
    for ad in &cfg.gslb.access_domains {
        m.entry(display_name(&ad.name))
            .or_default()
            .insert(ad.rtype);
    }
    for types in m.values_mut() {
        types.insert(rtype::A);
        types.insert(rtype::AAAA);
    }
    m
}

/// The access domains (name, type mnemonic) whose answer may change from one query to the
/// next: a weighted or round-robin choice among pools, or a candidate pool that draws
/// fewer addresses than it has (by weight, or in turn).
pub fn varying(g: &Gslb) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for ad in g.access_domains.iter().filter(|ad| ad.enabled) {
        let pools = ad.pools.iter().map(|&(p, _)| p as usize);
        let lines = ad
            .lines
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|&p| p as usize));
        let draws = pools.chain(lines).any(|p| {
            let pool = &g.pools[p];
            let n = pool
                .addresses
                .iter()
                .filter(|&&a| g.addresses[a].enabled)
                .count();
            pool.policy != AddressPolicy::Sequential && pool.answers < n
        });
        let between = matches!(ad.policy, PoolPolicy::Weighted | PoolPolicy::RoundRobin)
            && ad.pools.len() > 1;
        if draws || between {
            out.insert((
                display_name(&ad.name),
                crate::config::gslb::type_name(ad.rtype).to_string(),
            ));
        }
    }
    out
}

/// What one server said to one question, over one or several queries.
#[derive(Default)]
struct Seen {
    rcodes: BTreeSet<String>,
    aa: BTreeSet<bool>,
    answer: BTreeSet<(String, String, String)>,
    authority: BTreeSet<(String, String, String)>,
    ttls: BTreeMap<(String, String), BTreeSet<u32>>,
    scopes: BTreeSet<Option<u8>>,
}

impl Seen {
    fn add(&mut self, r: &Reply) {
        self.rcodes.insert(r.rcode.clone());
        self.aa.insert(r.aa);
        for rr in &r.answer {
            self.answer.insert(rr.key());
        }
        for rr in &r.authority {
            self.authority.insert(rr.key());
        }
        for rr in r.answer.iter().chain(&r.authority) {
            let key = (rr.name.clone(), rr.rtype.clone());
            self.ttls.entry(key).or_default().insert(rr.ttl);
        }
        self.scopes.insert(r.scope);
    }
}

/// One comparison: what differs, whether it was sampled, the queries sent to each server.
struct Outcome {
    found: Vec<Difference>,
    sampled: bool,
    queries: usize,
}

/// Asks both servers (several times when the answer may vary) and lists what differs.
fn compare(
    a: &Args,
    name: &str,
    t: u16,
    row: &Row,
    varying: &HashSet<(String, String)>,
) -> Result<Outcome, Failure> {
    let ask = |server: SocketAddr, which: &str| {
        client::ask(server, name, t, row.ecs.as_ref(), &a.opts)
            .map_err(|e| Failure::Network(format!("cannot ask the {which} server: {e}")))
    };
    let (o, n) = (ask(a.old, "old")?, ask(a.new, "new")?);
    let mut queries = 1;
    let may_vary = |r: &Reply| {
        let qtype = client::type_name(t);
        varying.contains(&(name.to_string(), qtype))
            || r.answer
                .iter()
                .any(|rr| varying.contains(&(rr.name.clone(), rr.rtype.clone())))
    };
    let sampled = may_vary(&o) || may_vary(&n);
    let (mut so, mut sn) = (Seen::default(), Seen::default());
    so.add(&o);
    sn.add(&n);
    if sampled {
        for _ in 1..a.samples.max(1) {
            so.add(&ask(a.old, "old")?);
            sn.add(&ask(a.new, "new")?);
            queries += 1;
        }
    }
    let mut out = Vec::new();
    let mut push = |what: &'static str, old: String, new: String| {
        out.push(Difference {
            name: name.to_string(),
            qtype: client::type_name(t),
            line: row.label().to_string(),
            ecs: row.ecs,
            what,
            old,
            new,
        });
    };
    if so.rcodes != sn.rcodes {
        push("rcode", join(&so.rcodes), join(&sn.rcodes));
    }
    if so.aa != sn.aa {
        let show = |s: &BTreeSet<bool>| {
            join(
                &s.iter()
                    .map(|&aa| if aa { "AA" } else { "no AA" })
                    .collect(),
            )
        };
        push("aa", show(&so.aa), show(&sn.aa));
    }
    for (what, x, y) in [
        ("answer", &so.answer, &sn.answer),
        ("authority", &so.authority, &sn.authority),
    ] {
        if x != y {
            push(what, only(x, y), only(y, x));
        }
    }
    if !a.ignore_ttl {
        for (key, ot) in &so.ttls {
            match sn.ttls.get(key) {
                Some(nt) if nt != ot => push(
                    "ttl",
                    format!("{} {}: {}", key.0, key.1, join(ot)),
                    format!("{} {}: {}", key.0, key.1, join(nt)),
                ),
                _ => {}
            }
        }
    }
    if !a.ignore_scope && so.scopes != sn.scopes {
        let show = |s: &BTreeSet<Option<u8>>| {
            join(
                &s.iter()
                    .map(|v| v.map_or("none".into(), |v| v.to_string()))
                    .collect(),
            )
        };
        push("scope", show(&so.scopes), show(&sn.scopes));
    }
    Ok(Outcome {
        found: out,
        sampled,
        queries,
    })
}

fn join<T: ToString>(s: &BTreeSet<T>) -> String {
    s.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// The records of `x` that `y` lacks, `TYPE data` (owner first when not the question's).
fn only(x: &BTreeSet<(String, String, String)>, y: &BTreeSet<(String, String, String)>) -> String {
    let v: Vec<String> = x
        .difference(y)
        .map(|(n, t, d)| format!("{n} {t} {d}"))
        .collect();
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn print(a: &Args, diffs: &[Difference], sum: &Summary) {
    if a.json {
        let doc = serde_json::json!({
            "old": a.old.to_string(),
            "new": a.new.to_string(),
            "differences": diffs,
            "summary": sum,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    if !diffs.is_empty() {
        let cells: Vec<[String; 7]> = diffs
            .iter()
            .map(|d| {
                [
                    d.name.clone(),
                    d.qtype.clone(),
                    d.line.clone(),
                    d.ecs.map_or("-".into(), |e| e.to_string()),
                    d.what.to_string(),
                    d.old.clone(),
                    d.new.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            render(
                &["NAME", "TYPE", "LINE", "ECS", "WHAT", "OLD", "NEW"],
                &cells
            )
        );
    }
    let kinds: Vec<String> = sum
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "{} names, {} questions x {} askers = {} comparisons ({} sampled {} times), {} queries to each server: {} equal, {} different{}",
        sum.names,
        sum.questions,
        sum.askers,
        sum.compared,
        sum.sampled,
        a.samples.max(1),
        sum.queries,
        sum.equal,
        sum.different,
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) }
    );
}
