//! `gtmd promote`, `gtmd abort`, `gtmd pin` and `gtmd unpin`: the rest of a rollout
//! after `gtmd publish --canary`.
//!
//! Each edge follows `pin.<edge>` when there is one, else `canary` when its selector
//! names the edge, else `current` (the edge side: `edge.rs`). Epochs only move forward:
//! an edge never applies an epoch at or below the one it serves. So `abort` does not
//! point the canary edges back at the older `current`: it republishes `current`'s bundle
//! as a new epoch (a rollback is a new epoch with old content), which every edge takes,
//! then deletes `canary`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, object_store};

use super::publish::{
    canary, canary_key, current, fresh_reports, malformed, move_current, next_epoch, no_answer,
    outcome, upload, wait, CanaryKey, Outcome, ENGINE, INVALID, OK, PENDING,
};
use super::{
    Deadline, EngineClock, Pointer, CANARY, CONFIG_BUCKET, EDGE_BUCKET, EPOCH_BUCKET, FRESH, PIN,
};

/// Where the engine is.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// NATS servers (nats://HOST:PORT, comma-separated or repeated). Default: the [fleet]
    /// nats list of --config.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// A configuration file whose [fleet] nats list names the servers (an edge's file).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the edges concerned to apply the epoch they now follow (those
    /// that reported in the last 30 s; pinned edges are not waited for); 0: do not wait.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
    /// Seconds the engine has to answer (connecting, reading, writing): after that the
    /// command gives up (exit 2). The whole command, the wait for the edges (--wait)
    /// included, ends within --timeout plus --wait, or --timeout after the last chunk of a
    /// bundle `abort` moves.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Arguments of `gtmd promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// Where the engine is, and how long to wait.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Promote even when an edge refused the canary's epoch or a canary edge has not
    /// applied it yet.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `gtmd abort`.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    /// Where the engine is, and how long to wait.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Arguments of `gtmd pin`.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// The edge's name ([fleet] edge).
    #[arg(value_parser = edge_name)]
    pub edge: String,
    /// The epoch it serves from now on, whatever `current` and the canary say (an epoch
    /// whose bundle the engine still has).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub epoch: u64,
    /// Where the engine is, and how long to wait.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Arguments of `gtmd unpin`.
#[derive(Debug, clap::Args)]
pub struct UnpinArgs {
    /// The edge's name ([fleet] edge).
    #[arg(value_parser = edge_name)]
    pub edge: String,
    /// Where the engine is, and how long to wait.
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn edge_name(s: &str) -> Result<String, String> {
    match crate::config::fleet::bad_edge_name(s) {
        Some(why) => Err(format!("edge name {why}")),
        None => Ok(s.to_string()),
    }
}

/// The engine's buckets, as `gtmd publish` made them.
struct Engine {
    js: jetstream::Context,
    config: kv::Store,
    epochs: object_store::ObjectStore,
    edges: kv::Store,
    limit: Duration,
    /// The whole command's.
    deadline: Deadline,
}

/// Runs `body` against the engine `args` names; returns its exit code (2 when the
/// engine cannot be reached or holds no fleet).
fn run<F>(what: &str, args: &EngineArgs, body: F) -> u8
where
    F: for<'a> FnOnce(&'a Engine) -> std::pin::Pin<Box<dyn std::future::Future<Output = u8> + 'a>>,
{
    let urls = match urls(args) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("gtmd {what}: {e}");
            return INVALID;
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gtmd {what}: cannot start the runtime: {e}");
            return ENGINE;
        }
    };
    // Bounded: the client may retry for ever against an engine that went silent. One
    // deadline from the start for the whole command (--timeout + --wait), the engine
    // reached within --timeout of it.
    let limit = Duration::from_secs(args.timeout);
    let wait = Duration::from_secs(args.wait);
    rt.block_on(async {
        let deadline = Deadline::new(limit + wait, limit);
        let mut last = String::new();
        let opened = tokio::time::timeout(limit, open(&urls, what, &mut last)).await;
        let (js, (config, epochs, edges)) = match opened {
            Ok(Ok(engine)) => engine,
            Ok(Err(e)) => {
                eprintln!("gtmd {what}: {e}");
                return ENGINE;
            }
            Err(_) => {
                eprintln!("gtmd {what}: {}", no_answer(args.timeout, &last));
                return ENGINE;
            }
        };
        let engine = Engine {
            js,
            config,
            epochs,
            edges,
            limit: wait,
            deadline: deadline.clone(),
        };
        match deadline.run(body(&engine)).await {
            Some(code) => code,
            None => {
                let secs = args.timeout + args.wait;
                eprintln!("gtmd {what}: {}", no_answer(secs, ""));
                ENGINE
            }
        }
    })
}

