//! The control store: `control.db` (SQLite) with users, agents, agent keys, bootstrap
//! tokens, desired peers and the audit log.
//!
//! **`control.db` is secret material.** It holds every agent's raw HMAC key (the server
//! must hold them to verify tags) and argon2id password hashes. It is created with mode
//! 0600 (owner only; SQLite gives its `-wal` and `-shm` files the same mode) in a data
//! directory created 0700; back it up like a private key.
//!
//! Every mutation runs in one transaction together with its audit entry, so a change and
//! its audit record commit or vanish together. Writes are serialised by an in-process lock
//! (they are rare), which also keeps the [`DbKeyring`] cache in the same order as the
//! database.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sentra_core::{AgentId, AgentKey, KeyId, SecretKey, UnixMillis, Validity, proto};
use serde::Serialize;
use sqlx::{
    Row as _, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::Mutex;

use crate::{
    DbKeyring, Error, Password, PasswordCost, Result, Role, SecretString,
    desired::{self, PeerSpec},
    password::PasswordHasher,
    replay::ReplayGuard,
    util,
};

/// File name of the control database inside the data directory.
pub const CONTROL_DB_FILE: &str = "control.db";

/// Prefix of every bootstrap token, so a leaked one is recognisable (secret scanners).
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "sntb_";

/// Longest bootstrap-token lifetime accepted.
pub const MAX_BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Options of [`ControlStore::open`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Argon2id cost for new password hashes (default: OWASP minimum).
    pub password_cost: PasswordCost,
    /// How many passwords are hashed at once (each costs `memory_kib` and one core).
    pub hash_concurrency: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            password_cost: PasswordCost::default(),
            hash_concurrency: 2,
        }
    }
}

/// Who did something, as written to the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// A user authenticated by the REST API.
    #[must_use]
    pub fn user(username: &str) -> Self {
        Self(format!("user:{username}"))
    }

    /// An agent authenticated by its signing key.
    #[must_use]
    pub fn agent(agent_id: &AgentId) -> Self {
        Self(format!("agent:{agent_id}"))
    }

    /// Someone with direct access to the data directory (the `sentra init` CLI).
    #[must_use]
    pub fn local() -> Self {
        Self("local".to_owned())
    }

    /// The holder of the bootstrap token with this id (the actor of an enrolment).
    #[must_use]
    pub fn bootstrap_token(token_id: &str) -> Self {
        Self(format!("bootstrap-token:{token_id}"))
    }

    /// The audit-log text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user account (never its password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct User {
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// A disabled user cannot log in and none of its tokens is accepted.
    pub disabled: bool,
}

/// A change to a user ([`ControlStore::update_user`]); `None` fields stay as they are.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct UserUpdate {
    /// New role; takes effect on the user's next request, also for tokens already issued.
    pub role: Option<Role>,
    /// Disable (`true`) or enable (`false`). Disabling ends every token of the user.
    pub disabled: Option<bool>,
    /// New password (8–128 characters). Ends every token of the user.
    pub password: Option<Password>,
}

impl UserUpdate {
    /// Changes the role.
    #[must_use]
    pub fn role(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }

    /// Disables or enables the user.
    #[must_use]
    pub fn disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// Sets a new password.
    #[must_use]
    pub fn password(mut self, password: Password) -> Self {
        self.password = Some(password);
        self
    }
}

/// What an access token is checked against on every request: the user as it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenSubject {
    /// The current role (not the one in the token).
    pub role: Role,
    /// Tokens carrying another version were ended (logout, password change, disable, or
    /// a deleted and re-created user).
    pub token_version: u64,
    /// Whether the user is disabled.
    pub disabled: bool,
}

/// Public facts about one agent key (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct KeyInfo {
    /// Key id (1 at enrolment, +1 per rotation).
    pub key_id: u32,
    /// Creation time.
    pub created_ms: i64,
    /// Not valid before (None: since creation).
    pub not_before_ms: Option<i64>,
    /// Not valid from this instant on (None: until rotated or revoked).
    pub not_after_ms: Option<i64>,
}

/// An enrolled agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct AgentInfo {
    /// The agent's id (used in every signed envelope).
    pub agent_id: String,
    /// Human name given at enrolment.
    pub name: String,
    /// Enrolment time.
    pub created_ms: i64,
    /// Revocation time; a revoked agent has no keys.
    pub revoked_ms: Option<i64>,
    /// Revision of its desired peers (0: none declared yet).
    pub desired_revision: u64,
    /// Its keys, oldest first.
    pub keys: Vec<KeyInfo>,
}

/// The result of an enrolment: the only time the secret leaves the server unasked.
#[derive(Debug)]
#[non_exhaustive]
pub struct Enrolment {
    /// The new agent's id.
    pub agent_id: AgentId,
    /// Its first key id (1).
    pub key_id: KeyId,
    /// Its first signing secret.
    pub secret: SecretKey,
}

