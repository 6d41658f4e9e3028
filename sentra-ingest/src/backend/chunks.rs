//! Raw samples at rest: per-series compressed chunks ([`crate::chunk`] is the encoding),
//! built and read here once for every backend.
//!
//! **Layout.** A chunk holds samples of one series, of one kind (gauge or counter), inside
//! one aligned [`CHUNK_WINDOW_MS`] window, at most [`MAX_CHUNK_SAMPLES`]. A backend stores
//! it as one row `(series_id, start_ts, generation, end_ts, n, data)`, keyed by
//! `(series_id, start_ts, generation)`: a range read of a series is one index seek, and because no
//! chunk spans a window, the chunks that can hold `[from, to)` are exactly those with
//! `from - window < start_ts < to` and `end_ts >= from`.
//!
//! **Generations and first-write-wins.** Each apply transaction writes its chunks with one
//! new generation (`meta.next_chunk_gen`, written in the same transaction), so generations
//! order writes. Two chunks may hold the same `(series, ts)`: a batch applied twice
//! (at-least-once staging, a bus redelivery) or two batches carrying the same timestamp.
//! Reads merge a series' chunks and keep the sample of the *oldest* generation, which is
//! what the row store's `INSERT … ON CONFLICT DO NOTHING` kept: the first write wins.
//! Maintenance compacts a closed window's chunks into one (dropping such duplicates).

use std::ops::ControlFlow;

use crate::{
    BoxError,
    backend::MetricReader,
    chunk::{self, ChunkError, MAX_CHUNK_SAMPLES},
    model::Stored,
    query::{Aggregation, Range},
};

/// The time window no chunk crosses (1 hour, aligned to the Unix epoch): it bounds the
/// index range a query scans, and how long raw retention may keep a chunk past its cutoff
/// (a chunk is dropped when its newest sample is older than the cutoff).
pub(crate) const CHUNK_WINDOW_MS: i64 = 3_600_000;

/// The start of the window holding `ts`; saturating, so the partial window at the bottom
/// of the i64 range (an agent may send any timestamp) is `i64::MIN`.
pub(crate) const fn window_start(ts: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(CHUNK_WINDOW_MS))
}

/// A chunk to insert.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewChunk {
    pub(crate) series: i64,
    /// Its first and last sample's timestamps (Unix ms).
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) generation: i64,
    /// Samples in it.
    pub(crate) count: i64,
    pub(crate) data: Vec<u8>,
}

/// A stored chunk as a read returns it (ordered by series, start, generation).
#[derive(Clone, Debug)]
pub(crate) struct ChunkRow {
    pub(crate) series: i64,
    pub(crate) start: i64,
    pub(crate) generation: i64,
    pub(crate) data: Vec<u8>,
}

/// A sample's value as every query answers it. Counters are unsigned (a counter above
/// `i64::MAX` stays positive).
#[allow(
    clippy::cast_precision_loss,
    reason = "queries answer f64; counters above 2^53 round as in any f64 answer"
)]
pub(crate) const fn as_f64(v: Stored) -> f64 {
    match v {
        Stored::Gauge(g) => g,
        Stored::Counter(c) => c as f64,
    }
}

/// Builds the chunks of `rows` (sorted by `(series, ts)` with a *stable* sort: of equal
/// `(series, ts)` the first staged is kept, the others dropped) with generation `generation`.
pub(crate) fn build(
    rows: &[(i64, i64, Stored)],
    generation: i64,
) -> Result<Vec<NewChunk>, ChunkError> {
    let mut out = Vec::new();
    let mut run: Vec<(i64, Stored)> = Vec::new();
    let mut series = None;
    let flush = |series: i64, run: &mut Vec<(i64, Stored)>, out: &mut Vec<NewChunk>| {
        let (Some(&(start, _)), Some(&(end, _))) = (run.first(), run.last()) else {
            return Ok(());
        };
        let mut data = Vec::with_capacity(16 + run.len() * 2);
        chunk::encode(run, &mut data)?;
        out.push(NewChunk {
            series,
            start,
            end,
            generation,
            count: i64::try_from(run.len()).unwrap_or(i64::MAX),
            data,
        });
        run.clear();
        Ok::<_, ChunkError>(())
    };
    for &(id, ts, v) in rows {
        if series != Some(id) {
            if let Some(s) = series {
                flush(s, &mut run, &mut out)?;
            }
            series = Some(id);
        } else if let Some(&(last_ts, last_v)) = run.last() {
            if ts == last_ts {
                continue; // a duplicate (series, ts): the first one stays
            }
            if window_start(ts) != window_start(last_ts)
                || last_v.kind() != v.kind()
                || run.len() >= MAX_CHUNK_SAMPLES as usize
            {
                flush(id, &mut run, &mut out)?;
            }
        }
        run.push((ts, v));
    }
    if let Some(s) = series {
        flush(s, &mut run, &mut out)?;
    }
    Ok(out)
}

