//! Many edges: configuration epochs over NATS JetStream.
//!
//! `gtmd publish` validates and compiles a configuration exactly as `gtmd check` does,
//! bundles the files it reads ([`bundle`]), and stores the bundle as the next epoch; every
//! gtmd with a `[fleet]` section (an edge) watches for new epochs, checks the digest,
//! applies the epoch through the reload path a SIGHUP takes (a configuration that does not
//! load there is refused and the old one keeps serving), keeps it on disk as its
//! last-known-good to boot from without the engine, and reports what it did.
//!
//! In the engine (JetStream, server 2.9 or later):
//!
//! | bucket | kind | keys |
//! |---|---|---|
//! | `gtmd_config` | KV, file storage, history 16 | `current` -> [`Pointer`] (epoch, digest, object); `canary` -> [`Canary`] (a pointer and a [`Selector`]); `pin.<edge>` -> [`Pointer`] |
//! | `gtmd_epochs` | object store | `epoch-N-DIGEST` -> the bundle |
//! | `gtmd_edges` | KV, file storage, history 1, entries kept 1 h | `<edge>` -> [`EdgeStatus`]; [`CLOCK_KEY`] (empty: what commands write to read the engine's time, [`EngineClock`]) |
//! | `gtmd_health` | KV, memory storage, history 1, entries kept 4 h | `v.<edge>.<check>` -> [`health::Verdict`] (`share-health`) |
//! | `gtmd_members` | KV, memory storage, history 1, entries kept 15 s | `<edge>` -> [`members::Heartbeat`] (`share-health`) |
//!
//! The pointer is a small KV value, so edges watch one key and a publish is one
//! compare-and-set on it; the bundle goes to the object store, which chunks it, because a
//! KV value is one message and a message is capped (1 MB by default) while a large model
//! is hundreds of MB. Every key has one writer: `current` the publisher, `<edge>` that
//! edge. A publish looks for a canary and writes its pointer in one step, a
//! compare-and-set on the config bucket's last sequence (`publish.rs`). An edge's report
//! is fresh by the engine's clock alone ([`EngineClock`]). Epochs only move forward: an edge never applies an epoch at or below the one it
//! applied, and `publish` numbers the next epoch above both `current` and every epoch an
//! edge reports (an engine restored from an old backup, or emptied, cannot push edges
//! back).
//!
//! Rollout ([`rollout`]): each edge follows `pin.<edge>` when there is one, else
//! `canary` when its selector names the edge, else `current`. `gtmd publish --canary`
//! sets `canary`; `gtmd promote` moves `current` to it and deletes it; `gtmd abort`
//! republishes `current`'s bundle as a new epoch (a rollback is a new epoch with old
//! content, so the canary edges move forward to it) and deletes it.
//!
//! The async runtime (tokio, for `async-nats`) lives on one thread, `fleet`, a
//! current-thread runtime; it reaches the control thread through the control API's
//! command queue ([`super::ops::Command`]), so an epoch takes its turn with SIGHUPs and
//! API changes.
//!
//! With `share-health` (the default), the same thread also publishes this edge's health
//! verdicts and stores the other edges' in the prober's table ([`health`]).

pub mod bundle;
mod edge;
pub mod health;
pub mod members;
pub mod publish;
pub mod rollout;

pub use edge::{boot, spawn, Lkg};

use std::sync::Arc;

use crate::config::fleet::Fleet;
use crate::probe::shared::Shared;

