//! The control path: load and compile the configuration, publish the snapshot, start the
//! shards, then wait for signals. SIGHUP recompiles off the hot path and swaps the snapshot
//! whole (a bad configuration is logged and the old snapshot keeps serving); SIGTERM/SIGINT
//! stop the shards (each notices within [`crate::shard::WAIT_BOUND`]) and log a summary.

pub mod api;
mod contain;
pub mod crud;
pub mod ctl;
mod ctl_text;
pub mod dnstap;
pub mod fleet;
pub mod http;
mod hugepages;
pub mod log;
pub mod metrics;
mod notify;
pub mod ops;
pub mod state;

use contain::contained;
pub use contain::install_panic_hook;
use ops::Reloader;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{debug, error, info, warn};

use crate::compile::{compile, compile_with, Cpus};
use crate::config::{Config, ConfigError, ConfigErrors, Control, IoMode, Origin, Overlay, Shards};
use crate::health::{alerts, log_changes, SharedWriter};
use crate::shard::{self, Counters, Published, ShardCtx, Summary, TcpLimits};

/// Options of `gtmd run` that override the file.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Config file; `None` serves the embedded default.
    pub config: Option<PathBuf>,
    /// Replaces `server.listen` when not empty.
    pub listen: Vec<SocketAddr>,
    /// Replaces `server.io`.
    pub io: Option<IoMode>,
    /// Replaces `server.shards` with this many shards (unpinned count on CPUs 0..n).
    pub shards: Option<usize>,
    /// Replaces `control.listen` (`Some(None)`: off).
    pub control: Option<Option<SocketAddr>>,
    /// Replaces `control.token-file`.
    pub control_token_file: Option<PathBuf>,
    /// Replaces `[fleet]`: an edge keeps its own file's section across epochs.
    pub fleet: Option<crate::config::fleet::Fleet>,
}

/// Why `gtmd` exits non-zero.
#[derive(Debug)]
pub enum ExitError {
    /// The configuration is invalid (exit 1).
    Config(ConfigErrors),
    /// Start-up failed: a socket could not be bound, a thread not started (exit 2).
    Startup(String),
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Startup(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ExitError {}

/// Loads the configuration `gtmd run`/`check` would use.
pub fn load(path: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded(),
    }
}

/// `gtmd check`: load and compile, nothing more.
pub fn check(path: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    contained(&source_name(path), || {
        let cfg = load(path)?;
        compile(&cfg, 1)?;
        Ok(cfg)
    })
}

/// How a configuration source is named in messages.
fn source_name(path: Option<&PathBuf>) -> String {
    path.map_or(crate::config::DEFAULT_CONFIG_NAME.into(), |p| {
        p.display().to_string()
    })
}

/// Applies the command line over the file; `--control` beyond loopback is held to the
/// file's rule (it needs `token-file`).
fn apply_overrides(cfg: &mut Config, opts: &RunOptions) -> Result<(), ConfigErrors> {
    if !opts.listen.is_empty() {
        cfg.server.listen = opts.listen.clone();
    }
    if let Some(io) = opts.io {
        cfg.server.io = io;
    }
    if let Some(f) = &opts.control_token_file {
        let mut errs = Vec::new();
        let at = Origin::new(&"--control-token-file".into(), 1);
        cfg.control.tokens = crate::config::control::read_tokens(f, at, &mut errs);
        cfg.control.token_file = Some(f.clone());
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
    }
    if let Some(c) = opts.control {
        cfg.control.listen = c;
        cfg.control.explicit = true;
    }
    if opts.control.is_some() || opts.control_token_file.is_some() {
        if let Some(e) = cfg.control.exposure_error() {
            return Err(ConfigErrors(vec![ConfigError::new(
                Origin::new(&cfg.source, 1),
                "--control",
                e,
            )]));
        }
    }
    if let Some(f) = &opts.fleet {
        cfg.fleet = Some(f.clone());
    }
    if let Some(n) = opts.shards {
        let cpus = crate::sys::usable_cpus();
        cfg.server.shards = Shards::Cpus((0..n).map(|i| cpus[i % cpus.len()]).collect());
    }
    Ok(())
}

struct Running {
    stop: Arc<AtomicBool>,
    shards: usize,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<Arc<Counters>>,
    /// Every shard thread's query-log ring (`[dnstap]`), and the writer draining them.
    rings: Vec<Arc<shard::tap::Ring>>,
    dnstap: Option<dnstap::Writer>,
    /// The attached XDP program (`io = "xdp"`), detached at shutdown.
    xdp: Option<shard::xdp::Attached>,
    /// The counters of each AF_XDP socket (none without XDP).
    xdp_stats: Vec<Arc<shard::xdp::Stats>>,
}

/// `gtmd run`: serves until SIGTERM/SIGINT.
pub fn run(opts: RunOptions) -> Result<(), ExitError> {
    let t0 = Instant::now();
    let (opts, cfg, mut snap, edge) = boot_config(opts)?;
    let metrics = Arc::new(metrics::Metrics::new(&cfg.metrics, t0));
    metrics.assign(&mut snap, &cfg.metrics);
    let snap = Arc::new(snap);
    // The control listener first: a port in use fails start-up before any DNS socket.
    let control_listener = bind_control(&cfg.control)?;
    // The query log's file is created (or its reader tried) before any DNS socket.
    let tap = cfg.dnstap.as_ref().map(dnstap::open).transpose();
    let tap = tap.map_err(ExitError::Startup)?;
    let (writer, changed) = restore_state(&snap, &cfg.control);
    let published: Published = Arc::new(ArcSwap::new(snap));
    // Signals are registered before the shards start so none is missed.
    let signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| ExitError::Startup(format!("cannot install signal handlers: {e}")))?;
    let events = Events::start(signals)?;
    alerts::set_origin(cfg.server.identity.as_deref(), 1);
    alerts::configure(cfg.alerts.clone())
        .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let reports: crate::probe::Reports = Default::default();
    let (reload_tx, reload_rx) = crossbeam::channel::unbounded();
    let (round_tx, round_rx) = crossbeam::channel::bounded(1);
    let shared = fleet::shared_health(&edge);
    let prober = spawn_prober(
        published.load_full(),
        crate::probe::Sinks {
            writer: writer.clone(),
            reports: reports.clone(),
            shared: shared.clone(),
        },
        reload_rx,
        round_tx,
        stop.clone(),
    )?;
    let mut running = start(&cfg, &published, stop.clone(), || {
        // Sockets are bound (queries queue in their buffers); serve once health is known.
        await_first_round(&cfg, &round_rx);
    })
    .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
    running.threads.push(prober);
    metrics.serving(running.counters.clone());
    metrics.xdp(running.xdp_stats.clone());
    if let Some(t) = tap {
        let w = t.spawn(running.rings.clone());
        let w = w.map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")));
        let w = w.inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
        metrics.tapping(w.stats.clone());
        running.dnstap = Some(w);
    }
    let generation = Arc::new(AtomicU64::new(1));
    let ctx = Arc::new(api::ApiContext {
        writer: writer.clone(),
        generation: generation.clone(),
        reports,
        shared,
        settings: ArcSwap::from_pointee(api::Settings::of(&cfg.control)),
        metrics: metrics.clone(),
        ops: ops::Ops::new(
            events.commands_tx.clone(),
            t0,
            opts.config.clone(),
            running.shards,
        ),
    });
    // Decided before anything (a fleet epoch, an API change) can reload: a reload turns
    // huge pages off for a while, which would make the probe say no for good.
    let collapse = crate::sys::can_collapse();
    let persister = state::spawn_writer(ctx.clone(), changed, stop.clone())
        .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))
        .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
    running.threads.push(persister);
    let mut plane = open_control_plane(ctx, control_listener, &cfg.control, &stop)?;
    notify::send("READY=1");
    notify::send(&notify::status(
        &published.load(),
        1,
        notify::LastReload::None,
    ));
    let watchdog = notify::spawn_watchdog(running.counters.clone(), stop.clone())
        .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))
        .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
    running.threads.extend(watchdog);
    start_fleet(edge, &events, &plane.ctx, &mut running)?;
    info!(
        shards = running.shards,
        threads = running.threads.len(),
        reload_pages = if collapse {
            "small, collapsed after"
        } else {
            "as the system gives"
        },
        "ready"
    );
    let serving = Serving {
        opts: &opts,
        published: &published,
        writer: &writer,
        reload_tx: &reload_tx,
        generation: &generation,
        metrics: &metrics,
    };
    let last = serving.until_stopped(&events, cfg, &mut plane);
    events.close();
    shut_down(running, plane, last);
    Ok(())
}

