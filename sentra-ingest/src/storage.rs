//! Design notes: durability and the storage layout.
//!
//! These notes describe the embedded SQLite backend (feature `sqlite`). The rules that
//! make up the contract of every backend — the ack only after a durable commit of the
//! staged batch *and* its replay state, at-least-once apply that is idempotent by
//! `(series, ts)`, the replay decision, the query limits — live in the backend-free
//! pipeline (the replay window, the writer, the query plan) and are the same for all.
//!
//! # Durability
//!
//! `metrics.db` runs in WAL journal mode with `synchronous=FULL`: every commit fsyncs the
//! write-ahead log before `COMMIT` returns, so an acked batch survives a process crash *and*
//! a power loss. (`NORMAL` would survive a process crash but can lose the last commits on
//! power loss; an `Ack` promises the agent it may delete the data, so that is not enough.)
//!
//! One writer task owns the only write connection. Concurrent pushes queue up while the
//! previous commit is being fsynced; the writer then drains the queue (up to
//! [`Config::max_group_samples`](crate::Config::max_group_samples) samples) into **one**
//! transaction and one fsync, and answers every batch of the group after that commit: group
//! commit. Inside a group batches are handled in `(agent, seq)` order, so two in-flight
//! pushes of one agent are stored in sequence order whatever order they arrived in.
//!
//! # Staged apply
//!
//! The ack transaction does not touch the sample chunks. It appends each accepted batch's
//! signed payload to `pending` (append-only, sequential pages) together with the high-water
//! mark, replay window and WireGuard status; that is what makes the ack durable. The writer
//! keeps the decoded batches in memory and moves them into `series`/`chunks` in one
//! separate transaction that also deletes them from `pending`, when
//! [`Config::apply_samples`](crate::Config::apply_samples) samples are staged or
//! [`Config::apply_delay`](crate::Config::apply_delay) after the first was staged, before
//! maintenance, agent deletion, [`Ingest::flush`](crate::Ingest::flush) and shutdown. On
//! startup whatever is left in `pending` (a crash between the two transactions) is decoded
//! and applied again; a batch applied twice leaves two chunks holding the same samples,
//! which reads merge (one sample per timestamp) and maintenance compacts, so nothing is
//! lost or doubled.
//!
//! Why: an apply writes one chunk per series it touches, so the larger the group, the more
//! samples per chunk (better compression, fewer rows); the ack path writes only the payload
//! bytes. (With one row per sample, the store before chunks, committing samples with every
//! group of acks wrote ~40 MB of pages for 100 k samples over 10 k series, ≈16× write
//! amplification, measured.) The price is query visibility: a batch is
//! queryable up to `apply_delay` after its ack (the status cache and subscribers see it at
//! once).
//!
//! # Replay and de-duplication
//!
//! Each agent has a durable high-water mark `H` (highest stored seq) in table `agents`,
//! and the exact set of stored seqs as ranges in `seq_ranges`, both updated in the same
//! transaction as the staged batch, so a crash can never store a batch without recording
//! its seq or the reverse. A push with:
//!
//! * a stored seq is a `DUPLICATE`; a different envelope for a stored seq (fingerprint
//!   recorded in `accepted` for the last
//!   [`Config::replay_window`](crate::Config::replay_window) seqs) is also `DUPLICATE` but
//!   counted and logged as a conflict;
//! * `seq > H` within [`Config::max_seq_jump`](crate::Config::max_seq_jump) is stored and
//!   `H := seq` (a jump over missing seqs is counted in the agent's ledger); further
//!   ahead it is `REJECTED` (`SEQ_TOO_FAR_AHEAD`);
//! * `H − W < seq ≤ H` never stored (a pipelined push overtaken by the next one) is stored
//!   exactly once;
//! * `seq ≤ H − W` never stored is `REJECTED` (`SEQ_BELOW_HIGH_WATER`).
//!
//! Databases from before `seq_ranges` existed get one range `1..=H` per agent (what the
//! old rule, "everything at or below `H` counts as delivered", assumed).
//!
//! Sample inserts are `ON CONFLICT DO NOTHING` on `(series, timestamp)`, so even a batch
//! replayed after its window entry was pruned cannot duplicate a point.
//!
//! # Layout
//!
//! ```text
//! series   (id INTEGER PRIMARY KEY, agent, name, labels JSON, kind)   one row per series
//! chunks   (series_id, start_ts, gen, end_ts, n, data), UNIQUE (series_id, start_ts, gen):
//!          compressed samples of one series, kind and 1-hour window
//! rollup_1m, rollup_1h (series_id, bucket, min, max, sum, count, last, last_ts) WITHOUT ROWID
//! agents (high-water, last seen, ledger counters), accepted (replay window),
//! seq_ranges (every stored seq), wg_status (latest per agent), pending (staged), meta
//! ```
//!
//! Why this layout:
//!
//! * **No per-sample strings.** Name and labels live once in `series`. The writer keeps
//!   the whole series index in memory (agent → name → labels → id, borrowed lookups, ids
//!   assigned by the writer), so ingest never reads the database.
//! * **Compressed per-series chunks** (issue 18), as Prometheus TSDB and VictoriaMetrics
//!   store samples: timestamps as delta-of-deltas, counters as deltas, gauges as decimal
//!   mantissas (or Gorilla XOR), bit-packed (the format is in the `chunk` module's docs;
//!   [`decode_chunk`] reads it). An apply writes one chunk per series, kind and 1-hour
//!   window it touches, with a new generation (`meta.next_chunk_gen`, in the same
//!   transaction); reads merge a series' chunks and keep, of two samples with the same
//!   timestamp, the older generation's (what `INSERT … ON CONFLICT DO NOTHING` kept in
//!   the row store: the first write wins). Maintenance rewrites a window's chunks as one
//!   10 minutes after the window closed. Measured with `benches/pipeline.rs` (realistic
//!   values, README "Benchmarks"): about 15× smaller than a row per sample, and the apply
//!   writes hundreds of times fewer B-tree entries. The newest hour is the exception: with
//!   the default 1 s apply delay and agents sending every 10 s, an apply holds about one
//!   sample per series, so until compaction a sample costs about what a row did (an
//!   11-byte chunk in a row); over a 30-day retention that is 0.2 % of the data.
//! * **A rowid table with a unique index on `(series_id, start_ts, gen)`.** No chunk
//!   crosses a window, so the chunks that may hold `[from, to)` are
//!   `from − 1 h < start_ts < to` and `end_ts ≥ from`: one index seek and a short scan per
//!   series, then one row per chunk, for every history, aggregate and rollup query. Not
//!   `WITHOUT ROWID` (as the row store was): a compacted chunk is 0.3–1.5 KB, and
//!   `WITHOUT ROWID` rows above ~1 KB spill into mostly empty overflow pages.
//! * **Retention** drops a chunk once its newest sample is older than the cutoff, so raw
//!   samples may outlive the raw retention by up to one window (an hour).
//! * **Upgrade.** A store written before chunks has its `samples` rows converted at open
//!   (200 000 rows per step, logged), then the table is dropped.
//! * **Rollups** (1 minute, 1 hour: min/max/sum/count/last) are maintained by a
//!   background pass; history queries with a step that is a multiple of the rollup width
//!   over long ranges read them instead of raw samples (see
//!   [`Resolution`](crate::Resolution)).
//!
//! # Measured
//!
//! `cargo bench -p sentra-ingest --bench pipeline` (3 M samples from 20 agents over 10 000
//! series, realistic values, both backends in one run; the crate README has the table and
//! the row store it replaced): SQLite takes 1.2–1.45 M samples/s until every sample is
//! queryable on a quiet 2-vCPU machine, and stores them in 1.6 (a fleet's mix of values)
//! to 2.8 (every value changing randomly) bytes per sample once compacted, where one row
//! per sample took 25.

