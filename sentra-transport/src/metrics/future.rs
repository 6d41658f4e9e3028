//! Response future of [`MetricsService`](super::MetricsService).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use pin_project_lite::pin_project;

use super::{Metrics, Outcome};
use crate::{BoxError, status};

pin_project! {
    /// Response future of [`MetricsService`](super::MetricsService).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        metrics: Metrics,
        method: &'static str,
        start: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, metrics: Metrics, method: &'static str, start: Instant) -> Self {
        Self {
            inner,
            metrics,
            method,
            start,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    T: Outcome,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.inner.poll(cx) {
            Poll::Ready(r) => r.map_err(Into::into),
            Poll::Pending => return Poll::Pending,
        };
        let outcome = match &out {
            Ok(r) => r.outcome(),
            Err(e) => status::code_label(status::code_of(&**e)),
        };
        this.metrics
            .record(this.method, outcome, this.start.elapsed());
        Poll::Ready(out)
    }
}
