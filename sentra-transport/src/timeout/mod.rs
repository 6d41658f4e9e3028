//! Fails a request that takes longer than a fixed duration with [`Elapsed`]
//! (`DEADLINE_EXCEEDED` on the wire).
//!
//! Generic over the request type, so the same layer bounds a server's per-request time and a
//! client's overall deadline (including retries) or per-attempt time.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use sentra_transport::{BoxError, timeout::{Elapsed, TimeoutLayer}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(10)))
//!     .service(service_fn(|_: ()| async {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!         Ok::<_, BoxError>(())
//!     }));
//! let err = svc.oneshot(()).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod service;

pub use error::Elapsed;
pub use layer::TimeoutLayer;
pub use service::Timeout;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{ServiceBuilder, ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::BoxError;

    #[tokio::test(start_paused = true)]
    async fn fast_requests_pass_slow_ones_elapse() {
        let svc = ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_millis(100)))
            .service(service_fn(|d: u64| async move {
                tokio::time::sleep(Duration::from_millis(d)).await;
                Ok::<_, BoxError>(d)
            }));
        assert_eq!(svc.clone().oneshot(10).await.unwrap(), 10);
        let err = svc.oneshot(1000).await.unwrap_err();
        assert!(err.is::<Elapsed>());
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let svc = TimeoutLayer::new(Duration::from_secs(1)).layer(service_fn(|_: ()| async {
            Err::<(), BoxError>("inner".into())
        }));
        let err = svc.oneshot(()).await.unwrap_err();
        assert_eq!(err.to_string(), "inner");
    }
}