/// What the control thread waits for: signals (forwarded from a thread of their own) and
/// the control API's commands, which run here one at a time like a SIGHUP reload.
struct Events {
    signals: crossbeam::channel::Receiver<i32>,
    handle: signal_hook::iterator::Handle,
    commands: crossbeam::channel::Receiver<ops::Command>,
    commands_tx: crossbeam::channel::Sender<ops::Command>,
}

impl Events {
    fn start(mut signals: signal_hook::iterator::Signals) -> Result<Self, ExitError> {
        let (tx, rx) = crossbeam::channel::unbounded();
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))?;
        let (commands_tx, commands) = crossbeam::channel::bounded(ops::COMMAND_QUEUE);
        Ok(Self {
            signals: rx,
            handle,
            commands,
            commands_tx,
        })
    }

    /// Ends the signal thread.
    fn close(self) {
        self.handle.close();
    }
}

/// An edge's `[fleet]` and the epoch it booted from.
type EdgeBoot = Option<(crate::config::fleet::Fleet, Option<fleet::Lkg>)>;

/// The configuration to start with: with `[fleet]` in the file, the last-known-good
/// epoch when the state folder has one that loads (else the file, with an error logged).
fn boot_config(
    opts: RunOptions,
) -> Result<(RunOptions, Config, crate::tables::Snapshot, EdgeBoot), ExitError> {
    let Some((edge_opts, f, lkg)) = fleet::boot(&opts) else {
        let (cfg, snap) = first_config(&opts)?;
        return Ok((opts, cfg, snap, None));
    };
    if let Some(l) = &lkg {
        match first_config(&edge_opts) {
            Ok((cfg, snap)) => {
                info!(epoch = l.epoch, digest = %l.digest, "fleet: serving the last-known-good epoch");
                return Ok((edge_opts, cfg, snap, Some((f, lkg))));
            }
            Err(e) => error!(
                epoch = l.epoch,
                "fleet: the last-known-good epoch does not load ({e}): serving the local file"
            ),
        }
    }
    let local = RunOptions {
        fleet: Some(f.clone()),
        ..opts
    };
    let (cfg, snap) = first_config(&local)?;
    Ok((local, cfg, snap, Some((f, None))))
}

