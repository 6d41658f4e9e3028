//! Peer onboarding over REST: address pools per interface, adding a client peer (its
//! wg-quick configuration and QR code returned once), listing, showing and removing
//! peers, and the configuration of an existing peer without its private key.
//!
//! Reads need a viewer token, changes the admin role (Sentra has no separate operator
//! role). Every change goes through `sentra-control`, which audits it with the user and
//! what changed and bumps the agent's desired-state revision (pools are not desired state
//! and do not bump it). Private keys generated here are in the response only: they are
//! never stored, logged or audited. A preshared key is a secret shared with the server
//! interface, so the control plane stores it (like the agents' HMAC keys) and sends it to
//! the agent with the desired peers; it is never logged, audited or shown again after
//! the `POST` that generated it.

use std::net::{IpAddr, Ipv6Addr};

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use sentra_control::{
    NewPeer,
    onboard::{self, AddressPool, ClientConfig, Tunnel},
};
use sentra_core::{AgentId, IpPrefix, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, AppState,
    extract::{Admin, JsonBody, QueryParams, Viewer, agent_id},
    openapi::ErrorBody,
};
use crate::{Error, PeerSpec, SecretString};

type Res<T> = Result<T, ApiError>;

/// At most this many prefixes in a pool, DNS servers, or split-tunnel prefixes.
const MAX_LIST: usize = 16;
/// Longest accepted endpoint (`host:port`): a 253-character name and a port.
const MAX_ENDPOINT: usize = 253 + 6;
/// Pixels per QR module in the PNG.
const QR_PNG_SCALE: u32 = 6;

// ------------------------------------------------------------------ schemas

/// `PUT /api/v1/agents/{id}/interfaces/{interface}/pool` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"prefixes": ["10.8.0.0/24", "fd00:8::/64"]}))]
pub(crate) struct PoolBody {
    /// 1 to 16 prefixes (IPv4 and/or IPv6; host bits are cleared); they must not overlap
    /// each other or another interface's pool. The first address of each (`10.8.0.1`) is
    /// the interface's own and never handed out.
    #[schema(schema_with = pool_prefixes_schema)]
    prefixes: Vec<String>,
}

fn string_array(pattern: String, min: usize, description: &str) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern)),
        )
        .min_items(Some(min))
        .max_items(Some(MAX_LIST))
        .description(Some(description))
        .build()
}

fn pool_prefixes_schema() -> utoipa::openapi::schema::Array {
    string_array(
        r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$".to_owned(),
        1,
        "1 to 16 prefixes, IPv4 or IPv6 (host bits are cleared).",
    )
}

fn split_schema() -> utoipa::openapi::schema::Array {
    string_array(
        r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$".to_owned(),
        0,
        "Split tunnel: the prefixes the client routes through the tunnel (host bits are cleared); an empty list means the interface's pool. Absent: full tunnel (0.0.0.0/0, ::/0).",
    )
}

fn dns_schema() -> utoipa::openapi::schema::Array {
    string_array(
        r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:)))$".to_owned(),
        0,
        "DNS servers for the client, IP addresses (IPv6 too), at most 16.",
    )
}

/// An address pool.
#[derive(Serialize, ToSchema)]
pub(crate) struct PoolInfo {
    agent_id: String,
    interface: String,
    /// The pool's prefixes.
    prefixes: Vec<String>,
}

impl PoolInfo {
    /// The answer of both pool endpoints.
    fn new(agent: &impl ToString, interface: String, pool: &AddressPool) -> Self {
        Self {
            agent_id: agent.to_string(),
            interface,
            prefixes: pool.prefixes().iter().map(ToString::to_string).collect(),
        }
    }
}

