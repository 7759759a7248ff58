//! `GET /metrics` on the control API: Prometheus' text exposition format, or OpenMetrics
//! when the `Accept` header asks for it (`expo.rs`). Everything is read at scrape time from
//! where it already lives: the shards' own counters (summed here, never written here), the
//! health writer's state and transition counts, the prober's last results with their
//! latency histograms, and the reload record kept in [`Metrics`]. The per-domain series
//! (`[metrics] per-domain`) and their slots are `series.rs`. README.md ("Metrics") lists
//! every metric.

mod expo;
mod series;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::api::ApiContext;
use super::http;
use crate::config::gslb::{type_name, PoolPolicy};
use crate::dns::name::display_name;
use crate::health::Writer;
use crate::probe::latency::BUCKETS;
use crate::probe::Report;
use crate::shard::counters::{CLOSE_REASONS, QTYPE_GROUPS, RCODES};
use crate::shard::tap::{Stats as TapStats, DROP_REASONS};
use crate::shard::xdp::stats::KERNEL as XDP_KERNEL;
use crate::shard::xdp::Stats as XdpStats;
use crate::shard::Counters;
use crate::tables::gslb::NO_POOL;
use crate::tables::Snapshot;
use crate::wire::Transport;
use expo::{float, Expo, Kind};
use series::{Series, OTHER};

/// What only the control side knows: when the process started, the reloads, the series
/// slots, and the shards' counters once they run.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    series: Mutex<Series>,
    counters: OnceLock<Vec<Arc<Counters>>>,
    /// The query log's counters, with `[dnstap]`.
    dnstap: OnceLock<Arc<TapStats>>,
    /// Each AF_XDP socket's counters (`io = "xdp"`).
    xdp: OnceLock<Vec<Arc<XdpStats>>>,
    reloads: Mutex<Reloads>,
}

/// The reload record.
#[derive(Debug)]
struct Reloads {
    attempts: u64,
    failures: u64,
    /// Seconds the last load (start-up or reload) took, successful or not.
    last_seconds: f64,
    last_success: SystemTime,
}

impl Metrics {
    /// The record of a process that started at `since` and has just compiled its first
    /// configuration, whose `[metrics]` is `cfg`.
    pub fn new(cfg: &crate::config::Metrics, since: Instant) -> Self {
        let now = SystemTime::now();
        Self {
            started: now - since.elapsed(),
            series: Mutex::new(Series::new(cfg.max_series)),
            counters: OnceLock::new(),
            dnstap: OnceLock::new(),
            xdp: OnceLock::new(),
            reloads: Mutex::new(Reloads {
                attempts: 0,
                failures: 0,
                last_seconds: since.elapsed().as_secs_f64(),
                last_success: now,
            }),
        }
    }

    /// Slots per kind the shards' per-domain counters need (`max-series` at start-up).
    pub fn series_cap(&self) -> usize {
        self.series.lock().expect("series lock").cap()
    }

    /// Sets `snap`'s per-domain series slots for `cfg` before it is published.
    pub fn assign(&self, snap: &mut Snapshot, cfg: &crate::config::Metrics) {
        let mut s = self.series.lock().expect("series lock");
        if cfg.max_series != s.cap() {
            warn!(
                max_series = cfg.max_series,
                in_use = s.cap(),
                "metrics.max-series takes effect at restart"
            );
        }
        s.assign(snap, cfg.per_domain);
    }

    /// The shards' counters, once they run.
    pub fn serving(&self, counters: Vec<Arc<Counters>>) {
        let _ = self.counters.set(counters);
    }

    /// The AF_XDP sockets' counters, once the shards run (none without XDP).
    pub fn xdp(&self, stats: Vec<Arc<XdpStats>>) {
        let _ = self.xdp.set(stats);
    }

    /// The query log's counters, once its writer runs.
    pub fn tapping(&self, stats: Arc<TapStats>) {
        let _ = self.dnstap.set(stats);
    }

    /// The shards' counters (none before they run).
    pub(crate) fn counters(&self) -> &[Arc<Counters>] {
        self.counters.get().map_or(&[], Vec::as_slice)
    }

