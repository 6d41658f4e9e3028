//! The control store: users, sessions, bootstrap tokens, agents and their keys, desired
//! peers and the audit log, over a [`ControlBackend`].
//!
//! **The SQLite `control.db` is secret material.** It holds every agent's raw HMAC key (the
//! server must hold them to verify tags) and argon2id password hashes. It is created with
//! mode 0600 (owner only; SQLite gives its `-wal` and `-shm` files the same mode) in a data
//! directory created 0700; back it up like a private key.
//!
//! Every mutation runs in one transaction together with its audit entry, so a change and
//! its audit record commit or vanish together. In one process, writes are also serialised
//! by a lock (they are rare), which keeps the [`DbKeyring`] cache in the same order as the
//! database. Other processes sharing the database are seen through the durable control
//! version: a poller (every [`StoreOptions::reload_interval`], 250 ms by default) reloads
//! the keyring and re-checks long-lived sessions when it changed.

mod agents;
mod audit;
mod bootstrap;
mod desired;
mod peers;
mod sessions;
mod types;
mod users;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sentra_core::AgentId;
use tokio::sync::Mutex;

pub use peers::{NewPeer, Onboarded};
pub use types::{
    Actor, AgentInfo, AuditEntry, AuditQuery, BOOTSTRAP_TOKEN_PREFIX, BootstrapTokenInfo,
    DesiredInfo, DesiredInterfaceInfo, Enrolment, IssuedBootstrapToken, KeyInfo,
    MAX_BOOTSTRAP_TOKEN_TTL, NewestKey, Rotation, StoreOptions, TokenSubject, User, UserUpdate,
};

use crate::{
    DbKeyring, Error, Result,
    backend::{AuditRecord, ControlBackend, ControlTx},
    password::PasswordHasher,
    replay::ReplayGuard,
    util,
};

/// Handle to the control store. Cheap to clone.
#[derive(Clone)]
pub struct ControlStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn ControlBackend>,
    path: Option<PathBuf>,
    write: Mutex<()>,
    keyring: DbKeyring,
    hasher: PasswordHasher,
    /// Signed agent requests seen inside the skew window (`POST /api/v1/agent/key` and
    /// `FetchDesiredState` share it), so a captured envelope cannot be replayed.
    replay: Arc<ReplayGuard>,
    /// Bumped after every committed change that can end tokens (delete, update, logout,
    /// password change) here, and whenever the poller sees another process change
    /// something, so long-lived requests re-check their session only when needed.
    user_epoch: AtomicU64,
    /// The control version the keyring was last loaded at.
    seen_version: AtomicU64,
}

impl fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlStore")
            .field("backend", &self.inner.backend)
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

impl ControlStore {
    /// Opens (creating if needed) the SQLite control store `control.db` in `data_dir` and
    /// runs the embedded migrations. The directory is created 0700 and the file 0600 when
    /// they are new; an existing database file readable by others is tightened to 0600.
    ///
    /// Loads every agent key into the [`DbKeyring`] and, with a
    /// [`StoreOptions::reload_interval`], starts the control-version poller (a task on the
    /// current tokio runtime that ends when the last clone of the store is dropped).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Database`].
    #[cfg(feature = "sqlite")]
    pub async fn open(data_dir: &Path, options: StoreOptions) -> Result<Self> {
        let backend =
            crate::backend::sqlite::SqliteBackend::open(data_dir, options.lock_data_dir).await?;
        let path = backend.path().to_path_buf();
        Self::build(Arc::new(backend), Some(path), options).await
    }

    /// Connects to the PostgreSQL control store at `url` (`postgres://user:pass@host/db`)
    /// and runs its migrations; otherwise as [`ControlStore::open`]. Every server sharing
    /// the database sees the others' changes within one poll interval.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a malformed URL, [`Error::Database`] for an unreachable or
    /// wrong database. Neither message contains the URL (it may carry a password).
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(url: &str, options: StoreOptions) -> Result<Self> {
        let backend = crate::backend::postgres::PostgresBackend::connect(url).await?;
        Self::build(Arc::new(backend), None, options).await
    }

    /// A store over any [`ControlBackend`] ([`ControlStore::open`] is the SQLite one).
    /// Loads the keyring and starts the poller like [`ControlStore::open`].
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad password cost, or the backend's error.
    pub async fn with_backend(
        backend: Arc<dyn ControlBackend>,
        options: StoreOptions,
    ) -> Result<Self> {
        Self::build(backend, None, options).await
    }

    async fn build(
        backend: Arc<dyn ControlBackend>,
        path: Option<PathBuf>,
        options: StoreOptions,
    ) -> Result<Self> {
        let hasher = PasswordHasher::new(options.password_cost, options.hash_concurrency)?;
        let store = Self {
            inner: Arc::new(Inner {
                backend,
                path,
                write: Mutex::new(()),
                keyring: DbKeyring::default(),
                hasher,
                replay: Arc::default(),
                user_epoch: AtomicU64::new(0),
                seen_version: AtomicU64::new(0),
            }),
        };
        store.reload().await?;
        if let Some(every) = options.reload_interval {
            spawn_poller(
                Arc::downgrade(&store.inner),
                Arc::clone(&store.inner.backend),
                every,
            );
        }
        Ok(store)
    }

