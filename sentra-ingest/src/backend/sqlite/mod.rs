//! The embedded SQLite backend: `metrics.db` in the data directory, WAL journal,
//! `synchronous=FULL`, one write connection owned by the writer task and a pool of
//! read-only connections. The layout and why are in the [`storage`](crate::storage) docs;
//! the schema is `migrations/`.

mod lock;
mod query;
mod store;

use std::{path::Path, time::Duration};

use sqlx::{
    ConnectOptions as _,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub(crate) use query::SqliteReader;
pub(crate) use store::SqliteStore;

use crate::{Config, DB_FILE, Error, Result};

/// Locks the data directory (see `lock.rs`; the writer's store holds the lock), opens
/// (creating it if missing) and migrates `data_dir/metrics.db`: the writer's store and
/// the read side.
pub(crate) async fn open(data_dir: &Path, config: &Config) -> Result<(SqliteStore, SqliteReader)> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let dir_lock = lock::lock(data_dir).await?;
    let path = data_dir.join(DB_FILE);
    let write_opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", format!("-{}", config.cache_size_kib))
        .pragma("temp_store", "memory")
        .statement_cache_capacity(256)
        // multi-row inserts are thousands of placeholders long: never log them
        .disable_statement_logging();
    let mut conn = write_opts
        .clone()
        .connect()
        .await
        .map_err(Error::storage("opening the database"))?;
    sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .map_err(Error::storage("migrating the database"))?;
    let read_opts = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-16384")
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(config.read_connections.max(1))
        .connect_with(read_opts)
        .await
        .map_err(Error::storage("opening read connections"))?;
    Ok((
        SqliteStore::new(conn, write_opts, dir_lock),
        SqliteReader::new(pool),
    ))
}
