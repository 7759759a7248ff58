//! `gtmd publish`: a configuration, checked and bundled, stored as the next epoch; then
//! the edges' reports, waited for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, object_store};

use super::bundle::{self, Bundle};
use super::{
    Canary, Deadline, EdgeStatus, EngineClock, Paced, Pointer, Selector, CANARY, CONFIG_BUCKET,
    CURRENT, FRESH, HEARTBEAT, PIN,
};
use crate::control::ops::unix_ms;

/// Arguments of `gtmd publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The configuration to publish (TOML): checked as `gtmd check` checks it.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// NATS servers (nats://HOST:PORT, comma-separated or repeated). Default: the
    /// configuration's own [fleet] nats list.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// Seconds to wait for every edge (those that reported in the last 30 s) to apply or
    /// refuse the epoch; 0 publishes without waiting.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
    /// Bundles of the last N epochs stay in the engine; older ones are removed once this
    /// epoch is published (edges keep what they serve on their own disk).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: u64,
    /// Publish as a canary: only the edges SELECTOR names take the epoch, the others keep
    /// `current`, until `gtmd promote` makes it every edge's or `gtmd abort` withdraws it.
    /// SELECTOR is edge names and at most one percentage, comma-separated (`e1,e2`, `10%`,
    /// `e1,25%`): P% takes the edges whose name's hash falls in the first P of 100 buckets
    /// (the same edges every time). --wait then waits for those edges only. Refused while
    /// another canary is out.
    #[arg(long, value_name = "SELECTOR", value_parser = Selector::parse)]
    pub canary: Option<Selector>,
    /// Copies the engine keeps of each bucket this publish creates (1 to 5; 3 in a
    /// cluster of 3 nats-servers). Default: the configuration's [fleet] replicas, else 1.
    /// A bucket that exists keeps its own.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,
    /// Seconds the engine has to take the epoch: an engine error is tried again every
    /// 2 s until then (a cluster electing a leader), then publish gives up (exit 2). A
    /// bundle still uploading is given up only after this long without an acknowledged
    /// chunk. The wait for the edges (--wait) comes on top.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Exit codes.
pub(super) const OK: u8 = 0;
pub(super) const INVALID: u8 = 1;
pub(super) const ENGINE: u8 = 2;
pub(super) const PENDING: u8 = 3;

/// Runs `gtmd publish`; returns the exit code.
pub fn run(args: PublishArgs) -> u8 {
    let (checked, read) =
        crate::config::reads::recording(|| crate::control::check(Some(&args.config)));
    let cfg = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("gtmd publish: the configuration is not valid: nothing was published");
            return INVALID;
        }
    };
    if let Some(e) = written_in_folder(&cfg, &args.config) {
        eprintln!("{e}");
        eprintln!("gtmd publish: nothing was published");
        return INVALID;
    }
    let (bundle, local) = match collect(&args.config, &read) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gtmd publish: {e}");
            return INVALID;
        }
    };
    super::set_replicas(
        args.replicas
            .map_or_else(|| cfg.fleet.as_ref().map_or(1, |f| f.replicas), usize::from),
    );
    let urls = if args.nats.is_empty() {
        cfg.fleet.map(|f| f.nats).unwrap_or_default()
    } else {
        args.nats.clone()
    };
    if let Some(bad) = urls
        .iter()
        .find_map(|u| crate::config::fleet::bad_nats_url(u))
    {
        eprintln!("gtmd publish: --nats: {bad}");
        return INVALID;
    }
    if urls.is_empty() {
        eprintln!("gtmd publish: no NATS server: give --nats URL (or a [fleet] nats list in the configuration)");
        return INVALID;
    }
    for l in &local {
        println!("edge-local (each edge reads its own): {}", l.display());
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gtmd publish: cannot start the runtime: {e}");
            return ENGINE;
        }
    };
    rt.block_on(publish(&args, &urls, &bundle))
}

