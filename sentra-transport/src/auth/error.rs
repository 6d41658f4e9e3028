use std::fmt;

use sentra_core::UnixMillis;

/// Authentication failed. Downcast a [`BoxError`](crate::BoxError) to this type.
#[derive(Debug)]
pub struct AuthError {
    core: Option<sentra_core::Error>,
    server_time: UnixMillis,
}

impl AuthError {
    pub(crate) fn verify(core: sentra_core::Error, server_time: UnixMillis) -> Self {
        Self {
            core: Some(core),
            server_time,
        }
    }

    pub(crate) fn identity_mismatch(server_time: UnixMillis) -> Self {
        Self {
            core: None,
            server_time,
        }
    }

    /// The verification error, or `None` for a client certificate mismatch.
    #[must_use]
    pub fn verify_error(&self) -> Option<&sentra_core::Error> {
        self.core.as_ref()
    }

    pub(crate) fn core(&self) -> &sentra_core::Error {
        // Only called when not an identity mismatch.
        self.core.as_ref().unwrap_or(&sentra_core::Error::BadTag)
    }

    /// Whether the client certificate did not match the envelope's agent (or was required
    /// and absent).
    #[must_use]
    pub fn is_identity_mismatch(&self) -> bool {
        self.core.is_none()
    }

    /// The server time used for verification (sent back on clock-skew rejections).
    #[must_use]
    pub fn server_time(&self) -> UnixMillis {
        self.server_time
    }

    /// The wire reason.
    #[must_use]
    pub fn reject_reason(&self) -> sentra_core::proto::RejectReason {
        self.core
            .as_ref()
            .map_or(sentra_core::proto::RejectReason::Unauthenticated, |e| {
                e.reject_reason()
            })
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.core {
            Some(e) => write!(f, "authentication failed: {e}"),
            None => {
                f.write_str("authentication failed: client certificate does not match the agent")
            }
        }
    }
}

impl std::error::Error for AuthError {}
