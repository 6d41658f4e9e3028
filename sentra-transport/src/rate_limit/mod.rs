//! Per-agent rate limit keyed by the *authenticated* agent id (so it sits after
//! [`auth`](crate::auth)): a GCRA token bucket per agent, shared by every service the layer
//! builds. Over the limit, requests fail at once with [`RateLimited`] (`RESOURCE_EXHAUSTED`,
//! reason `RATE_LIMITED`, `sentra-retry-after-ms`). Only envelopes whose MAC verified are
//! charged to an agent: a forged envelope that claims an agent's id never uses up that
//! agent's budget.
//!
//! Failed authentications are charged to their *source* instead, by [`SourceLimiter`]
//! (used by the auth layer): a budget per client address (IPv6 per /64) and per connection.
//! Past it, the source's requests are refused before any MAC work with [`SourceLimited`],
//! except on connections that already carried an authenticated request, so valid agents
//! behind the same NAT keep working while a forger there is limited.
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
mod service;
mod source;

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

pub use error::{RateLimited, SourceLimited};
pub use layer::RateLimitLayer;
use sentra_core::AgentId;
pub use service::RateLimit;
pub(crate) use source::ConnState;
pub use source::{SourceLimiter, source_key};

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

    fn gcra(&self) -> Gcra {
        let interval = self.interval();
        Gcra {
            interval,
            tolerance: interval * (self.burst - 1),
        }
    }
}

/// GCRA arithmetic on one bucket's theoretical arrival time (`tat`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gcra {
    interval: Duration,
    tolerance: Duration,
}

impl Gcra {
    /// `Some(wait)` if a request at `now` does not fit the bucket.
    fn over(self, tat: Option<Instant>, now: Instant) -> Option<Duration> {
        let ahead = tat?.max(now) - now;
        (ahead > self.tolerance).then(|| ahead - self.tolerance)
    }

    /// The bucket after giving back one charge made earlier (`None`: full again).
    fn refunded(self, tat: Option<Instant>, now: Instant) -> Option<Instant> {
        tat?.checked_sub(self.interval).filter(|t| *t > now)
    }

    /// Charges one request at `now` if it fits: the new `tat`, or `Err(wait)`.
    fn try_charge(self, tat: Option<Instant>, now: Instant) -> Result<Instant, Duration> {
        match self.over(tat, now) {
            Some(wait) => Err(wait),
            None => Ok(self.charged(tat, now)),
        }
    }

    /// The bucket after charging one request at `now` (charges beyond a full bucket are not
    /// carried, so a flood does not push the refill ever further out).
    fn charged(self, tat: Option<Instant>, now: Instant) -> Instant {
        let base = tat.unwrap_or(now).max(now);
        (base + self.interval).min(now + self.tolerance + self.interval)
    }
}

/// Shared GCRA state: per key, the theoretical arrival time of the next request.
#[derive(Debug)]
pub(crate) struct Limiter<K = AgentId> {
    quota: Quota,
    gcra: Gcra,
    tat: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(quota: Quota) -> Self {
        Self {
            quota,
            gcra: quota.gcra(),
            tat: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.tat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes room for a new key: drops the keys whose bucket is full again, and if every
    /// tracked key is still active, an arbitrary one (memory stays bounded).
    fn make_room(&self, map: &mut HashMap<K, Instant>, key: &K, now: Instant) {
        if map.len() >= self.quota.max_tracked_agents && !map.contains_key(key) {
            map.retain(|_, tat| *tat > now);
            if map.len() >= self.quota.max_tracked_agents
                && let Some(k) = map.keys().next().cloned()
            {
                map.remove(&k);
            }
        }
    }

    /// Charges one request to `agent` at `now`; `Err(wait)` if over the limit.
    pub(crate) fn check(&self, agent: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.map();
        self.check_locked(&mut map, agent, now)
    }

    /// [`Limiter::check`] at the current time, read under the lock. A time read before
    /// taking the lock can be stale by a preemption or a wait for the lock; a later request
    /// may meanwhile have moved the bucket past it, and the stale one would be refused
    /// although the quota has room (with a generous quota the burst tolerance is short:
    /// 1 ms at 10^9/s, burst 10^6).
    pub(crate) fn check_now(&self, agent: &K) -> Result<(), Duration> {
        let mut map = self.map();
        self.check_locked(&mut map, agent, Instant::now())
    }

    fn check_locked(
        &self,
        map: &mut HashMap<K, Instant>,
        agent: &K,
        now: Instant,
    ) -> Result<(), Duration> {
        let tat = self.gcra.try_charge(map.get(agent).copied(), now)?;
        self.make_room(map, agent, now);
        map.insert(agent.clone(), tat);
        Ok(())
    }

    /// Gives back one charge of `key` made by [`Limiter::check`].
    pub(crate) fn refund(&self, key: &K, now: Instant) {
        let mut map = self.map();
        if let Some(tat) = map.get_mut(key) {
            match self.gcra.refunded(Some(*tat), now) {
                Some(t) => *tat = t,
                None => {
                    map.remove(key);
                }
            }
        }
    }

    /// Charges one request to `key` at `now`, whether or not it was over the limit.
    pub(crate) fn charge(&self, key: &K, now: Instant) {
        let mut map = self.map();
        let tat = map.get(key).copied();
        self.make_room(&mut map, key, now);
        map.insert(key.clone(), self.gcra.charged(tat, now));
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.map().len()
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
    fn a_time_read_before_a_later_charge_is_refused_so_the_service_reads_it_under_the_lock() {
        // 1 000/s, burst 1: the tolerance is 0, as short as a huge quota's is relative to
        // scheduling delays.
        let l = Limiter::new(Quota::per_second(1000.0));
        let a = agent("a");
        let stale = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        // another request, with a fresher clock, gets the lock first
        assert!(l.check_now(&a).is_ok());
        // the one whose time was read earlier is judged in the past: refused
        assert!(l.check(&a, stale).is_err());
        // read under the lock, the same late request is judged at its real time
        std::thread::sleep(Duration::from_millis(2));
        assert!(l.check_now(&a).is_ok());
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
