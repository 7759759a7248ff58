//! `[control]`: where the control API listens and who may use it, validated into a
//! [`Control`]; and its secrets, bearer tokens from `token-file` and the TLS certificate and
//! key of the API, read and checked with the rest of the configuration (so `gtmd check`
//! reports a missing, malformed or world-readable file, and a reload re-reads them).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::spec::ControlSpec;
use super::validate::{Ctx, Seconds};
use super::{ConfigError, Control, Origin, DEFAULT_CONTROL};

/// `control.state-max-age` unless set: saved health and active pools an hour old or
/// younger are restored at start-up.
pub const DEFAULT_STATE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Shortest token accepted (characters): long enough that guessing is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// One named bearer token. The name is what logs show; the secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Who holds it (logged with every change made with it).
    pub name: String,
    /// The token itself.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}: <redacted>)", self.name)
    }
}

/// `tls-cert` and `tls-key`: the files, and the server configuration built from them.
#[derive(Clone)]
pub struct Tls {
    /// Certificate chain file (PEM).
    pub cert: std::path::PathBuf,
    /// Private key file (PEM).
    pub key: std::path::PathBuf,
    /// The chain as read (to tell a renewed certificate from the same one).
    pub chain: Vec<CertificateDer<'static>>,
    /// Ready to accept connections.
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The settings of a file without `[control]`.
    fn defaults() -> Self {
        Self {
            listen: Some(DEFAULT_CONTROL.parse().expect("literal")),
            explicit: false,
            state_file: None,
            state_max_age: DEFAULT_STATE_MAX_AGE,
            allow_remote: false,
            token_file: None,
            tokens: Vec::new(),
            allowed_hosts: Vec::new(),
            tls: None,
        }
    }

    /// Why the API may not listen where it is asked to: beyond loopback it needs tokens.
    pub fn exposure_error(&self) -> Option<String> {
        let a = self.listen?;
        (!a.ip().is_loopback() && self.token_file.is_none()).then(|| {
            format!(
                "{a} is not a loopback address: a control API beyond loopback needs \
                 [control] token-file (bearer tokens, one name:token per line)"
            )
        })
    }
}

/// `[control]`, or its defaults when the file has none.
pub(super) fn validate(spec: Option<&ControlSpec>, ctx: &mut Ctx<'_>) -> Control {
    spec.map_or_else(Control::defaults, |spec| spec.validate(ctx))
}

impl ControlSpec {
    fn validate(&self, ctx: &mut Ctx<'_>) -> Control {
        let mut c = Control::defaults();
        c.allow_remote = self.allow_remote == Some(true);
        if let Some(f) = &self.token_file {
            let path = ctx.path(f.get_ref());
            c.tokens = read_tokens(&path, ctx.at(f), ctx.errs);
            c.token_file = Some(path);
        }
        for h in self.allowed_hosts.iter().flatten() {
            if let Some(name) = ctx.check(h, "control.allowed-hosts", host_name(h.get_ref()), || {
                format!(
                    "'{}' is not a host name or IP address (no scheme, port or path: \"gtmd.example.net\", \"192.0.2.1\")",
                    h.get_ref()
                )
            }) {
                c.allowed_hosts.push(name);
            }
        }
        c.tls = self.tls(ctx);
        if let Some(l) = &self.listen {
            c.explicit = true;
            listen(l, ctx, &mut c);
        }
        c.state_file = self.state_file.as_ref().map(|f| ctx.path(f.get_ref()));
        let ok = Seconds::Within(0.0, 365.0 * 86400.0);
        if let Some(a) = ctx.seconds(&self.state_max_age, "control.state-max-age", ok, "") {
            c.state_max_age = a;
        }
        c
    }

    /// `tls-cert` and `tls-key`: both, or neither.
    fn tls(&self, ctx: &mut Ctx<'_>) -> Option<Tls> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => read_tls(
                (&ctx.path(cert.get_ref()), ctx.at(cert)),
                (&ctx.path(key.get_ref()), ctx.at(key)),
                ctx.errs,
            ),
            (Some(v), None) | (None, Some(v)) => {
                let field = if self.tls_cert.is_some() {
                    "control.tls-key"
                } else {
                    "control.tls-cert"
                };
                let why = "tls-cert and tls-key go together: set both (PEM files) or neither";
                ctx.err(v, field, why);
                None
            }
            (None, None) => None,
        }
    }
}

/// `listen`: "off", a loopback address, or (with `allow-remote` and tokens) any other.
fn listen(l: &Spanned<String>, ctx: &mut Ctx<'_>, c: &mut Control) {
    let text = l.get_ref().as_str();
    if text == "off" || text.is_empty() {
        c.listen = None;
        return;
    }
    match text.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => c.listen = Some(a),
        Ok(a) if !c.allow_remote => ctx.err(
            l,
            "control.listen",
            format!("{a} is not a loopback address: set allow-remote = true and token-file to expose the control API"),
        ),
        Ok(a) => {
            c.listen = Some(a);
            if let Some(e) = c.exposure_error() {
                ctx.err(l, "control.listen", e);
            }
        }
        Err(_) => ctx.err(
            l,
            "control.listen",
            format!("'{text}' is not an address:port or \"off\""),
        ),
    }
}

