//! What the SQL backends share: one [`ControlBackend`] and one [`ControlTx`] over any
//! [`sqlx::Database`], the statements that read the same on SQLite and PostgreSQL
//! (parameters are `$N`, which SQLite accepts too) and the decoding of their rows.
//!
//! What differs stays explicit in each backend's [`Dialect`]: the few statements written
//! differently (`MIN` against `LEAST`, PostgreSQL's parameter casts), what a write
//! transaction does after bumping the version (PostgreSQL's `NOTIFY`), the change signal
//! (LISTEN) and the shared secret.

use std::{collections::HashMap, fmt, marker::PhantomData};

use sentra_core::{AgentId, AgentKey, KeyId, SecretKey, UnixMillis, Validity};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{
    AgentState, AllKeys, AuditRecord, BoxFuture, ControlBackend, ControlTx, NewBootstrapToken,
    UserChange, UserRecord,
};
use crate::{
    AgentInfo, AuditEntry, AuditQuery, BootstrapTokenInfo, DesiredInterfaceInfo, Error, KeyInfo,
    NewestKey, Result, Role, SecretString, User,
};

/// What one SQL backend does its own way; everything else is [`SqlBackend`].
pub(crate) trait Dialect: Send + Sync + fmt::Debug + 'static {
    /// The sqlx database.
    type Db: Database;

    /// [`ControlTx::cap_keys`] (`$1`: cutoff, `$2`: agent): the smaller of two values.
    const CAP_KEYS: &'static str;
    /// [`ControlBackend::desired_revision`] (`$1`: agent, `$2`: live only).
    const DESIRED_REVISION: &'static str;
    /// [`ControlBackend::audit_log`] (`$1`: before id, `$2`: since, `$3`: limit).
    const AUDIT_LOG: &'static str;
    /// [`ControlTx::update_user`] (`$1` role, `$2` disabled, `$3` now, `$4` new hash or
    /// null, `$5` token bump, `$6` username).
    const UPDATE_USER: &'static str;

    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// Runs in every write transaction right after the version bump.
    fn after_begin<'a>(
        &'a self,
        conn: &'a mut <Self::Db as Database>::Connection,
    ) -> BoxFuture<'a, sqlx::Result<()>> {
        let _ = conn;
        Box::pin(async { Ok(()) })
    }

    /// [`ControlBackend::changed`].
    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    /// [`ControlBackend::shared_secret`].
    fn shared_secret<'a>(
        &'a self,
        pool: &'a Pool<Self::Db>,
        name: &'a str,
        candidate: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let _ = (pool, name, candidate);
        Box::pin(async { Ok(None) })
    }
}

/// The first statement of every write transaction (takes the database's write lock).
const BUMP_VERSION: &str = "UPDATE control_version SET version = version + 1 WHERE id = 1";
const CONTROL_VERSION: &str = "SELECT version FROM control_version WHERE id = 1";
const LIVE_KEYS: &str = "SELECT k.agent_id, k.key_id, k.secret, k.not_before_ms, k.not_after_ms
     FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
     WHERE a.revoked_ms IS NULL";
const LIVE_AGENT_KEYS: &str = "SELECT k.key_id, k.secret, k.not_before_ms, k.not_after_ms
     FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
     WHERE a.revoked_ms IS NULL AND k.agent_id = $1";
const USER: &str = "SELECT username, role, created_ms, disabled_ms, password_hash, token_version
     FROM users WHERE username = $1";
const USERS: &str = "SELECT username, role, created_ms, disabled_ms FROM users ORDER BY username";
const BOOTSTRAP_TOKENS: &str =
    "SELECT token_id, created_ms, expires_ms, created_by, note, used_ms, used_by_agent
     FROM bootstrap_tokens ORDER BY created_ms DESC, token_id";
const AGENTS: &str = "SELECT agent_id, name, created_ms, revoked_ms, desired_revision FROM agents
     ORDER BY agent_id";
const ALL_KEY_INFOS: &str =
    "SELECT agent_id, key_id, created_ms, not_before_ms, not_after_ms FROM agent_keys
     ORDER BY agent_id, key_id";