/// Starts the `fleet` thread of an edge.
fn start_fleet(
    edge: EdgeBoot,
    events: &Events,
    ctx: &Arc<api::ApiContext>,
    running: &mut Running,
) -> Result<(), ExitError> {
    let Some((f, lkg)) = edge else {
        return Ok(());
    };
    info!(edge = %f.edge, nats = ?f.nats, state_dir = %f.state_dir.display(), "fleet: this node is an edge");
    let ops = ctx.clone();
    let t = fleet::spawn(
        f,
        lkg,
        events.commands_tx.clone(),
        ops,
        running.stop.clone(),
    )
    .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))
    .inspect_err(|_| running.stop.store(true, Ordering::Relaxed))?;
    running.threads.push(t);
    Ok(())
}

/// Loads, overrides and compiles the configuration to start with (generation 1).
fn first_config(opts: &RunOptions) -> Result<(Config, crate::tables::Snapshot), ExitError> {
    let t0 = Instant::now();
    let (cfg, snap) = contained(&source_name(opts.config.as_ref()), || {
        let mut cfg = load(opts.config.as_ref())?;
        apply_overrides(&mut cfg, opts)?;
        let snap = compile(&cfg, 1)?;
        Ok((cfg, snap))
    })
    .map_err(ExitError::Config)?;
    log::apply(&cfg.log);
    info!(
        config = %cfg.source,
        generation = 1,
        zones = snap.names.zones.len(),
        names = snap.names.nodes.len(),
        answers = snap.names.answers.len(),
        ms = t0.elapsed().as_millis() as u64,
        "configuration compiled"
    );
    Ok((cfg, snap))
}

/// The health writer, starting from the state file (`state.rs`): overrides, without
/// those whose address the configuration no longer has (logged, and dropped from the
/// file), and the probe verdicts and non-preemptive active pools saved within
/// `control.state-max-age`. Also the channel on which it reports changes.
fn restore_state(
    snap: &Arc<crate::tables::Snapshot>,
    c: &Control,
) -> (SharedWriter, crossbeam::channel::Receiver<()>) {
    let state_file = c.state_file.as_deref();
    let loaded = state::load(state_file, c.state_max_age);
    let (mut overrides, stale) = known_overrides(snap, loaded.overrides);
    let ended = expired_while_stopped(&mut overrides, loaded.expires);
    let r = &loaded.restored;
    let mut w = crate::health::Writer::restore(snap.clone(), overrides, r);
    w.restore_expiries(ended.1);
    if !ended.0.is_empty() && stale.is_empty() {
        if let Some(p) = state_file {
            if let Err(e) = state::save(p, &state::Capture::of(&w, 1)) {
                warn!(file = %p.display(), "cannot persist overrides: {e}");
            }
        }
    }
    let (tx, rx) = crossbeam::channel::bounded(1);
    w.set_notify(tx);
    if !r.probe.is_empty() || !r.active.is_empty() {
        let down = w.probes().iter().filter(|&&up| !up).count();
        info!(
            probe_down = down,
            active_pools = r.active.len(),
            "health and active pools restored from the state file"
        );
    }
    report_stale(&stale, state_file, &w, 1);
    if !w.overrides().is_empty() {
        info!(count = w.overrides().len(), "operator overrides restored");
    }
    (Arc::new(Mutex::new(w)), rx)
}

/// Removes from `overrides` those whose time ran out while gtmd was stopped (logged);
/// returns their names, and the end times of the rest.
fn expired_while_stopped(
    overrides: &mut HashMap<String, crate::config::gslb::Mode>,
    mut expires: HashMap<String, u64>,
) -> (Vec<String>, HashMap<String, u64>) {
    let now = ops::unix_ms();
    let mut ended: Vec<String> = expires
        .iter()
        .filter(|(_, &t)| t <= now)
        .map(|(n, _)| n.clone())
        .collect();
    ended.sort();
    for n in &ended {
        expires.remove(n);
        if overrides.remove(n).is_some() {
            info!(address = %n, "operator override expired while stopped: back to the configured mode");
        }
    }
    (ended, expires)
}

/// `overrides` without those whose address `snap` does not have, and those, sorted.
#[allow(clippy::type_complexity)]
fn known_overrides(
    snap: &crate::tables::Snapshot,
    mut overrides: HashMap<String, crate::config::gslb::Mode>,
) -> (
    HashMap<String, crate::config::gslb::Mode>,
    Vec<(String, crate::config::gslb::Mode)>,
) {
    let known: HashSet<&str> = snap
        .model
        .addresses
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    let mut stale: Vec<(String, crate::config::gslb::Mode)> = overrides
        .iter()
        .filter(|(n, _)| !known.contains(n.as_str()))
        .map(|(n, &m)| (n.clone(), m))
        .collect();
    stale.sort_by(|a, b| a.0.cmp(&b.0));
    for (n, _) in &stale {
        overrides.remove(n);
    }
    (overrides, stale)
}

/// Starts the prober thread (`probe::run`).
fn spawn_prober(
    snap: Arc<crate::tables::Snapshot>,
    sinks: crate::probe::Sinks,
    reloads: crossbeam::channel::Receiver<Arc<crate::tables::Snapshot>>,
    first_round: crossbeam::channel::Sender<()>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ExitError> {
    std::thread::Builder::new()
        .name("prober".into())
        .spawn(move || {
            if let Err(e) = crate::probe::run(snap, sinks, reloads, first_round, stop) {
                error!("prober failed: {e}");
            }
        })
        .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))
}

/// With `probe-before-ready` and health checks configured, waits for the prober's first
/// round, bounded by the longest check timeout (every check has one) plus a second.
fn await_first_round(cfg: &Config, round: &crossbeam::channel::Receiver<()>) {
    if !cfg.server.probe_before_ready || cfg.gslb.checks.is_empty() {
        return;
    }
    let bound = cfg
        .gslb
        .checks
        .iter()
        .map(|c| c.timeout)
        .max()
        .unwrap_or_default()
        + Duration::from_secs(1);
    match round.recv_timeout(bound) {
        Ok(()) => info!("first round of health checks done"),
        Err(_) => warn!("first round of health checks not done in {bound:?}: serving"),
    }
}

