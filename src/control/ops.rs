//! The control API's operations beside the health state: `GET /v1/status` (version,
//! uptime, generation, shards, config file, the last reload), `GET /v1/stats` (the
//! shards' query counters, summed as `/metrics` sums them), `POST /v1/reload` (the reload
//! SIGHUP runs, synchronously), and what configuration changes share: the commands the
//! API hands to the control thread, where every reload runs, one at a time.
//!
//! A [`Command`] is a closure run on the control thread with the [`Reloader`] there: the
//! configuration serving and the reload itself. So a SIGHUP, a `POST /v1/reload` and a
//! change of an object (`crud/`) never overlap: they take turns on one thread, as if
//! behind one lock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::api::ApiContext;
use super::http::{self, Request, Response};
use crate::config::{Config, ConfigErrors, Overlay};
use crate::shard::counters::{QTYPE_GROUPS, RCODES};
use crate::shard::Summary;
use crate::wire::Transport;

/// Longest an API request waits for the control thread (a reload of a large model takes
/// seconds; one stuck behind it waits its turn).
pub const COMMAND_WAIT: Duration = Duration::from_secs(120);

/// A closure for the control thread, given the [`Reloader`].
pub type Command = Box<dyn FnOnce(&mut dyn Reloader) + Send>;

/// Runs once a reloaded configuration has compiled, before it serves; an error refuses it
/// (the configuration API writes the files here).
pub type Commit<'a> = dyn FnMut(&Config) -> Result<(), Refusal> + 'a;

/// What the control thread offers a [`Command`].
pub trait Reloader {
    /// The config file (`None`: the embedded default is serving).
    fn config_path(&self) -> Option<&Path>;
    /// The configuration serving.
    fn current(&self) -> &Config;
    /// The generation serving.
    fn generation(&self) -> u64;
    /// Reloads the config file as SIGHUP does, with the texts of `overlay` in place of
    /// those files, `commit` run between compile and publish; `trigger` names the cause
    /// in the record. Returns the new generation.
    fn reload(
        &mut self,
        trigger: &'static str,
        overlay: &Overlay,
        commit: &mut Commit<'_>,
    ) -> Result<u64, Refusal>;
    /// Reloads from another file (a fleet edge's new epoch), which is the config file
    /// from then on if it serves; the old one keeps serving if it does not.
    fn reload_from(&mut self, path: &Path, trigger: &'static str) -> Result<u64, Refusal>;
}

/// Why a reload or a change did not happen.
#[derive(Debug)]
pub enum Refusal {
    /// The embedded default is serving: there is no file to re-read or edit.
    NoFile,
    /// The configuration does not validate (nothing changed).
    Invalid(ConfigErrors),
    /// Refused for another reason: the HTTP status and the message.
    Other(u16, String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoFile => write!(f, "gtmd serves its embedded default (no --config FILE)"),
            Self::Invalid(e) => write!(f, "{e}"),
            Self::Other(_, m) => write!(f, "{m}"),
        }
    }
}

impl Refusal {
    /// The answer that says so: 409 without a file, 422 with the errors, or the status.
    pub fn response(&self, generation: u64) -> Response {
        match self {
            Self::NoFile => Response::json(
                409,
                json!({ "error": "gtmd serves its embedded default: start it with --config FILE to reload or change it", "generation": generation }),
            ),
            Self::Invalid(errs) => Response::json(
                422,
                json!({
                    "error": "the configuration is not valid: nothing was changed",
                    "errors": errs.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "generation": generation,
                }),
            ),
            Self::Other(status, m) => Response::error(*status, m.clone()),
        }
    }
}

/// The record of the last reload, for `GET /v1/status`.
#[derive(Debug, Clone)]
struct LastReload {
    trigger: &'static str,
    ok: bool,
    generation: u64,
    unix_ms: u64,
    ms: u64,
    errors: Vec<String>,
}

/// What the operations read beyond the health state.
#[derive(Debug)]
pub struct Ops {
    commands: crossbeam::channel::Sender<Command>,
    started: Instant,
    config: Option<PathBuf>,
    shards: usize,
    last: Mutex<Option<LastReload>>,
    /// An edge's `fleet` object (`fleet/edge.rs`), none otherwise.
    fleet: Mutex<Option<Value>>,
}

impl Ops {
    /// Operations of a process started at `started` with `config` on `shards` shards,
    /// whose commands go to `commands`.
    pub fn new(
        commands: crossbeam::channel::Sender<Command>,
        started: Instant,
        config: Option<PathBuf>,
        shards: usize,
    ) -> Self {
        Self {
            commands,
            started,
            config,
            shards,
            last: Mutex::new(None),
            fleet: Mutex::new(None),
        }
    }

