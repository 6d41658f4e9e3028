//! Replay protection of signed agent requests.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use sentra_core::UnixMillis;

/// Remembers the fingerprints of signed agent requests inside the skew window, so a
/// captured `POST /api/v1/agent/key` or `FetchDesiredState` envelope cannot be replayed.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl ReplayGuard {
    /// `true` the first time a fingerprint is presented.
    #[must_use]
    pub fn first_use(&self, fingerprint: &[u8; 32], now: UnixMillis) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now.as_millis();
        if seen.len() > 4096 {
            seen.retain(|_, expiry| *expiry > now);
        }
        // Twice the skew window: an envelope is verifiable at most that long.
        let expiry = now.saturating_add(
            2 * i64::try_from(sentra_core::envelope::MAX_SKEW_LIMIT_MS).unwrap_or(i64::MAX),
        );
        match seen.get(fingerprint) {
            Some(e) if *e > now => false,
            _ => {
                seen.insert(*fingerprint, expiry);
                true
            }
        }
    }
}