/// `POST /api/v1/agents/{id}/interfaces/{interface}/peers` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"endpoint": "vpn.example.com:51820", "dns": ["10.8.0.1"], "split_tunnel": [], "preshared_key": true, "persistent_keepalive_s": 25}))]
pub(crate) struct AddPeer {
    /// The client's own public key (32 bytes, standard base64). Absent: the server
    /// generates a key pair and returns the private key in the configuration, once.
    #[serde(default, deserialize_with = "crate::util::present")]
    #[schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$", nullable = false)]
    public_key: Option<String>,
    /// A static client address (one host: `10.8.0.9` or `10.8.0.9/32`, IPv6 likewise)
    /// instead of the pool's next free one. It must not lie in another peer's allowed IPs
    /// (409 naming that peer).
    #[serde(default, deserialize_with = "crate::util::present")]
    #[schema(
        pattern = r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/32)?|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))(/128)?)$",
        nullable = false
    )]
    address: Option<String>,
    /// Generate a preshared key for this client: returned once in the configuration,
    /// and stored by the control plane, which sends it to the agent so the server
    /// interface gets it too (never logged, audited or shown again).
    #[serde(default)]
    preshared_key: bool,
    /// The server as the client reaches it: `host:port`, `ip:port` or `[ipv6]:port`.
    #[schema(
        pattern = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\]):(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$",
        max_length = 259
    )]
    endpoint: String,
    /// The server interface's public key. Absent: the key the agent last reported for
    /// the interface (409 if it has not reported one).
    #[serde(default, deserialize_with = "crate::util::present")]
    #[schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$", nullable = false)]
    server_public_key: Option<String>,
    /// DNS servers for the client (IP addresses, at most 16).
    #[serde(default)]
    #[schema(schema_with = dns_schema)]
    dns: Vec<String>,
    /// Split tunnel: the prefixes routed through the tunnel (`[]`: the interface's pool).
    /// Absent: full tunnel.
    #[serde(default, deserialize_with = "crate::util::present")]
    #[schema(schema_with = split_schema)]
    split_tunnel: Option<Vec<String>>,
    /// The client's persistent keepalive in seconds (0 or absent: off).
    #[serde(default, deserialize_with = "crate::util::integral")]
    #[schema(minimum = 0, maximum = 65535)]
    persistent_keepalive_s: u16,
}

/// The client side of a peer, as the response carries it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClientFiles {
    /// The wg-quick file. After `POST` it holds the generated private key (and preshared
    /// key); from `GET .../config` it never does. Zeroed on drop like the other two.
    #[schema(value_type = String)]
    config: SecretString,
    /// The same file as a QR code for a terminal (Unicode half blocks).
    #[schema(value_type = String)]
    qr_terminal: SecretString,
    /// The same file as a QR code, PNG, standard base64.
    #[schema(value_type = String)]
    qr_png_base64: SecretString,
    /// Whether `config` holds the client's private key (`false`: the line reads
    /// `PrivateKey = <client private key>` and the client fills it in).
    contains_private_key: bool,
    /// Whether `config` holds a preshared key.
    contains_preshared_key: bool,
}

/// `POST /api/v1/agents/{id}/interfaces/{interface}/peers` (201).
#[derive(Serialize, ToSchema)]
pub(crate) struct AddedPeer {
    agent_id: String,
    interface: String,
    /// The agent's desired-state revision after the change.
    revision: u64,
    /// The declared peer (its allowed IPs are its addresses).
    peer: PeerView,
    /// The client's addresses.
    addresses: Vec<String>,
    /// Shown this once: the private key is not stored; the preshared key is stored for
    /// the server interface but never shown again.
    client: ClientFiles,
}

/// A declared peer as the peer endpoints show it.
#[derive(Serialize, ToSchema)]
pub(crate) struct PeerView {
    /// Curve25519 public key, standard base64.
    public_key: String,
    /// The peer's endpoint as the server interface uses it (empty: the client roams).
    endpoint: String,
    /// Allowed IPs, normalised prefixes: the client's addresses.
    #[schema(schema_with = allowed_ips_schema)]
    allowed_ips: Vec<String>,
    /// Persistent keepalive the server side uses, seconds (0: off).
    persistent_keepalive_s: u16,
}

