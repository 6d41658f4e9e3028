//! The one scheduler every collector runs under (see [`crate::collector`] for the
//! contract): schedule, timeout, panic isolation, failure backoff, health, and hand-off of
//! each collection to the WAL.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use sentra_core::UnixMillis;
use tokio::time::Instant;

use crate::Result;
use crate::collector::{CollectContext, Collection, Collector, Schedule};
use crate::health::FailureKind;
use crate::output::Snapshot;
use crate::runtime::Pipeline;
use crate::ship::BoxFuture;

/// A collector's scheduling task: ends only with a fatal WAL error, named after it.
pub(crate) type Task = BoxFuture<'static, (String, Result<()>)>;

/// A collector whose type was erased when it was added to the agent.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    run: Box<dyn FnOnce(Arc<Pipeline>) -> Task + Send>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// Reads the collector's name and schedule now (a panic there is the caller's, at
    /// build time, not the running agent's).
    pub(crate) fn new<C: Collector>(collector: C) -> Self {
        let name = collector.name().to_owned();
        let schedule = collector.schedule();
        let (n, s) = (name.clone(), schedule);
        Self {
            name,
            schedule,
            run: Box::new(move |pipeline| Box::pin(run(collector, n, s, pipeline))),
        }
    }

    /// The task running this collector until the agent stops it. It ends on its own only
    /// with a fatal error of the WAL.
    pub(crate) fn start(self, pipeline: Arc<Pipeline>) -> Task {
        (self.run)(pipeline)
    }
}

/// A uniformly random delay in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..nanos))
}

/// How one run ended.
enum Outcome {
    Ok(Collection),
    /// Kind, reason, already reported, quarantined.
    Failed(FailureKind, String, bool, bool),
}

/// One run under the schedule's timeout, with panics caught.
async fn run_once<C: Collector>(c: &mut C, cx: &CollectContext, timeout: Duration) -> Outcome {
    let call = CatchUnwind(Box::pin(c.collect(cx)));
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::Failed(
            FailureKind::Timeout,
            format!(
                "did not finish within its timeout of {}",
                humantime::format_duration(timeout)
            ),
            false,
            false,
        ),
        Ok(Err(panic)) => Outcome::Failed(
            FailureKind::Panic,
            format!("panicked: {}", panic_message(panic.as_ref())),
            false,
            false,
        ),
        Ok(Ok(Err(e))) => Outcome::Failed(
            FailureKind::Error,
            e.reason().to_owned(),
            e.is_reported(),
            e.is_quarantined(),
        ),
        Ok(Ok(Ok(collection))) => Outcome::Ok(collection),
    }
}

/// The scheduling loop of one collector.
async fn run<C: Collector>(
    mut collector: C,
    name: String,
    schedule: Schedule,
    pipeline: Arc<Pipeline>,
) -> (String, Result<()>) {
    let health = pipeline.health().clone();
    health.collector_registered(&name);
    let mut failures = 0u32;
    let mut next = Instant::now() + jitter(schedule.jitter);
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        let now = UnixMillis::now();
        let cx = CollectContext::new(now).with_failures(failures);
        let outcome = run_once(&mut collector, &cx, schedule.timeout).await;
        let took = started.elapsed();
        match outcome {
            Outcome::Ok(collection) => {
                health.collector_ok(&name, now, took, collection.samples.len());
                if failures > 0 {
                    tracing::info!(collector = %name, failed_runs = failures, "collector works again");
                }
                failures = 0;
                health.collect_error(&name, collection.invalid);
                for p in &collection.problems {
                    tracing::debug!(collector = %name, problem = %p, "source unreadable");
                }
                let snap = Snapshot {
                    created: now,
                    samples: collection.samples,
                    wg_devices: collection.wg_devices,
                    wg_unavailable: None,
                    problems: collection.problems,
                };
                if let Err(e) = pipeline.deliver(&snap).await {
                    return (format!("collector {name}"), Err(e));
                }
            }
            Outcome::Failed(kind, reason, reported, quarantined) => {
                let was_quarantined = quarantined && health.is_quarantined(&name);
                failures = health.collector_failed(&name, now, took, kind, &reason, quarantined);
                let retry_in = schedule.gap(failures);
                if quarantined && !was_quarantined {
                    tracing::warn!(
                        collector = %name,
                        reason = %reason,
                        "collector quarantined: it is no longer run (sentra_agent_collector_quarantined); the other collectors are not affected"
                    );
                } else if failures == 1 && !reported {
                    tracing::warn!(
                        collector = %name,
                        kind = kind.as_str(),
                        reason = %reason,
                        "collector run failed; the other collectors are not affected (retried with backoff, counted in sentra_agent_collector_failures_total)"
                    );
                } else {
                    tracing::debug!(
                        collector = %name,
                        kind = kind.as_str(),
                        reason = %reason,
                        consecutive_failures = failures,
                        retry_in = %humantime::format_duration(retry_in),
                        "collector run failed again"
                    );
                }
            }
        }
        // As tokio's `MissedTickBehavior::Delay`: a late run is not caught up.
        next = (started + schedule.gap(failures) + jitter(schedule.jitter)).max(Instant::now());
    }
}

/// Turns a panic while polling the inner future into an `Err` with the panic payload.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a non-string panic payload)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::CollectError;

    struct Scripted(Vec<u8>);

    impl Collector for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn schedule(&self) -> Schedule {
            Schedule::every(Duration::from_secs(1))
        }
        async fn collect(
            &mut self,
            cx: &CollectContext,
        ) -> std::result::Result<Collection, CollectError> {
            match self.0.pop() {
                Some(b'p') => panic!("scripted panic {}", cx.consecutive_failures()),
                Some(b'h') => std::future::pending().await,
                Some(b'e') => Err(CollectError::new("scripted error")),
                _ => {
                    let mut s = cx.sample_set();
                    s.counter("scripted_total", &[], 1);
                    Ok(Collection::from_samples(s))
                }
            }
        }
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        let max = Duration::from_millis(30);
        let draws: Vec<Duration> = (0..1000).map(|_| jitter(max)).collect();
        assert!(draws.iter().all(|d| *d < max));
        assert!(
            draws.iter().any(|d| *d > max / 2) && draws.iter().any(|d| *d < max / 2),
            "spread over the range"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_run_turns_panic_hang_and_error_into_failures() {
        // Popped from the back: ok, error, hang, panic, ok.
        let mut c = Scripted(b"opheo".to_vec());
        let t = Duration::from_millis(50);
        let cx = CollectContext::new(UnixMillis::from_millis(1));
        let ok = |o: &Outcome| matches!(o, Outcome::Ok(c) if c.samples.len() == 1);
        assert!(ok(&run_once(&mut c, &cx, t).await));
        let kind = |o: Outcome| match o {
            Outcome::Failed(k, r, _, _) => (k, r),
            Outcome::Ok(_) => panic!("expected a failure"),
        };
        assert_eq!(
            kind(run_once(&mut c, &cx, t).await),
            (FailureKind::Error, "scripted error".to_owned())
        );
        let (k, r) = kind(run_once(&mut c, &cx, t).await);
        assert_eq!(k, FailureKind::Timeout);
        assert!(r.contains("50ms"), "{r}");
        let cx3 = CollectContext::new(UnixMillis::from_millis(1)).with_failures(3);
        assert_eq!(
            kind(run_once(&mut c, &cx3, t).await),
            (FailureKind::Panic, "panicked: scripted panic 3".to_owned())
        );
        assert!(
            ok(&run_once(&mut c, &cx, t).await),
            "the collector is called again after a panic"
        );
    }
}
