use std::{
    task::{Context, Poll},
    time::Instant,
};

use tower_service::Service;

use super::{Metrics, Outcome, future::ResponseFuture};
use crate::BoxError;

/// Records count and latency of each request. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    pub(crate) inner: S,
    pub(crate) metrics: Metrics,
    pub(crate) method: &'static str,
}

impl<S, R> Service<R> for MetricsService<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    S::Response: Outcome,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        ResponseFuture::new(
            self.inner.call(req),
            self.metrics.clone(),
            self.method,
            Instant::now(),
        )
    }
}
