use std::sync::Arc;

use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::ConcurrencyLimit;

/// Builds [`ConcurrencyLimit`] services that all share one limit.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight across every service this layer (or a clone) builds.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Requests in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    /// The configured limit.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, self.semaphore.clone())
    }
}
