//! The ingest server: tonic + rustls with every limit set, and the middleware stack around
//! the caller's services.
//!
//! Request path, outer to inner:
//!
//! 1. accept loop: at most [`Limits::max_connections`] open connections (beyond, new ones
//!    wait in the listen backlog) and [`Limits::max_connections_per_address`] per client
//!    address (beyond, refused at once); the TLS handshake (with TLS) and the client's first
//!    HTTP/2 request must arrive within [`Limits::handshake_timeout`] of the accept, on
//!    plaintext and TLS alike (a client that sends only the HTTP/2 preface is closed);
//!    connections silent for [`Limits::idle_timeout`] closed;
//! 2. tonic/hyper: message size, per-connection concurrency with load shedding, whole-request
//!    timeout, keepalive, max concurrent streams, connection age, h2 settings (all in
//!    [`Limits`]); bytes that do not decode as `SignedBatch` are `INVALID_ARGUMENT`;
//! 3. the caller's own [`ServerBuilder::layer`]s (over `tonic::Request<SignedBatch>`);
//! 4. [`metrics`](crate::metrics) (every outcome below is counted);
//! 5. [`concurrency`](crate::concurrency): global in-flight limit, shedding with
//!    `RESOURCE_EXHAUSTED`;
//! 6. [`size_limit`](crate::size_limit): payload cap;
//! 7. [`timeout`](crate::timeout): per-request time;
//! 8. [`auth`](crate::auth): `SignedBatch` → [`Verified`] (HMAC against the keyring, mTLS
//!    identity binding); failed authentications are charged to the client's address and
//!    connection ([`SourceLimiter`], [`Limits::per_ip_failure_quota`]), and sources over
//!    that budget are refused before verification;
//! 9. [`rate_limit`](crate::rate_limit): per authenticated agent (charged only after the
//!    MAC verified);
//! 10. the inner service: `Push` → any `Service<Verified, Response = Ack>`,
//!     `FetchDesiredState` → an optional `Service<Verified, Response = DesiredState>`
//!     (`UNIMPLEMENTED` without one).
//!
//! Errors become statuses as documented in [`status`].

mod conn;

use std::{fmt, future::Future, sync::Arc, time::Duration};

pub(crate) use conn::Conn;
pub use conn::PeerInfo;
use sentra_core::{
    Keyring, Method, Verified, Verifier,
    proto::{Ack, DesiredState, SignedBatch},
};
use tokio::{net::TcpListener, sync::mpsc};
use tower::{ServiceBuilder, ServiceExt as _, util::BoxCloneSyncService};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    BoxError, CallService, Error, Wrap,
    auth::{AuthLayer, Clock},
    concurrency::ConcurrencyLimitLayer,
    metrics::{Metrics, MetricsLayer},
    pb::ingest_server::{Ingest, IngestServer},
    rate_limit::{Quota, RateLimitLayer, SourceLimiter},
    size_limit::RequestSizeLimitLayer,
    status,
    timeout::TimeoutLayer,
    tls::ServerTls,
    wrap_with,
};

