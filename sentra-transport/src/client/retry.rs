//! The client's retry policy: retryable statuses only, a retry budget, full-jitter
//! exponential backoff that honours the server's `sentra-retry-after-ms`.

use std::{sync::Arc, time::Duration};

use tower::retry::budget::{Budget as _, TpsBudget};

use crate::{BoxError, status};

/// Retry settings of a [`Client`](crate::Client).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts per call, the first included. Default 5; 1 disables retries.
    pub max_attempts: u32,
    /// Backoff cap for the first retry; doubles per attempt. Default 100 ms.
    pub initial_backoff: Duration,
    /// Largest backoff. Default 5 s.
    pub max_backoff: Duration,
    /// Retries allowed on top of `budget_percent`, per second. Default 10.
    pub budget_min_per_sec: u32,
    /// Retries allowed as a fraction of recent successful calls. Default 0.2.
    pub budget_percent: f32,
    /// Window over which the budget counts calls. Default 10 s.
    pub budget_ttl: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            budget_min_per_sec: 10,
            budget_percent: 0.2,
            budget_ttl: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// No retries at all.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the attempts per call.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff bounds.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }
}

/// The retry decisions of one call: carries the attempt count; the budget is shared by the
/// whole client.
#[derive(Debug)]
pub(crate) struct RetryPolicy<'a> {
    cfg: RetryConfig,
    budget: &'a TpsBudget,
    attempt: u32,
}

impl<'a> RetryPolicy<'a> {
    pub(crate) fn new(cfg: RetryConfig, budget: &'a TpsBudget) -> Self {
        Self {
            cfg,
            budget,
            attempt: 1,
        }
    }

    pub(crate) fn budget(cfg: &RetryConfig) -> Arc<TpsBudget> {
        Arc::new(TpsBudget::new(
            cfg.budget_ttl,
            cfg.budget_min_per_sec,
            cfg.budget_percent,
        ))
    }

    /// Whether the attempt about to be made is the last one allowed.
    pub(crate) fn is_last_attempt(&self) -> bool {
        self.attempt >= self.cfg.max_attempts
    }

    /// Full jitter over an exponential cap; a server hint raises the floor (bounded by
    /// `max_backoff`).
    fn delay(&self, hint: Option<Duration>) -> Duration {
        let exp = self.attempt.saturating_sub(1).min(20);
        let cap = self
            .cfg
            .initial_backoff
            .saturating_mul(1 << exp)
            .min(self.cfg.max_backoff);
        let jittered = cap.mul_f64(fastrand::f64());
        hint.map_or(jittered, |h| jittered.max(h.min(self.cfg.max_backoff)))
    }

    /// After an attempt: `None` to return `result` (a success deposits into the budget; a
    /// failure that is not retryable, the last attempt, an exhausted budget), or the backoff
    /// to wait before the next attempt.
    pub(crate) fn retry_delay<Res>(&mut self, result: &Result<Res, BoxError>) -> Option<Duration> {
        let Err(err) = result else {
            self.budget.deposit();
            return None;
        };
        let view = status::try_view(&**err)?;
        if !status::is_retryable(view.code()) || self.attempt >= self.cfg.max_attempts {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!("retry budget exhausted");
            return None;
        }
        let delay = self.delay(status::retry_after(&view));
        self.attempt += 1;
        tracing::debug!(code = ?view.code(), attempt = self.attempt, ?delay, "retrying");
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_hints() {
        let cfg =
            RetryConfig::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        let budget = RetryPolicy::budget(&cfg);
        let mut p = RetryPolicy::new(cfg, &budget);
        for attempt in 1..10 {
            p.attempt = attempt;
            let d = p.delay(None);
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            assert!(d <= cap, "{attempt}: {d:?} > {cap:?}");
        }
        p.attempt = 1;
        assert!(p.delay(Some(Duration::from_millis(700))) >= Duration::from_millis(700));
        assert!(p.delay(Some(Duration::from_secs(60))) <= Duration::from_secs(1));
    }
}
