//! The OpenAPI 3.1 document, maintained by hand next to the router. A test checks that it
//! lists exactly the routes the router registers.

use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Public,
    Viewer,
    Admin,
    /// A bootstrap token in the body.
    Bootstrap,
    /// A protobuf `SignedBatch` signed with the agent's key.
    AgentSigned,
}

pub(crate) struct Op {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) access: Access,
    /// Example request body (JSON), if any.
    pub(crate) body: Option<&'static str>,
    pub(crate) ok: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
    ok: u16,
) -> Op {
    Op {
        method,
        path,
        summary,
        access,
        body,
        ok,
    }
}

use Access::{Admin, AgentSigned, Bootstrap, Public, Viewer};

pub(crate) const OPS: &[Op] = &[
    op(
        "GET",
        "/healthz",
        "Liveness: the process serves HTTP.",
        Public,
        None,
        200,
    ),
    op(
        "GET",
        "/readyz",
        "Readiness: the control database answers, storage commits, every server task runs. 503 {\"status\":\"unavailable\",\"reasons\":[{\"component\",\"message\"}]} otherwise.",
        Public,
        None,
        200,
    ),
    op(
        "GET",
        "/metrics",
        "Prometheus exposition: the API's own metrics and the fleet's WireGuard metrics (prometheus_wireguard_exporter names).",
        Public,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/openapi.json",
        "This document.",
        Public,
        None,
        200,
    ),
    op(
        "POST",
        "/api/v1/auth/login",
        "Exchange user name and password for a Bearer access token (15 min). Failed attempts are limited per account and per client address (429).",
        Public,
        Some(r#"{"username":"alice","password":"…"}"#),
        200,
    ),
    op(
        "GET",
        "/api/v1/auth/me",
        "The authenticated user and role.",
        Viewer,
        None,
        200,
    ),
    op(
        "POST",
        "/api/v1/auth/logout",
        "End every access token of the caller (all sessions).",
        Viewer,
        None,
        204,
    ),
    op(
        "POST",
        "/api/v1/auth/password",
        "Change the caller's own password; every token of the caller ends (log in again).",
        Viewer,
        Some(r#"{"current_password":"…","new_password":"…"}"#),
        204,
    ),
    op("GET", "/api/v1/users", "List users.", Admin, None, 200),
    op(
        "POST",
        "/api/v1/users",
        "Create a user (password 8–128 characters).",
        Admin,
        Some(r#"{"username":"bob","password":"…","role":"viewer"}"#),
        201,
    ),
    op(
        "DELETE",
        "/api/v1/users/{username}",
        "Delete a user (not the last admin); its tokens stop at once.",
        Admin,
        None,
        204,
    ),
    op(
        "PATCH",
        "/api/v1/users/{username}",
        "Change a user's role (applies at once), disable or enable it, or set its password; disabling and a new password end its tokens. Not for the last enabled admin's role or state.",
        Admin,
        Some(r#"{"role":"viewer","disabled":true,"password":"…"}"#),
        200,
    ),
    op(
        "GET",
        "/api/v1/tokens",
        "List bootstrap tokens (never the tokens themselves).",
        Admin,
        None,
        200,
    ),
    op(
        "POST",
        "/api/v1/tokens",
        "Issue a single-use, expiring bootstrap token; shown once.",
        Admin,
        Some(r#"{"ttl_s":3600,"note":"rack 4"}"#),
        201,
    ),
    op(
        "POST",
        "/api/v1/agents/enroll",
        "Enrol an agent with a bootstrap token; returns agent_id, key_id and the base64 secret once.",
        Bootstrap,
        Some(r#"{"token":"sntb_…","name":"edge-01"}"#),
        201,
    ),
    op(
        "GET",
        "/api/v1/agents",
        "List agents and their key metadata.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/agents/{id}",
        "One agent.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/agents/{id}/ingest",
        "The agent's durable ingest ledger: high_water (null before the first batch), batches accepted, accepted sequence gaps and the seqs they skipped (missing), batches refused as stale or too far ahead. 404 if the metrics store has never received from the agent.",
        Viewer,
        None,
        200,
    ),
    op(
        "DELETE",
        "/api/v1/agents/{id}",
        "Delete an agent, its keys, its desired peers and its stored data.",
        Admin,
        None,
        204,
    ),
    op(
        "POST",
        "/api/v1/agents/{id}/revoke",
        "Revoke an agent: its keys stop verifying at once.",
        Admin,
        None,
        200,
    ),
    op(
        "POST",
        "/api/v1/agents/{id}/rotate-key",
        "Create key N+1; older keys stay valid for the overlap (query overlap_s, default 24 h). With reset_sequence=true, also forget the agent's sequence high-water mark in the metrics store (for an agent whose batches are refused as SEQ_BELOW_HIGH_WATER after a far-ahead seq was signed with its key); 409 if the server has no metrics store.",
        Admin,
        None,
        200,
    ),
    op(
        "POST",
        "/api/v1/agent/key",
        "An agent collects its newest key. Body: protobuf SignedBatch (Content-Type application/x-protobuf) signed for method \"POST /api/v1/agent/key\" with a key it holds; payload: DesiredStateQuery with its agent_id.",
        AgentSigned,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/agents/{id}/desired",
        "Declared peers of every interface of an agent, with the revision.",
        Viewer,
        None,
        200,
    ),
    op(
        "PUT",
        "/api/v1/agents/{id}/desired/{interface}",
        "Declare the peers of one interface (replaces the list). Keys are 32-byte base64; prefixes are normalised; an allowed IP claimed by two peers is a 409.",
        Admin,
        Some(
            r#"{"peers":[{"public_key":"…=","endpoint":"192.0.2.1:51820","allowed_ips":["10.0.0.2/32"],"persistent_keepalive_s":25}]}"#,
        ),
        200,
    ),
    op(
        "DELETE",
        "/api/v1/agents/{id}/desired/{interface}",
        "Stop managing an interface.",
        Admin,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/audit",
        "The audit log, newest first (query before_id, since_ms, limit ≤ 1000).",
        Admin,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/status",
        "Status of every agent, interface and peer (handshake age, rx/tx rates, endpoint, online), from the in-memory status cache.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/status/agents/{id}",
        "Status of one agent.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/status/stream",
        "Live status, Server-Sent Events: `snapshot` first, then `agent` after every stored batch; `lagged` then `snapshot` after a lag.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/presence",
        "Presence of every enrolled agent: online, stale, offline or never.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/names",
        "Metric names (query agent).",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/series",
        "Series matching a selector (query name, agent, label=k=v or label=k!=v, repeatable).",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/latest",
        "Newest value of each matching series (selector as for series).",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/history",
        "Values per step over a range (selector, from, to in Unix ms, step_ms, agg avg|min|max|sum|count|last, resolution auto|raw|minute|hour); served from rollups where they suffice.",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/aggregate",
        "One aggregate per series over a range (selector, from, to, agg).",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/top",
        "Top-N series by an aggregate (selector, from, to, agg, n, order asc|desc).",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/percentiles",
        "Percentiles of raw samples per series (selector, from, to, q repeatable, default 0.5, 0.9, 0.99).",
        Viewer,
        None,
        200,
    ),
    op(
        "GET",
        "/api/v1/metrics/export",
        "Raw samples as CSV or JSON (selector, from, to, format csv|json).",
        Viewer,
        None,
        200,
    ),
];

fn error_response(desc: &str) -> Value {
    json!({
        "description": desc,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// The document served at `GET /api/v1/openapi.json`.
pub(crate) fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for o in OPS {
        let mut responses = Map::new();
        responses.insert(o.ok.to_string(), json!({ "description": "success" }));
        responses.insert(
            "400".into(),
            error_response("malformed request; nothing changed"),
        );
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(o.summary));
        operation.insert(
            "operationId".into(),
            json!(format!("{} {}", o.method, o.path)),
        );
        match o.access {
            Viewer | Admin => {
                operation.insert("security".into(), json!([{ "bearer": [] }]));
                responses.insert("401".into(), error_response("missing or invalid token"));
                if o.access == Admin {
                    responses.insert("403".into(), error_response("admin role required"));
                }
            }
            Bootstrap | AgentSigned => {
                operation.insert("security".into(), json!([]));
                responses.insert("401".into(), error_response("credential rejected"));
            }
            Public => {
                operation.insert("security".into(), json!([]));
            }
        }
        if o.path.contains('{') {
            let params: Vec<Value> = o
                .path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
                .collect();
            operation.insert("parameters".into(), Value::Array(params));
        }
        if let Some(example) = o.body {
            let example: Value = serde_json::from_str(example).unwrap_or(Value::Null);
            operation.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "example": example } } }),
            );
        } else if o.access == AgentSigned {
            operation.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/x-protobuf": { "schema": { "type": "string", "format": "binary" } } } }),
            );
        }
        operation.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(o.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(o.method.to_ascii_lowercase(), Value::Object(operation));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sentra API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control plane and status API of a Sentra WireGuard fleet server."
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
                    } }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn document_lists_exactly_the_router_routes() {
        let routed: BTreeSet<_> = crate::http::registered_routes().into_iter().collect();
        let documented: BTreeSet<_> = OPS.iter().map(|o| (o.method, o.path)).collect();
        assert_eq!(
            routed.len(),
            crate::http::registered_routes().len(),
            "route registered twice"
        );
        assert_eq!(documented.len(), OPS.len(), "operation documented twice");
        let missing: Vec<_> = routed.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty(),
            "routes without documentation: {missing:?}"
        );
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
        let doc = document();
        for o in OPS {
            assert!(
                doc["paths"][o.path][o.method.to_ascii_lowercase()].is_object(),
                "{} {}",
                o.method,
                o.path
            );
            if let Some(b) = o.body {
                assert!(
                    serde_json::from_str::<Value>(b).is_ok(),
                    "example of {}",
                    o.path
                );
            }
        }
    }
}
