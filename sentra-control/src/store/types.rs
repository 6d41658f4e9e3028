//! The public types of the control store.

use std::time::Duration;

use sentra_core::{AgentId, KeyId, SecretKey, Validity};
use serde::Serialize;

use crate::{Password, PasswordCost, PeerSpec, Role, SecretString};

/// Prefix of every bootstrap token, so a leaked one is recognisable (secret scanners).
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "sntb_";

/// Longest bootstrap-token lifetime accepted.
pub const MAX_BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Options of [`ControlStore::open`](crate::ControlStore::open).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Argon2id cost for new password hashes (default: OWASP minimum).
    pub password_cost: PasswordCost,
    /// How many passwords are hashed at once (each costs `memory_kib` and one core).
    pub hash_concurrency: usize,
    /// How often the store checks the durable control version for changes made by other
    /// processes sharing the database, and then reloads the keyring and re-checks long-lived
    /// sessions (default 250 ms; `None`: never, for a database no one else writes).
    pub reload_interval: Option<Duration>,
    /// SQLite: hold `<data_dir>/control.lock` (an OS file lock that ends with the process,
    /// even after `kill -9`) while the store is open, so that no other store with this
    /// option, in this process or another, opens the same directory; it is refused with
    /// [`Error::DataDirInUse`](crate::Error::DataDirInUse) naming the holder's pid. Off by
    /// default, because `control.db` may be shared by several processes (`sentra init`
    /// next to a running server); `sentra-server` turns it on. PostgreSQL ignores it.
    pub lock_data_dir: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            password_cost: PasswordCost::default(),
            hash_concurrency: 2,
            reload_interval: Some(Duration::from_millis(250)),
            lock_data_dir: false,
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

/// A change to a user ([`ControlStore::update_user`](crate::ControlStore::update_user)); `None` fields stay as they are.
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
