use std::fmt;

/// The payload is larger than the configured cap.
#[derive(Debug)]
pub struct PayloadTooLarge {
    len: usize,
    limit: usize,
}

impl PayloadTooLarge {
    /// A payload of `len` bytes against a cap of `limit`.
    #[must_use]
    pub const fn new(len: usize, limit: usize) -> Self {
        Self { len, limit }
    }

    /// The payload size.
    #[must_use]
    pub const fn payload_len(&self) -> usize {
        self.len
    }

    /// The cap.
    #[must_use]
    pub const fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "payload of {} bytes exceeds the limit of {} bytes",
            self.len, self.limit
        )
    }
}

impl std::error::Error for PayloadTooLarge {}
