//! The control-store seam: what a storage backend provides.
//!
//! Everything here is storage: reads, and writes inside one transaction. The rules (password
//! checks, `token_version`, the last admin, key numbering and overlap, audit entries,
//! keyring updates) live in [`ControlStore`](crate::ControlStore), above these traits, so a
//! backend is only SQL.
//!
//! Every write transaction bumps the durable **control version** as its first statement
//! ([`ControlBackend::begin`]), so the transaction holds the database's write lock from its
//! start (a check-and-change is atomic across processes too), and every other process
//! sharing the database sees that something changed with one cheap read
//! ([`ControlBackend::control_version`]).

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

#[cfg(feature = "sqlite")]
pub use sqlite::CONTROL_DB_FILE;
/// The lock file of [`StoreOptions::lock_data_dir`](crate::StoreOptions::lock_data_dir).
pub(crate) const CONTROL_LOCK_FILE: &str = "control.lock";

use std::{collections::HashMap, fmt};

use sentra_core::{AgentId, AgentKey, KeyId, SecretKey};

use crate::{
    AgentInfo, AuditEntry, AuditQuery, BootstrapTokenInfo, DesiredInterfaceInfo, NewestKey, Result,
    Role, SecretString, User,
};

/// A boxed future, as the object-safe traits return them.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A user as stored, with what only the store logic may see.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecord {
    /// The public part.
    pub user: User,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Tokens with another version are ended.
    pub token_version: u64,
}

impl UserRecord {
    /// A record from its parts.
    #[must_use]
    pub fn new(user: User, password_hash: String, token_version: u64) -> Self {
        Self {
            user,
            password_hash,
            token_version,
        }
    }
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("user", &self.user)
            .field("token_version", &self.token_version)
            .finish_non_exhaustive()
    }
}

/// One audit-log entry to append.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct AuditRecord<'a> {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who (see [`Actor`](crate::Actor)).
    pub actor: &'a str,
    /// What, e.g. `"user.create"`.
    pub action: &'a str,
    /// On what.
    pub target: &'a str,
    /// `"success"`, `"denied"`, `"not_found"`, …
    pub outcome: &'a str,
    /// Free text (never a secret).
    pub detail: &'a str,
}

/// A new bootstrap token to store (its SHA-256 only).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NewBootstrapToken<'a> {
    /// SHA-256 of the token text.
    pub hash: &'a [u8; 32],
    /// Public id (`tok-…`).
    pub token_id: &'a str,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds.
    pub expires_ms: i64,
    /// The issuing actor.
    pub created_by: &'a str,
    /// Operator's note.
    pub note: &'a str,
}

/// A user change ([`ControlTx::update_user`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct UserChange<'a> {
    /// The new role.
    pub role: Role,
    /// Disabled from `now` (kept if already disabled) or enabled.
    pub disabled: bool,
    /// A new password hash, if any.
    pub password_hash: Option<&'a str>,
    /// Whether to end every token (`token_version + 1`).
    pub end_tokens: bool,
    /// Unix milliseconds.
    pub now_ms: i64,
}

/// The state of one agent inside a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentState {
    /// No such agent.
    Missing,
    /// Revoked: no keys, kept for the audit trail.
    Revoked {
        /// The desired-state revision.
        desired_revision: u64,
    },
    /// Live, with its desired-state revision.
    Live {
        /// The desired-state revision.
        desired_revision: u64,
    },
}

/// Every live agent key, for the keyring.
pub type AllKeys = HashMap<AgentId, HashMap<KeyId, AgentKey>>;

