use std::fmt;

/// The global concurrency limit is reached; the request was shed.
#[derive(Debug, Default)]
pub struct Overloaded(());

impl Overloaded {
    /// A new `Overloaded`.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server overloaded: concurrency limit reached")
    }
}

impl std::error::Error for Overloaded {}
