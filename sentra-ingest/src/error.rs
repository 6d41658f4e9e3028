use std::fmt;

/// A boxed error, the error type of the ingest [`Service`](tower_service::Service).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every error of `sentra-ingest`.
///
/// Storage failures keep their cause as an opaque [`source`](std::error::Error::source):
/// the database library is not part of this crate's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed (I/O, corruption, full disk, …). Retryable from the agent's view.
    #[error("storage error while {context}")]
    Storage {
        /// What the store was doing.
        context: &'static str,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },
    /// Creating the data directory failed.
    #[error("cannot create data directory {path}")]
    DataDir {
        /// The directory.
        path: String,
        /// The underlying cause.
        #[source]
        source: std::io::Error,
    },
    /// Another pipeline (in this or another process) has the data directory open.
    #[error(
        "data directory {path} is in use by {holder}: only one pipeline may use a data \
         directory at a time; stop the other one or use a different directory"
    )]
    DataDirInUse {
        /// The directory.
        path: String,
        /// Who holds it (`another process (pid N)` when known).
        holder: String,
    },
    /// The pipeline has been shut down; nothing was stored.
    #[error("ingest pipeline is shut down")]
    Closed,
    /// A query parameter is invalid (bad label filter, empty or inverted range, step 0, …).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A query would touch more series than allowed.
    #[error("query matches more than {limit} series")]
    TooManySeries {
        /// The configured limit.
        limit: usize,
    },
    /// A query would return (or read) more points than allowed.
    #[error("query needs {requested} points, more than the limit of {limit}")]
    TooManyPoints {
        /// Points the query would need (a lower bound when counting stopped early).
        requested: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The message bus (NATS JetStream) failed or is unreachable: nothing was put on it;
    /// retryable from the agent's view (`UNAVAILABLE`: the agent keeps the batch in its
    /// WAL). Never carries credentials.
    #[error("message bus error while {context}")]
    Bus {
        /// What the bus client was doing.
        context: &'static str,
        /// The underlying cause.
        #[source]
        source: BoxError,
    },
    /// This pipeline only reads the metric store (a bus follower: an API server of a
    /// scale-out deployment, whose storage workers write): it cannot delete, reset or flush.
    /// Nothing was changed.
    #[error(
        "this server only reads the metrics store (a bus follower, `--role api`): the storage \
         workers write it, so it cannot {0}; nothing was changed"
    )]
    ReadOnly(&'static str),
    /// The named agent is unknown to the store.
    #[error("unknown agent {0}")]
    UnknownAgent(String),
}

impl Error {
    /// Wraps a backend's error, or one already boxed (no database type in the public API).
    pub(crate) fn storage<E>(context: &'static str) -> impl FnOnce(E) -> Self
    where
        E: Into<BoxError>,
    {
        move |e| Self::Storage {
            context,
            source: e.into(),
        }
    }

    pub(crate) fn invalid(msg: impl fmt::Display) -> Self {
        Self::InvalidQuery(msg.to_string())
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
