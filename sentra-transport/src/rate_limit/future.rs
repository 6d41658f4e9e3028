//! Response future of [`RateLimit`](super::RateLimit).

pub use crate::reject_future::ResponseFuture;
