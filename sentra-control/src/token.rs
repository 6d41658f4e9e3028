//! Access tokens (JWT, HS256).
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
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, Result, Role, SecretString, util};

/// The claims of a Sentra access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the user name.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Random token id.
    pub jti: String,
    /// The role at issue (the current role is checked on every request).
    pub role: Role,
    /// Always `"access"`; a token of another type is refused.
    pub typ: String,
    /// The user's `token_version` at issue; a token whose version is no longer the
    /// user's was ended (logout, password change, disabled, user re-created).
    #[serde(default)]
    pub ver: u64,
}

/// Longest access-token lifetime this crate issues.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock leeway applied to `exp` and `nbf`.
pub const JWT_LEEWAY: Duration = Duration::from_secs(10);

const TOKEN_TYPE: &str = "access";
const KEY_FILE: &str = "jwt-hs256.key";

/// The access-token issuer and verifier (HS256 with the key in `jwt-hs256.key`).
#[derive(Clone)]
pub struct Tokens {
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

/// An access token just issued:
/// `POST /api/v1/auth/login`: a Bearer access token.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct IssuedAccessToken {
    /// The JWT; send it as `Authorization: Bearer <token>`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub access_token: SecretString,
    /// Always `Bearer`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "Bearer"))]
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// The role the token carries.
    pub role: Role,
}

impl Tokens {
    /// Loads the signing secret from `data_dir`, creating it (0600) at first start.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the key file cannot be read or created, or holds a wrong length.
    pub fn open(data_dir: &Path, issuer: &str, audience: &str, ttl: Duration) -> Result<Self> {
        let secret = load_or_create_key(&data_dir.join(KEY_FILE))?;
        Ok(Self::from_secret(&secret[..], issuer, audience, ttl))
    }

    /// A verifier over a given secret (tests, or a key held elsewhere).
    #[must_use]
    pub fn from_secret(secret: &[u8], issuer: &str, audience: &str, ttl: Duration) -> Self {
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

    /// Issues an access token for `username` with `role` and the user's `token_version`.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] if the random source or the encoder fails.
    pub fn issue(
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
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`].
    pub fn verify(&self, token: &str) -> Result<Claims> {
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