/// The control API, serving `listener` when there is one.
fn open_control_plane(
    ctx: Arc<api::ApiContext>,
    listener: Option<std::net::TcpListener>,
    c: &Control,
    stop: &Arc<AtomicBool>,
) -> Result<ControlPlane, ExitError> {
    let mut plane = ControlPlane {
        ctx,
        server: None,
        stop: stop.clone(),
    };
    if c.listen.is_some() && c.state_file.is_none() {
        info!("control.state-file is not set: operator overrides last until restart");
    }
    if let Some(l) = listener {
        plane
            .serve(l, c)
            .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
    }
    Ok(plane)
}

/// What the signal loop works with once gtmd serves.
struct Serving<'a> {
    opts: &'a RunOptions,
    published: &'a Published,
    writer: &'a SharedWriter,
    /// New snapshots for the prober.
    reload_tx: &'a crossbeam::channel::Sender<Arc<crate::tables::Snapshot>>,
    /// The generation the control API reports.
    generation: &'a AtomicU64,
    /// Reload counts and the per-domain series of each new snapshot.
    metrics: &'a metrics::Metrics,
}

impl Serving<'_> {
    /// Reloads on SIGHUP, runs the control API's commands and ends timed overrides, until
    /// SIGTERM or SIGINT; returns the last generation.
    fn until_stopped(&self, events: &Events, current: Config, plane: &mut ControlPlane) -> u64 {
        let mut live = Live {
            serving: self,
            path: self.opts.config.clone(),
            current,
            plane,
            generation: 1,
        };
        loop {
            let wait = live.until_next_expiry();
            crossbeam::select! {
                recv(events.signals) -> sig => match sig {
                    Ok(SIGHUP) => {
                        let _ = live.reload("SIGHUP", &Overlay::new(), &mut |_| Ok(()));
                    }
                    _ => return live.generation,
                },
                recv(events.commands) -> cmd => {
                    if let Ok(cmd) = cmd {
                        cmd(&mut live);
                    }
                }
                default(wait) => {}
            }
            live.expire_overrides();
        }
    }
}

/// The control thread's state once serving: the one place a configuration changes, by
/// SIGHUP or by the control API (its commands run here, one at a time).
struct Live<'s, 'a> {
    serving: &'s Serving<'a>,
    /// The config file (an edge's moves to each epoch it applies).
    path: Option<PathBuf>,
    current: Config,
    plane: &'s mut ControlPlane,
    generation: u64,
}

impl Live<'_, '_> {
    /// How long until the next timed override ends (at most a second).
    fn until_next_expiry(&self) -> Duration {
        let w = self.serving.writer.lock().expect("writer lock");
        let next = w.next_expiry();
        drop(w);
        let second = Duration::from_secs(1);
        next.map_or(second, |t| {
            Duration::from_millis(t.saturating_sub(ops::unix_ms())).min(second)
        })
    }

    /// Clears the overrides whose time is up, logs what that changed, persists the rest.
    fn expire_overrides(&self) {
        let mut w = self.serving.writer.lock().expect("writer lock");
        let ended = w.expire(ops::unix_ms());
        if ended.is_empty() {
            return;
        }
        for (name, changes) in &ended {
            info!(address = %name, "operator override expired: back to the configured mode");
            log_changes(changes);
        }
        let capture = state::Capture::of(&w, self.generation);
        drop(w);
        if let Some(p) = self.current.control.state_file.as_deref() {
            if let Err(e) = state::save(p, &capture) {
                warn!(file = %p.display(), "cannot persist overrides: {e}");
            }
        }
    }
}

