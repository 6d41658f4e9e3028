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
    openapi::ErrorBody,
};
use crate::Error;

/// The ledger of one agent as JSON (`sentra_ingest::AgentLedger`): `high_water` (null
/// before the first batch), `accepted`, `gaps`, `missing`, `rejected_stale`,
/// `rejected_ahead`. 404 if the metrics store has never heard of the agent; 503 without a
/// metrics store.
#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/ingest",
    tag = "agents",
    security(("bearer" = [])),
    description = "The agent's durable ingest ledger: high_water (null before the first batch), batches accepted, accepted sequence gaps and the seqs they skipped (missing), batches refused as stale or too far ahead.",
    params(
        ("id" = String, Path, description = "Agent id", pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64),
    ),
    responses(
        (status = 200, description = "The ledger", body = sentra_ingest::AgentLedger),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such ingest ledger (the metrics store never received from this agent)", body = ErrorBody),
        (status = 503, description = "No metrics store is attached, or it failed; retry", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn agent_ingest(
    State(st): State<AppState>,
    _user: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = agent_id(&id)?;
    let ingest = st.ingest.as_ref().ok_or(Error::Unavailable(
        "no metrics store is attached to this API",
    ))?;
    let ledger: sentra_ingest::AgentLedger = ingest
        .agent_ledger(&id)
        .await
        .map_err(map_ingest)?
        .ok_or_else(|| Error::not_found("agent ingest ledger", id.as_str()))?;
    Ok(Json(ledger).into_response())
}
