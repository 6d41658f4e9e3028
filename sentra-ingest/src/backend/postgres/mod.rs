//! The PostgreSQL backend (feature `postgres`): the same tables as SQLite (schema in
//! `migrations-pg/`), with raw samples as compressed per-series chunks
//! ([`chunks`](crate::backend::chunks)) in native declarative range partitions, one per UTC
//! day of the chunk's start (`chunks_d<days since epoch>`).
//!
//! * **Writes.** One connection owned by the writer task. A group commit (the ack) writes
//!   the staged batches and the replay state with one array-bound statement per table, in
//!   one transaction (`synchronous_commit = on`: the commit returns after the WAL flush).
//!   Applying writes one chunk per series (and hour) with one array-bound
//!   `INSERT … SELECT * FROM UNNEST(…) ON CONFLICT DO NOTHING`: a few thousand rows where
//!   the row store wrote (and COPYed) hundreds of thousands.
//! * **Partitions.** The writer creates a day's partition (in the apply transaction)
//!   before the first chunk of that day; maintenance creates the next days ahead and drops
//!   whole days older than the retention with `DROP TABLE` (no row-by-row DELETE, no
//!   bloat), deleting only the chunks of the one day that straddles the cutoff. Chunks of
//!   days already older than the retention go to the DEFAULT partition (deleted by the
//!   next pass): the number of partitions stays bounded by the retention, whatever
//!   timestamps agents send.
//! * **Own schema.** Every table (and sqlx's migration ledger) lives in the schema
//!   [`SCHEMA`] (`sentra_metrics`, created at open; connections set `search_path` to it),
//!   so the metric store shares a database with other tables, such as sentra-control's
//!   control plane in `public`, without a name clash.
//! * **One writer per database**, as one per SQLite file: the writer holds a session
//!   advisory lock; a second `Ingest` on the same database is refused at open.
//! * **Failures.** A failed write drops the connection; the next call reconnects (the
//!   writer's health retry does that on its own after PostgreSQL comes back). Reads use a
//!   pool, which reconnects by itself.
//! * **TimescaleDB** hypertables are not used (the extension cannot be installed where this
//!   is tested).

mod query;
mod store;

use std::str::FromStr as _;

use sqlx::{
    ConnectOptions as _,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub(crate) use query::PgReader;
pub(crate) use store::PgStore;

use crate::{Config, Error, Result};

/// The schema holding the metric store's tables (created at open).
pub(crate) const SCHEMA: &str = "sentra_metrics";

/// One day in milliseconds: the partition width.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Parses a `postgres://` URL. The error never repeats the URL (it may hold a password).
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(url).map_err(|_| Error::Storage {
        context: "parsing the PostgreSQL URL",
        source: "not a valid postgres:// URL (not shown: it may hold a password)".into(),
    })?;
    Ok(opts
        .application_name("sentra-ingest")
        // every table of ours in our own schema (see the module docs)
        .options([("search_path", SCHEMA)])
        // multi-row statements carry thousands of values: never log them
        .disable_statement_logging())
}

/// A failed connection to PostgreSQL: where (host, port, database, user; never the password
/// or the URL) and why.
pub(crate) fn connect_error(
    context: &'static str,
    opts: &PgConnectOptions,
    e: &sqlx::Error,
) -> Error {
    Error::Storage {
        context,
        source: format!(
            "{}:{} database {:?} user {:?}: {e}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or_default(),
            opts.get_username(),
        )
        .into(),
    }
}

/// Connects, migrates (`migrations-pg/`, under sqlx's advisory lock, so several servers
/// may start at once), creates the partitions of the next days, and opens the read pool.
pub(crate) async fn open(url: &str, config: &Config) -> Result<(PgStore, PgReader)> {
    let opts = connect_options(url)?;
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| connect_error("connecting to PostgreSQL", &opts, &e))?;
    store::lock_writer(&mut conn)
        .await
        .map_err(|source| Error::Storage {
            context: "taking the PostgreSQL writer lock",
            source,
        })?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .execute(&mut conn)
        .await
        .map_err(Error::storage(
            "creating the PostgreSQL schema sentra_metrics",
        ))?;
    sqlx::migrate!("./migrations-pg")
        .run(&mut conn)
        .await
        .map_err(Error::storage("migrating the PostgreSQL database"))?;
    let pool = PgPoolOptions::new()
        .max_connections(config.read_connections.max(1))
        .connect_with(opts.clone())
        .await
        .map_err(Error::storage("opening PostgreSQL read connections"))?;
    let retention_ms = i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX);
    let mut store = PgStore::new(conn, opts, retention_ms);
    store
        .ensure_days_ahead(store::now_ms())
        .await
        .map_err(|source| Error::Storage {
            context: "creating sample partitions",
            source,
        })?;
    Ok((store, PgReader::new(pool)))
}

/// The partition holding day `day` (days since the Unix epoch, may be negative).
pub(crate) fn partition_name(day: i64) -> String {
    if day < 0 {
        format!("chunks_dm{}", day.unsigned_abs())
    } else {
        format!("chunks_d{day}")
    }
}

/// The day of a partition name, if it is one of ours.
pub(crate) fn partition_day(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("chunks_d")?;
    match rest.strip_prefix('m') {
        Some(neg) => neg.parse::<i64>().ok().map(|d| -d),
        None => rest.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::{connect_options, partition_day, partition_name};

    #[test]
    fn partition_names_round_trip() {
        for d in [-3, 0, 1, 20_600] {
            assert_eq!(partition_day(&partition_name(d)), Some(d));
        }
        assert_eq!(partition_day("chunks"), None);
        assert_eq!(partition_day("chunks_dx"), None);
    }

    #[test]
    fn bad_url_error_hides_the_url() {
        let err = connect_options("postgres://u:s3cret@[::1:5432/db").unwrap_err();
        let text = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("PostgreSQL URL"), "{text}");
    }
}
