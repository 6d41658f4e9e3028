-- Staged apply: the ack transaction appends the batch's signed payload here (sequential
-- pages, no per-series page writes); the writer moves staged batches into `samples` in large
-- groups and deletes them in the same transaction. After a crash, what is left here is
-- applied again on startup (sample inserts are idempotent).
CREATE TABLE pending (
    id          INTEGER PRIMARY KEY,
    agent_id    TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    fingerprint BLOB    NOT NULL,
    received_ms INTEGER NOT NULL,
    payload     BLOB    NOT NULL
);
