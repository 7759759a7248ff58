//! The HTTP control API (loopback by default): the state of every address, pool and access
//! domain (the active pool of each route), and operator overrides that force an address up
//! or down. Overrides go through the single health writer and are persisted to
//! `control.state-file` (`state.rs`), so they survive a restart.
//!
//! | request | effect |
//! |---|---|
//! | `GET /v1/state` | JSON: addresses, pools, access domains with their active pool per line |
//! | `PUT /v1/addresses/NAME/override` body `up`, `down` or `auto`, or `{"mode": "down", "for": "10m"}` | force an address (for a while) |
//! | `DELETE /v1/addresses/NAME/override` | back to the configured mode |
//! | `GET /metrics` | Prometheus text format, or OpenMetrics when `Accept` asks (`metrics/`) |
//! | `GET /v1/status`, `GET /v1/stats`, `POST /v1/reload` | `ops.rs` |
//! | `GET /v1/fleet` | a fleet edge's members, probe assignment and votes (`fleet/members.rs`) |
//! | `/v1/access-domains`, `/v1/pools`, `/v1/addresses`, `/v1/health-checks`, `/v1/lines` | the configuration's objects (`crud/`) |
//!
//! Who may do what (checked in this order, each refusal logged with the client):
//!
//! 1. `Host` must name the listener: `localhost`, the address the request arrived on, or
//!    one of `control.allowed-hosts` (else 403): a DNS-rebinding page cannot reach it.
//! 2. `Origin`, when sent, must be this API's own origin (else 403): a page elsewhere
//!    cannot post to it (CSRF), preflight or not.
//! 3. A bearer token (`Authorization: Bearer TOKEN`, from `control.token-file`) is needed
//!    for every change (401 without; 403 when no token-file is set: the API is then
//!    read-only) and, on a listener beyond loopback, for reads too (`GET /metrics`
//!    included: a scrape is a read like any other). A wrong token is 401.
//!    Tokens are compared in constant time; every change is logged with the token's name
//!    and the client's address.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::json;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::http;
use crate::config::control::{host_name, Token};
use crate::config::Control;

use crate::config::gslb::{ad_key, AddrValue, Mode, PoolPolicy};
use crate::dns::name::display_name;
use crate::health::{log_changes, SharedWriter, Writer};
use crate::tables::gslb::NO_POOL;

pub(super) fn mode_name(m: Mode) -> &'static str {
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
                "override_expires_unix_ms": w.expiries().get(&a.name),
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
                "remarks": ad.remarks.as_deref().unwrap_or(""),
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

/// What the API may accept, from `[control]`; swapped whole by a reload.
#[derive(Debug, Default)]
pub struct Settings {
    /// Bearer tokens (name, secret).
    pub tokens: Vec<Token>,
    /// Extra accepted `Host` names.
    pub allowed_hosts: Vec<String>,
    /// HTTPS when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where overrides are persisted.
    pub state_file: Option<PathBuf>,
}

impl Settings {
    /// The settings of `c`.
    pub fn of(c: &Control) -> Self {
        Self {
            tokens: c.tokens.clone(),
            allowed_hosts: c.allowed_hosts.clone(),
            tls: c.tls.as_ref().map(|t| t.server.clone()),
            state_file: c.state_file.clone(),
        }
    }
}

/// What the API reads and writes.
pub struct ApiContext {
    /// The health writer.
    pub writer: SharedWriter,
    /// Current configuration generation.
    pub generation: Arc<AtomicU64>,
    /// The prober's last results.
    pub reports: crate::probe::Reports,
    /// The fleet's shared verdicts (an edge with `share-health`), none otherwise.
    pub shared: Option<Arc<crate::probe::shared::Shared>>,
    /// Tokens, hosts, TLS and state file, as last configured.
    pub settings: ArcSwap<Settings>,
    /// What `/metrics` reads beyond the above.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Status, reloads and configuration changes (`ops.rs`, `crud/`).
    pub ops: super::ops::Ops,
}

/// Starts serving `listener` with `ctx` (plain or TLS as `ctx.settings` says, per
/// connection).
pub fn start(
    listener: std::net::TcpListener,
    ctx: Arc<ApiContext>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<http::Server> {
    let c2 = ctx.clone();
    let tls: Arc<http::TlsSource> = Arc::new(move || c2.settings.load().tls.clone());
    let handler: Arc<http::Handler> = Arc::new(move |peer, req| serve(&ctx, peer, req));
    http::Server::start(listener, handler, tls, stop)
}

/// Whether `method` may change state: everything but GET (HEAD and OPTIONS included, so
/// a CORS preflight is refused like the request it announces).
fn is_write(method: &str) -> bool {
    method != "GET"
}

/// The host part of a `Host` header value (`name`, `1.2.3.4`, `[::1]`, each with an
/// optional `:port`), normalised as `config::control::host_name` does.
fn host_of(value: &str) -> Option<String> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inner
    } else {
        match value.split_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => value,
        }
    };
    host_name(host)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The name of the token `header` carries, if any matches. Every token is compared, each
