//! Per-series sample chunks: the compressed encoding of raw samples at rest.
//!
//! One chunk holds the samples of one series (1 to [`MAX_CHUNK_SAMPLES`], timestamps
//! strictly increasing, all gauges or all counters). It is stored as one blob, so the codec
//! is columnar: a byte-aligned header, then one bit stream with every timestamp code and then
//! every value code.
//!
//! # Format, version 1 (byte by byte)
//!
//! ```text
//! byte 0        version = 1
//! byte 1        encoding: low nibble 0 = counter, 1 = decimal gauge, 2 = XOR gauge;
//!               high nibble = decimal exponent e (0..=9) of a decimal gauge, else 0
//! varint        sample count n (1..=65 536)
//! stream        timestamps (integer stream below, over the i64 bit patterns)
//! stream | 8 B  values: counter: integer stream over the u64 values;
//!               decimal gauge: integer stream over the mantissas m (i64), value = m / 10^e;
//!               XOR gauge: the first value's f64 bits, 8 bytes little endian
//! bits          the timestamp codes, then the value codes, then zero bits up to a byte;
//!               nothing may follow
//! ```
//!
//! Varints are LEB128 (at most 10 bytes); signed varints are zig-zag LEB128. Bits are packed
//! least significant first: a `w`-bit field holds bits `0..w` of the stream at the current
//! position, filling each byte from its bit 0.
//!
//! **Integer stream** (timestamps, counters, decimal mantissas `v[0..n]`, as u64 with
//! wrapping arithmetic). Its header is:
//!
//! ```text
//! byte          n >= 2 only: mode * 65 + code width w (w 0..=64; mode 0 = deltas,
//!               1 = delta-of-deltas, 2 = grid)
//! varint        v[0] (timestamps and mantissas zig-zag, counters plain)
//! svarint       mode 1: the first delta d[1] = v[1] - v[0]; mode 2: the step s
//! svarint       n >= 2 only: center c
//! ```
//!
//! (A one-sample chunk is thus 2 bytes of header, its count and two first values.)
//!
//! The residuals are `r[i] = v[i] - v[i-1]` (deltas, i = 1..n), `r[i] = d[i] - d[i-1]`
//! (delta-of-deltas, i = 2..n) or `r[i] = v[i] - (g[i-1] + s)` (grid, i = 1..n, with
//! `g[0] = v[0]`; `g[i] = g[i-1] + s` after a literal code; after an escape, the nearest
//! `g[i-1] + s + k*s` if `zigzag(v[i] - that - c)` would be a literal, else `v[i] - c`).
//! Each is coded as `z = zigzag(r[i] - c)` in `w` bits; the all-ones `w`-bit code is an
//! escape, followed by 6 bits `L - 1` and then `z` in `L` bits. `w = 0` means every `z` is 0
//! and takes no bits at all.
//!
//! **XOR stream** (gauges that are not all short decimals): Gorilla's. Per value after the
//! first, `x = bits[i] ^ bits[i-1]`: bit `0` if `x == 0`; else `1`, then `0` and `len` bits
//! of `x` inside the previous window (leading zeros `lead`, `len` meaningful bits; the
//! window starts as the full 64 bits), or `1`, then 5 bits `lead` (clamped to 31), 6 bits
//! `len - 1` and `len` bits `x >> (64 - lead - len)`, which becomes the window.
//!
//! # Why this shape
//!
//! * **Per-chunk width with an escape instead of Gorilla's fixed buckets.** Agents sample
//!   every ~10 s with a few ms of jitter: Gorilla/Prometheus spend at least 2 prefix bits
//!   plus a 7- or 14-bit bucket on each jittered millisecond timestamp. A width chosen per
//!   chunk from the histogram of the residuals around their median (the center `c`) fits the
//!   jitter exactly and still pays only the escape for the odd gap or
//!   counter reset. A fixed interval or a constant-rate counter costs 0 bits per sample.
//! * **Deltas, delta-of-deltas or grid per stream**, whichever is cheaper (histograms for
//!   the first two, a walk for the grid): centered deltas already absorb a constant interval
//!   and a constant counter rate; delta-of-deltas win when the rate drifts steadily; the
//!   grid fits an agent's schedule (tokio interval ticks plus a few ms of lateness): the
//!   residual is one jitter instead of the difference of two, one bit narrower (±5 ms: 4
//!   bits), and a gap of missed samples keeps the grid's phase.
//! * **Decimal gauges** (VictoriaMetrics' trick): when every value is `m / 10^e` with one
//!   e ≤ 9, |m| < 2^53, and `m as f64 / 10^e` gives back the identical bits, the mantissas
//!   are an integer stream (a 2-decimal random walk costs ~5 bits/value instead of
//!   Gorilla XOR's ~48 on the same data). Division by an exact power of ten is correctly
//!   rounded, so every decimal literal round-trips; `-0.0`, NaN and infinities never pass
//!   the check.
//! * **Everything else is Gorilla XOR**, which keeps every bit pattern: NaN payloads,
//!   `-0.0`, infinities and subnormals round-trip exactly (no canonicalisation).
//!
//! Figures (`cargo bench -p sentra-ingest --bench chunk`, 2-core box, load 2.4-3.1 from
//! other builds, 36 000 samples per series; `prom` = the Prometheus XOR chunk format
//! computed on the same chunks, `pco` = pcodec per chunk; ns per sample, criterion medians):
//!
//! ```text
//! shape, samples/chunk   B/sample (timestamps)  prom B  pco B  raw B  encode ns  decode ns
//! realistic gauge, 120     1.30     (0.68)       8.09    2.23    16       32         5.8
//! realistic gauge, 360     1.21     (0.58)       8.12    1.59    16       27         5.5
//! realistic counter, 120   3.25     (0.68)       5.60    3.81    16       28         5.6
//! realistic gauge, 1      10.99    (10.00)      16.00   54.00    16       39        34
//! realistic gauge, 10      2.87     (2.18)       8.99    9.76    16       48         8.0
//! constant gauge, 120      0.14     (0.13)       0.40    0.69    16       11         2.8
//! constant counter, 120    0.17     (0.13)       1.47    0.92    16        8         2.4
//! hostile gauge, 120      12.96     (4.73)      16.77   13.00    16       16         8.3
//! ```
//!
//! Realistic: 10 s ± 5 ms on the schedule, a gap now and then; the gauge a 2-decimal random
//! walk, the counter uniform increments of 0..1 000 000. That counter draws 20 bits of
//! entropy per increment: its floor is 2.92 B/sample (the gauge's 0.98), no codec reaches
//! 1.5 there.
//!
//! # Hostile input
//!
//! [`decode`] checks every field: version, encoding, exponent, widths, varint overflow, the
//! sample count against [`MAX_CHUNK_SAMPLES`] before reserving anything, timestamps strictly
//! increasing, decimal mantissas in range, XOR windows inside 64 bits, truncation and
//! trailing bytes. It never panics and leaves `out` as it was on error.

use crate::model::Stored;