impl ops::Reloader for Live<'_, '_> {
    fn config_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reloads from `path` (an edge's new epoch), which becomes the config file if it
    /// serves.
    fn reload_from(&mut self, path: &Path, trigger: &'static str) -> Result<u64, ops::Refusal> {
        let old = self.path.replace(path.to_path_buf());
        let r = self.reload(trigger, &Overlay::new(), &mut |_| Ok(()));
        if r.is_err() {
            self.path = old;
        }
        r
    }

    fn current(&self) -> &Config {
        &self.current
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    /// Reloads the configuration (as SIGHUP does); a new one goes to the prober, its
    /// `[alerts]` and `[control]` apply; the outcome is kept for `GET /v1/status`.
    fn reload(
        &mut self,
        trigger: &'static str,
        overlay: &Overlay,
        commit: &mut ops::Commit<'_>,
    ) -> Result<u64, ops::Refusal> {
        let s = self.serving;
        notify::send("RELOADING=1");
        let before = (self.current.control.clone(), self.current.alerts.clone());
        let began = Instant::now();
        let at = self.path.as_ref();
        let r = reload(
            s,
            at,
            &mut self.current,
            &mut self.generation,
            overlay,
            commit,
        );
        // A change that did not validate is the client's (422), not a failed reload: it
        // is neither counted nor shown as the last reload.
        let counted = r.is_ok() || trigger != "change";
        if s.opts.config.is_some() && counted {
            s.metrics.reloaded(r.is_ok(), began.elapsed());
        }
        if r.is_ok() {
            // First, so that what the other threads log about the reload is in the new format.
            log::apply(&self.current.log);
            let _ = s.reload_tx.send(s.published.load_full());
            if before.1 != self.current.alerts {
                if let Err(e) = alerts::configure(self.current.alerts.clone()) {
                    error!("reload: cannot start the alerts thread: {e}");
                }
            }
            self.plane.reconfigure(&before.0, &self.current.control);
        }
        // Recorded before the generation is: whoever sees the new generation sees it.
        let ctx = self.plane.ctx.clone();
        if counted {
            ctx.ops
                .record(trigger, &r, self.generation, began.elapsed());
        }
        s.generation.store(self.generation, Ordering::Relaxed);
        notify::send("READY=1");
        if s.opts.config.is_some() && counted {
            let last = notify::LastReload::now(r.is_ok());
            notify::send(&notify::status(&s.published.load(), self.generation, last));
        }
        r.map(|()| self.generation)
    }
}

/// Stops the shards, the prober and the control API, waits for their threads, and logs
/// the summary of the shards' counters.
fn shut_down(running: Running, mut plane: ControlPlane, generation: u64) {
    notify::send("STOPPING=1");
    info!("stopping");
    running.stop.store(true, Ordering::Relaxed);
    if let Some(server) = plane.server.take() {
        server.stop();
    }
    for t in running.threads {
        let _ = t.join();
    }
    if let Some(x) = running.xdp {
        x.detach();
    }
    // The shards have stopped: the writer drains their rings and ends the stream.
    if let Some(w) = running.dnstap {
        w.stop();
    }
    if let Err(e) = state::save_now(&plane.ctx) {
        warn!("cannot save the state file at shutdown: {e}");
    }
    let mut s = Summary::default();
    for c in &running.counters {
        c.add_to(&mut s);
    }
    info!(generation, "shutdown summary: {s}");
}

/// Rewrites the state file without the persisted overrides dropped because their address
/// is gone from the configuration, then logs them.
fn report_stale(
    stale: &[(String, crate::config::gslb::Mode)],
    state_file: Option<&Path>,
    w: &crate::health::Writer,
    generation: u64,
) {
    if stale.is_empty() {
        return;
    }
    if let Some(p) = state_file {
        if let Err(e) = state::save(p, &state::Capture::of(w, generation)) {
            warn!(file = %p.display(), "cannot persist overrides: {e}");
        }
    }
    for (name, mode) in stale {
        warn!(
            address = %name,
            mode = api::mode_name(*mode),
            "operator override dropped: the configuration has no address of that name \
             (it will not come back if the name does)"
        );
    }
}

/// Binds the control API's listener (before any DNS socket, so a port in use fails
/// start-up before anything is served). Only a `listen` given explicitly (file or
/// `--control`) is fatal when it cannot be bound; the default is skipped with a warning.
fn bind_control(c: &Control) -> Result<Option<std::net::TcpListener>, ExitError> {
    let Some(addr) = c.listen else {
        return Ok(None);
    };
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(Some(l)),
        Err(e) if c.explicit => Err(ExitError::Startup(format!(
            "cannot bind control API {addr}: {e}"
        ))),
        Err(e) => {
            warn!(addr = %addr, "control API not started: {e}");
            Ok(None)
        }
    }
}

/// The control API as it runs: what it serves, and its listener if any.
struct ControlPlane {
    ctx: Arc<api::ApiContext>,
    server: Option<http::Server>,
    stop: Arc<AtomicBool>,
}

impl ControlPlane {
    /// Starts serving `listener` and says so.
    fn serve(&mut self, listener: std::net::TcpListener, c: &Control) -> Result<(), ExitError> {
        let server = api::start(listener, self.ctx.clone(), self.stop.clone())
            .map_err(|e| ExitError::Startup(format!("cannot start the control API: {e}")))?;
        let addr = server.addr();
        let names: Vec<&str> = c.tokens.iter().map(|t| t.name.as_str()).collect();
        info!(
            addr = %addr,
            tls = c.tls.is_some(),
            tokens = ?names,
            "control API listening"
        );
        if c.tokens.is_empty() {
            info!("control API is read-only: set [control] token-file to allow changes");
        }
        if !addr.ip().is_loopback() && c.tls.is_none() {
            warn!(addr = %addr, "control API beyond loopback without TLS: tokens cross the network in clear text (set tls-cert and tls-key)");
        }
        self.server = Some(server);
        Ok(())
    }

    /// Applies a reloaded `[control]`: tokens, allowed hosts, TLS and state file at once
    /// (the next request sees them), the listener by binding the new address and only
    /// then closing the old one (a failed bind keeps the old one and says so).
    fn reconfigure(&mut self, old: &Control, new: &Control) {
        if old.tokens != new.tokens {
            let names: Vec<&str> = new.tokens.iter().map(|t| t.name.as_str()).collect();
            info!(tokens = ?names, "reload: control API tokens changed");
        }
        if old.allowed_hosts != new.allowed_hosts {
            info!(allowed_hosts = ?new.allowed_hosts, "reload: control.allowed-hosts changed");
        }
        let tls_id = |c: &Control| {
            c.tls
                .as_ref()
                .map(|t| (t.cert.clone(), t.key.clone(), t.chain.clone()))
        };
        if tls_id(old) != tls_id(new) {
            match &new.tls {
                Some(t) => {
                    info!(cert = %t.cert.display(), "reload: control API TLS certificate (re)loaded")
                }
                None => info!("reload: control API TLS off"),
            }
        }
        if old.state_file != new.state_file {
            if let Some(p) = &new.state_file {
                let c = {
                    let w = self.ctx.writer.lock().expect("writer lock");
                    state::Capture::of(&w, self.ctx.generation.load(Ordering::Relaxed))
                };
                if let Err(e) = state::save(p, &c) {
                    warn!(file = %p.display(), "cannot persist overrides: {e}");
                }
            }
            info!(state_file = ?new.state_file, "reload: control.state-file changed");
        }
        self.ctx.settings.store(Arc::new(api::Settings::of(new)));
        let bound = self.server.as_ref().map(http::Server::addr);
        if new.listen == old.listen && bound.is_some()
            || new.listen.is_some() && new.listen == bound
        {
            return;
        }
        match new.listen {
            None => {
                if let Some(s) = self.server.take() {
                    s.stop();
                    info!("reload: control API stopped (control.listen = \"off\")");
                }
            }
            Some(addr) => match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    if let Some(s) = self.server.take() {
                        s.stop();
                    }
                    if let Err(e) = self.serve(l, new) {
                        error!("reload: {e}");
                    }
                }
                Err(e) => error!(
                    "reload: cannot bind control API {addr}: {e}; still {}",
                    bound.map_or("not listening".to_string(), |b| format!("on {b}"))
                ),
            },
        }
    }
}

