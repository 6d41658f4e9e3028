use std::{fmt, time::Duration};

/// Implements `Display` ("`$what`; retry after N ms") and `Error` for a refusal type with a
/// `retry_after: Duration` field.
macro_rules! retry_after_error {
    ($ty:ident, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!($what, "; retry after {} ms"),
                    self.retry_after.as_millis()
                )
            }
        }

        impl std::error::Error for $ty {}
    };
}

/// The agent exceeded its rate limit.
#[derive(Debug)]
pub struct RateLimited {
    retry_after: Duration,
}

impl RateLimited {
    /// Over the limit; the next request can pass after `retry_after`.
    #[must_use]
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until the agent may send again.
    #[must_use]
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

retry_after_error!(RateLimited, "rate limited");

/// The client's address (or connection) used up its budget of failed authentications;
/// refused before any verification work.
#[derive(Debug)]
pub struct SourceLimited {
    retry_after: Duration,
}

impl SourceLimited {
    /// Over the failure budget; the next attempt can pass after `retry_after`.
    #[must_use]
    pub const fn new(retry_after: Duration) -> Self {
        Self { retry_after }
    }

    /// How long until the source may try again.
    #[must_use]
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

retry_after_error!(
    SourceLimited,
    "too many failed authentications from this address"
);