const AGENT: &str = "SELECT agent_id, name, created_ms, revoked_ms, desired_revision FROM agents
     WHERE agent_id = $1";
const AGENT_KEY_INFOS: &str = "SELECT key_id, created_ms, not_before_ms, not_after_ms
     FROM agent_keys WHERE agent_id = $1 ORDER BY key_id";
const NEWEST_KEY: &str = "SELECT k.key_id, k.secret, k.not_before_ms, k.not_after_ms
     FROM agent_keys k JOIN agents a ON a.agent_id = k.agent_id
     WHERE k.agent_id = $1 AND a.revoked_ms IS NULL ORDER BY k.key_id DESC LIMIT 1";
const DESIRED_INTERFACES: &str = "SELECT interface, peers_json, updated_ms
     FROM desired_interfaces WHERE agent_id = $1 ORDER BY interface";
const ADDRESS_POOLS: &str =
    "SELECT agent_id, interface, prefixes FROM address_pools ORDER BY agent_id, interface";
const APPEND_AUDIT: &str = "INSERT INTO audit_log (at_ms, actor, action, target, outcome, detail)
     VALUES ($1, $2, $3, $4, $5, $6)";
const INSERT_USER: &str =
    "INSERT INTO users (username, password_hash, role, created_ms, token_version)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (username) DO NOTHING";
const DELETE_USER: &str = "DELETE FROM users WHERE username = $1";
const ENABLED_ADMINS: &str =
    "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_ms IS NULL";
const BUMP_TOKEN_VERSION: &str =
    "UPDATE users SET token_version = token_version + 1 WHERE username = $1";
const REPLACE_PASSWORD: &str =
    "UPDATE users SET password_hash = $1, token_version = token_version + 1
     WHERE username = $2 AND password_hash = $3 AND disabled_ms IS NULL";
const INSERT_BOOTSTRAP_TOKEN: &str = "INSERT INTO bootstrap_tokens
     (token_hash, token_id, created_ms, expires_ms, created_by, note)
     VALUES ($1, $2, $3, $4, $5, $6)";
const CONSUME_BOOTSTRAP_TOKEN: &str = "UPDATE bootstrap_tokens SET used_ms = $1, used_by_agent = $2
     WHERE token_hash = $3 AND used_ms IS NULL AND expires_ms > $1
     RETURNING token_id";
const INSERT_AGENT: &str = "INSERT INTO agents (agent_id, name, created_ms) VALUES ($1, $2, $3)";
const INSERT_KEY: &str =
    "INSERT INTO agent_keys (agent_id, key_id, secret, created_ms) VALUES ($1, $2, $3, $4)";
const AGENT_EXISTS: &str = "SELECT 1 FROM agents WHERE agent_id = $1";
const AGENT_STATE: &str = "SELECT revoked_ms, desired_revision FROM agents WHERE agent_id = $1";
const REVOKE_AGENT: &str =
    "UPDATE agents SET revoked_ms = $1 WHERE agent_id = $2 AND revoked_ms IS NULL";
const DELETE_KEYS: &str = "DELETE FROM agent_keys WHERE agent_id = $1";
const DELETE_AGENT: &str = "DELETE FROM agents WHERE agent_id = $1";
const MAX_KEY_ID: &str = "SELECT MAX(key_id) FROM agent_keys WHERE agent_id = $1";
const DELETE_EXPIRED_KEYS: &str = "DELETE FROM agent_keys
     WHERE agent_id = $1 AND not_after_ms IS NOT NULL AND not_after_ms <= $2";
/// Touches the row only when the peers differ (so `rows_affected` tells a change).
const UPSERT_DESIRED_INTERFACE: &str =
    "INSERT INTO desired_interfaces (agent_id, interface, peers_json, updated_ms)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (agent_id, interface) DO UPDATE
       SET peers_json = excluded.peers_json, updated_ms = excluded.updated_ms
       WHERE desired_interfaces.peers_json <> excluded.peers_json";
