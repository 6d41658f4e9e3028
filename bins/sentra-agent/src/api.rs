//! The two REST calls an agent makes: enrolment and key rotation (protocol in
//! `sentra-api`'s crate docs).
//!
//! * `POST /api/v1/agents/enroll` with `{"token", "name"}` → `201 {"agent_id", "key_id",
//!   "secret"}`; the credentials are written (0600, fsync) before anything is signed.
//! * `POST /api/v1/agent/key` with a protobuf `SignedBatch` signed for `Method::FetchKey`
//!   with the current key (payload: `DesiredStateQuery { agent_id }`) → `200 {"key_id",
//!   "secret", …}`. A newer key is persisted (temporary file, fsync, rename, fsync of the
//!   directory) **before** the signer switches to it.

use std::path::Path;
use std::time::Duration;

use prost::Message as _;
use sentra_core::{KeyId, Method, Nonce, Seq, UnixMillis, proto};
use zeroize::Zeroizing;

use crate::credentials::Credentials;
use crate::ship::KeyState;
use crate::{Error, Result};

/// A small HTTP client for the server's REST API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct KeyResponse {
    agent_id: String,
    key_id: u32,
    secret: String,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// What a key check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyCheck {
    /// The current key is the newest.
    Current,
    /// A newer key was persisted and is now in use.
    Rotated {
        /// The previous key id.
        from: KeyId,
        /// The new key id.
        to: KeyId,
    },
}

/// A request error with its causes (reqwest's own text hides them), plus a hint when the
/// server's TLS certificate is not trusted.
fn request_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (the server's TLS certificate is not trusted: set ca_file / --ca-file to the CA \
             that issued it)",
        );
    }
    text
}

impl ApiClient {
    /// A client for `base` (e.g. `https://sentra.example:8443`), trusting the system roots
    /// plus `ca_file` if given.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unreadable CA file or an invalid certificate.
    pub fn new(base: &str, ca_file: Option<&Path>) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sentra-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).map_err(Error::io("read CA file", ca))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("CA file {}: {e}", ca.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    async fn error_of(resp: reqwest::Response) -> Error {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => Error::Api(format!("{status}: {} ({})", b.error.message, b.error.code)),
            Err(_) => Error::Api(format!(
                "{status}: {}",
                text.chars().take(200).collect::<String>()
            )),
        }
    }

    /// Enrols with a bootstrap token; returns the new credentials (not yet saved).
    ///
    /// # Errors
    ///
    /// [`Error::Api`] with the server's message (for example an expired or used token).
    pub async fn enroll(&self, token: &str, name: &str) -> Result<Credentials> {
        let resp = self
            .http
            .post(format!("{}/api/v1/agents/enroll", self.base))
            .json(&serde_json::json!({ "token": token, "name": name }))
            .send()
            .await
            .map_err(|e| Error::Api(format!("enrolment request failed: {}", request_error(&e))))?;
        if !resp.status().is_success() {
            return Err(Self::error_of(resp).await);
        }
        let body: KeyResponse = resp
            .json()
            .await
            .map_err(|e| Error::Api(format!("enrolment response: {e}")))?;
        let agent_id = sentra_core::AgentId::new(body.agent_id)?;
        let secret = Credentials::decode_secret(&Zeroizing::new(body.secret))?;
        Ok(Credentials::new(agent_id, KeyId::new(body.key_id), secret))
    }

    /// Asks for the newest key, signed with `current`. Returns the newest credentials.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] (for example `401` when the key expired: re-enrol).
    pub async fn fetch_key(&self, current: &Credentials) -> Result<Credentials> {
        let payload = proto::DesiredStateQuery {
            agent_id: current.agent_id().as_str().to_owned(),
            known_revision: 0,
        }
        .encode_to_vec();
        let envelope = current.signer().sign(
            Method::FetchKey,
            Seq::FIRST,
            UnixMillis::now(),
            Nonce::random(),
            payload.into(),
        );
        let resp = self
            .http
            .post(format!("{}/api/v1/agent/key", self.base))
            .header("content-type", "application/x-protobuf")
            .body(envelope.encode_to_vec())
            .send()
            .await
            .map_err(|e| Error::Api(format!("key request failed: {}", request_error(&e))))?;
        if !resp.status().is_success() {
            return Err(Self::error_of(resp).await);
        }
        let body: KeyResponse = resp
            .json()
            .await
            .map_err(|e| Error::Api(format!("key response: {e}")))?;
        if body.agent_id != current.agent_id().as_str() {
            return Err(Error::Api(format!(
                "key response names agent {:?}, not {}",
                body.agent_id,
                current.agent_id()
            )));
        }
        let secret = Credentials::decode_secret(&Zeroizing::new(body.secret))?;
        Ok(Credentials::new(
            current.agent_id().clone(),
            KeyId::new(body.key_id),
            secret,
        ))
    }
}

/// One rotation check: fetch the newest key; if it is new, persist it to `path` (durably)
/// and only then switch `state` to it.
///
/// # Errors
///
/// [`Error::Api`] or [`Error::Io`]; on any error the current key stays in use.
pub async fn check_key(api: &ApiClient, state: &KeyState, path: &Path) -> Result<KeyCheck> {
    let current = crate::ship::current(state);
    let newest = api.fetch_key(&current).await?;
    if newest.key_id() == current.key_id() {
        return Ok(KeyCheck::Current);
    }
    let to_save = newest.clone();
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || to_save.save(&p))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    *state
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = newest.clone();
    Ok(KeyCheck::Rotated {
        from: current.key_id(),
        to: newest.key_id(),
    })
}
