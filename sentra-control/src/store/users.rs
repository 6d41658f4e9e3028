//! Users: create, delete, list, update.

use crate::{
    Error, Password, Result, Role,
    backend::{UserChange, UserRecord},
    util,
};

use super::{Actor, ControlStore, User, UserUpdate, audit_in, check_username, record};

impl ControlStore {
    /// Creates a user. This is how the first admin comes to exist (`sentra init` calls it
    /// with [`Actor::local`] on the data directory); there are no default credentials.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad user name or a password outside 8–128 characters,
    /// [`Error::Conflict`] if the user exists.
    pub async fn create_user(
        &self,
        actor: &Actor,
        username: &str,
        password: Password,
        role: Role,
    ) -> Result<User> {
        check_username(username)?;
        password.check_policy()?;
        let hash = self.inner.hasher.hash(password).await?;
        // A random first version, so a token of a deleted user never matches a new user
        // of the same name.
        let mut v = [0u8; 6];
        util::fill_random(&mut v)?;
        let first_version = v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let user = User {
                username: username.to_owned(),
                role,
                created_ms: util::now_ms(),
                disabled: false,
            };
            if !tx
                .insert_user(&UserRecord::new(user.clone(), hash, first_version))
                .await?
            {
                return Err(Error::Conflict(format!("user {username:?} already exists")));
            }
            let detail = format!("role={role}");
            audit_in(
                &mut *tx,
                record(actor, "user.create", username, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(user)
        }
        .await;
        self.finish(actor, "user.create", username, res).await
    }

    /// Deletes a user; its tokens stop working at once. The last enabled admin cannot be
    /// deleted.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Conflict`] for the last enabled admin.
    pub async fn delete_user(&self, actor: &Actor, username: &str) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let user = tx
                .user(username)
                .await?
                .ok_or_else(|| Error::not_found("user", username))?
                .user;
            let enabled_admin = user.role == Role::Admin && !user.disabled;
            if enabled_admin && tx.enabled_admins().await? <= 1 {
                return Err(Error::Conflict("cannot delete the last admin".into()));
            }
            tx.delete_user(username).await?;
            audit_in(
                &mut *tx,
                record(actor, "user.delete", username, "success", ""),
            )
            .await?;
            tx.commit().await?;
            self.bump_user_epoch();
            Ok(())
        }
        .await;
        self.finish(actor, "user.delete", username, res).await
    }

    /// Every user, by name.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.backend().users().await
    }

    /// One user.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Database`].
    pub async fn get_user(&self, username: &str) -> Result<User> {
        self.backend()
            .user(username)
            .await?
            .map(|r| r.user)
            .ok_or_else(|| Error::not_found("user", username))
    }

    /// Changes a user's role, enabled state or password, audited as `user.update`.
    /// Disabling and a new password end every token of the user; a role change applies
    /// to its next request. The last enabled admin can be neither demoted nor disabled.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Invalid`] for an empty update or a password outside
    /// the policy, [`Error::Conflict`] for the last enabled admin.
    pub async fn update_user(
        &self,
        actor: &Actor,
        username: &str,
        update: UserUpdate,
    ) -> Result<User> {
        let UserUpdate {
            role,
            disabled,
            password,
        } = update;
        if role.is_none() && disabled.is_none() && password.is_none() {
            return Err(Error::invalid(
                "body",
                "nothing to change: give role, disabled or password",
            ));
        }
        let hash = match password {
            Some(p) => {
                p.check_policy()?;
                Some(self.inner.hasher.hash(p).await?)
            }
            None => None,
        };
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let mut user = tx
                .user(username)
                .await?
                .ok_or_else(|| Error::not_found("user", username))?
                .user;
            let was_enabled_admin = user.role == Role::Admin && !user.disabled;
            let mut detail = Vec::new();
            if let Some(r) = role {
                user.role = r;
                detail.push(format!("role={r}"));
            }
            if let Some(d) = disabled {
                user.disabled = d;
                detail.push(format!("disabled={d}"));
            }
            let stays_enabled_admin = user.role == Role::Admin && !user.disabled;
            if was_enabled_admin && !stays_enabled_admin && tx.enabled_admins().await? <= 1 {
                return Err(Error::Conflict(
                    "cannot demote or disable the last admin".into(),
                ));
            }
            let end_tokens = disabled == Some(true) || hash.is_some();
            if hash.is_some() {
                detail.push("password=changed".into());
            }
            tx.update_user(
                username,
                UserChange {
                    role: user.role,
                    disabled: user.disabled,
                    password_hash: hash.as_deref(),
                    end_tokens,
                    now_ms: util::now_ms(),
                },
            )
            .await?;
            let detail = detail.join(" ");
            audit_in(
                &mut *tx,
                record(actor, "user.update", username, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            self.bump_user_epoch();
            Ok(user)
        }
        .await;
        self.finish(actor, "user.update", username, res).await
    }
}
