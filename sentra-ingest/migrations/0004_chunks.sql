-- Issue 18: raw samples are stored as per-series compressed chunks instead of one row per
-- sample (`src/backend/chunks.rs` has the layout, `src/chunk.rs` the encoding). A chunk holds
-- one series' samples of one kind inside one aligned 1-hour window; `gen` orders writes (the
-- oldest generation's sample wins a duplicate timestamp, as `ON CONFLICT DO NOTHING` did).
-- Clustered by series then start: a range read of one series is one seek and a short scan.
-- Rows from `samples` are converted into chunks when the database is opened
-- (`convert_legacy_samples`), and the table is dropped once empty.
CREATE TABLE chunks (
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    gen       INTEGER NOT NULL,
    end_ts    INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (series_id, start_ts, gen)
) WITHOUT ROWID;
