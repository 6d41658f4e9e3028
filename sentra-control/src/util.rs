//! Small helpers: time, randomness, encoding, private files.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use base64::Engine as _;
use ring::rand::SecureRandom as _;

use crate::{Error, Result};

pub(crate) fn now_ms() -> i64 {
    sentra_core::UnixMillis::now().as_millis()
}

pub(crate) fn now_secs() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::Internal("system random source failed".into()))
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Deserializes an unsigned integer that JSON may spell `25` or `25.0` (both are the
/// integer 25 in JSON Schema); `25.5`, negative and out-of-range values are refused.
pub(crate) fn integral<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::{Deserialize as _, de::Error as _};
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    let n = match Num::deserialize(d)? {
        Num::Int(n) => n,
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the guard admits only whole, non-negative floats up to 2^53: exact in u64"
        )]
        Num::Float(f) if f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) => {
            f as u64
        }
        Num::Float(_) => return Err(D::Error::custom("not a non-negative integer")),
    };
    T::try_from(n).map_err(|_| D::Error::custom("integer out of range"))
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Creates a new file readable and writable by the owner only (0600). Fails if it exists.
pub(crate) fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Fsyncs the directory holding `path`, so a newly created file survives a crash.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}