/// Decodes `rows` (ordered by series, start, generation) and calls `each` once per series
/// with its samples in `[from, to)`, sorted by time, one per timestamp (the oldest
/// generation's), in series order, until `each` breaks.
///
/// # Errors
///
/// A damaged chunk, naming its series and start.
pub(crate) fn for_each_series(
    rows: &[ChunkRow],
    from: i64,
    to: i64,
    mut each: impl FnMut(i64, &[(i64, Stored)]) -> ControlFlow<()>,
) -> Result<(), BoxError> {
    let mut decoded: Vec<(i64, Stored)> = Vec::new();
    let mut samples: Vec<(i64, Stored)> = Vec::new();
    // which generation wrote `samples[start..]`: (start, generation), one per chunk
    let mut written_by: Vec<(usize, i64)> = Vec::new();
    let mut tagged: Vec<(i64, i64, Stored)> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let series = rows[i].series;
        samples.clear();
        written_by.clear();
        let mut sorted = true;
        while i < rows.len() && rows[i].series == series {
            let r = &rows[i];
            decoded.clear();
            chunk::decode(&r.data, &mut decoded).map_err(|e| -> BoxError {
                format!(
                    "stored chunk of series {series} starting at {} ms (generation {}) is damaged: {e}",
                    r.start, r.generation
                )
                .into()
            })?;
            let before = samples.len();
            samples.extend(decoded.iter().filter(|(ts, _)| *ts >= from && *ts < to));
            if let (Some(&(prev, _)), Some(&(first, _))) =
                (samples[..before].last(), samples.get(before))
            {
                sorted &= first > prev;
            }
            written_by.push((before, r.generation));
            i += 1;
        }
        if !sorted {
            // chunks overlap (a batch applied twice, or late samples): sort by time, and of
            // equal timestamps keep the oldest generation's
            tagged.clear();
            for (k, &(start, generation)) in written_by.iter().enumerate() {
                let end = written_by.get(k + 1).map_or(samples.len(), |&(e, _)| e);
                tagged.extend(
                    samples[start..end]
                        .iter()
                        .map(|&(ts, v)| (ts, generation, v)),
                );
            }
            tagged.sort_by_key(|&(ts, generation, _)| (ts, generation));
            tagged.dedup_by_key(|&mut (ts, _, _)| ts);
            samples.clear();
            samples.extend(tagged.iter().map(|&(ts, _, v)| (ts, v)));
        }
        if !samples.is_empty() && each(series, &samples).is_break() {
            return Ok(());
        }
    }
    Ok(())
}

