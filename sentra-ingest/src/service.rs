//! The tower [`Service`] that takes verified envelopes and answers with an [`Ack`].

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use sentra_core::{
    AgentId, Batch, Seq, UnixMillis, Verified,
    proto::{Ack, AckStatus, RejectReason},
};
use tokio::sync::{mpsc, oneshot};
use tower_service::Service;

use crate::{BoxError, Error, model::prepare, replay::Outcome, writer::Request};

/// Counters of the pipeline, for the server's own `/metrics` (prometheus-client series;
/// registered in the host's registry by [`Ingest::register_metrics`](crate::Ingest::register_metrics)).
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) accepted: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) conflicts: Counter,
    pub(crate) rejected: Family<[(&'static str, &'static str); 1], Counter>,
    pub(crate) failed: Counter,
    pub(crate) samples: Counter,
    pub(crate) clamped: Counter,
    /// From handing a batch to the writer until its commit is durable.
    pub(crate) commit_latency: Histogram,
}

/// Upper bounds of the commit-latency histogram, in seconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

impl Default for Counters {
    fn default() -> Self {
        let rejected = Family::default();
        // Every reason from the start (at 0), so rate() over them is defined at once.
        for r in REASON_LABELS {
            drop(rejected.get_or_create(&[("reason", r)]));
        }
        Self {
            accepted: Counter::default(),
            duplicates: Counter::default(),
            conflicts: Counter::default(),
            rejected,
            failed: Counter::default(),
            samples: Counter::default(),
            clamped: Counter::default(),
            commit_latency: Histogram::new(COMMIT_BUCKETS),
        }
    }
}

/// The `reason` label of a rejection.
fn reason_label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Malformed => "malformed",
        RejectReason::InvalidBatch => "invalid_batch",
        RejectReason::SeqTooFarAhead => "seq_too_far_ahead",
        RejectReason::SeqBelowHighWater => "seq_below_high_water",
        RejectReason::UnsupportedVersion => "unsupported_version",
        _ => "other",
    }
}

/// Every value [`reason_label`] returns.
const REASON_LABELS: [&str; 6] = [
    "malformed",
    "invalid_batch",
    "seq_too_far_ahead",
    "seq_below_high_water",
    "unsupported_version",
    "other",
];

/// A copy of the pipeline counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngestStats {
    /// Batches stored.
    pub accepted: u64,
    /// Batches answered `DUPLICATE` (retries; nothing stored).
    pub duplicates: u64,
    /// Of those, deliveries of a stored seq with a different envelope (re-signed or forged
    /// by a key holder); logged as a warning.
    pub seq_conflicts: u64,
    /// Batches rejected as malformed or invalid (nothing stored).
    pub rejected: u64,
    /// Calls that failed with a storage error (retryable; nothing stored).
    pub failed: u64,
    /// Samples stored (including derived histogram and WireGuard series).
    pub samples: u64,
    /// Sample timestamps too far in the future (agent clock ahead), stored with the
    /// receive time instead ([`Config::max_future_skew`](crate::Config::max_future_skew)).
    pub clamped_samples: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> IngestStats {
        IngestStats {
            accepted: self.accepted.get(),
            duplicates: self.duplicates.get(),
            seq_conflicts: self.conflicts.get(),
            rejected: {
                let mut n = 0;
                for r in REASON_LABELS {
                    n += self.rejected.get(&[("reason", r)]).map_or(0, |c| c.get());
                }
                n
            },
            failed: self.failed.get(),
            samples: self.samples.get(),
            clamped_samples: self.clamped.get(),
        }
    }
}

/// The ingest pipeline as a [`tower_service::Service`]: `Verified` envelope in, [`Ack`] out.
///
/// * A payload that does not decode or validate is answered `REJECTED` (reason `MALFORMED`
///   or `INVALID_BATCH`); nothing is stored.
/// * A `seq` that was already stored is answered `DUPLICATE`: safe to trim. Only a stored
///   `(agent, seq)` gets `DUPLICATE`.
/// * A `seq` further ahead of the high-water mark than
///   [`Config::max_seq_jump`](crate::Config::max_seq_jump) is `REJECTED` with
///   `SEQ_TOO_FAR_AHEAD`; a `seq` below the high-water mark, older than the replay window and
///   never stored is `REJECTED` with `SEQ_BELOW_HIGH_WATER` (the agent's data cannot be
///   stored until its sequence is reset: [`Ingest::reset_sequence`](crate::Ingest::reset_sequence)).
/// * Otherwise the batch is stored, and the high-water mark advanced, in one transaction
///   of the store; the `ACCEPTED` ack is sent only after that transaction is durable.
/// * `Err` means the store failed (full disk, I/O error) or the pipeline is shut down:
///   nothing was stored and nothing acknowledged; retry.
///
/// Cloning is cheap; every clone feeds the same writer.
#[derive(Clone)]
pub struct IngestService {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_future_skew_ms: i64,
}

