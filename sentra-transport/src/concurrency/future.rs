//! Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use super::Overloaded;
use crate::BoxError;

pin_project! {
    /// Response future of [`ConcurrencyLimit`](super::ConcurrencyLimit): holds the permit
    /// until the inner future completes or is dropped.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(inner: F, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
        }
    }

    pub(crate) fn shed() -> Self {
        Self {
            inner: None,
            permit: None,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            None => Poll::Ready(Err(Box::new(Overloaded::new()))),
            Some(f) => match f.poll(cx) {
                Poll::Ready(r) => {
                    this.permit.take();
                    Poll::Ready(r.map_err(Into::into))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