/// Every limit of the server, with the defaults documented per field. tonic's own defaults
/// are unbounded for most of these (security.md §3.1); this crate sets each one.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Open connections at most (accept loop); beyond, new connections wait in the listen
    /// backlog. Default 1024.
    pub max_connections: usize,
    /// Open connections at most per client address (IPv6: per /64); beyond, new ones are
    /// refused at once (closed with a reset). Agents behind one NAT share it: raise it for
    /// fleets of more than a few hundred agents behind one address. Default 256.
    pub max_connections_per_address: usize,
    /// From the accept, the TLS handshake (with TLS) and the client's first HTTP/2 request
    /// (the connection preface and a HEADERS frame) must arrive within this, on plaintext
    /// and TLS connections alike; otherwise the connection is closed. Clients that connect
    /// early and send their first request later than this are closed too (Sentra's
    /// [`Client`](crate::Client) connects lazily, on its first request). Default 10 s.
    pub handshake_timeout: Duration,
    /// Close a connection after this long without a byte from the peer. Must exceed
    /// `http2_keepalive_interval + http2_keepalive_timeout`. Default 120 s.
    pub idle_timeout: Duration,
    /// Largest encoded request message tonic decodes (whole `SignedBatch`). Default 4 MiB + 4 KiB.
    pub max_decoding_message_size: usize,
    /// Largest encoded response message. Default 4 MiB.
    pub max_encoding_message_size: usize,
    /// Largest signed payload ([`size_limit`](crate::size_limit)). Default 4 MiB.
    pub max_payload_bytes: usize,
    /// In-flight requests across all connections; beyond, shed. Default 256.
    pub global_concurrency_limit: usize,
    /// In-flight requests per connection (tonic, with load shedding). Default 32.
    pub concurrency_limit_per_connection: usize,
    /// Time for one request through the middleware and the inner service. Default 10 s.
    pub request_timeout: Duration,
    /// tonic's whole-request timeout (includes reading the body; answers `CANCELLED`).
    /// Default 15 s.
    pub transport_timeout: Duration,
    /// HTTP/2 streams per connection. Default 100.
    pub max_concurrent_streams: u32,
    /// HTTP/2 ping interval. Default 30 s.
    pub http2_keepalive_interval: Duration,
    /// Close the connection if a ping is not answered within this. Default 20 s.
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive idle time. Default 60 s.
    pub tcp_keepalive: Duration,
    /// Connections are gracefully closed (GOAWAY) after this age. Default 30 min.
    pub max_connection_age: Duration,
    /// Grace period for in-flight requests after `max_connection_age`. Default 30 s.
    pub max_connection_age_grace: Duration,
    /// HTTP/2 stream flow-control window. Default 256 KiB.
    pub initial_stream_window_size: u32,
    /// HTTP/2 connection flow-control window. Default 1 MiB.
    pub initial_connection_window_size: u32,
    /// Pending-accept reset streams before GOAWAY (Rapid Reset, CVE-2023-44487). Default 20.
    pub http2_max_pending_accept_reset_streams: usize,
    /// Locally caused stream resets before GOAWAY (RUSTSEC-2024-0003). Default 1024.
    pub http2_max_local_error_reset_streams: usize,
    /// Largest header list. Default 16 KiB.
    pub http2_max_header_list_size: u32,
    /// Largest HTTP/2 frame. Default 16 KiB (the protocol minimum).
    pub max_frame_size: u32,
    /// Per-agent request quota ([`rate_limit`](crate::rate_limit)). Default 20/s, burst 40.
    pub per_agent_quota: Quota,
    /// Budget of failed authentications per client address (IPv6: per /64) and per
    /// connection ([`SourceLimiter`]); past it, the source's requests are refused before
    /// verification (`RESOURCE_EXHAUSTED`), except on connections that already carried an
    /// authenticated request. Valid requests are never charged to it. `None` disables it.
    /// Default 20/s, burst 100.
    pub per_ip_failure_quota: Option<Quota>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_address: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_decoding_message_size: 4 * 1024 * 1024 + 4096,
            max_encoding_message_size: 4 * 1024 * 1024,
            max_payload_bytes: 4 * 1024 * 1024,
            global_concurrency_limit: 256,
            concurrency_limit_per_connection: 32,
            request_timeout: Duration::from_secs(10),
            transport_timeout: Duration::from_secs(15),
            max_concurrent_streams: 100,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(30 * 60),
            max_connection_age_grace: Duration::from_secs(30),
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 1024 * 1024,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
            http2_max_header_list_size: 16 * 1024,
            max_frame_size: 16 * 1024,
            per_agent_quota: Quota::per_second(20.0).burst(40),
            per_ip_failure_quota: Some(Quota::per_second(20.0).burst(100)),
        }
    }
}

type InnerService<R> = BoxCloneSyncService<Verified, R, BoxError>;

