//! The sample chunk codec (`src/chunk.rs`, issue 18): bytes per sample and encode/decode
//! time per sample, per data shape and chunk size, against two same-run baselines: the raw
//! 16 B/sample (i64 timestamp + 8-byte value) and `pco` (pcodec, a general-purpose numeric
//! codec) on the same chunks and on the whole series at once.
//!
//! ```text
//! cargo bench -p sentra-ingest --bench chunk
//! ```
//!
//! Shapes (36 000 samples each, a deterministic xorshift generator):
//! * `realistic`: every 10 s + uniform jitter ±5 ms on the schedule, one 50 s gap per ~200
//!   samples; gauge = random walk with 2 decimals (steps -0.10..=0.10); counter = bytes
//!   counter, uniform increments 0..1 000 000 per interval, one reset per 1 000 samples.
//! * `constant`: exact 10 s interval, constant gauge, counter growing by a constant.
//! * `hostile`: random f64 bit patterns (NaNs included) and random u64 counters, random
//!   timestamp gaps (1..2^36 ms).
//!
//! The realistic shapes are also timed in chunks of 1 and 10 samples: what one apply
//! writes per series before maintenance compacts a window's chunks.
//!
//! Timing uses criterion (its own report per benchmark), and the summary table at the end
//! prints the median of criterion's samples per sample encoded or decoded. Under
//! `cargo test --benches` criterion runs each benchmark once, and the sizes are checked.

use std::{cell::RefCell, hint::black_box, time::Instant};

use criterion::{BenchmarkId, Criterion, Throughput};

#[allow(dead_code, reason = "the bench uses encode and decode only")]
#[path = "../src/chunk.rs"]
mod chunk;

/// The one type `chunk.rs` takes from the crate (a copy of `crate::model::Stored`).
mod model {
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(crate) enum Stored {
        Gauge(f64),
        Counter(u64),
    }
}

use model::Stored;

const SAMPLES: usize = 36_000;
const CHUNK_SIZES: [usize; 2] = [120, 360];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Realistic,
    Constant,
    Hostile,
}

fn series(shape: Shape, counter: bool) -> Vec<(i64, Stored)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (shape as u64) << 1 ^ u64::from(counter));
    let (mut slot, mut cents, mut bytes) = (1_764_000_000_000i64, 3725i64, 0u64);
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let (ts, value) = match shape {
            Shape::Realistic => {
                slot += if rng.below(200) == 0 { 60_000 } else { 10_000 };
                let ts = slot + rng.below(11) as i64 - 5;
                cents += rng.below(21) as i64 - 10;
                let step = rng.below(1_000_000);
                bytes = if i % 1000 == 999 { step } else { bytes + step };
                (
                    ts,
                    if counter {
                        Stored::Counter(bytes)
                    } else {
                        Stored::Gauge(cents as f64 / 100.0)
                    },
                )
            }
            Shape::Constant => {
                slot += 10_000;
                bytes += 4096;
                (
                    slot,
                    if counter {
                        Stored::Counter(bytes)
                    } else {
                        Stored::Gauge(37.25)
                    },
                )
            }
            Shape::Hostile => {
                slot += 1 + rng.below(1 << 36) as i64;
                let v = rng.next();
                (
                    slot,
                    if counter {
                        Stored::Counter(v)
                    } else {
                        Stored::Gauge(f64::from_bits(v))
                    },
                )
            }
        };
        out.push((ts, value));
    }
    out
}

/// Every chunk of `samples`, encoded.
fn encode_all(samples: &[(i64, Stored)], size: usize) -> Vec<Vec<u8>> {
    samples
        .chunks(size)
        .map(|c| {
            let mut data = Vec::new();
            chunk::encode(c, &mut data).expect("encode");
            data
        })
        .collect()
}

fn bits(v: Stored) -> u64 {
    match v {
        Stored::Gauge(g) => g.to_bits(),
        Stored::Counter(c) => c,
    }
}

