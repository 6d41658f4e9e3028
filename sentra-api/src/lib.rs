#![doc = include_str!("../README.md")]
//!
//! ## Crate overview
//!
//! It is a separate crate from `sentra-ingest` so that a user embedding the ingest pipeline
//! does not pull in an HTTP framework, JWT and password hashing.
//!
//! ## Composing a server
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use sentra_api::{Api, ApiConfig};
//!
//! let ingest = std::sync::Arc::new(
//!     sentra_ingest::Ingest::open("./sentra-data", sentra_ingest::Config::default()).await?,
//! );
//! let api = Api::open_with_ingest("./sentra-data".as_ref(), ApiConfig::default(), Some(ingest.clone())).await?;
//! let keyring = api.keyring();                 // -> sentra-transport's auth layer
//! let desired = api.desired_state_service();   // -> gRPC FetchDesiredState
//! let router = api.router();                   // -> the REST listener
//! # let _ = (keyring, desired);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // ConnectInfo enables the per-client-address login limit.
//! axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! ## What the CLI calls
//!
//! * `sentra init` creates the first admin directly on the data directory (there are no
//!   default credentials):
//!
//!   ```no_run
//!   # #[allow(dead_code)]
//!   # async fn init() -> Result<(), sentra_api::Error> {
//!   use sentra_api::{Actor, ControlStore, Password, Role, StoreOptions};
//!   let store = ControlStore::open("./sentra-data".as_ref(), StoreOptions::default()).await?;
//!   store.create_user(&Actor::local(), "admin", Password::new("a long passphrase"), Role::Admin).await?;
//!   # Ok(()) }
//!   ```
//!
//!   The control plane is the `sentra-control` crate (no HTTP framework); this crate
//!   re-exports its types. A change made this way while a server runs reaches the server's
//!   in-memory keyring through the durable control version within one poll interval
//!   (250 ms by default, [`StoreOptions`]`::reload_interval`).
//! * `sentra login` → `POST /api/v1/auth/login` `{"username","password"}` → `{"access_token",
//!   "token_type":"Bearer","expires_in","role"}`; later calls send
//!   `Authorization: Bearer <access_token>`.
//! * `sentra token issue` → `POST /api/v1/tokens` `{"ttl_s": 3600, "note": "…"}` (admin) →
//!   `201 {"token_id","token","expires_ms"}`; the token is shown once.
//! * `sentra agent list|rotate-key|revoke|delete` → `GET /api/v1/agents`,
//!   `POST /api/v1/agents/{id}/rotate-key[?overlap_s=N][&reset_sequence=true]`,
//!   `POST /api/v1/agents/{id}/revoke`,
//!   `DELETE /api/v1/agents/{id}`.
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` with the HTTP status:
//! 400 malformed (nothing changed), 401 bad or missing credentials, 403 wrong role,
//! 404, 409 conflict, 413 body over the limit, 429 rate limited, 503 overloaded.
//!
//! ## Agent protocol: enrolment
//!
//! 1. An admin issues a bootstrap token (`sentra token issue`) and gives it to the agent's
//!    operator out of band (it is single use and expires, 1 h by default).
//! 2. The agent sends `POST /api/v1/agents/enroll` with `Content-Type: application/json`
//!    and `{"token": "sntb_…", "name": "edge-01"}` over TLS.
//! 3. On `201` the body is `{"agent_id": "edge-01-3f9a2c1b", "key_id": 1,
//!    "secret": "<standard base64 of 32 bytes>", "envelope_version": 1}`. This is the only
//!    time the secret is sent unasked. The agent writes `agent_id`, `key_id` and the secret
//!    to its key file (mode 0600), **fsyncs the file and its directory**, and only then
//!    starts signing with `sentra_core::Signer::new(agent_id, KeyId::new(key_id), &secret)`.
//!    If it crashes before the fsync, it needs a new token: the used token is gone.
//! 4. `401 invalid_bootstrap_token` means unknown, expired or already used; retrying with
//!    the same token cannot succeed.
//!
//! ## Agent protocol: key rotation
//!
//! An admin calls `POST /api/v1/agents/{id}/rotate-key`. The server creates key N+1
//! (valid at once) and caps every older key at `not_after = now + overlap` (24 h by default,
//! [`ApiConfig::key_overlap`]). The server cannot push; the agent polls:
//!
//! 1. At start and then periodically (every 10 minutes is plenty for a 24 h overlap), the
//!    agent builds a `SignedBatch` with its **current** key:
//!    `signer.sign(Method::FetchKey, Seq::FIRST, UnixMillis::now(), Nonce::random(), payload)`
//!    where `payload` is the protobuf encoding of
//!    `DesiredStateQuery { agent_id: <its id>, known_revision: 0 }` (the seq is not checked
//!    for this call; `1` is fine). It sends the encoded envelope as the body of
//!    `POST /api/v1/agent/key` with `Content-Type: application/x-protobuf`.
//! 2. `200` body: `{"agent_id", "key_id": <newest>, "secret": "<base64>",
//!    "signed_with_key_id", "signed_with_not_after_ms": <ms or null>}`. If `key_id` equals
//!    the key it signed with, nothing changed.
//! 3. Otherwise the agent writes the new key (id + secret) to a temporary file, fsyncs it,
//!    renames it over its key file and fsyncs the directory. **Until that fsync has
//!    returned it keeps signing with the old key.** Only then does it switch its signer to
//!    the new key. Batches already signed with the old key that are retried stay valid
//!    until `signed_with_not_after_ms`; after that the agent re-signs them with the new key
//!    (the WAL holds the payloads; signing is cheap).
//! 4. Each envelope is accepted once (its tag is remembered for the skew window); a replay
//!    gets `401`. `401 clock_skew` carries the server time in the message: fix the clock
//!    offset and retry with a fresh envelope. `401 unauthenticated` after
//!    `signed_with_not_after_ms` means the agent missed the overlap window: it must be
//!    re-enrolled with a new bootstrap token.
//!
//! An agent whose batches are refused as `SEQ_BELOW_HIGH_WATER` (a batch with a far-ahead
//! seq was signed with its key, or it lost its own state) is recovered with
//! `rotate-key?reset_sequence=true`: the key is rotated, then the metrics store forgets the
//! agent's high-water mark (`Ingest::reset_sequence`), audited as `agent.reset_sequence`
//! with the previous mark, which the answer also carries (`"sequence_reset":
//! {"previous_high_water": N}`). Without a metrics store the call is refused with 409 and
//! nothing changes. If the old key may be compromised, use a short `overlap_s`.
//!
//! Revocation (`POST /api/v1/agents/{id}/revoke`) deletes every key of the agent and drops
//! it from the keyring before the call returns; its next envelope is rejected.
//!
//! ## Security notes
//!
//! * `control.db` holds every agent's HMAC secret (the server must hold them to verify)
//!   and the password hashes: it is created 0600 in a 0700 directory, like
//!   `jwt-hs256.key`, the access-token signing secret. Back both up as secrets.
//! * Access tokens are HS256 JWTs: the API issues and verifies them itself, so one random
//!   32-byte HMAC key is the simplest sound choice (no key to publish). Only `HS256` is
//!   accepted (an `EdDSA`, `RS256` or `none` header is refused before any signature
//!   check); `exp`, `nbf`, `aud`, `iss` and `sub` are required, leeway is
//!   [`JWT_LEEWAY`] (10 s), lifetime at most [`MAX_ACCESS_TOKEN_TTL`] (15 min), and a
//!   `typ` other than `access` is refused. Every request also checks the token against
//!   the user as it is now (one primary-key lookup): a deleted or disabled user's tokens
//!   stop at once, the current role applies (a demotion takes effect on the next request),
//!   and logout (`POST /api/v1/auth/logout`), a password change (`POST
//!   /api/v1/auth/password`, or an admin's `PATCH /api/v1/users/{username}`) and disabling
//!   bump the user's `token_version`, which ends every token issued before.
//! * Passwords: argon2id with the OWASP parameters (19 MiB, t=2, p=1, the RustCrypto
//!   defaults), hashed in `spawn_blocking` behind a semaphore (2 at a time by default);
//!   an unknown user is verified against a dummy hash so both paths cost the same.
//!   Failed logins are limited per account (10) and per client address (50) per 5 min.
//! * Bootstrap tokens are stored as SHA-256 only; agent secrets and tokens are returned
//!   with `Cache-Control: no-store`.
//! * `Authorization` is marked sensitive before the trace layer; passwords, tokens and
//!   secrets live in types with redacted `Debug` that zero their memory on drop
//!   ([`Password`], [`SecretString`], [`sentra_core::SecretKey`]).
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod http;
mod metrics;
mod ratelimit;
mod readiness;
mod util;

use std::{path::Path, sync::Arc, time::Duration};

pub use http::tls::{ApiTls, TlsListener};
pub use metrics::{scrape_authorized, to_text_format};
pub use readiness::Readiness;
// The control plane lives in `sentra-control`; these re-exports keep the API's paths.
pub use sentra_control::{
    Actor, AgentInfo, AuditEntry, AuditQuery, BOOTSTRAP_TOKEN_PREFIX, BootstrapTokenInfo, BoxError,
    CONTROL_DB_FILE, ControlStore, DbKeyring, DesiredInfo, DesiredInterfaceInfo,
    DesiredStateService, Enrolment, Error, IssuedBootstrapToken, JWT_LEEWAY, KeyInfo,
    MAX_ACCESS_TOKEN_TTL, MAX_ALLOWED_IPS_PER_PEER, MAX_BOOTSTRAP_TOKEN_TTL,
    MAX_PEERS_PER_INTERFACE, NewestKey, Password, PasswordCost, PeerSpec, Result, Role, Rotation,
    SecretString, StoreOptions, User, UserUpdate,
};

/// Configuration of [`Api::open`]. Start from [`ApiConfig::default`] and set fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiConfig {
    /// JWT `iss`, checked on every request.
    pub issuer: String,
    /// JWT `aud`, checked on every request.
    pub audience: String,
    /// Access-token lifetime (capped at [`MAX_ACCESS_TOKEN_TTL`], 15 minutes).
    pub access_token_ttl: Duration,
    /// How long older keys stay valid after a rotation (default 24 h).
    pub key_overlap: Duration,
    /// Bootstrap-token lifetime when the request names none (default 1 h).
    pub default_bootstrap_token_ttl: Duration,
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub body_limit_bytes: usize,
    /// Time limit for producing a response (default 30 s; streams are not cut).
    pub request_timeout: Duration,
    /// Failed logins per account per window before 429 (default 10).
    pub login_failures_per_user: u32,
    /// Failed logins per client address per window before 429 (default 50).
    pub login_failures_per_ip: u32,
    /// The window of both login limits (default 5 min).
    pub login_window: Duration,
    /// Control-store options (password cost).
    pub store: StoreOptions,
    /// When set, `GET /metrics` requires `Authorization: Bearer <token>` (compared in
    /// constant time) and answers 401 otherwise: the page carries peer keys, addresses and
    /// agent names. Default `None`: open, which suits an API bound to loopback.
    pub metrics_token: Option<SecretString>,
    /// Adds the opt-in `wireguard_peer_endpoint_info{agent,interface,public_key,endpoint} 1`
    /// series to `/metrics` (default `false`: endpoints are client addresses).
    pub metrics_peer_endpoints: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            issuer: "sentra".to_owned(),
            audience: "sentra-api".to_owned(),
            access_token_ttl: MAX_ACCESS_TOKEN_TTL,
            key_overlap: Duration::from_secs(24 * 3600),
            default_bootstrap_token_ttl: Duration::from_secs(3600),
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            login_failures_per_user: 10,
            login_failures_per_ip: 50,
            login_window: Duration::from_secs(300),
            store: StoreOptions::default(),
            metrics_token: None,
            metrics_peer_endpoints: false,
        }
    }
}

