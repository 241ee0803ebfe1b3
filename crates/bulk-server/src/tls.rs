//! TLS for STARTTLS (RFC 3207): the server's rustls configuration, read from PEM files or
//! made from a throwaway self-signed certificate.
//!
//! The handshake itself runs in the connection (`connection.rs`), after the session has
//! answered STARTTLS with `220`. rustls runs with the ring provider, named here rather than
//! taken from the process default, so that no other crate's choice of provider can change
//! (or break) the server's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// STARTTLS settings of a server ([`ServerConfig::tls`](crate::ServerConfig::tls)).
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// What every handshake uses: certificate chain, private key, protocol versions (TLS
    /// 1.2 and 1.3), cipher suites.
    pub server: Arc<rustls::ServerConfig>,
    /// Refuse MAIL and BULK before STARTTLS with `530 5.7.0`.
    pub required: bool,
}

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or is not PEM.
    #[error("cannot read certificates from {path}")]
    ReadCertificates {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("no certificate in {path} (expected PEM `-----BEGIN CERTIFICATE-----` blocks)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file could not be read, is not PEM, or holds no private key.
    #[error("cannot read a private key (PKCS#8, PKCS#1 or SEC1 PEM) from {path}")]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::pki_types::pem::Error,
    },
    /// The key is not the certificate's, or rustls refuses the pair.
    #[error("the certificate {cert} and the key {key} cannot be used together")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said (a key mismatch, an unsupported key type).
        source: rustls::Error,
    },
    /// rustls refused a generated certificate or its settings.
    #[error("cannot make the TLS configuration")]
    Config(#[source] rustls::Error),
    /// rcgen could not make the self-signed certificate.
    #[error("cannot generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
}

/// A throwaway certificate and the configuration serving it.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    /// The rustls configuration with the certificate and its key.
    pub server: Arc<rustls::ServerConfig>,
    /// The certificate, for a client (a test) that trusts exactly it.
    pub certificate: CertificateDer<'static>,
    /// The certificate in PEM, for logs and tools.
    pub pem: String,
}

/// The rustls builder with the ring provider and rustls' safe protocol versions.
fn builder() -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, TlsError>
{
    // rustls 0.23.48 deprecates the ring provider for lacking post-quantum key exchange
    // (aws-lc-rs has it). ring is the workspace's deliberate choice: aws-lc-rs costs
    // minutes of C build on two cores, and this server's TLS protects a benchmark's mail,
    // not long-lived secrets.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)
}

/// The server configuration of a certificate chain (`cert`: PEM, the server's certificate
/// first, then any intermediates) and its private key (`key`: PEM, PKCS#8, PKCS#1 or
/// SEC1). No client certificates are asked for.
pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read_certs = |source| TlsError::ReadCertificates {
        path: cert.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(read_certs)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_certs)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
        path: key.to_owned(),
        source,
    })?;
    let config = builder()?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// A self-signed certificate for `names` (host names and IP addresses, as subject
/// alternative names), with a fresh key, and the configuration serving it. For tests and
/// trials: no client can verify it unless told to trust exactly this certificate.
pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(TlsError::Generate)?;
    let certificate = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let config = builder()?
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .map_err(TlsError::Config)?;
    Ok(SelfSigned {
        server: Arc::new(config),
        certificate,
        pem: cert.pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_load_and_their_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let other_key = dir.path().join("other.pem");
        std::fs::write(&cert, one.cert.pem()).unwrap();
        std::fs::write(&key, one.signing_key.serialize_pem()).unwrap();
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        from_pem_files(&cert, &key).expect("a matching pair loads");

        let missing = dir.path().join("missing.pem");
        let error = from_pem_files(&missing, &key).unwrap_err();
        assert!(
            matches!(error, TlsError::ReadCertificates { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("missing.pem"));
        // A key where the certificate should be: no certificate in it.
        let error = from_pem_files(&key, &key).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
        // A certificate where the key should be: no key in it.
        let error = from_pem_files(&cert, &cert).unwrap_err();
        assert!(matches!(error, TlsError::ReadKey { .. }), "{error}");
        let error = from_pem_files(&cert, &other_key).unwrap_err();
        assert!(matches!(error, TlsError::Pair { .. }), "{error}");
    }

    #[test]
    fn a_self_signed_certificate_serves() {
        let made = self_signed(&["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        assert!(made.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!made.certificate.is_empty());
    }
}