/// Most samples one chunk may hold; [`decode`] refuses more.
pub(crate) const MAX_CHUNK_SAMPLES: u32 = 65_536;

/// The format version this build writes and reads.
const VERSION: u8 = 1;
/// Encoding nibbles of byte 1.
const ENC_COUNTER: u8 = 0;
const ENC_DECIMAL: u8 = 1;
const ENC_XOR: u8 = 2;
/// Largest decimal exponent: values with at most 9 decimals.
const MAX_EXPONENT: usize = 9;
const POW10: [f64; MAX_EXPONENT + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// 2^53: decimal mantissas stay below it in magnitude (exact in an f64).
const MANTISSA_LIMIT: i64 = 1 << 53;

/// A chunk that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ChunkError {
    /// [`encode`] was given no samples.
    #[error("cannot encode an empty chunk")]
    Empty,
    /// [`encode`] was given more than [`MAX_CHUNK_SAMPLES`] samples.
    #[error("cannot encode {0} samples in one chunk: the limit is {MAX_CHUNK_SAMPLES}")]
    TooMany(usize),
    /// [`encode`] was given timestamps that do not strictly increase.
    #[error(
        "cannot encode chunk: timestamps not strictly increasing at sample {index} ({previous} then {ts})"
    )]
    Unordered {
        /// Index of the offending sample.
        index: usize,
        /// The timestamp before it.
        previous: i64,
        /// Its timestamp.
        ts: i64,
    },
    /// [`encode`] was given gauges and counters in one chunk.
    #[error("cannot encode chunk: sample {index} is a {found}, the chunk holds {expected}s")]
    MixedKinds {
        /// Index of the offending sample.
        index: usize,
        /// The kind of the first sample.
        expected: &'static str,
        /// The kind of the offending sample.
        found: &'static str,
    },
    /// A format this build does not know.
    #[error("unknown chunk version {0}")]
    Version(u8),
    /// The header ends early.
    #[error("chunk header truncated at byte {0}")]
    HeaderTruncated(usize),
    /// The declared sample count is above [`MAX_CHUNK_SAMPLES`].
    #[error("sample count {0} exceeds chunk limit {MAX_CHUNK_SAMPLES}")]
    Count(u64),
    /// The header declares no samples.
    #[error("chunk declares no samples")]
    NoSamples,
    /// The bit stream ends before every sample is decoded.
    #[error("chunk truncated: {decoded} of {count} samples ({part})")]
    Truncated {
        /// `timestamps` or `values`.
        part: &'static str,
        /// Samples of that part decoded before the end.
        decoded: usize,
        /// Samples the header declares.
        count: usize,
    },
    /// Bytes follow the last sample.
    #[error("chunk has {0} trailing bytes after its last sample")]
    Trailing(usize),
    /// A field holds a value the format does not allow.
    #[error("damaged chunk: {0}")]
    Damaged(&'static str),
}

// ---------------------------------------------------------------------------------------
// Encoding

/// Encodes `samples` (non-empty, timestamps strictly increasing, every value of the same
/// kind) as one chunk, appended to `out`; on error nothing is appended.
pub(crate) fn encode(samples: &[(i64, Stored)], out: &mut Vec<u8>) -> Result<(), ChunkError> {
    let Some(&(_, first)) = samples.first() else {
        return Err(ChunkError::Empty);
    };
    if samples.len() > MAX_CHUNK_SAMPLES as usize {
        return Err(ChunkError::TooMany(samples.len()));
    }
    SCRATCH.with_borrow_mut(|s| {
        let result = encode_with(samples, first, s, out);
        if s.ts.capacity() > KEEP_SCRATCH {
            *s = Scratch::default();
        }
        result
    })
}

/// Scratch buffers up to this many samples stay allocated between chunks (128 KiB).
const KEEP_SCRATCH: usize = 4096;

thread_local! {
    /// Buffers [`encode`] reuses: no allocation per chunk.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

fn encode_with(
    samples: &[(i64, Stored)],
    first: Stored,
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), ChunkError> {
    let n = samples.len();
    let Scratch {
        ts,
        values,
        order1,
        order2,
    } = scratch;
    ts.clear();
    values.clear();
    let mut previous = i64::MIN;
    for (index, &(t, v)) in samples.iter().enumerate() {
        if index > 0 && t <= previous {
            return Err(ChunkError::Unordered {
                index,
                previous,
                ts: t,
            });
        }
        previous = t;
        ts.push(t as u64);
        values.push(match (first, v) {
            (Stored::Gauge(_), Stored::Gauge(g)) => g.to_bits(),
            (Stored::Counter(_), Stored::Counter(c)) => c,
            _ => {
                return Err(ChunkError::MixedKinds {
                    index,
                    expected: kind_name(first),
                    found: kind_name(v),
                });
            }
        });
    }

    let (ts, values) = (&ts[..], &mut values[..]);
    let scratch = &mut (order1, order2);
    let ts_plan = Plan::new(ts, scratch);
    out.push(VERSION);
    let enc_at = out.len();
    out.push(ENC_COUNTER);
    put_varint(out, n as u64);
    ts_plan.put_header(ts, true, out);
    match first {
        Stored::Counter(_) => {
            let plan = Plan::new(values, scratch);
            plan.put_header(values, false, out);
            let mut w = BitWriter::new(out);
            ts_plan.put_codes(ts, &mut w);
            plan.put_codes(values, &mut w);
            w.finish();
        }
        Stored::Gauge(_) => {
            if let Some(e) = to_decimal(values) {
                out[enc_at] = ENC_DECIMAL | ((e as u8) << 4);
                let plan = Plan::new(values, scratch);
                plan.put_header(values, true, out);
                let mut w = BitWriter::new(out);
                ts_plan.put_codes(ts, &mut w);
                plan.put_codes(values, &mut w);
                w.finish();
            } else {
                // to_decimal gave up halfway: the bits again
                for (slot, s) in values.iter_mut().zip(samples) {
                    if let Stored::Gauge(g) = s.1 {
                        *slot = g.to_bits();
                    }
                }
                out[enc_at] = ENC_XOR;
                out.extend_from_slice(&values[0].to_le_bytes());
                let mut w = BitWriter::new(out);
                ts_plan.put_codes(ts, &mut w);
                put_xor(values, &mut w);
                w.finish();
            }
        }
    }
    Ok(())
}

const fn kind_name(v: Stored) -> &'static str {
    match v {
        Stored::Gauge(_) => "gauge",
        Stored::Counter(_) => "counter",
    }
}

/// The mantissa of `v` at exponent `e`, if `m / 10^e` gives back exactly `v`.
#[inline]
fn decimal_at(v: f64, e: usize) -> Option<i64> {
    let x = v * POW10[e];
    if x.is_nan() || x.abs() >= MANTISSA_LIMIT as f64 {
        return None;
    }
    // x.round() without the libm call: below 2^53 the truncation and the fraction are exact
    let t = x as i64;
    let frac = x - t as f64;
    let m = t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5);
    ((m as f64 / POW10[e]).to_bits() == v.to_bits()).then_some(m)
}