/// Storage of the control plane (users, sessions, agents, keys, bootstrap tokens, desired
/// state, audit). Reads outside a transaction, and [`ControlBackend::begin`] for writes.
pub trait ControlBackend: Send + Sync + fmt::Debug + 'static {
    /// Starts a write transaction whose first statement bumps the control version.
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn ControlTx>>>;
    /// The durable control version (changes with every committed write transaction).
    fn control_version(&self) -> BoxFuture<'_, Result<u64>>;
    /// Resolves when another process has probably changed something (PostgreSQL:
    /// LISTEN/NOTIFY), so the poller checks the version at once instead of at its next
    /// tick. Must be cancel-safe. The default never resolves: the poll interval alone
    /// bounds the delay.
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
    /// Whether the database answers.
    fn ping(&self) -> BoxFuture<'_, bool>;
    /// A secret every server sharing the database must agree on (the JWT signing key):
    /// stores `candidate` under `name` unless one is there, and returns the stored one.
    /// `None` (the default) means the backend is not shared and the caller keeps the
    /// secret in its data directory.
    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
        candidate: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let _ = (name, candidate);
        Box::pin(async { Ok(None) })
    }
    /// Every key of every live (not revoked) agent.
    fn live_keys(&self) -> BoxFuture<'_, Result<AllKeys>>;
    /// The keys of one agent, empty if it is revoked or missing.
    fn live_agent_keys<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<HashMap<KeyId, AgentKey>>>;
    /// One user with its hash and token version.
    fn user<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>>>;
    /// Every user, by name.
    fn users(&self) -> BoxFuture<'_, Result<Vec<User>>>;
    /// Every bootstrap token, newest first.
    fn bootstrap_tokens(&self) -> BoxFuture<'_, Result<Vec<BootstrapTokenInfo>>>;
    /// Every agent with its keys, by id.
    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentInfo>>>;
    /// One agent with its keys.
    fn agent<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<AgentInfo>>>;
    /// Whether an agent (live or revoked) exists: one indexed row lookup, nothing decoded.
    fn agent_exists<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<bool>>;
    /// The newest key of a live agent.
    fn newest_key<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<NewestKey>>>;
    /// The desired-state revision of an agent (`live_only`: `None` for a revoked agent).
    fn desired_revision<'a>(
        &'a self,
        agent: &'a AgentId,
        live_only: bool,
    ) -> BoxFuture<'a, Result<Option<u64>>>;
    /// The declared interfaces of an agent, by name.
    fn desired_interfaces<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<DesiredInterfaceInfo>>>;
    /// Every interface's address pool as `(agent, interface, comma-separated prefixes)`,
    /// ordered by agent and interface.
    fn address_pools(&self) -> BoxFuture<'_, Result<Vec<(String, String, String)>>>;
    /// The stored preshared keys of an agent's peers as `(interface, public key, PSK)`.
    fn preshared_keys<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<(String, String, SecretString)>>>;
    /// Appends an audit entry on its own (no other change).
    fn append_audit<'a>(&'a self, entry: AuditRecord<'a>) -> BoxFuture<'a, Result<()>>;
    /// Reads the audit log, newest first.
    fn audit_log<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<Vec<AuditEntry>>>;
}

/// One write transaction. Dropped without [`ControlTx::commit`], it rolls back.
pub trait ControlTx: Send {
    /// One user.
    fn user<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>>>;
    /// Inserts a user; `false` if the name is taken.
    fn insert_user<'a>(&'a mut self, user: &'a UserRecord) -> BoxFuture<'a, Result<bool>>;
    /// Deletes a user; `false` if missing.
    fn delete_user<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Admins that are not disabled.
    fn enabled_admins(&mut self) -> BoxFuture<'_, Result<u64>>;
    /// Changes a user.
    fn update_user<'a>(
        &'a mut self,
        username: &'a str,
        change: UserChange<'a>,
    ) -> BoxFuture<'a, Result<()>>;
    /// `token_version + 1`; `false` if the user is missing.
    fn bump_token_version<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Sets a new hash and ends every token, only if the user is enabled and its hash is
    /// still `old_hash`; `false` otherwise.
    fn replace_password<'a>(
        &'a mut self,
        username: &'a str,
        new_hash: &'a str,
        old_hash: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Stores a bootstrap token.
    fn insert_bootstrap_token<'a>(
        &'a mut self,
        token: NewBootstrapToken<'a>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Marks an unused, unexpired token used by `agent`; its id, or `None`.
    fn consume_bootstrap_token<'a>(
        &'a mut self,
        hash: &'a [u8; 32],
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<String>>>;
    /// Inserts an agent.
    fn insert_agent<'a>(
        &'a mut self,
        agent: &'a AgentId,
        name: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Inserts a key (valid from now, no end).
    fn insert_key<'a>(
        &'a mut self,
        agent: &'a AgentId,
        key_id: KeyId,
        secret: &'a SecretKey,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Missing, revoked or live.
    fn agent_state<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<AgentState>>;
    /// Marks a live agent revoked; `false` if missing or already revoked.
    fn revoke_agent<'a>(
        &'a mut self,
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Deletes every key of an agent; how many.
    fn delete_keys<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<u64>>;
    /// Deletes an agent with its keys and declarations; `false` if missing.
    fn delete_agent<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<bool>>;
    /// Caps every key's `not_after` at `cutoff_ms`; how many keys.
    fn cap_keys<'a>(&'a mut self, agent: &'a AgentId, cutoff_ms: i64)
    -> BoxFuture<'a, Result<u64>>;
    /// The highest key id of an agent.
    fn max_key_id<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<u32>>>;
    /// Deletes keys whose `not_after` is at or before `now_ms`.
    fn delete_expired_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Stores an interface declaration; `true` if it was new or differs from the stored one.
    fn upsert_desired_interface<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
        peers_json: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Sets the desired-state revision.
    fn set_desired_revision<'a>(
        &'a mut self,
        agent: &'a AgentId,
        revision: u64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Deletes an interface declaration; `false` if there was none.
    fn delete_desired_interface<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Stores (`Some`) or forgets (`None`) the preshared key of one peer.
    fn set_preshared_key<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
        public_key: &'a str,
        preshared_key: Option<&'a SecretString>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Forgets the preshared keys of every peer of an interface.
    fn delete_interface_preshared_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Stores an interface's address pool (comma-separated prefixes), replacing it.
    fn set_address_pool<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
        prefixes: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;
    /// Appends an audit entry in this transaction.
    fn append_audit<'a>(&'a mut self, entry: AuditRecord<'a>) -> BoxFuture<'a, Result<()>>;
    /// Commits.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}
