//! Response future of [`Auth`](super::Auth).

pub use crate::reject_future::ResponseFuture;