/// Rewrites the f64 bit patterns in `values` as decimal mantissas (as u64) of one exponent,
/// if every value has one; returns the exponent. `values` is garbage when it returns `None`
/// (the caller keeps the gauges' bits elsewhere).
fn to_decimal(values: &mut [u64]) -> Option<usize> {
    // Exactness at e implies exactness at every larger e while |m| < 2^53 (same rational,
    // correctly rounded division): so the exponent only grows, and when it does, the
    // mantissas so far are scaled by the same power of ten.
    let mut e = 0;
    for i in 0..values.len() {
        let v = f64::from_bits(values[i]);
        let m = loop {
            if let Some(m) = decimal_at(v, e) {
                break m;
            }
            e += 1;
            if e > MAX_EXPONENT {
                return None;
            }
            for earlier in &mut values[..i] {
                let m = (*earlier as i64).checked_mul(10)?;
                if m.abs() >= MANTISSA_LIMIT {
                    return None;
                }
                *earlier = m as u64;
            }
        };
        values[i] = m as u64;
    }
    Some(e)
}

/// The buffers of one [`encode`].
#[derive(Default)]
struct Scratch {
    ts: Vec<u64>,
    values: Vec<u64>,
    order1: Vec<i64>,
    order2: Vec<i64>,
}

/// How one integer stream is coded: order, center and width.
#[derive(Clone, Copy, Debug)]
struct Plan {
    mode: Mode,
    /// Grid: the step.
    step: i64,
    center: i64,
    width: u32,
}

/// How an integer stream predicts each value (the parameter byte is `mode * 65 + width`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// From the previous value: residual = delta.
    Delta = 0,
    /// From the previous delta: residual = delta-of-delta.
    DeltaOfDelta = 1,
    /// From a grid point: residual = value - (previous grid point + step).
    Grid = 2,
}

/// Code widths 0..=64: the parameter byte's radix.
const WIDTHS: u8 = 65;

