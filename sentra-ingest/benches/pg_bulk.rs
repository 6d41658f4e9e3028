//! PostgreSQL bulk sample writes: COPY vs array binds, same run, same durability.
//!
//! Every method writes 100 000 fresh `(series_id, ts, v)` rows into the real `samples`
//! layout (range-partitioned by day, primary key `(series_id, ts)`) in one transaction and
//! includes the COMMIT (`synchronous_commit = on`, `fsync = on`): what the writer's apply
//! does. The store needs `ON CONFLICT DO NOTHING` (applying is at-least-once), which COPY
//! cannot do, so the COPY methods go through a temp table and `INSERT … SELECT … ON
//! CONFLICT DO NOTHING`; plain COPY straight into `samples` is printed as the floor.
//!
//! ```text
//! eval "$(scripts/pg-test-server start)"          # or let sentra-testkit start one
//! cargo bench -p sentra-ingest --bench pg_bulk
//! ```
//!
//! Under `cargo test` (no `--bench` argument) it only checks that every method stores the
//! same rows, with 2 000 rows.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

const ROWS: usize = 100_000;
const SERIES: i64 = 1_000;
const ROUNDS: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Unnest,
    CopyBinaryStaged,
    CopyTextStaged,
    CopyBinaryDirect,
    CopyBinarySavepoint,
}

impl Method {
    const ALL: [Self; 5] = [
        Self::Unnest,
        Self::CopyBinaryStaged,
        Self::CopyTextStaged,
        Self::CopyBinaryDirect,
        Self::CopyBinarySavepoint,
    ];
    fn label(self) -> &'static str {
        match self {
            Self::Unnest => "INSERT ... SELECT FROM UNNEST($1,$2,$3) ON CONFLICT DO NOTHING",
            Self::CopyBinaryStaged => "COPY (binary) to temp + INSERT ... ON CONFLICT DO NOTHING",
            Self::CopyTextStaged => "COPY (text) to temp + INSERT ... ON CONFLICT DO NOTHING",
            Self::CopyBinaryDirect => "COPY (binary) straight into samples (no conflict handling)",
            Self::CopyBinarySavepoint => {
                "COPY (binary) straight in under a SAVEPOINT, UNNEST insert on conflict (the backend)"
            }
        }
    }
}