/// in constant time (`subtle`), so the time taken says nothing about any of them.
fn token_name<'a>(tokens: &'a [Token], header: &str) -> Option<&'a str> {
    let (scheme, presented) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let presented = presented.trim().as_bytes();
    let mut found = None;
    for t in tokens {
        if bool::from(t.secret.as_slice().ct_eq(presented)) {
            found = Some(t.name.as_str());
        }
    }
    found
}

/// Who is asking, once allowed.
enum Actor<'a> {
    /// A token's holder.
    Token(&'a str),
    /// No token: reads on a loopback listener.
    Anonymous,
}

/// Applies the rules of the module documentation.
fn authorize<'a>(
    settings: &'a Settings,
    peer: &http::Peer,
    req: &http::Request,
) -> Result<Actor<'a>, http::Response> {
    use http::Response;
    let host_value = match req.header("host") {
        Ok(Some(h)) => h,
        Ok(None) => return Err(Response::error(400, "a Host header is required")),
        Err(e) => return Err(Response::error(400, e)),
    };
    let local = match peer.local.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let host_ok = host_of(host_value).is_some_and(|h| {
        h == "localhost" || h == local.to_string() || settings.allowed_hosts.contains(&h)
    });
    if !host_ok {
        return Err(Response::error(
            403,
            format!(
                "Host '{host_value}' is not this API: use localhost, {local}, or add the name to \
                 [control] allowed-hosts"
            ),
        ));
    }
    match req.header("origin") {
        Err(e) => return Err(Response::error(403, e)),
        Ok(Some(origin)) => {
            let scheme = if peer.tls { "https" } else { "http" };
            if !origin.eq_ignore_ascii_case(&format!("{scheme}://{host_value}")) {
                return Err(Response::error(
                    403,
                    format!("cross-origin requests are refused (Origin '{origin}')"),
                ));
            }
        }
        Ok(None) => {}
    }
    let auth = req
        .header("authorization")
        .map_err(|e| Response::error(400, e))?;
    if let Some(a) = auth {
        return match token_name(&settings.tokens, a) {
            Some(name) => Ok(Actor::Token(name)),
            None => Err(unauthorized("the bearer token is not valid")),
        };
    }
    if is_write(&req.method) {
        if settings.tokens.is_empty() {
            return Err(Response::error(
                403,
                "the control API is read-only: changes need a bearer token; set [control] \
                 token-file (one name:token per line), reload, and send \
                 Authorization: Bearer TOKEN",
            ));
        }
        return Err(unauthorized(
            "changes need a bearer token: send Authorization: Bearer TOKEN",
        ));
    }
    if local.is_loopback() {
        Ok(Actor::Anonymous)
    } else {
        Err(unauthorized(
            "beyond loopback every request needs a bearer token: send Authorization: Bearer TOKEN",
        ))
    }
}

fn unauthorized(msg: &str) -> http::Response {
    let mut r = http::Response::error(401, msg);
    r.headers
        .push(("WWW-Authenticate", "Bearer realm=\"gtmd\"".to_string()));
    r
}

/// One request: authorised, routed, answered; refusals and changes are logged.
fn serve(ctx: &ApiContext, peer: &http::Peer, req: &http::Request) -> http::Response {
    let settings = ctx.settings.load();
    let path = req.target.split('?').next().unwrap_or("");
    let actor = match authorize(&settings, peer, req) {
        Ok(a) => a,
        Err(resp) => {
            warn!(
                client = %peer.client,
                method = %req.method,
                path = ?path,
                status = resp.status,
                reason = %resp.body["error"].as_str().unwrap_or(""),
                "control API request refused"
            );
            return resp;
        }
    };
    if path == "/metrics" {
        return match req.method.as_str() {
            "GET" => super::metrics::respond(ctx, req),
            m => http::Response::error(405, format!("{m} is not allowed here")),
        };
    }
    let actor = match actor {
        Actor::Token(name) => name,
        Actor::Anonymous => "-",
    };
    if let Some(resp) = super::ops::route(ctx, (actor, peer), req, path) {
        return resp;
    }
    if let Some(resp) = super::fleet::members::route(ctx, req, path) {
        return resp;
    }
    if let Some(resp) = super::crud::route(ctx, (actor, peer), req, path) {
        return resp;
    }
    let body = String::from_utf8_lossy(&req.body);
    let (status, doc) = handle(
        &req.method,
        path,
        body.trim(),
        ctx,
        &settings,
        (actor, peer),
    );
    http::Response::json(status, doc)
}

