//! Alerts: every state change (an address or pool up or down, an access domain's route
//! switching pools) is posted as JSON to the webhooks that want it, by their own thread,
//! retried with backoff; the writer and the prober only push onto a bounded queue and never
//! wait (a full queue drops the alert and says so in the log).
//!
//! Who wants what: `[alerts] webhook` gets every change; each `[[alerts.rule]]` gets the
//! events it selects (kinds, and the access domains and pools they concern) at its own
//! webhook. A webhook named by several gets one post, listing the rules. http:// and
//! https:// (rustls, the system's roots plus `ca-file`). Every payload says which edge
//! sent it (`server.identity`, else the host name) and the configuration generation it
//! happened under. The settings are read for every alert, so a reload that changes, adds
//! or removes `[alerts]` takes effect with the next one; a retry stops when `[alerts]` is
//! removed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use tracing::{debug, info, warn};

use super::Change;
use crate::config::{AlertRule, Alerts, Webhook};

/// Alerts waiting to be posted at most.
const QUEUE: usize = 10_000;

/// A change as queued: with the generation serving when it happened, and when.
struct Queued {
    change: Change,
    generation: u64,
    at: Duration,
}

static QUEUE_TX: OnceLock<Sender<Queued>> = OnceLock::new();

/// Where alerts go now (`None`: nowhere).
static TARGET: RwLock<Option<Arc<Alerts>>> = RwLock::new(None);

/// The edge's name in payloads.
static IDENTITY: RwLock<Option<Arc<str>>> = RwLock::new(None);

/// The configuration generation serving.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn target() -> Option<Arc<Alerts>> {
    TARGET.read().map_or(None, |t| t.clone())
}

/// Says who sends the alerts (`server.identity`, else this host's name) and under which
/// configuration generation (at start-up and at every reload, before its changes).
pub fn set_origin(identity: Option<&str>, generation: u64) {
    let name: Arc<str> = match identity {
        Some(i) => i.into(),
        None => hostname().into(),
    };
    *IDENTITY.write().unwrap_or_else(|p| p.into_inner()) = Some(name);
    GENERATION.store(generation, Ordering::Relaxed);
}

/// This host's name (the kernel's), or `localhost` when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Queues a change for the webhooks, if any are configured. Never blocks.
pub fn push(c: &Change) {
    if target().is_none() {
        return;
    }
    if let Some(tx) = QUEUE_TX.get() {
        let q = Queued {
            change: c.clone(),
            generation: GENERATION.load(Ordering::Relaxed),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        };
        if let Err(TrySendError::Full(_)) = tx.try_send(q) {
            warn!(change = %c, "alert queue full: alert dropped");
        }
    }
}

/// The URLs alerts go to, for logs.
fn urls(a: &Alerts) -> Vec<String> {
    let rules = a.rules.iter().map(|r| r.webhook.shown());
    a.webhook.iter().map(|w| w.shown()).chain(rules).collect()
}

/// Points alerts at `cfg` (at start-up and at every reload), starting the sender thread
/// the first time there is a webhook; logs what changed.
pub fn configure(cfg: Option<Alerts>) -> std::io::Result<()> {
    let new = cfg.map(Arc::new);
    // The queue and its thread exist before the target is set: a change pushed as soon as
    // the target is visible (the log line below says so) finds a queue to go to.
    if new.is_some() && QUEUE_TX.get().is_none() {
        let (tx, rx) = crossbeam::channel::bounded(QUEUE);
        // Detached: it only reads its queue and exits with the process. The queue is
        // published once it has its reader (a failed spawn is tried again next time).
        std::thread::Builder::new()
            .name("alerts".into())
            .spawn(move || run(rx))?;
        let _ = QUEUE_TX.set(tx);
    }
    let old = {
        let mut t = TARGET.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *t, new.clone())
    };
    match (old.as_deref(), new.as_deref()) {
        (None, Some(n)) => {
            info!(webhooks = ?urls(n), rules = n.rules.len(), "alerts go to the webhooks")
        }
        (Some(o), None) => {
            info!(was = ?urls(o), "alerts: [alerts] removed, state changes are no longer posted")
        }
        (Some(o), Some(n)) if o != n => info!(
            webhooks = ?urls(n),
            was = ?urls(o),
            rules = n.rules.len(),
            retries = n.retries,
            timeout_ms = n.timeout.as_millis() as u64,
            "alerts: webhook settings changed"
        ),
        _ => {}
    }
    Ok(())
}