/// --nats, else --config's [fleet] nats.
fn urls(args: &EngineArgs) -> Result<Vec<String>, String> {
    let urls = match (&args.nats[..], &args.config) {
        ([], Some(file)) => crate::config::Config::fleet_only(file)
            .map_err(|e| e.to_string())?
            .map(|f| f.nats)
            .ok_or_else(|| format!("{}: no [fleet] section: give --nats URL", file.display()))?,
        ([], None) => {
            return Err(
                "no NATS server: give --nats URL (or --config FILE with [fleet] nats)".into(),
            )
        }
        (list, _) => list.to_vec(),
    };
    if let Some(bad) = urls
        .iter()
        .find_map(|u| crate::config::fleet::bad_nats_url(u))
    {
        return Err(format!("--nats: {bad}"));
    }
    Ok(urls)
}

/// The engine's buckets (made by the first publish or edge: never here).
type Buckets = (kv::Store, object_store::ObjectStore, kv::Store);

/// Connects and opens the buckets, each tried again every 2 s while it fails (a cluster
/// electing a leader), for as long as the caller lets it run (`last` holds the last
/// error); a bucket that does not exist is an error at once.
async fn open(
    urls: &[String],
    what: &str,
    last: &mut String,
) -> Result<(jetstream::Context, Buckets), String> {
    loop {
        let err = match super::connect(urls, &format!("gtmd {what}")).await {
            Ok(client) => {
                let js = jetstream::new(client);
                match lookup(&js).await {
                    Ok(b) => return Ok((js, b)),
                    Err((e, true)) => {
                        return Err(format!("{e} (nothing was published to this engine yet?)"))
                    }
                    Err((e, false)) => e,
                }
            }
            Err(e) => e,
        };
        eprintln!("gtmd {what}: {err}: trying again in 2 s");
        *last = err;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The three buckets; `Err((why, true))` when one does not exist.
async fn lookup(js: &jetstream::Context) -> Result<Buckets, (String, bool)> {
    let fail = |bucket: &str, e: &(dyn std::error::Error + 'static)| {
        (format!("cannot open {bucket}: {e}"), stream_not_found(e))
    };
    let config = js
        .get_key_value(CONFIG_BUCKET)
        .await
        .map_err(|e| fail(CONFIG_BUCKET, &e))?;
    let epochs = js
        .get_object_store(EPOCH_BUCKET)
        .await
        .map_err(|e| fail(EPOCH_BUCKET, &e))?;
    let edges = js
        .get_key_value(EDGE_BUCKET)
        .await
        .map_err(|e| fail(EDGE_BUCKET, &e))?;
    Ok((config, epochs, edges))
}

/// Whether `e` (or what caused it) is JetStream's "stream not found" (error code 10059):
/// a bucket that does not exist, rather than an engine that did not answer.
fn stream_not_found(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("error code 10059") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `gtmd promote`.
pub fn promote(args: PromoteArgs) -> u8 {
    let force = args.force;
    run("promote", &args.engine, move |e| {
        Box::pin(async move {
            match promote_in(e, force).await {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("gtmd promote: {err}");
                    ENGINE
                }
            }
        })
    })
}

async fn promote_in(e: &Engine, force: bool) -> Result<u8, String> {
    let (c, revision) = match canary_key(&e.config).await? {
        CanaryKey::Out(c, revision) => (c, revision),
        CanaryKey::None => {
            eprintln!("gtmd promote: no canary is out: nothing to promote");
            return Ok(INVALID);
        }
        CanaryKey::Malformed(why, _) => {
            eprintln!("gtmd promote: {}: nothing was promoted", malformed(&why));
            return Ok(INVALID);
        }
    };
    let p = &c.pointer;
    let pins = super::publish::pins(&e.config).await?;
    // A refusal anywhere halts the rollout; so does a canary edge still on its way.
    let mut halt = Vec::new();
    for (s, _) in super::edge_reports(&e.edges).await? {
        if let Some(r) = s.refused.as_ref().filter(|r| r.epoch == p.epoch) {
            halt.push(format!("{}: REFUSED epoch {}:", s.edge, p.epoch));
            halt.extend(r.errors.iter().map(|l| format!("  {l}")));
        }
    }
    let mut applied = 0;
    let mut clock = None;
    for s in fresh_reports(&e.edges, &mut clock).await? {
        let canary_edge = c.selector.matches(&s.edge) && !pins.contains_key(&s.edge);
        match outcome(&s, p) {
            Outcome::Pending if canary_edge => halt.push(format!(
                "{}: has not applied epoch {} yet (serving epoch {})",
                s.edge, p.epoch, s.epoch
            )),
            Outcome::Applied if canary_edge => applied += 1,
            _ => {}
        }
    }
    // Without the engine's own clock, an edge that applied the canary and then died
    // (its last report the newest) would look alive: nothing is proved.
    if clock.as_ref().is_some_and(super::EngineClock::only_bound) {
        halt.push(
            "the engine's clock could not be read (gtmd.clock not written): whether the \
             canary's edges are alive cannot be told"
                .to_string(),
        );
    }
    // A canary that reached no edge (a misspelt name, a share too small, its edges
    // away) has shown nothing about the epoch.
    if applied == 0 {
        halt.push(format!(
            "no edge of the canary ({}) has applied epoch {}: it reached none",
            c.selector, p.epoch
        ));
    }
    for l in &halt {
        println!("{l}");
    }
    if !halt.is_empty() && !force {
        eprintln!(
            "gtmd promote: not promoted: the rollout of epoch {} is halted (fix and publish \
             again after `gtmd abort`, wait, or --force)",
            p.epoch
        );
        return Ok(INVALID);
    }
    let (cur, entry) = current(&e.config).await?;
    if cur.as_ref().is_some_and(|cur| cur.epoch >= p.epoch) {
        eprintln!(
            "gtmd promote: current is at epoch {}, not below the canary's {}: `gtmd abort` it",
            cur.map_or(0, |c| c.epoch),
            p.epoch
        );
        return Ok(INVALID);
    }
    move_current(&e.config, entry.as_ref(), p)
        .await
        .map_err(|err| format!("cannot move current (another publish?): {err}"))?;
    if let Err(err) = e
        .config
        .delete_expect_revision(CANARY, Some(revision))
        .await
    {
        eprintln!("gtmd promote: the canary changed meanwhile and was left: {err}");
    }
    println!(
        "promoted epoch {} (the canary for {}) to current",
        p.epoch, c.selector
    );
    Ok(finish(e, p).await)
}

/// Waits for every edge to apply `p` when asked to.
async fn finish(e: &Engine, p: &Pointer) -> u8 {
    if e.limit.is_zero() {
        return OK;
    }
    // `current` has moved: however long the steps before took, the wait gets its time.
    e.deadline.extend(e.limit);
    wait((&e.config, &e.edges), p, None, e.limit).await
}

/// `gtmd abort`.
pub fn abort(args: AbortArgs) -> u8 {
    run("abort", &args.engine, |e| {
        Box::pin(async move {
            match abort_in(e).await {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("gtmd abort: {err}");
                    ENGINE
                }
            }
        })
    })
}

async fn abort_in(e: &Engine) -> Result<u8, String> {
    let (c, revision) = match canary_key(&e.config).await? {
        CanaryKey::Out(c, revision) => (c, revision),
        CanaryKey::None => {
            eprintln!("gtmd abort: no canary is out: nothing to abort");
            return Ok(INVALID);
        }
        // A value that is no canary (written by hand?) holds up every publish: removed.
        CanaryKey::Malformed(why, revision) => {
            e.config
                .delete_expect_revision(CANARY, Some(revision))
                .await
                .map_err(|err| format!("cannot delete {CANARY}: {err}"))?;
            println!("removed {CANARY}, which was not a canary ({why})");
            return Ok(OK);
        }
    };
    let (cur, entry) = current(&e.config).await?;
    let Some(cur) = cur else {
        e.config
            .delete_expect_revision(CANARY, Some(revision))
            .await
            .map_err(|err| format!("cannot delete {CANARY}: {err}"))?;
        println!(
            "aborted the canary (epoch {}); there is no current epoch to go back to: the \
             canary edges keep serving it until the next publish",
            c.pointer.epoch
        );
        return Ok(OK);
    };
    // The canary edges serve the canary's epoch, above `current`'s: they take only a
    // later one. So current's bundle goes out again under a new number, to every edge.
    let blob = match super::edge::fetch(&e.epochs, &cur, &|| e.deadline.progress()).await? {
        Ok(b) if super::bundle::digest(&b) == cur.digest => b,
        Ok(_) => {
            return Err(format!(
                "the bundle of epoch {} does not match its digest",
                cur.epoch
            ))
        }
        Err(why) => {
            return Err(format!(
                "cannot take the bundle of epoch {}: {why}",
                cur.epoch
            ))
        }
    };
    let epoch = next_epoch(&e.config, &e.edges, Some(&cur)).await?;
    let source = format!(
        "gtmd abort of the canary epoch {}: epoch {} again ({})",
        c.pointer.epoch, cur.epoch, cur.source
    );
    let p = upload(&e.epochs, epoch, (&blob, &e.deadline), source).await?;
    move_current(&e.config, entry.as_ref(), &p)
        .await
        .map_err(|err| format!("cannot move current (another publish?): {err}"))?;
    e.config
        .delete_expect_revision(CANARY, Some(revision))
        .await
        .map_err(|err| format!("cannot delete {CANARY}: {err}"))?;
    println!(
        "aborted the canary (epoch {}): epoch {} carries epoch {}'s configuration to every \
         edge (epochs only move forward)",
        c.pointer.epoch, p.epoch, cur.epoch
    );
    Ok(finish(e, &p).await)
}

/// `gtmd pin`.
pub fn pin(args: PinArgs) -> u8 {
    let (edge, epoch) = (args.edge.clone(), args.epoch);
    run("pin", &args.engine, move |e| {
        Box::pin(async move {
            match pin_in(e, &edge, epoch).await {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("gtmd pin: {err}");
                    ENGINE
                }
            }
        })
    })
}

