//! Response future of [`RequestSizeLimit`](super::RequestSizeLimit).

pub use crate::reject_future::ResponseFuture;
