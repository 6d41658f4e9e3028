-- Issue 18: raw samples are stored as per-series compressed chunks instead of one row per
-- sample (`src/backend/chunks.rs` has the layout, `src/chunk.rs` the encoding). A chunk holds
-- one series' samples of one kind inside one aligned 1-hour window; `gen` orders writes (the
-- oldest generation's sample wins a duplicate timestamp, as `ON CONFLICT DO NOTHING` did).
-- Partitioned by UTC day of `start_ts` like `samples` was (`chunks_d<days since epoch>`,
-- created ahead, DROPped for retention; chunks of days already older than the retention go
-- to `chunks_default` until maintenance deletes them). A 1-hour window never crosses a day.
-- Rows of `samples` are converted into chunks when the database is opened
-- (`convert_legacy_samples`), and `samples` is dropped once empty.
CREATE TABLE chunks (
    series_id BIGINT NOT NULL,
    start_ts  BIGINT NOT NULL,
    gen       BIGINT NOT NULL,
    end_ts    BIGINT NOT NULL,
    n         INTEGER NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (series_id, start_ts, gen)
) PARTITION BY RANGE (start_ts);
CREATE TABLE chunks_default PARTITION OF chunks DEFAULT;