const SET_DESIRED_REVISION: &str = "UPDATE agents SET desired_revision = $1 WHERE agent_id = $2";
const DELETE_DESIRED_INTERFACE: &str =
    "DELETE FROM desired_interfaces WHERE agent_id = $1 AND interface = $2";
const PRESHARED_KEYS: &str = "SELECT interface, public_key, preshared_key
     FROM peer_preshared_keys WHERE agent_id = $1 AND preshared_key IS NOT NULL
     ORDER BY interface, public_key";
const SET_PRESHARED_KEY: &str =
    "INSERT INTO peer_preshared_keys (agent_id, interface, public_key, preshared_key)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (agent_id, interface, public_key) DO UPDATE
       SET preshared_key = excluded.preshared_key";
const DELETE_PRESHARED_KEY: &str = "DELETE FROM peer_preshared_keys
     WHERE agent_id = $1 AND interface = $2 AND public_key = $3";
const DELETE_INTERFACE_PRESHARED_KEYS: &str =
    "DELETE FROM peer_preshared_keys WHERE agent_id = $1 AND interface = $2";
const SET_ADDRESS_POOL: &str =
    "INSERT INTO address_pools (agent_id, interface, prefixes, updated_ms)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (agent_id, interface) DO UPDATE
       SET prefixes = excluded.prefixes, updated_ms = excluded.updated_ms";

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

/// Row decoding: what every mapper below needs of a row type.
fn col<'r, R, T>(row: &'r R, i: usize) -> Result<T>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(row.try_get(i)?)
}

/// `of_columns!(row => Type { a, b, c })` is `Type { a: col(row, 0)?, b: col(row, 1)?, c:
/// col(row, 2)? }`: a struct whose fields are the row's columns in `SELECT` order, each
/// decoded by [`col`], written once for every listing that maps columns to fields one to one.
macro_rules! of_columns {
    ($row:ident => $ty:ident { $($field:ident),+ $(,)? }) => {
        of_columns!(@next $row, $ty, 0_usize, {}, $($field),+)
    };
    (@next $row:ident, $ty:ident, $i:expr, { $($done:tt)* }, $field:ident $(, $rest:ident)*) => {
        of_columns!(@next $row, $ty, $i + 1, { $($done)* $field: col($row, $i)?, } $(, $rest)*)
    };
    (@next $row:ident, $ty:ident, $i:expr, { $($done:tt)* }) => {
        $ty { $($done)* }
    };
}

/// A key as the keyring holds it, from `key_id, secret, not_before_ms, not_after_ms` at
/// `first`.
fn key_of_row<R>(row: &R, first: usize) -> Result<(KeyId, AgentKey)>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let key_id = key_id_of(col(row, first)?)?;
    let secret = secret_of(col(row, first + 1)?)?;
    let validity = validity_of(col(row, first + 2)?, col(row, first + 3)?);
    Ok((KeyId::new(key_id), AgentKey::new(&secret, validity)))
}

/// A key's public facts, from `key_id, created_ms, not_before_ms, not_after_ms` at `first`.
fn key_info_of_row<R>(row: &R, first: usize) -> Result<KeyInfo>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(KeyInfo {
        key_id: key_id_of(col(row, first)?)?,
        created_ms: col(row, first + 1)?,
        not_before_ms: col(row, first + 2)?,
        not_after_ms: col(row, first + 3)?,
    })
}

/// A user from `username, role, created_ms, disabled_ms`.
fn user_of_row<R>(r: &R) -> Result<User>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(User {
        username: col(r, 0)?,
        role: Role::parse(col::<_, &str>(r, 1)?)?,
        created_ms: col(r, 2)?,
        disabled: col::<_, Option<i64>>(r, 3)?.is_some(),
    })
}

/// An agent from `agent_id, name, created_ms, revoked_ms, desired_revision`.
fn agent_of_row<R>(a: &R, keys: Vec<KeyInfo>) -> Result<AgentInfo>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(AgentInfo {
        agent_id: col(a, 0)?,
        name: col(a, 1)?,
        created_ms: col(a, 2)?,
        revoked_ms: col(a, 3)?,
        desired_revision: u64_of(col(a, 4)?),
        keys,
    })
}

