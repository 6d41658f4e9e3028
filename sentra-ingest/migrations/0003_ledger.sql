-- Hardening (issue 10): a durable per-agent ledger, exact record of stored seqs, storage probe.

-- Durable counters per agent, updated in the same transaction as the batches they count:
-- batches accepted, accepted jumps over missing seqs (`gaps`) and the seqs they skipped
-- (`missing`, lowered again when a skipped seq arrives late), batches refused because their
-- seq is below the high-water mark and was never stored (`rejected_stale`) or jumps too far
-- ahead (`rejected_ahead`).
ALTER TABLE agents ADD COLUMN accepted       INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN gaps           INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN missing        INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN rejected_stale INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN rejected_ahead INTEGER NOT NULL DEFAULT 0;

-- Every seq ever stored per agent, as disjoint inclusive ranges [lo, hi] (one range for an
-- agent that never lost anything): `DUPLICATE` is answered only for a seq in a range.
CREATE TABLE seq_ranges (
    agent_id TEXT    NOT NULL,
    lo       INTEGER NOT NULL,
    hi       INTEGER NOT NULL,
    PRIMARY KEY (agent_id, lo)
) WITHOUT ROWID;
-- Before this version every seq at or below the high-water mark counted as delivered.
INSERT INTO seq_ranges (agent_id, lo, hi)
    SELECT agent_id, 1, high_water FROM agents WHERE high_water > 0;

-- Small key/value facts; `storage_probe_ms` is rewritten to test that writes work again
-- after a storage failure.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value
) WITHOUT ROWID;