/// Reads a secret file, refusing one every user of the machine may read or write.
fn read_secret(
    path: &Path,
    at: &Origin,
    field: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    super::reads::note(path);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            errs.push(ConfigError::new(
                at.clone(),
                field,
                format!("cannot read {}: {e}", path.display()),
            ));
            return None;
        }
    };
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
    if mode & 0o007 != 0 {
        errs.push(ConfigError::new(
            at.clone(),
            field,
            format!(
                "{} is open to every user of this machine (mode {:o}): chmod o-rwx it",
                path.display(),
                mode & 0o777
            ),
        ));
        return None;
    }
    Some(bytes)
}

/// The tokens of `path`: one `name:token` per line, `#` comments and blank lines ignored.
/// Mistakes are reported at their line of the token file, never showing a token.
pub fn read_tokens(path: &Path, at: Origin, errs: &mut Vec<ConfigError>) -> Vec<Token> {
    let field = "control.token-file";
    let Some(bytes) = read_secret(path, &at, field, errs) else {
        return Vec::new();
    };
    let file: Arc<str> = path.display().to_string().into();
    let Ok(text) = String::from_utf8(bytes) else {
        errs.push(ConfigError::new(
            Origin::new(&file, 1),
            field,
            "not UTF-8 text",
        ));
        return Vec::new();
    };
    let mut tokens: Vec<Token> = Vec::new();
    let before = errs.len();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let here = Origin::new(&file, i as u32 + 1);
        let Some((name, secret)) = line.split_once(':') else {
            errs.push(ConfigError::new(
                here,
                field,
                "not name:token (e.g. alice:0b1c..., one token per line)",
            ));
            continue;
        };
        let (name, secret) = (name.trim(), secret.trim());
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            errs.push(ConfigError::new(
                here,
                field,
                format!("token name '{name}' is not made of letters, digits and -_.@"),
            ));
        } else if secret.chars().count() < MIN_TOKEN_LEN
            || secret
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            errs.push(ConfigError::new(
                here,
                field,
                format!(
                    "the token of '{name}' is shorter than {MIN_TOKEN_LEN} characters or has \
                     spaces (e.g. `openssl rand -hex 32`)"
                ),
            ));
        } else if tokens.iter().any(|t| t.name == name) {
            errs.push(ConfigError::new(
                here,
                field,
                format!("token name '{name}' is used twice"),
            ));
        } else if tokens.iter().any(|t| t.secret == secret.as_bytes()) {
            errs.push(ConfigError::new(
                here,
                field,
                format!("the token of '{name}' is also another name's token"),
            ));
        } else {
            tokens.push(Token {
                name: name.to_string(),
                secret: secret.as_bytes().to_vec(),
            });
        }
    }
    if tokens.is_empty() && errs.len() == before {
        errs.push(ConfigError::new(
            at,
            field,
            format!(
                "{} holds no token (one name:token per line)",
                path.display()
            ),
        ));
    }
    tokens
}

/// Reads the certificate chain and key and builds the server configuration (ring, TLS 1.2
/// and 1.3, HTTP/1.1 by ALPN), so a key that does not match its certificate is a
/// configuration error.
fn read_tls(
    (cert, cert_at): (&Path, Origin),
    (key, key_at): (&Path, Origin),
    errs: &mut Vec<ConfigError>,
) -> Option<Tls> {
    super::reads::note(cert);
    let cert_pem = match std::fs::read(cert) {
        Ok(b) => b,
        Err(e) => {
            errs.push(ConfigError::new(
                cert_at,
                "control.tls-cert",
                format!("cannot read {}: {e}", cert.display()),
            ));
            return None;
        }
    };
    let key_pem = read_secret(key, &key_at, "control.tls-key", errs)?;
    let chain: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>() {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                errs.push(ConfigError::new(
                    cert_at,
                    "control.tls-cert",
                    format!("{} holds no PEM CERTIFICATE", cert.display()),
                ));
                return None;
            }
            Err(e) => {
                errs.push(ConfigError::new(
                    cert_at,
                    "control.tls-cert",
                    format!("{}: {e}", cert.display()),
                ));
                return None;
            }
        };
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(e) => {
            errs.push(ConfigError::new(
                key_at,
                "control.tls-key",
                format!("{}: no usable PEM private key: {e}", key.display()),
            ));
            return None;
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let built = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(chain.clone(), private)
                .map_err(|e| e.to_string())
        });
    match built {
        Ok(mut server) => {
            server.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Tls {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                chain,
                server: Arc::new(server),
            })
        }
        Err(e) => {
            errs.push(ConfigError::new(
                key_at,
                "control.tls-key",
                format!(
                    "does not go with the certificate in {}: {e}",
                    cert.display()
                ),
            ));
            None
        }
    }
}

/// A `Host` value as compared: an IP address as `IpAddr` prints it (IPv6 without
/// brackets), or a lowercase name without a trailing dot; `None` for anything else.
pub fn host_name(text: &str) -> Option<String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    if let Ok(ip) = inner.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let name = t.strip_suffix('.').unwrap_or(t).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_are_normalised() {
        assert_eq!(
            host_name("GTMD.Example.NET.").as_deref(),
            Some("gtmd.example.net")
        );
        assert_eq!(host_name("[::1]").as_deref(), Some("::1"));
        assert_eq!(host_name("::1").as_deref(), Some("::1"));
        assert_eq!(host_name("192.0.2.1").as_deref(), Some("192.0.2.1"));
        for bad in ["", "http://x", "x:80", "a/b", "a..b", "sp ace"] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
    }
}
