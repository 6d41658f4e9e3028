#![doc = include_str!("../README.md")]
//!
//! ## Crate map
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
