//! The edge side: the `fleet` thread (one current-thread tokio runtime) that watches the
//! epoch pointer, fetches and checks each new epoch, hands it to the control thread's
//! reload, keeps it as last-known-good and reports what it did; and the boot from the
//! last-known-good epoch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tracing::{error, info, warn};

use super::bundle::{self, Bundle};
use super::health::Sharing;
use super::{Canary, EdgeStatus, Pointer, Refused, CANARY, CURRENT, HEARTBEAT, PIN};
use crate::config::fleet::Fleet;
use crate::control::api::ApiContext;
use crate::control::ops::{self, Command, Refusal, Reloader};
use crate::control::RunOptions;

/// The last-known-good pointer's file in the state folder.
const LKG_FILE: &str = "lkg.json";
/// The state folder's link to the epoch serving (`live -> epoch-N`): every epoch is read
/// through the same paths, so a reload shares the included files an epoch did not change
/// (the include cache is kept by path) and access domains name files that stay.
const LIVE: &str = "live";

/// Points `dir/live` at `dir/target` (a relative link made beside and renamed over the
/// old one, the folder synced).
fn point_live(dir: &Path, target: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{LIVE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, dir.join(LIVE))?;
    std::fs::File::open(dir)?.sync_all()
}
/// The first pause before fetching again a bundle that could not be fetched (doubled at
/// each failure, up to [`MAX_BACKOFF`]).
const FETCH_PAUSE: Duration = Duration::from_secs(1);
/// A fetch of a bundle is given up (and tried again later) when nothing arrived for this
/// long: an engine that goes silent mid-fetch must not hold the session, while a large
/// bundle on a slow link takes as long as it needs.
const FETCH_STALL: Duration = Duration::from_secs(30);
/// Longest pause before fetching a bundle again (the pause is at least the last try's
/// duration, up to this).
const MAX_FETCH_PAUSE: Duration = Duration::from_secs(60);
/// Longest wait between two connection attempts, or two fetches of a bundle.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The epoch an edge last applied, as kept in `state-dir/lkg.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lkg {
    /// Its number.
    pub epoch: u64,
    /// Its digest.
    pub digest: String,
    /// Its main file, relative to the state folder (`epoch-N/gtmd.toml`).
    pub main: String,
}

impl Lkg {
    fn read(dir: &Path) -> Option<Self> {
        let path = dir.join(LKG_FILE);
        let text = std::fs::read(&path).ok()?;
        serde_json::from_slice(&text)
            .inspect_err(|e| {
                error!(
                    "fleet: {} is not a last-known-good pointer ({e}): booting from the \
                     edge's own file",
                    path.display()
                )
            })
            .ok()
    }

    /// The path to serve this epoch's main file from: through `state-dir/live`, pointed
    /// at its folder ([`point_live`]), or, should that fail, in its own folder.
    fn serving_main(&self, dir: &Path) -> PathBuf {
        let epoch = format!("epoch-{}", self.epoch);
        match Path::new(&self.main).strip_prefix(&epoch) {
            Ok(rel) if point_live(dir, &epoch).is_ok() => dir.join(LIVE).join(rel),
            _ => dir.join(&self.main),
        }
    }

    /// Written beside, synced, renamed over the old one and the folder synced: a crash
    /// or a power loss leaves one or the other.
    fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::control::crud::store::write_atomic(&dir.join(LKG_FILE), &text)
    }
}

/// At start-up: when the configuration file has `[fleet]`, the options to boot with (the
/// last-known-good epoch's main file when the state folder has one, `[fleet]` kept from
/// the file either way), the section, and the epoch. `None` without `[fleet]` (or when
/// the file does not load: `run` reports that).
pub fn boot(opts: &RunOptions) -> Option<(RunOptions, Fleet, Option<Lkg>)> {
    // Only `[fleet]` is read here: the epoch serves, not the file (which `run` loads
    // when there is no epoch, and whose errors it reports then).
    let fleet = crate::config::Config::fleet_only(opts.config.as_ref()?).ok()??;
    let mut o = opts.clone();
    o.fleet = Some(fleet.clone());
    let lkg = Lkg::read(&fleet.state_dir);
    if let Some(l) = &lkg {
        o.config = Some(l.serving_main(&fleet.state_dir));
    }
    Some((o, fleet, lkg))
}

