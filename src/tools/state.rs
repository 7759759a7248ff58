//! A running server's health as its control API reports it (`GET /v1/state`): each
//! address's state and the active pool of each route, for `gtmd explain --server`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// An address as the server sees it.
#[derive(Debug, Clone)]
pub(super) struct AddrState {
    /// Answered (enabled, and up by override, mode or probe).
    pub up: bool,
    /// Why, in the API's words: `override down`, `mode up`, `probe down`.
    pub why: String,
}

/// The part of `/v1/state` explain uses.
#[derive(Debug, Clone, Default)]
pub(super) struct ServerState {
    /// Where it came from.
    pub url: String,
    /// Configuration generation serving.
    pub generation: u64,
    /// Addresses by name.
    pub addresses: HashMap<String, AddrState>,
    /// Active pool by (`name TYPE` of the access domain, its route's lines), `None` on
    /// the fallback.
    pub active: HashMap<(String, String), Option<String>>,
}

/// `http://HOST:PORT` (or `HOST:PORT`) -> (host, socket address).
fn endpoint(url: &str) -> Result<(String, SocketAddr), String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url}: explain reads the control API over plain HTTP only (a loopback listener, \
             or an SSH tunnel to one)"
        ));
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or("");
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("'{url}' is not http://HOST:PORT of a control API"))?;
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_string();
    Ok((host, addr))
}

/// One GET, the body of a 200 or the error.
fn get(url: &str, path: &str, token: Option<&str>, timeout: Duration) -> Result<String, String> {
    let (host, addr) = endpoint(url)?;
    let err = |e: std::io::Error| format!("control API {addr}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(err)?;
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    s.set_write_timeout(Some(timeout)).map_err(err)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(err)?;
    let mut resp = Vec::new();
    s.take(256 << 20).read_to_end(&mut resp).map_err(err)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("control API {addr}: not an HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "control API {addr}: GET {path} answered {status}: {}",
            body.trim()
        ));
    }
    Ok(body.to_string())
}

/// Fetches and reads `/v1/state`.
pub(super) fn fetch(
    url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<ServerState, String> {
    let body = get(url, "/v1/state", token, timeout)?;
    let doc: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{url}/v1/state: not JSON: {e}"))?;
    let mut st = ServerState {
        url: url.to_string(),
        generation: doc["generation"].as_u64().unwrap_or(0),
        ..ServerState::default()
    };
    for a in doc["addresses"].as_array().into_iter().flatten() {
        let Some(name) = a["name"].as_str() else {
            continue;
        };
        let up = a["up"].as_bool().unwrap_or(true);
        let why = if let Some(o) = a["override"].as_str() {
            format!("override {o}")
        } else if a["enabled"] == false {
            "disabled".into()
        } else if a["mode"].as_str().is_some_and(|m| m != "auto") {
            format!("mode {}", a["mode"].as_str().unwrap_or(""))
        } else {
            format!("probe {}", a["probe"].as_str().unwrap_or("?"))
        };
        st.addresses.insert(name.to_string(), AddrState { up, why });
    }
    for ad in doc["access_domains"].as_array().into_iter().flatten() {
        let key = ad["key"].as_str().unwrap_or("").to_string();
        for r in ad["routes"].as_array().into_iter().flatten() {
            let lines = r["lines"].as_str().unwrap_or("").to_string();
            let active = r["active"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|p| p.as_str())
                .map(str::to_string);
            st.active.insert((key.clone(), lines), active);
        }
    }
    Ok(st)
}

/// The token of a token file: its first line that is not a comment, `name:token` or the
/// token alone.
pub(super) fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |(_, t)| t).to_string())
        .ok_or_else(|| format!("{}: no token in it", path.display()))
}
