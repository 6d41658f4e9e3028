use std::path::PathBuf;

/// Every error of the agent library.
///
/// The `Display` text is for operators; it never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (bad value, unparsable file, missing setting).
    #[error("configuration: {0}")]
    Config(String),
    /// Reading or writing a file of the agent's state failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`"read"`, `"write"`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is missing or invalid.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The agent has no credentials and none were given: it must be enrolled first.
    #[error(
        "no credentials at {}: enrol first with `sentra-agent enroll --server-api URL --token TOKEN`",
        path.display()
    )]
    NotEnrolled {
        /// Where the credentials file was expected.
        path: PathBuf,
    },
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] sentra_wal::Error),
    /// A wire or domain type was rejected.
    #[error(transparent)]
    Core(#[from] sentra_core::Error),
    /// Talking to the server's REST API failed.
    #[error("server API: {0}")]
    Api(String),
    /// Talking to the server's gRPC ingest endpoint failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A background task of the runtime panicked or was cancelled.
    #[error("agent task failed: {0}")]
    Task(String),
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