/// A file gtmd writes (`control.state-file`, the `[dnstap]` file or socket) named by a
/// relative path: on an edge it would lie in the epoch's folder, which the next epoch
/// replaces (overrides lost, a query log cut short). Such paths must be absolute.
fn written_in_folder(cfg: &crate::config::Config, main: &Path) -> Option<String> {
    use crate::config::dnstap::Sink;
    let base = main.parent().unwrap_or(Path::new(""));
    let mut written: Vec<(&str, &Path)> = Vec::new();
    if let Some(p) = &cfg.control.state_file {
        written.push(("control.state-file", p));
    }
    match cfg.dnstap.as_ref().map(|d| &d.sink) {
        Some(Sink::File(p)) => written.push(("dnstap.file", p)),
        Some(Sink::Socket(p)) => written.push(("dnstap.socket", p)),
        None => {}
    }
    let (field, p) = written
        .into_iter()
        .find(|(_, p)| (base.is_absolute() || p.is_relative()) && p.starts_with(base))?;
    Some(format!(
        "{}: {field}: {} is a relative path: on an edge it would lie in the epoch's folder, \
         which the next epoch replaces; name it by an absolute path",
        main.display(),
        p.display()
    ))
}

/// The bundle of the files `read` that lie in the main file's folder or below, checked
/// by loading it back from a scratch folder as an edge will; and the files read from
/// elsewhere (edge-local).
fn collect(main: &Path, read: &[PathBuf]) -> Result<(Bundle, Vec<PathBuf>), String> {
    let base = main.parent().unwrap_or(Path::new(""));
    let mut b = Bundle {
        main: bundle::inside(base, main)
            .ok_or_else(|| format!("{}: not a file name", main.display()))?,
        files: Vec::new(),
    };
    for p in read {
        // Written relative (joined to a relative folder, or under an absolute one) yet
        // not inside it: it climbs out with `..`.
        let relative = base.is_absolute() || p.is_relative();
        if relative && p.starts_with(base) && bundle::inside(base, p).is_none() {
            return Err(format!(
                "{}: a relative path that leaves the configuration's folder: bundles carry the \
                 folder and below; name it by an absolute path to make it edge-local (each \
                 edge reads its own): nothing was published",
                p.display()
            ));
        }
        if let Some(rel) = bundle::inside(base, p) {
            let data = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            b.files.push((rel, data));
        }
    }
    let scratch = private_dir()?;
    let root = scratch.join("bundle");
    let unpacked = b.unpack(&root);
    let checked = unpacked
        .map_err(|e| format!("cannot write {}: {e}", scratch.display()))
        .map(|m| crate::config::reads::recording(|| crate::control::check(Some(&m))));
    let _ = std::fs::remove_dir_all(&scratch);
    let (result, read_there) = checked?;
    if let Err(e) = result {
        return Err(format!(
            "{e}\nthe bundle does not load as an edge will read it (from a folder of its own): \
             nothing was published"
        ));
    }
    // A file of the folder named by an absolute path is read from the edge's own disk:
    // it does not travel.
    let used: Vec<String> = read_there
        .iter()
        .filter_map(|p| bundle::inside(&root, p))
        .collect();
    b.files.retain(|(p, _)| used.contains(p));
    let local = read_there
        .into_iter()
        .filter(|p| !p.starts_with(&root))
        .collect();
    Ok((b, local))
}

/// The engine's buckets, and the epoch stored.
struct Stored {
    p: Pointer,
    js: jetstream::Context,
    config: kv::Store,
    epochs: object_store::ObjectStore,
    edges: kv::Store,
}

