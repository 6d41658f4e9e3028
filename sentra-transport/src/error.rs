use std::{fmt, path::PathBuf, time::Duration};

use sentra_core::{UnixMillis, proto::RejectReason};
use tonic::{Code, Status};

use crate::{BoxError, status};

/// Errors of `sentra-transport` itself: configuration, TLS material, serving, and failed
/// calls of the `Client`.
///
/// No variant carries a dependency's error type as its payload (a tonic or rustls upgrade
/// does not change this enum): their errors are kept as the boxed
/// [`source`](std::error::Error::source), and a failed call's gRPC status is wrapped in
/// [`RpcError`].
///
/// Middleware errors travel as [`BoxError`] holding a small struct of the layer's module
/// (tower convention, e.g. `auth::AuthError`); the server maps them to a gRPC status with
/// [`status::to_status`](crate::status::to_status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint URI is not `http://host:port` or `https://host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate, key or CA file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PEM input holds no usable item of the expected kind, or does not parse.
    #[error("invalid PEM {what}: {reason}")]
    Pem {
        /// What was expected (`"certificate"`, `"private key"`).
        what: &'static str,
        /// Why it was rejected (never the key bytes).
        reason: String,
    },
    /// rustls rejected the TLS configuration (the source is rustls' error).
    #[error("TLS configuration: {0}")]
    Tls(#[source] BoxError),
    /// The client certificate verifier could not be built, e.g. an empty CA set (the source
    /// is rustls' error).
    #[error("client certificate verifier: {0}")]
    ClientVerifier(#[source] BoxError),
    /// tonic's transport failed: channel construction, or the server's connection handling
    /// (the source is tonic's error).
    #[error("transport: {0}")]
    Transport(#[source] BoxError),
    /// Binding or accepting on the listener failed.
    #[error("listener: {0}")]
    Listen(#[source] std::io::Error),
    /// A call returned a gRPC status (from the server, the connection, or the client's own
    /// deadline). See [`Error::is_retryable`], [`Error::reject_reason`].
    #[error("rpc failed: {0}")]
    Rpc(RpcError),
    /// A client middleware layer failed with an error that is not a status.
    #[error("client middleware: {0}")]
    Middleware(#[source] BoxError),
}

/// A failed call's gRPC status, as carried by [`Error::Rpc`].
#[derive(Clone)]
pub struct RpcError(Box<Status>);

impl RpcError {
    /// The status the call ended with.
    #[must_use]
    pub fn status(&self) -> &Status {
        &self.0
    }

    /// Its code.
    #[must_use]
    pub fn code(&self) -> Code {
        self.0.code()
    }

    /// Its message (the server's text, or the client's for local failures).
    #[must_use]
    pub fn message(&self) -> &str {
        self.0.message()
    }
}

impl From<Status> for RpcError {
    fn from(s: Status) -> Self {
        Self(Box::new(s))
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcError")
            .field("code", &self.code())
            .field("message", &self.message())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code(), self.message())
    }
}

impl std::error::Error for RpcError {}

impl Error {
    /// Classifies an error from the client's service stack.
    #[cfg(feature = "client")]
    pub(crate) fn from_call(err: BoxError) -> Self {
        match status::try_to_status(err) {
            Ok(s) => Self::Rpc(s.into()),
            Err(e) => Self::Middleware(e),
        }
    }

    #[cfg(feature = "server")]
    pub(crate) fn tls(e: rustls::Error) -> Self {
        Self::Tls(Box::new(e))
    }

    #[cfg(any(feature = "client", feature = "server"))]
    pub(crate) fn transport(e: tonic::transport::Error) -> Self {
        Self::Transport(Box::new(e))
    }

    /// The gRPC status of a failed call.
    #[must_use]
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Rpc(s) => Some(s.status()),
            _ => None,
        }
    }

    /// The gRPC code of a failed call.
    #[must_use]
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// Whether sending the same envelope again can succeed (overload, rate limit, storage
    /// or connection trouble, deadline). Safe for pushes: the server absorbs duplicates by
    /// `seq`. See [`status::is_retryable`].
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.code().is_some_and(status::is_retryable)
    }

    /// The machine-readable reason from `sentra-reject-reason`, if the server gave one.
    #[must_use]
    pub fn reject_reason(&self) -> Option<RejectReason> {
        self.status().and_then(status::reject_reason)
    }

    /// The server's clock from `sentra-server-time-ms` (sent with clock-skew rejections).
    #[must_use]
    pub fn server_time(&self) -> Option<UnixMillis> {
        self.status().and_then(status::server_time)
    }

    /// How long the server asked the client to wait (`sentra-retry-after-ms`).
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.status().and_then(status::retry_after)
    }
}