/// The table of shared verdicts for an edge whose `[fleet]` has `share-health` on.
pub fn shared_health<L>(edge: &Option<(Fleet, L)>) -> Option<Arc<Shared>> {
    edge.as_ref()
        .filter(|(f, _)| f.share_health)
        .map(|(f, _)| Arc::new(Shared::for_fleet(f)))
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use serde::{Deserialize, Serialize};

/// The KV bucket of the epoch pointer.
pub const CONFIG_BUCKET: &str = "gtmd_config";
/// The object store of the bundles.
pub const EPOCH_BUCKET: &str = "gtmd_epochs";
/// The KV bucket of the edges' reports.
pub const EDGE_BUCKET: &str = "gtmd_edges";
/// The pointer's key in [`CONFIG_BUCKET`].
pub const CURRENT: &str = "current";
/// The canary's key in [`CONFIG_BUCKET`].
pub const CANARY: &str = "canary";
/// The prefix of an edge's pin in [`CONFIG_BUCKET`] (`pin.<edge>`).
pub const PIN: &str = "pin.";
/// The metadata key of a bundle's pointer in [`EPOCH_BUCKET`] (what `gtmd pin` reads).
pub const POINTER_META: &str = "gtmd-pointer";
/// An edge rewrites its report this often (its heartbeat).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// An edge whose report is older than this is not waited for by `publish`.
pub const FRESH: Duration = Duration::from_secs(30);
/// The key in [`EDGE_BUCKET`] a command writes to read the engine's clock ([`EngineClock`]):
/// not an edge name (edge names have no `.`), so never taken for an edge's report.
pub const CLOCK_KEY: &str = "gtmd.clock";

/// `current`: the epoch edges should serve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pointer {
    /// The epoch number (1, 2, ...).
    pub epoch: u64,
    /// `sha256:HEX` of the bundle.
    pub digest: String,
    /// Its name in [`EPOCH_BUCKET`].
    pub object: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was published (Unix ms, the publisher's clock).
    pub published_ms: u64,
    /// The configuration file it was made from (on the publisher).
    pub source: String,
}

/// `canary`: an epoch for the edges its selector names (the others follow `current`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Canary {
    /// The epoch.
    #[serde(flatten)]
    pub pointer: Pointer,
    /// Which edges take it.
    pub selector: Selector,
}

/// The edges a canary goes to: those named, and those whose name hashes below `percent`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Selector {
    /// Edge names.
    #[serde(default)]
    pub edges: Vec<String>,
    /// 0 to 100: an edge is in when [`percentile`] of its name is below it.
    #[serde(default)]
    pub percent: u8,
}

impl Selector {
    /// `NAME,NAME,P%`: edge names and at most one percentage, comma-separated.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut sel = Self::default();
        let mut percent = None;
        for item in s.split(',').map(str::trim) {
            if let Some(p) = item.strip_suffix('%') {
                let n = p
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| format!("'{item}' is not a percentage from 1% to 100%"))?;
                if percent.replace(n).is_some() {
                    return Err(format!("'{s}': one percentage at most"));
                }
            } else if let Some(why) = crate::config::fleet::bad_edge_name(item) {
                return Err(format!("edge name {why}"));
            } else if !sel.edges.iter().any(|e| e == item) {
                sel.edges.push(item.to_string());
            }
        }
        sel.percent = percent.unwrap_or(0);
        Ok(sel)
    }

    /// Whether `edge` takes the canary.
    pub fn matches(&self, edge: &str) -> bool {
        self.edges.iter().any(|e| e == edge) || percentile(edge) < u32::from(self.percent)
    }
}

impl Canary {
    /// A canary from the bytes of the `canary` key; `Err`: what is wrong with them (not
    /// JSON of a canary, or a value no publish writes: hand-written or damaged).
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(value).map_err(|e| format!("not a canary: {e}"))?;
        c.fault().map_or(Ok(c), Err)
    }

    /// What makes this canary one no publish writes, if anything.
    fn fault(&self) -> Option<String> {
        let p = &self.pointer;
        let hex = p.digest.strip_prefix("sha256:").unwrap_or("");
        if p.epoch == 0 {
            return Some("epoch 0: epochs start at 1".into());
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(format!("digest '{}' is not sha256:HEX", p.digest));
        }
        if p.object.is_empty() {
            return Some("no object named".into());
        }
        let sel = &self.selector;
        if sel.percent > 100 {
            return Some(format!("selector: percent {} is above 100", sel.percent));
        }
        if let Some(why) = sel
            .edges
            .iter()
            .find_map(|e| crate::config::fleet::bad_edge_name(e))
        {
            return Some(format!("selector: edge name {why}"));
        }
        if sel.edges.is_empty() && sel.percent == 0 {
            return Some("selector: names no edge and no percentage".into());
        }
        None
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self.edges.clone();
        if self.percent > 0 {
            parts.push(format!("{}%", self.percent));
        }
        f.write_str(&parts.join(","))
    }
}