async fn pin_in(e: &Engine, edge: &str, epoch: u64) -> Result<u8, String> {
    let Some(p) = find_epoch(e, epoch).await? else {
        eprintln!(
            "gtmd pin: the engine has no bundle of epoch {epoch} (never published, or removed \
             by publish --keep): nothing was pinned"
        );
        return Ok(INVALID);
    };
    let v = serde_json::to_vec(&p).map_err(|e| e.to_string())?;
    e.config
        .put(format!("{PIN}{edge}"), v.into())
        .await
        .map_err(|err| format!("cannot write {PIN}{edge}: {err}"))?;
    println!("pinned {edge} to epoch {epoch}");
    follow_up(e, edge, &p).await
}

/// After a pin or an unpin: says what `edge` does with `p`, waits for it when it moves.
async fn follow_up(e: &Engine, edge: &str, p: &Pointer) -> Result<u8, String> {
    let report = fresh_reports(&e.edges, &mut None)
        .await?
        .into_iter()
        .find(|s| s.edge == edge);
    let Some(s) = report else {
        println!(
            "{edge}: no report in the last {} s (is the name right? it takes epoch {} when it \
             connects)",
            FRESH.as_secs(),
            p.epoch
        );
        return Ok(OK);
    };
    if s.epoch >= p.epoch {
        if s.epoch > p.epoch {
            println!(
                "{edge}: serves epoch {}, above {}: it stays there (epochs only move forward)",
                s.epoch, p.epoch
            );
        }
        return Ok(OK);
    }
    if e.limit.is_zero() {
        return Ok(OK);
    }
    Ok(wait_edge(&e.edges, edge, p, e.limit).await)
}

