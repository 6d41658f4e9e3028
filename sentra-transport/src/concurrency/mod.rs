//! A *global* concurrency limit that sheds load: when `max` requests are in flight, the next
//! one fails at once with [`Overloaded`] (`RESOURCE_EXHAUSTED` with a retry hint) instead of
//! queueing.
//!
//! Global by construction: the layer owns one `Arc<Semaphore>` and every service it builds
//! (on every connection, for every method) shares it. tower's `ConcurrencyLimitLayer` makes
//! one semaphore per `layer()` call, i.e. per connection under tonic (security.md §3.2).
//! Shedding instead of waiting keeps latency bounded under overload; agents keep the data in
//! their WAL and retry with jittered backoff.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sentra_transport::{BoxError, concurrency::{ConcurrencyLimitLayer, Overloaded}};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let layer = ConcurrencyLimitLayer::new(1);
//! let gate = std::sync::Arc::new(tokio::sync::Notify::new());
//! let g = gate.clone();
//! let slow = layer.layer(service_fn(move |_: ()| {
//!     let g = g.clone();
//!     async move { g.notified().await; Ok::<_, BoxError>(()) }
//! }));
//! let first = tokio::spawn(slow.clone().oneshot(()));
//! while layer.in_flight() == 0 { tokio::task::yield_now().await; }
//! assert!(slow.oneshot(()).await.unwrap_err().is::<Overloaded>());
//! gate.notify_waiters();
//! first.await.unwrap().unwrap();
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod service;

pub use error::Overloaded;
pub use layer::ConcurrencyLimitLayer;
pub use service::ConcurrencyLimit;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;
    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::BoxError;

    #[tokio::test]
    async fn limit_is_shared_by_all_services_of_a_layer() {
        let layer = ConcurrencyLimitLayer::new(2);
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let inner = service_fn(move |_: u8| {
            let g = g.clone();
            async move {
                g.notified().await;
                Ok::<_, BoxError>(())
            }
        });
        // Two separately built services (two "connections").
        let a = layer.layer(inner.clone());
        let b = layer.layer(inner);
        let h1 = tokio::spawn(a.clone().oneshot(1));
        let h2 = tokio::spawn(b.clone().oneshot(2));
        while layer.in_flight() < 2 {
            tokio::task::yield_now().await;
        }
        let err = b.clone().oneshot(3).await.unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
        let err = a.clone().oneshot(4).await.unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
        gate.notify_waiters();
        h1.await.unwrap().unwrap();
        h2.await.unwrap().unwrap();
        assert_eq!(layer.in_flight(), 0);
        // Capacity is back.
        let gate2 = gate.clone();
        let h = tokio::spawn(a.oneshot(5));
        while layer.in_flight() < 1 {
            tokio::task::yield_now().await;
        }
        gate2.notify_waiters();
        h.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn permit_released_on_error_and_drop() {
        let layer = ConcurrencyLimitLayer::new(1);
        let svc = layer.layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("boom".into())
            } else {
                std::future::pending().await
            }
        }));
        assert!(svc.clone().oneshot(true).await.is_err());
        assert_eq!(layer.in_flight(), 0);
        let fut = svc.clone().oneshot(false);
        drop(fut);
        assert_eq!(layer.in_flight(), 0);
        assert_eq!(layer.max(), 1);
    }
}
