use std::{
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tower_layer::Layer;
use tower_service::Service;

use super::{Limiter, Quota, RateLimited, future::ResponseFuture};
use crate::{BoxError, server::PeerInfo};

/// Applies [`PeerRateLimit`]: a coarse limit per client IP address, before authentication.
/// Requests without a known peer address (in-process) are not limited.
#[derive(Clone, Debug)]
pub struct PeerRateLimitLayer {
    limiter: Arc<Limiter<IpAddr>>,
}

impl PeerRateLimitLayer {
    /// Limits each client address to `quota`.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(quota)),
        }
    }
}

impl<S> Layer<S> for PeerRateLimitLayer {
    type Service = PeerRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerRateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// Rejects requests from addresses over their quota. See [`PeerRateLimitLayer`].
#[derive(Clone, Debug)]
pub struct PeerRateLimit<S> {
    inner: S,
    limiter: Arc<Limiter<IpAddr>>,
}

impl<S, T> Service<tonic::Request<T>> for PeerRateLimit<S>
where
    S: Service<tonic::Request<T>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: tonic::Request<T>) -> Self::Future {
        let ip = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(PeerInfo::remote_addr)
            .map(|a| a.ip());
        if let Some(Err(wait)) = ip.map(|ip| self.limiter.check(&ip, Instant::now())) {
            return ResponseFuture::rejected(RateLimited::new(wait).into());
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use tower::{ServiceExt, service_fn};

    use super::*;

    #[tokio::test]
    async fn limits_per_address_and_skips_unknown_peers() {
        let svc = PeerRateLimitLayer::new(Quota::per_second(0.001).burst(1)).layer(service_fn(
            |_: tonic::Request<()>| async { Ok::<_, BoxError>(()) },
        ));
        let from = |ip: &str| {
            let mut r = tonic::Request::new(());
            r.extensions_mut().insert(PeerInfo {
                remote_addr: Some(format!("{ip}:1000").parse().unwrap()),
                client_cert: None,
            });
            r
        };
        svc.clone().oneshot(from("10.0.0.1")).await.unwrap();
        let err = svc.clone().oneshot(from("10.0.0.1")).await.unwrap_err();
        assert!(err.is::<RateLimited>());
        svc.clone().oneshot(from("10.0.0.2")).await.unwrap();
        // No PeerInfo (in-process): not limited.
        svc.clone().oneshot(tonic::Request::new(())).await.unwrap();
        svc.oneshot(tonic::Request::new(())).await.unwrap();
    }
}
