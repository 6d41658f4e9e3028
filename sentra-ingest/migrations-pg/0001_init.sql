-- sentra-ingest PostgreSQL schema, version 1: the same tables as the SQLite schema
-- (migrations/), with PostgreSQL types, and raw samples in native declarative range
-- partitions by day. See the `backend::postgres` module docs for the rationale.

-- One row per agent: the durable replay high-water mark, the floor at or below which every
-- seq counts as already delivered, the last time the agent was heard from, and the durable
-- ledger counters (updated in the same transaction as the batches they count).
CREATE TABLE agents (
    agent_id       TEXT   PRIMARY KEY,
    high_water     BIGINT NOT NULL,
    floor          BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    accepted       BIGINT NOT NULL DEFAULT 0,
    gaps           BIGINT NOT NULL DEFAULT 0,
    missing        BIGINT NOT NULL DEFAULT 0,
    rejected_stale BIGINT NOT NULL DEFAULT 0,
    rejected_ahead BIGINT NOT NULL DEFAULT 0
);

-- Seqs accepted within the out-of-order window below the high-water mark, with the
-- envelope fingerprint (a retry is told apart from a conflicting re-sign).
CREATE TABLE accepted (
    agent_id    TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    fingerprint BYTEA  NOT NULL,
    PRIMARY KEY (agent_id, seq)
);

-- Every seq ever stored per agent, as disjoint inclusive ranges [lo, hi].
CREATE TABLE seq_ranges (
    agent_id TEXT   NOT NULL,
    lo       BIGINT NOT NULL,
    hi       BIGINT NOT NULL,
    PRIMARY KEY (agent_id, lo)
);

-- One row per time series; ids are assigned by the (single) writer. `labels` is JSONB:
-- equal label sets are equal values, and `labels ->> 'name'` filters on a label.
CREATE TABLE series (
    id     BIGINT   PRIMARY KEY,
    agent  TEXT     NOT NULL,
    name   TEXT     NOT NULL,
    labels JSONB    NOT NULL,
    kind   SMALLINT NOT NULL, -- 0 gauge, 1 counter
    UNIQUE (agent, name, labels)
);
CREATE INDEX series_by_name ON series (name, agent);

-- Raw samples, one partition per UTC day of `ts` (Unix ms): `samples_d<days since epoch>`.
-- The writer creates a day's partition before inserting into it, maintenance creates the
-- next days ahead and DROPs whole days older than the retention (a metadata operation, no
-- row-by-row DELETE, no bloat). Samples of days already older than the retention (an agent
-- sending a backlog, or a wrong clock) get no partition of their own: they go to
-- `samples_default` until the next maintenance pass deletes them, so no agent can make
-- thousands of partitions. `v` is NULL for a NaN gauge (as in SQLite: aggregates skip it);
-- counters are stored as float8 (every query answers f64).
CREATE TABLE samples (
    series_id BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    v         DOUBLE PRECISION,
    PRIMARY KEY (series_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE samples_default PARTITION OF samples DEFAULT;

-- Rollups: one row per series and bucket (bucket = start of the minute / hour, ms).
CREATE TABLE rollup_1m (
    series_id BIGINT NOT NULL,
    bucket    BIGINT NOT NULL,
    min DOUBLE PRECISION, max DOUBLE PRECISION, sum DOUBLE PRECISION,
    count BIGINT NOT NULL, last DOUBLE PRECISION, last_ts BIGINT NOT NULL,
    PRIMARY KEY (series_id, bucket)
);
CREATE TABLE rollup_1h (
    series_id BIGINT NOT NULL,
    bucket    BIGINT NOT NULL,
    min DOUBLE PRECISION, max DOUBLE PRECISION, sum DOUBLE PRECISION,
    count BIGINT NOT NULL, last DOUBLE PRECISION, last_ts BIGINT NOT NULL,
    PRIMARY KEY (series_id, bucket)
);

-- The latest WireGuard status per agent (protobuf-encoded `WgDevice`s of the newest batch
-- that carried any), so the status cache survives a restart.
CREATE TABLE wg_status (
    agent_id   TEXT   PRIMARY KEY,
    seq        BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    devices    BYTEA  NOT NULL
);

-- The staging log: the ack transaction appends each accepted batch's signed payload here
-- (with the replay state); the writer applies staged batches to `samples` and deletes them
-- in the same transaction. What is left after a crash is applied again at start.
CREATE TABLE pending (
    id          BIGINT PRIMARY KEY,
    agent_id    TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    fingerprint BYTEA  NOT NULL,
    received_ms BIGINT NOT NULL,
    payload     BYTEA  NOT NULL
);

-- Small key/value facts; `storage_probe_ms` is rewritten to test that writes work again
-- after a storage failure.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT
);
