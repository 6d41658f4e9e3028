//! The JetStream bus: ingest servers publish verified batches, storage workers apply them.
//!
//! ```text
//! agent ──push──▶ ingest server ──publish(Nats-Msg-Id = agent:seq)──▶ JetStream stream
//!        ◀─ack─── (after the PubAck)                                  (file storage,
//!                                                                      sync_interval always)
//!                                     storage worker ◀──pull (durable consumer, explicit ack)──┘
//!                                     Ingest on PostgreSQL: replay decision, staged commit
//!                                     ──ack the message after the commit──▶ JetStream
//! ```
//!
//! API servers (`--role api`) follow the same stream with an ephemeral ordered consumer
//! each (`BusFollower`, with the `postgres` feature): their status cache, live stream and
//! alert engine see every published batch, so any API server shows the same fleet.
//!
//! # The chain (docs/security.md §5)
//!
//! 1. [`BusPublisher::publish`] decodes the verified envelope (what no worker could store is
//!    `REJECTED` at once), publishes its signed payload to `<subject_prefix>.<agent>` with
//!    `Nats-Msg-Id = <agent>:<seq>` and the envelope fingerprint in `Sentra-Fingerprint`,
//!    and **awaits the PubAck** (async-nats' second future) before it answers `ACCEPTED`.
//!    A PubAck with `duplicate: true` (same Msg-Id within the stream's duplicate window) is
//!    answered `DUPLICATE`. No connection, a failed publish or a PubAck timeout is
//!    [`Error::Bus`]: the ingest server answers `UNAVAILABLE`, the agent keeps the batch in
//!    its WAL and retries; the client reconnects by itself (with backoff) and logs each
//!    disconnect/reconnect.
//! 2. The stream uses file storage; the PubAck means "on disk" only with the server's
//!    `sync_interval: always` (or R3 across failure domains) — `scripts/nats-test-server`
//!    runs it so.
//! 3. [`BusWorker`] pulls from one durable pull consumer (explicit ack, `AckWait`,
//!    `MaxDeliver`) and hands each message to an [`Ingest`] over the shared store. The
//!    worker acks the message (double ack: confirmed by the server) only after the store's
//!    commit answered. A store failure naks the message with a delay (redelivered later);
//!    on its last allowed delivery, and for a message no worker can ever decode, it is
//!    published to the dead-letter stream (`<dead_letter_prefix>.<agent>`, with the reason)
//!    and terminated.
//!
//! # Replay after the dedup window, and idempotency
//!
//! JetStream's dedup only covers its `duplicate_window` (2 minutes by default). The durable
//! replay state — the high-water mark `H`, the exact set of stored seqs, the fingerprint
//! window — lives in the store (PostgreSQL), updated in the same transaction as the staged
//! batch, so the **decision is made on the worker side against the store**: a batch
//! replayed after the window passes JetStream, and the worker's `Ingest` answers it
//! `DUPLICATE` (stored seq) or `REJECTED` (`seq ≤ H − W`, never stored) without storing it
//! again; the message is acked either way (counted in [`WorkerCounts`]). A redelivery (a
//! worker died between commit and ack, a late ack) is the same case. Samples are keyed
//! `(series, ts)` (`ON CONFLICT DO NOTHING`), so even a stale re-apply adds nothing.
//!
//! # Per-agent ordering: what is guaranteed
//!
//! * Every batch acknowledged to an agent is stored exactly once (at-least-once delivery +
//!   the store's `(agent, seq)` decision), as long as it reaches the store within
//!   [`Config::replay_window`](crate::Config::replay_window) seqs of that agent's newest
//!   stored seq. A redelivery (after `AckWait`, 30 s by default) is seconds late; at a 10 s
//!   interval a window of `W` seqs tolerates `W × 10 s` of delay.
//! * Apply order is **not** seq order: one consumer delivers in stream order, but
//!   redeliveries come later, and a worker applies many messages concurrently (group
//!   commit; within one group batches are sorted by `(agent, seq)`). Order does not change
//!   what is stored (samples carry their own timestamps; the latest WireGuard status is
//!   kept by creation time).
//! * One writer per store: the PostgreSQL backend holds a writer lock, so of several
//!   workers on one database one applies and the others wait for the lock (a hot standby
//!   that takes over when the active one dies; its unacked messages are redelivered).
//!   Scaling writes further means partitioning: one stream subject range and one database
//!   (or schema) per partition.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{
    HeaderMap,
    connection::State,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        stream::{self, StorageType},
    },
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use sentra_core::{
    AgentId, Batch, Seq, UnixMillis, Verified,
    proto::{Ack, AckStatus, RejectReason},
};

