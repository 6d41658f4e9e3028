use std::{fmt, sync::Arc};

use sentra_core::{Method, Verifier};
use tower_layer::Layer;

use super::{Auth, Clock};
use crate::rate_limit::SourceLimiter;

/// Applies [`Auth`]: verifies envelopes of one [`Method`] against a keyring.
pub struct AuthLayer<K: ?Sized> {
    pub(crate) keyring: Arc<K>,
    pub(crate) verifier: Verifier,
    pub(crate) method: Method,
    pub(crate) clock: Clock,
    pub(crate) require_client_cert: bool,
    pub(crate) source_limiter: Option<SourceLimiter>,
}

impl<K: ?Sized> Clone for AuthLayer<K> {
    fn clone(&self) -> Self {
        Self {
            keyring: self.keyring.clone(),
            verifier: self.verifier.clone(),
            method: self.method,
            clock: self.clock.clone(),
            require_client_cert: self.require_client_cert,
            source_limiter: self.source_limiter.clone(),
        }
    }
}

impl<K: ?Sized> fmt::Debug for AuthLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("verifier", &self.verifier)
            .field("method", &self.method)
            .field("require_client_cert", &self.require_client_cert)
            .field("source_limiter", &self.source_limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: ?Sized> AuthLayer<K> {
    /// Verifies envelopes signed for `method` against `keyring`, with the default
    /// [`Verifier`] (±300 s skew, 4 MiB payloads) and the system clock.
    pub fn new(keyring: Arc<K>, method: Method) -> Self {
        Self {
            keyring,
            verifier: Verifier::new(),
            method,
            clock: Arc::new(super::system_clock),
            require_client_cert: false,
            source_limiter: None,
        }
    }

    /// Replaces the verifier (skew window, payload limit).
    #[must_use]
    pub fn verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = verifier;
        self
    }

    /// Replaces the clock.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Refuse requests whose connection presented no client certificate.
    #[must_use]
    pub fn require_client_cert(mut self, require: bool) -> Self {
        self.require_client_cert = require;
        self
    }

    /// Charges failed authentications to the client's address and connection, and refuses
    /// sources over their failure budget before verifying (see [`SourceLimiter`]).
    #[must_use]
    pub fn source_limiter(mut self, limiter: SourceLimiter) -> Self {
        self.source_limiter = Some(limiter);
        self
    }
}

impl<S, K: ?Sized> Layer<S> for AuthLayer<K> {
    type Service = Auth<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            config: self.clone(),
        }
    }
}
