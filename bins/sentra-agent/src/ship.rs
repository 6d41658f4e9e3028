//! The shipper: WAL cursor → sign → push → acknowledge.
//!
//! * Records are read from the WAL cursor in order and pushed **one at a time**: the server
//!   deduplicates with a per-agent high-water mark, so a batch overtaken by a later one
//!   would be taken for a duplicate and dropped. The in-flight bound is therefore one batch
//!   (plus at most [`READ_AHEAD`] records read ahead from disk).
//! * Every attempt is signed afresh: the envelope's `created_ms` is the signing time (the
//!   server allows ±300 s of skew), the batch inside keeps its collection time, its `seq`
//!   and its bytes. A batch stored during a week-long outage ships fine afterwards.
//! * `ACCEPTED` and `DUPLICATE` acknowledge the record; the WAL cursor is persisted every
//!   [`ACK_EVERY`] records and whenever the shipper catches up or stops (a crash in between
//!   only re-sends batches the server answers with `DUPLICATE`). A graceful stop lets the
//!   push in flight finish (for at most [`STOP_GRACE`]), so the persisted cursor covers what
//!   the server stored and a restart re-sends nothing.
//! * A `DUPLICATE` the agent cannot explain — for a batch's first delivery, with no earlier
//!   attempt that may have reached the server, and not among the [`ACK_EVERY`] records a
//!   previous run may have shipped past its persisted cursor — means the server's sequence
//!   state for this agent is wrong (issue 10 item 13: one batch with seq 2⁶⁴−1 made it answer
//!   `DUPLICATE` to everything, and drop it). It still acknowledges the record (re-sending
//!   cannot help), but is counted in `sentra_agent_unexpected_duplicates_total` and logged
//!   at warn level once per episode (until the next `ACCEPTED`).
//! * A rejection or failure is handled by reason (see [`Disposition`]): a batch that can
//!   never be accepted is skipped, counted in `sentra_agent_batches_rejected_total{reason}`
//!   and logged once per reason, so one poison batch cannot block the agent; anything that
//!   may succeed later (network, overload, authentication during a key rotation, clock
//!   skew) is retried with exponential backoff and full jitter, forever.
//! * `SEQ_BELOW_HIGH_WATER` is held, not skipped: the server refuses this agent's sequence
//!   numbers until an operator resets them (`sentra agent rotate-key --reset-sequence`), and
//!   every later batch would be refused too, so skipping would only turn a stall into a
//!   loss. The batch stays in the WAL and is retried with backoff; each refusal is counted in
//!   `sentra_agent_batches_rejected_total{reason="seq_below_high_water"}` and the condition
//!   is logged at error level once per episode, with the remedy. After the reset everything
//!   held ships (the WAL's cap and drop policy bound what a long stall keeps).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sentra_core::proto::{self, AckStatus, RejectReason};
use sentra_core::{Method, Nonce, UnixMillis};
use sentra_wal::{Entry, Lsn};
use tokio::sync::{Notify, watch};

use crate::credentials::Credentials;
use crate::health::Health;
use crate::store::{Prepared, Store};

/// Records read from disk ahead of the one in flight.
pub const READ_AHEAD: usize = 64;
/// Persist the WAL cursor at least every this many acknowledged records.
pub const ACK_EVERY: u64 = 32;
/// How long a graceful stop waits for the push in flight to be answered.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the agent needs from the server's gRPC side. Implemented for
/// [`sentra_transport::Client`]; an embedding process may implement it in-process.
pub trait Ingest: Send + Sync + 'static {
    /// Ships one envelope signed for `Method::Push`.
    fn push(&self, envelope: proto::SignedBatch) -> BoxFuture<'_, Result<proto::Ack, IngestError>>;
    /// Fetches desired peers with an envelope signed for `Method::FetchDesiredState`.
    fn fetch_desired_state(
        &self,
        envelope: proto::SignedBatch,
    ) -> BoxFuture<'_, Result<proto::DesiredState, IngestError>>;
}

/// A failed call, with what the server said about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct IngestError {
    /// Human-readable description.
    pub message: String,
    /// The server's reason, if it gave one.
    pub reason: Option<RejectReason>,
    /// How long the server asked us to wait.
    pub retry_after: Option<Duration>,
    /// The server's clock (clock-skew rejections).
    pub server_time: Option<UnixMillis>,
    /// The server does not implement the call (no desired-state service).
    pub unimplemented: bool,
}

impl IngestError {
    /// An error with only a message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reason: None,
            retry_after: None,
            server_time: None,
            unimplemented: false,
        }
    }
}

