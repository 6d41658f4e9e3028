//! The SQLite control store: `control.db` in the data directory.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use sentra_core::{AgentId, AgentKey, KeyId, SecretKey, UnixMillis, Validity};
use sqlx::{
    Row as _, Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    AgentState, AllKeys, AuditRecord, BoxFuture, ControlBackend, ControlTx, NewBootstrapToken,
    UserChange, UserRecord,
};
use crate::{
    AgentInfo, AuditEntry, AuditQuery, BootstrapTokenInfo, DesiredInterfaceInfo, Error, KeyInfo,
    NewestKey, Result, Role, User, util,
};

/// File name of the control database inside the data directory.
pub const CONTROL_DB_FILE: &str = "control.db";

/// The SQLite backend (`control.db`, WAL mode, `synchronous = FULL`).
#[derive(Debug, Clone)]
pub(crate) struct SqliteBackend {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteBackend {
    /// Opens (creating if needed) `control.db` in `data_dir` and runs the migrations. The
    /// directory is created 0700 and the file 0600 when new; an existing database file
    /// readable by others is tightened to 0600.
    pub(crate) async fn open(data_dir: &Path) -> Result<Self> {
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
        Ok(Self { pool, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn agent_id_of(s: &str) -> Result<AgentId> {
    AgentId::new(s).map_err(|e| Error::invalid("agent_id", e.to_string()))
}

fn validity_of(not_before: Option<i64>, not_after: Option<i64>) -> Validity {
    Validity {
        not_before: not_before.map(UnixMillis::from_millis),
        not_after: not_after.map(UnixMillis::from_millis),
    }
}

fn key_id_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Internal("stored key id out of range".into()))
}

fn secret_of(bytes: Vec<u8>) -> Result<SecretKey> {
    let bytes = zeroize::Zeroizing::new(bytes);
    SecretKey::from_slice(&bytes).map_err(|e| Error::Internal(e.to_string()))
}

fn key_of_row(row: &sqlx::sqlite::SqliteRow, first: usize) -> Result<(KeyId, AgentKey)> {
    let key_id = key_id_of(row.try_get(first)?)?;
    let secret = secret_of(row.try_get(first + 1)?)?;
    let validity = validity_of(row.try_get(first + 2)?, row.try_get(first + 3)?);
    Ok((KeyId::new(key_id), AgentKey::new(&secret, validity)))
}

fn key_info_of_row(row: &sqlx::sqlite::SqliteRow, first: usize) -> Result<KeyInfo> {
    Ok(KeyInfo {
        key_id: key_id_of(row.try_get(first)?)?,
        created_ms: row.try_get(first + 1)?,
        not_before_ms: row.try_get(first + 2)?,
        not_after_ms: row.try_get(first + 3)?,
    })
}

fn user_of_row(r: &sqlx::sqlite::SqliteRow) -> Result<User> {
    Ok(User {
        username: r.try_get(0)?,
        role: Role::parse(r.try_get::<&str, _>(1)?)?,
        created_ms: r.try_get(2)?,
        disabled: r.try_get::<Option<i64>, _>(3)?.is_some(),
    })
}

fn agent_of_row(a: &sqlx::sqlite::SqliteRow, keys: Vec<KeyInfo>) -> Result<AgentInfo> {
    Ok(AgentInfo {
        agent_id: a.try_get(0)?,
        name: a.try_get(1)?,
        created_ms: a.try_get(2)?,
        revoked_ms: a.try_get(3)?,
        desired_revision: u64_of(a.try_get(4)?),
        keys,
    })
}

const USER_COLUMNS: &str = "username, role, created_ms, disabled_ms, password_hash, token_version";

fn user_record_of_row(r: &sqlx::sqlite::SqliteRow) -> Result<UserRecord> {
    Ok(UserRecord {
        user: user_of_row(r)?,
        password_hash: r.try_get(4)?,
        token_version: u64_of(r.try_get(5)?),
    })
}

async fn audit_on<'c, E>(conn: E, e: AuditRecord<'_>) -> Result<()>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(e.at_ms)
    .bind(e.actor)
    .bind(e.action)
    .bind(e.target)
    .bind(e.outcome)
    .bind(e.detail)
    .execute(conn)
    .await?;
    Ok(())
}

impl ControlBackend for SqliteBackend {
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn ControlTx>>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            // Writing first takes SQLite's write lock at once: every check-and-change in
            // this transaction is atomic across processes too.
            sqlx::query("UPDATE control_version SET version = version + 1 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            Ok(Box::new(SqliteTx { tx }) as Box<dyn ControlTx>)
        })
    }

    fn control_version(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let v: i64 = sqlx::query_scalar("SELECT version FROM control_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(u64_of(v))
        })
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok() })
    }

    fn live_keys(&self) -> BoxFuture<'_, Result<AllKeys>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT k.agent_id, k.key_id, k.secret, k.not_before_ms, k.not_after_ms
                 FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
                 WHERE a.revoked_ms IS NULL",
            )
            .fetch_all(&self.pool)
            .await?;
            let mut all: AllKeys = HashMap::new();
            for row in rows {
                let agent = agent_id_of(row.try_get::<&str, _>(0)?)?;
                let (key_id, key) = key_of_row(&row, 1)?;
                all.entry(agent).or_default().insert(key_id, key);
            }
            Ok(all)
        })
    }

    fn live_agent_keys<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<HashMap<KeyId, AgentKey>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT k.key_id, k.secret, k.not_before_ms, k.not_after_ms
                 FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
                 WHERE a.revoked_ms IS NULL AND k.agent_id = ?",
            )
            .bind(agent.as_str())
            .fetch_all(&self.pool)
            .await?;
            let mut keys = HashMap::new();
            for row in rows {
                let (key_id, key) = key_of_row(&row, 0)?;
                keys.insert(key_id, key);
            }
            Ok(keys)
        })
    }

    fn user<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username = ?"
            ))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(user_record_of_row).transpose()
        })
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT username, role, created_ms, disabled_ms FROM users ORDER BY username",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(user_of_row).collect()
        })
    }

    fn bootstrap_tokens(&self) -> BoxFuture<'_, Result<Vec<BootstrapTokenInfo>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT token_id, created_ms, expires_ms, created_by, note, used_ms, used_by_agent
                 FROM bootstrap_tokens ORDER BY created_ms DESC, token_id",
            )
            .fetch_all(&self.pool)
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
        })
    }

    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentInfo>>> {
        Box::pin(async move {
            let agents = sqlx::query(
                "SELECT agent_id, name, created_ms, revoked_ms, desired_revision FROM agents ORDER BY agent_id",
            )
            .fetch_all(&self.pool)
            .await?;
            let keys = sqlx::query(
                "SELECT agent_id, key_id, created_ms, not_before_ms, not_after_ms FROM agent_keys
                 ORDER BY agent_id, key_id",
            )
            .fetch_all(&self.pool)
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
                    agent_of_row(a, by_agent.remove(&id).unwrap_or_default())
                })
                .collect()
        })
    }

    fn agent<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<AgentInfo>>> {
        Box::pin(async move {
            let Some(a) = sqlx::query(
                "SELECT agent_id, name, created_ms, revoked_ms, desired_revision FROM agents WHERE agent_id = ?",
            )
            .bind(agent.as_str())
            .fetch_optional(&self.pool)
            .await?
            else {
                return Ok(None);
            };
            let keys = sqlx::query(
                "SELECT key_id, created_ms, not_before_ms, not_after_ms FROM agent_keys
                 WHERE agent_id = ? ORDER BY key_id",
            )
            .bind(agent.as_str())
            .fetch_all(&self.pool)
            .await?;
            let keys = keys
                .iter()
                .map(|k| key_info_of_row(k, 0))
                .collect::<Result<_>>()?;
            agent_of_row(&a, keys).map(Some)
        })
    }

    fn newest_key<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<NewestKey>>> {
        Box::pin(async move {
            let Some(row) = sqlx::query(
                "SELECT k.key_id, k.secret, k.not_before_ms, k.not_after_ms
                 FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
                 WHERE k.agent_id = ? AND a.revoked_ms IS NULL ORDER BY k.key_id DESC LIMIT 1",
            )
            .bind(agent.as_str())
            .fetch_optional(&self.pool)
            .await?
            else {
                return Ok(None);
            };
            Ok(Some(NewestKey {
                key_id: KeyId::new(key_id_of(row.try_get(0)?)?),
                secret: secret_of(row.try_get(1)?)?,
                validity: validity_of(row.try_get(2)?, row.try_get(3)?),
            }))
        })
    }

    fn desired_revision<'a>(
        &'a self,
        agent: &'a AgentId,
        live_only: bool,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let rev: Option<i64> = sqlx::query_scalar(
                "SELECT desired_revision FROM agents
                 WHERE agent_id = ? AND (NOT ? OR revoked_ms IS NULL)",
            )
            .bind(agent.as_str())
            .bind(live_only)
            .fetch_optional(&self.pool)
            .await?;
            Ok(rev.map(u64_of))
        })
    }

    fn desired_interfaces<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<DesiredInterfaceInfo>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT interface, peers_json, updated_ms FROM desired_interfaces WHERE agent_id = ?
                 ORDER BY interface",
            )
            .bind(agent.as_str())
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let json: &str = r.try_get(1)?;
                    Ok(DesiredInterfaceInfo {
                        name: r.try_get(0)?,
                        peers: serde_json::from_str(json)
                            .map_err(|e| Error::Internal(format!("stored peers: {e}")))?,
                        updated_ms: r.try_get(2)?,
                    })
                })
                .collect()
        })
    }

    fn address_pools(&self) -> BoxFuture<'_, Result<Vec<(String, String, String)>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT agent_id, interface, prefixes FROM address_pools
                 ORDER BY agent_id, interface",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }

    fn append_audit<'a>(&'a self, entry: AuditRecord<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { audit_on(&self.pool, entry).await })
    }

    fn audit_log<'a>(&'a self, query: &'a AuditQuery) -> BoxFuture<'a, Result<Vec<AuditEntry>>> {
        Box::pin(async move {
            let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 1000));
            let rows = sqlx::query(
                "SELECT id, at_ms, actor, action, target, outcome, detail FROM audit_log
                 WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR at_ms >= ?2)
                 ORDER BY id DESC LIMIT ?3",
            )
            .bind(query.before_id)
            .bind(query.since_ms)
            .bind(limit)
            .fetch_all(&self.pool)
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
        })
    }
}

struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
}

impl ControlTx for SqliteTx {
    fn user<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username = ?"
            ))
            .bind(username)
            .fetch_optional(&mut *self.tx)
            .await?;
            row.as_ref().map(user_record_of_row).transpose()
        })
    }

    fn insert_user<'a>(&'a mut self, u: &'a UserRecord) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query(
                "INSERT INTO users (username, password_hash, role, created_ms, token_version)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (username) DO NOTHING",
            )
            .bind(&u.user.username)
            .bind(&u.password_hash)
            .bind(u.user.role.as_str())
            .bind(u.user.created_ms)
            .bind(i64_of(u.token_version))
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    fn delete_user<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query("DELETE FROM users WHERE username = ?")
                .bind(username)
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }

    fn enabled_admins(&mut self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_ms IS NULL",
            )
            .fetch_one(&mut *self.tx)
            .await?;
            Ok(u64_of(n))
        })
    }

    fn update_user<'a>(
        &'a mut self,
        username: &'a str,
        c: UserChange<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE users SET role = ?,
                    disabled_ms = CASE WHEN ? THEN coalesce(disabled_ms, ?) ELSE NULL END,
                    password_hash = coalesce(?, password_hash),
                    token_version = token_version + ?
                 WHERE username = ?",
            )
            .bind(c.role.as_str())
            .bind(c.disabled)
            .bind(c.now_ms)
            .bind(c.password_hash)
            .bind(i64::from(c.end_tokens))
            .bind(username)
            .execute(&mut *self.tx)
            .await?;
            Ok(())
        })
    }

    fn bump_token_version<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query(
                "UPDATE users SET token_version = token_version + 1 WHERE username = ?",
            )
            .bind(username)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    fn replace_password<'a>(
        &'a mut self,
        username: &'a str,
        new_hash: &'a str,
        old_hash: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query(
                "UPDATE users SET password_hash = ?, token_version = token_version + 1
                 WHERE username = ? AND password_hash = ? AND disabled_ms IS NULL",
            )
            .bind(new_hash)
            .bind(username)
            .bind(old_hash)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    fn insert_bootstrap_token<'a>(
        &'a mut self,
        t: NewBootstrapToken<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO bootstrap_tokens (token_hash, token_id, created_ms, expires_ms, created_by, note)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&t.hash[..])
            .bind(t.token_id)
            .bind(t.created_ms)
            .bind(t.expires_ms)
            .bind(t.created_by)
            .bind(t.note)
            .execute(&mut *self.tx)
            .await?;
            Ok(())
        })
    }

    fn consume_bootstrap_token<'a>(
        &'a mut self,
        hash: &'a [u8; 32],
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "UPDATE bootstrap_tokens SET used_ms = ?, used_by_agent = ?
                 WHERE token_hash = ? AND used_ms IS NULL AND expires_ms > ?
                 RETURNING token_id",
            )
            .bind(now_ms)
            .bind(agent.as_str())
            .bind(&hash[..])
            .bind(now_ms)
            .fetch_optional(&mut *self.tx)
            .await?)
        })
    }

    fn insert_agent<'a>(
        &'a mut self,
        agent: &'a AgentId,
        name: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO agents (agent_id, name, created_ms) VALUES (?, ?, ?)")
                .bind(agent.as_str())
                .bind(name)
                .bind(now_ms)
                .execute(&mut *self.tx)
                .await?;
            Ok(())
        })
    }

    fn insert_key<'a>(
        &'a mut self,
        agent: &'a AgentId,
        key_id: KeyId,
        secret: &'a SecretKey,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO agent_keys (agent_id, key_id, secret, created_ms) VALUES (?, ?, ?, ?)",
            )
            .bind(agent.as_str())
            .bind(i64::from(key_id.get()))
            .bind(&secret.expose_secret()[..])
            .bind(now_ms)
            .execute(&mut *self.tx)
            .await?;
            Ok(())
        })
    }

    fn agent_state<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<AgentState>> {
        Box::pin(async move {
            let row =
                sqlx::query("SELECT revoked_ms, desired_revision FROM agents WHERE agent_id = ?")
                    .bind(agent.as_str())
                    .fetch_optional(&mut *self.tx)
                    .await?;
            Ok(match row {
                None => AgentState::Missing,
                Some(r) if r.try_get::<Option<i64>, _>(0)?.is_some() => AgentState::Revoked {
                    desired_revision: u64_of(r.try_get(1)?),
                },
                Some(r) => AgentState::Live {
                    desired_revision: u64_of(r.try_get(1)?),
                },
            })
        })
    }

    fn revoke_agent<'a>(
        &'a mut self,
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query(
                "UPDATE agents SET revoked_ms = ? WHERE agent_id = ? AND revoked_ms IS NULL",
            )
            .bind(now_ms)
            .bind(agent.as_str())
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    fn delete_keys<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            Ok(sqlx::query("DELETE FROM agent_keys WHERE agent_id = ?")
                .bind(agent.as_str())
                .execute(&mut *self.tx)
                .await?
                .rows_affected())
        })
    }

    fn delete_agent<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query("DELETE FROM agents WHERE agent_id = ?")
                .bind(agent.as_str())
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
    }

    fn cap_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        cutoff_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            Ok(sqlx::query(
                "UPDATE agent_keys SET not_after_ms = MIN(COALESCE(not_after_ms, ?1), ?1)
                 WHERE agent_id = ?2",
            )
            .bind(cutoff_ms)
            .bind(agent.as_str())
            .execute(&mut *self.tx)
            .await?
            .rows_affected())
        })
    }

    fn max_key_id<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<u32>>> {
        Box::pin(async move {
            let max: Option<i64> =
                sqlx::query_scalar("SELECT MAX(key_id) FROM agent_keys WHERE agent_id = ?")
                    .bind(agent.as_str())
                    .fetch_one(&mut *self.tx)
                    .await?;
            max.map(key_id_of).transpose()
        })
    }

    fn delete_expired_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "DELETE FROM agent_keys WHERE agent_id = ? AND not_after_ms IS NOT NULL AND not_after_ms <= ?",
            )
            .bind(agent.as_str())
            .bind(now_ms)
            .execute(&mut *self.tx)
            .await?;
            Ok(())
        })
    }

    fn upsert_desired_interface<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
        peers_json: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n = sqlx::query(
                "INSERT INTO desired_interfaces (agent_id, interface, peers_json, updated_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent_id, interface) DO UPDATE
                   SET peers_json = excluded.peers_json, updated_ms = excluded.updated_ms
                   WHERE peers_json <> excluded.peers_json",
            )
            .bind(agent.as_str())
            .bind(interface)
            .bind(peers_json)
            .bind(now_ms)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    fn set_desired_revision<'a>(
        &'a mut self,
        agent: &'a AgentId,
        revision: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query("UPDATE agents SET desired_revision = ? WHERE agent_id = ?")
                .bind(i64_of(revision))
                .bind(agent.as_str())
                .execute(&mut *self.tx)
                .await?;
            Ok(())
        })
    }

    fn delete_desired_interface<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let n =
                sqlx::query("DELETE FROM desired_interfaces WHERE agent_id = ? AND interface = ?")
                    .bind(agent.as_str())
                    .bind(interface)
                    .execute(&mut *self.tx)
                    .await?
                    .rows_affected();
            Ok(n > 0)
        })
    }

    fn set_address_pool<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
        prefixes: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO address_pools (agent_id, interface, prefixes, updated_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (agent_id, interface) DO UPDATE
                   SET prefixes = excluded.prefixes, updated_ms = excluded.updated_ms",
            )
            .bind(agent.as_str())
            .bind(interface)
            .bind(prefixes)
            .bind(now_ms)
            .execute(&mut *self.tx)
            .await?;
            Ok(())
        })
    }

    fn append_audit<'a>(&'a mut self, entry: AuditRecord<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { audit_on(&mut *self.tx, entry).await })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            self.tx.commit().await?;
            Ok(())
        })
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
