//! Alerts: every state change (address, pool, an access domain's active pool) is posted as
//! JSON to the configured webhook by its own thread, retried with backoff; the writer and
//! the prober only push onto a bounded queue and never wait (a full queue drops the alert
//! and says so in the log). The target is read at every attempt, so a reload that changes,
//! adds or removes `[alerts]` takes effect with the next alert (and the next retry).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use tracing::{debug, info, warn};

use super::Change;
use crate::config::Alerts;

/// Alerts waiting to be posted at most.
const QUEUE: usize = 10_000;

static QUEUE_TX: OnceLock<Sender<Change>> = OnceLock::new();

/// Where alerts go now (`None`: nowhere).
static TARGET: RwLock<Option<Arc<Alerts>>> = RwLock::new(None);

fn target() -> Option<Arc<Alerts>> {
    TARGET.read().map_or(None, |t| t.clone())
}

/// Queues a change for the webhook, if one is configured. Never blocks.
pub fn push(c: &Change) {
    if target().is_none() {
        return;
    }
    if let Some(tx) = QUEUE_TX.get() {
        if let Err(TrySendError::Full(_)) = tx.try_send(c.clone()) {
            warn!(change = %c, "alert queue full: alert dropped");
        }
    }
}

/// Points alerts at `cfg` (at start-up and at every reload), starting the sender thread
/// the first time there is a webhook; logs what changed.
pub fn configure(cfg: Option<Alerts>) -> std::io::Result<()> {
    let new = cfg.map(Arc::new);
    let old = {
        let mut t = TARGET.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *t, new.clone())
    };
    match (old.as_deref(), new.as_deref()) {
        (None, Some(n)) => info!(webhook = %n.url, "alerts go to the webhook"),
        (Some(o), None) => {
            info!(was = %o.url, "alerts: [alerts] removed, state changes are no longer posted")
        }
        (Some(o), Some(n)) if o != n => info!(
            webhook = %n.url,
            was = %o.url,
            retries = n.retries,
            timeout_ms = n.timeout.as_millis() as u64,
            "alerts: webhook settings changed"
        ),
        _ => {}
    }
    if new.is_some() && QUEUE_TX.get().is_none() {
        let (tx, rx) = crossbeam::channel::bounded(QUEUE);
        if QUEUE_TX.set(tx).is_ok() {
            // Detached: it only reads its queue and exits with the process.
            std::thread::Builder::new()
                .name("alerts".into())
                .spawn(move || run(rx))?;
        }
    }
    Ok(())
}

fn run(rx: Receiver<Change>) {
    // Runs until the process exits: the queue's sender lives in a static.
    for change in rx.iter() {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut doc = serde_json::to_value(&change).unwrap_or_default();
        doc["message"] = change.to_string().into();
        doc["time_unix_ms"] = (at.as_millis() as u64).into();
        let body = doc.to_string();
        let mut attempt = 0;
        loop {
            let Some(cfg) = target() else {
                debug!(change = %change, "alert not posted: [alerts] was removed");
                break;
            };
            match post(&cfg, &body) {
                Ok(()) => break,
                Err(e) if attempt < cfg.retries => {
                    attempt += 1;
                    warn!(webhook = %cfg.url, attempt, "alert not delivered ({e}): retrying");
                    std::thread::sleep(Duration::from_millis(250) * attempt);
                }
                Err(e) => {
                    warn!(webhook = %cfg.url, change = %change, "alert dropped after {} attempts: {e}", attempt + 1);
                    break;
                }
            }
        }
    }
}

/// One HTTP/1.1 POST; a 2xx status is delivery.
fn post(cfg: &Alerts, body: &str) -> Result<(), String> {
    let addr = cfg
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", cfg.addr))?
        .next()
        .ok_or_else(|| format!("no address for {}", cfg.addr))?;
    let mut s =
        TcpStream::connect_timeout(&addr, cfg.timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(cfg.timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(cfg.timeout))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nUser-Agent: gtmd/{}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cfg.path,
        cfg.addr,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| format!("receive: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
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