impl From<sentra_transport::Error> for IngestError {
    fn from(e: sentra_transport::Error) -> Self {
        Self {
            message: e.to_string(),
            reason: e.reject_reason(),
            retry_after: e.retry_after(),
            server_time: e.server_time(),
            unimplemented: e.code() == Some(tonic::Code::Unimplemented),
        }
    }
}

impl Ingest for sentra_transport::Client {
    fn push(&self, envelope: proto::SignedBatch) -> BoxFuture<'_, Result<proto::Ack, IngestError>> {
        Box::pin(async move { Self::push(self, envelope).await.map_err(IngestError::from) })
    }

    fn fetch_desired_state(
        &self,
        envelope: proto::SignedBatch,
    ) -> BoxFuture<'_, Result<proto::DesiredState, IngestError>> {
        Box::pin(async move {
            Self::fetch_desired_state(self, envelope)
                .await
                .map_err(IngestError::from)
        })
    }
}

/// What the shipper does about a rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// The batch can never be accepted as it is (malformed, invalid, too large, a seq the
    /// server holds with other content, an envelope version it does not speak, a seq the
    /// server's sequence state refuses): count it, log once per reason, acknowledge past it.
    Skip,
    /// Authentication failed: keys may be rotating. Ask for the newest key now, keep the
    /// batch, retry with backoff.
    RefreshKeyAndRetry,
    /// Transient (rate limited, clock skew, a replayed nonce, an unspecified reason, any
    /// transport failure): keep the batch, retry with backoff.
    Retry,
    /// The server refuses the agent's sequence numbers until an operator resets them
    /// (`SEQ_BELOW_HIGH_WATER`): keep the batch, count each refusal, log the remedy once per
    /// episode, retry with backoff. Skipping could not help: every later batch is refused
    /// too, and would be lost instead of held.
    Hold,
}

/// The documented per-reason policy.
#[must_use]
pub fn disposition(reason: RejectReason) -> Disposition {
    match reason {
        RejectReason::Malformed
        | RejectReason::TooLarge
        | RejectReason::InvalidBatch
        | RejectReason::SeqConflict
        | RejectReason::UnsupportedVersion
        | RejectReason::SeqTooFarAhead => Disposition::Skip,
        RejectReason::SeqBelowHighWater => Disposition::Hold,
        RejectReason::Unauthenticated => Disposition::RefreshKeyAndRetry,
        _ => Disposition::Retry,
    }
}

/// Whether a failed attempt with this reason may nevertheless have been stored: only the
/// rejections a server gives before it looks at the batch rule that out. A timeout or a
/// broken connection (no reason) may have lost the answer to a stored batch.
fn may_have_been_stored(reason: Option<RejectReason>) -> bool {
    !matches!(
        reason,
        Some(
            RejectReason::Unauthenticated
                | RejectReason::RateLimited
                | RejectReason::ClockSkew
                | RejectReason::Malformed
                | RejectReason::TooLarge
                | RejectReason::UnsupportedVersion
                | RejectReason::SeqBelowHighWater
                | RejectReason::SeqTooFarAhead
        )
    )
}

/// Whether the shipper should stop: the stop signal is raised, or its sender is gone (the
/// agent's handle was dropped without a graceful stop; `changed()` would then resolve at
/// once, forever, and turn every wait into a busy loop).
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// What an operator should know about a sequence rejection, beyond its reason.
fn seq_rejection_hint(reason: RejectReason) -> Option<&'static str> {
    match reason {
        RejectReason::SeqBelowHighWater => Some(
            "the server's sequence high-water for this agent is above this batch although it never stored it (a bogus seq was accepted earlier, or the server's state was restored); batches are held in the WAL (not lost, within its cap) and retried until an operator resets the agent's sequence with `sentra agent rotate-key --reset-sequence`",
        ),
        RejectReason::SeqTooFarAhead => Some(
            "this batch's seq is further ahead of the server's high-water than the server allows (the agent's state directory was replaced, or the server's data restored from an older copy); batches are skipped and lost until an operator resets the agent's sequence with `sentra agent rotate-key --reset-sequence`",
        ),
        _ => None,
    }
}

fn reason_label(r: RejectReason) -> String {
    r.as_str_name()
        .trim_start_matches("REJECT_REASON_")
        .to_ascii_lowercase()
}