impl From<PeerSpec> for PeerView {
    fn from(p: PeerSpec) -> Self {
        Self {
            public_key: p.public_key,
            endpoint: p.endpoint,
            allowed_ips: p.allowed_ips,
            persistent_keepalive_s: p.persistent_keepalive_s,
        }
    }
}

fn allowed_ips_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(ALLOWED_IP)),
        )
        .build()
}

/// An IPv4 or IPv6 prefix (IPv6 with an embedded IPv4 part is not covered).
const ALLOWED_IP: &str = r"^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$";

/// `GET /api/v1/agents/{id}/interfaces/{interface}/peers`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PeerList {
    agent_id: String,
    interface: String,
    /// The agent's desired-state revision.
    revision: u64,
    /// The interface's pool prefixes (empty: no pool set).
    pool: Vec<String>,
    /// Declared peers.
    peers: Vec<PeerView>,
}

/// `GET /api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PeerInfo {
    agent_id: String,
    interface: String,
    revision: u64,
    peer: PeerView,
    /// The peer as the agent last reported it (handshake, rx/tx, endpoint; the shape of
    /// `GET /api/v1/status/agents/{id}`'s peers); null when the agent has not reported it.
    status: Option<sentra_ingest::status::PeerStatus>,
}

/// `DELETE /api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct RemovedPeer {
    agent_id: String,
    interface: String,
    public_key: String,
    /// The agent's desired-state revision after the change.
    revision: u64,
}

/// `GET /api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}/config`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PeerConfig {
    agent_id: String,
    interface: String,
    public_key: String,
    /// Without private key (a placeholder line) and without preshared key.
    client: ClientFiles,
}

/// Query of `GET .../peers/{public_key}/config`: the same options as when adding, lists
/// comma-separated.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConfigParams {
    /// The server as the client reaches it: `host:port`, `ip:port` or `[ipv6]:port`.
    #[param(
        pattern = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\]):(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$",
        max_length = 259
    )]
    endpoint: String,
    /// The server interface's public key (default: as the agent reported it).
    #[param(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    server_public_key: Option<String>,
    /// DNS servers, comma-separated IP addresses.
    #[param(
        pattern = r"^((((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:)))(,(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:)))){0,15})?$"
    )]
    dns: Option<String>,
    /// Split tunnel: comma-separated prefixes (host bits are cleared); empty: the
    /// interface's pool. Absent: full tunnel.
    #[param(
        pattern = r"^((((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))(,(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))){0,15})?$"
    )]
    split_tunnel: Option<String>,
    /// Persistent keepalive in seconds (0: off).
    #[param(minimum = 0, maximum = 65535)]
    persistent_keepalive_s: Option<u16>,
}

/// `{id}` and `{interface}` of the per-interface routes.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct InterfacePath {
    /// Agent id.
    #[param(pattern = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$", max_length = 64)]
    id: String,
    /// Interface name: 1-15 printable ASCII characters without / or :, not . or ..
    #[param(
        pattern = r"^([!-\x2d0-9;-~]|[!-.0-9;-~][!-\x2d0-9;-~]|[!-\x2d0-9;-~]\.|[!-.0-9;-~]{3,15})$",
        max_length = 15
    )]
    interface: String,
}

impl InterfacePath {
    /// The agent id and interface name, checked (400 naming the bad one).
    fn parse(self) -> Res<(AgentId, String)> {
        Ok((agent_id(&self.id)?, interface(&self.interface)?))
    }
}

/// `{public_key}` of the per-peer routes (their `{id}` and `{interface}` are an
/// [`InterfacePath`], extracted from the same path).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct PeerKeyPath {
    /// The peer's public key: standard base64 (percent-encoded) or the URL-safe alphabet,
    /// padding optional.
    #[param(pattern = r"^[A-Za-z0-9+/_-]{42}[AEIMQUYcgkosw048]=?$")]
    public_key: String,
}

impl PeerKeyPath {
    /// The key in its standard form, checked.
    fn parse(self) -> Res<String> {
        path_key(&self.public_key)
    }
}

