//! TLS for the public listener: certificate loading (and reloading) and ALPN (h2, then
//! http/1.1).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// The key file holds no private key.
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The listener's certificate and key, replaced in place by a reload: renewed certificates
/// (certbot and friends write new files and signal the gateway, as they do nginx) are served
/// to new connections without a restart. Connections already open keep theirs.
#[derive(Debug)]
pub struct Certificate {
    current: ArcSwap<CertifiedKey>,
}

impl Certificate {
    /// Reads the PEM files; fails when they cannot be read, hold no certificate or key, or the
    /// key does not belong to the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificate>, TlsError> {
        Ok(Arc::new(Certificate {
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
        }))
    }

    /// Reads the files again and serves what they hold from now on; on failure the current
    /// certificate stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        self.current.store(Arc::new(certified_key(cert, key)?));
        Ok(())
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key_pem = read(key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::NoKey(key.display().to_string()))?;
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// The server TLS config serving `certificate` (ALPN: h2, then http/1.1).
pub fn server_config(certificate: Arc<Certificate>) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
