use std::{
    task::{Context, Poll},
    time::Duration,
};

use tower_service::Service;

use super::future::ResponseFuture;
use crate::BoxError;

/// Fails requests that take longer than a fixed duration. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), tokio::time::sleep(self.timeout))
    }
}
