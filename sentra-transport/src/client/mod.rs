//! The agent's side: [`Client`] pushes signed batches and fetches desired state over one
//! HTTP/2 connection (reconnecting as needed), through a tower stack.
//!
//! Stack, outer to inner: deadline for the whole call including retries
//! ([`ClientConfig::deadline`]) → retry ([`RetryConfig`]: retryable statuses only, shared
//! budget, full-jitter exponential backoff honouring `sentra-retry-after-ms`) → concurrency
//! limit shared by both methods (waits, does not fail) → your [`ClientBuilder::layer`]s
//! (each attempt passes through them) → per-attempt timeout, also sent to the server as
//! `grpc-timeout` → tonic `Channel` (lazy connect, reconnects after failures; a failed
//! connect is `UNAVAILABLE`, which the retry layer retries).
//!
//! Retrying a push is safe: the server de-duplicates by `(agent_id, seq)` and answers a
//! resend of a stored batch with `Ack` status `DUPLICATE`.

mod call;
mod retry;

use std::{fmt, sync::Arc, time::Duration};

pub use retry::RetryConfig;
use sentra_core::proto::{Ack, DesiredState, SignedBatch};
use tokio::sync::Semaphore;
#[cfg(feature = "server")]
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::{ServiceExt as _, util::BoxCloneSyncService};
use tower_layer::Layer;
use tower_service::Service;

use self::{call::GrpcCall, retry::RetryPolicy};
use crate::{
    BoxError, CallService, Error, Wrap, pb::ingest_client::IngestClient, timeout::TimeoutLayer,
    tls, wrap_with,
};
#[cfg(feature = "server")]
use crate::{in_process::InProcess, server::Conn};

/// Client settings; every field has a documented default.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Whole call, retries included. Default 30 s.
    pub deadline: Duration,
    /// One attempt (sent as `grpc-timeout`). Default 10 s.
    pub attempt_timeout: Duration,
    /// Calls in flight at once (both methods together); further calls wait. Default 32,
    /// the server's default per-connection limit, so a client never sheds itself.
    pub concurrency_limit: usize,
    /// Retry policy.
    pub retry: RetryConfig,
    /// TCP + TLS connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval while calls are open. Default 30 s (never below the server's
    /// tolerance for pings).
    pub http2_keepalive_interval: Duration,
    /// Ping answer timeout. Default 20 s.
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive. Default 60 s.
    pub tcp_keepalive: Duration,
    /// Largest request message encoded. Default 4 MiB + 4 KiB.
    pub max_encoding_message_size: usize,
    /// Largest response message decoded. Default 4 MiB.
    pub max_decoding_message_size: usize,
    /// HTTP/2 stream window. Default 256 KiB.
    pub initial_stream_window_size: u32,
    /// HTTP/2 connection window. Default 1 MiB.
    pub initial_connection_window_size: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            concurrency_limit: 32,
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(5),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
            max_encoding_message_size: 4 * 1024 * 1024 + 4096,
            max_decoding_message_size: 4 * 1024 * 1024,
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 1024 * 1024,
        }
    }
}

enum Target {
    Uri(String),
    #[cfg(feature = "server")]
    InProcess(mpsc::Sender<Conn>),
}

