//! A runtime-agnostic one-shot completion: the writer thread fills it, a blocking caller waits
//! on its log's [`Bell`] (one condition variable per log, rung once per answered group), an
//! async caller polls [`AppendFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::Error;
use crate::LsnRange;
use crate::error::Result;

#[derive(Debug, Default)]
struct Slot {
    result: Option<Result<LsnRange>>,
    waker: Option<Waker>,
    taken: bool,
}

/// Where blocked appenders of one log sleep: the writer answers a whole group and then wakes
/// them with one `notify_all` (one system call, at most one preemption of the writer) instead
/// of one wake-up per appender.
#[derive(Debug, Default)]
pub(crate) struct Bell {
    rung: Mutex<u64>,
    cv: Condvar,
}

impl Bell {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Wakes every blocked waiter (each re-checks its own completion).
    pub(crate) fn ring(&self) {
        *self.rung.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.cv.notify_all();
    }
}

#[derive(Debug)]
pub(crate) struct Completion {
    slot: Mutex<Slot>,
    bell: Arc<Bell>,
}

impl Completion {
    pub(crate) fn new(bell: &Arc<Bell>) -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::default(),
            bell: bell.clone(),
        })
    }

    /// Sets the result and wakes an async waiter, but not a blocked one: the caller rings
    /// the bell once after answering a group.
    pub(crate) fn complete_quiet(&self, r: Result<LsnRange>) {
        let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if s.result.is_none() && !s.taken {
            s.result = Some(r);
        }
        let w = s.waker.take();
        drop(s);
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) fn complete(&self, r: Result<LsnRange>) {
        self.complete_quiet(r);
        self.bell.ring();
    }

    pub(crate) fn wait(&self) -> Result<LsnRange> {
        let mut g = self
            .bell
            .rung
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            {
                let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(r) = s.result.take() {
                    s.taken = true;
                    return r;
                }
            }
            g = self.bell.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<LsnRange>> {
        let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = s.result.take() {
            s.taken = true;
            return Poll::Ready(r);
        }
        if s.taken {
            return Poll::Ready(Err(Error::Closed));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Future of an asynchronous append; resolves to the LSN range once the records are durable
/// (under [`SyncPolicy::Always`](crate::SyncPolicy::Always)). Works on any executor: it is
/// completed by the WAL's writer thread, not by an I/O reactor.
///
/// Dropping the future does not cancel the append.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled; the append itself is already queued"]
pub struct AppendFuture {
    pub(crate) inner: Arc<Completion>,
}

impl Future for AppendFuture {
    type Output = Result<LsnRange>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn range(lsn: u64) -> LsnRange {
        LsnRange {
            first: lsn,
            last: lsn,
        }
    }

    #[test]
    fn a_ring_for_others_does_not_release_a_waiter_and_its_own_answer_does() {
        let bell = Bell::new();
        let mine = Completion::new(&bell);
        let other = Completion::new(&bell);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let mine = mine.clone();
            std::thread::spawn(move || tx.send(mine.wait()).unwrap())
        };
        // Another appender's answer rings the shared bell: this waiter wakes, finds nothing
        // and sleeps again.
        other.complete_quiet(Ok(range(1)));
        bell.ring();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        assert_eq!(other.wait().unwrap(), range(1));
        // A quiet answer followed by one ring releases it with its own result.
        mine.complete_quiet(Ok(range(2)));
        bell.ring();
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("waiter released");
        assert_eq!(got.unwrap(), range(2));
        waiter.join().unwrap();
    }

    #[test]
    fn complete_rings_by_itself() {
        let bell = Bell::new();
        let c = Completion::new(&bell);
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.wait())
        };
        c.complete(Err(Error::Closed));
        assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    }
}
