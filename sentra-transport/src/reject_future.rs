//! The response future shared by the layers that either forward a request or reject it up
//! front (auth, rate limit, size limit): one type, re-exported as each layer's
//! `future::ResponseFuture` (the tower-http module layout stays).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// Response future of a layer that forwards to its inner service or rejects at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        error: Option<BoxError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(inner: F) -> Self {
        Self {
            inner: Some(inner),
            error: None,
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            inner: None,
            error: Some(error),
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
            Some(f) => f.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(this
                .error
                .take()
                .unwrap_or_else(|| "response future polled after completion".into()))),
        }
    }
}
