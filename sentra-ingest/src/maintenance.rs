//! Rollups and retention, run by a background task (and on demand).
//!
//! The writer records, per series, the earliest timestamp written since the last pass (the
//! "dirty" map). A pass recomputes the 1-minute buckets from that minute on from raw
//! samples, and the 1-hour buckets from that hour on from the 1-minute buckets, and writes
//! them with `INSERT OR REPLACE` through the writer task (SQLite has one writer; routing
//! maintenance through it avoids lock contention with ingest). Late samples therefore fix
//! up their buckets on the next pass. Only after rollups are written is raw data older
//! than the retention deleted. At startup every series is marked dirty from its newest
//! 1-minute bucket, so nothing written before a crash is missed.

use std::{collections::HashMap, ops::ControlFlow, sync::atomic::Ordering, time::Duration};

use tokio::sync::{mpsc, oneshot};

use crate::{
    Error, Result,
    backend::{
        MetricReader, Reader,
        chunks::{self, CHUNK_WINDOW_MS, ChunkRow, NewChunk},
    },
    writer::{Dirty, Request},
};

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// One rollup bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) series_id: i64,
    pub(crate) bucket: i64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) sum: f64,
    pub(crate) count: i64,
    pub(crate) last: f64,
    pub(crate) last_ts: i64,
}

impl Bucket {
    fn new(series_id: i64, bucket: i64) -> Self {
        Self {
            series_id,
            bucket,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            count: 0,
            last: f64::NAN,
            last_ts: i64::MIN,
        }
    }

    fn add(&mut self, ts: i64, v: f64) {
        if v.is_nan() {
            return;
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
        if ts >= self.last_ts {
            self.last_ts = ts;
            self.last = v;
        }
    }

    fn merge(&mut self, o: &Self) {
        if o.count == 0 {
            return;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
        if o.last_ts >= self.last_ts {
            self.last_ts = o.last_ts;
            self.last = o.last;
        }
    }
}

/// How long after its window ends a window's chunks are compacted: batches of that window
/// still arriving (agents send every few seconds; a backlog later) add chunks, each of
/// which would otherwise mean one more rewrite of the window.
pub(crate) const COMPACT_AFTER_MS: i64 = 10 * MINUTE_MS;

/// One closed window of one series whose chunks are rewritten as one.
#[derive(Debug)]
pub(crate) struct Compaction {
    pub(crate) series: i64,
    /// `(start, generation)` keys of the chunks it replaces.
    pub(crate) remove: Vec<(i64, i64)>,
    /// The chunks replacing them (one unless the kind changes or the window is huge), with
    /// the oldest generation of those they replace, so a duplicate timestamp written later
    /// still loses against them.
    pub(crate) add: Vec<NewChunk>,
}

/// Writes one maintenance step performs, executed by the writer in one transaction.
#[derive(Debug, Default)]
pub(crate) struct MaintenanceWrite {
    pub(crate) rollup_1m: Vec<Bucket>,
    pub(crate) rollup_1h: Vec<Bucket>,
    /// Chunk compactions (before retention).
    pub(crate) compactions: Vec<Compaction>,
    /// Delete raw samples, 1 m and 1 h rollups older than these (Unix ms).
    pub(crate) cutoffs: Option<(i64, i64, i64)>,
}

/// What one maintenance pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Series whose rollups were recomputed.
    pub series_rolled_up: usize,
    /// 1-minute buckets written.
    pub minute_buckets: usize,
    /// 1-hour buckets written.
    pub hour_buckets: usize,
    /// Sample chunks rewritten into fewer (closed windows of one series with more than one
    /// chunk: one per apply that wrote into them).
    pub chunks_compacted: usize,
}

pub(crate) struct Maintainer {
    pub(crate) reader: Reader,
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) dirty: Dirty,
    pub(crate) retention: (Duration, Duration, Duration),
    /// Windows starting before this were scanned for compaction by an earlier pass
    /// ([`Maintainer::compaction_scan`]); later samples in them are compacted through the
    /// dirty map (`rollup_series`). `i64::MIN` at start: the first pass scans every window.
    pub(crate) compacted_before: std::sync::atomic::AtomicI64,
}