    /// The config file it started with (`None`: the embedded default).
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Sets what `GET /v1/status` says under `fleet` (an edge's epoch and engine link).
    pub fn set_fleet(&self, v: Value) {
        *self.fleet.lock().expect("fleet status lock") = Some(v);
    }

    /// What `GET /v1/status` says under `fleet`, if anything.
    pub fn fleet(&self) -> Option<Value> {
        self.fleet.lock().expect("fleet status lock").clone()
    }

    /// Keeps the outcome of a reload.
    pub fn record(&self, trigger: &'static str, r: &Result<(), Refusal>, gen: u64, took: Duration) {
        let errors = match r {
            Ok(()) => Vec::new(),
            Err(Refusal::Invalid(e)) => e.0.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        };
        *self.last.lock().expect("last reload lock") = Some(LastReload {
            trigger,
            ok: r.is_ok(),
            generation: gen,
            unix_ms: unix_ms(),
            ms: took.as_millis() as u64,
            errors,
        });
    }

    /// Runs `f` on the control thread and waits for its answer: 503 when the control
    /// thread is gone, has [`COMMAND_QUEUE`] requests waiting already, or has not started
    /// this one within [`COMMAND_WAIT`] (it is then never run: the client was told to try
    /// again). Once started, it is waited for to the end.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Reloader) -> R + Send + 'static,
    ) -> Result<R, Response> {
        use std::sync::atomic::{AtomicU8, Ordering::AcqRel};
        const QUEUED: u8 = 0;
        const STARTED: u8 = 1;
        const ABANDONED: u8 = 2;
        let state = std::sync::Arc::new(AtomicU8::new(QUEUED));
        let (tx, rx) = crossbeam::channel::bounded(1);
        let mine = state.clone();
        let cmd: Command = Box::new(move |r| {
            if mine
                .compare_exchange(
                    QUEUED,
                    STARTED,
                    AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                )
                .is_ok()
            {
                let _ = tx.send(f(r));
            }
        });
        let busy =
            |what: &str| Response::error(503, format!("the control thread {what}: try again"));
        self.commands.try_send(cmd).map_err(|e| match e {
            crossbeam::channel::TrySendError::Full(_) => busy("has too many requests waiting"),
            crossbeam::channel::TrySendError::Disconnected(_) => busy("is not running"),
        })?;
        if let Ok(v) = rx.recv_timeout(COMMAND_WAIT) {
            return Ok(v);
        }
        let gave_up = state
            .compare_exchange(
                QUEUED,
                ABANDONED,
                AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok();
        if gave_up {
            return Err(busy("did not start it in time"));
        }
        rx.recv().map_err(|_| busy("stopped while running it"))
    }
}

/// Requests waiting for the control thread at most (each holds one of the control API's
/// connections until answered or abandoned).
pub const COMMAND_QUEUE: usize = 64;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The routes of this module: `Some` answer when the path is one of them.
pub(super) fn route(
    ctx: &ApiContext,
    (actor, peer): (&str, &http::Peer),
    req: &Request,
    path: &str,
) -> Option<Response> {
    let m = req.method.as_str();
    let resp = match path.trim_end_matches('/') {
        "/v1/status" if m == "GET" => status(ctx),
        "/v1/stats" if m == "GET" => Response::json(200, stats(ctx.metrics.counters())),
        "/v1/reload" if m == "POST" => reload(ctx, actor, peer),
        p @ ("/v1/status" | "/v1/stats" | "/v1/reload") => {
            let mut resp = Response::error(405, format!("{m} is not allowed here"));
            let allow = if p == "/v1/reload" { "POST" } else { "GET" };
            resp.headers.push(("Allow", allow.to_string()));
            resp
        }
        _ => return None,
    };
    Some(resp)
}

fn status(ctx: &ApiContext) -> Response {
    let o = &ctx.ops;
    let last = o.last.lock().expect("last reload lock").clone();
    let fleet = o.fleet.lock().expect("fleet status lock").clone();
    let uptime = o.started.elapsed();
    Response::json(
        200,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": uptime.as_secs(),
            "started_unix_ms": unix_ms().saturating_sub(uptime.as_millis() as u64),
            "generation": ctx.generation.load(std::sync::atomic::Ordering::Relaxed),
            "shards": o.shards,
            "config_file": o.config.as_ref().map(|p| p.display().to_string()),
            "last_reload": last.map(|l| json!({
                "trigger": l.trigger,
                "ok": l.ok,
                "generation": l.generation,
                "unix_ms": l.unix_ms,
                "ms": l.ms,
                "errors": l.errors,
            })),
            "fleet": fleet,
        }),
    )
}