    /// Records a reload that took `took` and succeeded or not.
    pub fn reloaded(&self, ok: bool, took: Duration) {
        let mut r = self.reloads.lock().expect("reloads lock");
        r.attempts += 1;
        r.last_seconds = took.as_secs_f64();
        if ok {
            r.last_success = SystemTime::now();
        } else {
            r.failures += 1;
        }
    }
}

/// Answers `GET /metrics`.
pub(super) fn respond(ctx: &ApiContext, req: &http::Request) -> http::Response {
    let om = expo::wants_openmetrics(req.header("accept").ok().flatten());
    let text = render(ctx, om);
    let ct = if om { expo::OPENMETRICS } else { expo::TEXT };
    http::Response::text(200, ct, text)
}

/// The whole exposition.
fn render(ctx: &ApiContext, om: bool) -> String {
    let m = &ctx.metrics;
    let mut e = Expo::new(om);
    process(&mut e, m, ctx.generation.load(Relaxed));
    let none = Vec::new();
    let counters = m.counters.get().unwrap_or(&none);
    queries(&mut e, counters);
    tcp(&mut e, counters);
    if let Some(t) = m.dnstap.get() {
        dnstap(&mut e, t);
    }
    if let Some(x) = m.xdp.get().filter(|x| !x.is_empty()) {
        xdp(&mut e, x);
    }
    let reports = ctx.reports.lock().expect("reports lock").clone();
    let w = ctx.writer.lock().expect("writer lock");
    health(&mut e, &w);
    {
        let series = m.series.lock().expect("series lock");
        if series.used() {
            per_domain(&mut e, &series, counters);
            active_pools(&mut e, &series, &w);
        }
    }
    let known: Vec<String> = w
        .snapshot()
        .model
        .addresses
        .iter()
        .map(|a| a.name.clone())
        .collect();
    drop(w);
    checks(&mut e, &known, &reports);
    if let Some(s) = &ctx.shared {
        fleet_votes(&mut e, s);
        fleet_members(&mut e, s);
    }
    e.finish()
}

/// A fleet edge sharing health: the fresh votes on each address and template, this
/// edge's own included, by verdict.
fn fleet_votes(e: &mut Expo, s: &crate::probe::shared::Shared) {
    e.family(
        "gtmd_fleet_votes",
        Kind::Gauge,
        "Fresh health verdicts counted per address and template (this edge's and the other edges'), by verdict.",
    );
    for (a, c, up, down) in s.tally() {
        for (verdict, n) in [("up", up), ("down", down)] {
            let labels = [
                ("address", a.as_str()),
                ("check", c.as_str()),
                ("verdict", verdict),
            ];
            e.sample("gtmd_fleet_votes", "", &labels, n);
        }
    }
}

/// A fleet edge sharing health: the members it knows, its probe assignment, isolation.
fn fleet_members(e: &mut Expo, s: &crate::probe::shared::Shared) {
    let now = std::time::Instant::now();
    let view = s.view();
    let live = view.members.iter().filter(|m| m.live(now)).count();
    let isolated = view
        .members
        .iter()
        .filter(|m| m.live(now) && m.isolated)
        .count();
    let known = view.members.len();
    e.family(
        "gtmd_fleet_members",
        Kind::Gauge,
        "Fleet members this edge knows from their heartbeats, by state (live: joined and heard from within 6 s; isolated: live and isolated; stale: the others).",
    );
    for (state, n) in [
        ("live", live),
        ("isolated", isolated),
        ("stale", known - live),
    ] {
        e.sample("gtmd_fleet_members", "", &[("state", state)], n as u64);
    }
    let (probed, checks, holding) = s.counts();
    let gauges: [(&str, &str, u64); 4] = [
        ("gtmd_fleet_probed_checks", "Checks (address, template, vantage point) this edge probes itself (probe sharding).", probed),
        ("gtmd_fleet_checks", "Checks (address, template, vantage point) of this edge's configuration.", checks),
        ("gtmd_fleet_holding", "Templates whose fleet verdict holds: fewer fresh votes than min-vantages.", holding),
        ("gtmd_fleet_isolated", "1 while this edge is isolated (its checks and anchors fail): it probes nothing and its votes do not count.", u64::from(s.isolated())),
    ];
    for (name, help, v) in gauges {
        e.family(name, Kind::Gauge, help);
        e.sample(name, "", &[], v);
    }
}