/// Zig-zag: small magnitudes of either sign become small unsigned numbers.
#[inline]
const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
const fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bits in `v` (0 for 0).
#[inline]
const fn bit_len(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// The all-ones code of width `w` (1..=64): the escape.
#[inline]
const fn escape_code(w: u32) -> u64 {
    u64::MAX >> (64 - w)
}

impl Plan {
    /// Picks mode, center and width for `v` (the cheapest estimated size).
    fn new(v: &[u64], (order1, order2): &mut (&mut Vec<i64>, &mut Vec<i64>)) -> Self {
        order1.clear();
        order2.clear();
        order1.extend(v.windows(2).map(|p| p[1].wrapping_sub(p[0]) as i64));
        order2.extend(order1.windows(2).map(|p| p[1].wrapping_sub(p[0])));
        let (c1, w1, bits1) = fit(order1);
        let mut best = Self {
            mode: Mode::Delta,
            step: 0,
            center: c1,
            width: w1,
        };
        if v.len() < 3 {
            return best;
        }
        let mut cost = bits1 + 8 * varint_len(zigzag(c1));
        let first_delta = v[1].wrapping_sub(v[0]) as i64;
        let (c2, w2, bits2) = fit(order2);
        let cost2 = bits2 + 8 * (varint_len(zigzag(c2)) + varint_len(zigzag(first_delta)));
        if cost2 < cost {
            (best, cost) = (
                Self {
                    mode: Mode::DeltaOfDelta,
                    step: 0,
                    center: c2,
                    width: w2,
                },
                cost2,
            );
        }
        // Jittered samples of a fixed schedule: residuals from the schedule's grid are the
        // jitter itself, not a difference of two jitters (one bit narrower).
        if v.len() >= GRID_MIN_SAMPLES
            && (1..=GRID_MAX_WIDTH).contains(&w1)
            && let Some((center, width, bits)) = fit_grid(v, c1, w1, order2)
            && bits + 8 * (varint_len(zigzag(c1)) + varint_len(zigzag(center))) < cost
        {
            best = Self {
                mode: Mode::Grid,
                step: c1,
                center,
                width,
            };
        }
        best
    }

    /// Appends the stream header (parameter byte, first value, first delta or step, center).
    fn put_header(&self, v: &[u64], signed: bool, out: &mut Vec<u8>) {
        let first = if signed { zigzag(v[0] as i64) } else { v[0] };
        if v.len() == 1 {
            put_varint(out, first);
            return;
        }
        out.push(self.mode as u8 * WIDTHS + self.width as u8);
        put_varint(out, first);
        match self.mode {
            Mode::Delta => {}
            Mode::DeltaOfDelta => put_varint(out, zigzag(v[1].wrapping_sub(v[0]) as i64)),
            Mode::Grid => put_varint(out, zigzag(self.step)),
        }
        put_varint(out, zigzag(self.center));
    }

    /// Appends the residual codes of `v` to the bit stream.
    fn put_codes(&self, v: &[u64], w: &mut BitWriter<'_>) {
        let width = self.width;
        if width == 0 {
            return;
        }
        let escape = escape_code(width);
        let mut put = |z: u64| {
            if z < escape {
                w.put(z, width);
            } else {
                w.put(escape, width);
                let len = bit_len(z);
                w.put(u64::from(len - 1), 6);
                w.put(z, len);
            }
        };
        let center = self.center;
        match self.mode {
            Mode::Delta => {
                for p in v.windows(2) {
                    put(zigzag(
                        (p[1].wrapping_sub(p[0]) as i64).wrapping_sub(center),
                    ));
                }
            }
            Mode::DeltaOfDelta => {
                let mut prev = v[1].wrapping_sub(v[0]);
                for p in v[1..].windows(2) {
                    let d = p[1].wrapping_sub(p[0]);
                    put(zigzag((d.wrapping_sub(prev) as i64).wrapping_sub(center)));
                    prev = d;
                }
            }
            Mode::Grid => grid_walk(v, self.step, center, width, put),
        }
    }
}

/// Grid mode is tried when the deltas need at most this width (jitter, not noise)...
const GRID_MAX_WIDTH: u32 = 16;
/// ... in chunks of at least this many samples (smaller ones gain ~1 %, and encode at
/// half the speed).
const GRID_MIN_SAMPLES: usize = 32;

/// The grid walk: calls `code(z)` for `v[1..]`. The grid point advances by `step` while the
/// codes are literals; an escaped value (a gap, a new phase) moves it to `value - center`.
#[inline]
fn grid_walk(v: &[u64], step: i64, center: i64, width: u32, mut code: impl FnMut(u64)) {
    let escape = escape_code(width);
    let mut point = v[0];
    for &x in &v[1..] {
        let predicted = point.wrapping_add(step as u64);
        let z = zigzag((x.wrapping_sub(predicted) as i64).wrapping_sub(center));
        code(z);
        point = if z < escape {
            predicted
        } else {
            regrid(predicted, x, step, center, escape)
        };
    }
}

/// The grid point after an escaped value `x`: the same grid when `x` is a whole number of
/// steps away from it give or take a literal (a gap of missed samples), else the value's own
/// (`x - center`: a new phase).
#[inline]
fn regrid(predicted: u64, x: u64, step: i64, center: i64, escape: u64) -> u64 {
    let off = (x.wrapping_sub(predicted) as i64).wrapping_sub(center);
    if step > 0 {
        let (mut k, mut rem) = (off.div_euclid(step), off.rem_euclid(step));
        if rem > step / 2 {
            (k, rem) = (k.wrapping_add(1), rem - step);
        }
        if zigzag(rem) < escape {
            return predicted.wrapping_add((k as u64).wrapping_mul(step as u64));
        }
    }
    x.wrapping_sub(center as u64)
}

/// Center, width and bit count of the grid mode with step `step` (the deltas' median, whose
/// width is `w1`), or `None` when it cannot beat the deltas.
fn fit_grid(v: &[u64], step: i64, w1: u32, scratch: &mut Vec<i64>) -> Option<(i64, u32, u64)> {
    // The center: the median offset from the first sample's grid, up to the first delta
    // that the delta mode escapes (a gap).
    let escape1 = escape_code(w1);
    scratch.clear();
    let mut point = v[0];
    for p in v.windows(2) {
        if zigzag((p[1].wrapping_sub(p[0]) as i64).wrapping_sub(step)) >= escape1 {
            break;
        }
        point = point.wrapping_add(step as u64);
        scratch.push(p[1].wrapping_sub(point) as i64);
    }
    if scratch.is_empty() {
        return None;
    }
    let mid = scratch.len() / 2;
    let center = *scratch.select_nth_unstable(mid).1;
    // The width the residuals up to the gap need: a wandering series (a random walk) needs
    // more than its deltas, and the walks are not worth trying.
    let widest = scratch
        .iter()
        .fold(0, |m, &r| m.max(zigzag(r.wrapping_sub(center))));
    let wg = if widest == u64::MAX {
        65
    } else {
        bit_len(widest + 1)
    };
    if wg > w1 {
        return None;
    }
    let mut best: Option<(i64, u32, u64)> = None;
    for width in wg.saturating_sub(1).max(1)..=wg {
        let escape = escape_code(width);
        let mut bits = 0u64;
        grid_walk(v, step, center, width, |z| {
            bits += u64::from(width);
            if z >= escape {
                bits += 6 + u64::from(bit_len(z));
            }
        });
        if best.is_none_or(|(_, _, b)| bits < b) {
            best = Some((center, width, bits));
        }
    }
    best
}

/// Center (median) and width for residuals `r` (reordered), with the estimated bit count.
fn fit(r: &mut [i64]) -> (i64, u32, u64) {
    if r.is_empty() {
        return (0, 0, 0);
    }
    let mid = r.len() / 2;
    let center = *r.select_nth_unstable(mid).1;
    // hist[b]: residuals whose code needs width b (z < 2^b - 1); 65 = only an escape.
    let mut hist = [0u64; 66];
    for &x in r.iter() {
        let z = zigzag(x.wrapping_sub(center));
        let b = if z == u64::MAX { 65 } else { bit_len(z + 1) };
        hist[b as usize] += 1;
    }
    let n = r.len() as u64;
    if hist[1] == n {
        // every z is 0 (b = 1): no bits at all
        return (center, 0, 0);
    }
    // cost(w) = n*w + sum over b > w of hist[b] * (6 + min(b, 64)), minimised over 1..=64.
    // widths above the widest code cost more than that one
    let top = (1..=65).rev().find(|&b| hist[b] != 0).unwrap_or(1).min(64) as u32;
    let (mut best_w, mut best) = (top, u64::MAX);
    let mut escapes = hist[top as usize + 1..].iter().sum::<u64>() * 70;
    for w in (1..=top).rev() {
        let cost = n * u64::from(w) + escapes;
        if cost <= best {
            (best_w, best) = (w, cost);
        }
        escapes += hist[w as usize] * (6 + u64::from(w));
    }
    (center, best_w, best)
}

/// Appends Gorilla XOR codes for `bits[1..]` (f64 bit patterns).
fn put_xor(bits: &[u64], w: &mut BitWriter<'_>) {
    let (mut lead, mut len) = (0u32, 64u32);
    for p in bits.windows(2) {
        let x = p[0] ^ p[1];
        if x == 0 {
            w.put(0, 1);
            continue;
        }
        let lz = x.leading_zeros().min(31);
        let tz = x.trailing_zeros();
        let new_len = 64 - lz - tz;
        // reuse the window when x fits in it and it is not much wider than a fresh one
        if lz >= lead && tz >= 64 - lead - len && len <= new_len + 11 {
            w.put(0b01, 2);
            w.put(x >> (64 - lead - len), len);
        } else {
            w.put(0b11, 2);
            w.put(u64::from(lz), 5);
            w.put(u64::from(new_len - 1), 6);
            w.put(x >> tz, new_len);
            (lead, len) = (lz, new_len);
        }
    }
}

const fn varint_len(v: u64) -> u64 {
    (bit_len(v).saturating_sub(1) / 7 + 1) as u64
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Packs bit fields least significant bit first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    /// Bits pending in `acc` (< 32 between calls).
    n: u32,
}

impl<'a> BitWriter<'a> {
    const fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }

    /// Appends the low `w` bits of `v` (`w` in 0..=64; higher bits of `v` are ignored).
    #[inline]
    fn put(&mut self, v: u64, w: u32) {
        if w > 32 {
            self.put(v & 0xffff_ffff, 32);
            self.put(v >> 32, w - 32);
            return;
        }
        self.acc |= (v & ((1u64 << w) - 1)) << self.n;
        self.n += w;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Flushes the last partial byte (padded with zero bits).
    fn finish(self) {
        let bytes = self.n.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

/// The number of samples a chunk holds, from its header only.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the tests check headers against the decoded samples with it"
    )
)]
pub(crate) fn sample_count(data: &[u8]) -> Result<u32, ChunkError> {
    let mut h = Header { data, pos: 0 };
    let version = h.byte()?;
    if version != VERSION {
        return Err(ChunkError::Version(version));
    }
    h.byte()?;
    h.count()
}