use crate::{BoxError, Error, Ingest, IngestService, Result};

#[cfg(feature = "postgres")]
mod follower;
mod metrics;
#[cfg(feature = "postgres")]
pub use follower::{BusFollower, open_follower_store};
pub use metrics::BusMetrics;

/// The header carrying the envelope's fingerprint (hex of its 32-byte tag).
pub const HEADER_FINGERPRINT: &str = "Sentra-Fingerprint";
/// The header of a dead-lettered message that says why.
pub const HEADER_DEAD_REASON: &str = "Sentra-Dead-Reason";

/// Where the bus is and how its stream and consumer are set up.
///
/// Build with [`BusConfig::new`] and change fields as needed. The URL may carry
/// credentials (`nats://user:password@host:4222`): it is never logged nor shown by `Debug`.
#[derive(Clone)]
#[non_exhaustive]
pub struct BusConfig {
    /// NATS server URL(s), comma separated.
    pub url: String,
    /// A NATS credentials file (`.creds`: user JWT and NKey seed), if the server wants one.
    /// Its content is never logged.
    pub credentials_file: Option<std::path::PathBuf>,
    /// The stream's name (`SENTRA_BATCHES`).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<agent>` (`sentra.batch`).
    pub subject_prefix: String,
    /// Dead letters go to `<dead_letter_prefix>.<agent>`, kept in stream `<stream>_DEAD`
    /// (`sentra.dead`).
    pub dead_letter_prefix: String,
    /// The workers' durable consumer (`sentra-workers`).
    pub consumer: String,
    /// JetStream's dedup window on `Nats-Msg-Id` (2 minutes).
    pub duplicate_window: Duration,
    /// Redelivery after this long without an ack (30 s).
    pub ack_wait: Duration,
    /// Deliveries of one message before it is dead-lettered (10).
    pub max_deliver: i64,
    /// Unacked messages the consumer hands out at once (4096).
    pub max_ack_pending: i64,
    /// Stream replicas (1; 3 on a 3-node cluster).
    pub replicas: usize,
    /// How long a publish waits for its PubAck (5 s), and the connect timeout.
    pub timeout: Duration,
    /// Messages one worker handles concurrently (feeds the store's group commit; 256).
    pub worker_concurrency: usize,
    /// Delay before a message whose store commit failed is redelivered (1 s).
    pub nak_delay: Duration,
}

impl BusConfig {
    /// Defaults for the bus at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credentials_file: None,
            stream: "SENTRA_BATCHES".to_owned(),
            subject_prefix: "sentra.batch".to_owned(),
            dead_letter_prefix: "sentra.dead".to_owned(),
            consumer: "sentra-workers".to_owned(),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            max_ack_pending: 4096,
            replicas: 1,
            timeout: Duration::from_secs(5),
            worker_concurrency: 256,
            nak_delay: Duration::from_secs(1),
        }
    }

    fn subject(&self, agent: &AgentId) -> String {
        format!("{}.{}", self.subject_prefix, agent.as_str())
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &"..")
            .field("credentials_file", &self.credentials_file)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("dead_letter_prefix", &self.dead_letter_prefix)
            .field("consumer", &self.consumer)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

fn bus<E: Into<BoxError>>(context: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Bus {
        context,
        source: e.into(),
    }
}

