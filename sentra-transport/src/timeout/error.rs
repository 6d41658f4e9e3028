use std::fmt;

/// The request did not complete in time.
#[derive(Debug, Default)]
pub struct Elapsed(());

impl Elapsed {
    /// A new `Elapsed`.
    #[must_use]
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request timed out")
    }
}

impl std::error::Error for Elapsed {}
