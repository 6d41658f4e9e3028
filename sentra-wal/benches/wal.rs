//! sentra-wal vs okaywal vs a raw `write` + `fdatasync` loop, same machine, same run, same
//! durability (every acknowledged append is `fdatasync`ed; okaywal commits with `sync_data`).
//!
//! ```text
//! cargo bench -p sentra-wal --bench wal -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! * (a) criterion group `append_256B`: appends/s of 256-byte records with 1, 4 and 16
//!   concurrent appenders — sentra per-record `append` (default options: preallocated
//!   segments; and `preallocate(false)`, growing), sentra `append_batch` (256 per call),
//!   okaywal (one entry per record, committed), okaywal_batch256 (256 chunks per committed
//!   entry, the fair peer of `append_batch`), raw (each appender its own file, one
//!   `write` + `fdatasync` per record).
//! * (b) single-appender latency p50/p99 (printed table, 3000 appends each).
//! * (c) time to open a 1 GiB log (`SENTRA_WAL_BENCH_OPEN_MB` to change) and, for
//!   comparison, a full verifying `inspect` of it; the open again with a cold page cache
//!   (`sync; echo 3 > /proc/sys/vm/drop_caches`, root only).
//! * (d) same-run ratios: sentra vs okaywal at 1 record per commit and at 256 records per
//!   commit (`append_batch` vs one okaywal entry of 256 chunks), each next to the physical
//!   ceiling (one `write` of the group + `fdatasync`, growing and preallocated file).
//!
//! Only the printed sections (criterion's filter `none` skips every criterion group):
//! `cargo bench -p sentra-wal --bench wal -- --warm-up-time 1 --measurement-time 3 none`
//!
//! Without `--bench` (as under `cargo test --all-targets`) everything runs once at tiny sizes.
//!
//! `SENTRA_WAL_BENCH_ONLY=group16` runs only the 16-appender, 1-record comparison of (d)
//! (sentra, okaywal, ceiling, and the cycle without `fdatasync`; `SENTRA_WAL_BENCH_ROUNDS`
//! short rounds, 20 by default, each printed, and the medians over the quiet-disk rounds);
//! `SENTRA_WAL_BENCH_ONLY=sentra16` runs only sentra's 16 appenders (for `perf stat`).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sentra_wal::{Options, SyncPolicy, Wal};

const REC: usize = 256;
const BATCH: usize = 256;

#[derive(Debug)]
struct NoCheckpoint;

impl okaywal::LogManager for NoCheckpoint {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }
    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

static SMOKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn sentra_opts() -> Options {
    let seg = if SMOKE.load(std::sync::atomic::Ordering::Relaxed) {
        1 << 20
    } else {
        64 << 20
    };
    Options::default().segment_size(seg).disk_cap(64 << 30)
}

/// Runs `per_thread(thread, count)` on `threads` threads splitting `total` appends; returns
/// the wall time.
fn fan_out(threads: usize, total: u64, per_thread: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let per = total.div_ceil(threads as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || per_thread(t, per));
        }
    });
    start.elapsed()
}

