//! HTTPS and WSS: the server's certificate chain and key, read from PEM files, for rustls on ring.

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in the file (PEM \"CERTIFICATE\" blocks expected)")]
    NoCertificate(String),
    /// rustls refused the pair (a key that does not match, an unsupported key type).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS server configuration from `cert` (the chain, leaf first, PEM) and `key` (PKCS#8, PKCS#1 or SEC1,
/// PEM). Offers HTTP/1.1 only (WebSockets upgrade from it).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let file_error = |path: &Path, why: String| TlsError::File { path: path.display().to_string(), why };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    from_der(chain, key)
}

/// A TLS server configuration from a chain (leaf first) and its key, in DER.
pub fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate authority made on the spot and a server certificate it signed, all in PEM: for a LAN or a
/// development machine without a public name, and for tests. Nodes trust it with `dht-node --ca`; a
/// browser through its own certificate settings (or, for one run, Chromium's
/// `--ignore-certificate-errors-spki-list` with [`LocalCa::spki_sha256`]).
pub struct LocalCa {
    /// The authority's certificate.
    pub ca_pem: String,
    /// The server's certificate chain: its own certificate, then the authority's.
    pub chain_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub key_pem: String,
    /// Base64 of the SHA-256 of the server certificate's public key (SubjectPublicKeyInfo).
    pub spki_sha256: String,
}

impl LocalCa {
    /// A new authority, and a certificate for `names` (host names or IP addresses), valid from now on.
    pub fn new(names: &[String]) -> Result<LocalCa, rcgen::Error> {
        use base64::Engine as _;
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PublicKeyData};
        use sha2::Digest as _;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "webdht local CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or("webdht", String::as_str));
        let cert = params.signed_by(&key, &issuer)?;
        let spki = sha2::Sha256::digest(key.subject_public_key_info());
        Ok(LocalCa {
            ca_pem: ca_cert.pem(),
            chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
            key_pem: key.serialize_pem(),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki),
        })
    }

    /// Writes `ca.pem`, `cert.pem` (the chain) and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        std::fs::write(dir.join("cert.pem"), &self.chain_pem)?;
        std::fs::write(dir.join("key.pem"), &self.key_pem)
    }
}