/// Stores the bundle as the next epoch, then waits for the edges.
async fn publish(args: &PublishArgs, urls: &[String], b: &Bundle) -> u8 {
    let blob = b.encode();
    let limit = Duration::from_secs(args.timeout);
    // --timeout from the start, or without an acknowledged chunk: a large bundle on a
    // slow link is not cut off (and started over) for its size.
    let deadline = Deadline::new(limit, limit);
    let mut last = String::new();
    let stored = deadline
        .run(store_until(args, urls, &blob, &deadline, &mut last))
        .await
        .flatten();
    let s = match stored {
        Some(Ok(s)) => s,
        Some(Err(blocked)) => {
            eprintln!("gtmd publish: {blocked}: nothing was published");
            return INVALID;
        }
        None => {
            eprintln!("gtmd publish: {}", no_answer(args.timeout, &last));
            return ENGINE;
        }
    };
    let p = &s.p;
    match &args.canary {
        Some(sel) => println!(
            "published epoch {} as a canary for {sel} ({}, {} files, {} bytes)",
            p.epoch,
            p.digest,
            b.files.len(),
            p.size
        ),
        None => println!(
            "published epoch {} ({}, {} files, {} bytes)",
            p.epoch,
            p.digest,
            b.files.len(),
            p.size
        ),
    }
    // The epoch is out whatever happens to the old bundles: bounded on its own.
    let pruning = async {
        super::test_pause("prune").await;
        prune(&s.config, (&s.js, &s.epochs), p.epoch, args.keep).await;
    };
    if tokio::time::timeout(limit, pruning).await.is_err() {
        eprintln!(
            "gtmd publish: no old bundle removed: the engine did not answer in {} s \
             (--timeout); the next publish removes them",
            args.timeout
        );
    }
    if args.wait == 0 {
        return OK;
    }
    let scope = args.canary.as_ref();
    let waiting = Duration::from_secs(args.wait);
    let waited = wait((&s.config, &s.edges), p, scope, waiting);
    match tokio::time::timeout(waiting + limit, waited).await {
        Ok(code) => code,
        Err(_) => {
            eprintln!(
                "gtmd publish: epoch {} is published, but {}",
                p.epoch,
                no_answer(args.wait + args.timeout, "while waiting for the edges")
            );
            ENGINE
        }
    }
}

/// The message of a command the engine did not answer in `secs` (`--timeout`).
pub(super) fn no_answer(secs: u64, last: &str) -> String {
    let last = if last.is_empty() {
        String::new()
    } else {
        format!(" ({last})")
    };
    format!("the engine did not answer in time: gave up after {secs} s{last} (--timeout)")
}

