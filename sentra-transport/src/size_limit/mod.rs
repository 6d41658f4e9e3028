//! Rejects envelopes whose payload exceeds a cap with [`PayloadTooLarge`] (`OUT_OF_RANGE`,
//! reason `TOO_LARGE`), before any authentication work is spent on them.
//!
//! tonic's `max_decoding_message_size` bounds the whole encoded message while it is read off
//! the wire; this layer bounds the signed payload, which lets a deployment accept a smaller
//! payload than the transport limit (or a different one per method).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use sentra_core::proto::SignedBatch;
//! use sentra_transport::{BoxError, size_limit::{PayloadTooLarge, RequestSizeLimitLayer}};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let svc = RequestSizeLimitLayer::new(4)
//!     .layer(service_fn(|_: SignedBatch| async { Ok::<_, BoxError>(()) }));
//! let big = SignedBatch { payload: vec![0; 5].into(), ..Default::default() };
//! assert!(svc.oneshot(big).await.unwrap_err().is::<PayloadTooLarge>());
//! # }
//! ```

mod error;
pub mod future;
mod layer;
mod service;

pub use error::PayloadTooLarge;
pub use layer::RequestSizeLimitLayer;
pub use service::RequestSizeLimit;

/// Requests whose signed payload size is known.
pub trait PayloadLen {
    /// Length of the signed payload in bytes.
    fn payload_len(&self) -> usize;
}

impl PayloadLen for sentra_core::proto::SignedBatch {
    fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

impl PayloadLen for sentra_core::Verified {
    fn payload_len(&self) -> usize {
        self.payload().len()
    }
}

impl<T: PayloadLen> PayloadLen for tonic::Request<T> {
    fn payload_len(&self) -> usize {
        self.get_ref().payload_len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use sentra_core::proto::SignedBatch;
    use tower::{ServiceExt, service_fn};
    use tower_layer::Layer;

    use super::*;
    use crate::BoxError;

    #[tokio::test]
    async fn at_limit_passes_over_limit_never_reaches_inner() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let svc = RequestSizeLimitLayer::new(16).layer(service_fn(
            move |r: tonic::Request<SignedBatch>| {
                c.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, BoxError>(r.get_ref().payload.len()) }
            },
        ));
        let req = |n: usize| {
            tonic::Request::new(SignedBatch {
                payload: vec![1; n].into(),
                ..Default::default()
            })
        };
        assert_eq!(svc.clone().oneshot(req(16)).await.unwrap(), 16);
        let err = svc.oneshot(req(17)).await.unwrap_err();
        let e = err.downcast_ref::<PayloadTooLarge>().unwrap();
        assert_eq!((e.payload_len(), e.limit()), (17, 16));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