/// Connects (the client then reconnects by itself with backoff, forever) and makes sure
/// the batch and dead-letter streams exist.
async fn connect(
    cfg: &BusConfig,
    role: &'static str,
    metrics: &BusMetrics,
) -> Result<(async_nats::Client, jetstream::Context)> {
    let events = metrics.clone();
    let options = match &cfg.credentials_file {
        None => async_nats::ConnectOptions::new(),
        // The error says which file, never what is in it.
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| Error::Bus {
                context: "reading the NATS credentials file",
                source: format!("{}: {e}", path.display()).into(),
            })?,
    };
    let client = options
        .name(format!("sentra-{role}"))
        .connection_timeout(cfg.timeout)
        .event_callback(move |event| {
            let metrics = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics.connection(true);
                        tracing::info!(role, "NATS connection (re)established")
                    }
                    async_nats::Event::Disconnected => {
                        metrics.connection(false);
                        tracing::warn!(role, "NATS connection lost; reconnecting with backoff");
                    }
                    other => tracing::warn!(role, event = %other, "NATS connection event"),
                }
            }
        })
        // Several servers: the client picks one and fails over to the others.
        .connect(cfg.url.split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .map_err(bus("connecting to NATS"))?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(cfg.timeout);
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        storage: StorageType::File,
        duplicate_window: cfg.duplicate_window,
        num_replicas: cfg.replicas,
        ..Default::default()
    })
    .await
    .map_err(bus("creating the JetStream batch stream"))?;
    js.get_or_create_stream(stream::Config {
        name: format!("{}_DEAD", cfg.stream),
        subjects: vec![format!("{}.>", cfg.dead_letter_prefix)],
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        ..Default::default()
    })
    .await
    .map_err(bus("creating the JetStream dead-letter stream"))?;
    Ok((client, js))
}

