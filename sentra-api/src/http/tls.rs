//! Serving the REST API over TLS (rustls), so nothing beyond loopback needs a proxy.
//!
//! [`ApiTls`] holds the certificate chain and key; [`TlsListener`] wraps a bound
//! [`TcpListener`] into an [`axum::serve::Listener`] whose connections are already TLS. TLS
//! handshakes run in their own tasks with a deadline, so a client that connects and never
//! completes a handshake cannot stall the accept loop.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run(api: sentra_api::Api) -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use axum::serve::ListenerExt as _;
//!
//! let tls = sentra_api::ApiTls::from_files("/etc/sentra/api.crt", "/etc/sentra/api.key")?;
//! let tcp = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! // `tap_io` lets axum hand the client address to the router (`ConnectInfo<SocketAddr>`,
//! // used by the per-address login limit), as it does for a plain `TcpListener`.
//! let listener = sentra_api::TlsListener::new(tcp, tls)?.tap_io(|_| {});
//! axum::serve(
//!     listener,
//!     api.router().into_make_service_with_connect_info::<SocketAddr>(),
//! )
//! .await?;
//! # Ok(()) }
//! ```

use std::{fmt, io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::Error;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this, new TCP connections wait in the backlog.
const MAX_HANDSHAKES: usize = 256;
/// Established connections waiting for the HTTP server to pick them up.
const READY_QUEUE: usize = 64;

/// The REST API's TLS configuration: a certificate chain and its private key.
///
/// Only HTTP/1.1 is offered (ALPN `http/1.1`), as the API serves HTTP/1.1. The `Debug` output
/// never contains key material.
#[derive(Clone)]
pub struct ApiTls {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTls").finish_non_exhaustive()
    }
}

impl ApiTls {
    /// From a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if the PEM holds no certificate or no key, or if the key does not
    /// fit the certificate. The message never contains key bytes.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> crate::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid("api_tls_cert", format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(
                "api_tls_cert",
                "no CERTIFICATE section found",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            let reason = match e {
                rustls_pki_types::pem::Error::NoItemsFound => "no private key section found".into(),
                other => format!("not a PEM private key: {other}"),
            };
            Error::invalid("api_tls_key", reason)
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                Error::invalid("api_tls_key", format!("does not fit the certificate: {e}"))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Reads [`ApiTls::from_pem`]'s inputs from files.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be read, else as [`ApiTls::from_pem`].
    pub fn from_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> crate::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// From a rustls configuration built by the caller (client certificates, other ALPN,
    /// another crypto provider …). Its ALPN list must allow HTTP/1.1.
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
        }
    }
}

/// An [`axum::serve::Listener`] that yields TLS connections.
///
/// A background task accepts TCP connections and completes each handshake in its own task
/// (at most 256 at once, 10 s each); failed handshakes are logged at debug level and dropped.
/// Dropping the listener stops that task.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Starts accepting TLS connections on `tcp`. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// If the listener's local address cannot be read.
    pub fn new(tcp: TcpListener, tls: ApiTls) -> io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor_task = tokio::spawn(accept_loop(tcp, tls.acceptor, tx));
        Ok(Self {
            ready,
            local_addr,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped (or it panicked, which
            // it has no reason to): no connection will ever come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "REST API: accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "REST API: TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(%peer, "REST API: TLS handshake timed out");
                }
            }
        });
    }
}