/// The ingest server. Build one with [`Server::builder`].
pub struct Server {
    handler: Handler,
    limits: Limits,
    tls: Option<ServerTls>,
    metrics: Metrics,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Server`].
pub struct ServerBuilder {
    keyring: Arc<dyn Keyring + Send + Sync>,
    push: InnerService<Ack>,
    fetch: Option<InnerService<DesiredState>>,
    limits: Limits,
    tls: Option<ServerTls>,
    verifier: Verifier,
    clock: Option<Clock>,
    metrics: Metrics,
    require_client_cert: bool,
    push_layers: Vec<Wrap<Ack>>,
    fetch_layers: Vec<Wrap<DesiredState>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .field("verifier", &self.verifier)
            .field("desired_state", &self.fetch.is_some())
            .field("layers", &self.push_layers.len())
            .finish_non_exhaustive()
    }
}

fn boxed<S, R>(svc: S) -> InnerService<R>
where
    S: Service<Verified, Response = R> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(svc.map_err(Into::<BoxError>::into))
}

impl Server {
    /// A server verifying envelopes against `keyring` and handing authenticated `Push`es to
    /// `push` (e.g. sentra-ingest's pipeline, or your own service).
    ///
    /// The service must be `Clone + Send + Sync` (it is cloned per request, like any tower
    /// service under tonic); wrap it in `tower::buffer::Buffer` if it is not.
    pub fn builder<K, S>(keyring: K, push: S) -> ServerBuilder
    where
        K: Keyring + Send + Sync + 'static,
        S: Service<Verified, Response = Ack> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        ServerBuilder {
            keyring: Arc::new(keyring),
            push: boxed(push),
            fetch: None,
            limits: Limits::default(),
            tls: None,
            verifier: Verifier::new(),
            clock: None,
            metrics: Metrics::new(),
            require_client_cert: false,
            push_layers: Vec::new(),
            fetch_layers: Vec::new(),
        }
    }

    /// The metrics registry this server records into.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn tonic_server(&self) -> tonic::transport::server::Router {
        let l = &self.limits;
        let svc = IngestServer::new(self.handler.clone())
            .max_decoding_message_size(l.max_decoding_message_size)
            .max_encoding_message_size(l.max_encoding_message_size);
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(l.concurrency_limit_per_connection)
            .load_shed(true)
            .timeout(l.transport_timeout)
            .max_concurrent_streams(l.max_concurrent_streams)
            .http2_keepalive_interval(Some(l.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(l.http2_keepalive_timeout))
            .tcp_keepalive(Some(l.tcp_keepalive))
            .tcp_nodelay(true)
            .max_connection_age(l.max_connection_age)
            .max_connection_age_grace(l.max_connection_age_grace)
            .initial_stream_window_size(l.initial_stream_window_size)
            .initial_connection_window_size(l.initial_connection_window_size)
            .http2_adaptive_window(Some(false))
            .http2_max_pending_accept_reset_streams(Some(l.http2_max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(l.http2_max_local_error_reset_streams))
            .http2_max_header_list_size(l.http2_max_header_list_size)
            .max_frame_size(l.max_frame_size)
            .accept_http1(false)
            .add_service(svc)
    }

    /// Serves on `listener` until an error.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if tonic's server fails.
    pub async fn serve(self, listener: TcpListener) -> Result<(), Error> {
        self.serve_with_shutdown(listener, std::future::pending())
            .await
    }

    /// Serves on `listener` until `signal` completes, then stops accepting and waits for
    /// open connections to finish.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if tonic's server fails.
    pub async fn serve_with_shutdown<F>(self, listener: TcpListener, signal: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send,
    {
        let (tx, rx) = mpsc::channel(64);
        let accept = tokio::spawn(conn::accept_loop(
            listener,
            self.tls.clone(),
            self.limits.clone(),
            self.metrics.clone(),
            tx,
        ));
        let res = self
            .tonic_server()
            .serve_with_incoming_shutdown(incoming(rx), signal)
            .await;
        accept.abort();
        res.map_err(Error::transport)
    }

    /// Runs the server in-process, without a socket: clients connect over in-memory pipes
    /// through the same tonic stack and middleware. For tests and examples (needs the
    /// `client` feature too).
    #[cfg(feature = "client")]
    #[must_use]
    pub fn in_process(self) -> crate::InProcess {
        let (tx, rx) = mpsc::channel(16);
        let metrics = self.metrics.clone();
        let router = self.tonic_server();
        let task = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming(rx), std::future::pending::<()>())
                .await
            {
                tracing::warn!(error = %e, "in-process server stopped");
            }
        });
        crate::InProcess::new(tx, task, metrics)
    }
}

fn incoming(
    rx: mpsc::Receiver<Conn>,
) -> impl futures_util::Stream<Item = Result<Conn, std::io::Error>> {
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    )
}

impl ServerBuilder {
    /// Serves `FetchDesiredState` with `svc` (without one it answers `UNIMPLEMENTED`).
    #[must_use]
    pub fn desired_state<S>(mut self, svc: S) -> Self
    where
        S: Service<Verified, Response = DesiredState> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.fetch = Some(boxed(svc));
        self
    }

    /// Replaces the limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves TLS (without it: plaintext h2c, fine on loopback).
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Refuses requests from connections without a client certificate bound to the agent
    /// (use with a [`ServerTls`] that has a client CA).
    #[must_use]
    pub fn require_client_cert(mut self, require: bool) -> Self {
        self.require_client_cert = require;
        self
    }

    /// Replaces the envelope verifier (clock-skew window, payload limit).
    #[must_use]
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = verifier;
        self
    }

    /// Replaces the clock used for verification (tests).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Records into `metrics` (share one registry with the rest of the server).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Adds your own layer around the built-in stack of both methods, over
    /// `tonic::Request<SignedBatch>` (metadata, [`PeerInfo`] extension, envelope). Layers
    /// added first run outermost. To see authenticated requests instead, wrap the inner
    /// service you pass to [`Server::builder`].
    #[must_use]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<CallService<Ack>>
            + Layer<CallService<DesiredState>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L as Layer<CallService<Ack>>>::Service:
            Service<tonic::Request<SignedBatch>, Response = Ack> + Clone + Send + Sync + 'static,
        <<L as Layer<CallService<Ack>>>::Service as Service<tonic::Request<SignedBatch>>>::Error:
            Into<BoxError>,
        <<L as Layer<CallService<Ack>>>::Service as Service<tonic::Request<SignedBatch>>>::Future:
            Send + 'static,
        <L as Layer<CallService<DesiredState>>>::Service: Service<tonic::Request<SignedBatch>, Response = DesiredState>
            + Clone
            + Send
            + Sync
            + 'static,
        <<L as Layer<CallService<DesiredState>>>::Service as Service<
            tonic::Request<SignedBatch>,
        >>::Error: Into<BoxError>,
        <<L as Layer<CallService<DesiredState>>>::Service as Service<
            tonic::Request<SignedBatch>,
        >>::Future: Send + 'static,
    {
        self.push_layers.push(wrap_with(layer.clone()));
        self.fetch_layers.push(wrap_with(layer));
        self
    }

    /// Builds the server.
    #[must_use]
    pub fn build(self) -> Server {
        let shed = ConcurrencyLimitLayer::new(self.limits.global_concurrency_limit);
        let rate = RateLimitLayer::new(self.limits.per_agent_quota);
        let source = self.limits.per_ip_failure_quota.map(SourceLimiter::new);
        let verifier = self
            .verifier
            .clone()
            .max_payload(self.limits.max_payload_bytes);
        let stack = |method: Method, name: &'static str| {
            let mut auth = AuthLayer::new(self.keyring.clone(), method)
                .verifier(verifier.clone())
                .require_client_cert(self.require_client_cert);
            if let Some(clock) = &self.clock {
                auth = auth.clock(clock.clone());
            }
            if let Some(source) = &source {
                auth = auth.source_limiter(source.clone());
            }
            ServiceBuilder::new()
                .layer(MetricsLayer::new(self.metrics.clone(), name))
                .layer(shed.clone())
                .layer(RequestSizeLimitLayer::new(self.limits.max_payload_bytes))
                .layer(TimeoutLayer::new(self.limits.request_timeout))
                .layer(auth)
                .layer(rate.clone())
        };
        let mut push: CallService<Ack> =
            BoxCloneSyncService::new(stack(Method::Push, "push").service(self.push));
        for wrap in self.push_layers.iter().rev() {
            push = wrap(push);
        }
        let fetch = self.fetch.map(|inner| {
            let mut svc: CallService<DesiredState> = BoxCloneSyncService::new(
                stack(Method::FetchDesiredState, "fetch_desired_state").service(inner),
            );
            for wrap in self.fetch_layers.iter().rev() {
                svc = wrap(svc);
            }
            svc
        });
        Server {
            handler: Handler { push, fetch },
            limits: self.limits,
            tls: self.tls,
            metrics: self.metrics,
        }
    }
}

/// The tonic service: hands each call to its middleware stack and maps errors to statuses.
#[derive(Clone)]
struct Handler {
    push: CallService<Ack>,
    fetch: Option<CallService<DesiredState>>,
}

#[tonic::async_trait]
impl Ingest for Handler {
    async fn push(
        &self,
        request: tonic::Request<SignedBatch>,
    ) -> Result<tonic::Response<Ack>, tonic::Status> {
        self.push
            .clone()
            .oneshot(request)
            .await
            .map(tonic::Response::new)
            .map_err(status::to_status)
    }

    async fn fetch_desired_state(
        &self,
        request: tonic::Request<SignedBatch>,
    ) -> Result<tonic::Response<DesiredState>, tonic::Status> {
        let Some(fetch) = &self.fetch else {
            return Err(tonic::Status::unimplemented(
                "this server does not serve desired state",
            ));
        };
        fetch
            .clone()
            .oneshot(request)
            .await
            .map(tonic::Response::new)
            .map_err(status::to_status)
    }
}
