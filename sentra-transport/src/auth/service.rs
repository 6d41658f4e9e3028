use std::{
    fmt,
    task::{Context, Poll},
    time::Instant,
};

use sentra_core::{Keyring, Verified, proto::SignedBatch};
use tower_service::Service;

use super::{AuthError, AuthLayer, future::ResponseFuture};
use crate::{BoxError, rate_limit::SourceLimiter, server::PeerInfo};

/// Verifies signed envelopes and passes [`Verified`] ones on. See the [module docs](super).
pub struct Auth<S, K: ?Sized> {
    pub(crate) inner: S,
    pub(crate) config: AuthLayer<K>,
}

impl<S: Clone, K: ?Sized> Clone for Auth<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, K: ?Sized> fmt::Debug for Auth<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, K> Service<tonic::Request<SignedBatch>> for Auth<S, K>
where
    S: Service<Verified>,
    S::Error: Into<BoxError>,
    K: Keyring + ?Sized,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: tonic::Request<SignedBatch>) -> Self::Future {
        let cfg = &self.config;
        let peer = req.extensions().get::<PeerInfo>();
        let client_cert = peer.and_then(|p| p.client_cert().cloned());
        let source = cfg
            .source_limiter
            .as_ref()
            .and_then(|limiter| Some((limiter, SourceLimiter::source(peer?)?)));
        let now = (cfg.clock)();
        let admitted = match &source {
            Some((limiter, src)) => match limiter.admit(src, Instant::now()) {
                Ok(a) => Some((*limiter, src, a)),
                Err(e) => {
                    tracing::debug!(error = %e, "request refused before verification");
                    return ResponseFuture::rejected(e.into());
                }
            },
            None => None,
        };
        let envelope = req.into_inner();
        let failed = || {
            if let Some((limiter, src, a)) = admitted {
                limiter.failed(src, a);
            }
        };
        let verified = match cfg
            .verifier
            .verify(&envelope, cfg.method, now, &*cfg.keyring)
        {
            Ok(v) => v,
            Err(e) => {
                failed();
                let shown: String = envelope.agent_id.chars().take(64).collect();
                tracing::debug!(agent_id = %shown, reason = ?e.reject_reason(), error = %e, "envelope rejected");
                return ResponseFuture::rejected(AuthError::verify(e, now).into());
            }
        };
        let bound = match &client_cert {
            Some(cert) => super::cert_matches_agent(cert, verified.agent_id()),
            None => !cfg.require_client_cert,
        };
        if !bound {
            failed();
            tracing::debug!(agent_id = %verified.agent_id(), "client certificate does not match agent");
            return ResponseFuture::rejected(AuthError::identity_mismatch(now).into());
        }
        if let Some((limiter, src, a)) = admitted {
            limiter.succeeded(src, a);
        }
        ResponseFuture::inner(self.inner.call(verified))
    }
}