fn handle(
    method: &str,
    path: &str,
    body: &str,
    ctx: &ApiContext,
    settings: &Settings,
    (actor, peer): (&str, &http::Peer),
) -> (u16, serde_json::Value) {
    let (writer, state_file) = (&ctx.writer, settings.state_file.as_deref());
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["v1", "state"]) => {
            let w = writer.lock().expect("writer lock");
            let mut doc = state_json(&w, ctx.generation.load(Ordering::Relaxed), state_file);
            drop(w);
            let reports = ctx.reports.lock().expect("reports lock");
            if let Some(list) = doc["addresses"].as_array_mut() {
                for a in list {
                    let name = a["name"].as_str().unwrap_or("").to_string();
                    a["checks"] = json!(reports.get(&name).cloned().unwrap_or_default());
                    if let Some(s) = &ctx.shared {
                        a["votes"] = json!(s.votes(&name));
                    }
                }
            }
            if let Some(s) = &ctx.shared {
                doc["fleet"] = super::fleet::members::summary(s);
            }
            (200, doc)
        }
        ("PUT" | "POST" | "DELETE", ["v1", "addresses", name, "override"]) => {
            let name = percent_decode(name);
            let (mode, until) = if method == "DELETE" {
                (None, None)
            } else {
                match super::ops::override_body(body) {
                    Ok((m, until)) => (Some(m), until),
                    Err(e) => return (400, json!({ "error": e })),
                }
            };
            let mut w = writer.lock().expect("writer lock");
            let set = match (mode, until) {
                (Some(m), Some(t)) => w.set_override_until(&name, m, t),
                _ => w.set_override(&name, mode),
            };
            match set {
                Ok(changes) => {
                    info!(
                        actor,
                        client = %peer.client,
                        address = %name,
                        mode = mode.map_or("configured", mode_name),
                        expires_unix_ms = until,
                        "operator override"
                    );
                    log_changes(&changes);
                    if let Some(p) = state_file {
                        let gen = ctx.generation.load(Ordering::Relaxed);
                        let capture = super::state::Capture::of(&w, gen);
                        drop(w);
                        if let Err(e) = super::state::save(p, &capture) {
                            warn!(file = %p.display(), "cannot persist overrides: {e}");
                            return (
                                500,
                                json!({"error": format!("applied but not persisted: {e}")}),
                            );
                        }
                    }
                    (
                        200,
                        json!({"address": name, "override": mode.map(mode_name), "expires_unix_ms": until, "changes": changes.iter().map(|c| c.to_string()).collect::<Vec<_>>()}),
                    )
                }
                Err(e) => (404, json!({"error": e})),
            }
        }
        (_, ["v1", "state"]) | (_, ["v1", "addresses", _, "override"]) => (
            405,
            json!({"error": format!("{method} is not allowed here")}),
        ),
        _ => (
            404,
            json!({"error": "not found", "endpoints": ["GET /v1/state", "GET /v1/status", "GET /v1/stats", "GET /v1/fleet", "POST /v1/reload", "PUT /v1/addresses/NAME/override", "DELETE /v1/addresses/NAME/override", "/v1/access-domains", "/v1/pools", "/v1/addresses", "/v1/health-checks", "/v1/lines", "GET /metrics"]}),
        ),
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            // Octets, not a str slice: a multi-octet character after '%' is no boundary.
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
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

#[cfg(test)]
mod tests {
    use super::{host_of, token_name, Token};

    #[test]
    fn host_values() {
        assert_eq!(host_of("LocalHost:5380").as_deref(), Some("localhost"));
        assert_eq!(host_of("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:5380").as_deref(), Some("::1"));
        assert_eq!(
            host_of("gtm.example.net.").as_deref(),
            Some("gtm.example.net")
        );
        for bad in ["", "a:b", "[::1", "[::1]x", "::1", "a b", "x:123456"] {
            assert_eq!(host_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let tokens = vec![
            Token {
                name: "a".into(),
                secret: b"0123456789abcdef".to_vec(),
            },
            Token {
                name: "b".into(),
                secret: b"fedcba9876543210".to_vec(),
            },
        ];
        assert_eq!(token_name(&tokens, "Bearer fedcba9876543210"), Some("b"));
        assert_eq!(token_name(&tokens, "bearer 0123456789abcdef"), Some("a"));
        for bad in [
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdefX",
            "Basic 0123456789abcdef",
            "0123456789abcdef",
            "Bearer",
        ] {
            assert_eq!(token_name(&tokens, bad), None, "{bad}");
        }
    }
}