/// Exponential backoff with full jitter between `initial` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in `[d/2, d]` where `d = min(max, initial·2ⁿ)`.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << self.attempt.min(20));
        let d = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let jitter = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(fastrand::u64(0..=jitter))
    }

    /// Failures since the last reset.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Shared key state: the shipper, the peer applier and the rotation task read it; rotation
/// replaces it after persisting the new key.
pub type KeyState = Arc<RwLock<Credentials>>;

pub(crate) fn current(creds: &KeyState) -> Credentials {
    creds
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

pub(crate) struct Shipper {
    pub(crate) store: Store,
    pub(crate) ingest: Arc<dyn Ingest>,
    pub(crate) creds: KeyState,
    pub(crate) health: Arc<Health>,
    pub(crate) push_timeout: Duration,
    pub(crate) backoff: Backoff,
    /// Notified by collectors after each append.
    pub(crate) wake: Arc<Notify>,
    /// Notified to ask the rotation task for an immediate key check.
    pub(crate) key_check: Arc<Notify>,
}

enum Shipped {
    Acked,
    Skipped,
    Stopped,
}

/// What the shipper remembers across batches for its logs and counters.
struct ShipLog {
    /// Skip reasons already logged (sequence reasons are re-armed by an `ACCEPTED`).
    skipped_logged: HashSet<String>,
    /// Records up to this LSN may have been shipped by a previous run (past the cursor it
    /// persisted): a `DUPLICATE` for them is expected.
    resent_until: Lsn,
    /// An unexpected-duplicate episode is under way (logged once until an `ACCEPTED`).
    unexpected_duplicates: bool,
}

impl ShipLog {
    fn new(acked: Lsn) -> Self {
        Self {
            skipped_logged: HashSet::new(),
            resent_until: acked.saturating_add(ACK_EVERY),
            unexpected_duplicates: false,
        }
    }

    /// An unexpected `DUPLICATE`: whether it starts an episode (log it at warn level).
    fn unexpected_duplicate(&mut self) -> bool {
        !std::mem::replace(&mut self.unexpected_duplicates, true)
    }

    /// An `ACCEPTED`: ends an unexpected-duplicate episode (returns whether one was under
    /// way) and re-arms the sequence-rejection logs.
    fn accepted(&mut self) -> bool {
        for r in [
            RejectReason::SeqBelowHighWater,
            RejectReason::SeqTooFarAhead,
        ] {
            self.skipped_logged.remove(&reason_label(r));
        }
        std::mem::replace(&mut self.unexpected_duplicates, false)
    }

    /// A skipped batch: whether to log it at error level (once per reason; once per
    /// episode for the sequence reasons).
    fn skipped(&mut self, label: &str) -> bool {
        self.skipped_logged.insert(label.to_owned())
    }
}

impl Shipper {
    async fn read(&self, from: Lsn) -> crate::Result<Vec<Entry>> {
        let wal = self.store.wal().clone();
        tokio::task::spawn_blocking(move || wal.read_from(from).next_batch(READ_AHEAD))
            .await
            .map_err(|e| crate::Error::Task(e.to_string()))?
            .map_err(Into::into)
    }

    async fn ack(&self, lsn: Lsn) -> crate::Result<()> {
        let wal = self.store.wal().clone();
        tokio::task::spawn_blocking(move || wal.ack(lsn))
            .await
            .map_err(|e| crate::Error::Task(e.to_string()))?
            .map_err(Into::into)
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> crate::Result<()> {
        let mut acked = self.store.wal().acked_lsn();
        let mut done = acked; // highest LSN the server has (or that was skipped)
        let mut log = ShipLog::new(acked);
        loop {
            if stopping(&stop) {
                break;
            }
            let entries = self.read(done + 1).await?;
            if entries.is_empty() {
                if done > acked {
                    self.ack(done).await?;
                    acked = done;
                }
                self.health.oldest_unshipped_ms.store(0, Relaxed);
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            for entry in entries {
                match entry {
                    Entry::Record(r) => {
                        let lsn = r.lsn();
                        match self.store.prepare(lsn, r.into_payload()) {
                            Ok(p) => {
                                self.health.oldest_unshipped_ms.store(p.created_ms, Relaxed);
                                match self.ship(&p, &mut stop, &mut log).await {
                                    Shipped::Acked | Shipped::Skipped => done = lsn,
                                    Shipped::Stopped => break,
                                }
                            }
                            Err(e) => {
                                self.health.wal_lost.fetch_add(1, Relaxed);
                                tracing::error!(lsn, error = %e, "WAL record is not a batch; skipped and counted as lost");
                                done = lsn;
                            }
                        }
                    }
                    Entry::Loss(loss) => {
                        self.health.wal_lost.fetch_add(loss.records(), Relaxed);
                        tracing::error!(
                            first = loss.first,
                            last = loss.last,
                            cause = %loss.cause,
                            "WAL records lost; counted in sentra_agent_wal_lost_records_total"
                        );
                        done = done.max(loss.last);
                    }
                    _ => {}
                }
                if done >= acked + ACK_EVERY {
                    self.ack(done).await?;
                    acked = done;
                }
                if stopping(&stop) {
                    break;
                }
            }
        }
        if done > acked {
            self.ack(done).await?;
        }
        Ok(())
    }

    async fn ship(
        &mut self,
        p: &Prepared,
        stop: &mut watch::Receiver<bool>,
        log: &mut ShipLog,
    ) -> Shipped {
        // Whether an earlier attempt (of this run or, past the persisted cursor, of a
        // previous one) may have been stored: then a DUPLICATE answer is expected.
        let mut maybe_delivered = p.lsn <= log.resent_until;
        loop {
            if stopping(stop) {
                return Shipped::Stopped;
            }
            let envelope = {
                let creds = current(&self.creds);
                creds.signer().sign(
                    Method::Push,
                    p.seq,
                    UnixMillis::now(),
                    Nonce::random(),
                    p.payload.clone(),
                )
            };
            let key_id = envelope.key_id;
            let push = tokio::time::timeout(self.push_timeout, self.ingest.push(envelope));
            tokio::pin!(push);
            let result = tokio::select! {
                r = &mut push => r,
                _ = stop.changed() => {
                    // Graceful stop: let the push in flight finish, so the cursor persisted
                    // on stop covers it if the server stored it.
                    match tokio::time::timeout(STOP_GRACE, &mut push).await {
                        Ok(r) => r,
                        Err(_) => return Shipped::Stopped,
                    }
                }
            };
            let (reason, detail, retry_after) = match result {
                Ok(Ok(ack)) => match ack.status() {
                    AckStatus::Accepted | AckStatus::Duplicate => {
                        if ack.status() == AckStatus::Accepted {
                            self.health.accepted.fetch_add(1, Relaxed);
                            if log.accepted() {
                                tracing::info!(
                                    "the server accepts batches again after unexpected DUPLICATE answers"
                                );
                            }
                        } else {
                            self.health.duplicate.fetch_add(1, Relaxed);
                            if !maybe_delivered {
                                let n = self.health.unexpected_duplicate.fetch_add(1, Relaxed) + 1;
                                if !log.unexpected_duplicate() {
                                    tracing::debug!(seq = %p.seq, lsn = p.lsn, total = n, "unexpected DUPLICATE answer");
                                } else {
                                    tracing::warn!(
                                        seq = %p.seq, lsn = p.lsn, total = n,
                                        "the server answered DUPLICATE for a batch it cannot have stored before (first delivery); its sequence state for this agent may be wrong and it may be dropping this agent's data; counted in sentra_agent_unexpected_duplicates_total (logged once until the server accepts a batch again)"
                                    );
                                }
                            }
                        }
                        if self.backoff.attempts() > 0 {
                            tracing::info!(
                                failures = self.backoff.attempts(),
                                "shipping again after failures"
                            );
                        }
                        self.backoff.reset();
                        tracing::debug!(seq = %p.seq, lsn = p.lsn, status = ?ack.status(), "batch acknowledged");
                        return Shipped::Acked;
                    }
                    AckStatus::Rejected => (Some(ack.reason()), ack.detail.clone(), None),
                    AckStatus::Unspecified => (None, "ack without status".to_owned(), None),
                },
                Ok(Err(e)) => (e.reason, e.message.clone(), e.retry_after),
                Err(_) => (None, format!("no ack within {:?}", self.push_timeout), None),
            };
            let disp = reason.map_or(Disposition::Retry, disposition);
            if disp == Disposition::Skip {
                let label = reason.map_or_else(|| "unspecified".to_owned(), reason_label);
                let n = self.health.reject(&label);
                if log.skipped(&label) {
                    if let Some(hint) = reason.and_then(seq_rejection_hint) {
                        tracing::error!(
                            seq = %p.seq, lsn = p.lsn, reason = %label, %detail, hint,
                            "server refused a batch's sequence number; skipped and counted in sentra_agent_batches_rejected_total (logged once until the server accepts a batch again)"
                        );
                    } else {
                        tracing::error!(
                            seq = %p.seq, lsn = p.lsn, reason = %label, %detail,
                            "server rejected a batch permanently; skipped and counted in sentra_agent_batches_rejected_total (logged once per reason)"
                        );
                    }
                } else {
                    tracing::debug!(seq = %p.seq, reason = %label, total = n, "batch rejected and skipped");
                }
                self.backoff.reset();
                return Shipped::Skipped;
            }
            if disp == Disposition::RefreshKeyAndRetry {
                self.key_check.notify_one();
            }
            if disp == Disposition::Hold {
                let label = reason.map_or_else(|| "unspecified".to_owned(), reason_label);
                let n = self.health.reject(&label);
                if log.skipped(&label) {
                    tracing::error!(
                        seq = %p.seq, lsn = p.lsn, reason = %label, %detail,
                        hint = reason.and_then(seq_rejection_hint).unwrap_or_default(),
                        "server refuses this batch's sequence number; holding it and retrying with backoff (each refusal counted in sentra_agent_batches_rejected_total; logged once until the server accepts a batch again)"
                    );
                } else {
                    tracing::debug!(seq = %p.seq, reason = %label, total = n, "batch refused again; held");
                }
            }
            if may_have_been_stored(reason) {
                maybe_delivered = true;
            }
            self.health.push_failures.fetch_add(1, Relaxed);
            if stopping(stop) {
                return Shipped::Stopped;
            }
            let mut delay = self.backoff.next_delay();
            if let Some(ra) = retry_after {
                delay = delay.max(ra);
            }
            let reason_s = reason.map_or_else(|| "transport".to_owned(), reason_label);
            if self.backoff.attempts() == 1 {
                tracing::warn!(seq = %p.seq, key_id, reason = %reason_s, %detail, retry_in = ?delay, "push failed; retrying with backoff (further failures at debug level)");
            } else {
                tracing::debug!(seq = %p.seq, reason = %reason_s, %detail, retry_in = ?delay, attempt = self.backoff.attempts(), "push failed again");
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return Shipped::Stopped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[4..] {
            assert!(
                *x >= Duration::from_millis(500) && *x <= Duration::from_secs(1),
                "{x:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn logs_once_per_episode() {
        let mut log = ShipLog::new(10);
        assert_eq!(log.resent_until, 10 + ACK_EVERY);
        // Unexpected duplicates: warn on the first of an episode only.
        assert!(log.unexpected_duplicate());
        assert!(!log.unexpected_duplicate());
        assert!(!log.unexpected_duplicate());
        assert!(log.accepted(), "the episode ends");
        assert!(!log.accepted());
        assert!(log.unexpected_duplicate(), "a new episode is logged again");
        // Sequence rejections: once per episode; other reasons once for the process.
        let below = reason_label(RejectReason::SeqBelowHighWater);
        assert!(log.skipped(&below));
        assert!(!log.skipped(&below));
        assert!(log.skipped("invalid_batch"));
        log.accepted();
        assert!(log.skipped(&below), "re-armed by an ACCEPTED");
        assert!(!log.skipped("invalid_batch"), "once per reason");
    }

    #[test]
    fn a_dropped_stop_sender_means_stop() {
        let (tx, rx) = watch::channel(false);
        assert!(!stopping(&rx));
        drop(tx);
        assert!(
            stopping(&rx),
            "no one can ever stop us gracefully: stop now"
        );
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        assert!(stopping(&rx));
    }

    #[test]
    fn reasons() {
        assert_eq!(disposition(RejectReason::Malformed), Disposition::Skip);
        assert_eq!(disposition(RejectReason::InvalidBatch), Disposition::Skip);
        assert_eq!(
            disposition(RejectReason::Unauthenticated),
            Disposition::RefreshKeyAndRetry
        );
        assert_eq!(disposition(RejectReason::ClockSkew), Disposition::Retry);
        assert_eq!(disposition(RejectReason::RateLimited), Disposition::Retry);
        assert_eq!(disposition(RejectReason::Unspecified), Disposition::Retry);
        assert_eq!(disposition(RejectReason::SeqTooFarAhead), Disposition::Skip);
        assert_eq!(
            disposition(RejectReason::SeqBelowHighWater),
            Disposition::Hold
        );
        assert_eq!(
            reason_label(RejectReason::SeqBelowHighWater),
            "seq_below_high_water"
        );
        assert!(may_have_been_stored(None));
        assert!(may_have_been_stored(Some(RejectReason::Replay)));
        assert!(!may_have_been_stored(Some(RejectReason::RateLimited)));
        assert_eq!(reason_label(RejectReason::InvalidBatch), "invalid_batch");
    }
}