fn ack(agent: &AgentId, seq: Seq, status: AckStatus, reason: RejectReason, detail: String) -> Ack {
    Ack {
        agent_id: agent.as_str().to_owned(),
        seq: seq.get(),
        status: status as i32,
        reason: reason as i32,
        detail,
        server_time_ms: UnixMillis::now().as_millis(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The ingest server's side: publishes verified batches, answers after the PubAck.
/// Cloning is cheap (one connection).
#[derive(Clone)]
pub struct BusPublisher {
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: Arc<BusConfig>,
    metrics: BusMetrics,
}

impl fmt::Debug for BusPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusPublisher")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl BusPublisher {
    /// Connects to NATS and creates the streams if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Bus`] when NATS is unreachable or JetStream refuses the stream config.
    pub async fn connect(cfg: BusConfig) -> Result<Self> {
        Self::connect_with(cfg, BusMetrics::new()).await
    }

    /// As [`connect`](Self::connect), counting in `metrics` (registered by the caller,
    /// e.g. before the first connection attempt so `/metrics` answers meanwhile).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(cfg: BusConfig, metrics: BusMetrics) -> Result<Self> {
        let (client, js) = connect(&cfg, "ingest", &metrics).await?;
        Ok(Self {
            client,
            js,
            cfg: Arc::new(cfg),
            metrics,
        })
    }

    /// Whether the client is connected right now (for `/readyz`).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The bus series this publisher counts in.
    #[must_use]
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// Puts one verified batch on the bus and answers the agent (see the
    /// [module docs](self)): `ACCEPTED` only after JetStream's PubAck, `DUPLICATE` when
    /// JetStream recognised the Msg-Id, `REJECTED` for a payload no worker could store.
    ///
    /// # Errors
    ///
    /// [`Error::Bus`] when not connected, the publish failed or no PubAck came within
    /// [`BusConfig::timeout`]: nothing may be assumed stored (answer `UNAVAILABLE`).
    pub async fn publish(&self, verified: &Verified) -> Result<Ack> {
        let agent = verified.agent_id();
        let seq = verified.seq();
        if let Err(e) = verified.decode_batch() {
            self.metrics.publish("rejected");
            return Ok(ack(
                agent,
                seq,
                AckStatus::Rejected,
                e.reject_reason(),
                e.to_string(),
            ));
        }
        if !self.is_connected() {
            self.metrics.publish("failed");
            return Err(Error::Bus {
                context: "publishing a batch",
                source: "not connected to NATS (reconnecting)".into(),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:{}", agent.as_str(), seq.get()).as_str(),
        );
        headers.insert(HEADER_FINGERPRINT, hex(verified.fingerprint()).as_str());
        let started = std::time::Instant::now();
        let published = async {
            let pending = self
                .js
                .publish_with_headers(self.cfg.subject(agent), headers, verified.payload().clone())
                .await
                .map_err(bus("publishing a batch"))?;
            // The second future: the PubAck. Without awaiting it the publish is
            // fire-and-forget.
            pending.await.map_err(bus("waiting for JetStream's PubAck"))
        };
        let pub_ack = match published.await {
            Ok(a) => a,
            Err(e) => {
                self.metrics.publish("failed");
                return Err(e);
            }
        };
        self.metrics.puback(started.elapsed().as_secs_f64());
        self.metrics.publish(if pub_ack.duplicate {
            "duplicate"
        } else {
            "accepted"
        });
        if pub_ack.duplicate {
            Ok(ack(
                agent,
                seq,
                AckStatus::Duplicate,
                RejectReason::Unspecified,
                "already on the bus".to_owned(),
            ))
        } else {
            Ok(ack(
                agent,
                seq,
                AckStatus::Accepted,
                RejectReason::Unspecified,
                String::new(),
            ))
        }
    }
}

/// The ingest server's push path over the bus: a [`tower_service::Service`] of
/// [`Verified`] envelopes answering [`Ack`], as [`IngestService`] is for the embedded
/// store, so the gRPC server takes either. An [`Error::Bus`] (no connection, no PubAck in
/// time) is the call's error: the transport answers `UNAVAILABLE` and the agent keeps the
/// batch in its WAL.
impl tower_service::Service<Verified> for BusPublisher {
    type Response = Ack;
    type Error = BoxError;
    type Future = PublishFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        // Back-pressure is the PubAck wait inside the call.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, verified: Verified) -> Self::Future {
        let this = self.clone();
        PublishFuture {
            inner: Box::pin(async move { this.publish(&verified).await.map_err(BoxError::from) }),
        }
    }
}

/// The future of [`BusPublisher`]'s `Service::call`.
pub struct PublishFuture {
    inner: std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<Ack, BoxError>> + Send>,
    >,
}

impl fmt::Debug for PublishFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishFuture").finish_non_exhaustive()
    }
}

impl std::future::Future for PublishFuture {
    type Output = std::result::Result<Ack, BoxError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// What a worker did, counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerCounts {
    /// Messages the store accepted (stored now).
    pub accepted: u64,
    /// Messages the store already had (redeliveries, replays after the dedup window).
    pub duplicates: u64,
    /// Messages the store refused (e.g. below the high-water mark, never stored).
    pub rejected: u64,
    /// Messages delivered more than once (JetStream's raw redeliveries).
    pub redelivered: u64,
    /// Store failures (the message was nak'ed for redelivery).
    pub failed: u64,
    /// Messages moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Acks JetStream did not confirm (the message will come again).
    pub ack_failures: u64,
}

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    redelivered: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    ack_failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A storage worker: pulls batches from the durable consumer and applies them to an
/// [`Ingest`]; see the [module docs](self). Cloning is cheap; clones share the counters.
#[derive(Clone)]
pub struct BusWorker {
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    service: IngestService,
    cfg: Arc<BusConfig>,
    counts: Arc<Counts>,
    metrics: BusMetrics,
}

impl fmt::Debug for BusWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusWorker")
            .field("config", &self.cfg)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

enum Handled {
    Ack,
    Nak,
    Dead(String),
}