fn unix(t: SystemTime) -> String {
    float(
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

/// Build, process, configuration and reloads.
fn process(e: &mut Expo, m: &Metrics, generation: u64) {
    e.family("gtmd_build", Kind::Info, "The gtmd version serving.");
    e.sample(
        "gtmd_build",
        "_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.family(
        "gtmd_process_start_time_seconds",
        Kind::Gauge,
        "When the process started, seconds since the Unix epoch.",
    );
    e.sample("gtmd_process_start_time_seconds", "", &[], unix(m.started));
    if let Some(rss) = resident_bytes() {
        e.family(
            "gtmd_process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the process (VmRSS), bytes.",
        );
        e.sample("gtmd_process_resident_memory_bytes", "", &[], rss);
    }
    e.family(
        "gtmd_config_generation",
        Kind::Gauge,
        "Generation of the configuration serving (1 at start, +1 per successful reload).",
    );
    e.sample("gtmd_config_generation", "", &[], generation);
    let r = m.reloads.lock().expect("reloads lock");
    let fams: [(&str, Kind, &str, String); 4] = [
        ("gtmd_reloads", Kind::Counter, "Reloads attempted (SIGHUP).", r.attempts.to_string()),
        (
            "gtmd_reload_failures",
            Kind::Counter,
            "Reloads rejected (the previous configuration kept serving).",
            r.failures.to_string(),
        ),
        (
            "gtmd_reload_duration_seconds",
            Kind::Gauge,
            "How long the last load took (start-up or reload; read, compile and health carried over), seconds.",
            float(r.last_seconds),
        ),
        (
            "gtmd_reload_last_success_timestamp_seconds",
            Kind::Gauge,
            "When the configuration serving was loaded, seconds since the Unix epoch.",
            unix(r.last_success),
        ),
    ];
    drop(r);
    for (name, kind, help, v) in fams {
        e.family(name, kind, help);
        e.sample(
            name,
            if kind == Kind::Counter { "_total" } else { "" },
            &[],
            v,
        );
    }
}

/// The process's resident memory, from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn transport(c: &Counters) -> &'static str {
    match c.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

/// Queries and what became of them, per shard thread.
fn queries(e: &mut Expo, counters: &[Arc<Counters>]) {
    e.family(
        "gtmd_queries",
        Kind::Counter,
        "Queries answered, by shard, transport, QTYPE group and the answer's RCODE (answers \
         that RRL then dropped or slipped included); only combinations seen so far.",
    );
    for c in counters {
        let shard = c.shard.to_string();
        for (g, qtype) in QTYPE_GROUPS.iter().enumerate() {
            for (r, rcode) in RCODES.iter().enumerate() {
                let v = c.answers(g, r);
                if v > 0 {
                    let labels = [
                        ("shard", shard.as_str()),
                        ("transport", transport(c)),
                        ("qtype", qtype),
                        ("rcode", rcode),
                    ];
                    e.sample("gtmd_queries", "_total", &labels, v);
                }
            }
        }
    }
    e.family(
        "gtmd_queries_dropped",
        Kind::Counter,
        "Queries not answered: reason invalid (QR set, shorter than a header) or io \
         (a datagram truncated on receipt, a failed send).",
    );
    for c in counters {
        let shard = c.shard.to_string();
        for (reason, v) in [("invalid", &c.dropped), ("io", &c.io_dropped)] {
            let labels = [
                ("shard", shard.as_str()),
                ("transport", transport(c)),
                ("reason", reason),
            ];
            e.sample("gtmd_queries_dropped", "_total", &labels, v.load(Relaxed));
        }
    }
    e.family(
        "gtmd_responses_truncated",
        Kind::Counter,
        "Answers sent with TC=1 because they did not fit (RRL slips not included).",
    );
    for c in counters {
        let shard = c.shard.to_string();
        let labels = [("shard", shard.as_str()), ("transport", transport(c))];
        e.sample(
            "gtmd_responses_truncated",
            "_total",
            &labels,
            c.truncated.load(Relaxed),
        );
    }
    let udp: Vec<&Arc<Counters>> = counters
        .iter()
        .filter(|c| c.transport == Transport::Udp)
        .collect();
    for (name, help, pick) in [
        (
            "gtmd_rrl_limited",
            "UDP answers response rate limiting held back (dropped or slipped).",
            (|c: &Counters| c.limited.load(Relaxed)) as fn(&Counters) -> u64,
        ),
        (
            "gtmd_rrl_slipped",
            "Of the limited answers, those sent truncated (TC=1, no records) instead of dropped.",
            |c: &Counters| c.slipped.load(Relaxed),
        ),
    ] {
        e.family(name, Kind::Counter, help);
        for c in &udp {
            e.sample(name, "_total", &[("shard", &c.shard.to_string())], pick(c));
        }
    }
}

/// TCP connections, per shard.
fn tcp(e: &mut Expo, counters: &[Arc<Counters>]) {
    let tcp: Vec<&Arc<Counters>> = counters
        .iter()
        .filter(|c| c.transport == Transport::Tcp)
        .collect();
    e.family(
        "gtmd_tcp_connections_accepted",
        Kind::Counter,
        "TCP connections accepted.",
    );
    for c in &tcp {
        let v = c.tcp_connections.load(Relaxed);
        e.sample(
            "gtmd_tcp_connections_accepted",
            "_total",
            &[("shard", &c.shard.to_string())],
            v,
        );
    }
    e.family(
        "gtmd_tcp_connections_refused",
        Kind::Counter,
        "TCP connections closed at once: their source already held tcp-max-connections-per-source.",
    );
    for c in &tcp {
        let v = c.tcp_refused.load(Relaxed);
        e.sample(
            "gtmd_tcp_connections_refused",
            "_total",
            &[("shard", &c.shard.to_string())],
            v,
        );
    }
    e.family(
        "gtmd_tcp_connections_closed",
        Kind::Counter,
        "TCP connections closed, by reason: client (closed by the client, an error, a message \
         shorter than a header), idle_timeout, io_timeout, evicted (to admit a new one at the cap).",
    );
    for c in &tcp {
        let shard = c.shard.to_string();
        for (reason, v) in CLOSE_REASONS.iter().zip(&c.tcp_closed) {
            let labels = [("shard", shard.as_str()), ("reason", reason)];
            e.sample(
                "gtmd_tcp_connections_closed",
                "_total",
                &labels,
                v.load(Relaxed),
            );
        }
    }
    e.family(
        "gtmd_tcp_connections_open",
        Kind::Gauge,
        "TCP connections open.",
    );
    for c in &tcp {
        let closed: u64 = c.tcp_closed.iter().map(|v| v.load(Relaxed)).sum();
        let open = c.tcp_connections.load(Relaxed).saturating_sub(closed);
        e.sample(
            "gtmd_tcp_connections_open",
            "",
            &[("shard", &c.shard.to_string())],
            open,
        );
    }
}

/// The query log (`[dnstap]`): frames written, dropped by reason, the reader connected.
fn dnstap(e: &mut Expo, t: &TapStats) {
    e.family(
        "gtmd_dnstap_frames",
        Kind::Counter,
        "dnstap frames (one per logged query or response) written whole to the socket or file.",
    );
    e.sample("gtmd_dnstap_frames", "_total", &[], t.frames.load(Relaxed));
    e.family(
        "gtmd_dnstap_dropped",
        Kind::Counter,
        "dnstap frames not written, by reason: queue_full (a shard found its ring full: the \
         writer is behind), oversize, no_reader (no socket reader, or it went away), \
         slow_reader (the reader does not keep up), write_error (the file).",
    );
    for (i, reason) in DROP_REASONS.iter().enumerate() {
        e.sample(
            "gtmd_dnstap_dropped",
            "_total",
            &[("reason", reason)],
            t.dropped(i),
        );
    }
    e.family(
        "gtmd_dnstap_connected",
        Kind::Gauge,
        "1 while the dnstap socket's reader is connected (or the file is open).",
    );
    e.sample("gtmd_dnstap_connected", "", &[], t.connected.load(Relaxed));
}

/// Each AF_XDP socket's frames (`io = "xdp"`): gtmd's counts and the kernel's
/// `XDP_STATISTICS`, as the shard last read them (about once a second).
fn xdp(e: &mut Expo, sockets: &[Arc<XdpStats>]) {
    let ours = [
        (
            "received",
            "Frames the shard took from its AF_XDP socket (UDP to a listener, redirected by \
             gtmd's XDP program).",
        ),
        (
            "answered",
            "Answer frames the shard gave its AF_XDP socket to send.",
        ),
    ];
    for (name, help) in ours {
        let fam = format!("gtmd_xdp_{name}");
        e.family(&fam, Kind::Counter, help);
        for s in sockets {
            let v = if name == "received" {
                &s.received
            } else {
                &s.answered
            };
            e.sample(
                &fam,
                "_total",
                &[("shard", &s.shard.to_string())],
                v.load(Relaxed),
            );
        }
    }
    for (i, (name, help)) in XDP_KERNEL.iter().enumerate() {
        let name = format!("gtmd_xdp_{name}");
        let help = format!("{help} (the kernel's XDP_STATISTICS, read about once a second)");
        e.family(&name, Kind::Counter, &help);
        for s in sockets {
            let v = s.kernel[i].load(Relaxed);
            e.sample(&name, "_total", &[("shard", &s.shard.to_string())], v);
        }
    }
}

/// Address and pool state and transitions.
fn health(e: &mut Expo, w: &Writer) {
    let m = &w.snapshot().model;
    let (addr_up, pool_up, _) = w.state();
    let t = w.transitions();
    e.family(
        "gtmd_address_up",
        Kind::Gauge,
        "Whether the address is up (health checks, mode and operator overrides applied).",
    );
    for (a, &up) in m.addresses.iter().zip(addr_up) {
        e.sample("gtmd_address_up", "", &[("address", &a.name)], up as u8);
    }
    e.family(
        "gtmd_address_transitions",
        Kind::Counter,
        "Times the address went up or down.",
    );
    for a in &m.addresses {
        let v = t.addresses.get(&a.name).copied().unwrap_or(0);
        e.sample(
            "gtmd_address_transitions",
            "_total",
            &[("address", &a.name)],
            v,
        );
    }
    e.family(
        "gtmd_pool_up",
        Kind::Gauge,
        "Whether the pool's health condition holds.",
    );
    for (p, &up) in m.pools.iter().zip(pool_up) {
        e.sample("gtmd_pool_up", "", &[("pool", &p.name)], up as u8);
    }
    e.family(
        "gtmd_pool_transitions",
        Kind::Counter,
        "Times the pool's health condition started or stopped holding.",
    );
    for p in &m.pools {
        let v = t.pools.get(&p.name).copied().unwrap_or(0);
        e.sample("gtmd_pool_transitions", "_total", &[("pool", &p.name)], v);
    }
}

/// GSLB answers per access domain and per line (`[metrics] per-domain`).
fn per_domain(e: &mut Expo, s: &Series, counters: &[Arc<Counters>]) {
    let sum = |f: &dyn Fn(&Counters) -> u64| -> u64 { counters.iter().map(|c| f(c)).sum() };
    e.family(
        "gtmd_access_domain_answers",
        Kind::Counter,
        "GSLB selections answered per access domain (the last one a query's answer went \
         through); beyond [metrics] max-series, access_domain=\"_other\".",
    );
    for (i, (name, ty)) in s.ad_names.iter().enumerate() {
        let v = sum(&|c| c.domain(i));
        e.sample(
            "gtmd_access_domain_answers",
            "_total",
            &[("access_domain", name), ("type", ty)],
            v,
        );
    }
    let other = sum(&|c| c.domain(s.cap()));
    e.sample(
        "gtmd_access_domain_answers",
        "_total",
        &[("access_domain", OTHER), ("type", OTHER)],
        other,
    );
    e.family(
        "gtmd_line_answers",
        Kind::Counter,
        "GSLB selections answered per line of the asker; beyond [metrics] max-series, line=\"_other\".",
    );
    for (i, name) in s.line_names.iter().enumerate() {
        let v = sum(&|c| c.line(i));
        e.sample("gtmd_line_answers", "_total", &[("line", name)], v);
    }
    let other = sum(&|c| c.line(s.cap()));
    e.sample("gtmd_line_answers", "_total", &[("line", OTHER)], other);
}

/// The pools each route answers from now, for access domains with a series of their own
/// (at most `max-series` routes).
fn active_pools(e: &mut Expo, s: &Series, w: &Writer) {
    let snap = w.snapshot();
    let m = &snap.model;
    let (_, pool_up, active) = w.state();
    e.family(
        "gtmd_route_active_pool",
        Kind::Gauge,
        "1 for each pool a route (access domain, lines) answers from now; pool=\"_fallback\" \
         when none is healthy. Only per-domain access domains, at most max-series routes.",
    );
    // Slots, not names: an access domain past the cap has the overflow slot. Integer
    // tests only, under the writer lock, even with millions of routes.
    let slots = &snap.metric_series.ads;
    let mut shown = 0;
    for (si, slot) in m.slots.iter().enumerate() {
        if shown >= s.cap() {
            break;
        }
        if slots
            .get(slot.ad as usize)
            .is_none_or(|&x| x as usize >= s.cap())
        {
            continue;
        }
        shown += 1;
        let ad = &m.access_domains[slot.ad as usize];
        let pools: Vec<usize> = match ad.policy {
            PoolPolicy::GlobalAvailability { .. } | PoolPolicy::Nearest => {
                let a = active.get(si).copied().unwrap_or(NO_POOL);
                (a != NO_POOL).then_some(a as usize).into_iter().collect()
            }
            _ => snap.slot_pools(si).filter(|&p| pool_up[p]).collect(),
        };
        let name = display_name(&ad.name);
        let lines = snap.slot_key(si).1;
        let mut labels = [
            ("access_domain", name.as_str()),
            ("type", type_name(ad.rtype)),
            ("lines", lines.as_str()),
            ("pool", "_fallback"),
        ];
        if pools.is_empty() {
            e.sample("gtmd_route_active_pool", "", &labels, 1);
        }
        for p in pools {
            labels[3].1 = &m.pools[p].name;
            e.sample("gtmd_route_active_pool", "", &labels, 1);
        }
    }
}

/// Health check results and latency, per address, template and vantage point.
fn checks(e: &mut Expo, known: &[String], reports: &HashMap<String, Vec<Report>>) {
    let rows: Vec<(&str, &Report)> = known
        .iter()
        .filter_map(|a| reports.get(a).map(|v| (a.as_str(), v)))
        .flat_map(|(a, v)| v.iter().map(move |r| (a, r)))
        .collect();
    let vantage = |r: &Report| r.source.clone().unwrap_or_else(|| "default".into());
    e.family(
        "gtmd_health_check_up",
        Kind::Gauge,
        "Whether the check passes after its thresholds (down-after, up-after).",
    );
    for (a, r) in &rows {
        let v = vantage(r);
        let labels = [
            ("address", *a),
            ("check", r.check.as_str()),
            ("vantage", v.as_str()),
        ];
        e.sample("gtmd_health_check_up", "", &labels, r.up as u8);
    }
    e.family(
        "gtmd_health_checks",
        Kind::Counter,
        "Health checks run, by result (passed, failed).",
    );
    for (a, r) in &rows {
        let v = vantage(r);
        for (result, n) in [("passed", r.stats.passed), ("failed", r.stats.failed)] {
            let labels = [
                ("address", *a),
                ("check", r.check.as_str()),
                ("vantage", v.as_str()),
                ("result", result),
            ];
            e.sample("gtmd_health_checks", "_total", &labels, n);
        }
    }
    let name = "gtmd_health_check_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "How long passed health checks took, seconds.",
    );
    for (a, r) in &rows {
        let v = vantage(r);
        let mut cumulative = 0;
        let les = BUCKETS
            .iter()
            .map(|&b| float(b))
            .chain(["+Inf".to_string()]);
        for (le, n) in les.zip(r.stats.buckets) {
            cumulative += n;
            let labels = [
                ("address", *a),
                ("check", r.check.as_str()),
                ("vantage", v.as_str()),
                ("le", le.as_str()),
            ];
            e.sample(name, "_bucket", &labels, cumulative);
        }
        let labels = [
            ("address", *a),
            ("check", r.check.as_str()),
            ("vantage", v.as_str()),
        ];
        e.sample(name, "_sum", &labels, float(r.stats.sum));
        e.sample(name, "_count", &labels, r.stats.passed);
    }
}