// ------------------------------------------------------------------ validation

fn interface(raw: &str) -> Res<String> {
    sentra_control::check_interface(raw)?;
    Ok(raw.to_owned())
}

/// A public key from a path segment: standard base64 (percent-encoded) or the URL-safe
/// alphabet, padding optional. Returns the standard form.
fn path_key(raw: &str) -> Res<String> {
    let std: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let padded = if std.len() == 43 { std + "=" } else { std };
    base64_key("public_key", &padded)?;
    Ok(padded)
}

/// Checks a 32-byte standard-base64 key (the value is never part of the error).
fn base64_key(field: &str, raw: &str) -> Res<()> {
    let ok = raw.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(raw)
            .is_ok_and(|b| b.len() == 32);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be 32 bytes, standard base64 (44 characters)").into())
    }
}

/// `host:port`, `ip:port` or `[ipv6]:port`, ASCII, port 1-65535.
fn endpoint(raw: &str) -> Res<String> {
    let bad = |why: &str| -> ApiError { Error::invalid("endpoint", why.to_owned()).into() };
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_ENDPOINT || !raw.is_ascii() {
        return Err(bad("must be host:port in ASCII, at most 259 characters"));
    }
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| bad("must be host:port"))?;
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    if !port_ok {
        return Err(bad("the port must be 1 to 65535"));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(bad(
            "the host must be a DNS name, an IPv4 address or [an IPv6 address]",
        ));
    }
    Ok(raw.to_owned())
}

fn dns_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Res<Vec<IpAddr>> {
    let mut out = Vec::new();
    for (i, raw) in items.into_iter().enumerate() {
        if i >= MAX_LIST {
            return Err(Error::invalid("dns", "at most 16 servers").into());
        }
        out.push(
            raw.trim()
                .parse::<IpAddr>()
                .map_err(|_| Error::invalid(format!("dns[{i}]"), "not an IP address"))?,
        );
    }
    Ok(out)
}

fn prefix_list<'a>(field: &str, items: impl IntoIterator<Item = &'a str>) -> Res<Vec<String>> {
    let mut out = Vec::new();
    for (i, raw) in items.into_iter().enumerate() {
        if i >= MAX_LIST {
            return Err(Error::invalid(field, "at most 16 prefixes").into());
        }
        let p = masked_prefix(raw)
            .ok_or_else(|| Error::invalid(format!("{field}[{i}]"), "not an IP prefix"))?;
        out.push(p.to_string());
    }
    Ok(out)
}

/// `addr/len` (or a bare address: a host route) with the host bits cleared, as the desired
/// peers' allowed IPs are normalised (`10.8.0.1/24` is `10.8.0.0/24`).
fn masked_prefix(raw: &str) -> Option<IpPrefix> {
    let raw = raw.trim();
    let (addr, len) = match raw.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l)),
        None => (raw.parse::<IpAddr>().ok()?, None),
    };
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().ok().filter(|l| *l <= width)?
        }
        Some(_) => return None,
        None => width,
    };
    let masked = match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    };
    IpPrefix::new(masked, len).ok()
}

/// The client options, checked, before anything is changed.
struct Client {
    endpoint: String,
    server_public_key: Option<String>,
    dns: Vec<IpAddr>,
    split: Option<Vec<String>>,
    keepalive: u16,
}

