//! TLS for HTTPS checks (rustls). Two client configurations, built once: one verifying the
//! server's certificate against the system's roots, one that accepts any certificate (the
//! template's `tls-verify = false`, for targets with self-signed or internal certificates);
//! both send SNI. The provider and roots are `config::tls`'s, shared with HTTPS alert
//! webhooks.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tracing::info;

use crate::config::tls::provider;

/// The client configuration for `verify`.
pub(super) fn config(verify: bool) -> Arc<ClientConfig> {
    static VERIFYING: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static TRUSTING: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if verify {
        VERIFYING
            .get_or_init(|| {
                let (roots, added) = crate::config::tls::system_roots();
                info!(
                    roots = added,
                    "HTTPS checks verify against the system's CA certificates"
                );
                Arc::new(
                    ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default versions")
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            })
            .clone()
    } else {
        TRUSTING
            .get_or_init(|| {
                Arc::new(
                    ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default versions")
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                        .with_no_client_auth(),
                )
            })
            .clone()
    }
}

/// A client connection to `name` (a DNS name, or an IP address when SNI is not set).
pub(super) fn connect(verify: bool, name: &str) -> Result<rustls::ClientConnection, String> {
    let server = ServerName::try_from(
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| format!("bad TLS server name {name:?}: {e}"))?;
    rustls::ClientConnection::new(config(verify), server).map_err(|e| format!("tls: {e}"))
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
