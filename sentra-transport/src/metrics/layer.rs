use tower_layer::Layer;

use super::{Metrics, MetricsService};

/// Applies [`MetricsService`], recording into a shared [`Metrics`] under a method label.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
    method: &'static str,
}

impl MetricsLayer {
    /// Records into `metrics` with label `method="{method}"`.
    #[must_use]
    pub fn new(metrics: Metrics, method: &'static str) -> Self {
        Self { metrics, method }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            method: self.method,
        }
    }
}
