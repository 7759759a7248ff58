//! `gtmd ctl`: the control API from the command line. A small HTTP/1.1 client over a
//! `TcpStream`, or TLS (rustls) for `https://` (the API is gtmd's own one-request-per-connection server, so a request is
//! written whole and the answer read to the end), human-readable output by default and the
//! API's JSON with `--json`. Exit codes: 0 done, 1 the server refused or failed, 2 it could
//! not be reached.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use serde_json::{json, Value};

/// Talk to a running gtmd through its control API.
///
/// The token (for every change) comes from --token-file (a file holding the token, or the
/// server's `name:token` file: its first entry) or from $GTMD_TOKEN. Exit codes: 0 done,
/// 1 the server refused or failed (the reason is printed), 2 the server cannot be reached.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The control API: http://HOST:PORT, https://HOST:PORT, or HOST:PORT.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:5380")]
    pub server: String,
    /// File holding the bearer token (default: $GTMD_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// For https://: the certificate (PEM) to verify the API's against, e.g. its own
    /// tls-cert (default: the system's CA certificates).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// A `gtmd ctl` command.
#[derive(clap::Subcommand, Debug)]
pub enum CtlCmd {
    /// Version, uptime, configuration generation, shards, config file, last reload.
    Status,
    /// Health state: addresses, pools, and the pool each access domain answers from;
    /// with NAME only the address, pool or access domain of that name.
    State {
        /// An address, pool or access domain name.
        name: Option<String>,
    },
    /// Query counters, summed over the shards.
    Stats,
    /// A fleet edge's view of the fleet: the members it hears (group, boot, epoch
    /// applied, isolation, when last heard), which checks it probes, and per check the
    /// fresh votes and its probers (`GET /v1/fleet`).
    Cluster,
    /// Re-read the config file now (as SIGHUP does) and say whether it serves.
    Reload,
    /// Force an address up or down (or to its health checks: auto), for a while with --for.
    Override {
        /// The address name.
        address: String,
        /// up, down, or auto.
        #[arg(value_parser = ["up", "down", "auto"])]
        mode: String,
        /// How long (e.g. 90s, 10m, 1h30m); then the address goes back to its configured
        /// mode. Without it the override lasts until changed.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Enable an access domain (every type of the name, or TYPE).
    Enable {
        /// The access domain name.
        domain: String,
        /// A, AAAA or CNAME.
        #[arg(value_name = "TYPE")]
        rtype: Option<String>,
    },
    /// Disable an access domain (the zone's own records answer for it).
    Disable {
        /// The access domain name.
        domain: String,
        /// A, AAAA or CNAME.
        #[arg(value_name = "TYPE")]
        rtype: Option<String>,
    },
}

/// Why a command failed, as its exit code says.
enum Failed {
    /// The server answered with an error (exit 1).
    Refused(String),
    /// The server could not be reached (exit 2).
    Unreachable(String),
}

/// Runs `gtmd ctl`; returns the exit code.
pub fn run(args: CtlArgs) -> u8 {
    match execute(&args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(Failed::Refused(m)) => {
            eprintln!("{m}");
            1
        }
        Err(Failed::Unreachable(m)) => {
            eprintln!("gtmd ctl: {m}");
            2
        }
    }
}

fn execute(a: &CtlArgs) -> Result<String, Failed> {
    let client = Client::new(&a.server, token(a)?, a.ca_file.as_deref())?;
    let (method, path, body) = match &a.cmd {
        CtlCmd::Status => ("GET", "/v1/status".to_string(), None),
        CtlCmd::State { .. } => ("GET", "/v1/state".to_string(), None),
        CtlCmd::Stats => ("GET", "/v1/stats".to_string(), None),
        CtlCmd::Cluster => ("GET", "/v1/fleet".to_string(), None),
        CtlCmd::Reload => ("POST", "/v1/reload".to_string(), None),
        CtlCmd::Override {
            address,
            mode,
            duration,
        } => (
            "PUT",
            format!("/v1/addresses/{}/override", encode(address)),
            Some(json!({ "mode": mode, "for": duration })),
        ),
        CtlCmd::Enable { domain, rtype } | CtlCmd::Disable { domain, rtype } => {
            let on = matches!(a.cmd, CtlCmd::Enable { .. });
            let t = rtype
                .as_ref()
                .map_or(String::new(), |t| format!("/{}", encode(t)));
            let verb = if on { "enable" } else { "disable" };
            (
                "POST",
                format!("/v1/access-domains/{}{t}/{verb}", encode(domain)),
                None,
            )
        }
    };
    let (status, doc) = client.request(method, &path, body.as_ref())?;
    if status >= 400 {
        return Err(Failed::Refused(refusal(status, &doc)));
    }
    if a.json {
        return Ok(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n");
    }
    match &a.cmd {
        CtlCmd::Status => Ok(super::ctl_text::status(&doc)),
        CtlCmd::State { name } => {
            super::ctl_text::state(&doc, name.as_deref()).map_err(Failed::Refused)
        }
        CtlCmd::Stats => Ok(super::ctl_text::stats(&doc)),
        CtlCmd::Cluster => Ok(super::ctl_text::cluster(&doc)),
        CtlCmd::Reload => Ok(format!("reloaded: generation {}\n", doc["generation"])),
        CtlCmd::Override {
            address,
            mode,
            duration,
        } => Ok(super::ctl_text::overridden(
            address,
            mode,
            duration.as_deref(),
            &doc,
        )),
        CtlCmd::Enable { .. } | CtlCmd::Disable { .. } => Ok(super::ctl_text::switched(&doc)),
    }
}

/// The server's refusal as text: status, error, and every configuration error.
fn refusal(status: u16, doc: &Value) -> String {
    let mut s = format!(
        "gtmd ctl: the server said {status}: {}",
        doc["error"].as_str().unwrap_or("(no reason given)")
    );
    for e in doc["errors"].as_array().into_iter().flatten() {
        s.push('\n');
        s.push_str(e.as_str().unwrap_or(""));
    }
    s
}

/// The bearer token: from --token-file, else $GTMD_TOKEN, else none (reads only).
fn token(a: &CtlArgs) -> Result<Option<String>, Failed> {
    let Some(f) = &a.token_file else {
        return Ok(std::env::var("GTMD_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_string()));
    };
    let text = std::fs::read_to_string(f)
        .map_err(|e| Failed::Refused(format!("gtmd ctl: cannot read {}: {e}", f.display())))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| Failed::Refused(format!("gtmd ctl: {} holds no token", f.display())))?;
    Ok(Some(
        line.split_once(':')
            .map_or(line, |(_, t)| t)
            .trim()
            .to_string(),
    ))
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where the API is, and the token to show it.
struct Client {
    /// `HOST:PORT`, as the `Host` header says it.
    host: String,
    token: Option<String>,
    /// For `https://`: the TLS configuration and the server's name.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// Longest a request may take: a reload of a large model runs for seconds, and the server
/// gives up after two minutes.
const READ_TIMEOUT: Duration = Duration::from_secs(130);

impl Client {
    fn new(server: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Self, Failed> {
        let (https, rest) = match server.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some(_) => {
                return Err(Failed::Unreachable(format!(
                    "'{server}' is not http:// or https://"
                )))
            }
            None => (false, server),
        };
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(Failed::Unreachable(format!(
                "'{server}' is not http[s]://HOST:PORT"
            )));
        }
        let tls = if https {
            Some(tls_config(host, ca_file)?)
        } else {
            None
        };
        Ok(Self {
            host: host.to_string(),
            token,
            tls,
        })
    }

    /// One request; the status and the JSON answer.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Failed> {
        let unreachable =
            |e: std::io::Error| Failed::Unreachable(format!("cannot reach {}: {e}", self.host));
        let addr = self
            .host
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| Failed::Unreachable(format!("{} has no address", self.host)))?;
        let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
        c.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(unreachable)?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        let resp = match &self.tls {
            None => exchange(c, req.as_bytes()),
            Some((cfg, name)) => rustls::ClientConnection::new(cfg.clone(), name.clone())
                .map_err(std::io::Error::other)
                .and_then(|conn| exchange(rustls::StreamOwned::new(conn, c), req.as_bytes())),
        }
        .map_err(unreachable)?;
        parse_response(&resp).ok_or_else(|| {
            let hint = if self.tls.is_some() {
                ""
            } else {
                " (is it https://?)"
            };
            Failed::Unreachable(format!("{} sent no HTTP answer{hint}", self.host))
        })
    }
}

/// Writes the request, reads the answer to the end (the server closes the connection).
fn exchange(mut s: impl Read + Write, req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req)?;
    s.flush()?;
    let mut resp = Vec::new();
    match s.read_to_end(&mut resp) {
        Ok(_) => Ok(resp),
        // A TLS peer that closes without close_notify, once the answer is in.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => Ok(resp),
        Err(e) => Err(e),
    }
}

/// The TLS client for `host` (`NAME:PORT`, `IP:PORT`, `[IPv6]:PORT`): the server's
/// certificate verified against `ca_file` (PEM), or the system's roots without one.
fn tls_config(
    host: &str,
    ca_file: Option<&Path>,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), Failed> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |m: String| Failed::Unreachable(m);
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_string()).map_err(|e| bad(format!("'{name}': {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            let certs = CertificateDer::pem_file_iter(f)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("{}: {e}", f.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!("{}: no certificate", f.display())));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(cfg), name))
}

/// Status and JSON body of an HTTP/1.1 answer (a body that is not JSON becomes a string).
fn parse_response(resp: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let doc = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Some((status, doc))
}

#[cfg(test)]
mod tests {
    use super::{encode, parse_response};

    #[test]
    fn answers_and_names() {
        let (st, doc) =
            parse_response(b"HTTP/1.1 422 X\r\nContent-Length: 2\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((st, doc["a"].as_i64()), (422, Some(1)));
        assert!(parse_response(b"garbage").is_none());
        assert_eq!(encode("www.example.test."), "www.example.test.");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
