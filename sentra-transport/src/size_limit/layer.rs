use tower_layer::Layer;

use super::RequestSizeLimit;

/// Applies [`RequestSizeLimit`].
#[derive(Clone, Copy, Debug)]
pub struct RequestSizeLimitLayer {
    max_payload: usize,
}

impl RequestSizeLimitLayer {
    /// Rejects payloads longer than `max_payload` bytes.
    #[must_use]
    pub const fn new(max_payload: usize) -> Self {
        Self { max_payload }
    }
}

impl<S> Layer<S> for RequestSizeLimitLayer {
    type Service = RequestSizeLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSizeLimit::new(inner, self.max_payload)
    }
}