/// Configures a [`Client`]. Get one from [`Client::builder`] or
/// [`InProcess::client`](crate::InProcess::client).
pub struct ClientBuilder {
    target: Target,
    config: ClientConfig,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
    push_layers: Vec<Wrap<Ack>>,
    fetch_layers: Vec<Wrap<DesiredState>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_cert", &self.identity_pem.is_some())
            .field("domain", &self.domain)
            .field("layers", &self.push_layers.len())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            config: ClientConfig::default(),
            ca_pem: None,
            identity_pem: None,
            domain: None,
            push_layers: Vec::new(),
            fetch_layers: Vec::new(),
        }
    }

    #[cfg(feature = "server")]
    pub(crate) fn in_process(tx: mpsc::Sender<Conn>) -> Self {
        Self::new(Target::InProcess(tx))
    }

    /// Replaces the whole configuration.
    #[must_use]
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Deadline of a whole call, retries included.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// Timeout of one attempt.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout;
        self
    }

    /// Retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.config.retry = retry;
        self
    }

    /// Calls in flight at once.
    #[must_use]
    pub fn concurrency_limit(mut self, n: usize) -> Self {
        self.config.concurrency_limit = n.max(1);
        self
    }

    /// Trust only this CA (PEM) for the server certificate, instead of none: `https://`
    /// endpoints need a CA (this crate bundles no public roots; ingest servers use a private
    /// CA).
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// [`ClientBuilder::ca_pem`] from a file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(self.ca_pem(pem))
    }

    /// Presents this client certificate chain and key (PEM) for mutual TLS.
    #[must_use]
    pub fn identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity_pem = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// [`ClientBuilder::identity_pem`] from files.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn identity_files(
        self,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<Self, Error> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| Error::Io {
                path: p.to_owned(),
                source,
            })
        };
        let cert = read(cert.as_ref())?;
        let key = read(key.as_ref())?;
        Ok(self.identity_pem(cert, key))
    }

    /// Expect this name in the server certificate instead of the endpoint's host.
    #[must_use]
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Adds your own layer to both methods' stacks, over `tonic::Request<SignedBatch>`; it
    /// sees every attempt (inside retry and the concurrency limit, outside the per-attempt
    /// timeout). Layers added first run outermost.
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

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let c = &self.config;
        let (uri, https) = match &self.target {
            #[cfg(feature = "server")]
            Target::InProcess(_) => ("http://in-process.sentra.invalid".to_owned(), false),
            Target::Uri(u) => {
                let https = if u.starts_with("https://") {
                    true
                } else if u.starts_with("http://") {
                    false
                } else {
                    return Err(Error::InvalidEndpoint {
                        endpoint: u.clone(),
                        reason: "scheme must be http:// or https://".into(),
                    });
                };
                (u.clone(), https)
            }
        };
        let mut ep = Endpoint::from_shared(uri.clone())
            .map_err(|e| Error::InvalidEndpoint {
                endpoint: uri.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(c.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(c.tcp_keepalive))
            .http2_keep_alive_interval(c.http2_keepalive_interval)
            .keep_alive_timeout(c.http2_keepalive_timeout)
            .keep_alive_while_idle(false)
            .initial_stream_window_size(c.initial_stream_window_size)
            .initial_connection_window_size(c.initial_connection_window_size)
            .http2_adaptive_window(false);
        if https {
            let mut tls_cfg = ClientTlsConfig::new();
            match &self.ca_pem {
                Some(pem) => {
                    tls::certs_from_pem(pem)?;
                    tls_cfg = tls_cfg.ca_certificate(Certificate::from_pem(pem));
                }
                None => {
                    return Err(Error::InvalidEndpoint {
                        endpoint: uri,
                        reason: "https:// needs a CA certificate (ca_pem / ca_file)".into(),
                    });
                }
            }
            if let Some((cert, key)) = &self.identity_pem {
                tls::certs_from_pem(cert)?;
                tls::private_key_from_pem(key)?;
                tls_cfg = tls_cfg.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &self.domain {
                tls_cfg = tls_cfg.domain_name(d.clone());
            }
            ep = ep.tls_config(tls_cfg).map_err(Error::transport)?;
        } else if self.identity_pem.is_some() || self.ca_pem.is_some() {
            return Err(Error::InvalidEndpoint {
                endpoint: uri,
                reason: "TLS material given for a plaintext http:// endpoint".into(),
            });
        }
        Ok(ep)
    }

    /// Builds the client. Does no I/O: the connection is made on the first call and remade
    /// after failures.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEndpoint`], [`Error::Pem`] or [`Error::Transport`] for bad
    /// configuration.
    pub fn build(self) -> Result<Client, Error> {
        let endpoint = self.endpoint()?;
        let channel = match &self.target {
            Target::Uri(_) => endpoint.connect_lazy(),
            #[cfg(feature = "server")]
            Target::InProcess(tx) => InProcess::channel(tx.clone(), endpoint),
        };
        Ok(self.build_with_channel(channel))
    }

    fn build_with_channel(self, channel: Channel) -> Client {
        let c = &self.config;
        let grpc = IngestClient::new(channel)
            .max_encoding_message_size(c.max_encoding_message_size)
            .max_decoding_message_size(c.max_decoding_message_size);
        let budget = RetryPolicy::budget(&c.retry);
        let limit = Arc::new(Semaphore::new(c.concurrency_limit));
        Client {
            inner: Arc::new(Stacks {
                push: Stack::new(
                    GrpcCall::<Ack>::new(grpc.clone(), c.attempt_timeout),
                    c,
                    &budget,
                    &limit,
                    &self.push_layers,
                ),
                fetch: Stack::new(
                    GrpcCall::<DesiredState>::new(grpc, c.attempt_timeout),
                    c,
                    &budget,
                    &limit,
                    &self.fetch_layers,
                ),
            }),
        }
    }
}

/// One method's call path: the deadline over the whole call, the retry loop, the shared
/// concurrency limit per attempt, then the attempt service (your layers, the per-attempt
/// timeout, the gRPC call).
///
/// A plain loop rather than tower's `Retry` and `GlobalConcurrencyLimit` layers: those clone
/// the whole inner stack (the gRPC channel included) and box a semaphore future on every
/// call, which under many concurrent calls cost more CPU than the rest of the middleware
/// (see the crate's benchmark notes). Behaviour is the same: the permit is held per attempt
/// (released during backoff), retries follow [`RetryPolicy`], the deadline bounds it all.
struct Stack<R> {
    attempt: CallService<R>,
    limit: Arc<Semaphore>,
    retry: RetryConfig,
    budget: Arc<tower::retry::budget::TpsBudget>,
    deadline: Duration,
}

impl<R: Send + 'static> Stack<R> {
    fn new<S>(
        base: S,
        c: &ClientConfig,
        budget: &Arc<tower::retry::budget::TpsBudget>,
        limit: &Arc<Semaphore>,
        layers: &[Wrap<R>],
    ) -> Self
    where
        S: Service<tonic::Request<SignedBatch>, Response = R, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let mut attempt: CallService<R> =
            BoxCloneSyncService::new(TimeoutLayer::new(c.attempt_timeout).layer(base));
        for wrap in layers.iter().rev() {
            attempt = wrap(attempt);
        }
        Self {
            attempt,
            limit: limit.clone(),
            retry: c.retry,
            budget: budget.clone(),
            deadline: c.deadline,
        }
    }

    async fn call(&self, envelope: SignedBatch) -> Result<R, BoxError> {
        match tokio::time::timeout(self.deadline, self.attempts(envelope)).await {
            Ok(result) => result,
            Err(_) => Err(Box::new(crate::timeout::Elapsed::new())),
        }
    }

    async fn attempts(&self, envelope: SignedBatch) -> Result<R, BoxError> {
        let mut policy = RetryPolicy::new(self.retry, &self.budget);
        let mut envelope = Some(envelope);
        loop {
            // The last allowed attempt takes the envelope; earlier ones send a copy (the
            // payload is `Bytes`: the copy shares it).
            let last = policy.is_last_attempt();
            let request = match (last, envelope.as_ref()) {
                (false, Some(e)) => e.clone(),
                _ => envelope.take().unwrap_or_default(),
            };
            let result = {
                // The semaphore is never closed.
                let _permit = self.limit.acquire().await;
                self.attempt
                    .clone()
                    .oneshot(tonic::Request::new(request))
                    .await
            };
            match policy.retry_delay(&result) {
                Some(delay) if envelope.is_some() => tokio::time::sleep(delay).await,
                _ => return result,
            }
        }
    }
}

