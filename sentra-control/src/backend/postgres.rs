//! The PostgreSQL control store (feature `postgres`): the same operations as the SQLite
//! backend, in PostgreSQL's dialect.

use std::{sync::Arc, time::Duration};

use sqlx::{
    PgConnection, PgPool, Postgres,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult},
};
use tokio::sync::{Notify, oneshot};

use super::{
    BoxFuture,
    sql::{Dialect, SqlBackend},
};
use crate::{Error, Result};

/// The channel every write transaction notifies (delivered at commit).
const CHANNEL: &str = "sentra_control";

/// The PostgreSQL backend (feature `postgres`).
pub(crate) type PostgresBackend = SqlBackend<PostgresDialect>;

/// PostgreSQL's side of [`SqlBackend`]: NOTIFY at every write, LISTEN for the others'.
#[derive(Debug)]
pub(crate) struct PostgresDialect {
    /// Signalled by the LISTEN task on every notification.
    notified: Arc<Notify>,
    /// Dropped with the backend: ends the LISTEN task.
    _stop: oneshot::Sender<()>,
}

impl PostgresBackend {
    /// Connects to `url` and runs the migrations. The error never carries the URL (it may
    /// hold a password).
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|_| Error::invalid("postgres url", "not a valid postgres:// URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations-pg").run(&pool).await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let notified = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(listen(listener, Arc::clone(&notified), stopped));
        Ok(Self {
            pool,
            dialect: PostgresDialect {
                notified,
                _stop: stop,
            },
        })
    }
}

impl Dialect for PostgresDialect {
    type Db = Postgres;

    const CAP_KEYS: &'static str = "UPDATE agent_keys
         SET not_after_ms = LEAST(COALESCE(not_after_ms, $1), $1) WHERE agent_id = $2";
    const DESIRED_REVISION: &'static str = "SELECT desired_revision FROM agents
         WHERE agent_id = $1 AND (NOT $2::BOOLEAN OR revoked_ms IS NULL)";
    const AUDIT_LOG: &'static str =
        "SELECT id, at_ms, actor, action, target, outcome, detail FROM audit_log
         WHERE ($1::BIGINT IS NULL OR id < $1) AND ($2::BIGINT IS NULL OR at_ms >= $2)
         ORDER BY id DESC LIMIT $3";
    const UPDATE_USER: &'static str = "UPDATE users SET role = $1,
            disabled_ms = CASE WHEN $2 THEN coalesce(disabled_ms, $3) ELSE NULL END,
            password_hash = coalesce($4::TEXT, password_hash),
            token_version = token_version + $5
         WHERE username = $6";

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn after_begin<'a>(&'a self, conn: &'a mut PgConnection) -> BoxFuture<'a, sqlx::Result<()>> {
        Box::pin(async move {
            // Delivered at commit, to every other server's LISTEN.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.notified.notified())
    }

    fn shared_secret<'a>(
        &'a self,
        pool: &'a PgPool,
        name: &'a str,
        candidate: &'a [u8],
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO shared_secrets (name, secret) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(candidate)
            .execute(pool)
            .await?;
            let secret: Vec<u8> =
                sqlx::query_scalar("SELECT secret FROM shared_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(pool)
                    .await?;
            Ok(Some(secret))
        })
    }
}

/// Forwards notifications to `notified` until the backend is dropped. The listener
/// reconnects by itself; while it cannot, the poll interval still bounds the delay.
async fn listen(
    mut listener: PgListener,
    notified: Arc<Notify>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            r = listener.recv() => match r {
                Ok(_) => {
                    failing = false;
                    notified.notify_one();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "control database LISTEN failed; polling only until it recovers");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}