impl fmt::Debug for IngestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestService").finish_non_exhaustive()
    }
}

/// The future returned by [`IngestService::call`].
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Ack, BoxError>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Ack, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

fn ack(
    agent_id: &AgentId,
    seq: Seq,
    status: AckStatus,
    reason: RejectReason,
    detail: String,
) -> Ack {
    Ack {
        agent_id: agent_id.as_str().to_owned(),
        seq: seq.get(),
        status: status as i32,
        reason: reason as i32,
        detail,
        server_time_ms: UnixMillis::now().as_millis(),
    }
}

impl IngestService {
    /// Handles one verified envelope (what [`Service::call`] runs).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the commit failed, [`Error::Closed`] after shutdown.
    pub async fn push(&self, verified: Verified) -> Result<Ack, Error> {
        let batch = verified.decode_batch();
        self.push_parts(
            verified.agent_id(),
            verified.seq(),
            *verified.fingerprint(),
            verified.payload().clone(),
            batch,
        )
        .await
    }

    /// [`push`](Self::push) of an envelope verified elsewhere (an ingest server that put it
    /// on the bus): its header, fingerprint, payload and the payload's decoding.
    pub(crate) async fn push_parts(
        &self,
        agent_id: &AgentId,
        seq: Seq,
        fingerprint: [u8; 32],
        payload: Bytes,
        batch: Result<Batch, sentra_core::Error>,
    ) -> Result<Ack, Error> {
        let received = UnixMillis::now();
        let rejected = |reason: RejectReason, detail: String| {
            self.counters
                .rejected
                .get_or_create(&[("reason", reason_label(reason))])
                .inc();
            tracing::info!(%agent_id, %seq, %detail, "batch rejected");
            Ok(ack(agent_id, seq, AckStatus::Rejected, reason, detail))
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return rejected(e.reject_reason(), e.to_string()),
        };
        let prepared = match prepare(
            batch,
            fingerprint,
            received,
            payload,
            self.max_future_skew_ms,
        ) {
            Ok(p) => p,
            Err(detail) => return rejected(RejectReason::InvalidBatch, detail),
        };
        let clamped = prepared.clamped as u64;
        let rows = prepared.row_count() as u64;
        let (reply, rx) = oneshot::channel();
        let handed_over = std::time::Instant::now();
        let sent = self.tx.send(Request::Batch(prepared, reply)).await;
        let outcome = match sent {
            Ok(()) => rx.await.unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        match outcome {
            Ok(Outcome::Accepted { .. }) => {
                self.counters
                    .commit_latency
                    .observe(handed_over.elapsed().as_secs_f64());
                self.counters.accepted.inc();
                self.counters.samples.inc_by(rows);
                if clamped > 0 {
                    self.counters.clamped.inc_by(clamped);
                    tracing::warn!(%agent_id, %seq, clamped,
                        max_future_skew_ms = self.max_future_skew_ms,
                        "sample timestamps ahead of the server clock were stored with the receive time; check the agent's clock");
                }
                Ok(ack(
                    agent_id,
                    seq,
                    AckStatus::Accepted,
                    RejectReason::Unspecified,
                    String::new(),
                ))
            }
            Ok(Outcome::Duplicate { conflict }) => {
                self.counters.duplicates.inc();
                let detail = if conflict {
                    self.counters.conflicts.inc();
                    tracing::warn!(%agent_id, %seq,
                        "seq already stored from a different envelope; the new one is ignored");
                    "seq already stored from a different envelope".to_owned()
                } else {
                    "already stored".to_owned()
                };
                Ok(ack(
                    agent_id,
                    seq,
                    AckStatus::Duplicate,
                    RejectReason::Unspecified,
                    detail,
                ))
            }
            Ok(Outcome::Rejected {
                ahead: true,
                high_water,
                limit,
            }) => rejected(
                RejectReason::SeqTooFarAhead,
                format!(
                    "seq {seq} is too far ahead (high-water mark {high_water}, largest acceptable seq {limit})"
                ),
            ),
            Ok(Outcome::Rejected {
                ahead: false,
                high_water,
                ..
            }) => rejected(
                RejectReason::SeqBelowHighWater,
                format!(
                    "seq {seq} is below the high-water mark {high_water}, outside the replay window, and was never stored; \
                     an operator can reset the agent's sequence (rotate its key with --reset-sequence)"
                ),
            ),
            Err(e) => {
                self.counters.failed.inc();
                Err(e)
            }
        }
    }
}

impl Service<Verified> for IngestService {
    type Response = Ack;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Back-pressure happens inside the call, on the bounded writer queue.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, verified: Verified) -> Self::Future {
        let this = self.clone();
        ResponseFuture {
            inner: Box::pin(async move { this.push(verified).await.map_err(BoxError::from) }),
        }
    }
}
