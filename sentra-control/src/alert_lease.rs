//! One alert evaluator per fleet on a shared PostgreSQL control database (feature
//! `postgres`): a **lease** held as a session advisory lock on a dedicated connection, and
//! the engine's **state row** written through that same connection.
//!
//! [`AlertLease::try_acquire`] opens its own connection and takes
//! `pg_try_advisory_lock(`[`LEASE_KEY`]`)`. The lock lives exactly as long as that
//! session: when the holder's process dies (even `kill -9`) or its connection breaks,
//! PostgreSQL releases it and the next server that tries takes it. The holder calls
//! [`AlertLease::check`] periodically to learn that it lost the session. The state
//! ([`AlertLease::load_state`], [`AlertLease::save_state`]) is one row of the table
//! `sentra_alert_state` (created by the first holder), replaced in one statement, so a
//! new holder resumes from the last saved state.

use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};
use tokio::sync::Mutex;

use crate::{Error, Result};

/// The advisory lock key of the alert lease ("SENTRA" and 2). Not 1: that is the metric
/// store's writer lock (`sentra-ingest`, PostgreSQL backend), held by the storage worker
/// on the same database when the control plane and the metrics share one.
pub const LEASE_KEY: i64 = 0x5345_4E54_5241_0002;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS sentra_alert_state (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    state BYTEA NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL DEFAULT now())";

/// The held alert lease and the connection that holds it. Dropping it closes the
/// connection, which releases the lease.
#[derive(Debug)]
pub struct AlertLease {
    conn: Mutex<PgConnection>,
}

impl AlertLease {
    /// Connects to `url` and tries to take the lease: `Ok(None)` when another session
    /// holds it. The error never carries the URL (it may hold a password).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a URL that does not parse, [`Error::Database`] when the
    /// database cannot be reached or the state table cannot be created.
    pub async fn try_acquire(url: &str) -> Result<Option<Self>> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| Error::invalid("postgres url", "not a valid postgres:// URL"))?;
        let mut conn = PgConnection::connect_with(&options).await?;
        let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(LEASE_KEY)
            .fetch_one(&mut conn)
            .await?;
        if !held {
            let _ = conn.close().await;
            return Ok(None);
        }
        sqlx::query(CREATE).execute(&mut conn).await?;
        Ok(Some(Self {
            conn: Mutex::new(conn),
        }))
    }

    /// Confirms that the session holding the lease is alive.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when it is not: the lease is lost (another server may hold it
    /// now).
    pub async fn check(&self) -> Result<()> {
        let mut conn = self.conn.lock().await;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }

    /// The saved engine state, `None` before the first save.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the row cannot be read.
    pub async fn load_state(&self) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.lock().await;
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT state FROM sentra_alert_state WHERE id = 1")
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.map(|(s,)| s))
    }

    /// Replaces the saved engine state (one statement: atomic).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when it cannot be written (for example the session, and with
    /// it the lease, is gone).
    pub async fn save_state(&self, state: &[u8]) -> Result<()> {
        let mut conn = self.conn.lock().await;
        sqlx::query(
            "INSERT INTO sentra_alert_state (id, state, saved_at) VALUES (1, $1, now())
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, saved_at = now()",
        )
        .bind(state)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