/// Frees a replaced snapshot off the data path. Each shard's cache drops its reference at
/// its next query, and whoever drops the last one frees the snapshot: for a million access
/// domains ~1.4 GiB of small allocations, a pause a shard must not take. So a helper thread
/// (niced, so shards keep their CPUs) waits, bounded, until its reference is the last and
/// frees it; an idle shard still holding one after that frees it at its next query.
fn retire(old: Arc<crate::tables::Snapshot>, generation: u64) {
    let spawned = std::thread::Builder::new()
        .name("retire".into())
        .spawn(move || {
            crate::sys::lower_thread_priority();
            let t0 = Instant::now();
            while Arc::strong_count(&old) > 1 && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(2));
            }
            let held = Arc::strong_count(&old) > 1;
            drop(old);
            crate::sys::return_freed_memory();
            // The new tables were built on small pages: back onto huge ones, now that
            // the old ones are freed (none of their blocks is collapsed for nothing).
            hugepages::request(generation);
            debug!(
                generation,
                ms = t0.elapsed().as_millis() as u64,
                still_held = held,
                "reload: previous configuration retired"
            );
        });
    if let Err(e) = spawned {
        warn!("cannot start the retire thread ({e}): the old configuration is freed where it is dropped");
    }
}

/// Re-reads the config file (the texts of `overlay` in place of those files), compiles
/// it, lets `commit` accept it, carries health over and publishes it. A configuration that
/// fails is logged line by line and the previous one keeps serving.
fn reload(
    s: &Serving<'_>,
    path: Option<&PathBuf>,
    current: &mut Config,
    generation: &mut u64,
    overlay: &Overlay,
    commit: &mut ops::Commit<'_>,
) -> Result<(), ops::Refusal> {
    let t0 = Instant::now();
    let Some(path) = path else {
        info!("reload: serving the embedded default, nothing to re-read");
        return Err(ops::Refusal::NoFile);
    };
    let mut loaded = t0;
    // What the change left alone is taken from the serving snapshot.
    let prev = s.published.load_full();
    let next = contained(&path.display().to_string(), || {
        let mut cfg = Config::from_file_with(path, overlay)?;
        loaded = Instant::now();
        apply_overrides(&mut cfg, s.opts)?;
        // Beside the serving shards: the compile's helper thread is niced.
        let snap = compile_with(&cfg, *generation + 1, Cpus::Spare, Some(&prev))?;
        Ok((cfg, snap))
    });
    let compiled = Instant::now();
    let (cfg, snap) = match next {
        Ok(n) => n,
        Err(errs) if !overlay.is_empty() => {
            // A change proposed through the API: its client gets the errors (422); the
            // files were not touched, so this is no failed reload of the server's.
            warn!(
                errors = errs.0.len(),
                first = %errs.0.first().map(ToString::to_string).unwrap_or_default(),
                "change refused: it does not validate"
            );
            return Err(ops::Refusal::Invalid(errs));
        }
        Err(errs) => {
            for e in &errs.0 {
                error!("reload rejected: {e}");
            }
            error!(
                generation = *generation,
                errors = errs.0.len(),
                "reload rejected: still serving the previous configuration"
            );
            return Err(ops::Refusal::Invalid(errs));
        }
    };
    if let Err(r) = commit(&cfg) {
        warn!(generation = *generation, "reload not applied: {r}");
        return Err(r);
    }
    warn_restart_only(current, &cfg);
    *generation += 1;
    let names = snap.names.index.len();
    let includes = cfg.gslb.includes;
    let names_kept = Arc::ptr_eq(&snap.names, &prev.names);
    let names_patched = !names_kept && snap.names.patched;
    let ads_compiled = snap.reuse.compiled;
    let lists_compacted = snap.reuse.compacted;
    drop(prev);
    // As the compile: on small pages where they are collapsed after (compile_with).
    crate::sys::small_pages_if_collapsible(|| publish(s, &cfg, snap, *generation));
    let serving = Instant::now();
    info!(
        generation = *generation,
        names,
        ms = (serving - t0).as_millis() as u64,
        load_ms = (loaded - t0).as_millis() as u64,
        compile_ms = (compiled - loaded).as_millis() as u64,
        health_ms = (serving - compiled).as_millis() as u64,
        include_files = includes.files,
        include_reused = includes.reused,
        include_unread = includes.unread,
        names_kept,
        names_patched,
        ads_compiled,
        lists_compacted,
        "reload: new configuration serving"
    );
    *current = cfg;
    Ok(())
}