/// Whether rule `r` selects change `c`: its kind is among the rule's events, and (when the
/// rule names access domains or pools) it concerns one of them: an address of a covered
/// pool, a covered pool, a route of a named access domain or one moving to or from a named
/// pool. Counted route switches (`active_pool_more`) go only to rules without names.
pub fn selects(r: &AlertRule, c: &Change) -> bool {
    let (bit, concerns) = match c {
        Change::Address { name, up } => (u8::from(*up), r.covered_addresses.contains(name)),
        Change::Pool { name, up } => (2 + u8::from(*up), r.covered_pools.contains(name)),
        Change::Active {
            access_domain,
            pool,
            from,
            ..
        } => {
            let named = |p: &Option<String>| p.as_ref().is_some_and(|p| r.pools.contains(p));
            (
                4,
                r.access_domains.contains(access_domain) || named(pool) || named(from),
            )
        }
        Change::ActiveMore { .. } => (4, false),
    };
    r.events & (1 << bit) != 0 && (!r.filtered || concerns)
}

/// The webhooks that get `c`, each once, with the names of the rules that chose it.
fn destinations<'a>(a: &'a Alerts, c: &Change) -> Vec<(&'a Webhook, Vec<&'a str>)> {
    let mut out: Vec<(&Webhook, Vec<&str>)> = a.webhook.iter().map(|w| (w, Vec::new())).collect();
    for r in a.rules.iter().filter(|r| selects(r, c)) {
        match out.iter_mut().find(|(w, _)| w.url == r.webhook.url) {
            Some((_, names)) => names.push(&r.name),
            None => out.push((&r.webhook, vec![&r.name])),
        }
    }
    out
}

/// One alert on its way to one webhook: the hook, the change (for logs), the body.
type Post = (Webhook, Change, String);