impl BusWorker {
    /// Connects, creates the streams and the durable consumer if missing, and feeds
    /// `ingest` (normally on PostgreSQL, shared by every worker).
    ///
    /// # Errors
    ///
    /// [`Error::Bus`] when NATS is unreachable or refuses the stream/consumer config.
    pub async fn connect(cfg: BusConfig, ingest: &Ingest) -> Result<Self> {
        Self::connect_with(cfg, ingest, BusMetrics::new()).await
    }

    /// As [`connect`](Self::connect), counting in `metrics` (registered by the caller).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(
        cfg: BusConfig,
        ingest: &Ingest,
        metrics: BusMetrics,
    ) -> Result<Self> {
        let (client, js) = connect(&cfg, "worker", &metrics).await?;
        let stream = js
            .get_stream(&cfg.stream)
            .await
            .map_err(bus("opening the JetStream batch stream"))?;
        let consumer = stream
            .get_or_create_consumer(
                &cfg.consumer,
                pull::Config {
                    durable_name: Some(cfg.consumer.clone()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: cfg.ack_wait,
                    max_deliver: cfg.max_deliver,
                    max_ack_pending: cfg.max_ack_pending,
                    ..Default::default()
                },
            )
            .await
            .map_err(bus("creating the workers' durable consumer"))?;
        Ok(Self {
            client,
            js,
            consumer,
            service: ingest.service(),
            cfg: Arc::new(cfg),
            counts: Arc::default(),
            metrics,
        })
    }

    /// Whether the client is connected right now (for `/readyz`).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The bus series this worker counts in.
    #[must_use]
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// Asks JetStream how many messages wait for the workers' consumer (not delivered yet,
    /// and delivered but unacknowledged) and updates `sentra_bus_consumer_pending` and
    /// `sentra_bus_consumer_ack_pending`.
    ///
    /// # Errors
    ///
    /// [`Error::Bus`] when JetStream does not answer (not connected, timeout).
    pub async fn refresh_pending(&self) -> Result<(u64, usize)> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(bus("reading the workers' consumer info"))?;
        self.metrics.pending(info.num_pending, info.num_ack_pending);
        Ok((info.num_pending, info.num_ack_pending))
    }

    /// The counters so far.
    #[must_use]
    pub fn counts(&self) -> WorkerCounts {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerCounts {
            accepted: get(&c.accepted),
            duplicates: get(&c.duplicates),
            rejected: get(&c.rejected),
            redelivered: get(&c.redelivered),
            failed: get(&c.failed),
            dead_lettered: get(&c.dead_lettered),
            ack_failures: get(&c.ack_failures),
        }
    }

    /// Pulls and applies until `shutdown` completes (then returns `Ok`). A lost NATS
    /// connection is waited out (the client reconnects; the pull is re-issued with
    /// backoff, logged). Messages in flight at shutdown that were not acked are redelivered
    /// to some worker after `AckWait`.
    ///
    /// # Errors
    ///
    /// None today: bus trouble is retried, store trouble naks the message.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let messages = tokio::select! {
                () = &mut shutdown => return Ok(()),
                m = self.consumer.messages() => m,
            };
            let messages = match messages {
                Ok(m) => {
                    backoff = Duration::from_millis(100);
                    m
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "pulling from JetStream failed");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // Stop at the first stream error (e.g. connection lost) and re-issue the pull.
            let drained = messages
                .take_while(|m| {
                    let ok = match m {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "JetStream pull interrupted; re-issuing");
                            false
                        }
                    };
                    std::future::ready(ok)
                })
                .filter_map(|m| std::future::ready(m.ok()))
                .for_each_concurrent(self.cfg.worker_concurrency.max(1), |msg| self.handle(msg));
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = drained => {}
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn handle(&self, msg: jetstream::Message) {
        let delivered = msg.info().map_or(1, |i| i.delivered);
        if delivered > 1 {
            bump(&self.counts.redelivered);
            self.metrics.redelivered();
        }
        let handled = self.apply(&msg, delivered).await;
        match handled {
            Handled::Ack => {
                if let Err(e) = msg.double_ack().await {
                    bump(&self.counts.ack_failures);
                    tracing::warn!(error = %e, "ack not confirmed; the message will be redelivered (stored once)");
                }
            }
            Handled::Nak => {
                if let Err(e) = msg.ack_with(AckKind::Nak(Some(self.cfg.nak_delay))).await {
                    tracing::warn!(error = %e, "nak failed; redelivery after AckWait");
                }
            }
            Handled::Dead(reason) => self.dead_letter(&msg, &reason).await,
        }
    }

    async fn apply(&self, msg: &jetstream::Message, delivered: i64) -> Handled {
        let Some(fingerprint) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_FINGERPRINT))
            .and_then(|v| unhex32(v.as_str()))
        else {
            return Handled::Dead("no valid Sentra-Fingerprint header".to_owned());
        };
        let payload: Bytes = msg.payload.clone();
        let batch = match Batch::decode(&payload) {
            Ok(b) => b,
            Err(e) => return Handled::Dead(format!("payload does not decode: {e}")),
        };
        let expected_subject = self.cfg.subject(&batch.agent_id);
        if msg.subject.as_str() != expected_subject {
            return Handled::Dead(format!(
                "payload of agent {} on subject {}",
                batch.agent_id, msg.subject
            ));
        }
        let agent = batch.agent_id.clone();
        let seq = batch.seq;
        match self
            .service
            .push_parts(&agent, seq, fingerprint, payload, Ok(batch))
            .await
        {
            Ok(a) => {
                match AckStatus::try_from(a.status) {
                    Ok(AckStatus::Accepted) => {
                        bump(&self.counts.accepted);
                        self.metrics.message("accepted");
                    }
                    Ok(AckStatus::Duplicate) => {
                        bump(&self.counts.duplicates);
                        self.metrics.message("duplicate");
                    }
                    _ => {
                        bump(&self.counts.rejected);
                        self.metrics.message("rejected");
                        tracing::info!(%agent, %seq, detail = %a.detail, "bus batch refused by the store");
                    }
                }
                Handled::Ack
            }
            Err(e) => {
                bump(&self.counts.failed);
                self.metrics.message("failed");
                if delivered >= self.cfg.max_deliver {
                    Handled::Dead(format!("store failed on the last delivery: {e}"))
                } else {
                    tracing::warn!(%agent, %seq, delivered, error = %e, "store commit failed; nak for redelivery");
                    Handled::Nak
                }
            }
        }
    }

    async fn dead_letter(&self, msg: &jetstream::Message, reason: &str) {
        let agent = msg
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .filter(|a| AgentId::new(*a).is_ok())
            .unwrap_or("unknown")
            .to_owned();
        let mut headers = msg.headers.clone().unwrap_or_default();
        headers.insert(HEADER_DEAD_REASON, reason);
        tracing::error!(%agent, reason, "batch moved to the dead-letter stream");
        let published = async {
            self.js
                .publish_with_headers(
                    format!("{}.{agent}", self.cfg.dead_letter_prefix),
                    headers,
                    msg.payload.clone(),
                )
                .await?
                .await
                .map(|_| ())
                .map_err(BoxError::from)
        };
        match published.await {
            Ok(()) => {
                bump(&self.counts.dead_lettered);
                self.metrics.dead_lettered();
                if let Err(e) = msg.double_ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "terminating a dead-lettered message failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering failed; nak for redelivery");
                let _ = msg.ack_with(AckKind::Nak(Some(self.cfg.nak_delay))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_hex_round_trips_and_refuses_junk() {
        let fp: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(unhex32(&hex(&fp)), Some(fp));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }

    #[test]
    fn config_debug_hides_the_url() {
        let cfg = BusConfig::new("nats://user:s3cret@127.0.0.1:4222");
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }
}