/// A bootstrap token just issued. The token is shown once; only its SHA-256 is stored.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct IssuedBootstrapToken {
    /// Public id of the token (for listing and audit), not a secret.
    pub token_id: String,
    /// The token an agent presents to enrol. Single use.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: SecretString,
    /// Expiry, Unix milliseconds.
    pub expires_ms: i64,
}

/// A stored bootstrap token (never the token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct BootstrapTokenInfo {
    /// Public id.
    pub token_id: String,
    /// Issue time.
    pub created_ms: i64,
    /// Expiry.
    pub expires_ms: i64,
    /// Who issued it.
    pub created_by: String,
    /// Free text given at issue.
    pub note: String,
    /// When it was used, if it was.
    pub used_ms: Option<i64>,
    /// The agent it enrolled.
    pub used_by_agent: Option<String>,
}

/// The outcome of a key rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Rotation {
    /// The agent.
    pub agent_id: String,
    /// The new key's id; the agent collects it with `POST /api/v1/agent/key`.
    pub new_key_id: u32,
    /// Until when the older keys keep verifying.
    pub previous_keys_not_after_ms: i64,
}

/// An agent's newest key, as delivered to the agent itself.
#[derive(Debug)]
#[non_exhaustive]
pub struct NewestKey {
    /// Key id.
    pub key_id: KeyId,
    /// The secret.
    pub secret: SecretKey,
    /// Its validity.
    pub validity: Validity,
}

/// One declared interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct DesiredInterfaceInfo {
    /// Interface name.
    pub name: String,
    /// Its peers, normalised.
    pub peers: Vec<PeerSpec>,
    /// Last change.
    pub updated_ms: i64,
}

/// Everything declared for one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct DesiredInfo {
    /// The agent.
    pub agent_id: String,
    /// Revision, bumped on every change.
    pub revision: u64,
    /// Declared interfaces, by name.
    pub interfaces: Vec<DesiredInterfaceInfo>,
}

/// One audit-log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct AuditEntry {
    /// Monotonic id.
    pub id: i64,
    /// Time, Unix milliseconds.
    pub at_ms: i64,
    /// Who (`user:alice`, `agent:edge-1`, `bootstrap-token:…`, `local`).
    pub actor: String,
    /// What (`agent.revoke`, `user.create`, …).
    pub action: String,
    /// On what (an agent id, a user name, …).
    pub target: String,
    /// `success`, `denied`, `not_found`, `conflict`, `invalid` or `error`.
    pub outcome: String,
    /// Extra facts (never secrets).
    pub detail: String,
}

/// Which audit entries to read, newest first.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only entries with an id below this (paging).
    pub before_id: Option<i64>,
    /// Only entries at or after this time.
    pub since_ms: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Handle to the control database. Cheap to clone.
#[derive(Clone)]
pub struct ControlStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    path: PathBuf,
    write: Mutex<()>,
    keyring: DbKeyring,
    hasher: PasswordHasher,
    /// Signed agent requests seen inside the skew window (`POST /api/v1/agent/key` and
    /// `FetchDesiredState` share it), so a captured envelope cannot be replayed.
    replay: Arc<ReplayGuard>,
    /// Bumped after every committed change that can end tokens (delete, update, logout,
    /// password change), so long-lived requests re-check their session only when needed.
    user_epoch: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlStore")
            .field("path", &self.inner.path)
            .field("keyring", &self.inner.keyring)
            .finish_non_exhaustive()
    }
}

fn agent_id_of(s: &str) -> Result<AgentId> {
    AgentId::new(s).map_err(|e| Error::invalid("agent_id", e.to_string()))
}