/// Decodes one chunk, appending its samples (in timestamp order) to `out`; on error `out`
/// is left as it was.
pub(crate) fn decode(data: &[u8], out: &mut Vec<(i64, Stored)>) -> Result<(), ChunkError> {
    let start = out.len();
    let result = decode_into(data, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn decode_into(data: &[u8], out: &mut Vec<(i64, Stored)>, start: usize) -> Result<(), ChunkError> {
    let mut h = Header { data, pos: 0 };
    let version = h.byte()?;
    if version != VERSION {
        return Err(ChunkError::Version(version));
    }
    let encoding = h.byte()?;
    let (kind, e) = (encoding & 0x0f, usize::from(encoding >> 4));
    match kind {
        ENC_COUNTER | ENC_XOR if e != 0 => {
            return Err(ChunkError::Damaged("exponent on a non-decimal chunk"));
        }
        ENC_DECIMAL if e > MAX_EXPONENT => {
            return Err(ChunkError::Damaged("decimal exponent over 9"));
        }
        ENC_COUNTER | ENC_DECIMAL | ENC_XOR => {}
        _ => return Err(ChunkError::Damaged("unknown encoding")),
    }
    let n = h.count()? as usize;
    let ts_params = h.stream(n, true)?;
    let (value_params, xor_first) = if kind == ENC_XOR {
        (None, h.u64_le()?)
    } else {
        (Some(h.stream(n, kind == ENC_DECIMAL)?), 0)
    };
    let mut bits = BitReader::new(&data[h.pos..]);

    out.reserve(n);
    let mut previous = i64::MIN;
    ts_params.decode(&mut bits, n, "timestamps", |i, v| {
        let t = v as i64;
        if i > 0 && t <= previous {
            return Err(ChunkError::Damaged("timestamps not strictly increasing"));
        }
        previous = t;
        out.push((t, Stored::Counter(0)));
        Ok(())
    })?;
    let slots = &mut out[start..];
    match (kind, value_params) {
        (ENC_COUNTER, Some(p)) => p.decode(&mut bits, n, "values", |i, v| {
            slots[i].1 = Stored::Counter(v);
            Ok(())
        })?,
        (ENC_DECIMAL, Some(p)) => {
            let scale = POW10[e];
            p.decode(&mut bits, n, "values", |i, v| {
                let m = v as i64;
                if !(-MANTISSA_LIMIT < m && m < MANTISSA_LIMIT) {
                    return Err(ChunkError::Damaged("decimal mantissa out of range"));
                }
                slots[i].1 = Stored::Gauge(m as f64 / scale);
                Ok(())
            })?;
        }
        _ => decode_xor(&mut bits, xor_first, slots)?,
    }
    let used = bits.used_bytes();
    if used < bits.data.len() {
        return Err(ChunkError::Trailing(bits.data.len() - used));
    }
    Ok(())
}

/// The byte-aligned header fields.
struct Header<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Header<'_> {
    fn byte(&mut self) -> Result<u8, ChunkError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(ChunkError::HeaderTruncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(ChunkError::Damaged("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(ChunkError::Damaged("varint longer than 10 bytes"))
    }

    fn count(&mut self) -> Result<u32, ChunkError> {
        let n = self.varint()?;
        match u32::try_from(n) {
            Ok(0) => Err(ChunkError::NoSamples),
            Ok(n) if n <= MAX_CHUNK_SAMPLES => Ok(n),
            _ => Err(ChunkError::Count(n)),
        }
    }

    fn u64_le(&mut self) -> Result<u64, ChunkError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 8)
            .ok_or(ChunkError::HeaderTruncated(self.data.len()))?;
        self.pos += 8;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(b))
    }

    /// An integer stream header; `signed` streams store their first value zig-zag.
    fn stream(&mut self, n: usize, signed: bool) -> Result<Stream, ChunkError> {
        let param = if n == 1 { 0 } else { self.byte()? };
        let width = u32::from(param % WIDTHS);
        let mode = match param / WIDTHS {
            0 => Mode::Delta,
            1 => Mode::DeltaOfDelta,
            2 => Mode::Grid,
            _ => return Err(ChunkError::Damaged("unknown stream mode")),
        };
        let first = self.varint()?;
        let first = if signed {
            unzigzag(first) as u64
        } else {
            first
        };
        let extra = if mode == Mode::Delta {
            0
        } else {
            unzigzag(self.varint()?) as u64
        };
        let center = if n == 1 { 0 } else { unzigzag(self.varint()?) };
        Ok(Stream {
            mode,
            width,
            first,
            extra,
            center,
        })
    }
}

/// A decoded integer stream header.
struct Stream {
    mode: Mode,
    width: u32,
    first: u64,
    /// Delta-of-deltas: the first delta; grid: the step.
    extra: u64,
    center: i64,
}

impl Stream {
    /// Decodes `n` values, calling `emit(index, value)` for each in order.
    #[inline]
    fn decode(
        &self,
        bits: &mut BitReader<'_>,
        n: usize,
        part: &'static str,
        mut emit: impl FnMut(usize, u64) -> Result<(), ChunkError>,
    ) -> Result<(), ChunkError> {
        let truncated = |decoded| ChunkError::Truncated {
            part,
            decoded,
            count: n,
        };
        let mut v = self.first;
        emit(0, v)?;
        // Delta-of-deltas: the previous delta; grid: the grid point.
        let mut state = v;
        let mut from = 1;
        if self.mode == Mode::DeltaOfDelta && n >= 2 {
            state = self.extra;
            v = v.wrapping_add(state);
            emit(1, v)?;
            from = 2;
        }
        let width = self.width;
        let escape = if width == 0 { 0 } else { escape_code(width) };
        for i in from..n {
            let (z, escaped) = if width == 0 {
                (0, false)
            } else {
                let code = bits.get(width).ok_or_else(|| truncated(i))?;
                if code == escape {
                    let len = bits.get(6).ok_or_else(|| truncated(i))? as u32 + 1;
                    (bits.get(len).ok_or_else(|| truncated(i))?, true)
                } else {
                    (code, false)
                }
            };
            let r = unzigzag(z).wrapping_add(self.center) as u64;
            match self.mode {
                Mode::Delta => v = v.wrapping_add(r),
                Mode::DeltaOfDelta => {
                    state = state.wrapping_add(r);
                    v = v.wrapping_add(state);
                }
                Mode::Grid => {
                    let predicted = state.wrapping_add(self.extra);
                    v = predicted.wrapping_add(r);
                    state = if escaped {
                        regrid(predicted, v, self.extra as i64, self.center, escape)
                    } else {
                        predicted
                    };
                }
            }
            emit(i, v)?;
        }
        Ok(())
    }
}

/// Decodes Gorilla XOR codes into `slots[1..]` after the first value's bits.
fn decode_xor(
    bits: &mut BitReader<'_>,
    first: u64,
    slots: &mut [(i64, Stored)],
) -> Result<(), ChunkError> {
    let n = slots.len();
    let truncated = |decoded| ChunkError::Truncated {
        part: "values",
        decoded,
        count: n,
    };
    let mut v = first;
    let (mut lead, mut len) = (0u32, 64u32);
    for (i, slot) in slots.iter_mut().enumerate() {
        if i > 0 && bits.get(1).ok_or_else(|| truncated(i))? == 1 {
            if bits.get(1).ok_or_else(|| truncated(i))? == 1 {
                lead = bits.get(5).ok_or_else(|| truncated(i))? as u32;
                len = bits.get(6).ok_or_else(|| truncated(i))? as u32 + 1;
                if lead + len > 64 {
                    return Err(ChunkError::Damaged("XOR window past 64 bits"));
                }
            }
            let x = bits.get(len).ok_or_else(|| truncated(i))?;
            v ^= x << (64 - lead - len);
        }
        slot.1 = Stored::Gauge(f64::from_bits(v));
    }
    Ok(())
}