/// Connects and stores the epoch, trying again 2 s after an engine error (a cluster
/// electing a new leader after losing a server answers nothing for a while) for as long
/// as the caller lets it run and for no new try past `--timeout` from the first (then
/// `None`); `last` holds the last error. `Err(why)`: the epoch cannot go out (a canary is
/// out).
async fn store_until(
    args: &PublishArgs,
    urls: &[String],
    blob: &[u8],
    deadline: &Deadline,
    last: &mut String,
) -> Option<Result<Stored, String>> {
    // The pointer last written, kept across tries: a write whose acknowledgement was
    // lost may have landed.
    let mut attempted: Option<Attempt> = None;
    // Tries begin only within --timeout of the first: an engine that answers but refuses
    // every try (no room left, no right to the pointer) must not be tried for ever, each
    // try's upload moving the deadline on.
    let start = tokio::time::Instant::now();
    let tries_for = Duration::from_secs(args.timeout);
    loop {
        let r = async {
            let client = super::connect(urls, "gtmd publish").await?;
            let js = jetstream::new(client);
            let (config, epochs, edges) = super::buckets(&js).await?;
            let buckets = (&config, &epochs, &edges);
            let p = match store(args, &js, buckets, (blob, deadline), &mut attempted).await? {
                Ok(p) => p,
                Err(blocked) => return Ok(Err(blocked)),
            };
            Ok::<_, String>(Ok(Stored {
                p,
                js,
                config,
                epochs,
                edges,
            }))
        }
        .await;
        match r {
            Ok(r) => return Some(r),
            Err(e) if start.elapsed() + Duration::from_secs(2) >= tries_for => {
                // No time for another try: ends at --timeout, as one that never answered.
                *last = e;
                tokio::time::sleep_until(start + tries_for).await;
                return None;
            }
            Err(e) => {
                eprintln!("gtmd publish: {e}: trying again in 2 s");
                *last = e;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What the `canary` key holds.
pub(super) enum CanaryKey {
    /// Nothing (or deleted).
    None,
    /// A canary, and its revision.
    Out(Canary, u64),
    /// A value that is no canary: what is wrong with it, and its revision.
    Malformed(String, u64),
}

impl CanaryKey {
    fn of(value: Option<(&[u8], u64)>) -> Self {
        match value {
            None => Self::None,
            Some((v, revision)) => match Canary::parse(v) {
                Ok(c) => Self::Out(c, revision),
                Err(why) => Self::Malformed(why, revision),
            },
        }
    }
}

/// What to say of a `canary` key that holds no canary.
pub(super) fn malformed(why: &str) -> String {
    format!(
        "the key {CANARY} of {CONFIG_BUCKET} holds no valid canary ({why}): `gtmd abort` \
         removes it"
    )
}

/// What the `canary` key holds.
pub(super) async fn canary_key(config: &kv::Store) -> Result<CanaryKey, String> {
    let e = config
        .entry(CANARY)
        .await
        .map_err(|e| format!("cannot read {CANARY}: {e}"))?
        .filter(|e| e.operation == kv::Operation::Put);
    Ok(CanaryKey::of(
        e.as_ref().map(|e| (&e.value[..], e.revision)),
    ))
}

/// The canary out, if any, with its revision (a value that is no canary: an error).
pub(super) async fn canary(config: &kv::Store) -> Result<Option<(Canary, u64)>, String> {
    match canary_key(config).await? {
        CanaryKey::None => Ok(None),
        CanaryKey::Out(c, revision) => Ok(Some((c, revision))),
        CanaryKey::Malformed(why, _) => Err(malformed(&why)),
    }
}

/// The pointer `current` holds (none before the first publish) and its entry, for a
/// compare-and-set.
pub(super) async fn current(
    config: &kv::Store,
) -> Result<(Option<Pointer>, Option<kv::Entry>), String> {
    let cur = config
        .entry(CURRENT)
        .await
        .map_err(|e| format!("cannot read {CURRENT}: {e}"))?;
    let p = cur
        .as_ref()
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| serde_json::from_slice::<Pointer>(&e.value).ok());
    Ok((p, cur))
}

/// The next epoch's number: above `current`, the canary and every epoch an edge reports
/// applying or refusing.
pub(super) async fn next_epoch(
    config: &kv::Store,
    edges: &kv::Store,
    current: Option<&Pointer>,
) -> Result<u64, String> {
    let canary = canary(config).await.ok().flatten();
    let canary = canary.map(|(c, _)| c.pointer.epoch);
    above(edges, [current.map(|p| p.epoch), canary]).await
}

/// The next epoch's number: above `known` and every epoch an edge reports applying or
/// refusing.
async fn above(edges: &kv::Store, known: [Option<u64>; 2]) -> Result<u64, String> {
    let reported = super::edge_reports(edges).await?;
    let seen = reported
        .iter()
        .flat_map(|(s, _)| [Some(s.epoch), s.refused.as_ref().map(|r| r.epoch)])
        .chain(known)
        .flatten()
        .max()
        .unwrap_or(0);
    Ok(seen + 1)
}

/// Stores `blob` as epoch `epoch`'s bundle (`epoch-N-DIGEST`), its pointer in the
/// object's metadata (what `gtmd pin` finds it by).
pub(super) async fn upload(
    epochs: &object_store::ObjectStore,
    epoch: u64,
    (blob, deadline): (&[u8], &Deadline),
    source: String,
) -> Result<Pointer, String> {
    let digest = bundle::digest(blob);
    // The digest in the name: two publishes racing for one number never overwrite
    // each other's bundle (the loser's compare-and-set fails and it takes the next).
    let object = format!("epoch-{epoch}-{}", digest.get(7..19).unwrap_or("x"));
    let p = Pointer {
        epoch,
        digest,
        object: object.clone(),
        size: blob.len() as u64,
        published_ms: unix_ms(),
        source,
    };
    let meta = object_store::ObjectMetadata {
        name: object.clone(),
        metadata: [(
            super::POINTER_META.to_string(),
            serde_json::to_string(&p).map_err(|e| e.to_string())?,
        )]
        .into(),
        ..Default::default()
    };
    epochs
        .put(meta, &mut Paced::new(blob, deadline))
        .await
        .map_err(|e| format!("cannot store {object}: {e}"))?;
    Ok(p)
}

/// Moves `current` to `p` by compare-and-set against `cur` (its entry when read).
pub(super) async fn move_current(
    config: &kv::Store,
    cur: Option<&kv::Entry>,
    p: &Pointer,
) -> Result<(), String> {
    let v = serde_json::to_vec(p).map_err(|e| e.to_string())?;
    match cur {
        Some(e) => config
            .update(CURRENT, v.into(), e.revision)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => config
            .create(CURRENT, v.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// `current` and `canary` as the stream of [`CONFIG_BUCKET`] holds them at its sequence
/// `seq` or later: read from the stream's leader, after `seq` (a replica answering a
/// direct get may lag behind it).
struct Snapshot {
    seq: u64,
    current: Option<Pointer>,
    canary: CanaryKey,
}

impl Snapshot {
    async fn read(config: &kv::Store) -> Result<Self, String> {
        let info = config
            .stream
            .get_info()
            .await
            .map_err(|e| format!("cannot read {CONFIG_BUCKET}: {e}"))?;
        let current = leader_value(config, CURRENT).await?;
        let canary = leader_value(config, CANARY).await?;
        Ok(Self {
            seq: info.state.last_sequence,
            current: current.and_then(|(v, _)| serde_json::from_slice(&v).ok()),
            canary: CanaryKey::of(canary.as_ref().map(|(v, r)| (&v[..], *r))),
        })
    }
}

/// `key`'s value and revision in `config`, from the stream's leader (`None`: absent or
/// deleted).
async fn leader_value(config: &kv::Store, key: &str) -> Result<Option<(Vec<u8>, u64)>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", config.prefix);
    match config
        .stream
        .get_last_raw_message_by_subject(&subject)
        .await
    {
        // A delete or purge is a message with a `KV-Operation` header and no value.
        Ok(m) if m.headers.get("KV-Operation").is_some() => Ok(None),
        Ok(m) => Ok(Some((m.payload.to_vec(), m.sequence))),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("cannot read {key}: {e}")),
    }
}

/// Writes `key` = `value` in `config` when nothing was written in the bucket since
/// sequence `seq` (a compare-and-set on the whole bucket: `current` and `canary` are both
/// as they were read); false when something was.
async fn write_at(
    js: &jetstream::Context,
    config: &kv::Store,
    (key, value): (&str, Vec<u8>),
    seq: u64,
) -> Result<bool, String> {
    use async_nats::jetstream::{context::PublishErrorKind, message::PublishMessage};
    let subject = format!("{}{key}", config.prefix);
    let msg = PublishMessage::build()
        .payload(value.into())
        .expected_last_sequence(seq);
    let ack = js
        .send_publish(subject, msg)
        .await
        .map_err(|e| format!("cannot write {key}: {e}"))?
        .await;
    match ack {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
        Err(e) => Err(format!("cannot write {key}: {e}")),
    }
}

/// A write of the pointer that may have landed though its acknowledgement was lost.
struct Attempt {
    p: Pointer,
    key: &'static str,
    value: Vec<u8>,
    /// The stream sequence it has if it landed: it was a compare-and-set against the one
    /// before.
    seq: u64,
}

impl Attempt {
    /// Whether the engine took it: the bucket's message at its sequence is it (however
    /// many writes came after), or, should that be gone, the key still holds the same
    /// pointer (epoch, object, digest, time).
    async fn landed(&self, config: &kv::Store, snap: &Snapshot) -> Result<bool, String> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        if snap.seq < self.seq {
            return Ok(false);
        }
        let subject = format!("{}{}", config.prefix, self.key);
        match config.stream.get_raw_message(self.seq).await {
            Ok(m) => return Ok(m.subject.as_str() == subject && m.payload[..] == self.value[..]),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(format!("cannot read {CONFIG_BUCKET}: {e}")),
        }
        Ok(match (self.key, &snap.canary) {
            (CANARY, CanaryKey::Out(c, _)) => c.pointer == self.p,
            (CURRENT, _) => snap.current.as_ref() == Some(&self.p),
            _ => false,
        })
    }
}

/// Uploads `epoch-N-DIGEST` and points `current` (or, for a canary, `canary`) at it,
/// when no canary is out (else `Ok(Err(why))`), in one step: the check and the write are
/// one compare-and-set on the bucket's sequence, so no other publish, canary or promote
/// can come between them. N is above `current`, the canary and every epoch an edge
/// reports. Tried again when another command wrote first. `attempted`: the write an
/// earlier try made, its acknowledgement lost (then it may be in already).
async fn store(
    args: &PublishArgs,
    js: &jetstream::Context,
    (config, epochs, edges): (&kv::Store, &object_store::ObjectStore, &kv::Store),
    blob: (&[u8], &Deadline),
    attempted: &mut Option<Attempt>,
) -> Result<Result<Pointer, String>, String> {
    const TRIES: u32 = 5;
    for _ in 0..TRIES {
        if attempted.is_some() {
            super::test_pause("landed").await;
        }
        let snap = Snapshot::read(config).await?;
        if let Some(a) = attempted.as_ref() {
            if a.landed(config, &snap).await? {
                eprintln!(
                    "gtmd publish: the pointer to epoch {} was written, its acknowledgement lost",
                    a.p.epoch
                );
                return Ok(Ok(a.p.clone()));
            }
        }
        match &snap.canary {
            CanaryKey::Out(c, _) => {
                return Ok(Err(format!(
                    "a canary is out (epoch {} for {}): `gtmd promote` or `gtmd abort` it first",
                    c.pointer.epoch, c.selector
                )))
            }
            CanaryKey::Malformed(why, _) => return Ok(Err(malformed(why))),
            CanaryKey::None => {}
        }
        let epoch = above(edges, [snap.current.as_ref().map(|p| p.epoch), None]).await?;
        let p = upload(epochs, epoch, blob, args.config.display().to_string()).await?;
        super::test_pause("pointer").await;
        let write = match &args.canary {
            Some(sel) => {
                let c = Canary {
                    pointer: p.clone(),
                    selector: sel.clone(),
                };
                (CANARY, serde_json::to_vec(&c).map_err(|e| e.to_string())?)
            }
            None => (CURRENT, serde_json::to_vec(&p).map_err(|e| e.to_string())?),
        };
        *attempted = Some(Attempt {
            p: p.clone(),
            key: write.0,
            value: write.1.clone(),
            seq: snap.seq + 1,
        });
        if write_at(js, config, write, snap.seq).await? {
            if super::test_lose_ack("pointer") {
                return Err(
                    "cannot write the pointer: acknowledgement lost (GTMD_TEST_LOSE_ACK)".into(),
                );
            }
            return Ok(Ok(p));
        }
        eprintln!(
            "gtmd publish: another command wrote {CONFIG_BUCKET} first (compare-and-set lost): \
             reading it again"
        );
    }
    Err(format!(
        "other commands wrote {CONFIG_BUCKET} before each of {TRIES} tries to point at the \
         epoch"
    ))
}

/// Removes the bundles of epochs at or below `epoch - keep`, but for those `current`,
/// the canary or a pin names; a failure is only said.
async fn prune(
    config: &kv::Store,
    (js, epochs): (&jetstream::Context, &object_store::ObjectStore),
    epoch: u64,
    keep: u64,
) {
    let named = match named_epochs(config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("gtmd publish: cannot read the pins ({e}): no old bundle removed");
            return;
        }
    };
    let Ok(list) = super::list_objects(js).await else {
        eprintln!("gtmd publish: cannot list old bundles: none removed");
        return;
    };
    let mut old = Vec::new();
    for o in list {
        let n = o
            .name
            .strip_prefix("epoch-")
            .and_then(|r| r.split('-').next());
        if n.and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n + keep <= epoch && !named.contains(&n))
        {
            old.push(o.name);
        }
    }
    for name in old {
        match epochs.delete(&name).await {
            Ok(()) => println!("removed the bundle of an old epoch: {name}"),
            Err(e) => eprintln!("gtmd publish: cannot remove {name}: {e}"),
        }
    }
}

/// The epochs `current`, the canary and the pins name.
async fn named_epochs(config: &kv::Store) -> Result<Vec<u64>, String> {
    let mut out: Vec<u64> = pins(config).await?.into_values().collect();
    out.extend(current(config).await?.0.map(|p| p.epoch));
    out.extend(
        canary(config)
            .await
            .ok()
            .flatten()
            .map(|(c, _)| c.pointer.epoch),
    );
    Ok(out)
}

/// Every pin, whether its edge reports or not (an edge away for hours still holds its
/// pin): edge -> the epoch it is pinned to. The `pin.` keys from the stream's subjects,
/// then read one by one.
pub(super) async fn pins(
    config: &kv::Store,
) -> Result<std::collections::HashMap<String, u64>, String> {
    let mut out = std::collections::HashMap::new();
    let prefix = format!("{}{PIN}", config.prefix);
    for edge in super::subjects(&config.stream, &prefix).await? {
        let key = format!("{PIN}{edge}");
        let v = config
            .get(&key)
            .await
            .map_err(|e| format!("cannot read {key}: {e}"))?;
        if let Some(p) = v.and_then(|v| serde_json::from_slice::<Pointer>(&v).ok()) {
            out.insert(edge, p.epoch);
        }
    }
    Ok(out)
}

/// A new folder of the temporary folder only this user can enter, its name random: made
/// by one mkdir that fails when the name exists, so nobody else's folder (or symlink) is
/// written into, even by a publish run as root.
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = String::new();
    for _ in 0..8 {
        let mut r = [0u8; 8];
        crate::sys::fill_random(&mut r).map_err(|e| format!("no random source: {e}"))?;
        let dir = std::env::temp_dir().join(format!("gtmd-publish-{:016x}", u64::from_ne_bytes(r)));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = format!("cannot make {}: {e}", dir.display()),
        }
    }
    Err(last)
}