/// Validates a user name (1 to 64 characters of `a-z A-Z 0-9 _ - . @`).
///
/// # Errors
///
/// [`Error::Invalid`].
pub fn check_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "username",
            "1 to 64 characters of a-z, A-Z, 0-9, '_', '-', '.', '@'",
        ))
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl ControlStore {
    /// Opens (creating if needed) `control.db` in `data_dir` and runs the embedded
    /// migrations. The directory is created 0700 and the file 0600 when they are new; an
    /// existing database file readable by others is tightened to 0600.
    ///
    /// Loads every agent key into the [`DbKeyring`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Database`].
    pub async fn open(data_dir: &Path, options: StoreOptions) -> Result<Self> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(CONTROL_DB_FILE);
        ensure_private_file(&path)?;
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let hasher = PasswordHasher::new(options.password_cost, options.hash_concurrency)?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                path,
                write: Mutex::new(()),
                keyring: DbKeyring::default(),
                hasher,
                replay: Arc::default(),
                user_epoch: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        store.load_keyring().await?;
        Ok(store)
    }

    /// The keyring kept in step with this store.
    #[must_use]
    pub fn keyring(&self) -> DbKeyring {
        self.inner.keyring.clone()
    }

    /// Changes whenever a user was deleted, updated, logged out or changed its password in
    /// this process (or, seen by the control-version poller, in another process).
    #[must_use]
    pub fn user_epoch(&self) -> u64 {
        self.inner
            .user_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump_user_epoch(&self) {
        self.inner
            .user_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether a token of `username` with `token_version` is still good (the user exists,
    /// is enabled and has that version). A database error counts as "no".
    pub async fn session_valid(&self, username: &str, token_version: u64) -> bool {
        match self.token_subject(username).await {
            Ok(Some(s)) => !s.disabled && s.token_version == token_version,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-check a session; ending it");
                false
            }
        }
    }

    /// The replay guard of signed agent requests.
    #[must_use]
    pub fn replay_guard(&self) -> Arc<ReplayGuard> {
        Arc::clone(&self.inner.replay)
    }

    /// Path of `control.db`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1")
            .fetch_one(&self.inner.pool)
            .await
            .is_ok()
    }

    async fn load_keyring(&self) -> Result<()> {
        let rows = sqlx::query(
            "SELECT k.agent_id, k.key_id, k.secret, k.not_before_ms, k.not_after_ms
             FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
             WHERE a.revoked_ms IS NULL",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let mut all: HashMap<AgentId, HashMap<KeyId, AgentKey>> = HashMap::new();
        for row in rows {
            let agent = agent_id_of(row.try_get::<&str, _>(0)?)?;
            let (key_id, key) = key_of_row(&row, 1)?;
            all.entry(agent).or_default().insert(key_id, key);
        }
        self.inner.keyring.replace_all(all);
        Ok(())
    }

    /// Re-reads one agent's keys into the keyring. Call with the write lock held.
    async fn reload_agent(&self, agent: &AgentId) -> Result<()> {
        let rows = sqlx::query(
            "SELECT k.key_id, k.secret, k.not_before_ms, k.not_after_ms
             FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
             WHERE a.revoked_ms IS NULL AND k.agent_id = ?",
        )
        .bind(agent.as_str())
        .fetch_all(&self.inner.pool)
        .await?;
        let mut keys = HashMap::new();
        for row in rows {
            let (key_id, key) = key_of_row(&row, 0)?;
            keys.insert(key_id, key);
        }
        self.inner.keyring.replace_agent(agent, keys);
        Ok(())
    }

    /// Writes an audit entry for a failed mutation (the mutation's own transaction rolled
    /// back). A failure to write it is logged, not returned.
    async fn audit_failure(&self, actor: &Actor, action: &str, target: &str, err: &Error) {
        let mut conn = match self.inner.pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, action, "cannot write audit entry");
                return;
            }
        };
        if let Err(e) = audit(
            &mut conn,
            actor,
            action,
            target,
            err.outcome(),
            &err.to_string(),
        )
        .await
        {
            tracing::error!(error = %e, action, "cannot write audit entry");
        }
    }

    async fn finish<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        res: Result<T>,
    ) -> Result<T> {
        if let Err(e) = &res {
            self.audit_failure(actor, action, target, e).await;
        }
        res
    }

    // ---------------------------------------------------------------- users

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
        let first_version = v.iter().fold(0i64, |acc, b| (acc << 8) | i64::from(*b));
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let now = util::now_ms();
            let inserted = sqlx::query(
                "INSERT INTO users (username, password_hash, role, created_ms, token_version)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (username) DO NOTHING",
            )
            .bind(username)
            .bind(&hash)
            .bind(role.as_str())
            .bind(now)
            .bind(first_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(Error::Conflict(format!("user {username:?} already exists")));
            }
            audit(
                &mut tx,
                actor,
                "user.create",
                username,
                "success",
                &format!("role={role}"),
            )
            .await?;
            tx.commit().await?;
            Ok(User {
                username: username.to_owned(),
                role,
                created_ms: now,
                disabled: false,
            })
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
            let mut tx = self.inner.pool.begin().await?;
            let row = sqlx::query("SELECT role, disabled_ms FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found("user", username))?;
            let enabled_admin = row.try_get::<&str, _>(0)? == "admin"
                && row.try_get::<Option<i64>, _>(1)?.is_none();
            if enabled_admin && enabled_admins(&mut tx).await? <= 1 {
                return Err(Error::Conflict("cannot delete the last admin".into()));
            }
            sqlx::query("DELETE FROM users WHERE username = ?")
                .bind(username)
                .execute(&mut *tx)
                .await?;
            audit(&mut tx, actor, "user.delete", username, "success", "").await?;
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
        let rows = sqlx::query(
            "SELECT username, role, created_ms, disabled_ms FROM users ORDER BY username",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(user_of_row).collect()
    }

    /// One user.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Database`].
    pub async fn get_user(&self, username: &str) -> Result<User> {
        let row = sqlx::query(
            "SELECT username, role, created_ms, disabled_ms FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or_else(|| Error::not_found("user", username))?;
        user_of_row(&row)
    }

    /// The user a token names, as it is now (one primary-key lookup; called on every
    /// authenticated request). `None` if the user does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn token_subject(&self, username: &str) -> Result<Option<TokenSubject>> {
        let row =
            sqlx::query("SELECT role, token_version, disabled_ms FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(&self.inner.pool)
                .await?;
        row.map(|r| {
            Ok(TokenSubject {
                role: Role::parse(r.try_get::<&str, _>(0)?)?,
                token_version: u64_of(r.try_get(1)?),
                disabled: r.try_get::<Option<i64>, _>(2)?.is_some(),
            })
        })
        .transpose()
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
            let mut tx = self.inner.pool.begin().await?;
            let row = sqlx::query(
                "SELECT username, role, created_ms, disabled_ms FROM users WHERE username = ?",
            )
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found("user", username))?;
            let mut user = user_of_row(&row)?;
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
            if was_enabled_admin && !stays_enabled_admin && enabled_admins(&mut tx).await? <= 1 {
                return Err(Error::Conflict(
                    "cannot demote or disable the last admin".into(),
                ));
            }
            let end_tokens = disabled == Some(true) || hash.is_some();
            if hash.is_some() {
                detail.push("password=changed".into());
            }
            let now = util::now_ms();
            sqlx::query(
                "UPDATE users SET role = ?,
                    disabled_ms = CASE WHEN ? THEN coalesce(disabled_ms, ?) ELSE NULL END,
                    password_hash = coalesce(?, password_hash),
                    token_version = token_version + ?
                 WHERE username = ?",
            )
            .bind(user.role.as_str())
            .bind(user.disabled)
            .bind(now)
            .bind(hash.as_deref())
            .bind(i64::from(end_tokens))
            .bind(username)
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                actor,
                "user.update",
                username,
                "success",
                &detail.join(" "),
            )
            .await?;
            tx.commit().await?;
            self.bump_user_epoch();
            Ok(user)
        }
        .await;
        self.finish(actor, "user.update", username, res).await
    }

    /// Ends every access token of `username` (logout), audited as `auth.logout`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Database`].
    pub async fn end_sessions(&self, actor: &Actor, username: &str) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let n = sqlx::query(
                "UPDATE users SET token_version = token_version + 1 WHERE username = ?",
            )
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Error::not_found("user", username));
            }
            audit(&mut tx, actor, "auth.logout", username, "success", "").await?;
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
        let phc: Option<String> = sqlx::query_scalar(
            "SELECT password_hash FROM users WHERE username = ? AND disabled_ms IS NULL",
        )
        .bind(username)
        .fetch_optional(&self.inner.pool)
        .await?;
        if !self.inner.hasher.verify(current, phc.clone()).await? {
            self.audit_failure(&actor, "auth.password", username, &Error::Unauthenticated)
                .await;
            return Err(Error::Unauthenticated);
        }
        let hash = self.inner.hasher.hash(new).await?;
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            // Only if the hash is still the one verified: a concurrent change wins.
            let n = sqlx::query(
                "UPDATE users SET password_hash = ?, token_version = token_version + 1
                 WHERE username = ? AND password_hash = ? AND disabled_ms IS NULL",
            )
            .bind(&hash)
            .bind(username)
            .bind(phc.as_deref())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Error::Unauthenticated);
            }
            audit(&mut tx, &actor, "auth.password", username, "success", "").await?;
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
            sqlx::query(
                "SELECT password_hash, role, created_ms, disabled_ms, token_version
                 FROM users WHERE username = ?",
            )
            .bind(username)
            .fetch_optional(&self.inner.pool)
            .await?
        } else {
            None
        };
        let (phc, user) = match &row {
            Some(r) => (
                Some(r.try_get::<String, _>(0)?),
                Some((
                    User {
                        username: username.to_owned(),
                        role: Role::parse(r.try_get::<&str, _>(1)?)?,
                        created_ms: r.try_get(2)?,
                        disabled: r.try_get::<Option<i64>, _>(3)?.is_some(),
                    },
                    u64_of(r.try_get(4)?),
                )),
            ),
            None => (None, None),
        };
        let ok = self.inner.hasher.verify(password, phc).await?;
        let actor = Actor::user(username);
        match user {
            Some((user, _)) if ok && user.disabled => {
                let mut conn = self.inner.pool.acquire().await?;
                audit(
                    &mut conn,
                    &actor,
                    "auth.login",
                    username,
                    "denied",
                    "account disabled",
                )
                .await?;
                Err(Error::Unauthenticated)
            }
            Some(user) if ok => {
                let mut conn = self.inner.pool.acquire().await?;
                audit(&mut conn, &actor, "auth.login", username, "success", "").await?;
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

    // ---------------------------------------------------------------- bootstrap tokens

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
            let mut tx = self.inner.pool.begin().await?;
            sqlx::query(
                "INSERT INTO bootstrap_tokens (token_hash, token_id, created_ms, expires_ms, created_by, note)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&hash[..])
            .bind(&token_id)
            .bind(now)
            .bind(expires_ms)
            .bind(actor.as_str())
            .bind(note)
            .execute(&mut *tx)
            .await?;
            audit(&mut tx, actor, "token.issue", &token_id, "success", &format!("expires_ms={expires_ms}"))
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
        let rows = sqlx::query(
            "SELECT token_id, created_ms, expires_ms, created_by, note, used_ms, used_by_agent
             FROM bootstrap_tokens ORDER BY created_ms DESC, token_id",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BootstrapTokenInfo {
                    token_id: r.try_get(0)?,
                    created_ms: r.try_get(1)?,
                    expires_ms: r.try_get(2)?,
                    created_by: r.try_get(3)?,
                    note: r.try_get(4)?,
                    used_ms: r.try_get(5)?,
                    used_by_agent: r.try_get(6)?,
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------- agents

    /// Enrols a new agent with a bootstrap token: consumes the token (atomically: of two
    /// concurrent enrolments with one token exactly one succeeds), creates the agent and
    /// its key 1, and returns the secret. The agent id is derived from `name` plus a random
    /// suffix (`edge-01-3f9a2c1b`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBootstrapToken`] for an unknown, expired or used token;
    /// [`Error::Invalid`] for a bad name.
    pub async fn enroll(&self, token: &SecretString, name: &str) -> Result<Enrolment> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::invalid("name", "1 to 64 printable characters"));
        }
        let hash = util::sha256(token.expose_secret().as_bytes());
        let mut suffix = [0u8; 4];
        util::fill_random(&mut suffix)?;
        let agent_id = agent_id_of(&format!("{}-{}", slug(name), hex_lower(&suffix)))?;
        let secret = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let key_id = KeyId::new(1);
        let _w = self.inner.write.lock().await;
        let mut tx = self.inner.pool.begin().await?;
        let now = util::now_ms();
        // The first statement writes, so the transaction takes SQLite's write lock at once
        // and the check-and-consume is atomic across processes too.
        let token_id: Option<String> = sqlx::query_scalar(
            "UPDATE bootstrap_tokens SET used_ms = ?, used_by_agent = ?
             WHERE token_hash = ? AND used_ms IS NULL AND expires_ms > ?
             RETURNING token_id",
        )
        .bind(now)
        .bind(agent_id.as_str())
        .bind(&hash[..])
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token_id) = token_id else {
            tracing::info!("enrolment refused: bootstrap token invalid, expired or used");
            return Err(Error::InvalidBootstrapToken);
        };
        sqlx::query("INSERT INTO agents (agent_id, name, created_ms) VALUES (?, ?, ?)")
            .bind(agent_id.as_str())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO agent_keys (agent_id, key_id, secret, created_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(agent_id.as_str())
        .bind(i64::from(key_id.get()))
        .bind(&secret.expose_secret()[..])
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            &Actor::bootstrap_token(&token_id),
            "agent.enroll",
            agent_id.as_str(),
            "success",
            &format!("key_id=1 name={name:?}"),
        )
        .await?;
        tx.commit().await?;
        self.reload_agent(&agent_id).await?;
        Ok(Enrolment {
            agent_id,
            key_id,
            secret,
        })
    }

    /// Every agent, by id.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>> {
        let agents = sqlx::query(
            "SELECT agent_id, name, created_ms, revoked_ms, desired_revision FROM agents ORDER BY agent_id",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let keys = sqlx::query(
            "SELECT agent_id, key_id, created_ms, not_before_ms, not_after_ms FROM agent_keys
             ORDER BY agent_id, key_id",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let mut by_agent: HashMap<String, Vec<KeyInfo>> = HashMap::new();
        for k in &keys {
            by_agent
                .entry(k.try_get(0)?)
                .or_default()
                .push(key_info_of_row(k, 1)?);
        }
        agents
            .iter()
            .map(|a| {
                let id: String = a.try_get(0)?;
                Ok(AgentInfo {
                    keys: by_agent.remove(&id).unwrap_or_default(),
                    agent_id: id,
                    name: a.try_get(1)?,
                    created_ms: a.try_get(2)?,
                    revoked_ms: a.try_get(3)?,
                    desired_revision: u64_of(a.try_get(4)?),
                })
            })
            .collect()
    }

    /// One agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub async fn get_agent(&self, agent: &AgentId) -> Result<AgentInfo> {
        let a = sqlx::query(
            "SELECT agent_id, name, created_ms, revoked_ms, desired_revision FROM agents WHERE agent_id = ?",
        )
        .bind(agent.as_str())
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or_else(|| Error::not_found("agent", agent.as_str()))?;
        let keys = sqlx::query(
            "SELECT key_id, created_ms, not_before_ms, not_after_ms FROM agent_keys
             WHERE agent_id = ? ORDER BY key_id",
        )
        .bind(agent.as_str())
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(AgentInfo {
            agent_id: a.try_get(0)?,
            name: a.try_get(1)?,
            created_ms: a.try_get(2)?,
            revoked_ms: a.try_get(3)?,
            desired_revision: u64_of(a.try_get(4)?),
            keys: keys
                .iter()
                .map(|k| key_info_of_row(k, 0))
                .collect::<Result<_>>()?,
        })
    }

    /// Revokes an agent: its keys are deleted and disappear from the keyring before this
    /// returns, so its next envelope fails verification. The agent row stays (audit trail).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Conflict`] if already revoked.
    pub async fn revoke_agent(&self, actor: &Actor, agent: &AgentId) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let n = sqlx::query(
                "UPDATE agents SET revoked_ms = ? WHERE agent_id = ? AND revoked_ms IS NULL",
            )
            .bind(util::now_ms())
            .bind(agent.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(self.missing_or_revoked(&mut tx, agent).await);
            }
            let keys = sqlx::query("DELETE FROM agent_keys WHERE agent_id = ?")
                .bind(agent.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            audit(
                &mut tx,
                actor,
                "agent.revoke",
                agent.as_str(),
                "success",
                &format!("keys_deleted={keys}"),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if res.is_ok() {
            self.inner.keyring.replace_agent(agent, HashMap::new());
        }
        self.finish(actor, "agent.revoke", agent.as_str(), res)
            .await
    }

    /// Deletes an agent with its keys and desired peers (its metric data is deleted by the
    /// caller from the ingest store).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub async fn delete_agent(&self, actor: &Actor, agent: &AgentId) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let n = sqlx::query("DELETE FROM agents WHERE agent_id = ?")
                .bind(agent.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(Error::not_found("agent", agent.as_str()));
            }
            audit(
                &mut tx,
                actor,
                "agent.delete",
                agent.as_str(),
                "success",
                "",
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if res.is_ok() {
            self.inner.keyring.replace_agent(agent, HashMap::new());
        }
        self.finish(actor, "agent.delete", agent.as_str(), res)
            .await
    }

    async fn missing_or_revoked(&self, conn: &mut SqliteConnection, agent: &AgentId) -> Error {
        match sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM agents WHERE agent_id = ?")
            .bind(agent.as_str())
            .fetch_one(conn)
            .await
        {
            Ok(0) => Error::not_found("agent", agent.as_str()),
            Ok(_) => Error::Conflict(format!("agent {agent} is revoked")),
            Err(e) => e.into(),
        }
    }

    /// Rotates an agent's key: creates key N+1 (valid from now) and limits every older key
    /// to `now + overlap`. Keys already expired are deleted. The new secret is not returned
    /// here: the agent collects it with a request signed by its current key
    /// (`POST /api/v1/agent/key`, see the crate docs).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Conflict`] for a revoked agent.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        agent: &AgentId,
        overlap: Duration,
    ) -> Result<Rotation> {
        let secret = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let now = util::now_ms();
            let cutoff = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
            // Write first (take the write lock), then read.
            let n = sqlx::query(
                "UPDATE agent_keys SET not_after_ms = MIN(COALESCE(not_after_ms, ?1), ?1)
                 WHERE agent_id = ?2 AND EXISTS
                   (SELECT 1 FROM agents WHERE agent_id = ?2 AND revoked_ms IS NULL)",
            )
            .bind(cutoff)
            .bind(agent.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM agents WHERE agent_id = ? AND revoked_ms IS NULL",
            )
            .bind(agent.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if live == 0 {
                return Err(self.missing_or_revoked(&mut tx, agent).await);
            }
            // Numbering stays monotonic: read the highest id before pruning expired keys.
            let max: Option<i64> =
                sqlx::query_scalar("SELECT MAX(key_id) FROM agent_keys WHERE agent_id = ?")
                    .bind(agent.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(
                "DELETE FROM agent_keys WHERE agent_id = ? AND not_after_ms IS NOT NULL AND not_after_ms <= ?",
            )
            .bind(agent.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let new_id = u32::try_from(max.unwrap_or(0) + 1)
                .map_err(|_| Error::Conflict("key id space exhausted".into()))?;
            sqlx::query(
                "INSERT INTO agent_keys (agent_id, key_id, secret, created_ms) VALUES (?, ?, ?, ?)",
            )
            .bind(agent.as_str())
            .bind(i64::from(new_id))
            .bind(&secret.expose_secret()[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                actor,
                "agent.rotate_key",
                agent.as_str(),
                "success",
                &format!("new_key_id={new_id} previous_keys={n} previous_not_after_ms={cutoff}"),
            )
            .await?;
            tx.commit().await?;
            Ok(Rotation {
                agent_id: agent.to_string(),
                new_key_id: new_id,
                previous_keys_not_after_ms: cutoff,
            })
        }
        .await;
        if res.is_ok() {
            self.reload_agent(agent).await?;
        }
        self.finish(actor, "agent.rotate_key", agent.as_str(), res)
            .await
    }

    /// The newest key of a live agent, with its secret (for delivery to that agent only).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown or revoked agent.
    pub async fn newest_key(&self, agent: &AgentId) -> Result<NewestKey> {
        let row = sqlx::query(
            "SELECT k.key_id, k.secret, k.not_before_ms, k.not_after_ms
             FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
             WHERE k.agent_id = ? AND a.revoked_ms IS NULL ORDER BY k.key_id DESC LIMIT 1",
        )
        .bind(agent.as_str())
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or_else(|| Error::not_found("agent", agent.as_str()))?;
        let key_id = KeyId::new(
            u32::try_from(row.try_get::<i64, _>(0)?)
                .map_err(|_| Error::Internal("key id".into()))?,
        );
        let secret = zeroize::Zeroizing::new(row.try_get::<Vec<u8>, _>(1)?);
        let secret = SecretKey::from_slice(&secret).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(NewestKey {
            key_id,
            secret,
            validity: validity_of(row.try_get(2)?, row.try_get(3)?),
        })
    }

    /// Records that an agent collected its newest key (a failure is logged, not returned).
    pub async fn audit_key_fetch(&self, agent: &AgentId, key_id: KeyId, signed_with: KeyId) {
        let res = async {
            let mut conn = self.inner.pool.acquire().await?;
            audit(
                &mut conn,
                &Actor::agent(agent),
                "agent.fetch_key",
                agent.as_str(),
                "success",
                &format!("key_id={key_id} signed_with={signed_with}"),
            )
            .await
        }
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    // ---------------------------------------------------------------- desired peers

    /// Declares the peers of one interface of an agent (replacing the previous list).
    /// The input is validated and normalised; the agent's revision is bumped when the
    /// normalised list differs from the stored one. Returns the revision.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`], [`Error::Conflict`] (a key or allowed IP claimed twice, or a
    /// revoked agent), [`Error::NotFound`].
    pub async fn set_desired_interface(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
        peers: Vec<PeerSpec>,
    ) -> Result<u64> {
        desired::check_interface(interface)?;
        let target = format!("{agent}/{interface}");
        let peers = match desired::normalise(peers) {
            // A well-formed declaration that conflicts is a refused change: audit it.
            Err(e @ Error::Conflict(_)) => {
                return self.finish(actor, "desired.set", &target, Err(e)).await;
            }
            other => other?,
        };
        let json = serde_json::to_string(&peers).map_err(|e| Error::Internal(e.to_string()))?;
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let now = util::now_ms();
            let changed = sqlx::query(
                "INSERT INTO desired_interfaces (agent_id, interface, peers_json, updated_ms)
                 SELECT ?1, ?2, ?3, ?4 WHERE EXISTS
                   (SELECT 1 FROM agents WHERE agent_id = ?1 AND revoked_ms IS NULL)
                 ON CONFLICT (agent_id, interface) DO UPDATE
                   SET peers_json = excluded.peers_json, updated_ms = excluded.updated_ms
                   WHERE peers_json <> excluded.peers_json",
            )
            .bind(agent.as_str())
            .bind(interface)
            .bind(&json)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let rev: Option<i64> = sqlx::query_scalar(
                "SELECT desired_revision FROM agents WHERE agent_id = ? AND revoked_ms IS NULL",
            )
            .bind(agent.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(mut rev) = rev else {
                return Err(self.missing_or_revoked(&mut tx, agent).await);
            };
            if changed > 0 {
                rev += 1;
                sqlx::query("UPDATE agents SET desired_revision = ? WHERE agent_id = ?")
                    .bind(rev)
                    .bind(agent.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            audit(
                &mut tx,
                actor,
                "desired.set",
                &target,
                "success",
                &format!(
                    "peers={} revision={rev} changed={}",
                    peers.len(),
                    changed > 0
                ),
            )
            .await?;
            tx.commit().await?;
            Ok(u64_of(rev))
        }
        .await;
        self.finish(actor, "desired.set", &target, res).await
    }

    /// Stops managing one interface of an agent. Returns the new revision.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if nothing was declared for it.
    pub async fn delete_desired_interface(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
    ) -> Result<u64> {
        let target = format!("{agent}/{interface}");
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.inner.pool.begin().await?;
            let n =
                sqlx::query("DELETE FROM desired_interfaces WHERE agent_id = ? AND interface = ?")
                    .bind(agent.as_str())
                    .bind(interface)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if n == 0 {
                return Err(Error::not_found("desired interface", target.clone()));
            }
            let rev: i64 = sqlx::query_scalar(
                "UPDATE agents SET desired_revision = desired_revision + 1 WHERE agent_id = ?
                 RETURNING desired_revision",
            )
            .bind(agent.as_str())
            .fetch_one(&mut *tx)
            .await?;
            audit(
                &mut tx,
                actor,
                "desired.delete",
                &target,
                "success",
                &format!("revision={rev}"),
            )
            .await?;
            tx.commit().await?;
            Ok(u64_of(rev))
        }
        .await;
        self.finish(actor, "desired.delete", &target, res).await
    }

    /// Everything declared for an agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub async fn desired(&self, agent: &AgentId) -> Result<DesiredInfo> {
        let rev: i64 = sqlx::query_scalar("SELECT desired_revision FROM agents WHERE agent_id = ?")
            .bind(agent.as_str())
            .fetch_optional(&self.inner.pool)
            .await?
            .ok_or_else(|| Error::not_found("agent", agent.as_str()))?;
        let rows = sqlx::query(
            "SELECT interface, peers_json, updated_ms FROM desired_interfaces WHERE agent_id = ?
             ORDER BY interface",
        )
        .bind(agent.as_str())
        .fetch_all(&self.inner.pool)
        .await?;
        let interfaces = rows
            .iter()
            .map(|r| {
                let json: &str = r.try_get(1)?;
                Ok(DesiredInterfaceInfo {
                    name: r.try_get(0)?,
                    peers: serde_json::from_str(json)
                        .map_err(|e| Error::Internal(format!("stored peers: {e}")))?,
                    updated_ms: r.try_get(2)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(DesiredInfo {
            agent_id: agent.to_string(),
            revision: u64_of(rev),
            interfaces,
        })
    }

    /// The wire answer to `FetchDesiredState` for an authenticated agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown or revoked agent.
    pub async fn desired_state(
        &self,
        agent: &AgentId,
        known_revision: u64,
    ) -> Result<proto::DesiredState> {
        let live: Option<i64> = sqlx::query_scalar(
            "SELECT desired_revision FROM agents WHERE agent_id = ? AND revoked_ms IS NULL",
        )
        .bind(agent.as_str())
        .fetch_optional(&self.inner.pool)
        .await?;
        let revision = u64_of(live.ok_or_else(|| Error::not_found("agent", agent.as_str()))?);
        if revision == known_revision {
            return Ok(proto::DesiredState {
                revision,
                unchanged: true,
                interfaces: Vec::new(),
            });
        }
        let info = self.desired(agent).await?;
        Ok(proto::DesiredState {
            revision: info.revision,
            unchanged: false,
            interfaces: info
                .interfaces
                .iter()
                .map(|i| proto::DesiredInterface {
                    name: i.name.clone(),
                    peers: i.peers.iter().map(desired::to_proto).collect(),
                })
                .collect(),
        })
    }

    // ---------------------------------------------------------------- audit

    /// Writes an audit entry outside any other mutation (e.g. a data deletion performed by
    /// another component on behalf of an API call).
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn record_audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        let mut conn = self.inner.pool.acquire().await?;
        audit(&mut conn, actor, action, target, outcome, detail).await
    }

    /// Reads the audit log, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 1000));
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, outcome, detail FROM audit_log
             WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR at_ms >= ?2)
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(query.before_id)
        .bind(query.since_ms)
        .bind(limit)
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    outcome: r.try_get(5)?,
                    detail: r.try_get(6)?,
                })
            })
            .collect()
    }
}