    /// The keyring kept in step with this store (and, through the poller, with every other
    /// process sharing the database).
    #[must_use]
    pub fn keyring(&self) -> DbKeyring {
        self.inner.keyring.clone()
    }

    /// Changes whenever a user was deleted, updated, logged out or changed its password in
    /// this process, or the poller saw a change made by another process.
    #[must_use]
    pub fn user_epoch(&self) -> u64 {
        self.inner.user_epoch.load(Ordering::Acquire)
    }

    fn bump_user_epoch(&self) {
        self.inner.user_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The durable control version this process last loaded its keyring at.
    #[must_use]
    pub fn seen_control_version(&self) -> u64 {
        self.inner.seen_version.load(Ordering::Acquire)
    }

    /// Checks the durable control version and, if another process (or this one) changed
    /// something since the last load, reloads the keyring and bumps the user epoch (so
    /// long-lived sessions re-check their user). Returns whether it reloaded. The poller
    /// calls this every [`StoreOptions::reload_interval`].
    ///
    /// # Errors
    ///
    /// The backend's error; the keyring stays as it was.
    pub async fn refresh(&self) -> Result<bool> {
        let v = self.inner.backend.control_version().await?;
        if v == self.seen_control_version() {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Reloads every key, under the write lock so no local change interleaves.
    async fn reload(&self) -> Result<()> {
        let _w = self.inner.write.lock().await;
        // Version first: a change committed after this read is seen by the next refresh.
        let v = self.inner.backend.control_version().await?;
        let all = self.inner.backend.live_keys().await?;
        self.inner.keyring.replace_all(all);
        self.inner.seen_version.store(v, Ordering::Release);
        self.bump_user_epoch();
        Ok(())
    }

    /// Re-reads one agent's keys into the keyring. Call with the write lock held.
    async fn reload_agent(&self, agent: &AgentId) -> Result<()> {
        let keys = self.inner.backend.live_agent_keys(agent).await?;
        self.inner.keyring.replace_agent(agent, keys);
        Ok(())
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

    /// Path of `control.db` (`None` for a store over another backend).
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The access-token signing key when the store is shared by several servers
    /// (PostgreSQL): created once (32 random bytes) by whichever server asks first, the
    /// same for all, so a token issued by one server is accepted by every other. `None`
    /// for a store of one server (SQLite): the key stays in `jwt-hs256.key`.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn shared_jwt_key(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        let mut candidate = zeroize::Zeroizing::new(vec![0u8; 32]);
        util::fill_random(&mut candidate)?;
        Ok(self
            .backend()
            .shared_secret("jwt-hs256", &candidate)
            .await?
            .map(zeroize::Zeroizing::new))
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        self.inner.backend.ping().await
    }

    fn backend(&self) -> &dyn ControlBackend {
        &*self.inner.backend
    }

    /// Writes an audit entry for a failed mutation (the mutation's own transaction rolled
    /// back). A failure to write it is logged, not returned.
    async fn audit_failure(&self, actor: &Actor, action: &str, target: &str, err: &Error) {
        let detail = err.to_string();
        let entry = record(actor, action, target, err.outcome(), &detail);
        if let Err(e) = self.backend().append_audit(entry).await {
            tracing::error!(error = %e, action, "cannot write audit entry");
        } else {
            log_audit(&entry);
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
}

/// An audit record stamped now.
fn record<'a>(
    actor: &'a Actor,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    detail: &'a str,
) -> AuditRecord<'a> {
    AuditRecord {
        at_ms: util::now_ms(),
        actor: actor.as_str(),
        action,
        target,
        outcome,
        detail,
    }
}

fn log_audit(e: &AuditRecord<'_>) {
    tracing::info!(
        actor = e.actor,
        action = e.action,
        target = e.target,
        outcome = e.outcome,
        "audit"
    );
}

/// Appends an audit entry inside `tx` and logs it.
async fn audit_in(tx: &mut dyn ControlTx, entry: AuditRecord<'_>) -> Result<()> {
    tx.append_audit(entry).await?;
    log_audit(&entry);
    Ok(())
}

fn spawn_poller(store: Weak<Inner>, backend: Arc<dyn ControlBackend>, every: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: control-version poller not started");
        return;
    };
    rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = backend.changed() => {}
            }
            let Some(inner) = store.upgrade() else {
                return;
            };
            let store = ControlStore { inner };
            match store.refresh().await {
                Ok(true) => {
                    tracing::debug!(
                        version = store.seen_control_version(),
                        "control store changed; keyring reloaded"
                    );
                    failing = false;
                }
                Ok(false) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot check the control version; keeping the keyring as it is");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::agents::slug;
    use sentra_core::AgentId;

    #[test]
    fn slugs() {
        assert_eq!(slug("Edge Router #1"), "edge-router-1");
        assert_eq!(slug("  ---  "), "agent");
        assert_eq!(slug("ÄÖÜ"), "agent");
        assert!(slug(&"x".repeat(100)).len() <= 40);
        assert!(AgentId::new(format!("{}-{}", slug(&"a-".repeat(50)), "00ff00ff")).is_ok());
    }
}
