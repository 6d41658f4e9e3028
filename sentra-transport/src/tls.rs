//! TLS material and rustls configuration.
//!
//! This crate uses exactly one rustls crypto provider, `ring` (sentra-core already depends on
//! ring), and passes it explicitly to every config it builds, so it never relies on (or
//! panics for want of) a process-wide default. Binaries that build other rustls configs
//! should call [`install_crypto_provider`] at the top of `main`.
//!
//! Plaintext is allowed: a [`Server`](crate::Server) without [`ServerTls`] speaks h2c, and a
//! client given an `http://` endpoint does too. That suits the embedded default server on
//! loopback; anything that crosses a network should use TLS, ideally with client
//! certificates (mutual TLS), which the server then binds to the agent id.

use std::{path::Path, sync::Arc};

use rustls::crypto::CryptoProvider;
#[cfg(feature = "server")]
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::Error;

/// The crypto provider this crate uses: rustls' `ring` provider.
#[must_use]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs the `ring` provider as rustls' process-wide default unless one is installed
/// already. Returns whether this call installed it.
pub fn install_crypto_provider() -> bool {
    rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses every certificate in PEM input.
///
/// # Errors
///
/// [`Error::Pem`] if the input holds no certificate or one does not parse.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: "certificate",
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: "certificate",
            reason: "no CERTIFICATE section found".into(),
        });
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in PEM input.
///
/// # Errors
///
/// [`Error::Pem`] if there is none; the message never contains key bytes.
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Pem {
        what: "private key",
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key section found".into(),
            _ => "does not parse".into(),
        },
    })
}

/// Reads a PEM certificate file (a chain: leaf first).
///
/// # Errors
///
/// [`Error::Io`] or [`Error::Pem`].
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    certs_from_pem(&read(path.as_ref())?)
}

/// Reads a PEM private key file.
///
/// # Errors
///
/// [`Error::Io`] or [`Error::Pem`].
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, Error> {
    private_key_from_pem(&read(path.as_ref())?)
}

/// The server's TLS configuration (rustls, ALPN `h2`).
#[cfg(feature = "server")]
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

#[cfg(feature = "server")]
impl ServerTls {
    /// A server certificate chain and key; with `client_ca`, clients must present a
    /// certificate issued by one of those CAs (mutual TLS).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] if rustls rejects the key or chain, [`Error::ClientVerifier`] for an
    /// unusable CA set.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Self, Error> {
        let provider = crypto_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::tls)?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(cas) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots.add(ca).map_err(Error::tls)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| Error::ClientVerifier(Box::new(e)))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(Error::tls)?;
        Ok(Self::from_config(config))
    }

    /// From PEM bytes.
    ///
    /// # Errors
    ///
    /// As [`ServerTls::new`], plus [`Error::Pem`].
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Self, Error> {
        let ca = client_ca_pem.map(certs_from_pem).transpose()?;
        Self::new(
            certs_from_pem(cert_chain_pem)?,
            private_key_from_pem(key_pem)?,
            ca,
        )
    }

    /// From PEM files.
    ///
    /// # Errors
    ///
    /// As [`ServerTls::from_pem`], plus [`Error::Io`].
    pub fn from_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<Self, Error> {
        let ca = client_ca.map(load_certs).transpose()?;
        Self::new(load_certs(cert_chain)?, load_private_key(key)?, ca)
    }

    /// Uses a rustls config built elsewhere; its ALPN list is replaced by `h2`.
    #[must_use]
    pub fn from_config(mut config: ServerConfig) -> Self {
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn self_signed() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = private_key_from_pem(c.key_pair.serialize_pem().as_bytes()).unwrap();
        (vec![c.cert.der().clone()], key)
    }

    #[test]
    fn rustls_errors_are_sources_not_payloads() {
        // An empty client CA set: the verifier builder refuses it.
        let (chain, key) = self_signed();
        let e = ServerTls::new(chain, key, Some(Vec::new())).unwrap_err();
        assert!(matches!(e, Error::ClientVerifier(_)), "{e:?}");
        let source = e.source().expect("source");
        assert!(
            source.is::<rustls::server::VerifierBuilderError>(),
            "{source:?}"
        );
        assert!(
            e.to_string().starts_with("client certificate verifier: "),
            "{e}"
        );

        // A key that does not belong to the certificate: rustls' own error.
        let (chain, _) = self_signed();
        let (_, other_key) = self_signed();
        let e = ServerTls::new(chain, other_key, None).unwrap_err();
        assert!(matches!(e, Error::Tls(_)), "{e:?}");
        assert!(e.source().expect("source").is::<rustls::Error>(), "{e:?}");
    }
}