/// The assembled API: router, keyring, desired-state service and control store.
///
/// See the [crate docs](crate) for how a server composes it.
#[derive(Debug, Clone)]
pub struct Api {
    router: axum::Router,
    store: ControlStore,
    readiness: Readiness,
    metrics: std::sync::Arc<metrics::Metrics>,
    alerts: Arc<std::sync::OnceLock<Arc<sentra_alerts::engine::Engine>>>,
    alerts_standby: Arc<std::sync::atomic::AtomicBool>,
}

impl Api {
    /// Opens the control store (`control.db`) and the JWT key (`jwt-hs256.key`) in
    /// `data_dir`, creating them on first start, and builds the router, without a metrics
    /// store: the status, presence, metric-query and live-stream endpoints answer
    /// `503 unavailable`. See [`Api::open_with_ingest`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Database`] if the data directory cannot be used.
    pub async fn open(data_dir: &Path, config: ApiConfig) -> Result<Self> {
        Self::open_with_ingest(data_dir, config, None).await
    }

    /// As [`Api::open`], with the ingest pipeline whose data the API serves.
    ///
    /// `ingest` serves the status, presence, metric-query and live-stream endpoints, the
    /// fleet part of `/metrics`, and the data deletion of `DELETE /api/v1/agents/{id}`.
    /// The server keeps its own `Arc` and may call `Arc::try_unwrap(..)` and
    /// `Ingest::shutdown` once the router is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Database`] if the data directory cannot be used.
    pub async fn open_with_ingest(
        data_dir: &Path,
        config: ApiConfig,
        ingest: Option<Arc<sentra_ingest::Ingest>>,
    ) -> Result<Self> {
        let store = ControlStore::open(data_dir, config.store.clone()).await?;
        Self::open_with_store(data_dir, store, config, ingest).await
    }

