//! Per-agent rate limit keyed by the *authenticated* agent id (so it sits after
//! [`auth`](crate::auth)): a GCRA token bucket per agent, shared by every service the layer
//! builds. [`PeerRateLimitLayer`] is the coarse per-IP limit that runs *before*
//! authentication, so one address cannot make the server spend unbounded HMAC work. Over the limit, requests fail at once with [`RateLimited`]
//! (`RESOURCE_EXHAUSTED`, reason `RATE_LIMITED`, `sentra-retry-after-ms`).
//!
//! Unlike `tower::limit::RateLimit`, the state is shared across clones and connections
//! (security.md §3.2), and a request over the limit is rejected rather than delayed, so a
//! flooding agent cannot hold server resources. Idle agents' buckets are evicted once the
//! table exceeds [`Quota::max_tracked_agents`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sentra_transport::{BoxError, rate_limit::{AgentKeyed, Quota, RateLimitLayer, RateLimited}};
//! use sentra_core::AgentId;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! struct Req(AgentId);
//! impl AgentKeyed for Req { fn agent_id(&self) -> &AgentId { &self.0 } }
//!
//! let svc = RateLimitLayer::new(Quota::per_second(1.0).burst(2))
//!     .layer(service_fn(|_: Req| async { Ok::<_, BoxError>(()) }));
//! let a = AgentId::new("a").unwrap();
//! svc.clone().oneshot(Req(a.clone())).await.unwrap();
//! svc.clone().oneshot(Req(a.clone())).await.unwrap();
//! let err = svc.oneshot(Req(a)).await.unwrap_err();
//! assert!(err.downcast_ref::<RateLimited>().unwrap().retry_after().as_millis() > 0);
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod peer;
mod service;

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

pub use error::RateLimited;
pub use layer::RateLimitLayer;
pub use peer::{PeerRateLimit, PeerRateLimitLayer};
use sentra_core::AgentId;
pub use service::RateLimit;

/// Requests that name an (authenticated) agent.
pub trait AgentKeyed {
    /// The agent to charge.
    fn agent_id(&self) -> &AgentId;
}

impl AgentKeyed for sentra_core::Verified {
    fn agent_id(&self) -> &AgentId {
        Self::agent_id(self)
    }
}

/// How many requests one agent may make.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    per_second: f64,
    burst: u32,
    max_tracked_agents: usize,
}

impl Quota {
    /// A sustained rate of `per_second` requests (burst 1 until [`Quota::burst`]).
    #[must_use]
    pub fn per_second(per_second: f64) -> Self {
        Self {
            per_second: if per_second.is_finite() && per_second > 0.0 {
                per_second
            } else {
                f64::MIN_POSITIVE
            },
            burst: 1,
            max_tracked_agents: 100_000,
        }
    }

    /// Up to `burst` requests at once after a quiet period.
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// Evict idle agents' state beyond this many agents.
    #[must_use]
    pub fn max_tracked_agents(mut self, n: usize) -> Self {
        self.max_tracked_agents = n.max(1);
        self
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64((1.0 / self.per_second).min(86_400.0))
    }
}

/// Shared GCRA state: per key, the theoretical arrival time of the next request.
#[derive(Debug)]
pub(crate) struct Limiter<K = AgentId> {
    quota: Quota,
    interval: Duration,
    tolerance: Duration,
    tat: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(quota: Quota) -> Self {
        let interval = quota.interval();
        Self {
            quota,
            interval,
            tolerance: interval * (quota.burst - 1),
            tat: Mutex::new(HashMap::new()),
        }
    }

    /// Charges one request to `agent` at `now`; `Err(wait)` if over the limit.
    pub(crate) fn check(&self, agent: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self
            .tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.quota.max_tracked_agents && !map.contains_key(agent) {
            // Agents whose bucket is full again carry no state worth keeping.
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(agent).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        map.insert(agent.clone(), tat + self.interval);
        Ok(())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tat.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::BoxError;

    fn agent(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    #[test]
    fn gcra_burst_then_steady_rate() {
        let l = Limiter::new(Quota::per_second(10.0).burst(3));
        let t0 = Instant::now();
        let a = agent("a");
        for _ in 0..3 {
            l.check(&a, t0).unwrap();
        }
        let wait = l.check(&a, t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        l.check(&a, t0 + Duration::from_millis(100)).unwrap();
        assert!(l.check(&a, t0 + Duration::from_millis(100)).is_err());
        // Another agent has its own bucket.
        l.check(&agent("b"), t0).unwrap();
    }

    #[test]
    fn idle_agents_are_evicted() {
        let l = Limiter::new(Quota::per_second(1000.0).max_tracked_agents(2));
        let t0 = Instant::now();
        l.check(&agent("a"), t0).unwrap();
        l.check(&agent("b"), t0).unwrap();
        l.check(&agent("c"), t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(l.tracked(), 1);
    }

    #[tokio::test]
    async fn state_is_shared_across_services() {
        struct R(AgentId);
        impl AgentKeyed for R {
            fn agent_id(&self) -> &AgentId {
                &self.0
            }
        }
        let layer = RateLimitLayer::new(Quota::per_second(0.001).burst(2));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let inner = service_fn(move |_: R| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, BoxError>(()) }
        });
        let s1 = layer.layer(inner.clone());
        let s2 = layer.layer(inner);
        s1.clone().oneshot(R(agent("x"))).await.unwrap();
        s2.clone().oneshot(R(agent("x"))).await.unwrap();
        let err = s1.oneshot(R(agent("x"))).await.unwrap_err();
        assert!(err.is::<RateLimited>());
        s2.oneshot(R(agent("y"))).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