/// Waits until `edge` applied or refused `p`.
async fn wait_edge(edges: &kv::Store, edge: &str, p: &Pointer, limit: Duration) -> u8 {
    let t0 = Instant::now();
    let mut clock: Option<EngineClock> = None;
    loop {
        let s = fresh_reports(edges, &mut clock)
            .await
            .ok()
            .and_then(|r| r.into_iter().find(|s| s.edge == edge));
        match s.as_ref().map(|s| outcome(s, p)) {
            Some(Outcome::Applied) => {
                println!(
                    "{edge}: applied epoch {} in {:.2} s",
                    p.epoch,
                    t0.elapsed().as_secs_f64()
                );
                return OK;
            }
            Some(Outcome::Refused(errors)) => {
                println!("{edge}: REFUSED epoch {}:", p.epoch);
                for l in errors {
                    println!("  {l}");
                }
                return INVALID;
            }
            _ if t0.elapsed() >= limit => {
                println!("{edge}: no answer in {} s", limit.as_secs());
                return PENDING;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The pointer of epoch `epoch`: `current`'s or the canary's when it is theirs, else the
/// one its bundle's metadata holds.
async fn find_epoch(e: &Engine, epoch: u64) -> Result<Option<Pointer>, String> {
    let named = [
        current(&e.config).await?.0,
        canary(&e.config)
            .await
            .ok()
            .flatten()
            .map(|(c, _)| c.pointer),
    ];
    if let Some(p) = named.into_iter().flatten().find(|p| p.epoch == epoch) {
        return Ok(Some(p));
    }
    let prefix = format!("epoch-{epoch}-");
    let mut found: Vec<Pointer> = Vec::new();
    for o in super::list_objects(&e.js).await? {
        if o.deleted || !o.name.starts_with(&prefix) {
            continue;
        }
        let p = o
            .metadata
            .get(super::POINTER_META)
            .and_then(|m| serde_json::from_str::<Pointer>(m).ok());
        match p {
            Some(p) => found.push(p),
            None => {
                return Err(format!(
                    "{} has no pointer in its metadata (published by an older gtmd): publish \
                     its configuration again",
                    o.name
                ))
            }
        }
    }
    // Two bundles under one number: publishes that raced; the one an edge served (or
    // serves) is the epoch.
    if found.len() > 1 {
        let served: Vec<String> = super::edge_reports(&e.edges)
            .await?
            .into_iter()
            .filter(|(s, _)| s.epoch == epoch)
            .map(|(s, _)| s.digest)
            .collect();
        found.retain(|p| served.contains(&p.digest));
        if found.len() != 1 {
            return Err(format!(
                "several bundles hold epoch {epoch} and no edge reports which one it served"
            ));
        }
    }
    Ok(found.pop())
}

/// `gtmd unpin`.
pub fn unpin(args: UnpinArgs) -> u8 {
    let edge = args.edge.clone();
    run("unpin", &args.engine, move |e| {
        Box::pin(async move {
            match unpin_in(e, &edge).await {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("gtmd unpin: {err}");
                    ENGINE
                }
            }
        })
    })
}

async fn unpin_in(e: &Engine, edge: &str) -> Result<u8, String> {
    let key = format!("{PIN}{edge}");
    let had = e
        .config
        .get(&key)
        .await
        .map_err(|err| format!("cannot read {key}: {err}"))?;
    if had.is_none() {
        println!("{edge} is not pinned");
        return Ok(OK);
    }
    e.config
        .delete(&key)
        .await
        .map_err(|err| format!("cannot delete {key}: {err}"))?;
    // A malformed canary is followed by no edge: they follow current.
    let canary = match canary_key(&e.config).await? {
        CanaryKey::Out(c, _) => Some(c),
        CanaryKey::Malformed(why, _) => {
            eprintln!("gtmd unpin: {}", malformed(&why));
            None
        }
        CanaryKey::None => None,
    };
    let target = match canary.filter(|c| c.selector.matches(edge)) {
        Some(c) => Some((c.pointer, "the canary")),
        None => current(&e.config).await?.0.map(|p| (p, "current")),
    };
    match target {
        Some((p, from)) => {
            println!(
                "unpinned {edge}: it follows {from} again (epoch {})",
                p.epoch
            );
            follow_up(e, edge, &p).await
        }
        None => {
            println!("unpinned {edge}");
            Ok(OK)
        }
    }
}