/// Start of the bucket of width `unit` holding `ts`. Saturates: "dirty from the beginning
/// of time" (`i64::MIN`, every series at startup before its first rollup) stays `i64::MIN`
/// instead of overflowing.
fn floor(ts: i64, unit: i64) -> i64 {
    ts.div_euclid(unit).saturating_mul(unit)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Maintainer {
    async fn send(&self, job: MaintenanceWrite) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Maintenance(job, reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Marks every series dirty from its newest 1-minute bucket (startup).
    pub(crate) async fn mark_all_dirty(&self) -> Result<()> {
        let rows = self.reader.rollup_progress().await?;
        let mut dirty = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, from) in rows {
            let from = from.unwrap_or(i64::MIN);
            dirty
                .entry(id)
                .and_modify(|t| *t = (*t).min(from))
                .or_insert(from);
        }
        Ok(())
    }

    /// One pass: rollups for everything dirty, then retention relative to `now_ms`.
    pub(crate) async fn pass(&self, now_ms: i64) -> Result<MaintenanceReport> {
        // Staged batches first, so their samples are in the dirty map.
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Flush(reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)??;
        let work: HashMap<i64, i64> = std::mem::take(
            &mut *self
                .dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut report = MaintenanceReport::default();
        let mut job = MaintenanceWrite::default();
        let mut done: Vec<(i64, i64)> = Vec::new();
        let mut ids: Vec<_> = work.into_iter().collect();
        ids.sort_unstable();
        let scanned_before = self.compacted_before.load(Ordering::Relaxed);
        for (i, &(id, from)) in ids.iter().enumerate() {
            match self
                .rollup_series(id, from, now_ms, scanned_before, &mut job)
                .await
            {
                Ok(()) => report.series_rolled_up += 1,
                Err(e) => {
                    self.redirty(&ids[i..]);
                    self.redirty(&done);
                    return Err(e);
                }
            }
            done.push((id, from));
            if job.rollup_1m.len() + job.rollup_1h.len() + job.compactions.len() >= 20_000 {
                report.count(&job);
                if let Err(e) = self.send(std::mem::take(&mut job)).await {
                    self.redirty(&ids[i..]);
                    self.redirty(&done);
                    return Err(e);
                }
                done.clear();
            }
        }
        let scan_to = floor(now_ms.saturating_sub(COMPACT_AFTER_MS), CHUNK_WINDOW_MS);
        if let Err(e) = self
            .compaction_scan(scanned_before, scan_to, now_ms, &mut job, &mut report)
            .await
        {
            self.redirty(&done);
            return Err(e);
        }
        report.count(&job);
        let (raw, m1, h1) = self.retention;
        job.cutoffs = Some((
            now_ms.saturating_sub(ms(raw)),
            now_ms.saturating_sub(ms(m1)),
            now_ms.saturating_sub(ms(h1)),
        ));
        if let Err(e) = self.send(job).await {
            self.redirty(&done);
            return Err(e);
        }
        self.compacted_before.fetch_max(scan_to, Ordering::Relaxed);
        Ok(report)
    }

    /// Compacts every window starting in `[from, to)` (closed [`COMPACT_AFTER_MS`] ago)
    /// that holds more than one chunk of a series, whether or not the series is still
    /// written: a series whose agent went quiet is never dirty again. The keys come from
    /// the index (`series_id, start_ts`); each crowded window is then read on its own.
    async fn compaction_scan(
        &self,
        from: i64,
        to: i64,
        now_ms: i64,
        job: &mut MaintenanceWrite,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut keys = self.reader.chunk_starts(from, to).await?;
        keys.sort_unstable();
        let mut crowded: Vec<(i64, i64)> = Vec::new();
        for pair in keys.windows(2) {
            let (a, b) = (
                (pair[0].0, floor(pair[0].1, CHUNK_WINDOW_MS)),
                (pair[1].0, floor(pair[1].1, CHUNK_WINDOW_MS)),
            );
            if a == b && crowded.last() != Some(&a) {
                crowded.push(a);
            }
        }
        for (series, window) in crowded {
            let rows = self
                .reader
                .chunks(&[series], window, window.saturating_add(CHUNK_WINDOW_MS))
                .await?;
            compact(series, &rows, now_ms, i64::MAX, job)?;
            if job.compactions.len() >= 1_000 {
                report.count(job);
                let full = std::mem::take(job);
                self.send(full).await?;
            }
        }
        Ok(())
    }

    fn redirty(&self, items: &[(i64, i64)]) {
        let mut dirty = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for &(id, from) in items {
            dirty
                .entry(id)
                .and_modify(|t| *t = (*t).min(from))
                .or_insert(from);
        }
    }

    /// The rollups of series `id` from `from` on, and the compaction of its closed windows
    /// starting before `scanned_before` (late samples in windows an earlier pass already
    /// scanned; one read of its chunks serves both).
    async fn rollup_series(
        &self,
        id: i64,
        from: i64,
        now_ms: i64,
        scanned_before: i64,
        job: &mut MaintenanceWrite,
    ) -> Result<()> {
        let m_from = floor(from, MINUTE_MS);
        let h_from = floor(from, HOUR_MS);
        // whole windows, so a compaction sees every chunk of the windows it rewrites
        let chunk_rows = self
            .reader
            .chunks(&[id], floor(m_from, CHUNK_WINDOW_MS), i64::MAX)
            .await?;
        let mut rows: Vec<(i64, Option<f64>)> = Vec::new();
        chunks::for_each_series(&chunk_rows, m_from, i64::MAX, |_, samples| {
            rows.extend(samples.iter().map(|&(ts, v)| {
                let v = chunks::as_f64(v);
                (ts, (!v.is_nan()).then_some(v))
            }));
            ControlFlow::Continue(())
        })
        .map_err(Error::storage("reading samples for rollup"))?;
        compact(id, &chunk_rows, now_ms, scanned_before, job)?;
        let mut minutes: Vec<Bucket> = Vec::new();
        for (ts, v) in rows {
            let b = floor(ts, MINUTE_MS);
            if minutes.last().is_none_or(|m| m.bucket != b) {
                minutes.push(Bucket::new(id, b));
            }
            if let (Some(m), Some(v)) = (minutes.last_mut(), v) {
                m.add(ts, v);
            }
        }
        minutes.retain(|m| m.count > 0);
        // 1-hour buckets from the stored 1-minute buckets before `m_from` plus the new ones.
        let earlier = self.reader.minute_buckets(id, h_from, m_from).await?;
        let mut hours: Vec<Bucket> = Vec::new();
        for m in earlier.into_iter().chain(minutes.iter().copied()) {
            let b = floor(m.bucket, HOUR_MS);
            if hours.last().is_none_or(|h| h.bucket != b) {
                hours.push(Bucket::new(id, b));
            }
            if let Some(h) = hours.last_mut() {
                h.merge(&m);
            }
        }
        job.rollup_1m.extend(minutes);
        job.rollup_1h.extend(hours);
        Ok(())
    }
}

impl MaintenanceReport {
    fn count(&mut self, job: &MaintenanceWrite) {
        self.minute_buckets += job.rollup_1m.len();
        self.hour_buckets += job.rollup_1h.len();
        self.chunks_compacted += job
            .compactions
            .iter()
            .map(|c| c.remove.len())
            .sum::<usize>();
    }
}

/// Plans the compaction of every window of `rows` (one series' chunks, ordered by start and
/// generation, covering whole windows) that starts before `before`, ended
/// [`COMPACT_AFTER_MS`] before `now_ms` and holds more than one chunk.
fn compact(
    id: i64,
    rows: &[ChunkRow],
    now_ms: i64,
    before: i64,
    job: &mut MaintenanceWrite,
) -> Result<()> {
    let closed_before = now_ms.saturating_sub(COMPACT_AFTER_MS);
    let mut i = 0;
    while i < rows.len() {
        let window = floor(rows[i].start, CHUNK_WINDOW_MS);
        let mut j = i;
        while j < rows.len() && floor(rows[j].start, CHUNK_WINDOW_MS) == window {
            j += 1;
        }
        let group = &rows[i..j];
        i = j;
        if group.len() < 2
            || window >= before
            || window.saturating_add(CHUNK_WINDOW_MS) > closed_before
        {
            continue;
        }
        let oldest = group.iter().map(|r| r.generation).min().unwrap_or(0);
        let mut samples = Vec::new();
        chunks::for_each_series(group, i64::MIN, i64::MAX, |_, s| {
            samples.extend(s.iter().map(|&(ts, v)| (id, ts, v)));
            ControlFlow::Continue(())
        })
        .map_err(Error::storage("reading chunks to compact"))?;
        let add = chunks::build(&samples, oldest).map_err(Error::storage("compacting chunks"))?;
        job.compactions.push(Compaction {
            series: id,
            remove: group.iter().map(|r| (r.start, r.generation)).collect(),
            add,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_math() {
        let mut b = Bucket::new(1, 0);
        b.add(10, 3.0);
        b.add(5, 1.0);
        b.add(20, 2.0);
        b.add(30, f64::NAN);
        assert_eq!(
            (b.min, b.max, b.sum, b.count, b.last),
            (1.0, 3.0, 6.0, 3, 2.0)
        );
        let mut h = Bucket::new(1, 0);
        h.merge(&b);
        h.merge(&Bucket::new(1, 60_000));
        assert_eq!((h.count, h.last, h.last_ts), (3, 2.0, 20));
        assert_eq!(floor(-1, MINUTE_MS), -MINUTE_MS);
        assert_eq!(floor(HOUR_MS + 5, HOUR_MS), HOUR_MS);
        assert_eq!(floor(i64::MIN, MINUTE_MS), i64::MIN);
        assert_eq!(floor(i64::MIN, HOUR_MS), i64::MIN);
    }
}