use crate::{Error, Result};

/// Decodes one stored sample chunk — a `data` value of table `chunks`, in either backend —
/// into `(timestamp ms, value)` pairs in time order, for tools that read the database
/// directly (an export, a consistency check). Counters come back as `f64`, NaN gauges as
/// NaN. Two chunks of a series may hold the same timestamp (a batch applied twice): the
/// one with the lower `gen` is what queries answer.
///
/// # Errors
///
/// [`Error::Storage`] naming the damage (truncated, unknown version, bad header).
///
/// # Examples
///
/// ```
/// let err = sentra_ingest::storage::decode_chunk(&[0xff, 1, 2]).unwrap_err();
/// assert!(err.to_string().contains("chunk"), "{err}");
/// ```
pub fn decode_chunk(data: &[u8]) -> Result<Vec<(i64, f64)>> {
    let mut samples = Vec::new();
    crate::chunk::decode(data, &mut samples).map_err(Error::storage("decoding a sample chunk"))?;
    Ok(samples
        .into_iter()
        .map(|(ts, v)| (ts, crate::backend::chunks::as_f64(v)))
        .collect())
}

/// Every sample of the given chunk rows as queries answer them: `(series, ts) → value`,
/// one per timestamp (of equal timestamps the chunk with the lowest `gen` wins, as in
/// reads). `rows` are `(series_id, gen, data)` of table `chunks`, in any order.
///
/// # Errors
///
/// As [`decode_chunk`].
///
/// # Examples
///
/// ```
/// let none: Vec<(i64, i64, Vec<u8>)> = Vec::new();
/// assert!(sentra_ingest::storage::samples_of_chunks(none).unwrap().is_empty());
/// ```
pub fn samples_of_chunks<D: AsRef<[u8]>>(
    rows: impl IntoIterator<Item = (i64, i64, D)>,
) -> Result<std::collections::BTreeMap<(i64, i64), f64>> {
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by_key(|r| r.1);
    let mut out = std::collections::BTreeMap::new();
    for (series, _, data) in rows {
        for (ts, v) in decode_chunk(data.as_ref())? {
            out.entry((series, ts)).or_insert(v);
        }
    }
    Ok(out)
}
