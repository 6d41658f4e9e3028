//! The API server's side (`--role api`): see [`BusFollower`].

use std::{collections::HashMap, fmt, sync::Mutex, time::Duration};

use async_nats::{
    connection::State,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull},
    },
};
use futures_util::StreamExt as _;
use sentra_core::{AgentId, Batch, Seq, UnixMillis};

use super::{BusConfig, BusMetrics, bus, connect};
use crate::{
    Config, Ingest, Result,
    backend::{
        Reader, StoredState as _,
        postgres::{PgReader, PgStore, connect_error, connect_options},
    },
};

/// How long the warm-up from the store may take before the follower starts empty.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a read-only [`Ingest`] over the PostgreSQL metric store at `url` (no writer, no
/// writer lock, no migration: the storage workers own the schema) and warms its status
/// cache up from the store (see [`BusFollower`]). Pushes and maintenance answer
/// [`Error::Closed`](crate::Error::Closed) on it; `reset_sequence`, `delete_agent` and `flush` answer
/// [`Error::ReadOnly`](crate::Error::ReadOnly) ([`Ingest::is_read_only`]).
///
/// # Errors
///
/// [`Error::Storage`](crate::Error::Storage) when PostgreSQL is unreachable (the error names host, port,
/// database and user, never the URL).
pub async fn open_follower_store(url: &str, config: Config) -> Result<Ingest> {
    let opts = connect_options(url)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.read_connections.max(1))
        .connect_with(opts.clone())
        .await
        .map_err(|e| connect_error("opening PostgreSQL read connections", &opts, &e))?;
    let retention_ms = i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX);
    let ingest = Ingest::without_writer(Reader::Postgres(PgReader::new(pool)), config);
    let warm = async {
        // A plain connection (no writer lock): only the read-only loaders run on it.
        let conn = sqlx::ConnectOptions::connect(&opts).await?;
        let mut store = PgStore::new(conn, opts.clone(), retention_ms);
        let agents = store.load_agents().await?;
        let wg: HashMap<String, Vec<u8>> = store.load_wg_status().await?.into_iter().collect();
        let mut n = 0usize;
        for (agent, mark) in agents {
            let Ok(id) = AgentId::new(agent.as_str()) else {
                continue;
            };
            let status = wg.get(&agent).and_then(|b| Batch::decode(b).ok());
            ingest.restore_status(&id, mark.last_seen, mark.high_water, status.as_ref());
            n += 1;
        }
        Ok::<_, crate::BoxError>(n)
    };
    match tokio::time::timeout(WARM_UP_TIMEOUT, warm).await {
        Ok(Ok(n)) => tracing::info!(agents = n, "status cache warmed up from the metric store"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "status warm-up from the metric store failed; the cache fills from the bus")
        }
        Err(_) => tracing::warn!(
            "status warm-up from the metric store took over 10 s; the cache fills from the bus"
        ),
    }
    Ok(ingest)
}

/// Feeds a read-only [`Ingest`] (see [`open_follower_store`]) from the bus: every batch an
/// ingest server publishes updates the status cache of an API server (`--role api`) and
/// reaches its subscribers (live stream, alert engine).
///
/// * **Consumer**: one *ephemeral ordered* consumer per API server (no acks, flow control,
///   recreated by the client after a gap or a reconnect), `DeliverPolicy::New` at start.
///   Not a durable one: a live view needs no delivery guarantee (the storage workers'
///   durable consumer has that), and a durable consumer per API server would outlive
///   replaced servers and keep messages pending for them. JetStream removes an ephemeral
///   consumer by itself once its server is gone.
/// * **Warm-up**: at open, every agent's high-water mark, last push and latest stored
///   WireGuard status are read from the store (one row per agent, bounded by a 10 s
///   timeout; a failure is logged and the cache starts empty), so a freshly started API
///   server shows the fleet before the next batch arrives.
/// * **Order and duplicates**: a redelivered or overtaken batch (its seq at or below the
///   newest seq this follower saw for the agent) is skipped; the status cache keeps the
///   newest high-water mark and the newest WireGuard status anyway.
/// * **NATS down**: [`BusFollower::is_connected`] is false (the API server's `/readyz` says
///   so); queries still read the store. After a reconnect the consumer resumes after the
///   last stream sequence it saw.
pub struct BusFollower {
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: BusConfig,
    metrics: BusMetrics,
    newest: Mutex<HashMap<AgentId, u64>>,
}