impl Client {
    fn from_body(o: &AddPeer) -> Res<Self> {
        Self::check(
            &o.endpoint,
            o.server_public_key.as_deref(),
            o.dns.iter().map(String::as_str),
            o.split_tunnel
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect()),
            o.persistent_keepalive_s,
        )
    }

    fn from_query(p: &ConfigParams) -> Res<Self> {
        fn split(s: &str) -> Vec<&str> {
            s.split(',').filter(|x| !x.is_empty()).collect()
        }
        Self::check(
            &p.endpoint,
            p.server_public_key.as_deref(),
            p.dns.as_deref().map(split).unwrap_or_default(),
            p.split_tunnel.as_deref().map(split),
            p.persistent_keepalive_s.unwrap_or(0),
        )
    }

    fn check<'a>(
        raw_endpoint: &str,
        server_public_key: Option<&str>,
        dns: impl IntoIterator<Item = &'a str>,
        split: Option<Vec<&'a str>>,
        keepalive: u16,
    ) -> Res<Self> {
        let endpoint = endpoint(raw_endpoint)?;
        if let Some(k) = server_public_key {
            base64_key("server_public_key", k.trim())?;
        }
        let dns = dns_list(dns)?;
        let split = split
            .map(|list| prefix_list("split_tunnel", list))
            .transpose()?;
        Ok(Self {
            endpoint,
            server_public_key: server_public_key.map(|k| k.trim().to_owned()),
            dns,
            split,
            keepalive,
        })
    }

    /// The server interface's public key: the one given, else the one the agent last
    /// reported for the interface.
    fn server_key(&self, st: &AppState, agent: &AgentId, interface: &str) -> Res<String> {
        if let Some(k) = &self.server_public_key {
            return Ok(k.clone());
        }
        st.ingest
            .as_ref()
            .and_then(|i| i.status().agent_at(agent, UnixMillis::now()))
            .and_then(|a| {
                a.interfaces
                    .into_iter()
                    .find(|i| i.name == interface)
                    .and_then(|i| i.public_key)
            })
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "the server public key of {agent}/{interface} is unknown (the agent has not \
                     reported that interface): pass server_public_key"
                ))
                .into()
            })
    }

    /// The full tunnel, or the split-tunnel prefixes (the pool's for an empty list).
    fn tunnel(&self, pool: Option<&AddressPool>) -> Res<Tunnel> {
        Ok(match (&self.split, pool) {
            (None, _) => Tunnel::Full,
            (Some(list), _) if !list.is_empty() => Tunnel::Split(list.clone()),
            (Some(_), Some(pool)) => {
                Tunnel::Split(pool.prefixes().iter().map(ToString::to_string).collect())
            }
            (Some(_), None) => {
                return Err(Error::Conflict(
                    "split_tunnel is empty and the interface has no pool: give the prefixes to route"
                        .into(),
                )
                .into());
            }
        })
    }

    /// The wg-quick file and its QR codes.
    fn files(&self, config: ClientConfig) -> Res<ClientFiles> {
        let contains_private_key = config.private_key.is_some();
        let contains_preshared_key = config.preshared_key.is_some();
        let text = config.render();
        let qr_terminal = onboard::qr_terminal(&text)?;
        let png = onboard::qr_png(&text, QR_PNG_SCALE)?;
        Ok(ClientFiles {
            config: text,
            qr_terminal,
            qr_png_base64: SecretString::new(
                base64::engine::general_purpose::STANDARD.encode(&*png),
            ),
            contains_private_key,
            contains_preshared_key,
        })
    }

    fn config(
        &self,
        private_key: Option<SecretString>,
        preshared_key: Option<SecretString>,
        addresses: Vec<IpPrefix>,
        server_key: String,
        tunnel: Tunnel,
    ) -> ClientConfig {
        let mut cfg = ClientConfig::new(private_key, addresses, server_key, &self.endpoint);
        cfg.dns.clone_from(&self.dns);
        cfg.preshared_key = preshared_key;
        cfg.tunnel = tunnel;
        cfg.persistent_keepalive_s = self.keepalive;
        cfg
    }
}

/// A response whose body is secret: not cached anywhere.
fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The declared peers of one interface and the agent's revision (404 for an unknown agent).
async fn declared(st: &AppState, agent: &AgentId, interface: &str) -> Res<(u64, Vec<PeerSpec>)> {
    let info = st.store.desired(agent).await?;
    let peers = info
        .interfaces
        .into_iter()
        .find(|i| i.name == interface)
        .map(|i| i.peers)
        .unwrap_or_default();
    Ok((info.revision, peers))
}

