//! The client side of STARTTLS (RFC 3207): one rustls configuration per run, shared by
//! every TLS session, and how the server's certificate is checked.
//!
//! Benchmarks run against servers with throwaway certificates, so by default the
//! certificate is not checked: [`CertificateCheck::Off`] accepts any certificate, but
//! still checks the handshake's signatures with it (with ring's algorithms, the same as a
//! checking client), so a session pays the cryptography a real client pays and a
//! handshake that does not prove possession of the certificate's key still fails.
//! [`CertificateCheck::Roots`] checks the chain and the name against the given trust
//! anchors (`--tls-verify --tls-ca FILE`), as a mail client that insists on TLS would.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version,
};

/// How a TLS session treats the server's certificate.
#[derive(Clone, Debug, Default)]
pub enum CertificateCheck {
    /// Any certificate is accepted (the handshake's signatures are still checked with
    /// it): benchmarks against servers with throwaway certificates.
    #[default]
    Off,
    /// The certificate must chain to one of these trust anchors and be valid for the
    /// server's name (or IP address): a failure is the session error `tls_certificate`.
    Roots(Vec<CertificateDer<'static>>),
}

impl CertificateCheck {
    /// Checking against the certificates of a PEM file (a CA, or a server's self-signed
    /// certificate), every `CERTIFICATE` section of it.
    pub fn from_pem_file(path: &Path) -> Result<CertificateCheck, TlsError> {
        let read = |source| TlsError::Pem {
            path: path.to_owned(),
            source,
        };
        let roots = CertificateDer::pem_file_iter(path)
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        if roots.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        Ok(CertificateCheck::Roots(roots))
    }
}

/// The TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read certificates from {}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{} holds no CERTIFICATE section", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A trust anchor is not a certificate rustls can use.
    #[error("trust anchor {index} (0-based) is not a usable certificate: {source}")]
    Anchor {
        /// Its place among the anchors.
        index: usize,
        /// rustls's reason.
        source: tokio_rustls::rustls::Error,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid server name for TLS")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// The client side of every TLS session of a run: the connector (one rustls
/// configuration, shared) and the name the server is asked for and checked against.
/// Cloning shares the configuration.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    verified: bool,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("verified", &self.verified)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client checking certificates as `check` says, for the server named `name` (a
    /// DNS name is sent as SNI and checked against the certificate), or, without a name,
    /// for `ip` (no SNI; a checked certificate must hold the address).
    pub fn new(
        check: &CertificateCheck,
        name: Option<&str>,
        ip: IpAddr,
    ) -> Result<TlsClient, TlsError> {
        let server_name = match name {
            Some(name) => {
                ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName {
                    name: name.to_owned(),
                })?
            }
            None => ServerName::IpAddress(ip.into()),
        };
        let provider = Arc::new(ring_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .expect("ring's default provider has cipher suites for TLS 1.2 and 1.3");
        let mut config = match check {
            CertificateCheck::Off => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            CertificateCheck::Roots(anchors) => {
                let mut roots = RootCertStore::empty();
                for (index, anchor) in anchors.iter().enumerate() {
                    roots
                        .add(anchor.clone())
                        .map_err(|source| TlsError::Anchor { index, source })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        // Every session a full handshake, as many senders' first connections are: with
        // resumption the handshake phase would measure a mix that depends on the order
        // sessions ran in and on the server's ticket policy.
        config.resumption = Resumption::disabled();
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            verified: matches!(check, CertificateCheck::Roots(_)),
        })
    }

    /// A client that accepts any certificate, for `ip`: the default of a run.
    pub fn unverified(ip: IpAddr) -> TlsClient {
        // Without a name there is nothing to parse, and without anchors nothing to add:
        // this cannot fail.
        match TlsClient::new(&CertificateCheck::Off, None, ip) {
            Ok(client) => client,
            Err(error) => unreachable!("an unchecked client for an address: {error}"),
        }
    }

    /// Whether the server's certificate is checked.
    pub fn verifies_certificates(&self) -> bool {
        self.verified
    }

    pub(crate) fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    pub(crate) fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }
}

/// ring's provider, named explicitly: aws-lc, rustls's default, costs minutes of C build
/// on two cores, and a process-wide default provider would be one more thing to install
/// before any session. rustls 0.23.48 deprecates it for want of post-quantum key
/// exchange; X25519 and the NIST curves are what the servers under test offer, and the
/// handshake phase measures them.
///
/// Key exchange offers X25519 first, as OpenSSL-based MTAs do: ring's defaults since rustls
/// 0.23.48 put P-384 first, and the client's first group is the one it sends a key share
/// for, which a server that accepts it then uses: every handshake measured would have been
/// a P-384 one, several times the CPU of what MTAs negotiate.
#[allow(deprecated)]
fn ring_provider() -> tokio_rustls::rustls::crypto::CryptoProvider {
    use tokio_rustls::rustls::crypto::ring::{default_provider, kx_group};
    let mut provider = default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    provider
}

/// Accepts any certificate, but checks the handshake's signatures against it, as
/// rustls's own checking verifier does: a server must still hold the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_share_sent_is_x25519() {
        // The client's first group is the one it sends a key share for, and a server that
        // supports it uses it without a retry: what every measured handshake costs.
        let groups: Vec<_> = ring_provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups.first(),
            Some(&tokio_rustls::rustls::NamedGroup::X25519)
        );
    }

    #[test]
    fn names_and_addresses_become_server_names() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let named = TlsClient::new(&CertificateCheck::Off, Some("mx.example"), ip).unwrap();
        assert!(matches!(named.server_name(), ServerName::DnsName(_)));
        assert!(!named.verifies_certificates());
        let bare = TlsClient::unverified(ip);
        assert!(matches!(bare.server_name(), ServerName::IpAddress(_)));
        let error = TlsClient::new(&CertificateCheck::Off, Some("not a name!"), ip).unwrap_err();
        assert!(matches!(error, TlsError::ServerName { .. }), "{error}");
        // An address written as a name is an address.
        let written = TlsClient::new(&CertificateCheck::Off, Some("::1"), ip).unwrap();
        assert!(matches!(written.server_name(), ServerName::IpAddress(_)));
    }

    #[test]
    fn pem_files_give_their_certificates_or_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("bulk-loadgen-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let error = CertificateCheck::from_pem_file(&empty).unwrap_err();
        assert!(
            error.to_string().contains("holds no CERTIFICATE"),
            "{error}"
        );
        let missing = dir.join("missing.pem");
        let error = CertificateCheck::from_pem_file(&missing).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let cert = rcgen::generate_simple_self_signed(vec!["mx.example".to_owned()]).unwrap();
        let good = dir.join("good.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        let check = CertificateCheck::from_pem_file(&good).unwrap();
        assert!(matches!(&check, CertificateCheck::Roots(roots) if roots.len() == 1));
        let client = TlsClient::new(&check, Some("mx.example"), "127.0.0.1".parse().unwrap());
        assert!(client.unwrap().verifies_certificates());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