/// Starts the `fleet` thread; it ends when `stop` is set (within a second).
pub fn spawn(
    fleet: Fleet,
    lkg: Option<Lkg>,
    commands: crossbeam::channel::Sender<Command>,
    api: Arc<ApiContext>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let rt = super::runtime()?;
    std::thread::Builder::new()
        .name("fleet".into())
        .spawn(move || {
            crate::sys::lower_thread_priority();
            super::set_replicas(fleet.replicas);
            // Shown as the epoch's own folder (read through `live`, which points there).
            let main = lkg.as_ref().map(|l| fleet.state_dir.join(&l.main));
            let sharing = api.shared.clone().map(|s| Sharing::new(s, api.clone()));
            let mut edge = Edge {
                config_file: main.or_else(|| api.ops.config_file().map(Path::to_path_buf)),
                keys: Keys::default(),
                bad_value: Default::default(),
                reported: false,
                twin_warned: false,
                fetch_retry: None,
                api,
                status: EdgeStatus {
                    edge: fleet.edge.clone(),
                    epoch: lkg.as_ref().map_or(0, |l| l.epoch),
                    digest: lkg.map(|l| l.digest).unwrap_or_default(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    boot: boot_id(),
                    ..Default::default()
                },
                fleet,
                commands,
                stop,
            };
            edge.show(Link::Starting);
            rt.block_on(edge.run(sharing));
        })
}

/// The fleet thread's state.
struct Edge {
    fleet: Fleet,
    /// Where `GET /v1/status` shows what the edge serves.
    api: Arc<ApiContext>,
    /// The serving epoch's main file (or the edge's own).
    config_file: Option<PathBuf>,
    /// The keys this edge follows, as last read.
    keys: Keys,
    /// Per key (`current`, `canary`, `pin`), the last value that was no pointer (warned
    /// about once).
    bad_value: [Option<Vec<u8>>; 3],
    /// A report was written in this process (the key holds this edge's since).
    reported: bool,
    /// Another gtmd under the same name was warned about.
    twin_warned: bool,
    /// The epoch whose bundle could not be fetched (the engine away or failing, the object
    /// missing), when to try again, and the pause doubled at each failure (before the
    /// floor of the try's duration and the jitter, [`Edge::fetch_later`]). Such an epoch is never
    /// refused (nothing is known against it) and the session goes on: only a bundle
    /// fetched and found bad is refused.
    fetch_retry: Option<(u64, tokio::time::Instant, Duration)>,
    commands: crossbeam::channel::Sender<Command>,
    stop: Arc<AtomicBool>,
    /// What it reports (and serves).
    status: EdgeStatus,
}

impl Edge {
    /// Shows the report and the link in `GET /v1/status` (`fleet`).
    fn show(&self, link: Link) {
        let mut v = serde_json::to_value(&self.status).unwrap_or_default();
        v["engine"] = match link {
            Link::Starting => "connecting",
            Link::Up => "connected",
            Link::Down => "unreachable",
        }
        .into();
        v["share_health"] = self.fleet.share_health.into();
        v["config_file"] = self
            .config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .into();
        self.api.ops.set_fleet(v);
    }
}

/// The values of the keys an edge follows (`None`: absent or deleted).
#[derive(Default)]
struct Keys {
    current: Option<Vec<u8>>,
    canary: Option<Vec<u8>>,
    pin: Option<Vec<u8>>,
}

/// The engine connection as last logged.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Link {
    Starting,
    Up,
    Down,
}