fn find_peer(agent: &AgentId, interface: &str, peers: Vec<PeerSpec>, key: &str) -> Res<PeerSpec> {
    peers
        .into_iter()
        .find(|p| p.public_key == key)
        .ok_or_else(|| Error::not_found("peer", format!("{agent}/{interface}/{key}")).into())
}

// ------------------------------------------------------------------ handlers

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/interfaces/{interface}/pool",
    tag = "peers",
    security(("bearer" = [])),
    description = "The address pool of one interface: client addresses are taken from it.",
    params(
        InterfacePath,
    ),
    responses(
        (status = 200, description = "The pool", body = PoolInfo),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such agent, or no pool set for the interface", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn get_pool(
    State(st): State<AppState>,
    _user: Viewer,
    Path(path): Path<InterfacePath>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    st.store.require_agent(&id).await?;
    let pool = st
        .store
        .address_pool(&id, &iface)
        .await?
        .ok_or_else(|| Error::not_found("address pool", format!("{id}/{iface}")))?;
    Ok(Json(PoolInfo::new(&id, iface, &pool)).into_response())
}

#[utoipa::path(
    put,
    path = "/api/v1/agents/{id}/interfaces/{interface}/pool",
    tag = "peers",
    security(("bearer" = [])),
    description = "Set the address pool of one interface (replaces it). Pools of different interfaces must not overlap (409 naming the other interface). Audited as pool.set.",
    params(
        InterfacePath,
    ),
    request_body = PoolBody,
    responses(
        (status = 200, description = "The pool as stored", body = PoolInfo),
        (status = 400, description = "Malformed request or a value outside the rules (host bits set, not a prefix); nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "Overlapping prefixes (naming the other interface) or a revoked agent; nothing changed", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
pub(crate) async fn put_pool(
    State(st): State<AppState>,
    admin: Admin,
    Path(path): Path<InterfacePath>,
    JsonBody(req): JsonBody<PoolBody>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    // Unknown agents first: a 404 says more than a rule about the body.
    st.store.require_agent(&id).await?;
    if req.prefixes.len() > MAX_LIST {
        return Err(Error::invalid("prefixes", "at most 16 prefixes").into());
    }
    // Host bits are cleared as in the desired peers' allowed IPs (10.8.0.1/24 is 10.8.0.0/24).
    let prefixes = prefix_list("prefixes", req.prefixes.iter().map(String::as_str))?;
    let pool = AddressPool::parse(&prefixes)?;
    st.store
        .set_address_pool(&admin.actor(), &id, &iface, &pool)
        .await?;
    Ok(Json(PoolInfo::new(&id, iface, &pool)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/interfaces/{interface}/peers",
    tag = "peers",
    security(("bearer" = [])),
    description = "The declared peers of one interface and its pool.",
    params(
        InterfacePath,
    ),
    responses(
        (status = 200, description = "Peers (an interface with none declared is an empty list)", body = PeerList),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn list_peers(
    State(st): State<AppState>,
    _user: Viewer,
    Path(path): Path<InterfacePath>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    let (revision, peers) = declared(&st, &id, &iface).await?;
    let pool = st
        .store
        .address_pool(&id, &iface)
        .await?
        .map(|p| p.prefixes().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    Ok(Json(PeerList {
        agent_id: id.to_string(),
        interface: iface,
        revision,
        pool,
        peers: peers.into_iter().map(PeerView::from).collect(),
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/interfaces/{interface}/peers",
    tag = "peers",
    security(("bearer" = [])),
    description = "Onboard a client peer: its address is the pool's next free one (or the static one asked for), its key pair is generated (or the client's public key is used), optionally with a preshared key. The response holds the client's wg-quick file and its QR code ONCE: the private key is never stored, logged or audited; the preshared key is a secret shared with the server interface, so the control plane stores it (like the agents' HMAC keys) and sends it to the agent with the desired peers, and it is never logged, audited or returned by any later response. The interface's desired peers gain the peer, the agent's revision moves; audited as peer.add with the user, public key and addresses.",
    params(
        InterfacePath,
    ),
    request_body = AddPeer,
    responses(
        (status = 201, description = "Onboarded; the client's files (shown once)", body = AddedPeer, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed request or a value outside the rules; nothing changed", body = ErrorBody),
        (status = 404, description = "No such agent, or no pool set for the interface", body = ErrorBody),
        (status = 409, description = "The address lies in another peer's allowed IPs (naming it), the pool is exhausted, the public key is declared already, the server public key is unknown, or the agent is revoked; nothing changed", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
        (status = 413, description = "Request body larger than the limit", body = ErrorBody),
    )
)]
pub(crate) async fn add_peer(
    State(st): State<AppState>,
    admin: Admin,
    Path(path): Path<InterfacePath>,
    JsonBody(req): JsonBody<AddPeer>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    st.store.require_agent(&id).await?;
    // Everything is checked before the store changes.
    let client = Client::from_body(&req)?;
    if let Some(k) = &req.public_key {
        base64_key("public_key", k.trim())?;
    }
    let address = match &req.address {
        Some(a) => Some(
            masked_prefix(a)
                .filter(|p| p.prefix_len() == if p.addr().is_ipv4() { 32 } else { 128 })
                .ok_or_else(|| Error::invalid("address", "not one IP address (or /32, /128)"))?
                .to_string(),
        ),
        None => None,
    };
    let pool = st
        .store
        .address_pool(&id, &iface)
        .await?
        .ok_or_else(|| Error::not_found("address pool", format!("{id}/{iface}")))?;
    let tunnel = client.tunnel(Some(&pool))?;
    let server_key = client.server_key(&st, &id, &iface)?;
    let psk = if req.preshared_key {
        Some(onboard::generate_psk()?)
    } else {
        None
    };
    let mut new = NewPeer::default();
    new.public_key = req.public_key.map(|k| k.trim().to_owned());
    new.address = address;
    new.preshared_key.clone_from(&psk);
    let done = st.store.add_peer(&admin.actor(), &id, &iface, new).await?;
    let addresses: Vec<String> = done.addresses.iter().map(ToString::to_string).collect();
    let files =
        client.files(client.config(done.private_key, psk, done.addresses, server_key, tunnel))?;
    Ok(no_store(
        StatusCode::CREATED,
        AddedPeer {
            agent_id: id.to_string(),
            interface: iface,
            revision: done.revision,
            peer: done.peer.into(),
            addresses,
            client: files,
        },
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}",
    tag = "peers",
    security(("bearer" = [])),
    description = "One declared peer. The key is standard base64 (percent-encoded) or URL-safe base64.",
    params(
        InterfacePath,
        PeerKeyPath,
    ),
    responses(
        (status = 200, description = "The peer", body = PeerInfo),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such agent or peer", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn get_peer(
    State(st): State<AppState>,
    _user: Viewer,
    Path(path): Path<InterfacePath>,
    Path(key): Path<PeerKeyPath>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    let key = key.parse()?;
    let (revision, peers) = declared(&st, &id, &iface).await?;
    let peer = find_peer(&id, &iface, peers, &key)?;
    let status = st
        .ingest
        .as_ref()
        .and_then(|i| i.status().agent_at(&id, UnixMillis::now()))
        .and_then(|a| a.interfaces.into_iter().find(|i| i.name == iface))
        .and_then(|i| i.peers.into_iter().find(|p| p.public_key == key));
    Ok(Json(PeerInfo {
        agent_id: id.to_string(),
        interface: iface,
        revision,
        peer: peer.into(),
        status,
    })
    .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}",
    tag = "peers",
    security(("bearer" = [])),
    description = "Remove one peer: its addresses are free again, the agent's revision moves; audited as peer.remove.",
    params(
        InterfacePath,
        PeerKeyPath,
    ),
    responses(
        (status = 200, description = "Removed", body = RemovedPeer),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such agent or peer", body = ErrorBody),
        (status = 409, description = "The agent is revoked", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 403, description = "The admin role is required", body = ErrorBody),
    )
)]
pub(crate) async fn remove_peer(
    State(st): State<AppState>,
    admin: Admin,
    Path(path): Path<InterfacePath>,
    Path(key): Path<PeerKeyPath>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    let key = key.parse()?;
    let revision = st
        .store
        .remove_peer(&admin.actor(), &id, &iface, &key)
        .await?;
    Ok(Json(RemovedPeer {
        agent_id: id.to_string(),
        interface: iface,
        public_key: key,
        revision,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}/interfaces/{interface}/peers/{public_key}/config",
    tag = "peers",
    security(("bearer" = [])),
    description = "The wg-quick file and QR code of an existing peer, WITHOUT its private key (Sentra never had or kept it: the file reads `PrivateKey = <client private key>`) and without a preshared key. Addresses are the peer's declared allowed IPs.",
    params(
        InterfacePath,
        PeerKeyPath,
        ConfigParams,
    ),
    responses(
        (status = 200, description = "The client's files without secrets", body = PeerConfig),
        (status = 400, description = "Malformed request or a value outside the rules", body = ErrorBody),
        (status = 404, description = "No such agent or peer", body = ErrorBody),
        (status = 409, description = "The server public key is unknown (pass server_public_key)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or ended access token", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "Bearer"))),
    )
)]
pub(crate) async fn peer_config(
    State(st): State<AppState>,
    _user: Viewer,
    Path(path): Path<InterfacePath>,
    Path(key): Path<PeerKeyPath>,
    QueryParams(q): QueryParams<ConfigParams>,
) -> Res<Response> {
    let (id, iface) = path.parse()?;
    let key = key.parse()?;
    let (_, peers) = declared(&st, &id, &iface).await?;
    let peer = find_peer(&id, &iface, peers, &key)?;
    let client = Client::from_query(&q)?;
    let pool = st.store.address_pool(&id, &iface).await?;
    let tunnel = client.tunnel(pool.as_ref())?;
    let server_key = client.server_key(&st, &id, &iface)?;
    let addresses = peer
        .allowed_ips
        .iter()
        .map(|a| a.parse::<IpPrefix>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Internal(format!("stored allowed IP: {e}")))?;
    let files = client.files(client.config(None, None, addresses, server_key, tunnel))?;
    Ok(Json(PeerConfig {
        agent_id: id.to_string(),
        interface: iface,
        public_key: key,
        client: files,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_hosts_and_keys() {
        for good in [
            "vpn.example.com:51820",
            "192.0.2.1:1",
            "[2001:db8::1]:65535",
            "a:9",
        ] {
            assert!(endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "vpn.example.com",
            "vpn.example.com:0",
            "vpn.example.com:65536",
            "vpn.example.com:+1",
            "vpn.example.com:01",
            "vpn.exämple.com:1",
            "-a.com:1",
            "a..b:1",
            "[::zz]:1",
            "a b:1",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        let k = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        assert_eq!(path_key(k).unwrap(), k);
        let url_safe = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg";
        assert_eq!(path_key(url_safe).unwrap(), k);
        assert!(path_key("short").is_err());
        assert!(path_key(&"A".repeat(1000)).is_err());
    }

    #[test]
    fn prefixes_have_their_host_bits_cleared() {
        let m = |s: &str| masked_prefix(s).map(|p| p.to_string());
        assert_eq!(m("10.8.0.1/24").as_deref(), Some("10.8.0.0/24"));
        assert_eq!(m("10.8.0.1").as_deref(), Some("10.8.0.1/32"));
        assert_eq!(m("1.2.3.4/0").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(m("fd00:8::1/64").as_deref(), Some("fd00:8::/64"));
        assert_eq!(m("::1/0").as_deref(), Some("::/0"));
        for bad in [
            "10.8.0.0/33",
            "10.8.0.0/",
            "10.8.0.0/+1",
            "nope/8",
            "::/129",
            "10.0.0.0/0008",
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }
}