/// A connection to an ingest server. Cheap to clone; clones share the connection, the
/// concurrency limit and the retry budget.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn run(envelope: sentra_core::proto::SignedBatch) -> Result<(), sentra_transport::Error> {
/// use sentra_transport::Client;
///
/// let client = Client::builder("https://ingest.example.net:7443")
///     .ca_file("/etc/sentra/ca.pem")?
///     .identity_files("/etc/sentra/agent.pem", "/etc/sentra/agent.key")?
///     .build()?;
/// match client.push(envelope).await {
///     Ok(ack) => println!("ack {:?} for seq {}", ack.status(), ack.seq),
///     Err(e) if e.is_retryable() => println!("try again later: {e}"),
///     Err(e) => println!("rejected ({:?}): {e}", e.reject_reason()),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Stacks>,
}

/// Both methods' call paths, shared by a client's clones (one atomic increment per clone).
struct Stacks {
    push: Stack<Ack>,
    fetch: Stack<DesiredState>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A builder for `endpoint`: `http://host:port` (plaintext h2c) or `https://host:port`
    /// (TLS; then give [`ClientBuilder::ca_pem`]).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(Target::Uri(endpoint.into()))
    }

    /// Ships one signed batch (signed for [`Method::Push`](sentra_core::Method::Push)).
    ///
    /// `Ok` carries the server's `Ack`: `ACCEPTED` or `DUPLICATE` mean stored (trim your WAL),
    /// `REJECTED` carries a reason and means the batch will never be accepted as is.
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] after the retries allowed; check [`Error::is_retryable`] (keep the
    /// batch and try later) and [`Error::reject_reason`] / [`Error::server_time`].
    pub async fn push(&self, envelope: SignedBatch) -> Result<Ack, Error> {
        self.inner
            .push
            .call(envelope)
            .await
            .map_err(Error::from_call)
    }

    /// Fetches the desired state; `envelope` is signed for
    /// [`Method::FetchDesiredState`](sentra_core::Method::FetchDesiredState) with a
    /// `DesiredStateQuery` payload.
    ///
    /// # Errors
    ///
    /// As [`Client::push`]; `UNIMPLEMENTED` if the server serves no desired state.
    pub async fn fetch_desired_state(&self, envelope: SignedBatch) -> Result<DesiredState, Error> {
        self.inner
            .fetch
            .call(envelope)
            .await
            .map_err(Error::from_call)
    }
}