/// One SQL backend: a pool and its [`Dialect`] (`SqliteBackend`, `PostgresBackend`).
#[derive(Debug)]
pub(crate) struct SqlBackend<D: Dialect> {
    pub(crate) pool: Pool<D::Db>,
    pub(crate) dialect: D,
}

/// One write transaction of a [`SqlBackend`].
struct SqlTx<D: Dialect> {
    tx: sqlx::Transaction<'static, D::Db>,
    dialect: PhantomData<fn() -> D>,
}

/// The one statement type of this module: a query on `D`'s database.
type Query<'q, D> =
    sqlx::query::Query<'q, <D as Dialect>::Db, <<D as Dialect>::Db as Database>::Arguments<'q>>;

fn query<'q, D: Dialect>(sql: &'q str) -> Query<'q, D> {
    sqlx::query::<D::Db>(sql)
}

impl<D> ControlBackend for SqlBackend<D>
where
    D: Dialect,
    SqlTx<D>: ControlTx,
    for<'c> &'c Pool<D::Db>: Executor<'c, Database = D::Db>,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'a> &'a str: Encode<'a, D::Db> + Decode<'a, D::Db> + Type<D::Db>,
    for<'a> Option<i64>: Encode<'a, D::Db> + Type<D::Db>,
    for<'a> i64: Encode<'a, D::Db> + Decode<'a, D::Db> + Type<D::Db>,
    for<'a> bool: Encode<'a, D::Db> + Type<D::Db>,
    for<'a> String: Decode<'a, D::Db> + Type<D::Db>,
    for<'a> Vec<u8>: Decode<'a, D::Db> + Type<D::Db>,
{
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn ControlTx>>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            // Writing first takes the database's write lock (SQLite) or the version row's
            // (PostgreSQL) at once: write transactions of every process are serialised, so
            // each check-and-change is atomic.
            query::<D>(BUMP_VERSION).execute(&mut *tx).await?;
            self.dialect.after_begin(&mut *tx).await?;
            Ok(Box::new(SqlTx::<D> {
                tx,
                dialect: PhantomData,
            }) as Box<dyn ControlTx>)
        })
    }

    fn control_version(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let row = query::<D>(CONTROL_VERSION).fetch_one(&self.pool).await?;
            Ok(u64_of(col(&row, 0)?))
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        self.dialect.changed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { query::<D>("SELECT 1").fetch_one(&self.pool).await.is_ok() })
    }

    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
        candidate: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        self.dialect.shared_secret(&self.pool, name, candidate)
    }

    fn live_keys(&self) -> BoxFuture<'_, Result<AllKeys>> {
        Box::pin(async move {
            let rows = query::<D>(LIVE_KEYS).fetch_all(&self.pool).await?;
            let mut all: AllKeys = HashMap::new();
            for row in rows {
                let agent = agent_id_of(col(&row, 0)?)?;
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
            let rows = query::<D>(LIVE_AGENT_KEYS)
                .bind(agent.as_str())
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(|row| key_of_row(row, 0)).collect()
        })
    }

    fn user<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>>> {
        Box::pin(async move {
            let row = query::<D>(USER)
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(user_record_of_row).transpose()
        })
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>>> {
        Box::pin(async move {
            let rows = query::<D>(USERS).fetch_all(&self.pool).await?;
            rows.iter().map(user_of_row).collect()
        })
    }

    fn bootstrap_tokens(&self) -> BoxFuture<'_, Result<Vec<BootstrapTokenInfo>>> {
        Box::pin(async move {
            let rows = query::<D>(BOOTSTRAP_TOKENS).fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(of_columns!(r => BootstrapTokenInfo {
                        token_id, created_ms, expires_ms, created_by, note, used_ms, used_by_agent,
                    }))
                })
                .collect()
        })
    }

    fn agents(&self) -> BoxFuture<'_, Result<Vec<AgentInfo>>> {
        Box::pin(async move {
            let agents = query::<D>(AGENTS).fetch_all(&self.pool).await?;
            let keys = query::<D>(ALL_KEY_INFOS).fetch_all(&self.pool).await?;
            let mut by_agent: HashMap<String, Vec<KeyInfo>> = HashMap::new();
            for k in &keys {
                by_agent
                    .entry(col(k, 0)?)
                    .or_default()
                    .push(key_info_of_row(k, 1)?);
            }
            agents
                .iter()
                .map(|a| {
                    let id: String = col(a, 0)?;
                    agent_of_row(a, by_agent.remove(&id).unwrap_or_default())
                })
                .collect()
        })
    }

    fn agent<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<AgentInfo>>> {
        Box::pin(async move {
            let Some(a) = query::<D>(AGENT)
                .bind(agent.as_str())
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(None);
            };
            let keys = query::<D>(AGENT_KEY_INFOS)
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

    fn agent_exists<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let row = query::<D>(AGENT_EXISTS)
                .bind(agent.as_str())
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.is_some())
        })
    }

    fn newest_key<'a>(&'a self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<NewestKey>>> {
        Box::pin(async move {
            let Some(row) = query::<D>(NEWEST_KEY)
                .bind(agent.as_str())
                .fetch_optional(&self.pool)
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(NewestKey {
                key_id: KeyId::new(key_id_of(col(&row, 0)?)?),
                secret: secret_of(col(&row, 1)?)?,
                validity: validity_of(col(&row, 2)?, col(&row, 3)?),
            }))
        })
    }

    fn desired_revision<'a>(
        &'a self,
        agent: &'a AgentId,
        live_only: bool,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let row = query::<D>(D::DESIRED_REVISION)
                .bind(agent.as_str())
                .bind(live_only)
                .fetch_optional(&self.pool)
                .await?;
            row.map(|r| col(&r, 0).map(u64_of)).transpose()
        })
    }

    fn desired_interfaces<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<DesiredInterfaceInfo>>> {
        Box::pin(async move {
            let rows = query::<D>(DESIRED_INTERFACES)
                .bind(agent.as_str())
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let json: &str = col(r, 1)?;
                    Ok(DesiredInterfaceInfo {
                        name: col(r, 0)?,
                        peers: serde_json::from_str(json)
                            .map_err(|e| Error::Internal(format!("stored peers: {e}")))?,
                        updated_ms: col(r, 2)?,
                    })
                })
                .collect()
        })
    }

    fn address_pools(&self) -> BoxFuture<'_, Result<Vec<(String, String, String)>>> {
        Box::pin(async move {
            let rows = query::<D>(ADDRESS_POOLS).fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
                .collect()
        })
    }

    fn preshared_keys<'a>(
        &'a self,
        agent: &'a AgentId,
    ) -> BoxFuture<'a, Result<Vec<(String, String, SecretString)>>> {
        Box::pin(async move {
            let rows = query::<D>(PRESHARED_KEYS)
                .bind(agent.as_str())
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let psk: String = col(r, 2)?;
                    Ok((col(r, 0)?, col(r, 1)?, SecretString::new(psk)))
                })
                .collect()
        })
    }

    fn append_audit<'a>(&'a self, e: AuditRecord<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            audit_query::<D>(e).execute(&self.pool).await?;
            Ok(())
        })
    }

    fn audit_log<'a>(&'a self, q: &'a AuditQuery) -> BoxFuture<'a, Result<Vec<AuditEntry>>> {
        Box::pin(async move {
            let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 1000));
            let rows = query::<D>(D::AUDIT_LOG)
                .bind(q.before_id)
                .bind(q.since_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(of_columns!(r => AuditEntry {
                        id, at_ms, actor, action, target, outcome, detail,
                    }))
                })
                .collect()
        })
    }
}

