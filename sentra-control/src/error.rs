use std::path::PathBuf;

/// A boxed error, as `tower` services return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every error of `sentra-control` (and of `sentra-api`, which re-exports it).
///
/// The `Display` text is for operators and logs. It never contains a password, a bootstrap
/// token, an agent secret or a JWT. The HTTP layer maps each variant to a status code and a
/// JSON body `{"error": {"code": "...", "message": "..."}}`; for [`Error::Database`],
/// [`Error::Io`] and [`Error::Internal`] the client only sees a generic message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request or argument is malformed or breaks a rule (HTTP 400).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, e.g. `"password"` or `"peers[1].allowed_ips[0]"`.
        field: String,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
    /// No credentials, or credentials that do not verify (HTTP 401). Deliberately vague.
    #[error("authentication required or failed")]
    Unauthenticated,
    /// A bootstrap token that is unknown, expired or already used (HTTP 401).
    #[error("bootstrap token is invalid, expired or already used")]
    InvalidBootstrapToken,
    /// The caller is authenticated but its role does not allow the operation (HTTP 403).
    #[error("this operation needs the {needed} role")]
    Forbidden {
        /// The role the operation needs.
        needed: &'static str,
    },
    /// The named object does not exist (HTTP 404).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What kind of object (`"agent"`, `"user"`, …).
        kind: &'static str,
        /// Its identifier.
        id: String,
    },
    /// The operation conflicts with the current state (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too many failed attempts from this client or for this account (HTTP 429).
    #[error("too many attempts, retry in {retry_after_s} s")]
    RateLimited {
        /// Seconds until the next attempt is accepted.
        retry_after_s: u64,
    },
    /// A signed agent request whose clock is too far from the server's (HTTP 401).
    #[error("clock skew too large; server time is {server_time_ms} ms")]
    ClockSkew {
        /// Server wall clock, Unix milliseconds, so the agent can correct its offset.
        server_time_ms: i64,
    },
    /// The server is overloaded (password hashing queue full) (HTTP 503).
    #[error("temporarily unavailable: {0}")]
    Unavailable(&'static str),
    /// The control database failed.
    #[error("control database error: {0}")]
    Database(#[source] BoxError),
    /// A file in the data directory could not be read or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another store holds the data directory's lock
    /// ([`StoreOptions::lock_data_dir`](crate::StoreOptions::lock_data_dir)).
    #[error(
        "data directory {} is in use by {holder}: only one server may use a data directory \
         at a time (lock file {}); stop the other one or use a different directory",
        path.display(),
        path.join(crate::backend::CONTROL_LOCK_FILE).display()
    )]
    DataDirInUse {
        /// The directory.
        path: PathBuf,
        /// Who holds it: `another process (pid N)` when known.
        holder: String,
    },
    /// A bug or an impossible state; details are logged, not sent to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`] of `kind` `id`.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// An [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A short, stable machine-readable code (the `code` of the JSON error body).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_request",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidBootstrapToken => "invalid_bootstrap_token",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::Conflict(_) => "conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::ClockSkew { .. } => "clock_skew",
            Self::Unavailable(_) => "unavailable",
            Self::Database(_) | Self::Io { .. } | Self::DataDirInUse { .. } | Self::Internal(_) => {
                "internal"
            }
        }
    }

    /// The audit outcome recorded for a failed mutation (`"not_found"`, `"conflict"`,
    /// `"invalid"`, `"forbidden"`, `"denied"` or `"error"`).
    #[must_use]
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Invalid { .. } => "invalid",
            Self::Forbidden { .. } => "forbidden",
            Self::Unauthenticated | Self::InvalidBootstrapToken | Self::ClockSkew { .. } => {
                "denied"
            }
            _ => "error",
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[doc(hidden)]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Box::new(e))
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[doc(hidden)]
impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Database(Box::new(e))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
