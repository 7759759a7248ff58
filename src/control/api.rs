//! The HTTP control API (loopback by default): the state of every address, pool and access
//! domain (the active pool of each route), and operator overrides that force an address up
//! or down. Overrides go through the single health writer and are persisted to
//! `control.state-file`, so they survive a restart.
//!
//! | request | effect |
//! |---|---|
//! | `GET /v1/state` | JSON: addresses, pools, access domains with their active pool per line |
//! | `PUT /v1/addresses/NAME/override` body `up`, `down` or `auto` | force an address |
//! | `DELETE /v1/addresses/NAME/override` | back to the configured mode |

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing::{info, warn};

use crate::compile::ad_key;
use crate::config::gslb::{AddrValue, Mode, PoolPolicy};
use crate::config::name::display_name;
use crate::health::{Change, Writer};
use crate::shard::WAIT_BOUND;
use crate::tables::gslb::NO_POOL;

/// The health writer, shared by the reload path and the API.
pub type SharedWriter = Arc<Mutex<Writer>>;

/// Logs state changes (one structured line each) and queues them for the alert webhook.
pub fn log_changes(changes: &[Change]) {
    for c in changes {
        info!(change = %c, "state change");
        super::alerts::push(c);
    }
}

/// Loads persisted overrides; a missing file is an empty set.
pub fn load_overrides(path: Option<&Path>) -> HashMap<String, Mode> {
    let Some(p) = path else { return HashMap::new() };
    match std::fs::read_to_string(p) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => v
                .get("overrides")
                .and_then(|o| serde_json::from_value::<HashMap<String, Mode>>(o.clone()).ok())
                .unwrap_or_default(),
            Err(e) => {
                warn!(file = %p.display(), "ignoring unreadable state file: {e}");
                HashMap::new()
            }
        },
        Err(_) => HashMap::new(),
    }
}

fn save_overrides(path: &Path, overrides: &HashMap<String, Mode>) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(&json!({ "overrides": overrides }))?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Auto => "auto",
        Mode::Up => "up",
        Mode::Down => "down",
    }
}

/// The JSON state document.
pub fn state_json(w: &Writer, generation: u64, state_file: Option<&Path>) -> serde_json::Value {
    let snap = w.snapshot();
    let m = &snap.model;
    let (addr_up, pool_up, active) = w.state();
    let addresses: Vec<_> = m
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "name": a.name,
                "value": match &a.value {
                    AddrValue::V4(v) => v.to_string(),
                    AddrValue::V6(v) => v.to_string(),
                    AddrValue::Name(n) => display_name(n),
                },
                "weight": a.weight,
                "enabled": a.enabled,
                "mode": mode_name(a.mode),
                "override": w.overrides().get(&a.name).map(|&o| mode_name(o)),
                "probe": if w.probe(i) { "up" } else { "down" },
                "up": addr_up[i],
            })
        })
        .collect();
    let pools: Vec<_> = m
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "name": p.name,
                "enabled": p.enabled,
                "healthy": pool_up[i],
                "addresses": p.addresses.iter().map(|&a| m.addresses[a].name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ads: Vec<_> = m
        .access_domains
        .iter()
        .enumerate()
        .map(|(ai, ad)| {
            let t = &snap.gslb.ads[ai];
            let routes: Vec<_> = (t.routes as usize..(t.routes + t.nroutes) as usize)
                .map(|si| {
                    let pools: Vec<usize> = snap.slot_pools(si).collect();
                    let healthy: Vec<String> = pools
                        .iter()
                        .filter(|&&p| pool_up[p])
                        .map(|&p| m.pools[p].name.clone())
                        .collect();
                    let current = match ad.policy {
                        PoolPolicy::GlobalAvailability { .. } | PoolPolicy::Nearest => (active[si]
                            != NO_POOL)
                            .then(|| vec![m.pools[active[si] as usize].name.clone()]),
                        _ => (!healthy.is_empty()).then_some(healthy),
                    };
                    json!({
                        "lines": snap.slot_key(si).1,
                        "pools": pools.iter().map(|&p| m.pools[p].name.clone()).collect::<Vec<_>>(),
                        "active": current,
                        "fallback": current.is_none(),
                    })
                })
                .collect();
            json!({
                "name": display_name(&ad.name),
                "key": ad_key(ad),
                "type": crate::config::gslb::type_name(ad.rtype),
                "ttl": ad.ttl,
                "enabled": ad.enabled,
                "remarks": ad.remarks,
                "policy": ad.policy.name(),
                "routes": routes,
            })
        })
        .collect();
    json!({
        "generation": generation,
        "addresses": addresses,
        "pools": pools,
        "access_domains": ads,
        "overrides_persisted_to": state_file.map(|p| p.display().to_string()),
    })
}

