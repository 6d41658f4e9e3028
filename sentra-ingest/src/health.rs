//! Health of the pipeline (storage, internal tasks) and the per-agent ingest ledger.

use std::{any::Any, future::Future};

use sentra_core::UnixMillis;
use tokio::sync::watch;

/// Whether the database currently takes writes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StorageHealth {
    /// The last write committed.
    Ok,
    /// Writes fail (full disk, I/O error, …). Nothing is acknowledged while this lasts:
    /// pushes fail with a storage error (agents keep their data and retry). The writer
    /// reopens its connection and retries by itself; the first successful commit returns
    /// the state to [`StorageHealth::Ok`].
    Failing {
        /// The last error, e.g. `database or disk is full`.
        error: String,
        /// When the failures started.
        since: UnixMillis,
        /// Failed write transactions since then.
        failed_commits: u64,
    },
}

/// The health of an [`Ingest`](crate::Ingest): see [`Ingest::health`](crate::Ingest::health).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct IngestHealth {
    /// Whether writes commit.
    pub storage: StorageHealth,
    /// Set when an internal task ended unexpectedly: `"writer: <error or panic message>"`
    /// or `"maintenance: …"`. The pipeline cannot recover from that; the process should
    /// exit and be restarted.
    pub dead_task: Option<String>,
}

impl IngestHealth {
    pub(crate) const fn ok() -> Self {
        Self {
            storage: StorageHealth::Ok,
            dead_task: None,
        }
    }

    /// Storage works and every internal task runs.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.storage == StorageHealth::Ok && self.dead_task.is_none()
    }
}

/// Durable per-agent counters, kept in the same transaction as the batches they count (see
/// [`Ingest::agent_ledger`](crate::Ingest::agent_ledger)).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"high_water": 42, "accepted": 40, "gaps": 1, "missing": 2, "rejected_stale": 0, "rejected_ahead": 0})))]
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct AgentLedger {
    /// The highest seq stored (`None` before the first batch or after a sequence reset).
    pub high_water: Option<u64>,
    /// Batches accepted (stored). Each seq is accepted at most once.
    pub accepted: u64,
    /// Accepted batches whose seq jumped over seqs never received (`seq > high_water + 1`):
    /// loss on the agent's side, or a damaged server database.
    pub gaps: u64,
    /// Seqs skipped by those jumps and not received since.
    pub missing: u64,
    /// Batches refused because their seq is below the high-water mark, outside the replay
    /// window, and was never stored (`REJECT_REASON_SEQ_BELOW_HIGH_WATER`).
    pub rejected_stale: u64,
    /// Batches refused because their seq jumps too far ahead
    /// (`REJECT_REASON_SEQ_TOO_FAR_AHEAD`).
    pub rejected_ahead: u64,
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Runs `task` as its own tokio task and, if it ends (returns, panics or is cancelled)
/// while `stopping` is not set, logs it and records it in `health.dead_task`.
pub(crate) async fn supervise<F>(
    name: &'static str,
    task: F,
    health: watch::Sender<IngestHealth>,
    stopping: watch::Receiver<bool>,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let result = tokio::spawn(task).await;
    // a dropped sender means the `Ingest` itself is gone: that is a stop too
    let stopping = *stopping.borrow() || stopping.has_changed().is_err();
    let message = match result {
        Ok(()) if stopping => return,
        Ok(()) => "stopped unexpectedly".to_owned(),
        Err(e) if e.is_panic() => format!("panicked: {}", panic_message(&*e.into_panic())),
        Err(_) if stopping => return,
        Err(e) => format!("cancelled: {e}"),
    };
    tracing::error!(task = name, error = %message, "ingest task died; the pipeline is not ready");
    health.send_modify(|h| {
        if h.dead_task.is_none() {
            h.dead_task = Some(format!("{name}: {message}"));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_message() {
        let health = watch::Sender::new(IngestHealth::ok());
        let (_stop, stopping) = watch::channel(false);
        supervise(
            "maintenance",
            async { panic!("attempt to multiply with overflow") },
            health.clone(),
            stopping,
        )
        .await;
        let h = health.borrow().clone();
        assert_eq!(
            h.dead_task.as_deref(),
            Some("maintenance: panicked: attempt to multiply with overflow")
        );
        assert!(!h.is_ready());
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_reported_but_a_stop_is_not() {
        let health = watch::Sender::new(IngestHealth::ok());
        let (stop, stopping) = watch::channel(false);
        supervise("writer", async {}, health.clone(), stopping.clone()).await;
        assert_eq!(
            health.borrow().dead_task.as_deref(),
            Some("writer: stopped unexpectedly")
        );

        let health = watch::Sender::new(IngestHealth::ok());
        stop.send(true).unwrap();
        supervise("writer", async {}, health.clone(), stopping).await;
        assert!(health.borrow().is_ready());
    }
}
