//! `GET /api/v1/agents/{id}/ingest`: an agent's durable ingest ledger (batches accepted,
//! accepted sequence gaps, refused seqs), so "acknowledged == stored" can be checked
//! through the API on any storage backend.

use axum::{
    Json,
    extract::{Path, State},
    response::{IntoResponse, Response},
};

use super::{
    ApiError, AppState,
    extract::{Viewer, agent_id},
    fleet::map_ingest,
};
use crate::Error;

/// The ledger of one agent as JSON (`sentra_ingest::AgentLedger`): `high_water` (null
/// before the first batch), `accepted`, `gaps`, `missing`, `rejected_stale`,
/// `rejected_ahead`. 404 if the metrics store has never heard of the agent; 503 without a
/// metrics store.
pub(crate) async fn agent_ingest(
    State(st): State<AppState>,
    _user: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = agent_id(&id)?;
    let ingest = st.ingest.as_ref().ok_or(Error::Unavailable(
        "no metrics store is attached to this API",
    ))?;
    let ledger = ingest
        .agent_ledger(&id)
        .await
        .map_err(map_ingest)?
        .ok_or_else(|| Error::not_found("agent ingest ledger", id.as_str()))?;
    Ok(Json(ledger).into_response())
}
