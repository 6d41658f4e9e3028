use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower_service::Service;

use super::{AgentKeyed, Limiter, RateLimited, future::ResponseFuture};
use crate::BoxError;

/// Rejects requests of agents over their quota. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    pub(crate) inner: S,
    pub(crate) limiter: Arc<Limiter>,
}

impl<S, R> Service<R> for RateLimit<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: AgentKeyed,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        match self.limiter.check_now(req.agent_id()) {
            Ok(()) => ResponseFuture::inner(self.inner.call(req)),
            Err(wait) => ResponseFuture::rejected(RateLimited::new(wait).into()),
        }
    }
}