    /// As [`Api::open_with_ingest`], over a control store opened by the caller, e.g.
    /// `sentra_control::ControlStore::open_postgres` (sentra-control's `postgres` feature)
    /// for servers sharing one control database. The access-token key then lives in that
    /// database ([`ControlStore::shared_jwt_key`]), so every server accepts every other's
    /// tokens; for a store of one server it is `jwt-hs256.key` in `data_dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Database`] if the JWT key cannot be read or created.
    pub async fn open_with_store(
        data_dir: &Path,
        store: ControlStore,
        config: ApiConfig,
        ingest: Option<Arc<sentra_ingest::Ingest>>,
    ) -> Result<Self> {
        let tokens = match store.shared_jwt_key().await? {
            // A store shared by several servers (PostgreSQL) holds the key for all.
            Some(key) => sentra_control::Tokens::from_secret(
                &key,
                &config.issuer,
                &config.audience,
                config.access_token_ttl,
            ),
            None => sentra_control::Tokens::open(
                data_dir,
                &config.issuer,
                &config.audience,
                config.access_token_ttl,
            )?,
        };
        let state = http::AppState::new(store.clone(), tokens, config, ingest);
        let readiness = state.readiness.clone();
        let metrics = std::sync::Arc::clone(&state.metrics);
        let alerts = Arc::clone(&state.alerts);
        let alerts_standby = Arc::clone(&state.alerts_standby);
        Ok(Self {
            alerts,
            alerts_standby,
            router: http::router(state),
            store,
            readiness,
            metrics,
        })
    }