async fn audit(
    conn: &mut SqliteConnection,
    actor: &Actor,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(util::now_ms())
    .bind(actor.as_str())
    .bind(action)
    .bind(target)
    .bind(outcome)
    .bind(detail)
    .execute(conn)
    .await?;
    tracing::info!(actor = actor.as_str(), action, target, outcome, "audit");
    Ok(())
}

fn user_of_row(r: &sqlx::sqlite::SqliteRow) -> Result<User> {
    Ok(User {
        username: r.try_get(0)?,
        role: Role::parse(r.try_get::<&str, _>(1)?)?,
        created_ms: r.try_get(2)?,
        disabled: r.try_get::<Option<i64>, _>(3)?.is_some(),
    })
}

/// Admins that can log in.
async fn enabled_admins(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_ms IS NULL",
    )
    .fetch_one(conn)
    .await?)
}

fn validity_of(not_before: Option<i64>, not_after: Option<i64>) -> Validity {
    Validity {
        not_before: not_before.map(UnixMillis::from_millis),
        not_after: not_after.map(UnixMillis::from_millis),
    }
}

fn key_of_row(row: &sqlx::sqlite::SqliteRow, first: usize) -> Result<(KeyId, AgentKey)> {
    let key_id = u32::try_from(row.try_get::<i64, _>(first)?)
        .map_err(|_| Error::Internal("stored key id out of range".into()))?;
    let secret = zeroize::Zeroizing::new(row.try_get::<Vec<u8>, _>(first + 1)?);
    let secret = SecretKey::from_slice(&secret).map_err(|e| Error::Internal(e.to_string()))?;
    let validity = validity_of(row.try_get(first + 2)?, row.try_get(first + 3)?);
    Ok((KeyId::new(key_id), AgentKey::new(&secret, validity)))
}

fn key_info_of_row(row: &sqlx::sqlite::SqliteRow, first: usize) -> Result<KeyInfo> {
    Ok(KeyInfo {
        key_id: u32::try_from(row.try_get::<i64, _>(first)?)
            .map_err(|_| Error::Internal("stored key id out of range".into()))?,
        created_ms: row.try_get(first + 1)?,
        not_before_ms: row.try_get(first + 2)?,
        not_after_ms: row.try_get(first + 3)?,
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `"Edge Router #1"` → `"edge-router-1"` (at most 40 bytes; `"agent"` if nothing is left).
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() {
        "agent".to_owned()
    } else {
        out
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn ensure_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    match util::create_private_file(path) {
        Ok(f) => {
            f.sync_all().map_err(|e| Error::io(path, e))?;
            util::sync_parent(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "control database was readable by others; setting mode 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(path, e))?;
            }
            Ok(())
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("Edge Router #1"), "edge-router-1");
        assert_eq!(slug("  ---  "), "agent");
        assert_eq!(slug("ÄÖÜ"), "agent");
        assert!(slug(&"x".repeat(100)).len() <= 40);
        assert!(AgentId::new(format!("{}-{}", slug(&"a-".repeat(50)), "00ff00ff")).is_ok());
    }
}