/// What the API reads and writes.
pub struct ApiContext {
    /// The health writer.
    pub writer: SharedWriter,
    /// Current configuration generation.
    pub generation: Arc<AtomicU64>,
    /// Where overrides are persisted.
    pub state_file: Option<PathBuf>,
    /// The prober's last results.
    pub reports: crate::probe::Reports,
}

/// Serves the API until `stop`.
pub fn serve(server: tiny_http::Server, ctx: ApiContext, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(mut req)) = server.recv_timeout(WAIT_BOUND) else {
            continue;
        };
        let url = req.url().to_string();
        let method = req.method().clone();
        let mut body = String::new();
        let _ = req.as_reader().take(4096).read_to_string(&mut body);
        let (status, doc) = handle(&method, &url, body.trim(), &ctx);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
            .expect("static header");
        let _ = req.respond(
            tiny_http::Response::from_string(text)
                .with_status_code(status)
                .with_header(header),
        );
    }
}

fn handle(
    method: &tiny_http::Method,
    url: &str,
    body: &str,
    ctx: &ApiContext,
) -> (u16, serde_json::Value) {
    use tiny_http::Method;
    let (writer, state_file) = (&ctx.writer, ctx.state_file.as_deref());
    let path = url.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::Get, ["v1", "state"]) => {
            let w = writer.lock().expect("writer lock");
            let mut doc = state_json(&w, ctx.generation.load(Ordering::Relaxed), state_file);
            drop(w);
            let reports = ctx.reports.lock().expect("reports lock");
            if let Some(list) = doc["addresses"].as_array_mut() {
                for a in list {
                    let name = a["name"].as_str().unwrap_or("").to_string();
                    a["checks"] = json!(reports.get(&name).cloned().unwrap_or_default());
                }
            }
            (200, doc)
        }
        (Method::Put | Method::Post | Method::Delete, ["v1", "addresses", name, "override"]) => {
            let name = percent_decode(name);
            let mode = if *method == Method::Delete {
                None
            } else {
                let word = body.trim_matches('"').to_ascii_lowercase();
                let word = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_string))
                    .unwrap_or(word);
                match word.as_str() {
                    "up" => Some(Mode::Up),
                    "down" => Some(Mode::Down),
                    "auto" => Some(Mode::Auto),
                    _ => return (400, json!({"error": "body must be up, down or auto"})),
                }
            };
            let mut w = writer.lock().expect("writer lock");
            match w.set_override(&name, mode) {
                Ok(changes) => {
                    info!(address = %name, mode = mode.map_or("configured", mode_name), "operator override");
                    log_changes(&changes);
                    if let Some(p) = state_file {
                        if let Err(e) = save_overrides(p, w.overrides()) {
                            warn!(file = %p.display(), "cannot persist overrides: {e}");
                            return (
                                500,
                                json!({"error": format!("applied but not persisted: {e}")}),
                            );
                        }
                    }
                    (
                        200,
                        json!({"address": name, "override": mode.map(mode_name), "changes": changes.iter().map(|c| c.to_string()).collect::<Vec<_>>()}),
                    )
                }
                Err(e) => (404, json!({"error": e})),
            }
        }
        _ => (
            404,
            json!({"error": "not found", "endpoints": ["GET /v1/state", "PUT /v1/addresses/NAME/override", "DELETE /v1/addresses/NAME/override"]}),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