/// Says which changed settings wait for a restart.
fn warn_restart_only(current: &Config, cfg: &Config) {
    let s = &cfg.server;
    let c = &current.server;
    if s.listen != c.listen || s.shards != c.shards || s.io != c.io || s.xdp != c.xdp {
        warn!(
            "reload: server.listen, server.shards, server.io and [server.xdp] take effect at \
             restart"
        );
    }
    if s.tcp_max_connections != c.tcp_max_connections
        || s.tcp_idle_timeout != c.tcp_idle_timeout
        || s.tcp_io_timeout != c.tcp_io_timeout
        || s.tcp_max_connections_per_source != c.tcp_max_connections_per_source
    {
        warn!("reload: TCP limits take effect at restart");
    }
    if cfg.dnstap != current.dnstap {
        warn!("reload: [dnstap] takes effect at restart");
    }
}

/// Carries health over to `snap` and publishes it; the old snapshot is retired.
fn publish(s: &Serving<'_>, cfg: &Config, mut snap: crate::tables::Snapshot, generation: u64) {
    s.metrics.assign(&mut snap, &cfg.metrics);
    let snap = Arc::new(snap);
    // Health carries over by name and is written into the new snapshot before it
    // is published; the writer lock keeps API overrides from racing the swap.
    let mut w = s.writer.lock().expect("writer lock");
    let known: HashSet<&str> = snap
        .model
        .addresses
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    let stale = w.drop_overrides(|n| known.contains(n));
    drop(known);
    let changes = w.replace(snap.clone());
    let old = s.published.swap(snap);
    report_stale(&stale, cfg.control.state_file.as_deref(), &w, generation);
    drop(w);
    alerts::set_origin(cfg.server.identity.as_deref(), generation);
    log_changes(&changes);
    retire(old, generation);
}

/// Binds every socket (so a bind error fails start-up before any thread runs), calls
/// `before_serving`, then starts one UDP thread and one TCP thread per shard.
fn start(
    cfg: &Config,
    published: &Published,
    stop: Arc<AtomicBool>,
    before_serving: impl FnOnce(),
) -> Result<Running, ExitError> {
    let cpus: Vec<usize> = match &cfg.server.shards {
        Shards::Auto => crate::sys::usable_cpus(),
        Shards::Cpus(c) => c.clone(),
    };
    let n = cpus.len();
    let mut udp: Vec<Vec<std::net::UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
    let mut tcp: Vec<Vec<std::net::TcpListener>> = (0..n).map(|_| Vec::new()).collect();
    let listen = &cfg.server.listen;
    for (i, a) in listen.iter().enumerate() {
        for b in &listen[..i] {
            if a.port() != 0
                && a.port() == b.port()
                && a.is_ipv4() == b.is_ipv4()
                && (a.ip().is_unspecified() || b.ip().is_unspecified())
            {
                return Err(ExitError::Startup(format!(
                    "server.listen: {b} and {a} overlap (a wildcard address covers every \
                     address of its family on the port): list one of them"
                )));
            }
        }
    }
    let lock = shard::socket::BindLock::take(Duration::from_secs(5));
    let mut bound = Vec::new();
    for want in &cfg.server.listen {
        let (u, t, addr) = bind_listener(want, n)?;
        if cfg.rrl.is_some() || n == 1 {
            // RRL's tables are per shard: each source prefix must reach one shard.
            let (p4, p6) = cfg
                .rrl
                .as_ref()
                .map_or((24, 56), |r| (r.ipv4_prefix, r.ipv6_prefix));
            if let Err(e) = shard::socket::steer_by_source(&u, addr.is_ipv6(), p4, p6) {
                warn!(%addr, "rrl: cannot steer queries to shards by source ({e}): each shard limits the share it receives");
            }
        }
        for (dst, sock) in udp.iter_mut().zip(u) {
            dst.push(sock);
        }
        for (dst, sock) in tcp.iter_mut().zip(t) {
            dst.push(sock);
        }
        bound.push(addr);
    }
    drop(lock);
    for addr in &bound {
        info!(udp = %addr, tcp = %addr, "listening");
    }
    let (xdp, mut xsks) = attach_xdp(cfg, &bound, n)?;
    let xdp_stats = xsks.iter().flatten().map(|x| x.stats()).collect();
    before_serving();
    let mut threads = Vec::new();
    let mut counters = Vec::new();
    let mut rings = Vec::new();
    let limits = TcpLimits {
        max_connections: cfg.server.tcp_max_connections,
        max_per_source: cfg.server.tcp_max_connections_per_source,
        idle_timeout: cfg.server.tcp_idle_timeout,
        io_timeout: cfg.server.tcp_io_timeout,
    };
    for (i, ((cpu, u), t)) in cpus.into_iter().zip(udp).zip(tcp).enumerate() {
        let xsk = xsks.get_mut(i).and_then(Option::take);
        let iface = cfg.server.xdp.as_ref().map_or("", |x| x.interface.as_str());
        let backend = shard::make_backend(cfg.server.io, u, xsk.map(|x| (x, iface)))
            .map_err(|e| ExitError::Startup(format!("shard {i}: cannot start UDP I/O: {e}")))?;
        info!(shard = i, cpu, io = backend.name(), "shard starting");
        let series = cfg.metrics.max_series;
        let uc = Arc::new(Counters::new(i, crate::wire::Transport::Udp, series));
        let tc = Arc::new(Counters::new(i, crate::wire::Transport::Tcp, series));
        counters.push(uc.clone());
        counters.push(tc.clone());
        let mut uctx = ShardCtx::new(i, published, uc, stop.clone());
        let mut tctx = ShardCtx::new(i, published, tc, stop.clone());
        if let Some(d) = &cfg.dnstap {
            rings.push(tap(d, i, &mut uctx, false)?);
            rings.push(tap(d, i, &mut tctx, true)?);
        }
        let mut backend = backend;
        threads.push(spawn(format!("shard-{i}-udp"), cpu, move || {
            if let Err(e) = backend.serve(&mut uctx) {
                error!(shard = uctx.id, "UDP I/O failed: {e}");
            }
        })?);
        threads.push(spawn(format!("shard-{i}-tcp"), cpu, move || {
            if let Err(e) = shard::tcp_serve(t, limits, &mut tctx) {
                error!(shard = tctx.id, "TCP failed: {e}");
            }
        })?);
    }
    Ok(Running {
        rings,
        dnstap: None,
        stop,
        shards: n,
        threads,
        counters,
        xdp,
        xdp_stats,
    })
}