/// A user with its hash and token version, from [`USER`]'s columns.
fn user_record_of_row<R>(r: &R) -> Result<UserRecord>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(UserRecord {
        user: user_of_row(r)?,
        password_hash: col(r, 4)?,
        token_version: u64_of(col(r, 5)?),
    })
}

/// [`APPEND_AUDIT`] with `e` bound.
fn audit_query<'q, D>(e: AuditRecord<'q>) -> Query<'q, D>
where
    D: Dialect,
    for<'a> &'a str: Encode<'a, D::Db> + Type<D::Db>,
    for<'a> i64: Encode<'a, D::Db> + Type<D::Db>,
{
    query::<D>(APPEND_AUDIT)
        .bind(e.at_ms)
        .bind(e.actor)
        .bind(e.action)
        .bind(e.target)
        .bind(e.outcome)
        .bind(e.detail)
}

impl<D> SqlTx<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
{
    /// Runs a statement in this transaction; how many rows it changed.
    async fn exec(&mut self, q: Query<'_, D>) -> Result<u64> {
        let done = q.execute(&mut *self.tx).await?;
        Ok(D::rows_affected(&done))
    }
}

impl<D> ControlTx for SqlTx<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    for<'q> &'q str: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q [u8]: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> bool: Encode<'q, D::Db> + Type<D::Db>,
    for<'r> String: Decode<'r, D::Db> + Type<D::Db>,
{
    fn user<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<Option<UserRecord>>> {
        Box::pin(async move {
            let row = query::<D>(USER)
                .bind(username)
                .fetch_optional(&mut *self.tx)
                .await?;
            row.as_ref().map(user_record_of_row).transpose()
        })
    }

    fn insert_user<'a>(&'a mut self, u: &'a UserRecord) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let q = query::<D>(INSERT_USER)
                .bind(u.user.username.as_str())
                .bind(u.password_hash.as_str())
                .bind(u.user.role.as_str())
                .bind(u.user.created_ms)
                .bind(i64_of(u.token_version));
            Ok(self.exec(q).await? > 0)
        })
    }

    fn delete_user<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.exec(query::<D>(DELETE_USER).bind(username)).await? > 0) })
    }

    fn enabled_admins(&mut self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let row = query::<D>(ENABLED_ADMINS).fetch_one(&mut *self.tx).await?;
            Ok(u64_of(col(&row, 0)?))
        })
    }

    fn update_user<'a>(
        &'a mut self,
        username: &'a str,
        c: UserChange<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = query::<D>(D::UPDATE_USER)
                .bind(c.role.as_str())
                .bind(c.disabled)
                .bind(c.now_ms)
                .bind(c.password_hash)
                .bind(i64::from(c.end_tokens))
                .bind(username);
            self.exec(q).await?;
            Ok(())
        })
    }

    fn bump_token_version<'a>(&'a mut self, username: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .exec(query::<D>(BUMP_TOKEN_VERSION).bind(username))
                .await?
                > 0)
        })
    }

    fn replace_password<'a>(
        &'a mut self,
        username: &'a str,
        new_hash: &'a str,
        old_hash: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let q = query::<D>(REPLACE_PASSWORD)
                .bind(new_hash)
                .bind(username)
                .bind(old_hash);
            Ok(self.exec(q).await? > 0)
        })
    }

    fn insert_bootstrap_token<'a>(
        &'a mut self,
        t: NewBootstrapToken<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = query::<D>(INSERT_BOOTSTRAP_TOKEN)
                .bind(&t.hash[..])
                .bind(t.token_id)
                .bind(t.created_ms)
                .bind(t.expires_ms)
                .bind(t.created_by)
                .bind(t.note);
            self.exec(q).await?;
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
            let row = query::<D>(CONSUME_BOOTSTRAP_TOKEN)
                .bind(now_ms)
                .bind(agent.as_str())
                .bind(&hash[..])
                .fetch_optional(&mut *self.tx)
                .await?;
            row.map(|r| col(&r, 0)).transpose()
        })
    }

    fn insert_agent<'a>(
        &'a mut self,
        agent: &'a AgentId,
        name: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = query::<D>(INSERT_AGENT)
                .bind(agent.as_str())
                .bind(name)
                .bind(now_ms);
            self.exec(q).await?;
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
            let q = query::<D>(INSERT_KEY)
                .bind(agent.as_str())
                .bind(i64::from(key_id.get()))
                .bind(&secret.expose_secret()[..])
                .bind(now_ms);
            self.exec(q).await?;
            Ok(())
        })
    }

    fn agent_state<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<AgentState>> {
        Box::pin(async move {
            let row = query::<D>(AGENT_STATE)
                .bind(agent.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
            Ok(match row {
                None => AgentState::Missing,
                Some(r) if col::<_, Option<i64>>(&r, 0)?.is_some() => AgentState::Revoked {
                    desired_revision: u64_of(col(&r, 1)?),
                },
                Some(r) => AgentState::Live {
                    desired_revision: u64_of(col(&r, 1)?),
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
            let q = query::<D>(REVOKE_AGENT).bind(now_ms).bind(agent.as_str());
            Ok(self.exec(q).await? > 0)
        })
    }

    fn delete_keys<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.exec(query::<D>(DELETE_KEYS).bind(agent.as_str()))
                .await
        })
    }

    fn delete_agent<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .exec(query::<D>(DELETE_AGENT).bind(agent.as_str()))
                .await?
                > 0)
        })
    }

    fn cap_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        cutoff_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let q = query::<D>(D::CAP_KEYS).bind(cutoff_ms).bind(agent.as_str());
            self.exec(q).await
        })
    }

    fn max_key_id<'a>(&'a mut self, agent: &'a AgentId) -> BoxFuture<'a, Result<Option<u32>>> {
        Box::pin(async move {
            let row = query::<D>(MAX_KEY_ID)
                .bind(agent.as_str())
                .fetch_one(&mut *self.tx)
                .await?;
            col::<_, Option<i64>>(&row, 0)?.map(key_id_of).transpose()
        })
    }

    fn delete_expired_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = query::<D>(DELETE_EXPIRED_KEYS)
                .bind(agent.as_str())
                .bind(now_ms);
            self.exec(q).await?;
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
            let q = query::<D>(UPSERT_DESIRED_INTERFACE)
                .bind(agent.as_str())
                .bind(interface)
                .bind(peers_json)
                .bind(now_ms);
            Ok(self.exec(q).await? > 0)
        })
    }

    fn set_desired_revision<'a>(
        &'a mut self,
        agent: &'a AgentId,
        revision: u64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = query::<D>(SET_DESIRED_REVISION)
                .bind(i64_of(revision))
                .bind(agent.as_str());
            self.exec(q).await?;
            Ok(())
        })
    }

    fn delete_desired_interface<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let q = query::<D>(DELETE_DESIRED_INTERFACE)
                .bind(agent.as_str())
                .bind(interface);
            Ok(self.exec(q).await? > 0)
        })
    }

    fn set_preshared_key<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
        public_key: &'a str,
        preshared_key: Option<&'a SecretString>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = match preshared_key {
                Some(psk) => query::<D>(SET_PRESHARED_KEY)
                    .bind(agent.as_str())
                    .bind(interface)
                    .bind(public_key)
                    .bind(psk.expose_secret()),
                None => query::<D>(DELETE_PRESHARED_KEY)
                    .bind(agent.as_str())
                    .bind(interface)
                    .bind(public_key),
            };
            self.exec(q).await?;
            Ok(())
        })
    }

    fn delete_interface_preshared_keys<'a>(
        &'a mut self,
        agent: &'a AgentId,
        interface: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = query::<D>(DELETE_INTERFACE_PRESHARED_KEYS)
                .bind(agent.as_str())
                .bind(interface);
            self.exec(q).await?;
            Ok(())
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
            let q = query::<D>(SET_ADDRESS_POOL)
                .bind(agent.as_str())
                .bind(interface)
                .bind(prefixes)
                .bind(now_ms);
            self.exec(q).await?;
            Ok(())
        })
    }

    fn append_audit<'a>(&'a mut self, e: AuditRecord<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.exec(audit_query::<D>(e)).await?;
            Ok(())
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            self.tx.commit().await?;
            Ok(())
        })
    }
}
