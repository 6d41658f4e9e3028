//! gRPC ingest transport for Sentra: a tonic + rustls server that accepts any tower
//! `Service` of authenticated envelopes, a client with deadline/retry/concurrency layers,
//! and the middleware in between, each layer its own module you can reuse or extend.
//!
//! * [`Server`]: `Push` goes to any `Service<Verified, Response = Ack>` (sentra-ingest's
//!   pipeline, or yours), `FetchDesiredState` to an optional
//!   `Service<Verified, Response = DesiredState>`. Every tonic/hyper limit is set
//!   explicitly ([`server::Limits`]); the stack order is documented in [`server`].
//! * [`Client`]: `push(SignedBatch) -> Ack`, `fetch_desired_state(SignedBatch) -> DesiredState`
//!   over `http://` or `https://` (custom CA, optional client certificate), with retries that
//!   only repeat what is safe.
//! * Layers (tower-http layout: `layer` / `service` / `future` / `error`): [`auth`] (HMAC via
//!   sentra-core, mTLS binding), [`rate_limit`] (per agent), [`concurrency`] (global limit,
//!   load shedding), [`size_limit`], [`timeout`], [`metrics`].
//! * [`status`]: the documented error → gRPC status mapping, and helpers to read it back.
//! * [`InProcess`]: the same server over in-memory pipes, for tests and examples.
//! * [`tls`]: PEM loading and rustls configs on the `ring` provider.
//!
//! # Example
//!
//! A server with a toy inner service, an agent signing and pushing a batch, in-process (swap
//! `.in_process()` / `.client()` for [`Server::serve`] on a `TcpListener` and
//! [`Client::builder`]`("https://…")` to go over the network):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sentra_core::{
//!     proto::{Ack, AckStatus}, AgentId, Batch, KeyId, MemoryKeyring, Nonce, SecretKey,
//!     Seq, Signer, UnixMillis, Validity, Verified,
//! };
//! use sentra_transport::{BoxError, Server};
//! use tower::service_fn;
//!
//! let agent = AgentId::new("edge-01")?;
//! let secret = SecretKey::from_bytes([7; 32]);
//! let mut keyring = MemoryKeyring::new();
//! keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
//!
//! // Server side: the inner service only ever sees authenticated envelopes.
//! let pipeline = service_fn(|v: Verified| async move {
//!     let batch = v.decode_batch()?;
//!     Ok::<_, BoxError>(Ack {
//!         agent_id: batch.agent_id.to_string(),
//!         seq: v.seq().get(),
//!         status: AckStatus::Accepted.into(),
//!         ..Default::default()
//!     })
//! });
//! let server = Server::builder(keyring, pipeline).build().in_process();
//!
//! // Agent side.
//! let client = server.client().build()?;
//! let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
//! let batch = Batch::new(agent, Seq::new(1)?, UnixMillis::now());
//! let ack = client.push(signer.sign_batch(&batch, UnixMillis::now(), Nonce::random())).await?;
//! assert_eq!(ack.status(), AckStatus::Accepted);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod auth;
mod client;
pub mod codec;
pub mod concurrency;
mod error;
mod in_process;
pub mod metrics;
pub mod rate_limit;
mod reject_future;
pub mod server;
pub mod size_limit;
pub mod status;
pub mod timeout;
pub mod tls;

/// Generated gRPC service code for `sentra.v1.Ingest` (client and server), built from
/// sentra-core's descriptor set; message types are `sentra_core::proto`'s.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::use_self,
    missing_debug_implementations,
    rust_2018_idioms
)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/sentra.v1.rs"));
}

use std::sync::Arc;

pub use client::{Client, ClientBuilder, ClientConfig, RetryConfig};
pub use error::Error;
pub use in_process::InProcess;
use sentra_core::proto::SignedBatch;
pub use server::{Limits, PeerInfo, Server, ServerBuilder};
use tower::{ServiceExt as _, util::BoxCloneSyncService};
use tower_layer::Layer;
use tower_service::Service;

/// The boxed error type of middleware (tower convention).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A type-erased stack for one method, over `tonic::Request<SignedBatch>` with response `R`:
/// what [`ServerBuilder::layer`] and [`ClientBuilder::layer`] wrap.
pub type CallService<R> = BoxCloneSyncService<tonic::Request<SignedBatch>, R, BoxError>;

pub(crate) type Wrap<R> = Arc<dyn Fn(CallService<R>) -> CallService<R> + Send + Sync>;

pub(crate) fn wrap_with<L, R>(layer: L) -> Wrap<R>
where
    L: Layer<CallService<R>> + Send + Sync + 'static,
    L::Service: Service<tonic::Request<SignedBatch>, Response = R> + Clone + Send + Sync + 'static,
    <L::Service as Service<tonic::Request<SignedBatch>>>::Error: Into<BoxError>,
    <L::Service as Service<tonic::Request<SignedBatch>>>::Future: Send + 'static,
    R: 'static,
{
    Arc::new(move |svc| BoxCloneSyncService::new(layer.layer(svc).map_err(Into::<BoxError>::into)))
}