/// `n` rows starting at time `t0`: SERIES series, consecutive 10 s steps.
fn rows(n: usize, t0: i64) -> (Vec<i64>, Vec<i64>, Vec<f64>) {
    let (mut ids, mut ts, mut vs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n as i64 {
        ids.push(i % SERIES + 1);
        ts.push(t0 + (i / SERIES) * 10_000);
        #[allow(clippy::cast_precision_loss)]
        vs.push((i as f64) * 0.5);
    }
    (ids, ts, vs)
}

fn copy_binary(ids: &[i64], ts: &[i64], vs: &[f64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(19 + ids.len() * 38 + 2);
    b.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    b.extend_from_slice(&0i32.to_be_bytes()); // flags
    b.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for i in 0..ids.len() {
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&ids[i].to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&ts[i].to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&vs[i].to_be_bytes());
    }
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b
}

fn copy_text(ids: &[i64], ts: &[i64], vs: &[f64]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(ids.len() * 32);
    for i in 0..ids.len() {
        let _ = writeln!(s, "{}\t{}\t{}", ids[i], ts[i], vs[i]);
    }
    s.into_bytes()
}

const DAY_MS: i64 = 86_400_000;

async fn setup(conn: &mut PgConnection, t0: i64, days: i64) -> sqlx::Result<()> {
    conn.execute(
        "CREATE TABLE samples (series_id BIGINT NOT NULL, ts BIGINT NOT NULL, \
         v DOUBLE PRECISION, PRIMARY KEY (series_id, ts)) PARTITION BY RANGE (ts)",
    )
    .await?;
    let first = t0.div_euclid(DAY_MS);
    for d in first..first + days {
        conn.execute(
            format!(
                "CREATE TABLE samples_d{d} PARTITION OF samples FOR VALUES FROM ({}) TO ({})",
                d * DAY_MS,
                (d + 1) * DAY_MS
            )
            .as_str(),
        )
        .await?;
    }
    Ok(())
}

async fn write(
    conn: &mut PgConnection,
    m: Method,
    ids: &[i64],
    ts: &[i64],
    vs: &[f64],
) -> sqlx::Result<u64> {
    let mut tx = conn.begin().await?;
    let n = match m {
        Method::Unnest => sqlx::query(
            "INSERT INTO samples (series_id, ts, v) \
                 SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[]) \
                 ON CONFLICT DO NOTHING",
        )
        .bind(ids)
        .bind(ts)
        .bind(vs)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
        Method::CopyBinaryStaged | Method::CopyTextStaged => {
            tx.execute(
                "CREATE TEMP TABLE IF NOT EXISTS samples_in \
                 (series_id BIGINT, ts BIGINT, v DOUBLE PRECISION) ON COMMIT DELETE ROWS",
            )
            .await?;
            let (stmt, data) = if m == Method::CopyBinaryStaged {
                (
                    "COPY samples_in FROM STDIN (FORMAT binary)",
                    copy_binary(ids, ts, vs),
                )
            } else {
                (
                    "COPY samples_in FROM STDIN (FORMAT text)",
                    copy_text(ids, ts, vs),
                )
            };
            let mut copy = tx.copy_in_raw(stmt).await?;
            copy.send(data).await?;
            copy.finish().await?;
            sqlx::query(
                "INSERT INTO samples (series_id, ts, v) SELECT series_id, ts, v FROM samples_in \
                 ON CONFLICT DO NOTHING",
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }
        Method::CopyBinarySavepoint => {
            tx.execute("SAVEPOINT c").await?;
            let copied = async {
                let mut copy = tx
                    .copy_in_raw("COPY samples FROM STDIN (FORMAT binary)")
                    .await?;
                copy.send(copy_binary(ids, ts, vs)).await?;
                copy.finish().await
            }
            .await;
            match copied {
                Ok(n) => {
                    tx.execute("RELEASE SAVEPOINT c").await?;
                    n
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                    tx.execute("ROLLBACK TO SAVEPOINT c").await?;
                    sqlx::query(
                        "INSERT INTO samples (series_id, ts, v) \
                         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[]) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(ids)
                    .bind(ts)
                    .bind(vs)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                }
                Err(e) => return Err(e),
            }
        }
        Method::CopyBinaryDirect => {
            let mut copy = tx
                .copy_in_raw("COPY samples FROM STDIN (FORMAT binary)")
                .await?;
            copy.send(copy_binary(ids, ts, vs)).await?;
            copy.finish().await?
        }
    };
    tx.commit().await?;
    Ok(n)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if bench { (ROWS, ROUNDS) } else { (2_000, 1) };
    let db = sentra_testkit::TestDb::new().await?;
    let mut conn = PgConnection::connect(db.url()).await?;
    let t0: i64 = 1_780_000_000_000;
    // Every (round, method) writes its own time range, so every row is new.
    let span = i64::try_from(n).unwrap_or(i64::MAX) / SERIES * 10_000 + 10_000;
    let total_span = span * i64::try_from(rounds * Method::ALL.len())?;
    setup(&mut conn, t0, total_span / DAY_MS + 2).await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await?;

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); Method::ALL.len()];
    let mut k = 0i64;
    for _ in 0..rounds {
        // Methods interleave within a round: a same-run comparison on the same table size.
        for (mi, &m) in Method::ALL.iter().enumerate() {
            let (ids, ts, vs) = rows(n, t0 + k * span);
            k += 1;
            let start = Instant::now();
            let stored = write(&mut conn, m, &ids, &ts, &vs).await?;
            times[mi].push(start.elapsed());
            assert_eq!(stored, n as u64, "{m:?} stored {stored} of {n} rows");
            // the same rows again must be a no-op for the idempotent methods
            if !bench && m != Method::CopyBinaryDirect {
                assert_eq!(write(&mut conn, m, &ids, &ts, &vs).await?, 0);
            }
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(count, i64::try_from(n * rounds * Method::ALL.len())?);
    drop(conn);

    if !bench {
        println!("pg_bulk: every method stored {n} rows (run with `cargo bench` to measure)");
        return Ok(());
    }
    println!(
        "pg_bulk: {n} rows per transaction incl. COMMIT, median of {rounds} interleaved rounds \
         (fsync={fsync}, synchronous_commit={sync})"
    );
    for (mi, m) in Method::ALL.iter().enumerate() {
        let med = median(times[mi].clone());
        #[allow(clippy::cast_precision_loss)]
        let rate = n as f64 / med.as_secs_f64();
        println!(
            "  {:>9.0} rows/s  {:>8.1} ms  {}",
            rate,
            med.as_secs_f64() * 1e3,
            m.label()
        );
    }
    Ok(())
}
