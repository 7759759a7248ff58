//! A running server's health as its control API reports it (`GET /v1/state`): each
//! address's state and the active pool of each route, for `gtmd explain --server`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

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

/// Where the control API is.
struct Endpoint {
    /// HTTPS.
    tls: bool,
    /// The host as written (for `Host` and the TLS server name).
    host: String,
    /// Its addresses, in the resolver's order.
    addrs: Vec<SocketAddr>,
}

/// `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`.
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        Some((other, _)) => return Err(format!("{url}: {other}:// is not http:// or https://")),
        None => (false, url),
    };
    let hostport = rest.split('/').next().unwrap_or("");
    let addrs: Vec<SocketAddr> = hostport
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    if addrs.is_empty() {
        return Err(format!(
            "'{url}' is not http[s]://HOST:PORT of a control API"
        ));
    }
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    Ok(Endpoint {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        addrs,
    })
}

/// The client TLS configuration: the roots of `cacert` (PEM), else the system's.
fn tls_config(cacert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match cacert {
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("{}: not PEM certificates: {e:?}", p.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("{}: a certificate rustls refuses: {e}", p.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in it", p.display()));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// One GET, the body of a 200 or the error.
fn get(url: &str, path: &str, auth: &Auth<'_>, timeout: Duration) -> Result<String, String> {
    let ep = endpoint(url)?;
    let mut last = String::new();
    let mut stream = None;
    for a in &ep.addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some((s, *a));
                break;
            }
            Err(e) => last = format!("control API {a}: {e}"),
        }
    }
    let (s, addr) = stream.ok_or(last)?;
    let err = |e: std::io::Error| format!("control API {addr}: {e}");
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    s.set_write_timeout(Some(timeout)).map_err(err)?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        ep.host
    );
    if let Some(t) = auth.token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    let mut resp = Vec::new();
    if ep.tls {
        let name = ServerName::try_from(ep.host.clone())
            .map_err(|e| format!("{url}: not a TLS server name: {e}"))?;
        let conn = rustls::ClientConnection::new(tls_config(auth.cacert)?, name)
            .map_err(|e| format!("tls: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, s);
        tls.write_all(req.as_bytes())
            .map_err(|e| format!("control API {addr} (TLS): {e}"))?;
        // A server that closes without close_notify still sent the whole response.
        if let Err(e) = (&mut tls).take(256 << 20).read_to_end(&mut resp) {
            if resp.is_empty() {
                return Err(format!("control API {addr} (TLS): {e}"));
            }
        }
    } else {
        let mut s = s;
        s.write_all(req.as_bytes()).map_err(err)?;
        s.take(256 << 20).read_to_end(&mut resp).map_err(err)?;
    }
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

/// How to get in: a bearer token, and the roots to verify an HTTPS API by.
pub(super) struct Auth<'a> {
    /// Bearer token.
    pub(super) token: Option<&'a str>,
    /// PEM certificates to trust (default: the system's).
    pub(super) cacert: Option<&'a Path>,
}

/// Fetches and reads `/v1/state`.
pub(super) fn fetch(url: &str, auth: &Auth<'_>, timeout: Duration) -> Result<ServerState, String> {
    let body = get(url, "/v1/state", auth, timeout)?;
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
pub(super) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |(_, t)| t).to_string())
        .ok_or_else(|| format!("{}: no token in it", path.display()))
}