/// Reads bit fields least significant bit first.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` to load into `acc`.
    pos: usize,
    /// Loaded bits; bits at and above `n` may already hold the following bytes.
    acc: u64,
    /// Valid bits in `acc`.
    n: u32,
}

impl<'a> BitReader<'a> {
    const fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }

    #[inline]
    fn refill(&mut self) {
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            // The bytes past the ones counted land above `n`, at their own positions:
            // the next refill ORs in the same bits again.
            self.acc |= u64::from_le_bytes(b) << self.n;
            let bytes = (63 - self.n) >> 3;
            self.pos += bytes as usize;
            self.n += bytes << 3;
        } else {
            while self.n <= 56 {
                let Some(&b) = self.data.get(self.pos) else {
                    break;
                };
                self.acc |= u64::from(b) << self.n;
                self.pos += 1;
                self.n += 8;
            }
        }
    }

    /// The next `w` bits (0..=64), or `None` at the end of the data.
    #[inline]
    fn get(&mut self, w: u32) -> Option<u64> {
        if w > 56 {
            let low = self.get(32)?;
            let high = self.get(w - 32)?;
            return Some(low | high << 32);
        }
        if self.n < w {
            self.refill();
            if self.n < w {
                return None;
            }
        }
        let v = self.acc & ((1u64 << w) - 1);
        self.acc >>= w;
        self.n -= w;
        Some(v)
    }

    /// Bytes holding the bits read so far.
    fn used_bytes(&self) -> usize {
        (self.pos * 8 - self.n as usize).div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip(samples: &[(i64, Stored)]) -> Vec<u8> {
        let mut data = vec![0xAA];
        encode(samples, &mut data).expect("encode");
        let chunk = data.split_off(1);
        assert_eq!(data, [0xAA], "encode appends");
        assert_eq!(sample_count(&chunk).expect("count") as usize, samples.len());
        let mut out = vec![(7, Stored::Counter(7))];
        decode(&chunk, &mut out).expect("decode");
        assert_eq!(out.len(), samples.len() + 1);
        assert_eq!(out[0], (7, Stored::Counter(7)), "decode appends");
        for (i, (got, want)) in out[1..].iter().zip(samples).enumerate() {
            assert_eq!(got.0, want.0, "timestamp {i}");
            match (got.1, want.1) {
                (Stored::Gauge(g), Stored::Gauge(w)) => {
                    assert_eq!(g.to_bits(), w.to_bits(), "gauge {i}: {g} vs {w}");
                }
                (g, w) => assert_eq!(g, w, "counter {i}"),
            }
        }
        chunk
    }

    fn gauges(ts0: i64, values: &[f64]) -> Vec<(i64, Stored)> {
        (0..)
            .zip(values)
            .map(|(i, &v)| (ts0 + i * 10_000, Stored::Gauge(v)))
            .collect()
    }

    /// The encoding nibble and exponent of a chunk.
    fn encoding(chunk: &[u8]) -> (u8, u8) {
        (chunk[1] & 0x0f, chunk[1] >> 4)
    }

    /// A deterministic xorshift generator.
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

    /// Realistic shapes: 10 s ± 5 ms, a gap now and then; a 2-decimal random walk gauge or
    /// a bytes counter.
    fn realistic(n: usize, counter: bool, seed: u64) -> Vec<(i64, Stored)> {
        let mut rng = Rng(seed);
        let (mut slot, mut cents, mut bytes) = (170_000_000_000i64, 3725i64, 0u64);
        (0..n)
            .map(|_| {
                slot += if rng.below(200) == 0 { 60_000 } else { 10_000 };
                let ts = slot + rng.below(11) as i64 - 5;
                cents += rng.below(21) as i64 - 10;
                bytes += rng.below(1_000_000);
                let v = if counter {
                    Stored::Counter(bytes)
                } else {
                    Stored::Gauge(cents as f64 / 100.0)
                };
                (ts, v)
            })
            .collect()
    }

    #[test]
    fn decimal_and_xor_paths() {
        let chunk = round_trip(&gauges(0, &[37.25, 37.31]));
        assert_eq!(encoding(&chunk), (ENC_DECIMAL, 2));
        let chunk = round_trip(&gauges(0, &[1.0, 2.0, -3.0]));
        assert_eq!(encoding(&chunk), (ENC_DECIMAL, 0));
        let chunk = round_trip(&gauges(0, &[0.000_000_001, 5.0]));
        assert_eq!(encoding(&chunk), (ENC_DECIMAL, 9));
        // the exponent grows as values need it, earlier mantissas scale along
        let chunk = round_trip(&gauges(0, &[1.0, 2.5, -3.25, 4.0]));
        assert_eq!(encoding(&chunk), (ENC_DECIMAL, 2));
        // ... unless they leave 2^53; or a later value has no short decimal
        let chunk = round_trip(&gauges(0, &[9e15, 0.5]));
        assert_eq!(encoding(&chunk), (ENC_XOR, 0));
        let chunk = round_trip(&gauges(0, &[1.5, 2.25, 0.1 + 0.2, 7.0]));
        assert_eq!(encoding(&chunk), (ENC_XOR, 0));
        // 0.1 + 0.2 is 0.30000000000000004: no short decimal
        let chunk = round_trip(&gauges(0, &[0.1 + 0.2]));
        assert_eq!(encoding(&chunk), (ENC_XOR, 0));
        // -0.0 would come back as 0.0 from a mantissa: XOR keeps it
        let chunk = round_trip(&gauges(0, &[-0.0, 1.0]));
        assert_eq!(encoding(&chunk), (ENC_XOR, 0));
        let nan = f64::from_bits(0x7ff8_dead_beef_0001);
        let chunk = round_trip(&gauges(
            -5,
            &[
                nan,
                f64::INFINITY,
                f64::NEG_INFINITY,
                5e-324,
                f64::MAX,
                0.0,
                -nan,
            ],
        ));
        assert_eq!(encoding(&chunk), (ENC_XOR, 0));
        // 2^53 itself is not a mantissa
        let chunk = round_trip(&gauges(0, &[9_007_199_254_740_992.0]));
        assert_eq!(encoding(&chunk), (ENC_XOR, 0));
        let chunk = round_trip(&gauges(0, &[9_007_199_254_740_991.0]));
        assert_eq!(encoding(&chunk), (ENC_DECIMAL, 0));
    }

    #[test]
    fn regular_series_cost_no_bits_per_sample() {
        let samples: Vec<_> = (0..360)
            .map(|i| {
                (
                    1_700_000_000_000 + i * 10_000,
                    Stored::Counter(1000 + 512 * i as u64),
                )
            })
            .collect();
        let chunk = round_trip(&samples);
        assert!(
            chunk.len() <= 24,
            "constant-rate counter: {} bytes",
            chunk.len()
        );
        let samples = gauges(1_700_000_000_000, &[42.5; 360]);
        let chunk = round_trip(&samples);
        assert!(chunk.len() <= 20, "constant gauge: {} bytes", chunk.len());
    }

    #[test]
    fn realistic_series_stay_compact() {
        let g = round_trip(&realistic(120, false, 1));
        assert!(
            g.len() <= 180,
            "realistic gauge, 120 samples: {} bytes",
            g.len()
        );
        let c = round_trip(&realistic(120, true, 2));
        // 20 bits of entropy per increment alone: ~3.1 B/sample is the best a codec does
        assert!(
            c.len() <= 120 * 7 / 2,
            "realistic counter, 120 samples: {} bytes",
            c.len()
        );
    }

    #[test]
    fn delta_of_delta_wins_on_a_steadily_growing_rate() {
        // increments 1000, 1003, 1006, ...: second differences are constant
        let mut v = 0u64;
        let samples: Vec<_> = (0..200)
            .map(|i| {
                v += 1000 + 3 * i as u64;
                (i as i64 * 10_000, Stored::Counter(v))
            })
            .collect();
        let chunk = round_trip(&samples);
        // the value stream's parameter byte follows the timestamp stream's header
        let mut h = Header {
            data: &chunk,
            pos: 2,
        };
        h.count().expect("count");
        h.stream(200, true).expect("timestamps");
        let value = h.stream(200, false).expect("values");
        assert!(
            value.mode == Mode::DeltaOfDelta && value.width == 0,
            "order 2, width 0: {:?}",
            chunk
        );
    }

    #[test]
    fn a_one_sample_chunk_is_five_bytes_and_up() {
        // version, counter, count 1, zig-zag ts 1, value 5: no stream parameters
        assert_eq!(
            round_trip(&[(1, Stored::Counter(5))]),
            [VERSION, ENC_COUNTER, 1, 2, 5]
        );
        assert_eq!(
            round_trip(&[(-1, Stored::Gauge(2.5))]),
            [VERSION, ENC_DECIMAL | 0x10, 1, 1, 50]
        );
    }

    /// The timestamp stream's plan of a chunk.
    fn ts_stream(chunk: &[u8]) -> Stream {
        let mut h = Header {
            data: chunk,
            pos: 2,
        };
        let n = h.count().expect("count") as usize;
        h.stream(n, true).expect("timestamps")
    }

    #[test]
    fn jittered_schedules_use_the_grid_and_keep_its_phase_over_gaps() {
        let samples = realistic(120, false, 5);
        let chunk = round_trip(&samples);
        let ts = ts_stream(&chunk);
        assert!(
            ts.mode == Mode::Grid && ts.width == 4,
            "{:?} {}",
            ts.mode,
            ts.width
        );
        // a schedule 10 s ± 5 ms with a gap of 5 missed samples after sample 50: the gap
        // is the only escape, the grid's phase is kept (every other code is 4 bits)
        let mut rng = Rng(9);
        let jittered: Vec<_> = (0..120)
            .map(|i| {
                let slot = if i > 50 { i + 5 } else { i };
                (
                    1_700_000_000_000 + slot * 10_000 + rng.below(11) as i64 - 5,
                    Stored::Counter(0),
                )
            })
            .collect();
        let chunk = round_trip(&jittered);
        let ts = ts_stream(&chunk);
        assert!(
            ts.mode == Mode::Grid && ts.width == 4,
            "{:?} {}",
            ts.mode,
            ts.width
        );
        // header: 2 + count 1 + param 1 + t0 6 + step 3 + center 1; value stream 3; codes
        // 119 * 4 + one escape (6 + 17 bits)
        let bound = 2 + 1 + 1 + 6 + 3 + 1 + 3 + (119 * 4 + 6 + 17_usize).div_ceil(8);
        assert!(chunk.len() <= bound, "{} bytes, bound {bound}", chunk.len());
    }

    #[test]
    fn counter_resets_and_wraps() {
        let values = [0, 5, u64::MAX - 1, u64::MAX, 0, 3, 2, 1 << 63, 7];
        let samples: Vec<_> = (0..)
            .zip(values)
            .map(|(i, v)| (i64::MIN + 1 + i, Stored::Counter(v)))
            .collect();
        round_trip(&samples);
        round_trip(&[
            (i64::MIN, Stored::Counter(1)),
            (i64::MAX, Stored::Counter(2)),
        ]);
    }

    #[test]
    fn encode_refuses_bad_input() {
        let mut out = vec![];
        let cases: [(&[(i64, Stored)], &str); 4] = [
            (&[], "empty"),
            (
                &[(5, Stored::Gauge(1.0)), (5, Stored::Gauge(2.0))],
                "not strictly increasing at sample 1 (5 then 5)",
            ),
            (
                &[(5, Stored::Gauge(1.0)), (4, Stored::Gauge(2.0))],
                "not strictly increasing",
            ),
            (
                &[(5, Stored::Gauge(1.0)), (6, Stored::Counter(2))],
                "sample 1 is a counter, the chunk holds gauges",
            ),
        ];
        for (samples, want) in cases {
            let e = encode(samples, &mut out).expect_err(want).to_string();
            assert!(e.contains(want), "{e}");
            assert!(out.is_empty());
        }
        let many: Vec<_> = (0..=i64::from(MAX_CHUNK_SAMPLES))
            .map(|i| (i, Stored::Counter(0)))
            .collect();
        let e = encode(&many, &mut out).expect_err("too many").to_string();
        assert!(e.contains("65537 samples"), "{e}");
        encode(&many[1..], &mut out).expect("exactly the limit");
        let mut back = vec![];
        decode(&out, &mut back).expect("decode the limit");
        assert_eq!(back.len(), MAX_CHUNK_SAMPLES as usize);
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        // u32::MAX samples in 10 bytes
        let mut data = vec![VERSION, ENC_COUNTER];
        put_varint(&mut data, u64::from(u32::MAX));
        data.resize(10, 0);
        let mut out = Vec::new();
        let e = decode(&data, &mut out).expect_err("huge count").to_string();
        assert!(
            e.contains("sample count 4294967295 exceeds chunk limit"),
            "{e}"
        );
        assert_eq!(out.capacity(), 0);
        assert!(sample_count(&data).is_err());
        let e = decode(&[7, 0, 1], &mut out)
            .expect_err("version")
            .to_string();
        assert_eq!(e, "unknown chunk version 7");
        for (encoding, want) in [
            (0x90, "exponent on a non-decimal"),
            (0xA1, "exponent over 9"),
        ] {
            let e = decode(&[VERSION, encoding, 1], &mut out)
                .expect_err(want)
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = decode(&[VERSION, 5, 1], &mut out)
            .expect_err("encoding")
            .to_string();
        assert!(e.contains("unknown encoding"), "{e}");
        let e = decode(&[VERSION, 0, 0], &mut out)
            .expect_err("zero")
            .to_string();
        assert_eq!(e, "chunk declares no samples");
        let e = decode(
            &[
                VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            &mut out,
        )
        .expect_err("varint")
        .to_string();
        assert!(e.contains("varint"), "{e}");
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let mut chunks = vec![
            round_trip(&realistic(120, false, 3)),
            round_trip(&realistic(120, true, 4)),
            round_trip(&gauges(
                -1,
                &[f64::NAN, -0.0, 1e300, 5e-324, 3.5, 3.5, 1.0 / 3.0],
            )),
        ];
        let mut trailing = chunks[0].clone();
        trailing.push(0);
        let mut out = vec![(1, Stored::Counter(1))];
        let e = decode(&trailing, &mut out)
            .expect_err("trailing")
            .to_string();
        assert_eq!(e, "chunk has 1 trailing bytes after its last sample");
        assert_eq!(out.len(), 1, "out restored");
        let truncated = decode(&chunks[0][..chunks[0].len() - 20], &mut out)
            .expect_err("truncated")
            .to_string();
        assert!(truncated.starts_with("chunk truncated: "), "{truncated}");
        assert!(
            truncated.ends_with(" of 120 samples (values)"),
            "{truncated}"
        );
        for chunk in &mut chunks {
            for len in 0..chunk.len() {
                assert!(decode(&chunk[..len], &mut out).is_err(), "prefix {len}");
                assert_eq!(out.len(), 1, "out restored");
            }
            for bit in 0..chunk.len().min(64) * 8 {
                chunk[bit / 8] ^= 1 << (bit % 8);
                match decode(chunk, &mut out) {
                    Ok(()) => {
                        assert!(out[1..].windows(2).all(|w| w[0].0 < w[1].0), "bit {bit}");
                        out.truncate(1);
                    }
                    Err(_) => assert_eq!(out.len(), 1, "out restored"),
                }
                chunk[bit / 8] ^= 1 << (bit % 8);
            }
        }
    }

    fn timestamps() -> impl Strategy<Value = Vec<i64>> {
        let start = prop_oneof![
            Just(i64::MIN),
            Just(i64::MIN + 1),
            Just(-1i64),
            Just(1_700_000_000_000i64),
            any::<i64>(),
        ];
        let gap = prop_oneof![
            4 => 9_995u64..=10_005,
            2 => Just(10_000u64),
            1 => 1u64..=3,
            1 => any::<u64>(),
            1 => 1u64..=(1 << 40),
        ];
        let interval_jitter =
            (start.clone(), prop::collection::vec(gap, 0..500)).prop_map(|(start, gaps)| {
                let mut ts = vec![start];
                for g in gaps {
                    match ts[ts.len() - 1].checked_add_unsigned(g) {
                        Some(t) => ts.push(t),
                        None => break,
                    }
                }
                ts
            });
        // a schedule with jitter, missed samples and phase shifts
        let slot = prop_oneof![8 => Just(0i64), 1 => 1i64..5, 1 => -3000i64..3000];
        let schedule_jitter =
            (start, prop::collection::vec((slot, -5i64..=5), 0..500)).prop_map(|(start, slots)| {
                let mut ts = vec![start];
                let mut grid = start;
                for (skip, jitter) in slots {
                    let next = grid
                        .checked_add(10_000 + skip.max(0) * 10_000 + skip.min(0).abs())
                        .and_then(|g| Some((g, g.checked_add(jitter)?)));
                    match next {
                        Some((g, t)) if t > ts[ts.len() - 1] => {
                            grid = g;
                            ts.push(t);
                        }
                        _ => break,
                    }
                }
                ts
            });
        prop_oneof![interval_jitter, schedule_jitter]
    }

    fn gauge_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            (-100_000i64..100_000, 0usize..=9).prop_map(|(m, e)| m as f64 / POW10[e]),
            prop::sample::select(vec![
                f64::NAN,
                f64::from_bits(0xfff0_0000_0000_0001),
                -0.0,
                0.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                5e-324,
                f64::MIN_POSITIVE,
                f64::MAX,
                f64::MIN,
            ]),
        ]
    }

    fn values(n: usize) -> impl Strategy<Value = Vec<Stored>> {
        prop_oneof![
            // gauges: each chunk all-decimal, all random, or mixed
            prop::collection::vec(gauge_value(), n)
                .prop_map(|v| v.into_iter().map(Stored::Gauge).collect()),
            (
                (-1_000_000i64..1_000_000),
                0usize..=9,
                prop::collection::vec(-50i64..50, n)
            )
                .prop_map(|(start, e, steps)| {
                    steps
                        .iter()
                        .scan(start, |m, s| {
                            *m += s;
                            Some(Stored::Gauge(*m as f64 / POW10[e]))
                        })
                        .collect()
                }),
            // counters: random, increasing with resets, extremes
            prop::collection::vec(any::<u64>(), n)
                .prop_map(|v| v.into_iter().map(Stored::Counter).collect()),
            prop::collection::vec(prop_oneof![8 => 0u64..1_000_000, 1 => Just(u64::MAX)], n)
                .prop_map(|steps| {
                    steps
                        .iter()
                        .scan(0u64, |c, &s| {
                            *c = if s == u64::MAX { 0 } else { c.wrapping_add(s) };
                            Some(Stored::Counter(*c))
                        })
                        .collect()
                }),
            prop::collection::vec(
                prop::sample::select(vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63]),
                n
            )
            .prop_map(|v| v.into_iter().map(Stored::Counter).collect()),
        ]
    }

    fn series() -> impl Strategy<Value = Vec<(i64, Stored)>> {
        timestamps().prop_flat_map(|ts| {
            let n = ts.len();
            (Just(ts), values(n)).prop_map(|(ts, v)| ts.into_iter().zip(v).collect())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_series_round_trips(samples in series()) {
            round_trip(&samples);
        }

        #[test]
        fn damaged_chunks_never_panic(samples in series(), flips in prop::collection::vec(any::<usize>(), 1..4), cut in any::<usize>()) {
            let mut chunk = Vec::new();
            encode(&samples, &mut chunk).expect("encode");
            for f in flips {
                let bit = f % (chunk.len() * 8);
                chunk[bit / 8] ^= 1 << (bit % 8);
            }
            let mut out = vec![];
            for data in [&chunk[..], &chunk[..cut % (chunk.len() + 1)]] {
                match decode(data, &mut out) {
                    Ok(()) => prop_assert!(out.windows(2).all(|w| w[0].0 < w[1].0)),
                    Err(_) => prop_assert!(out.is_empty()),
                }
                out.clear();
            }
        }

        #[test]
        fn garbage_never_panics(
            prefix in prop::sample::select(vec![vec![], vec![VERSION], vec![VERSION, ENC_COUNTER], vec![VERSION, ENC_DECIMAL | 0x20], vec![VERSION, ENC_XOR]]),
            tail in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let data = [prefix, tail].concat();
            let mut out = vec![];
            if decode(&data, &mut out).is_ok() {
                prop_assert_eq!(out.len() as u32, sample_count(&data).expect("count"));
                prop_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}