/// The queue of the sender thread of `hook` (started the first time the URL is seen): each
/// webhook has its own, so a slow or dead receiver, retried with backoff, delays only the
/// alerts bound for it.
fn outbox<'a>(
    boxes: &'a mut std::collections::HashMap<String, Sender<Post>>,
    hook: &Webhook,
) -> Option<&'a Sender<Post>> {
    if !boxes.contains_key(&hook.url) {
        let (tx, rx) = crossbeam::channel::bounded::<Post>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("alerts-post".into())
            .spawn(move || {
                for (hook, change, body) in rx.iter() {
                    match target() {
                        Some(cfg) => deliver(&cfg, &hook, &change, &body),
                        None => debug!(change = %change, "alert not posted: [alerts] was removed"),
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(webhook = %hook.shown(), "alert dropped: cannot start a sender thread ({e})");
            return None;
        }
        boxes.insert(hook.url.clone(), tx);
    }
    boxes.get(&hook.url)
}

fn run(rx: Receiver<Queued>) {
    let mut boxes = std::collections::HashMap::new();
    // Runs until the process exits: the queue's sender lives in a static.
    for q in rx.iter() {
        let Some(cfg) = target() else {
            debug!(change = %q.change, "alert not posted: [alerts] was removed");
            continue;
        };
        let identity = IDENTITY
            .read()
            .map_or(None, |i| i.clone())
            .unwrap_or_else(|| hostname().into());
        let mut doc = serde_json::to_value(&q.change).unwrap_or_default();
        doc["message"] = q.change.to_string().into();
        doc["time_unix_ms"] = (q.at.as_millis() as u64).into();
        doc["identity"] = identity.to_string().into();
        doc["generation"] = q.generation.into();
        for (hook, rules) in destinations(&cfg, &q.change) {
            doc["rules"] = rules.into();
            let Some(tx) = outbox(&mut boxes, hook) else {
                continue;
            };
            if tx
                .try_send((hook.clone(), q.change.clone(), doc.to_string()))
                .is_err()
            {
                warn!(webhook = %hook.shown(), change = %q.change, "alert dropped: the webhook's queue is full");
            }
        }
    }
}

/// Posts `body` to `hook`, retrying with backoff as `[alerts]` says.
fn deliver(cfg: &Alerts, hook: &Webhook, change: &Change, body: &str) {
    let mut attempt = 0;
    loop {
        if target().is_none() {
            debug!(change = %change, "alert not posted: [alerts] was removed");
            return;
        }
        match post(hook, cfg, body) {
            Ok(()) => return,
            Err(e) if attempt < cfg.retries => {
                attempt += 1;
                warn!(webhook = %hook.shown(), attempt, "alert not delivered ({e}): retrying");
                std::thread::sleep(Duration::from_millis(250) * attempt);
            }
            Err(e) => {
                warn!(webhook = %hook.shown(), change = %change, "alert dropped after {} attempts: {e}", attempt + 1);
                return;
            }
        }
    }
}

/// One HTTP/1.1 POST, over TLS for https://; a 2xx status is delivery.
fn post(hook: &Webhook, cfg: &Alerts, body: &str) -> Result<(), String> {
    let addrs: Vec<_> = hook
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", hook.addr))?
        .collect();
    // Each address in turn (a name with an IPv6 and an IPv4 address, one unreachable).
    let mut last = format!("no address for {}", hook.addr);
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, cfg.timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    let s = stream.ok_or(last)?;
    s.set_read_timeout(Some(cfg.timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(cfg.timeout))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nUser-Agent: gtmd/{}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        hook.path,
        hook.addr,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if !hook.tls {
        return exchange(s, req.as_bytes());
    }
    let tls = cfg.tls.clone().ok_or("no TLS client settings")?;
    let name = rustls::pki_types::ServerName::try_from(hook.host.clone())
        .map_err(|e| format!("bad TLS server name {:?}: {e}", hook.host))?;
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| format!("tls: {e}"))?;
    exchange(rustls::StreamOwned::new(conn, s), req.as_bytes())
}

/// Sends `req` and reads the status line of the response.
fn exchange(mut s: impl Read + Write, req: &[u8]) -> Result<(), String> {
    s.write_all(req).map_err(|e| format!("send: {e}"))?;
    s.flush().map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if head.is_empty() => return Err(format!("receive: {e}")),
            Err(_) => break,
        }
    }
    let line = String::from_utf8_lossy(&head);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP status {code}")),
        None => Err("not an HTTP response".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{destinations, selects, Change};
    use crate::config::{AlertRule, Alerts, Webhook};

    fn hook(url: &str) -> Webhook {
        Webhook {
            url: url.into(),
            tls: false,
            host: "h".into(),
            addr: "h:80".into(),
            path: "/".into(),
        }
    }

    /// A rule as validation makes it; naming an access domain covers the pools Primary and
    /// Backup and their addresses P1 and B1.
    fn rule(name: &str, url: &str, events: u8, ads: &[&str], pools: &[&str]) -> AlertRule {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        let (mut covered, addresses) = (
            pools.to_vec(),
            if ads.is_empty() {
                vec![]
            } else {
                vec!["P1", "B1"]
            },
        );
        if !ads.is_empty() {
            covered.extend(["Primary", "Backup"]);
        }
        AlertRule {
            name: name.into(),
            webhook: hook(url),
            events,
            filtered: !ads.is_empty() || !pools.is_empty(),
            access_domains: set(ads),
            pools: set(pools),
            covered_pools: set(&covered),
            covered_addresses: set(&addresses),
        }
    }

    #[test]
    fn rules_select_by_kind_and_object() {
        let addr = |up| Change::Address {
            name: "P1".into(),
            up,
        };
        let pool = |name: &str, up| Change::Pool {
            name: name.into(),
            up,
        };
        let switch = |ad: &str, from: &str, to: &str| Change::Active {
            access_domain: ad.into(),
            lines: "default".into(),
            pool: Some(to.into()),
            from: Some(from.into()),
        };
        let www = rule("www", "u1", 0b10001, &["www.example.test. A"], &[]);
        assert!(selects(&www, &addr(false)));
        assert!(
            !selects(&www, &addr(true)),
            "address-up is not among its events"
        );
        assert!(!selects(&www, &pool("Primary", false)), "pool-down neither");
        assert!(selects(
            &www,
            &switch("www.example.test. A", "Primary", "Backup")
        ));
        assert!(!selects(
            &www,
            &switch("api.example.test. A", "Primary", "Backup")
        ));
        assert!(
            !selects(&www, &Change::ActiveMore { count: 3 }),
            "counted switches: unfiltered rules only"
        );
        let other = rule("other", "u2", 0b11111, &[], &["Other"]);
        assert!(selects(&other, &pool("Other", false)));
        assert!(!selects(&other, &pool("Primary", false)));
        assert!(!selects(&other, &addr(false)), "P1 is not in Other");
        assert!(
            selects(&other, &switch("x.example.test. A", "Other", "Spare")),
            "from a named pool"
        );
        let all = rule("all", "u1", 0b11111, &[], &[]);
        assert!(selects(&all, &Change::ActiveMore { count: 3 }));
        assert!(selects(&all, &addr(true)));
        let cfg = Alerts {
            webhook: Some(hook("u0")),
            rules: vec![www, other, all],
            retries: 0,
            timeout: std::time::Duration::from_secs(1),
            ca_pem: None,
            tls: None,
        };
        let d = destinations(&cfg, &addr(false));
        let got: Vec<(&str, Vec<&str>)> =
            d.iter().map(|(w, r)| (w.url.as_str(), r.clone())).collect();
        assert_eq!(
            got,
            vec![("u0", vec![]), ("u1", vec!["www", "all"])],
            "one post per webhook"
        );
    }
}
