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
//!
//! ## Features
//!
//! Both are on by default; a program that only ships (an agent) or only serves can turn
//! the other side off and does not compile it (`default-features = false`).
//!
//! * `client`: [`Client`], [`ClientBuilder`], [`RetryConfig`].
//! * `server`: [`Server`], the server layers ([`auth`], [`rate_limit`],
//!   [`concurrency`], [`size_limit`], [`metrics`]) and [`tls::ServerTls`].
//!
//! [`InProcess`] needs both. [`status`], [`codec`], [`timeout`], [`tls`]'s PEM helpers and
//! [`Error`] are always there.
// With a feature off, the crate docs still name the other side's items.
#![cfg_attr(
    not(all(feature = "client", feature = "server")),
    allow(rustdoc::broken_intra_doc_links)
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "client")]
mod client;
pub mod codec;
#[cfg(feature = "server")]
pub mod concurrency;
mod error;
#[cfg(all(feature = "client", feature = "server"))]
mod in_process;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod rate_limit;
#[cfg(feature = "server")]
mod reject_future;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod size_limit;
pub mod status;
pub mod timeout;
pub mod tls;

/// Generated gRPC service code for `sentra.v1.Ingest` (client and server), built from
/// sentra-core's descriptor set; message types are `sentra_core::proto`'s.
#[cfg(any(feature = "client", feature = "server"))]
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

#[cfg(any(feature = "client", feature = "server"))]
use std::sync::Arc;

#[cfg(feature = "client")]
pub use client::{Client, ClientBuilder, ClientConfig, RetryConfig};
pub use error::{Error, RpcError};
#[cfg(all(feature = "client", feature = "server"))]
pub use in_process::InProcess;
use sentra_core::proto::SignedBatch;
#[cfg(feature = "server")]
pub use server::{Limits, PeerInfo, Server, ServerBuilder};
#[cfg(any(feature = "client", feature = "server"))]
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;
#[cfg(any(feature = "client", feature = "server"))]
use tower_layer::Layer;
#[cfg(any(feature = "client", feature = "server"))]
use tower_service::Service;

/// The boxed error type of middleware (tower convention).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A type-erased stack for one method, over `tonic::Request<SignedBatch>` with response `R`:
/// what [`ServerBuilder::layer`] and [`ClientBuilder::layer`] wrap.
pub type CallService<R> = BoxCloneSyncService<tonic::Request<SignedBatch>, R, BoxError>;

#[cfg(any(feature = "client", feature = "server"))]
pub(crate) type Wrap<R> = Arc<dyn Fn(CallService<R>) -> CallService<R> + Send + Sync>;

#[cfg(any(feature = "client", feature = "server"))]
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