    /// The REST router (serve it with `into_make_service_with_connect_info::<SocketAddr>()`
    /// so login limits apply per client address).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The agent keyring for the gRPC authentication layer; always in step with the store.
    #[must_use]
    pub fn keyring(&self) -> DbKeyring {
        self.store.keyring()
    }

    /// The `FetchDesiredState` service for the gRPC side.
    #[must_use]
    pub fn desired_state_service(&self) -> DesiredStateService {
        DesiredStateService::new(self.store.clone())
    }

    /// The control store.
    #[must_use]
    pub fn store(&self) -> &ControlStore {
        &self.store
    }

    /// Registers more series in the registry `GET /metrics` serves, e.g. the gRPC
    /// transport's (`sentra_transport::metrics::Metrics::register`). The registry already
    /// holds the API's own series and, with [`Api::open_with_ingest`], the ingest
    /// pipeline's. Register each name once.
    ///
    /// ```
    /// # #[allow(dead_code)]
    /// # async fn f(api: &sentra_api::Api) {
    /// use prometheus_client::metrics::counter::Counter;
    /// let jobs = Counter::<u64>::default();
    /// api.register_metrics(|r| r.register("my_jobs", "Jobs run.", jobs.clone()));
    /// # }
    /// ```
    pub fn register_metrics(&self, f: impl FnOnce(&mut prometheus_client::registry::Registry)) {
        self.metrics.register(f);
    }

    /// The component states `GET /readyz` and `/metrics` report besides the control store
    /// and the ingest pipeline: the serving process marks its parts ready or failing here.
    #[must_use]
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }
}
