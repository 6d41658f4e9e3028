//! An in-process transport: a [`Server`](crate::Server) served over in-memory pipes
//! (`tokio::io::duplex`), so tests and examples exercise the real tonic stack and the whole
//! middleware without a socket.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sentra_core::{proto::{Ack, AckStatus}, MemoryKeyring, Verified};
//! use sentra_transport::{BoxError, Server};
//! use tower::service_fn;
//!
//! let server = Server::builder(MemoryKeyring::new(), service_fn(|_: Verified| async move {
//!     Ok::<_, BoxError>(Ack { status: AckStatus::Accepted.into(), ..Default::default() })
//! }))
//! .build()
//! .in_process();
//! let client = server.client().build().unwrap();
//! // Nobody is in the keyring, so the server refuses to authenticate the empty envelope.
//! let err = client.push(Default::default()).await.unwrap_err();
//! assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
//! # }
//! ```

use std::{fmt, io};

use hyper_util::rt::TokioIo;
use tokio::{sync::mpsc, task::JoinHandle};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{ClientBuilder, metrics::Metrics, server::Conn};

/// Size of each in-memory pipe's buffer.
const PIPE_BYTES: usize = 1 << 20;

/// A running in-process server; dropping it stops the server.
pub struct InProcess {
    tx: mpsc::Sender<Conn>,
    task: JoinHandle<()>,
    metrics: Metrics,
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcess").finish_non_exhaustive()
    }
}

impl InProcess {
    pub(crate) fn new(tx: mpsc::Sender<Conn>, task: JoinHandle<()>, metrics: Metrics) -> Self {
        Self { tx, task, metrics }
    }

    /// A client builder connected to this server (configure it, then `build()`).
    #[must_use]
    pub fn client(&self) -> ClientBuilder {
        ClientBuilder::in_process(self.tx.clone())
    }

    /// The server's metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn channel(tx: mpsc::Sender<Conn>, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let tx = tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(PIPE_BYTES);
                tx.send(Conn::in_process(server))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "server stopped"))?;
                Ok::<_, io::Error>(TokioIo::new(client))
            }
        }))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}
