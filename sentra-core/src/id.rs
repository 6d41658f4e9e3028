use std::{fmt, str::FromStr};

use crate::{Error, Result};

/// An agent's identity: 1 to 64 bytes of `[a-z0-9-]`, not starting or ending with `-`.
///
/// The restricted alphabet keeps ids safe in file names, URLs, NATS subjects, metric labels
/// and log lines without escaping.
///
/// ```
/// use sentra_core::AgentId;
/// assert!(AgentId::new("edge-01").is_ok());
/// assert!(AgentId::new("Edge 01").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(String);

impl AgentId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps an agent id.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] naming the rule that was broken.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        Self::check(&id)?;
        Ok(Self(id))
    }

    fn check(id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::malformed("agent_id", "empty"));
        }
        if id.len() > Self::MAX_LEN {
            return Err(Error::malformed(
                "agent_id",
                format!("{} bytes, at most {} allowed", id.len(), Self::MAX_LEN),
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(Error::malformed(
                "agent_id",
                format!("character {c:?} not allowed (use a-z, 0-9 and -)"),
            ));
        }
        if id.starts_with('-') || id.ends_with('-') {
            return Err(Error::malformed(
                "agent_id",
                "must not start or end with '-'",
            ));
        }
        Ok(())
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id, returning the inner string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AgentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl AsRef<str> for AgentId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for AgentId {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Identifies one of an agent's signing keys, so keys can rotate with an overlap window.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyId(u32);

impl KeyId {
    /// Wraps a key id. Every `u32` is valid.
    #[must_use]
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The raw id.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A per-agent batch sequence number: strictly increasing, starting at 1.
///
/// Zero is reserved (it is the protobuf default, so it would hide a missing field).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Seq(u64);

impl Seq {
    /// The first sequence number an agent uses.
    pub const FIRST: Self = Self(1);

    /// Validates a sequence number.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for zero.
    pub fn new(seq: u64) -> Result<Self> {
        if seq == 0 {
            return Err(Error::malformed("seq", "must be at least 1"));
        }
        Ok(Self(seq))
    }

    /// The raw value.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next sequence number, or `None` at `u64::MAX`.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Wall-clock time as milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct UnixMillis(i64);

impl UnixMillis {
    /// Wraps a millisecond timestamp.
    #[must_use]
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// The current system time. Times before 1970 read as 0.
    #[must_use]
    pub fn now() -> Self {
        Self::from(std::time::SystemTime::now())
    }

    /// The raw milliseconds.
    #[must_use]
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + ms`, saturating.
    #[must_use]
    pub const fn saturating_add_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

impl From<std::time::SystemTime> for UnixMillis {
    fn from(t: std::time::SystemTime) -> Self {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self(ms)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_rules() {
        for ok in ["a", "edge-01", "0", &"a".repeat(64)] {
            assert!(AgentId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a b",
            "é",
            "a_b",
            "a.b",
            &"a".repeat(65),
            "a\0",
        ] {
            assert!(
                matches!(AgentId::new(bad), Err(Error::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn seq_zero_rejected_and_next_saturates() {
        assert!(Seq::new(0).is_err());
        assert_eq!(Seq::new(1).unwrap(), Seq::FIRST);
        assert_eq!(Seq::new(u64::MAX).unwrap().next(), None);
    }

    #[test]
    fn unix_millis_from_pre_epoch_is_zero() {
        let t = std::time::UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(UnixMillis::from(t).as_millis(), 0);
    }
}
