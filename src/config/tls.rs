//! TLS client settings shared by everything gtmd connects to over TLS (HTTPS health checks
//! in `probe`, HTTPS alert webhooks in `health::alerts`): one crypto provider (ring) and
//! the system's CA certificates, read once.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tracing::warn;

/// The crypto provider of every TLS connection gtmd makes or accepts.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA certificates (read on first use; problems logged), and how many.
pub fn system_roots() -> (RootCertStore, usize) {
    static ROOTS: OnceLock<(RootCertStore, usize)> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                warn!("loading system CA certificates: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            (roots, added)
        })
        .clone()
}

/// A verifying client configuration: the system's roots plus `extra` (a private CA).
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let (mut roots, _) = system_roots();
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}
