//! Bootstrap tokens: single use, stored as SHA-256 only.

use std::time::Duration;

use crate::{Error, Result, SecretString, backend::NewBootstrapToken, util};

use super::{
    Actor, BOOTSTRAP_TOKEN_PREFIX, BootstrapTokenInfo, ControlStore, IssuedBootstrapToken,
    MAX_BOOTSTRAP_TOKEN_TTL, audit_in, record,
};

pub(super) fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl ControlStore {
    /// Issues a single-use bootstrap token valid for `ttl` (at most 7 days). The token is
    /// returned once and only its SHA-256 is stored.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a zero or too long `ttl` or a note over 200 characters.
    pub async fn issue_bootstrap_token(
        &self,
        actor: &Actor,
        ttl: Duration,
        note: &str,
    ) -> Result<IssuedBootstrapToken> {
        if ttl.is_zero() || ttl > MAX_BOOTSTRAP_TOKEN_TTL {
            return Err(Error::invalid("ttl_s", "must be between 1 s and 7 days"));
        }
        if note.chars().count() > 200 || note.chars().any(char::is_control) {
            return Err(Error::invalid("note", "at most 200 printable characters"));
        }
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        util::fill_random(&mut raw[..])?;
        let token = SecretString::new(format!(
            "{BOOTSTRAP_TOKEN_PREFIX}{}",
            util::b64url(&raw[..])
        ));
        let hash = util::sha256(token.expose_secret().as_bytes());
        let mut id = [0u8; 6];
        util::fill_random(&mut id)?;
        let token_id = format!("tok-{}", hex_lower(&id));
        let now = util::now_ms();
        let expires_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            tx.insert_bootstrap_token(NewBootstrapToken {
                hash: &hash,
                token_id: &token_id,
                created_ms: now,
                expires_ms,
                created_by: actor.as_str(),
                note,
            })
            .await?;
            let detail = format!("expires_ms={expires_ms}");
            audit_in(
                &mut *tx,
                record(actor, "token.issue", &token_id, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.finish(actor, "token.issue", &token_id, res).await?;
        Ok(IssuedBootstrapToken {
            token_id,
            token,
            expires_ms,
        })
    }

    /// Every bootstrap token (never the token itself), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn list_bootstrap_tokens(&self) -> Result<Vec<BootstrapTokenInfo>> {
        self.backend().bootstrap_tokens().await
    }
}
