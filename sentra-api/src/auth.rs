//! Roles, password hashing (argon2id) and access tokens (JWT, HS256).
//!
//! # Why HS256
//!
//! The API both issues and verifies its tokens; no other service verifies them. A random
//! 32-byte HMAC secret (`jwt-hs256.key` in the data directory, created 0600 at first start)
//! is then the simplest sound choice: one algorithm, one key, nothing to publish. The
//! verifier accepts exactly `HS256` (an `EdDSA`, `RS256` or `none` header is rejected
//! before any signature check, so there is no algorithm confusion) and requires
//! `exp`, `nbf`, `aud`, `iss` and `sub`, with a small leeway. EdDSA would only pay off if
//! third parties had to verify tokens with a public key.

use std::{
    fmt, io,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::{Error, Password, Result, SecretString, util};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

    pub(crate) fn parse(s: &str) -> Result<Self> {
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

/// The claims of a Sentra access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) exp: u64,
    pub(crate) nbf: u64,
    pub(crate) iat: u64,
    pub(crate) jti: String,
    pub(crate) role: Role,
    /// Always `"access"`; a token of another type is refused.
    pub(crate) typ: String,
    /// The user's `token_version` at issue; a token whose version is no longer the
    /// user's was ended (logout, password change, disabled, user re-created).
    #[serde(default)]
    pub(crate) ver: u64,
}

/// Longest access-token lifetime this crate issues.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock leeway applied to `exp` and `nbf`.
pub const JWT_LEEWAY: Duration = Duration::from_secs(10);

const TOKEN_TYPE: &str = "access";
const KEY_FILE: &str = "jwt-hs256.key";

/// The token issuer and verifier.
#[derive(Clone)]
pub(crate) struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// An access token just issued.
/// `POST /api/v1/auth/login`: a Bearer access token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IssuedAccessToken {
    /// The JWT; send it as `Authorization: Bearer <token>`.
    #[schema(value_type = String)]
    pub(crate) access_token: SecretString,
    /// Always `Bearer`.
    #[schema(value_type = String, example = "Bearer")]
    pub(crate) token_type: &'static str,
    /// Lifetime in seconds.
    pub(crate) expires_in: u64,
    pub(crate) role: Role,
}

impl Tokens {
    /// Loads the signing secret from `data_dir`, creating it (0600) at first start.
    pub(crate) fn open(
        data_dir: &Path,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self> {
        let secret = load_or_create_key(&data_dir.join(KEY_FILE))?;
        Ok(Self::from_secret(&secret[..], issuer, audience, ttl))
    }

    pub(crate) fn from_secret(secret: &[u8], issuer: &str, audience: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = JWT_LEEWAY.as_secs();
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl: ttl.min(MAX_ACCESS_TOKEN_TTL),
        }
    }

    pub(crate) fn issue(
        &self,
        username: &str,
        role: Role,
        token_version: u64,
    ) -> Result<IssuedAccessToken> {
        let now = util::now_secs();
        let mut jti = [0u8; 16];
        util::fill_random(&mut jti)?;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: username.to_owned(),
            exp: now + self.ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: util::b64url(&jti),
            role,
            typ: TOKEN_TYPE.to_owned(),
            ver: token_version,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("jwt encode: {e}")))?;
        Ok(IssuedAccessToken {
            access_token: SecretString::new(token),
            token_type: "Bearer",
            expires_in: self.ttl.as_secs(),
            role,
        })
    }

    /// Verifies a bearer token. Every failure is [`Error::Unauthenticated`]; the reason is
    /// logged at debug level (never the token).
    pub(crate) fn verify(&self, token: &str) -> Result<Claims> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                tracing::debug!(reason = ?e.kind(), "access token rejected");
                Error::Unauthenticated
            })?;
        if data.claims.typ != TOKEN_TYPE {
            tracing::debug!("access token rejected: wrong typ");
            return Err(Error::Unauthenticated);
        }
        Ok(data.claims)
    }
}

fn load_or_create_key(path: &PathBuf) -> Result<Zeroizing<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => return Ok(Zeroizing::new(bytes)),
        Ok(bytes) => {
            let n = bytes.len();
            drop(Zeroizing::new(bytes));
            return Err(Error::io(
                path,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("JWT key file holds {n} bytes, expected 32"),
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut key = Zeroizing::new(vec![0u8; 32]);
    util::fill_random(&mut key)?;
    match util::create_private_file(path) {
        Ok(mut f) => {
            f.write_all(&key).map_err(|e| Error::io(path, e))?;
            f.sync_all().map_err(|e| Error::io(path, e))?;
            util::sync_parent(path)?;
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_or_create_key(path),
        Err(e) => Err(Error::io(path, e)),
    }
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

    #[test]
    fn token_round_trip_and_ttl_cap() {
        let t = Tokens::from_secret(&[7; 32], "iss", "aud", Duration::from_secs(3600));
        let issued = t.issue("alice", Role::Viewer, 7).unwrap();
        assert_eq!(issued.expires_in, MAX_ACCESS_TOKEN_TTL.as_secs());
        let c = t.verify(issued.access_token.expose_secret()).unwrap();
        assert_eq!((c.sub.as_str(), c.role, c.ver), ("alice", Role::Viewer, 7));
        let other = Tokens::from_secret(&[8; 32], "iss", "aud", Duration::from_secs(60));
        assert!(other.verify(issued.access_token.expose_secret()).is_err());
    }
}
