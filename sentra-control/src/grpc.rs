//! The `FetchDesiredState` gRPC service.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use sentra_core::{UnixMillis, Verified, proto};

use crate::{BoxError, ControlStore, Result};

/// Metadata key of the machine-readable reject reason (`sentra-transport`'s
/// `status::REJECT_REASON_KEY`; a test checks they agree).
const REJECT_REASON_KEY: &str = "sentra-reject-reason";

/// The answer to a replayed envelope: `UNAUTHENTICATED` (not retryable: the same envelope
/// can never succeed) with reason `REJECT_REASON_REPLAY`.
fn replay_status() -> tonic::Status {
    let mut s = tonic::Status::unauthenticated(
        "replayed envelope: sign each FetchDesiredState request with a fresh nonce",
    );
    if let Ok(v) = proto::RejectReason::Replay.as_str_name().parse() {
        s.metadata_mut().insert(REJECT_REASON_KEY, v);
    }
    s
}

/// Serves `FetchDesiredState` from the control store.
///
/// A `tower_service::Service<Verified>`: `sentra-transport` verifies the envelope (method
/// `FetchDesiredState`) and calls this service with the [`Verified`] envelope. The payload is
/// decoded as a `DesiredStateQuery` (whose agent id must match the authenticated one); the
/// answer is `unchanged = true` with no interfaces when the agent's `known_revision` is the
/// current revision, and otherwise every declared interface with its peers. An interface
/// that is not listed is not managed: the agent leaves its peers alone.
///
/// Each envelope is served once: a replay inside the skew window is refused with a
/// `tonic::Status` `UNAUTHENTICATED` (reason `REJECT_REASON_REPLAY`), like
/// `POST /api/v1/agent/key` refuses replays.
///
/// Errors are boxed: the `sentra_core::Error` of an undecodable payload or a query for
/// another agent (gRPC `INVALID_ARGUMENT`), the replay status above, and
/// [`Error::NotFound`](crate::Error::NotFound) for an agent that was deleted or revoked after verification.
#[derive(Clone, Debug)]
pub struct DesiredStateService {
    store: ControlStore,
}

impl DesiredStateService {
    /// A service over `store`.
    #[must_use]
    pub fn new(store: ControlStore) -> Self {
        Self { store }
    }
}

impl tower_service::Service<Verified> for DesiredStateService {
    type Response = proto::DesiredState;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<proto::DesiredState, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, verified: Verified) -> Self::Future {
        let store = self.store.clone();
        Box::pin(async move {
            // A `sentra_core::Error` keeps its meaning over gRPC: INVALID_ARGUMENT, not
            // retried (a `crate::Error` would be read as a backend failure, UNAVAILABLE).
            let query = verified.decode_desired_state_query().map_err(|e| {
                tracing::info!(agent_id = %verified.agent_id(), error = %e, "FetchDesiredState: undecodable query");
                BoxError::from(e)
            })?;
            if !store
                .replay_guard()
                .first_use(verified.fingerprint(), UnixMillis::now())
            {
                tracing::info!(agent_id = %verified.agent_id(), "FetchDesiredState refused: replayed envelope");
                return Err(replay_status().into());
            }
            let state = store
                .desired_state(verified.agent_id(), query.known_revision)
                .await?;
            Ok(state)
        })
    }
}