/// Where an edge's name falls, 0 to 99: the first 8 octets of its SHA-256 as a
/// big-endian number, modulo 100. The same on every edge and publisher, and stable
/// across rollouts (the same edges go first each time).
pub fn percentile(edge: &str) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, edge.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&d.as_ref()[..8]);
    (u64::from_be_bytes(head) % 100) as u32
}

/// Copies of each bucket gtmd creates (`[fleet] replicas`): set once by the edge or the
/// publisher before it connects, read when a bucket is made (a bucket that exists keeps
/// its own).
static REPLICAS: AtomicUsize = AtomicUsize::new(1);

/// Sets the copies of the buckets this process creates.
pub fn set_replicas(n: usize) {
    REPLICAS.store(
        n.clamp(1, crate::config::fleet::MAX_REPLICAS),
        Ordering::Relaxed,
    );
}

fn replicas() -> usize {
    REPLICAS.load(Ordering::Relaxed)
}

/// An epoch an edge refused, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refused {
    /// The epoch.
    pub epoch: u64,
    /// Its digest.
    pub digest: String,
    /// Why: the reload's errors (`file:line: field: reason`) or the failed step.
    pub errors: Vec<String>,
}

/// What an edge reports under its key in [`EDGE_BUCKET`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EdgeStatus {
    /// The edge's name.
    pub edge: String,
    /// The epoch it serves (0: its own file, none applied yet).
    pub epoch: u64,
    /// That epoch's digest.
    pub digest: String,
    /// The last epoch it refused, if any.
    pub refused: Option<Refused>,
    /// The last epoch it ignored as older than the one it serves, if any.
    pub ignored: Option<u64>,
    /// When this report was written (Unix ms, the edge's clock).
    pub heartbeat_ms: u64,
    /// gtmd's version on the edge.
    pub version: String,
    /// A random number drawn at the edge's start: a report under this edge's name with
    /// another one was written by another gtmd (edge names must be unique).
    #[serde(default)]
    pub boot: u64,
    /// The key it follows: `current`, `canary` or `pin` (empty: none yet).
    #[serde(default)]
    pub follows: String,
    /// Why the bundle of the epoch it should serve could not be fetched yet (`epoch N:
    /// why`): it tries again, and never refuses an epoch for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
}

/// Connects to the first reachable of `urls`, failing fast (no endless retry inside the
/// client: the caller decides when to try again).
async fn connect(urls: &[String], name: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .max_reconnects(Some(3))
        .connect(urls)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", urls.join(",")))
}

/// The three buckets, created when missing.
async fn buckets(
    js: &jetstream::Context,
) -> Result<(kv::Store, object_store::ObjectStore, kv::Store), String> {
    let config = kv_bucket(
        js,
        BucketSpec {
            name: CONFIG_BUCKET,
            description: "gtmd: the current configuration epoch",
            history: 16,
            max_age: None,
            memory: false,
        },
    )
    .await?;
    let epochs = match js.get_object_store(EPOCH_BUCKET).await {
        Ok(s) => s,
        Err(_) => {
            let made = js
                .create_object_store(object_store::Config {
                    bucket: EPOCH_BUCKET.into(),
                    description: Some("gtmd: configuration bundles by epoch".into()),
                    num_replicas: replicas(),
                    ..Default::default()
                })
                .await;
            // The first look may have failed for a moment (a cluster electing a leader)
            // while the store exists (then made with other settings, it is refused).
            match made {
                Ok(s) => s,
                Err(e) => js
                    .get_object_store(EPOCH_BUCKET)
                    .await
                    .map_err(|_| format!("cannot create object store {EPOCH_BUCKET}: {e}"))?,
            }
        }
    };
    let spec = BucketSpec {
        name: EDGE_BUCKET,
        description: "gtmd: what each edge serves",
        history: 1,
        max_age: Some(Duration::from_secs(3600)),
        memory: false,
    };
    let edges = kv_bucket(js, spec).await?;
    Ok((config, epochs, edges))
}