impl Edge {
    /// Connects, follows epochs until the connection fails, then tries again with a
    /// growing pause; a line is logged when the link changes, not per attempt.
    async fn run(&mut self, mut sharing: Option<Sharing>) {
        let mut link = Link::Starting;
        let mut backoff = Duration::from_millis(200);
        let stop = self.stop.clone();
        while !stop.load(Ordering::Relaxed) {
            // A stop ends the session wherever it waits (a connection attempt, a request
            // to an engine that went silent, a reload in the control thread's queue).
            let began = tokio::time::Instant::now();
            let e = tokio::select! {
                e = self.session(&mut link, sharing.as_mut()) => e,
                () = stopped(&stop) => break,
            };
            // The pause grows while attempts fail, and starts over after a session that
            // lasted (not after one that failed right after connecting).
            if link == Link::Up && began.elapsed() > HEARTBEAT * 2 {
                backoff = Duration::from_millis(200);
            }
            if let Err(e) = e {
                if link != Link::Down {
                    warn!(
                        edge = %self.fleet.edge,
                        epoch = self.status.epoch,
                        "fleet: engine unreachable ({e}): serving epoch {} and retrying in the background",
                        self.status.epoch
                    );
                    link = Link::Down;
                    self.show(link);
                } else {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            let until = tokio::time::Instant::now() + backoff;
            while tokio::time::Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// One connection: report, watch `current`, apply what is new, heartbeat; and,
    /// sharing health, exchange verdicts beside.
    async fn session(
        &mut self,
        link: &mut Link,
        sharing: Option<&mut Sharing>,
    ) -> Result<(), String> {
        let client =
            super::connect(&self.fleet.nats, &format!("gtmd edge {}", self.fleet.edge)).await?;
        let js = jetstream::new(client);
        let (config, epochs, edges) = super::buckets(&js).await?;
        // Every key of the bucket (server 2.9 has no watch of several keys): changes from
        // now on; `follow` then reads the keys once, so nothing between is missed.
        let watch = config
            .watch(">")
            .await
            .map_err(|e| format!("cannot watch {}: {e}", super::CONFIG_BUCKET))?;
        // Said once this edge's report is in the engine (a publisher then sees it).
        self.report(&edges).await?;
        if *link != Link::Up {
            info!(edge = %self.fleet.edge, epoch = self.status.epoch, "fleet: connected to the engine");
            *link = Link::Up;
        }
        self.show(*link);
        let stop = self.stop.clone();
        // Sharing health never ends the connection (it retries on its own); it ends
        // with it, or on `stop`, when `follow` returns too.
        let health = async {
            if let Some(s) = sharing {
                s.run(&js, &stop).await;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            r = self.follow(&config, &epochs, &edges, watch) => r,
            () = health => Ok(()),
        }
    }

    /// Follows `pin.<edge>`, `canary` and `current`, and heartbeats, until the engine
    /// fails or `stop`.
    async fn follow(
        &mut self,
        config: &kv::Store,
        epochs: &object_store::ObjectStore,
        edges: &kv::Store,
        mut watch: kv::Watch,
    ) -> Result<(), String> {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_beat = tokio::time::Instant::now();
        self.read_keys(config).await?;
        self.decide(epochs, edges).await?;
        self.report(edges).await?;
        loop {
            tokio::select! {
                w = watch.next() => match w {
                    Some(Ok(entry)) => {
                        let value = (entry.operation == kv::Operation::Put).then_some(&entry.value[..]);
                        if self.note(&entry.key, value) {
                            self.decide(epochs, edges).await?;
                            self.report(edges).await?;
                        }
                    }
                    Some(Err(e)) => return Err(format!("watch of {} failed: {e}", super::CONFIG_BUCKET)),
                    None => return Err(format!("watch of {} ended", super::CONFIG_BUCKET)),
                },
                _ = tick.tick() => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let retry = self.fetch_retry.is_some_and(|(_, at, _)| at <= tokio::time::Instant::now());
                    if retry {
                        self.decide(epochs, edges).await?;
                        self.report(edges).await?;
                    }
                    if last_beat.elapsed() >= HEARTBEAT {
                        last_beat = tokio::time::Instant::now();
                        // Also a check that the watch missed nothing (a restored engine).
                        self.read_keys(config).await?;
                        self.decide(epochs, edges).await?;
                        self.report(edges).await?;
                    }
                }
            }
        }
    }

    /// Writes this edge's report.
    async fn report(&mut self, edges: &kv::Store) -> Result<(), String> {
        // Since this edge's last report, another gtmd wrote one under the same name: the
        // two overwrite each other's, and a publisher sees one of them.
        if self.reported && !self.twin_warned {
            let last = edges.get(&self.fleet.edge).await.ok().flatten();
            let other = last
                .and_then(|v| serde_json::from_slice::<EdgeStatus>(&v).ok())
                .filter(|s| s.boot != self.status.boot);
            if let Some(s) = other {
                warn!(
                    edge = %self.fleet.edge,
                    "fleet: another gtmd reports as edge {} (serving epoch {}): edge names must \
                     be unique in a fleet ([fleet] edge)",
                    self.fleet.edge,
                    s.epoch
                );
                self.twin_warned = true;
            }
        }
        self.reported = true;
        self.status.heartbeat_ms = ops::unix_ms();
        self.show(Link::Up);
        let v = serde_json::to_vec(&self.status).map_err(|e| e.to_string())?;
        edges
            .put(&self.fleet.edge, v.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot write this edge's report: {e}"))
    }

    /// Reads the three keys this edge follows.
    async fn read_keys(&mut self, config: &kv::Store) -> Result<(), String> {
        let pin = format!("{PIN}{}", self.fleet.edge);
        for key in [CURRENT, CANARY, pin.as_str()] {
            let v = config
                .get(key)
                .await
                .map_err(|e| format!("cannot read {key}: {e}"))?;
            self.note(key, v.as_deref());
        }
        Ok(())
    }

    /// Records a key's value (`None`: deleted); true when it is a key this edge follows.
    fn note(&mut self, key: &str, value: Option<&[u8]>) -> bool {
        let slot = if key == CURRENT {
            &mut self.keys.current
        } else if key == CANARY {
            &mut self.keys.canary
        } else if key.strip_prefix(PIN) == Some(self.fleet.edge.as_str()) {
            &mut self.keys.pin
        } else {
            return false;
        };
        *slot = value.map(<[u8]>::to_vec);
        true
    }

    /// A key's value as `parse` makes it; a value it refuses is warned about once and
    /// counts as absent.
    fn parse<T>(
        &mut self,
        i: usize,
        key: &str,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Option<T> {
        let value = [&self.keys.pin, &self.keys.canary, &self.keys.current][i].as_deref()?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(e) => {
                // Said once per value, not at every heartbeat's look.
                if self.bad_value[i].as_deref() != Some(value) {
                    warn!("fleet: the key {key} holds no valid value ({e}): ignored");
                    self.bad_value[i] = Some(value.to_vec());
                }
                None
            }
        }
    }

    /// The epoch this edge should serve, and the key that names it: its pin, else the
    /// canary when the canary's selector names this edge, else `current`.
    fn target(&mut self) -> Option<(Pointer, &'static str)> {
        if let Some(p) = self.parse(0, &format!("{PIN}{}", self.fleet.edge), pointer) {
            return Some((p, "pin"));
        }
        // A malformed canary (hand-written, damaged) is nobody's: this edge follows current.
        if let Some(c) = self.parse(1, CANARY, Canary::parse) {
            if c.selector.matches(&self.fleet.edge) {
                return Some((c.pointer, CANARY));
            }
        }
        self.parse(2, CURRENT, pointer).map(|p| (p, CURRENT))
    }

    /// Applies the epoch [`Self::target`] names, when there is one.
    async fn decide(
        &mut self,
        epochs: &object_store::ObjectStore,
        edges: &kv::Store,
    ) -> Result<(), String> {
        let target = self.target();
        // A retry is for the epoch to serve, not one named before.
        let epoch = target.as_ref().map(|(p, _)| p.epoch);
        if self.fetch_retry.is_some_and(|(n, _, _)| Some(n) != epoch) {
            self.fetch_retry = None;
            self.status.fetch_error = None;
        }
        let Some((p, from)) = target else {
            return Ok(());
        };
        if self.status.follows != from {
            info!(
                edge = %self.fleet.edge,
                epoch = p.epoch,
                "fleet: this edge follows {from} (epoch {})",
                p.epoch
            );
            self.status.follows = from.into();
        }
        self.consider(&p, from, (epochs, edges)).await
    }

    /// An epoch the edge should serve (`from` the key naming it): applied when it is newer
    /// than the one serving and not one refused already. An engine error is returned (the
    /// session retries); a bad epoch is refused and reported.
    async fn consider(
        &mut self,
        p: &Pointer,
        from: &str,
        (epochs, edges): (&object_store::ObjectStore, &kv::Store),
    ) -> Result<(), String> {
        if p.epoch <= self.status.epoch {
            // Nothing to fetch: no retry either.
            self.fetch_retry = None;
            self.status.fetch_error = None;
            let other = p.epoch == self.status.epoch && p.digest != self.status.digest;
            if other && self.status.ignored != Some(p.epoch) {
                warn!(
                    epoch = p.epoch,
                    digest = %p.digest,
                    serving = %self.status.digest,
                    "fleet: epoch {} in the engine is not the epoch {} serving (another bundle \
                     under the same number: an engine restored from a backup?): ignored",
                    p.epoch,
                    self.status.epoch
                );
                self.status.ignored = Some(p.epoch);
            }
            if p.epoch < self.status.epoch && self.status.ignored != Some(p.epoch) {
                warn!(
                    epoch = p.epoch,
                    serving = self.status.epoch,
                    "fleet: epoch {} is older than the epoch serving: ignored (epochs only move forward; named by {from}, serving epoch {})",
                    p.epoch,
                    self.status.epoch
                );
                self.status.ignored = Some(p.epoch);
            }
            return Ok(());
        }
        if self
            .status
            .refused
            .as_ref()
            .is_some_and(|r| r.epoch == p.epoch)
        {
            return Ok(());
        }
        if self
            .fetch_retry
            .is_some_and(|(_, at, _)| at > tokio::time::Instant::now())
        {
            return Ok(());
        }
        let began = tokio::time::Instant::now();
        let fetched = self.fetch_reporting(epochs, edges, p).await?;
        let fetched = match fetched {
            Err(e) => {
                self.fetch_later(p, &e, began.elapsed());
                return Ok(());
            }
            Ok(f) => {
                if self.fetch_retry.take().is_some() {
                    info!(epoch = p.epoch, "fleet: epoch {} fetched", p.epoch);
                }
                self.status.fetch_error = None;
                f
            }
        };
        let outcome = match fetched {
            Ok(blob) => match self.unpack(p, &blob) {
                Ok(main) => self.apply(p, main).await,
                Err(errors) => Err(errors),
            },
            Err(missing) => Err(vec![missing]),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(errors) => {
                for e in &errors {
                    error!(epoch = p.epoch, "fleet: epoch refused: {e}");
                }
                warn!(
                    epoch = p.epoch,
                    serving = self.status.epoch,
                    "fleet: epoch {} refused: still serving epoch {}",
                    p.epoch,
                    self.status.epoch
                );
                self.status.refused = Some(Refused {
                    epoch: p.epoch,
                    digest: p.digest.clone(),
                    errors,
                });
                Ok(())
            }
        }
    }

    /// Fetches `p`'s bundle ([`fetch`]), writing this edge's report every heartbeat
    /// meanwhile: a publisher waiting for it must not take it for gone while a large
    /// bundle arrives. `Err`: the report could not be written (the engine failed).
    async fn fetch_reporting(
        &mut self,
        epochs: &object_store::ObjectStore,
        edges: &kv::Store,
        p: &Pointer,
    ) -> Result<Result<Result<Vec<u8>, String>, String>, String> {
        let fetching = async {
            super::test_pause("fetch").await;
            fetch(epochs, p, &|| ()).await
        };
        tokio::pin!(fetching);
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            tokio::select! {
                r = &mut fetching => return Ok(r),
                _ = beat.tick() => self.report(edges).await?,
            }
        }
    }

    /// Notes that `p`'s bundle could not be fetched (the try took `took`): tried again
    /// after a pause that doubles while it fails, at least as long as the try (a fetch cut
    /// off for want of progress is not started over at once), drawn between half and one
    /// and a half of that (edges that failed together do not come back together), at most
    /// a minute; logged once per epoch, never refused for it.
    fn fetch_later(&mut self, p: &Pointer, e: &str, took: Duration) {
        let base = match self.fetch_retry {
            Some((n, _, base)) if n == p.epoch => (base * 2).min(MAX_BACKOFF),
            _ => {
                warn!(
                    epoch = p.epoch,
                    serving = self.status.epoch,
                    "fleet: cannot fetch epoch {} ({e}): trying again in the background, \
                     serving epoch {}",
                    p.epoch,
                    self.status.epoch
                );
                FETCH_PAUSE
            }
        };
        // Jittered around the backoff, never shorter than the last try took.
        let pause = base
            .mul_f64(0.5 + unit_random())
            .max(took)
            .min(MAX_FETCH_PAUSE);
        self.fetch_retry = Some((p.epoch, tokio::time::Instant::now() + pause, base));
        self.status.fetch_error = Some(format!("epoch {}: {e}", p.epoch));
    }

    /// Checks the digest and writes the epoch's files to `state-dir/epoch-N` (beside,
    /// then renamed); returns the main file's path.
    fn unpack(&self, p: &Pointer, blob: &[u8]) -> Result<PathBuf, Vec<String>> {
        let got = bundle::digest(blob);
        if got != p.digest {
            return Err(vec![format!(
                "digest mismatch: the pointer says {}, the bundle is {got}",
                p.digest
            )]);
        }
        let b = Bundle::decode(blob).map_err(|e| vec![format!("bad bundle: {e}")])?;
        let dir = &self.fleet.state_dir;
        let name = format!("epoch-{}", p.epoch);
        let tmp = dir.join(format!("{name}.tmp"));
        let fail = |e: std::io::Error| vec![format!("cannot write {}: {e}", dir.display())];
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(dir).map_err(fail)?;
        // Every file and folder synced before the rename, and the state folder after it:
        // the last-known-good pointer never names files a power loss left empty.
        let written = b.unpack(&tmp).and_then(|_| {
            let _ = std::fs::remove_dir_all(dir.join(&name));
            std::fs::rename(&tmp, dir.join(&name))?;
            std::fs::File::open(dir)?.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(fail(e));
        }
        Ok(dir.join(&name).join(&b.main))
    }

    /// Reloads from `main` on the control thread; on success it is the last-known-good.
    async fn apply(&mut self, p: &Pointer, main: PathBuf) -> Result<(), Vec<String>> {
        let dir = self.fleet.state_dir.clone();
        let epoch = format!("epoch-{}", p.epoch);
        let epoch_dir = dir.join(&epoch);
        // Read through `live`, pointed at the new epoch (and back should it be refused).
        let serving = match main.strip_prefix(&epoch_dir) {
            Ok(rel) => match point_live(&dir, &epoch) {
                Ok(()) => dir.join(LIVE).join(rel),
                Err(e) => {
                    warn!(
                        epoch = p.epoch,
                        "fleet: cannot point {} at {epoch} ({e}): read in place",
                        dir.join(LIVE).display()
                    );
                    main.clone()
                }
            },
            Err(_) => main.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = serving;
        let mut cmd: Command = Box::new(move |r: &mut dyn Reloader| {
            let _ = tx.send(r.reload_from(&path, "fleet").map_err(|e| lines(&e)));
        });
        loop {
            match self.commands.try_send(cmd) {
                Ok(()) => break,
                Err(crossbeam::channel::TrySendError::Full(c)) => {
                    cmd = c;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(crossbeam::channel::TrySendError::Disconnected(_)) => {
                    return Err(vec!["the control thread is gone".into()]);
                }
            }
        }
        let r = rx
            .await
            .unwrap_or_else(|_| Err(vec!["the control thread dropped the reload".into()]));
        if let Err(e) = r {
            self.unpoint_live(&dir);
            let _ = std::fs::remove_dir_all(&epoch_dir);
            return Err(e);
        }
        let rel = main.strip_prefix(&dir).unwrap_or(&main);
        let lkg = Lkg {
            epoch: p.epoch,
            digest: p.digest.clone(),
            main: rel.display().to_string(),
        };
        match lkg.write(&dir) {
            // The epochs before it go only once the pointer no longer names them.
            Ok(()) => remove_older(&dir, p.epoch),
            Err(e) => error!(
                epoch = p.epoch,
                "fleet: cannot write the last-known-good pointer in {}: {e} (the epoch it \
                 names is kept)",
                dir.display()
            ),
        }
        info!(epoch = p.epoch, digest = %p.digest, "fleet: epoch applied and kept as last-known-good");
        self.status.epoch = p.epoch;
        self.status.digest = p.digest.clone();
        // A refusal of an earlier epoch is history now.
        if self
            .status
            .refused
            .as_ref()
            .is_some_and(|r| r.epoch < p.epoch)
        {
            self.status.refused = None;
        }
        self.config_file = Some(main);
        Ok(())
    }

    /// After a refused epoch: `live` points at the epoch serving again (or goes, when the
    /// edge serves its own file).
    fn unpoint_live(&self, dir: &Path) {
        let serving = format!("epoch-{}", self.status.epoch);
        if self.status.epoch == 0 || !dir.join(&serving).is_dir() {
            let _ = std::fs::remove_file(dir.join(LIVE));
        } else if let Err(e) = point_live(dir, &serving) {
            warn!(
                "fleet: cannot point {} back at {serving}: {e}",
                dir.join(LIVE).display()
            );
        }
    }
}

/// A random number from 0 to 1 (0.5 should the kernel have no random source).
fn unit_random() -> f64 {
    let mut r = [0u8; 4];
    match crate::sys::fill_random(&mut r) {
        Ok(()) => f64::from(u32::from_ne_bytes(r)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// A random number for [`EdgeStatus::boot`] (the clock's nanoseconds should the kernel
/// have no random source).
pub(super) fn boot_id() -> u64 {
    let mut r = [0u8; 8];
    match crate::sys::fill_random(&mut r) {
        Ok(()) => u64::from_ne_bytes(r),
        Err(_) => ops::unix_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

/// An epoch pointer from a key's bytes.
fn pointer(value: &[u8]) -> Result<Pointer, String> {
    serde_json::from_slice(value).map_err(|e| format!("not an epoch pointer: {e}"))
}

/// Returns once `stop` is set (looked at every 100 ms).
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A refusal as lines: each configuration error, or the reason.
fn lines(r: &Refusal) -> Vec<String> {
    match r {
        Refusal::Invalid(e) => e.0.iter().map(ToString::to_string).collect(),
        other => vec![other.to_string()],
    }
}

/// Fetches the bundle `p` names, bounded by its stated size and [`bundle::MAX_BUNDLE`],
/// given up when nothing arrives for [`FETCH_STALL`] (`progress` is called as data
/// arrives): `Ok(Err(why))` when the epoch cannot be had (too large, or damaged in the
/// engine: it is refused), `Err` when the engine failed or does not have it (the caller
/// tries again later).
pub(super) async fn fetch(
    epochs: &object_store::ObjectStore,
    p: &Pointer,
    progress: &dyn Fn(),
) -> Result<Result<Vec<u8>, String>, String> {
    use async_nats::jetstream::object_store::GetErrorKind;
    if p.size > bundle::MAX_BUNDLE {
        return Ok(Err(format!(
            "epoch {} is {} bytes, more than {}",
            p.epoch,
            p.size,
            bundle::MAX_BUNDLE
        )));
    }
    let silent = || format!("cannot fetch {}: no answer in {FETCH_STALL:?}", p.object);
    // Not found may be a replica that has not caught up yet (a cluster): asked again for
    // a second, then left to the caller (which tries again later).
    let mut tries = 0;
    let obj = loop {
        let got = tokio::time::timeout(FETCH_STALL, epochs.get(&p.object)).await;
        match got.map_err(|_| silent())? {
            Ok(o) => break o,
            Err(e) if e.kind() == GetErrorKind::NotFound && tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if e.kind() == GetErrorKind::NotFound => {
                return Err(format!("{} is not in {}", p.object, super::EPOCH_BUCKET));
            }
            Err(e) => return Err(format!("cannot fetch {}: {e}", p.object)),
        }
    };
    // Grown as the bundle arrives past 64 MiB: the pointer's size is a claim, not a fact.
    let mut buf = Vec::with_capacity(p.size.min(64 << 20) as usize);
    let mut obj = obj.take(p.size + 1);
    loop {
        let read = tokio::time::timeout(FETCH_STALL, obj.read_buf(&mut buf)).await;
        match read.map_err(|_| silent())? {
            Ok(0) => return Ok(Ok(buf)),
            Ok(_) => progress(),
            // The object store's digest of the whole object, received, does not match
            // it: the engine holds a damaged bundle, which every fetch gets again.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Ok(Err(format!("bad bundle: {} as received: {e}", p.object)))
            }
            Err(e) => return Err(format!("cannot read {}: {e}", p.object)),
        }
    }
}

/// Removes the epoch folders of the state folder before `keep`'s, and any unpacking left
/// half done.
fn remove_older(dir: &Path, keep: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("epoch-")) else {
            continue;
        };
        if n.ends_with(".tmp") || n.parse::<u64>().is_ok_and(|n| n < keep) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    /// Epochs before the kept one go, and so does an unpacking left half done; the kept
    /// epoch and anything else in the state folder stay.
    #[test]
    fn remove_older_keeps_the_epoch_and_sweeps_half_unpacked_ones() {
        let dir = std::env::temp_dir().join(format!("gtmd-lkg-{}", std::process::id()));
        for d in ["epoch-1", "epoch-2", "epoch-4.tmp", "epoch-3", "other"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        super::remove_older(&dir, 3);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(left, ["epoch-3", "other"]);
    }
}
