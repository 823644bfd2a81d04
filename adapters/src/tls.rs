//! The client side of TLS, shared by every outbound link (push providers, SMPP
//! carriers): rustls on *ring*, trusting either the roots given in a PEM file — a
//! carrier's private CA, a test's — or the system's.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a TLS client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the CA certificates are not valid PEM: {0}")]
    BadCa(String),
    #[error("the system's roots: {0}")]
    SystemRoots(String),
}

/// Make rustls use *ring* unless the process chose a provider already. Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA certificates in `pem` as roots to trust; at least one.
pub fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsSetupError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::BadCa("no certificate in the file".into()));
    }
    Ok(roots)
}

/// A client configuration trusting the certificates in `ca_pem`, or the system's
/// roots without it; no client certificate, no ALPN (the caller adds its own).
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, TlsSetupError> {
    install_crypto();
    let builder = rustls::ClientConfig::builder();
    Ok(match ca_pem {
        Some(pem) => builder
            .with_root_certificates(roots(pem)?)
            .with_no_client_auth(),
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| TlsSetupError::SystemRoots(e.to_string()))?
                .with_no_client_auth()
        }
    })
}