/// What a KV bucket is made with.
struct BucketSpec<'a> {
    name: &'a str,
    description: &'a str,
    /// Values kept per key.
    history: i64,
    /// Values older than this are removed.
    max_age: Option<Duration>,
    /// Kept in memory (lost when the engine restarts) rather than on disk.
    memory: bool,
}

/// A KV bucket, created when missing. Created as its stream (what `create_key_value`
/// makes: `KV_<bucket>` on `$KV.<bucket>.>`, one message per key and revision, rollups,
/// direct gets): `create_key_value` first reads the account's limits, whose reply from
/// Debian's nats-server 2.9 async-nats 0.52 cannot parse.
async fn kv_bucket(js: &jetstream::Context, spec: BucketSpec<'_>) -> Result<kv::Store, String> {
    // Several edges starting together create the buckets together: on a cluster, a
    // bucket another one just made can be "not found" for a moment while its stream is
    // placed (seen as a first session failing, then a 5 s pause before the next).
    let mut tries = 0;
    loop {
        match kv_bucket_once(js, &spec).await {
            Err(e) if tries < 20 && e.contains("not found") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => return r,
        }
    }
}

/// [`kv_bucket`]'s one try.
async fn kv_bucket_once(
    js: &jetstream::Context,
    spec: &BucketSpec<'_>,
) -> Result<kv::Store, String> {
    let bucket = spec.name;
    if let Ok(s) = js.get_key_value(bucket).await {
        return Ok(s);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(spec.description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: spec.history,
        max_age: spec.max_age.unwrap_or_default(),
        storage: if spec.memory {
            jetstream::stream::StorageType::Memory
        } else {
            jetstream::stream::StorageType::File
        },
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas(),
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .or_else(|e| {
        // Made meanwhile, or there all along while the first look failed for a moment:
        // found by the look below.
        if e.to_string().contains("already in use") {
            Ok(())
        } else {
            Err(format!("cannot create KV bucket {bucket}: {e}"))
        }
    })?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("cannot open KV bucket {bucket}: {e}"))
}

/// The engine's clock, as a command sees it: the time the engine stamped on a value the
/// command wrote (in [`EDGE_BUCKET`], whose stream stamps the edges' reports too), carried
/// forward by this host's monotonic clock. Reports are fresh or stale by the engine's
/// time alone: neither an edge's clock nor this host's wall clock counts, so a skewed
/// clock can make no stale report fresh nor a fresh one stale.
pub(crate) struct EngineClock {
    at_ms: u64,
    read: std::time::Instant,
    /// Not read but bounded from below by the reports seen ([`Self::observe`]).
    bound: bool,
}

impl EngineClock {
    /// Writes [`CLOCK_KEY`] and reads back the engine's stamp on it (from the stream's
    /// leader, which stamped it: a replica may not hold it yet). When the engine refuses
    /// the write (a user without write access to [`EDGE_BUCKET`]), the newest edge
    /// report's stamp stands in: a lower bound of the engine's time (said), raised by
    /// every newer report seen.
    pub(crate) async fn read(edges: &kv::Store) -> Result<Self, String> {
        let fail = |e: String| format!("cannot read the engine's clock ({CLOCK_KEY}): {e}");
        let seq = match edges.put(CLOCK_KEY, Vec::new().into()).await {
            Ok(seq) => seq,
            Err(e) => return Self::from_reports(edges, &e.to_string()).await,
        };
        let read = std::time::Instant::now();
        test_pause("clock").await;
        let m = stamped_at(&edges.stream, &format!("{}{CLOCK_KEY}", edges.prefix), seq)
            .await
            .map_err(fail)?;
        let at = m.time.unix_timestamp_nanos() / 1_000_000;
        Ok(Self {
            at_ms: u64::try_from(at).unwrap_or(0),
            read,
            bound: false,
        })
    }

    /// The newest stamp on an edge's report, after `why` kept [`CLOCK_KEY`] from being
    /// written: the engine's time is that or later, so a report may look fresher than it
    /// is (by the time since the newest one was written), never staler.
    async fn from_reports(edges: &kv::Store, why: &str) -> Result<Self, String> {
        let read = std::time::Instant::now();
        let newest = edge_reports(edges)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the engine's clock: cannot write {CLOCK_KEY} ({why}) nor \
                     read the edges' reports ({e})"
                )
            })?
            .into_iter()
            .map(|(_, at)| at)
            .max();
        eprintln!(
            "gtmd: warning: cannot write {CLOCK_KEY} in {EDGE_BUCKET} ({why}; commands need \
             write access to it): the newest edge report's time stands in for the engine's: \
             a report may look fresher than it is, by up to that report's age"
        );
        // No report yet: none to judge; the first one seen sets the bound.
        Ok(Self {
            at_ms: newest.unwrap_or(0),
            read,
            bound: true,
        })
    }

    /// Only a lower bound of the engine's time (its clock key could not be written): a
    /// report may look fresher than it is.
    pub(crate) fn only_bound(&self) -> bool {
        self.bound
    }

    /// A report the engine stamped at `at_ms` was seen: when this clock is only a lower
    /// bound, the engine's time is at least that.
    pub(crate) fn observe(&mut self, at_ms: u64) {
        if self.bound && at_ms > self.now_ms() {
            self.at_ms = at_ms;
            self.read = std::time::Instant::now();
        }
    }

    /// The engine's time now (Unix ms).
    pub(crate) fn now_ms(&self) -> u64 {
        self.at_ms + self.read.elapsed().as_millis() as u64
    }

    /// Whether a report the engine stamped at `at_ms` is fresh (younger than [`FRESH`]).
    pub(crate) fn fresh(&self, at_ms: u64) -> bool {
        fresh(at_ms, self.now_ms())
    }
}

