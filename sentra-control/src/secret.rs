//! Secret-holding types: redacted `Debug`, zeroed on drop, explicit access.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A password as typed by a user. `Debug` is redacted; the text is zeroed on drop.
///
/// Deserializes from a JSON string (login and user-creation bodies); it never serializes.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Shortest accepted password, in characters (OWASP ASVS 6.2.1).
    pub const MIN_CHARS: usize = 8;
    /// Longest accepted password, in characters (ASVS 6.2.9 asks for at least 64).
    pub const MAX_CHARS: usize = 128;

    /// Wraps a password.
    #[must_use]
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    /// The password text. Every call site is a place it can leak: keep them few.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Checks the length policy for a new password (no composition rules, ASVS 6.2.5).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) outside 8–128 characters.
    pub fn check_policy(&self) -> crate::Result<()> {
        let n = self.0.chars().count();
        if n < Self::MIN_CHARS {
            return Err(crate::Error::invalid(
                "password",
                format!("at least {} characters required", Self::MIN_CHARS),
            ));
        }
        if n > Self::MAX_CHARS {
            return Err(crate::Error::invalid(
                "password",
                format!("at most {} characters allowed", Self::MAX_CHARS),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(redacted)")
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// A secret string handed out exactly once (a bootstrap token, a base64 agent key, a JWT).
///
/// `Debug` is redacted and the text is zeroed on drop. It serializes to its plain text,
/// because its one purpose is to be sent to the client that is entitled to it.
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret text.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(redacted)")
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::new("hunter2-canary");
        let s = SecretString::new("tok-canary");
        let dbg = format!("{p:?} {s:?}");
        assert!(!dbg.contains("canary"), "{dbg}");
    }

    #[test]
    fn password_policy() {
        assert!(Password::new("short").check_policy().is_err());
        assert!(Password::new("long enough").check_policy().is_ok());
        assert!(Password::new("x".repeat(129)).check_policy().is_err());
        let err = Password::new("seven77")
            .check_policy()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("seven77"), "{err}");
    }
}