impl fmt::Debug for BusFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusFollower")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl BusFollower {
    /// Connects to NATS (creating the streams if missing), counting in `metrics`.
    ///
    /// # Errors
    ///
    /// [`Error::Bus`](crate::Error::Bus) when NATS is unreachable or refuses the stream config.
    pub async fn connect_with(cfg: BusConfig, metrics: BusMetrics) -> Result<Self> {
        let (client, js) = connect(&cfg, "api", &metrics).await?;
        Ok(Self {
            client,
            js,
            cfg,
            metrics,
            newest: Mutex::default(),
        })
    }

    /// Whether the client is connected right now (for `/readyz`).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The bus series this follower counts in.
    #[must_use]
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    async fn consumer(
        &self,
        after: u64,
    ) -> Result<jetstream::consumer::Consumer<pull::OrderedConfig>> {
        let stream = self
            .js
            .get_stream(&self.cfg.stream)
            .await
            .map_err(bus("opening the JetStream batch stream"))?;
        stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{}.>", self.cfg.subject_prefix),
                deliver_policy: if after == 0 {
                    DeliverPolicy::New
                } else {
                    DeliverPolicy::ByStartSequence {
                        start_sequence: after + 1,
                    }
                },
                ..Default::default()
            })
            .await
            .map_err(bus("creating the follower's ordered consumer"))
    }

    /// Follows the bus into `ingest` until `shutdown` completes (then returns `Ok`). A lost
    /// connection is waited out; the consumer is recreated after the last stream sequence
    /// seen (with backoff, logged).
    ///
    /// # Errors
    ///
    /// None today: bus trouble is retried.
    pub async fn run(
        &self,
        ingest: &Ingest,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut last = 0u64;
        loop {
            let messages = async {
                let consumer = self.consumer(last).await?;
                consumer
                    .messages()
                    .await
                    .map_err(bus("following the JetStream batch stream"))
            };
            let messages = tokio::select! {
                () = &mut shutdown => return Ok(()),
                m = messages => m,
            };
            match messages {
                Ok(mut messages) => loop {
                    let next = tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        n = messages.next() => n,
                    };
                    match next {
                        Some(Ok(msg)) => {
                            backoff = Duration::from_millis(100);
                            if let Ok(info) = msg.info() {
                                last = last.max(info.stream_sequence);
                            }
                            self.handle(ingest, &msg);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, "following JetStream interrupted; recreating the consumer");
                            break;
                        }
                        None => break,
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "following JetStream failed");
                }
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn handle(&self, ingest: &Ingest, msg: &jetstream::Message) {
        let Ok(batch) = Batch::decode(&msg.payload) else {
            tracing::debug!(subject = %msg.subject, "bus message does not decode; skipped");
            return;
        };
        if msg.subject.as_str() != self.cfg.subject(&batch.agent_id) {
            tracing::debug!(subject = %msg.subject, "bus message on another agent's subject; skipped");
            return;
        }
        let agent = batch.agent_id.clone();
        let seq: Seq = batch.seq;
        // A redelivery or a batch overtaken by a newer one: the cache has newer.
        if newer(&self.newest, &agent, seq) {
            ingest.observe(&agent, seq, UnixMillis::now(), batch);
        }
    }
}

/// Whether `seq` is newer than every seq seen for `agent` (and records it if so).
fn newer(newest: &Mutex<HashMap<AgentId, u64>>, agent: &AgentId, seq: Seq) -> bool {
    let mut newest = newest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = newest.entry(agent.clone()).or_default();
    if seq.get() <= *n {
        return false;
    }
    *n = seq.get();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redeliveries_and_overtaken_batches_are_skipped_per_agent() {
        let newest = Mutex::default();
        let (a, b) = (AgentId::new("a").unwrap(), AgentId::new("b").unwrap());
        let s = |n| Seq::new(n).unwrap();
        assert!(newer(&newest, &a, s(1)));
        assert!(newer(&newest, &a, s(3)));
        assert!(!newer(&newest, &a, s(3)), "a redelivery");
        assert!(!newer(&newest, &a, s(2)), "overtaken by 3");
        assert!(newer(&newest, &b, s(2)), "per agent");
        assert!(newer(&newest, &a, s(4)));
    }
}