/// Decodes every stored chunk, a page at a time: one line per damaged chunk (at most 100,
/// then how many more).
pub(crate) async fn check_all(reader: &impl MetricReader) -> crate::Result<Vec<String>> {
    const PAGE: i64 = 10_000;
    const SHOWN: usize = 100;
    let mut problems = Vec::new();
    let mut damaged = 0usize;
    let mut after = (i64::MIN, i64::MIN, i64::MIN);
    let mut decoded = Vec::new();
    loop {
        let rows = reader.chunk_page(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = (last.series, last.start, last.generation);
        for r in &rows {
            decoded.clear();
            if let Err(e) = chunk::decode(&r.data, &mut decoded) {
                damaged += 1;
                if problems.len() < SHOWN {
                    problems.push(format!(
                        "damaged sample chunk: series {} starting at {} ms (generation {}): {e}",
                        r.series, r.start, r.generation
                    ));
                }
            }
        }
    }
    if damaged > SHOWN {
        problems.push(format!("{} more damaged sample chunks", damaged - SHOWN));
    }
    Ok(problems)
}

/// `(series, step index, value)` of `samples` of one series over `range`, aggregated as
/// the row store's SQL did: a NaN gauge counts as SQL `NULL` (skipped by `avg`, `min`,
/// `max`, `sum`, `count`; a step of only NaNs answers NaN, `count` 0), `last` is the value
/// at the newest timestamp (NaN included).
pub(crate) fn aggregate(
    series: i64,
    samples: &[(i64, Stored)],
    range: Range,
    agg: Aggregation,
    out: &mut Vec<(i64, i64, f64)>,
) {
    // in i128: a hostile range (from near i64::MIN) must not overflow
    let step_of = |ts: i64| {
        let k = (i128::from(ts) - i128::from(range.from)) / i128::from(range.step.max(1));
        i64::try_from(k).unwrap_or(i64::MAX)
    };
    let mut k = 0;
    while k < samples.len() {
        let step = step_of(samples[k].0);
        let mut end = k;
        while end < samples.len() && step_of(samples[end].0) == step {
            end += 1;
        }
        let values = samples[k..end].iter().map(|&(_, v)| as_f64(v));
        let present = values.clone().filter(|v| !v.is_nan());
        let fold = |f: fn(f64, f64) -> f64| present.clone().reduce(f).unwrap_or(f64::NAN);
        #[allow(
            clippy::cast_precision_loss,
            reason = "a count of samples in one query is far below 2^53"
        )]
        let value = match agg {
            Aggregation::Avg => {
                let n = present.clone().count();
                if n == 0 {
                    f64::NAN
                } else {
                    present.clone().sum::<f64>() / n as f64
                }
            }
            Aggregation::Min => fold(f64::min),
            Aggregation::Max => fold(f64::max),
            Aggregation::Sum => fold(|a, b| a + b),
            Aggregation::Count => present.clone().count() as f64,
            Aggregation::Last => as_f64(samples[end - 1].1),
        };
        out.push((series, step, value));
        k = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(chunks: &[NewChunk]) -> Vec<ChunkRow> {
        let mut rows: Vec<ChunkRow> = chunks
            .iter()
            .map(|c| ChunkRow {
                series: c.series,
                start: c.start,
                generation: c.generation,
                data: c.data.clone(),
            })
            .collect();
        rows.sort_by_key(|r| (r.series, r.start, r.generation));
        rows
    }

    fn read(rows: &[ChunkRow], from: i64, to: i64) -> Vec<(i64, Vec<(i64, Stored)>)> {
        let mut got = Vec::new();
        for_each_series(rows, from, to, |s, x| {
            got.push((s, x.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        got
    }

    #[test]
    fn chunks_split_at_series_window_and_kind_and_drop_duplicate_timestamps() {
        let w = CHUNK_WINDOW_MS;
        let rows = [
            (1, 10, Stored::Gauge(1.0)),
            (1, 10, Stored::Gauge(99.0)), // duplicate: the first wins
            (1, 20, Stored::Gauge(2.0)),
            (1, w + 5, Stored::Gauge(3.0)), // next window
            (1, w + 6, Stored::Counter(7)), // kind change
            (2, 10, Stored::Counter(1)),
        ];
        let chunks = build(&rows, 4).unwrap();
        let spans: Vec<_> = chunks
            .iter()
            .map(|c| (c.series, c.start, c.end, c.count, c.generation))
            .collect();
        assert_eq!(
            spans,
            [
                (1, 10, 20, 2, 4),
                (1, w + 5, w + 5, 1, 4),
                (1, w + 6, w + 6, 1, 4),
                (2, 10, 10, 1, 4)
            ]
        );
        let got = read(&rows_of(&chunks), i64::MIN, i64::MAX);
        assert_eq!(got[0].1[0], (10, Stored::Gauge(1.0)));
        assert_eq!(got[0].1.len(), 4);
        assert_eq!(got[1], (2, vec![(10, Stored::Counter(1))]));
    }

    #[test]
    fn overlapping_generations_merge_and_the_oldest_wins() {
        let old = build(
            &[(1, 10, Stored::Gauge(1.0)), (1, 30, Stored::Gauge(3.0))],
            1,
        )
        .unwrap();
        let new = build(
            &[
                (1, 5, Stored::Gauge(0.5)),
                (1, 10, Stored::Gauge(100.0)),
                (1, 20, Stored::Gauge(2.0)),
            ],
            2,
        )
        .unwrap();
        let rows = rows_of(&[old, new].concat());
        assert_eq!(
            read(&rows, i64::MIN, i64::MAX),
            [(
                1,
                vec![
                    (5, Stored::Gauge(0.5)),
                    (10, Stored::Gauge(1.0)),
                    (20, Stored::Gauge(2.0)),
                    (30, Stored::Gauge(3.0)),
                ]
            )]
        );
        assert_eq!(
            read(&rows, 10, 30),
            [(1, vec![(10, Stored::Gauge(1.0)), (20, Stored::Gauge(2.0))])]
        );
    }

    #[test]
    fn a_damaged_chunk_is_an_error_naming_its_series() {
        let mut rows = rows_of(&build(&[(7, 10, Stored::Gauge(1.0))], 1).unwrap());
        rows[0].data.truncate(3);
        let err = for_each_series(&rows, i64::MIN, i64::MAX, |_, _| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("series 7"), "{err}");
    }

    #[test]
    fn aggregation_skips_nan_like_sql_null() {
        let range = Range {
            from: 0,
            to: 100,
            step: 10,
        };
        let samples = [
            (0, Stored::Gauge(1.0)),
            (5, Stored::Gauge(f64::NAN)),
            (7, Stored::Gauge(3.0)),
            (12, Stored::Gauge(f64::NAN)),
        ];
        let run = |agg| {
            let mut out = Vec::new();
            aggregate(9, &samples, range, agg, &mut out);
            out
        };
        assert_eq!(run(Aggregation::Avg)[0], (9, 0, 2.0));
        assert_eq!(run(Aggregation::Count), [(9, 0, 2.0), (9, 1, 0.0)]);
        assert_eq!(run(Aggregation::Max)[0], (9, 0, 3.0));
        assert!(run(Aggregation::Sum)[1].2.is_nan());
        assert_eq!(run(Aggregation::Last)[0], (9, 0, 3.0));
    }
}