/// `pco` on one chunk: timestamps as i64, values as f64 or u64, each a standalone blob.
fn pco_encode(c: &[(i64, Stored)]) -> (Vec<u8>, Vec<u8>) {
    let config = pco::ChunkConfig::default();
    let ts: Vec<i64> = c.iter().map(|s| s.0).collect();
    let ts = pco::standalone::simple_compress(&ts, &config).expect("pco ts");
    let values = match c[0].1 {
        Stored::Gauge(_) => {
            let v: Vec<f64> = c.iter().map(|s| f64::from_bits(bits(s.1))).collect();
            pco::standalone::simple_compress(&v, &config)
        }
        Stored::Counter(_) => {
            let v: Vec<u64> = c.iter().map(|s| bits(s.1)).collect();
            pco::standalone::simple_compress(&v, &config)
        }
    }
    .expect("pco values");
    (ts, values)
}

fn pco_decode(ts: &[u8], values: &[u8], gauge: bool) -> usize {
    let ts = pco::standalone::simple_decompress::<i64>(ts).expect("pco ts");
    let n = if gauge {
        pco::standalone::simple_decompress::<f64>(values).map(|v| v.len())
    } else {
        pco::standalone::simple_decompress::<u64>(values).map(|v| v.len())
    }
    .expect("pco values");
    assert_eq!(ts.len(), n);
    n
}

/// Bytes the Prometheus TSDB XOR chunk format takes for `c` (computed, not encoded): a
/// 2-byte count, the first timestamp (varint) and value (8 bytes), the second timestamp's
/// delta (uvarint) and then per sample the delta-of-delta in Gorilla's buckets (0: 1 bit;
/// 14, 17, 20 bits with 2-4 prefix bits; else 4 + 64) and the value (counters as floats)
/// XOR'd with the previous one (0: 1 bit; inside the previous window: 2 + window bits; else
/// 2 + 5 + 6 + meaningful bits).
fn prometheus_bytes(c: &[(i64, Stored)]) -> usize {
    fn varint_bits(v: u64) -> u64 {
        8 * (u64::from(64 - v.leading_zeros()).max(1).div_ceil(7))
    }
    let fits = |v: i64, n: u32| -((1i64 << (n - 1)) - 1) <= v && v <= (1i64 << (n - 1));
    let value = |s: Stored| match s {
        Stored::Gauge(g) => g.to_bits(),
        Stored::Counter(n) => (n as f64).to_bits(),
    };
    let ts0 = c[0].0;
    let mut total = 16 + varint_bits(((ts0 << 1) ^ (ts0 >> 63)) as u64) + 64;
    let (mut prev_ts, mut prev_delta, mut prev_v) = (ts0, 0i64, value(c[0].1));
    let (mut lead, mut trail) = (0xffu32, 0u32);
    for (i, &(ts, v)) in c.iter().enumerate().skip(1) {
        let delta = ts.wrapping_sub(prev_ts);
        if i == 1 {
            total += varint_bits(delta as u64);
        } else {
            let dod = delta.wrapping_sub(prev_delta);
            total += match dod {
                0 => 1,
                d if fits(d, 14) => 2 + 14,
                d if fits(d, 17) => 3 + 17,
                d if fits(d, 20) => 4 + 20,
                _ => 4 + 64,
            };
        }
        (prev_ts, prev_delta) = (ts, delta);
        let bits = value(v);
        let x = bits ^ prev_v;
        prev_v = bits;
        if x == 0 {
            total += 1;
            continue;
        }
        let (lz, tz) = (x.leading_zeros().min(31), x.trailing_zeros());
        if lead != 0xff && lz >= lead && tz >= trail {
            total += 2 + u64::from(64 - lead - trail);
        } else {
            (lead, trail) = (lz, tz);
            total += 2 + 5 + 6 + u64::from(64 - lz - tz);
        }
    }
    total.div_ceil(8) as usize
}