/// What became of the epoch on one edge.
pub(super) enum Outcome {
    Applied,
    Refused(Vec<String>),
    Pending,
}

pub(super) fn outcome(s: &EdgeStatus, p: &Pointer) -> Outcome {
    if s.epoch == p.epoch && s.digest == p.digest || s.epoch > p.epoch {
        Outcome::Applied
    } else if let Some(r) = s.refused.as_ref().filter(|r| r.epoch == p.epoch) {
        Outcome::Refused(r.errors.clone())
    } else {
        Outcome::Pending
    }
}

/// Waits until every fresh edge that should take `p` (the canary's when `canary` is
/// given; never a pinned one) applied or refused it (or `limit`), prints each.
pub(super) async fn wait(
    (config, edges): (&kv::Store, &kv::Store),
    p: &Pointer,
    canary: Option<&Selector>,
    limit: Duration,
) -> u8 {
    let t0 = Instant::now();
    let pins = pins(config).await.unwrap_or_default();
    let mut when: std::collections::HashMap<String, Duration> = Default::default();
    let mut skipped: Vec<String> = Vec::new();
    let mut clock = None;
    let reports = loop {
        let fresh: Vec<EdgeStatus> = match fresh_reports(edges, &mut clock).await {
            Ok(r) => r,
            // Tried again until the limit (a cluster electing a leader).
            Err(e) if t0.elapsed() >= limit => {
                eprintln!("gtmd publish: cannot read the edges' reports: {e}");
                return ENGINE;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        skipped.clear();
        let mut waited = Vec::new();
        for s in fresh {
            if let Some(pin) = pins.get(&s.edge) {
                skipped.push(format!(
                    "{}: pinned to epoch {pin}, serving epoch {}: not waited for",
                    s.edge, s.epoch
                ));
            } else if canary.is_some_and(|c| !c.matches(&s.edge)) {
                skipped.push(format!(
                    "{}: not in the canary, serving epoch {}",
                    s.edge, s.epoch
                ));
            } else {
                waited.push(s);
            }
        }
        for s in &waited {
            if !matches!(outcome(s, p), Outcome::Pending) {
                when.entry(s.edge.clone()).or_insert(t0.elapsed());
            }
        }
        // With no edge fresh yet, two heartbeats' time for one to report (an edge
        // reconnecting to a restarted engine) before there is nobody to wait for.
        let done = waited
            .iter()
            .all(|s| !matches!(outcome(s, p), Outcome::Pending))
            && (!waited.is_empty() || t0.elapsed() >= 2 * HEARTBEAT);
        if done || t0.elapsed() >= limit {
            break waited;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for line in &skipped {
        println!("{line}");
    }
    // A name in the selector that no edge reports under: a typo, or an edge away.
    for name in canary.map_or(&[][..], |c| &c.edges[..]) {
        if !reports.iter().any(|s| &s.edge == name) && !pins.contains_key(name) {
            println!(
                "{name}: named by the canary, but no edge of that name reported in the last {} s",
                FRESH.as_secs()
            );
        }
    }
    if reports.is_empty() {
        match canary {
            Some(c) => println!(
                "no edge that reported in the last {} s is in the canary ({c}): nobody to wait for",
                FRESH.as_secs()
            ),
            None => println!(
                "no edge reported in the last {} s: nobody to wait for",
                FRESH.as_secs()
            ),
        }
        return OK;
    }
    // An edge serving a later epoch than this one: superseded when the engine's pointer
    // (or canary) is at that epoch or later (another publish came after this one), else
    // the engine lost the later epochs (emptied or restored) and this one will never
    // apply.
    let engine_at = match (current(config).await, canary_epoch(config).await) {
        (Ok((c, _)), Ok(k)) => c.map_or(0, |c| c.epoch).max(k),
        _ => u64::MAX,
    };
    print_outcomes(&reports, p, engine_at, &when, limit)
}

/// The reports of the edges that reported in the last [`FRESH`] by the engine's clock
/// (read into `clock` the first time).
pub(super) async fn fresh_reports(
    edges: &kv::Store,
    clock: &mut Option<EngineClock>,
) -> Result<Vec<EdgeStatus>, String> {
    let read = match clock.take() {
        Some(c) => c,
        None => EngineClock::read(edges).await?,
    };
    let clock = clock.insert(read);
    let reports = super::edge_reports(edges).await?;
    for (_, at) in &reports {
        clock.observe(*at);
    }
    Ok(reports
        .into_iter()
        .filter(|(_, at)| clock.fresh(*at))
        .map(|(s, _)| s)
        .collect())
}

/// The canary's epoch (0: none).
async fn canary_epoch(config: &kv::Store) -> Result<u64, String> {
    Ok(canary(config).await?.map_or(0, |(c, _)| c.pointer.epoch))
}

/// Prints what each edge did with `p`; the exit code.
fn print_outcomes(
    reports: &[EdgeStatus],
    p: &Pointer,
    engine_at: u64,
    when: &std::collections::HashMap<String, Duration>,
    limit: Duration,
) -> u8 {
    let mut code = OK;
    for s in reports {
        let took = when.get(&s.edge).map_or(0.0, Duration::as_secs_f64);
        match outcome(s, p) {
            Outcome::Applied if s.epoch > p.epoch && engine_at >= s.epoch => {
                println!("{}: superseded, serving epoch {}", s.edge, s.epoch)
            }
            Outcome::Applied if s.epoch > p.epoch => {
                println!(
                    "{}: NOT APPLIED: serves epoch {}, above this epoch {}, which the engine no \
                     longer has (emptied or restored?): publish again, above it",
                    s.edge, s.epoch, p.epoch
                );
                code = INVALID;
            }
            Outcome::Applied => println!("{}: applied epoch {} in {took:.2} s", s.edge, p.epoch),
            Outcome::Refused(errors) => {
                println!(
                    "{}: REFUSED epoch {} (serving epoch {}):",
                    s.edge, p.epoch, s.epoch
                );
                for e in errors {
                    println!("  {e}");
                }
                code = INVALID;
            }
            Outcome::Pending => {
                let why = s.fetch_error.as_ref().filter(|e| {
                    // Of this epoch: one it followed before is no news.
                    e.starts_with(&format!("epoch {}:", p.epoch))
                });
                println!(
                    "{}: no answer in {} s (serving epoch {}{})",
                    s.edge,
                    limit.as_secs(),
                    s.epoch,
                    why.map_or(String::new(), |w| format!("; cannot fetch {w}"))
                );
                if code == OK {
                    code = PENDING;
                }
            }
        }
    }
    code
}
