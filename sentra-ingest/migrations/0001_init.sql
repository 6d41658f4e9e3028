-- sentra-ingest storage schema, version 1. See the `storage` module docs for the rationale.

-- One row per agent: the durable replay high-water mark, the floor at or below which every
-- seq counts as already delivered (high_water - window when it last moved), and the last time
-- the agent was heard from.
CREATE TABLE agents (
    agent_id     TEXT    PRIMARY KEY NOT NULL,
    high_water   INTEGER NOT NULL,
    floor        INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Sequence numbers accepted within the out-of-order window below the high-water mark,
-- with the envelope fingerprint, so a retry is told apart from a conflicting re-sign.
CREATE TABLE accepted (
    agent_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;

-- One row per time series. `labels` is canonical JSON (keys sorted), so equal label sets
-- have equal text and `json_extract` can filter on a label.
CREATE TABLE series (
    id     INTEGER PRIMARY KEY,
    agent  TEXT    NOT NULL,
    name   TEXT    NOT NULL,
    labels TEXT    NOT NULL,
    kind   INTEGER NOT NULL, -- 0 gauge (REAL, NULL = NaN), 1 counter (INTEGER, u64 bit pattern)
    UNIQUE (agent, name, labels)
);
CREATE INDEX series_by_name ON series (name, agent);

-- Raw samples, clustered by series then time: a range read of one series is one seek and
-- a sequential scan; no rowid, no secondary index. `v` has no declared type (BLOB affinity):
-- counters stay INTEGER (1-8 bytes), gauges REAL.
CREATE TABLE samples (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    v,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;

-- Rollups: one row per series and bucket (bucket = start of the minute / hour, ms).
CREATE TABLE rollup_1m (
    series_id INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    min REAL, max REAL, sum REAL, count INTEGER NOT NULL, last REAL, last_ts INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;

CREATE TABLE rollup_1h (
    series_id INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    min REAL, max REAL, sum REAL, count INTEGER NOT NULL, last REAL, last_ts INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;

-- The latest WireGuard status per agent (protobuf-encoded `WgDevice`s of the newest batch
-- that carried any), so the status cache survives a restart.
CREATE TABLE wg_status (
    agent_id   TEXT    PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    devices    BLOB    NOT NULL
) WITHOUT ROWID;
