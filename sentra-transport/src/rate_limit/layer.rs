use std::sync::Arc;

use tower_layer::Layer;

use super::{Limiter, Quota, RateLimit};

/// Applies [`RateLimit`]; every service built from this layer (or a clone) shares the
/// per-agent state.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    /// Limits each agent to `quota`.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(quota)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}
