use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;
use tower_service::Service;

use super::future::ResponseFuture;
use crate::BoxError;

/// Sheds requests beyond a shared concurrency limit. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
}

impl<S> ConcurrencyLimit<S> {
    /// Wraps `inner`, sharing `semaphore` with every other service built on it.
    pub const fn new(inner: S, semaphore: Arc<Semaphore>) -> Self {
        Self { inner, semaphore }
    }
}

impl<S, R> Service<R> for ConcurrencyLimit<S>
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
        match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture::running(self.inner.call(req), permit),
            Err(_) => ResponseFuture::shed(),
        }
    }
}