struct Dataset {
    shape: Shape,
    counter: bool,
    size: usize,
    samples: Vec<(i64, Stored)>,
    chunks: Vec<Vec<u8>>,
    pco: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Dataset {
    fn name(&self) -> String {
        let kind = if self.counter { "counter" } else { "gauge" };
        format!("{:?}/{kind}/{}", self.shape, self.size).to_lowercase()
    }

    fn per_sample(&self, bytes: usize) -> f64 {
        bytes as f64 / self.samples.len() as f64
    }
}

/// Per-sample medians of criterion's samples, keyed by benchmark name.
#[derive(Default)]
struct Timings(RefCell<Vec<(String, Vec<f64>)>>);

impl Timings {
    /// Runs `f` (which handles `SAMPLES` samples) `iters` times; records ns per sample.
    fn measure(&self, key: &str, iters: u64, mut f: impl FnMut()) -> std::time::Duration {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let elapsed = start.elapsed();
        let per_sample = elapsed.as_nanos() as f64 / (iters as f64 * SAMPLES as f64);
        let mut all = self.0.borrow_mut();
        match all.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => v.push(per_sample),
            None => all.push((key.to_owned(), vec![per_sample])),
        }
        elapsed
    }

    fn median(&self, key: &str) -> Option<f64> {
        let all = self.0.borrow();
        let (_, v) = all.iter().find(|(k, _)| k == key)?;
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

fn main() {
    let mut datasets = Vec::new();
    for shape in [Shape::Realistic, Shape::Constant, Shape::Hostile] {
        for counter in [false, true] {
            let samples = series(shape, counter);
            let small: &[usize] = if shape == Shape::Realistic {
                &[1, 10]
            } else {
                &[]
            };
            for &size in small.iter().chain(&CHUNK_SIZES) {
                let chunks = encode_all(&samples, size);
                let pco = samples.chunks(size).map(pco_encode).collect();
                datasets.push(Dataset {
                    shape,
                    counter,
                    size,
                    samples: samples.clone(),
                    chunks,
                    pco,
                });
            }
        }
    }
    // Every chunk decodes to exactly its samples.
    for d in &datasets {
        let mut back = Vec::with_capacity(SAMPLES);
        for c in &d.chunks {
            chunk::decode(c, &mut back).expect("decode");
        }
        assert_eq!(back.len(), d.samples.len(), "{}", d.name());
        for (a, b) in back.iter().zip(&d.samples) {
            assert!(
                a.0 == b.0 && bits(a.1) == bits(b.1),
                "{}: {a:?} vs {b:?}",
                d.name()
            );
        }
    }

    let timings = Timings::default();
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    for d in &datasets {
        let name = d.name();
        let mut g = c.benchmark_group(&name);
        g.throughput(Throughput::Elements(SAMPLES as u64));
        g.bench_function(BenchmarkId::from_parameter("encode"), |b| {
            let mut out = Vec::with_capacity(4 * SAMPLES);
            b.iter_custom(|iters| {
                timings.measure(&format!("{name}/encode"), iters, || {
                    out.clear();
                    for c in d.samples.chunks(d.size) {
                        chunk::encode(black_box(c), &mut out).expect("encode");
                    }
                    black_box(&out);
                })
            });
        });
        g.bench_function(BenchmarkId::from_parameter("decode"), |b| {
            let mut out = Vec::with_capacity(SAMPLES);
            b.iter_custom(|iters| {
                timings.measure(&format!("{name}/decode"), iters, || {
                    out.clear();
                    for c in &d.chunks {
                        chunk::decode(black_box(c), &mut out).expect("decode");
                    }
                    black_box(&out);
                })
            });
        });
        if d.size < CHUNK_SIZES[0] {
            // what one apply writes per series: encode and decode only
            g.finish();
            continue;
        }
        g.bench_function(BenchmarkId::from_parameter("pco_encode"), |b| {
            b.iter_custom(|iters| {
                timings.measure(&format!("{name}/pco_encode"), iters, || {
                    for c in d.samples.chunks(d.size) {
                        black_box(pco_encode(black_box(c)));
                    }
                })
            });
        });
        g.bench_function(BenchmarkId::from_parameter("pco_decode"), |b| {
            b.iter_custom(|iters| {
                timings.measure(&format!("{name}/pco_decode"), iters, || {
                    for (ts, v) in &d.pco {
                        black_box(pco_decode(black_box(ts), black_box(v), !d.counter));
                    }
                })
            });
        });
        g.finish();
    }

    println!();
    println!(
        "chunk codec, {SAMPLES} samples per series; bytes/sample (timestamps + values) and ns/sample (median of criterion's samples)"
    );
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>8} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "shape/kind/chunk",
        "B/smp",
        "ts B",
        "prom B",
        "pco B",
        "pco all B",
        "raw B",
        "enc ns",
        "dec ns",
        "pco enc",
        "pco dec"
    );
    for d in &datasets {
        let name = d.name();
        let size: usize = d.chunks.iter().map(Vec::len).sum();
        // timestamps alone: the same timestamps with a constant counter (its stream header
        // is 3 bytes per chunk, included)
        let ts_only: Vec<_> = d
            .samples
            .iter()
            .map(|s| (s.0, Stored::Counter(0)))
            .collect();
        let ts_size: usize = encode_all(&ts_only, d.size).iter().map(Vec::len).sum();
        let pco_size: usize = d.pco.iter().map(|(t, v)| t.len() + v.len()).sum();
        let prom_size: usize = d.samples.chunks(d.size).map(prometheus_bytes).sum();
        let (t, v) = pco_encode(&d.samples);
        let time = |what: &str| {
            timings
                .median(&format!("{name}/{what}"))
                .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.1}"))
        };
        println!(
            "{:<24} {:>7.3} {:>7.3} {:>7.3} {:>8.3} {:>9.3} {:>6} {:>8} {:>8} {:>8} {:>8}",
            name,
            d.per_sample(size),
            d.per_sample(ts_size),
            d.per_sample(prom_size),
            d.per_sample(pco_size),
            d.per_sample(t.len() + v.len()),
            16,
            time("encode"),
            time("decode"),
            time("pco_encode"),
            time("pco_decode"),
        );
    }
    // Chunks as one apply writes them before maintenance compacts a window: sizes only.
    println!("small chunks (sizes only): B/sample (timestamps), prom B");
    for shape in [Shape::Realistic, Shape::Constant, Shape::Hostile] {
        for counter in [false, true] {
            let samples = series(shape, counter);
            let mut line = format!(
                "{:<18}",
                format!("{shape:?}/{}", if counter { "counter" } else { "gauge" }).to_lowercase()
            );
            for size in [1, 2, 10, 30] {
                let bytes: usize = encode_all(&samples, size).iter().map(Vec::len).sum();
                let ts_only: Vec<_> = samples.iter().map(|s| (s.0, Stored::Counter(0))).collect();
                let ts: usize = encode_all(&ts_only, size).iter().map(Vec::len).sum();
                let prom: usize = samples.chunks(size).map(prometheus_bytes).sum();
                let per = |b: usize| b as f64 / samples.len() as f64;
                line += &format!(
                    "  {size:>2}/chunk {:>6.2} ({:>5.2}) {:>6.2}",
                    per(bytes),
                    per(ts),
                    per(prom)
                );
            }
            println!("{line}");
        }
    }
    // What the realistic generator draws per sample: 11 jitter values (log2 11 = 3.46 bits),
    // 21 gauge steps (4.39 bits), 1 000 000 counter increments (19.93 bits).
    println!(
        "entropy floor of the realistic shapes: gauge {:.2} B/sample, counter {:.2} B/sample",
        (11f64.log2() + 21f64.log2()) / 8.0,
        (11f64.log2() + 1e6f64.log2()) / 8.0
    );
    c.final_summary();
}