fn bench_throughput(c: &mut Criterion, smoke: bool) {
    let rec = [0x5au8; REC];
    let mut g = c.benchmark_group("append_256B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    let threads_list: &[usize] = if smoke { &[2] } else { &[1, 4, 16] };
    for &threads in threads_list {
        // sentra-wal, one record per append call (preallocated segments;
        // and growing segments, `preallocate(false)`).
        for (name, prealloc) in [("sentra_growing", false), ("sentra", true)] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(dir.path(), sentra_opts().preallocate(prealloc)).unwrap();
            g.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    let d = fan_out(threads, iters, &|_, n| {
                        for _ in 0..n {
                            wal.append(&rec).unwrap();
                        }
                    });
                    wal.ack(wal.committed_lsn()).unwrap();
                    d
                });
            });
        }
        // sentra-wal, `append_batch` of 256 records per call.
        {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _) = Wal::open(dir.path(), sentra_opts()).unwrap();
            let batch: Vec<&[u8]> = vec![&rec[..]; BATCH];
            g.bench_function(BenchmarkId::new("sentra_batch256", threads), |b| {
                b.iter_custom(|iters| {
                    let d = fan_out(threads, iters, &|_, n| {
                        let mut left = n as usize;
                        while left > 0 {
                            let k = left.min(BATCH);
                            wal.append_batch(&batch[..k]).unwrap();
                            left -= k;
                        }
                    });
                    wal.ack(wal.committed_lsn()).unwrap();
                    d
                });
            });
        }
        // okaywal, 256 records (chunks) per committed entry: the fair peer of `append_batch`.
        {
            let dir = tempfile::tempdir().unwrap();
            let log = okaywal::WriteAheadLog::recover(dir.path(), NoCheckpoint).unwrap();
            g.bench_function(BenchmarkId::new("okaywal_batch256", threads), |b| {
                b.iter_custom(|iters| {
                    fan_out(threads, iters, &|_, n| okaywal_batches(&log, &rec, n))
                });
            });
            log.shutdown().unwrap();
        }
        // okaywal: one committed entry per record.
        {
            let dir = tempfile::tempdir().unwrap();
            let log = okaywal::WriteAheadLog::recover(dir.path(), NoCheckpoint).unwrap();
            g.bench_function(BenchmarkId::new("okaywal", threads), |b| {
                b.iter_custom(|iters| {
                    fan_out(threads, iters, &|_, n| {
                        for _ in 0..n {
                            let mut w = log.begin_entry().unwrap();
                            w.write_chunk(&rec).unwrap();
                            w.commit().unwrap();
                        }
                    })
                });
            });
            log.shutdown().unwrap();
        }
        // Raw: each appender appends to its own file, write + fdatasync per record.
        {
            let dir = tempfile::tempdir().unwrap();
            let files: Vec<File> = (0..threads)
                .map(|t| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.path().join(format!("raw{t}")))
                        .unwrap()
                })
                .collect();
            g.bench_function(BenchmarkId::new("raw_fdatasync", threads), |b| {
                b.iter_custom(|iters| {
                    let d = fan_out(threads, iters, &|t, n| {
                        let mut f = &files[t];
                        for _ in 0..n {
                            f.write_all(&rec).unwrap();
                            f.sync_data().unwrap();
                        }
                    });
                    for f in &files {
                        f.set_len(0).unwrap();
                    }
                    d
                });
            });
        }
    }
    g.finish();
}

/// Appends `n` records to okaywal in entries of up to [`BATCH`] chunks, one commit each.
fn okaywal_batches(log: &okaywal::WriteAheadLog, rec: &[u8], n: u64) {
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(BATCH);
        let mut w = log.begin_entry().unwrap();
        for _ in 0..k {
            w.write_chunk(rec).unwrap();
        }
        w.commit().unwrap();
        left -= k;
    }
}

/// The physical limit: the time of `rounds` cycles of one `write` of `group` bytes +
/// `fdatasync`, on a file that grows (like a segment without preallocation) or overwrites
/// zeros written and synced beforehand (like a preallocated segment).
fn group_sync(group: usize, prealloc: bool, rounds: usize) -> Duration {
    use std::os::unix::fs::FileExt as _;
    let dir = tempfile::tempdir().unwrap();
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("ceiling"))
        .unwrap();
    let total = group * rounds;
    if prealloc {
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < total {
            f.write_all_at(&zeros, off as u64).unwrap();
            off += zeros.len();
        }
        f.sync_all().unwrap();
    }
    let buf = vec![0x5au8; group];
    let t = Instant::now();
    for i in 0..rounds {
        f.write_all_at(&buf, (i * group) as u64).unwrap();
        f.sync_data().unwrap();
    }
    t.elapsed()
}

/// Records/s of `threads` appenders each appending `per_thread` records through `f`.
fn rate(threads: usize, per_thread: u64, f: &(dyn Fn(usize, u64) + Sync)) -> f64 {
    let d = fan_out(threads, per_thread * threads as u64, f);
    (per_thread * threads as u64) as f64 / d.as_secs_f64()
}

