//! Failed-login limiting per client address and per account.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Counts failures per key in a fixed window; a key with `max` failures in the current
/// window is refused until the window ends. Success clears a key.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

impl FailureLimiter {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max: max.max(1),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds until retry)` if `key` is over its budget.
    pub(crate) fn check(&self, key: &str) -> Result<(), u64> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some(&(n, start)) if n >= self.max => {
                let left = self.window.saturating_sub(start.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left.as_secs().max(1))
                }
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn fail(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= SWEEP_AT {
            let window = self.window;
            entries.retain(|_, (_, start)| start.elapsed() < window);
        }
        let now = Instant::now();
        let e = entries.entry(key.to_owned()).or_insert((0, now));
        if e.1.elapsed() >= self.window {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }

    pub(crate) fn clear(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_clears() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        assert!(l.check("a").is_ok());
        l.fail("a");
        assert!(l.check("a").is_ok());
        l.fail("a");
        assert!(l.check("a").unwrap_err() >= 1);
        assert!(l.check("b").is_ok());
        l.clear("a");
        assert!(l.check("a").is_ok());
    }

    #[test]
    fn window_expires() {
        let l = FailureLimiter::new(1, Duration::from_millis(20));
        l.fail("a");
        assert!(l.check("a").is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(l.check("a").is_ok());
    }
}
