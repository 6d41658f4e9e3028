//! Per-series sample chunks: the encoding of raw samples at rest.
//!
//! PLACEHOLDER format (replaced by the compressed codec): version byte 0, kind byte
//! (0 gauge, 1 counter), sample count (LEB128), then per sample the zig-zag LEB128 delta of
//! the timestamp and the value (gauge: 8 bytes little endian; counter: LEB128 wrapping delta).

use crate::model::Stored;

/// Most samples one chunk may hold; [`decode`] refuses more.
pub(crate) const MAX_CHUNK_SAMPLES: u32 = 65_536;

/// A chunk that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ChunkError {
    /// The chunk ends before its declared content.
    #[error("chunk truncated: {0}")]
    Truncated(&'static str),
    /// A format this build does not know.
    #[error("unknown chunk version {0}")]
    Version(u8),
    /// A header field out of range.
    #[error("damaged chunk header: {0}")]
    Header(String),
    /// The samples given to [`encode`] break its preconditions.
    #[error("cannot encode chunk: {0}")]
    Input(&'static str),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> Result<u64, ChunkError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or(ChunkError::Truncated("varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(ChunkError::Header("varint longer than 10 bytes".into()))
}

const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

const fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes `samples` (non-empty, strictly increasing timestamps, one kind) into `out`.
pub(crate) fn encode(samples: &[(i64, Stored)], out: &mut Vec<u8>) -> Result<(), ChunkError> {
    let Some(&(_, first)) = samples.first() else {
        return Err(ChunkError::Input("no samples"));
    };
    if samples.len() > MAX_CHUNK_SAMPLES as usize {
        return Err(ChunkError::Input("too many samples"));
    }
    out.push(0);
    out.push(first.kind() as u8);
    put_varint(out, samples.len() as u64);
    let (mut prev_ts, mut prev_counter) = (0i64, 0u64);
    for (i, &(ts, v)) in samples.iter().enumerate() {
        if i > 0 && ts <= prev_ts {
            return Err(ChunkError::Input("timestamps not strictly increasing"));
        }
        put_varint(out, zigzag(ts.wrapping_sub(prev_ts)));
        prev_ts = ts;
        match (first, v) {
            (Stored::Gauge(_), Stored::Gauge(g)) => out.extend_from_slice(&g.to_le_bytes()),
            (Stored::Counter(_), Stored::Counter(c)) => {
                put_varint(out, zigzag(c.wrapping_sub(prev_counter) as i64));
                prev_counter = c;
            }
            _ => return Err(ChunkError::Input("mixed kinds")),
        }
    }
    Ok(())
}

/// The number of samples a chunk holds, from its header.
pub(crate) fn sample_count(data: &[u8]) -> Result<u32, ChunkError> {
    let version = *data.first().ok_or(ChunkError::Truncated("header"))?;
    if version != 0 {
        return Err(ChunkError::Version(version));
    }
    let mut pos = 2;
    let n = get_varint(data, &mut pos)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_CHUNK_SAMPLES)
        .ok_or_else(|| ChunkError::Header(format!("sample count {n} exceeds chunk limit")))
}

/// Decodes one chunk, appending its samples to `out` (left unchanged on error).
pub(crate) fn decode(data: &[u8], out: &mut Vec<(i64, Stored)>) -> Result<(), ChunkError> {
    let n = sample_count(data)?;
    let kind = *data.get(1).ok_or(ChunkError::Truncated("header"))?;
    let mut pos = 2;
    get_varint(data, &mut pos)?;
    let start = out.len();
    let result = (|| {
        let (mut ts, mut counter) = (0i64, 0u64);
        for _ in 0..n {
            ts = ts.wrapping_add(unzigzag(get_varint(data, &mut pos)?));
            let v = match kind {
                0 => {
                    let b = data
                        .get(pos..pos + 8)
                        .ok_or(ChunkError::Truncated("gauge"))?;
                    pos += 8;
                    Stored::Gauge(f64::from_le_bytes(b.try_into().unwrap_or_default()))
                }
                1 => {
                    counter = counter.wrapping_add(unzigzag(get_varint(data, &mut pos)?) as u64);
                    Stored::Counter(counter)
                }
                k => return Err(ChunkError::Header(format!("unknown kind {k}"))),
            };
            out.push((ts, v));
        }
        Ok(())
    })();
    if result.is_err() {
        out.truncate(start);
    }
    result
}