/// (d) Same-run ratios: every system runs the same record count, interleaved over `rounds`
/// rounds (best round kept), next to the group-commit ceiling of the same appenders: one
/// write of every appender's records + one `fdatasync` per cycle, measured the same way.
fn ratios(smoke: bool) {
    let rec = [0x5au8; REC];
    let rounds = if smoke { 1 } else { 3 };
    let threads_list: &[usize] = if smoke { &[2] } else { &[1, 16] };
    println!("\n(d) same-run ratios, 256 B records (best of {rounds} interleaved rounds)");
    for &threads in threads_list {
        let per = if smoke { 20 } else { 200 };
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (wal, _) = Wal::open(dirs[0].path(), sentra_opts().preallocate(false)).unwrap();
        let (walp, _) = Wal::open(dirs[1].path(), sentra_opts()).unwrap();
        let log = okaywal::WriteAheadLog::recover(dirs[2].path(), NoCheckpoint).unwrap();
        let (mut s, mut sp, mut o) = (0f64, 0f64, 0f64);
        let (mut grow, mut pre) = (Duration::MAX, Duration::MAX);
        for _ in 0..rounds {
            grow = grow.min(group_sync(threads * REC, false, per as usize));
            pre = pre.min(group_sync(threads * REC, true, per as usize));
            s = s.max(rate(threads, per, &|_, n| {
                for _ in 0..n {
                    wal.append(&rec).unwrap();
                }
            }));
            sp = sp.max(rate(threads, per, &|_, n| {
                for _ in 0..n {
                    walp.append(&rec).unwrap();
                }
            }));
            o = o.max(rate(threads, per, &|_, n| {
                for _ in 0..n {
                    let mut w = log.begin_entry().unwrap();
                    w.write_chunk(&rec).unwrap();
                    w.commit().unwrap();
                }
            }));
        }
        log.shutdown().unwrap();
        let (grow, pre) = (grow / per as u32, pre / per as u32);
        let ceil = threads as f64 / pre.min(grow).as_secs_f64();
        println!(
            "{threads:>2} appenders, 1 record/append: sentra growing {s:.0}/s, sentra preallocated {sp:.0}/s, okaywal {o:.0}/s; sentra growing/okaywal {:.2}x, sentra/okaywal {:.2}x",
            s / o,
            sp / o
        );
        println!(
            "   ceiling: one write of {} B + fdatasync per group: growing file {:.0} µs, preallocated {:.0} µs -> ceiling {ceil:.0} rec/s; sentra growing/ceiling {:.2}x, sentra/ceiling {:.2}x",
            threads * REC,
            us(grow),
            us(pre),
            s / ceil,
            sp / ceil
        );

        let per = if smoke {
            BATCH as u64
        } else {
            16 * BATCH as u64
        };
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let (wal, _) = Wal::open(dirs[0].path(), sentra_opts()).unwrap();
        let log = okaywal::WriteAheadLog::recover(dirs[1].path(), NoCheckpoint).unwrap();
        let batch: Vec<&[u8]> = vec![&rec[..]; BATCH];
        let (mut s, mut o) = (0f64, 0f64);
        let group = threads * BATCH * REC;
        let cycles = per as usize / BATCH;
        let (mut grow, mut pre) = (Duration::MAX, Duration::MAX);
        for _ in 0..rounds {
            grow = grow.min(group_sync(group, false, cycles));
            pre = pre.min(group_sync(group, true, cycles));
            s = s.max(rate(threads, per, &|_, n| {
                let mut left = n as usize;
                while left > 0 {
                    let k = left.min(BATCH);
                    wal.append_batch(&batch[..k]).unwrap();
                    left -= k;
                }
            }));
            o = o.max(rate(threads, per, &|_, n| okaywal_batches(&log, &rec, n)));
        }
        log.shutdown().unwrap();
        let (grow, pre) = (grow / cycles as u32, pre / cycles as u32);
        let ceil = (threads * BATCH) as f64 / pre.min(grow).as_secs_f64();
        println!(
            "{threads:>2} appenders, {BATCH} records/commit: sentra append_batch {s:.0}/s, okaywal {o:.0}/s; sentra/okaywal {:.2}x",
            s / o
        );
        println!(
            "   ceiling: one write of {} KiB + fdatasync per group: growing file {:.0} µs, preallocated {:.0} µs -> ceiling {ceil:.0} rec/s; sentra/ceiling {:.2}x",
            group >> 10,
            us(grow),
            us(pre),
            s / ceil
        );
    }
}

/// Drops the page cache (needs root); `false` if that is not allowed here.
fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(0.50), p(0.99))
}

