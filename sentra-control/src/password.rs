//! Roles and password hashing (argon2id).

use std::{fmt, sync::Arc, time::Duration};

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::{Error, Password, Result, util};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// May read and change everything.
    Admin,
    /// May read status, metrics, agents and desired state; may change nothing.
    Viewer,
}

impl Role {
    /// `"admin"` or `"viewer"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }

    /// Parses `"admin"` or `"viewer"`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(Self::Admin),
            "viewer" => Ok(Self::Viewer),
            _ => Err(Error::invalid("role", "must be \"admin\" or \"viewer\"")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Argon2id cost parameters.
///
/// The default is the OWASP minimum, identical to RustCrypto `argon2`'s defaults:
/// 19 MiB memory, 2 iterations, 1 lane. Lower it only in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordCost {
    /// Memory in KiB (not MiB: `19 * 1024` is 19 MiB).
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
        }
    }
}

impl PasswordCost {
    /// A deliberately weak cost for unit and integration tests (256 KiB, 1 iteration).
    /// Never use it for real users.
    #[must_use]
    pub const fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// Hashes and verifies passwords off the async runtime, a few at a time.
#[derive(Clone)]
pub(crate) struct PasswordHasher {
    params: argon2::Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when a user does not exist so that
    /// unknown and known users cost the same.
    dummy: Arc<str>,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// How long a login waits for a hashing slot before answering 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(10);

impl PasswordHasher {
    pub(crate) fn new(cost: PasswordCost, concurrency: usize) -> Result<Self> {
        let params = argon2::Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| Error::invalid("password_cost", e.to_string()))?;
        let mut random = Zeroizing::new([0u8; 32]);
        util::fill_random(&mut random[..])?;
        let dummy_pw = Password::new(util::b64url(&random[..]));
        let dummy = hash_blocking(&params, &dummy_pw)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: dummy.into(),
        })
    }

    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(HASH_QUEUE_WAIT, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| Error::Unavailable("password hashing queue is full"))?
            .map_err(|_| Error::Internal("hashing semaphore closed".into()))
    }

    /// Hashes a new password into a PHC string.
    pub(crate) async fn hash(&self, password: Password) -> Result<String> {
        let _permit = self.permit().await?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &password))
            .await
            .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
    }

    /// Verifies `password` against `phc`, or against a dummy hash when `phc` is `None`
    /// (unknown user), so both paths take about the same time. Returns whether it matched
    /// (always `false` for `None`).
    pub(crate) async fn verify(&self, password: Password, phc: Option<String>) -> Result<bool> {
        let _permit = self.permit().await?;
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?;
        Ok(known && ok)
    }
}

fn hash_blocking(params: &argon2::Params, password: &Password) -> Result<String> {
    let mut salt = [0u8; 16];
    util::fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    )
    .hash_password(password.expose_secret().as_bytes(), &salt)
    .map(|h| h.to_string())
    .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = PasswordHasher::new(PasswordCost::insecure_for_tests(), 2).unwrap();
        let phc = h.hash(Password::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(
            h.verify(Password::new("correct horse"), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !h.verify(Password::new("wrong horse"), Some(phc))
                .await
                .unwrap()
        );
        assert!(
            !h.verify(Password::new("correct horse"), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn default_cost_is_owasp() {
        let c = PasswordCost::default();
        assert_eq!(
            (c.memory_kib, c.iterations, c.parallelism),
            (19 * 1024, 2, 1)
        );
    }
}