/// The message this command wrote at `seq` on `subject`, or the one written after it
/// there: the bucket keeps one value per key, so another command's write of the same key
/// between this one's and the read removes it (then the later one, stamped later, stands
/// in; its stamp is the engine's time at or after this write).
async fn stamped_at(
    stream: &jetstream::stream::Stream,
    subject: &str,
    seq: u64,
) -> Result<jetstream::message::StreamMessage, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_raw_message(seq).await {
        Ok(m) => return Ok(m),
        Err(e) if e.kind() != LastRawMessageErrorKind::NoMessageFound => return Err(e.to_string()),
        Err(_) => {}
    }
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) if m.sequence >= seq => Ok(m),
        Ok(m) => Err(format!(
            "message {seq} is gone and the last of {subject} is older ({})",
            m.sequence
        )),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
            Err(format!("message {seq} is gone and {subject} holds none"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A report stamped `at_ms` is fresh at engine time `now_ms` when younger than [`FRESH`];
/// one stamped after `now_ms` (another replica's clock, a leader change) is fresh.
fn fresh(at_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(at_ms) < FRESH.as_millis() as u64
}

/// When the engine stored `e` (Unix ms, its clock).
fn engine_ms(e: &kv::Entry) -> u64 {
    u64::try_from(e.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Every edge's last report (unreadable ones skipped), with when the engine stored it
/// (Unix ms, the engine's clock: an edge's own clock may be off).
async fn edge_reports(edges: &kv::Store) -> Result<Vec<(EdgeStatus, u64)>, String> {
    let mut out = Vec::new();
    for k in subjects(&edges.stream, &edges.prefix).await? {
        if let Some(e) = edges.entry(&k).await.map_err(|e| e.to_string())? {
            if let Ok(s) = serde_json::from_slice::<EdgeStatus>(&e.value) {
                out.push((s, engine_ms(&e)));
            }
        }
    }
    Ok(out)
}

/// The subjects under `prefix` that hold a message in `stream`, `prefix` cut off (a KV
/// bucket's keys, deleted ones included). From the stream's info, paged requests: not a
/// consumer, whose end async-nats finds by a pending count the server may keep stale (seen
/// with a cluster of nats-servers 2.9: a listing that never ends, or ends a heartbeat late).
async fn subjects(stream: &jetstream::stream::Stream, prefix: &str) -> Result<Vec<String>, String> {
    use futures_util::TryStreamExt;
    let mut info = stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| format!("cannot list {prefix}>: {e}"))?;
    let mut out = Vec::new();
    while let Some((subject, _)) = info
        .try_next()
        .await
        .map_err(|e| format!("cannot list {prefix}>: {e}"))?
    {
        if let Some(k) = subject.strip_prefix(prefix) {
            out.push(k.to_string());
        }
    }
    Ok(out)
}

/// The bundles in [`EPOCH_BUCKET`] (deleted ones left out), read from its stream's
/// subjects of object metadata, one by one (see [`subjects`]).
async fn list_objects(js: &jetstream::Context) -> Result<Vec<object_store::ObjectInfo>, String> {
    let stream = js
        .get_stream(format!("OBJ_{EPOCH_BUCKET}"))
        .await
        .map_err(|e| format!("cannot open {EPOCH_BUCKET}: {e}"))?;
    let prefix = format!("$O.{EPOCH_BUCKET}.M.");
    let mut out = Vec::new();
    for k in subjects(&stream, &prefix).await? {
        let m = stream
            .get_last_raw_message_by_subject(&format!("{prefix}{k}"))
            .await
            .map_err(|e| format!("cannot read {EPOCH_BUCKET}: {e}"))?;
        if let Ok(o) = serde_json::from_slice::<object_store::ObjectInfo>(&m.payload) {
            if !o.deleted {
                out.push(o);
            }
        }
    }
    Ok(out)
}

/// A command's deadline: a fixed time, pushed back while a transfer makes progress (a
/// chunk of a bundle sent and acknowledged, or received): a large bundle on a slow link
/// takes as long as it needs, an engine that stops answering is given up on `stall`
/// after its last answer. One per runtime thread (`Rc`).
#[derive(Clone)]
pub(crate) struct Deadline {
    at: std::rc::Rc<std::cell::Cell<tokio::time::Instant>>,
    stall: Duration,
}

impl Deadline {
    /// Ends `total` from now, or `stall` after the last progress, whichever is later.
    pub(crate) fn new(total: Duration, stall: Duration) -> Self {
        Self {
            at: std::rc::Rc::new(std::cell::Cell::new(tokio::time::Instant::now() + total)),
            stall,
        }
    }

    /// A transfer moved on: the deadline is at least `stall` from now.
    pub(crate) fn progress(&self) {
        let t = tokio::time::Instant::now() + self.stall;
        if t > self.at.get() {
            self.at.set(t);
        }
    }

    /// A step of `by` begins (waiting for the edges once the change is made): the
    /// deadline is at least `by` and the stall bound from now, so that the change made is
    /// reported rather than cut off as "no answer".
    pub(crate) fn extend(&self, by: Duration) {
        let t = tokio::time::Instant::now() + by + self.stall;
        if t > self.at.get() {
            self.at.set(t);
        }
    }

    /// `f`'s output, or `None` when the deadline passed first.
    pub(crate) async fn run<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        tokio::pin!(f);
        loop {
            let at = self.at.get();
            tokio::select! {
                r = &mut f => return Some(r),
                () = tokio::time::sleep_until(at) => {
                    if self.at.get() <= tokio::time::Instant::now() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Bytes read from a slice, each read a sign of progress: the object store reads the next
/// chunk once the engine acknowledged the last one.
pub(crate) struct Paced<'a> {
    data: &'a [u8],
    deadline: &'a Deadline,
    /// The first read comes before the engine acknowledged anything: no progress yet.
    first: bool,
}

impl<'a> Paced<'a> {
    pub(crate) fn new(data: &'a [u8], deadline: &'a Deadline) -> Self {
        Self {
            data,
            deadline,
            first: true,
        }
    }
}

impl tokio::io::AsyncRead for Paced<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        if !std::mem::take(&mut self.first) {
            self.deadline.progress();
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// Test hook (`GTMD_TEST_PAUSE=STEP:FILE`, for the integration tests, which must stop a
/// command at a chosen step, not guess when it gets there): at `step`, creates
/// `FILE.waiting`, then waits until FILE exists. Nothing without the variable.
pub(crate) async fn test_pause(step: &str) {
    let Some(v) = std::env::var_os("GTMD_TEST_PAUSE") else {
        return;
    };
    let v = v.to_string_lossy();
    let Some(file) = v.strip_prefix(step).and_then(|r| r.strip_prefix(':')) else {
        return;
    };
    let _ = std::fs::write(format!("{file}.waiting"), b"");
    while !std::path::Path::new(file).exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Test hook (`GTMD_TEST_LOSE_ACK=STEP`): the first write at `step` that the engine took
/// is taken for an error, as when its acknowledgement is lost (a leader election).
pub(crate) fn test_lose_ack(step: &str) -> bool {
    static LOST: AtomicUsize = AtomicUsize::new(0);
    std::env::var("GTMD_TEST_LOSE_ACK").is_ok_and(|v| v == step)
        && LOST.fetch_add(1, Ordering::Relaxed) == 0
}

/// A current-thread runtime (I/O and timers) for the fleet thread or `gtmd publish`.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

#[cfg(test)]
mod tests {
    use super::{fresh, percentile, Canary, Selector};

    /// Freshness is the engine's stamp against the engine's time: 29.9 s old is fresh, 30 s
    /// is not, a stamp ahead of the engine's time (another replica's clock) is fresh.
    #[test]
    fn freshness_is_measured_on_the_engine_clock() {
        let now = 1_700_000_000_000;
        assert!(fresh(now - 29_900, now));
        assert!(!fresh(now - 30_000, now));
        assert!(fresh(now + 5_000, now));
    }

    /// A canary as publish writes it parses; garbage says what is wrong with it.
    #[test]
    fn a_malformed_canary_says_what_is_wrong() {
        let good = r#"{"epoch":2,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","object":"epoch-2-000000000000","size":10,"published_ms":1,"source":"x","selector":{"edges":["e1"],"percent":0}}"#;
        assert!(Canary::parse(good.as_bytes()).is_ok());
        for (bad, why) in [
            ("{", "not a canary: EOF"),
            (r#"{"epoch":"x"}"#, "not a canary: missing field `selector`"),
            (
                &good.replace(r#""percent":0"#, r#""percent":150"#),
                "percent 150 is above 100",
            ),
            (
                &good.replace(r#""edges":["e1"]"#, r#""edges":[]"#),
                "names no edge",
            ),
            (&good.replace(r#""e1""#, r#""e 1""#), "edge name 'e 1'"),
            (&good.replace(r#""epoch":2"#, r#""epoch":0"#), "epoch 0"),
            (&good.replace("sha256:0", "sha256:x"), "is not sha256:HEX"),
        ] {
            let err = Canary::parse(bad.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn selector_parses_names_and_one_percentage() {
        let s = Selector::parse("e1, e2,10%,e1").unwrap();
        assert_eq!(
            (s.edges.as_slice(), s.percent),
            (&["e1".to_string(), "e2".into()][..], 10)
        );
        assert_eq!(s.to_string(), "e1,e2,10%");
        for bad in ["0%", "101%", "x%", "a b", "", "10%,20%"] {
            assert!(Selector::parse(bad).is_err(), "{bad} accepted");
        }
    }

    /// Named edges always match; a percentage takes about that share of names, the same
    /// ones each time, and 100% takes all.
    #[test]
    fn selector_percentage_is_a_stable_share_of_the_hash_space() {
        let names: Vec<String> = (0..2000).map(|i| format!("edge-{i}")).collect();
        let half = Selector::parse("50%").unwrap();
        let n = names.iter().filter(|e| half.matches(e)).count();
        assert!((850..1150).contains(&n), "{n} of 2000 in 50%");
        let all = Selector::parse("100%").unwrap();
        assert!(names.iter().all(|e| all.matches(e)));
        let named = Selector::parse("edge-7").unwrap();
        assert!(named.matches("edge-7") && !named.matches("edge-8"));
        assert_eq!(percentile("edge-7"), percentile("edge-7"));
        assert!(names.iter().all(|e| percentile(e) < 100));
    }
}
