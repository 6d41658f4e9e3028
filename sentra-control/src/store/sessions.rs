//! Sessions: logins, logout, password changes, and the per-request token check.

use crate::{Error, Password, Result};

use super::{Actor, ControlStore, TokenSubject, User, audit_in, check_username, log_audit, record};

impl ControlStore {
    /// The user a token names, as it is now (one primary-key lookup; called on every
    /// authenticated request). `None` if the user does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn token_subject(&self, username: &str) -> Result<Option<TokenSubject>> {
        Ok(self.backend().user(username).await?.map(|r| TokenSubject {
            role: r.user.role,
            token_version: r.token_version,
            disabled: r.user.disabled,
        }))
    }

    /// Ends every access token of `username` (logout), audited as `auth.logout`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Database`].
    pub async fn end_sessions(&self, actor: &Actor, username: &str) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            if !tx.bump_token_version(username).await? {
                return Err(Error::not_found("user", username));
            }
            audit_in(
                &mut *tx,
                record(actor, "auth.logout", username, "success", ""),
            )
            .await?;
            tx.commit().await?;
            self.bump_user_epoch();
            Ok(())
        }
        .await;
        self.finish(actor, "auth.logout", username, res).await
    }

    /// A user changes its own password, proving the current one; every token of the user
    /// ends. Audited as `auth.password`.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] if `current` is wrong (or the user is gone or disabled),
    /// [`Error::Invalid`] if `new` breaks the password policy.
    pub async fn change_password(
        &self,
        username: &str,
        current: Password,
        new: Password,
    ) -> Result<()> {
        new.check_policy()?;
        let actor = Actor::user(username);
        let phc = self
            .backend()
            .user(username)
            .await?
            .filter(|r| !r.user.disabled)
            .map(|r| r.password_hash);
        if !self.inner.hasher.verify(current, phc.clone()).await? {
            self.audit_failure(&actor, "auth.password", username, &Error::Unauthenticated)
                .await;
            return Err(Error::Unauthenticated);
        }
        let old = phc.unwrap_or_default();
        let hash = self.inner.hasher.hash(new).await?;
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            // Only if the hash is still the one verified: a concurrent change wins.
            if !tx.replace_password(username, &hash, &old).await? {
                return Err(Error::Unauthenticated);
            }
            audit_in(
                &mut *tx,
                record(&actor, "auth.password", username, "success", ""),
            )
            .await?;
            tx.commit().await?;
            self.bump_user_epoch();
            Ok(())
        }
        .await;
        self.finish(&actor, "auth.password", username, res).await
    }

    /// Checks a user name and password. Takes about the same time whether or not the user
    /// exists. A successful login, or a failed one for an existing user, is audited.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthenticated`] for an unknown user or a wrong password (the same error),
    /// [`Error::Unavailable`] if the hashing queue is saturated.
    pub async fn authenticate(&self, username: &str, password: Password) -> Result<User> {
        self.authenticate_session(username, password)
            .await
            .map(|(user, _)| user)
    }

    /// As [`ControlStore::authenticate`], also returning the token version to put in the
    /// access token. A disabled user is refused like a wrong password.
    ///
    /// # Errors
    ///
    /// As [`ControlStore::authenticate`].
    pub async fn authenticate_session(
        &self,
        username: &str,
        password: Password,
    ) -> Result<(User, u64)> {
        let row = if check_username(username).is_ok() {
            self.backend().user(username).await?
        } else {
            None
        };
        let (phc, user) = match row {
            Some(r) => (Some(r.password_hash), Some((r.user, r.token_version))),
            None => (None, None),
        };
        let ok = self.inner.hasher.verify(password, phc).await?;
        let actor = Actor::user(username);
        match user {
            Some((user, _)) if ok && user.disabled => {
                let entry = record(&actor, "auth.login", username, "denied", "account disabled");
                self.backend().append_audit(entry).await?;
                log_audit(&entry);
                Err(Error::Unauthenticated)
            }
            Some(user) if ok => {
                let entry = record(&actor, "auth.login", username, "success", "");
                self.backend().append_audit(entry).await?;
                log_audit(&entry);
                Ok(user)
            }
            Some(_) => {
                self.audit_failure(&actor, "auth.login", username, &Error::Unauthenticated)
                    .await;
                Err(Error::Unauthenticated)
            }
            None => Err(Error::Unauthenticated),
        }
    }
}