/// With `io = "xdp"`: the XDP program attached to `[server.xdp]`'s interface for the
/// listeners `bound`, and an AF_XDP socket per served queue (shard `i` takes queue `i`).
/// When XDP cannot attach (no capability, no such interface or queue), the error is
/// logged and UDP is served on the kernel sockets.
type XdpParts = (
    Option<shard::xdp::Attached>,
    Vec<Option<shard::xdp::Socket>>,
);

fn attach_xdp(cfg: &Config, bound: &[SocketAddr], shards: usize) -> Result<XdpParts, ExitError> {
    if cfg.server.io != IoMode::Xdp {
        return Ok((None, Vec::new()));
    }
    let Some(conf) = &cfg.server.xdp else {
        return Err(ExitError::Startup(
            "io \"xdp\" needs a [server.xdp] table with interface = \"NAME\" in the configuration"
                .into(),
        ));
    };
    match shard::xdp::attach(conf, bound, shards, cfg.server.udp_payload) {
        Ok((a, s)) => Ok((Some(a), s.into_iter().map(Some).collect())),
        Err(e) => {
            error!(
                interface = %conf.interface,
                "xdp: {e}: serving UDP on kernel sockets (recvmmsg/sendmmsg) instead"
            );
            Ok((None, Vec::new()))
        }
    }
}

/// A shard thread's query-log ring, its tap set in `ctx`.
fn tap(
    d: &crate::config::dnstap::Dnstap,
    shard: usize,
    ctx: &mut ShardCtx,
    tcp: bool,
) -> Result<Arc<shard::tap::Ring>, ExitError> {
    use shard::tap::{Ring, Tap, TCP_MESSAGE, TCP_SLOTS, UDP_MESSAGE, UDP_SLOTS};
    let ring = if tcp {
        Ring::new(shard, TCP_SLOTS, TCP_MESSAGE)
    } else {
        Ring::new(shard, UDP_SLOTS, UDP_MESSAGE)
    };
    let ring = Arc::new(ring.map_err(|e| {
        ExitError::Startup(format!("shard {shard}: cannot map the dnstap ring: {e}"))
    })?);
    let logged = shard::tap::Logged {
        queries: d.log_queries,
        responses: d.log_responses,
        responses_with_queries: d.responses_with_queries,
    };
    ctx.set_tap(Tap::new(ring.clone(), d.sample, logged));
    Ok(ring)
}

/// Sockets of one listener for `n` shards: UDP and TCP on the same port. With port 0 the
/// UDP probe picks the port; when that port is taken for TCP, another is tried.
type Bound = (
    Vec<std::net::UdpSocket>,
    Vec<std::net::TcpListener>,
    SocketAddr,
);

/// The message for an address someone else serves.
fn in_use(proto: &str, addr: &SocketAddr, e: &std::io::Error) -> ExitError {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        ExitError::Startup(format!(
            "cannot bind {proto} {addr}: address already in use: another process serves it \
             (or an overlapping address on this port); gtmd does not share an address"
        ))
    } else {
        ExitError::Startup(format!("cannot bind {proto} {addr}: {e}"))
    }
}

/// Binds one listener, called with the [`shard::socket::BindLock`] held: first probes
/// that nobody serves the address (UDP and TCP, see `shard::socket`), then binds the
/// shard sockets with SO_REUSEPORT.
fn bind_listener(want: &SocketAddr, n: usize) -> Result<Bound, ExitError> {
    let attempts = if want.port() == 0 { 16 } else { 1 };
    let mut last = ExitError::Startup(format!("cannot bind {want}"));
    for _ in 0..attempts {
        let probe_udp = shard::socket::probe_udp(want).map_err(|e| in_use("udp", want, &e))?;
        let addr = probe_udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| ExitError::Startup(format!("cannot bind udp {want}: no address")))?;
        match shard::socket::probe_tcp(&addr) {
            Ok(probe_tcp) => drop(probe_tcp),
            Err(e) => {
                last = in_use("tcp", &addr, &e);
                continue;
            }
        }
        drop(probe_udp);
        let udp: Result<Vec<_>, _> = (0..n).map(|_| shard::socket::udp(&addr)).collect();
        let udp = match udp {
            Ok(u) => u,
            Err(e) => {
                last = in_use("udp", &addr, &e);
                continue;
            }
        };
        let tcp: Result<Vec<_>, _> = (0..n).map(|_| shard::socket::tcp(&addr)).collect();
        match tcp {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(e) => last = in_use("tcp", &addr, &e),
        }
    }
    Err(last)
}

fn spawn(
    name: String,
    cpu: usize,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ExitError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Err(e) = crate::sys::pin_thread_to(cpu) {
                warn!(thread = %name, cpu, "cannot pin: {e}");
            }
            f()
        })
        .map_err(|e| ExitError::Startup(format!("cannot start thread: {e}")))
}
