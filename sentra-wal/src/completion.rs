//! A runtime-agnostic one-shot completion: the writer thread fills it, a blocking caller waits
//! on a condition variable, an async caller polls [`AppendFuture`].

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

#[derive(Debug, Default)]
pub(crate) struct Completion {
    slot: Mutex<Slot>,
    cv: Condvar,
}

impl Completion {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn complete(&self, r: Result<LsnRange>) {
        let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if s.result.is_none() && !s.taken {
            s.result = Some(r);
        }
        let w = s.waker.take();
        drop(s);
        self.cv.notify_all();
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) fn wait(&self) -> Result<LsnRange> {
        let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = s.result.take() {
                s.taken = true;
                return r;
            }
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
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
