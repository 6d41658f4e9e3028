use std::task::{Context, Poll};

use tower_service::Service;

use super::{PayloadLen, PayloadTooLarge, future::ResponseFuture};
use crate::BoxError;

/// Rejects requests whose payload exceeds a cap. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct RequestSizeLimit<S> {
    inner: S,
    max_payload: usize,
}

impl<S> RequestSizeLimit<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S, max_payload: usize) -> Self {
        Self { inner, max_payload }
    }
}

impl<S, R> Service<R> for RequestSizeLimit<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: PayloadLen,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let len = req.payload_len();
        if len > self.max_payload {
            return ResponseFuture::rejected(PayloadTooLarge::new(len, self.max_payload).into());
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}