fn latency(samples: usize) -> Vec<(&'static str, Duration, Duration)> {
    let rec = [0xa5u8; REC];
    let mut out = Vec::new();
    // Raw write + fdatasync, file grows (like the WAL's segments).
    {
        let dir = tempfile::tempdir().unwrap();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("raw"))
            .unwrap();
        let v: Vec<Duration> = (0..samples)
            .map(|_| {
                let t = Instant::now();
                f.write_all(&rec).unwrap();
                f.sync_data().unwrap();
                t.elapsed()
            })
            .collect();
        let (p50, p99) = percentiles(v);
        out.push(("raw write+fdatasync", p50, p99));
    }
    for (name, prealloc) in [("sentra-wal growing", false), ("sentra-wal default", true)] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), sentra_opts().preallocate(prealloc)).unwrap();
        let v: Vec<Duration> = (0..samples)
            .map(|_| {
                let t = Instant::now();
                wal.append(&rec).unwrap();
                t.elapsed()
            })
            .collect();
        let (p50, p99) = percentiles(v);
        out.push((name, p50, p99));
    }
    {
        let dir = tempfile::tempdir().unwrap();
        let log = okaywal::WriteAheadLog::recover(dir.path(), NoCheckpoint).unwrap();
        let v: Vec<Duration> = (0..samples)
            .map(|_| {
                let t = Instant::now();
                let mut w = log.begin_entry().unwrap();
                w.write_chunk(&rec).unwrap();
                w.commit().unwrap();
                t.elapsed()
            })
            .collect();
        let (p50, p99) = percentiles(v);
        out.push(("okaywal commit", p50, p99));
        log.shutdown().unwrap();
    }
    out
}