/// The shards' counters summed: totals, by transport, RCODE, QTYPE group, and per shard.
fn stats(counters: &[std::sync::Arc<crate::shard::Counters>]) -> Value {
    let mut total = Summary::default();
    let (mut udp, mut tcp) = (0u64, 0u64);
    let mut rcode = vec![0u64; RCODES.len()];
    let mut qtype = vec![0u64; QTYPE_GROUPS.len()];
    let mut shards: std::collections::BTreeMap<usize, u64> = Default::default();
    for c in counters {
        let mut s = Summary::default();
        c.add_to(&mut s);
        c.add_to(&mut total);
        match c.transport {
            Transport::Udp => udp += s.queries,
            Transport::Tcp => tcp += s.queries,
        }
        *shards.entry(c.shard).or_default() += s.queries;
        for (q, qn) in qtype.iter_mut().enumerate() {
            for (r, rn) in rcode.iter_mut().enumerate() {
                let n = c.answers(q, r);
                *qn += n;
                *rn += n;
            }
        }
    }
    let named = |names: &[&str], v: &[u64]| -> Value {
        names
            .iter()
            .zip(v)
            .map(|(n, &c)| ((*n).to_string(), json!(c)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "queries": total.queries,
        "udp": udp,
        "tcp": tcp,
        "rcode": named(&RCODES, &rcode),
        "qtype": named(&QTYPE_GROUPS, &qtype),
        "dropped": total.dropped,
        "truncated": total.truncated,
        "rrl_limited": total.limited,
        "rrl_slipped": total.slipped,
        "tcp_connections": total.tcp_connections,
        "tcp_refused": total.tcp_refused,
        "shards": shards.iter().map(|(s, q)| json!({"shard": s, "queries": q})).collect::<Vec<_>>(),
    })
}

/// `POST /v1/reload`: the SIGHUP reload, run now on the control thread.
fn reload(ctx: &ApiContext, actor: &str, peer: &http::Peer) -> Response {
    let r = ctx.ops.run(|r| {
        (
            r.reload("api", &Overlay::new(), &mut |_| Ok(())),
            r.generation(),
        )
    });
    let (r, generation) = match r {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    tracing::info!(actor, client = %peer.client, ok = r.is_ok(), generation, "reload asked through the control API");
    match r {
        Ok(g) => Response::json(200, json!({ "ok": true, "generation": g })),
        Err(e) => {
            let mut resp = e.response(generation);
            resp.body["ok"] = json!(false);
            resp
        }
    }
}

/// The body of `PUT /v1/addresses/NAME/override`: a word (`up`, `down`, `auto`, quoted or
/// not) or `{"mode": WORD, "for": DURATION}`; returns the mode and, with `for`, when it
/// ends (Unix milliseconds).
pub fn override_body(body: &str) -> Result<(crate::config::gslb::Mode, Option<u64>), String> {
    use crate::config::gslb::Mode;
    let doc = serde_json::from_str::<Value>(body).ok();
    let word = match doc.as_ref().and_then(|v| v.get("mode")) {
        Some(m) => m.as_str().unwrap_or("").to_ascii_lowercase(),
        None => body.trim().trim_matches('"').to_ascii_lowercase(),
    };
    let mode = match word.as_str() {
        "up" => Mode::Up,
        "down" => Mode::Down,
        "auto" => Mode::Auto,
        _ => {
            return Err(
                "body must be up, down or auto, or {\"mode\": \"down\", \"for\": \"10m\"}".into(),
            )
        }
    };
    let until = match doc.as_ref().and_then(|v| v.get("for")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(unix_ms() + duration(s)?.as_millis() as u64),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs > 0.0 && secs <= MAX_FOR.as_secs_f64() => {
                Some(unix_ms() + (secs * 1000.0) as u64)
            }
            _ => {
                return Err(format!(
                    "for: {n} is not a number of seconds in 1..={}",
                    MAX_FOR.as_secs()
                ))
            }
        },
        Some(other) => return Err(format!("for: {other} is not a duration such as \"10m\"")),
    };
    Ok((mode, until))
}

/// Longest `for` of an override: a year (longer is a pin: leave `for` out).
pub const MAX_FOR: Duration = Duration::from_secs(366 * 86_400);

/// A duration such as `90`, `2s`, `10m`, `1h30m`, `1d`, `500ms` (units `ms`, `s`, `m`,
/// `h`, `d`, `w`; a bare number is seconds), more than zero and at most [`MAX_FOR`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("for: '{s}' is not a duration such as 90s, 10m or 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return check_for(Duration::from_secs(n), s);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match &rest[digits..digits + unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "w" => Duration::from_secs(7 * 86_400),
            _ => return Err(bad()),
        };
        let n = u32::try_from(n).map_err(|_| bad())?;
        total = total
            .checked_add(unit.checked_mul(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &rest[digits + unit_len..];
    }
    check_for(total, s)
}

fn check_for(d: Duration, s: &str) -> Result<Duration, String> {
    if d.is_zero() || d > MAX_FOR {
        return Err(format!(
            "for: '{s}' must be more than zero and at most {} days",
            MAX_FOR.as_secs() / 86_400
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("90", s(90)),
            ("2s", s(2)),
            ("10m", s(600)),
            ("1h30m", s(5400)),
            ("1d", s(86_400)),
            ("500ms", Duration::from_millis(500)),
            (" 1w ", s(7 * 86_400)),
        ] {
            assert_eq!(duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "0",
            "0s",
            "m",
            "10x",
            "1.5h",
            "-1s",
            "10 m",
            "400d",
            "99999999999h",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