/// Builds a log of `mb` MiB (4 KiB records, written without per-record sync, synced on
/// rotation and close), then times `Wal::open` and a full `inspect` (warm cache), and
/// `Wal::open` again after dropping the page cache (`None` without root).
fn open_time(mb: u64) -> (u64, Duration, usize, Duration, Option<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    let opts = Options::default().segment_size(16 << 20).disk_cap(4 << 30);
    let rec = vec![0x3cu8; 4096];
    {
        let (wal, _) = Wal::open(&path, opts.clone().sync_policy(SyncPolicy::Never)).unwrap();
        let wal = Arc::new(wal);
        let batch: Vec<&[u8]> = vec![&rec[..]; 64];
        // Count appended bytes, not `disk_used`: a preallocated segment counts in full at once.
        let target = mb << 20;
        let mut appended = 0u64;
        while appended < target {
            wal.append_batch(&batch).unwrap();
            appended += (batch.len() * rec.len()) as u64;
        }
        Arc::try_unwrap(wal).unwrap().close().unwrap();
    }
    let bytes: u64 = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let t = Instant::now();
    let (wal, rep) = Wal::open(&path, opts.clone()).unwrap();
    let open = t.elapsed();
    assert!(rep.records > 0 && rep.damage.is_empty());
    drop(wal);
    let t = Instant::now();
    let ins = sentra_wal::inspect_dir(&path).unwrap();
    let inspect = t.elapsed();
    assert!(ins.is_clean());
    let cold = drop_caches().then(|| {
        let t = Instant::now();
        let (wal, rep) = Wal::open(&path, opts).unwrap();
        let d = t.elapsed();
        assert!(rep.records > 0 && rep.damage.is_empty());
        drop(wal);
        d
    });
    (bytes, open, ins.segments.len(), inspect, cold)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `SENTRA_WAL_BENCH_ONLY=group16|sentra16`: the 16-appender, 1-record case alone (sentra
/// with default options, okaywal, the preallocated ceiling and the group cycle of the same
/// appenders without `fdatasync` (`SyncPolicy::Never`); or sentra only, for `perf stat`).
/// Short interleaved rounds, so that each ratio compares runs a few milliseconds apart; the
/// summary keeps the rounds whose ceiling sync took under 150 µs (a quiet disk).
fn group16(only_sentra: bool, smoke: bool) {
    const THREADS: usize = 16;
    const QUIET: Duration = Duration::from_micros(150);
    let rec = [0x5au8; REC];
    let rounds: usize = std::env::var("SENTRA_WAL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 1 } else { 20 });
    let per: u64 = if smoke { 20 } else { 100 };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (wal, _) = Wal::open(dirs[0].path(), sentra_opts()).unwrap();
    let log = okaywal::WriteAheadLog::recover(dirs[1].path(), NoCheckpoint).unwrap();
    // The same appenders without any `fdatasync`: what a group cycle costs besides the sync
    // (waking the appenders, their next appends, gathering, encoding, writing).
    let (never, _) =
        Wal::open(dirs[2].path(), sentra_opts().sync_policy(SyncPolicy::Never)).unwrap();
    let (mut to_ceiling, mut to_okaywal, mut handoff) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let pre = if only_sentra {
            Duration::ZERO
        } else {
            group_sync(THREADS * REC, true, per as usize) / per as u32
        };
        let groups0 = wal.stats().groups;
        let s = rate(THREADS, per, &|_, n| {
            for _ in 0..n {
                wal.append(&rec).unwrap();
            }
        });
        let per_group = (per * THREADS as u64) as f64 / (wal.stats().groups - groups0) as f64;
        if only_sentra {
            println!("round {round}: sentra {s:.0}/s, {per_group:.1} records/group");
            continue;
        }
        let groups0 = never.stats().groups;
        let t = Instant::now();
        fan_out(THREADS, per * THREADS as u64, &|_, n| {
            for _ in 0..n {
                never.append(&rec).unwrap();
            }
        });
        let cycle = t.elapsed() / (never.stats().groups - groups0).max(1) as u32;
        let never_group = (per * THREADS as u64) as f64 / (never.stats().groups - groups0) as f64;
        handoff.push(us(cycle));
        let o = rate(THREADS, per, &|_, n| {
            for _ in 0..n {
                let mut w = log.begin_entry().unwrap();
                w.write_chunk(&rec).unwrap();
                w.commit().unwrap();
            }
        });
        let pre2 = group_sync(THREADS * REC, true, per as usize) / per as u32;
        let pre = (pre + pre2) / 2;
        let ceil = THREADS as f64 / pre.as_secs_f64();
        println!(
            "round {round}: sentra {s:.0}/s ({per_group:.1} records/group, {:.0} µs per group; without fdatasync {:.0} µs per group of {never_group:.1}), okaywal {o:.0}/s, ceiling {ceil:.0}/s ({:.0} µs per 4 KiB group sync, before/after {:.0}/{:.0}); sentra/okaywal {:.2}x, sentra/ceiling {:.2}x",
            per_group * 1e6 / s,
            us(cycle),
            us(pre),
            us(pre.min(pre2)),
            us(pre.max(pre2)),
            s / o,
            s / ceil
        );
        if pre.max(pre2) < QUIET && pre.min(pre2) * 3 / 2 > pre.max(pre2) {
            to_ceiling.push(s / ceil);
            to_okaywal.push(s / o);
        }
    }
    log.shutdown().unwrap();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    if !only_sentra {
        println!(
            "median group cycle without fdatasync: {:.0} µs",
            median(&mut handoff)
        );
        let n = to_ceiling.len();
        println!(
            "quiet rounds (ceiling sync < 150 µs before and after, within 1.5x): {n} of {rounds}; median sentra/ceiling {:.2}x, median sentra/okaywal {:.2}x",
            median(&mut to_ceiling),
            median(&mut to_okaywal)
        );
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    SMOKE.store(smoke, std::sync::atomic::Ordering::Relaxed);
    match std::env::var("SENTRA_WAL_BENCH_ONLY").as_deref() {
        Ok("group16") => return group16(false, smoke),
        Ok("sentra16") => return group16(true, smoke),
        _ => {}
    }
    let mut c = Criterion::default().configure_from_args();
    bench_throughput(&mut c, smoke);
    c.final_summary();

    let samples = if smoke { 20 } else { 3000 };
    let lat = latency(samples);
    let raw_p50 = lat[0].1;
    println!("\n(b) single-appender latency, 256 B records, {samples} appends each");
    println!(
        "{:<22} {:>10} {:>10} {:>14}",
        "system", "p50 µs", "p99 µs", "p50 / raw p50"
    );
    for (name, p50, p99) in &lat {
        println!(
            "{name:<22} {:>10.1} {:>10.1} {:>14.2}",
            us(*p50),
            us(*p99),
            us(*p50) / us(raw_p50)
        );
    }

    let mb = std::env::var("SENTRA_WAL_BENCH_OPEN_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 8 } else { 1024 });
    let (bytes, open, segs, inspect, cold) = open_time(mb);
    println!(
        "\n(c) open a {:.2} GiB log ({segs} segments of 16 MiB, warm page cache)",
        bytes as f64 / (1u64 << 30) as f64
    );
    println!(
        "Wal::open (recovery: headers + seals, tail scan) {:>10.1} ms",
        open.as_secs_f64() * 1e3
    );
    println!(
        "inspect (verifies every frame, for comparison)   {:>10.1} ms",
        inspect.as_secs_f64() * 1e3
    );
    match cold {
        Some(d) => println!(
            "Wal::open, cold page cache (sync; drop_caches 3) {:>10.1} ms",
            d.as_secs_f64() * 1e3
        ),
        None => println!("Wal::open, cold page cache: skipped (dropping caches needs root)"),
    }

    ratios(smoke);
}
