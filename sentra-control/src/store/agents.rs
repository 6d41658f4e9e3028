//! Agents and their keys: enrolment, rotation, revocation, deletion.

use std::{collections::HashMap, time::Duration};

use sentra_core::{AgentId, KeyId, SecretKey};

use crate::{Error, Result, SecretString, backend::AgentState, backend::ControlTx, util};

use super::{
    Actor, AgentInfo, ControlStore, Enrolment, NewestKey, Rotation, agent_id_of, audit_in,
    bootstrap::hex_lower, record,
};

/// `"Edge Router #1"` → `"edge-router-1"` (at most 40 bytes; `"agent"` if nothing is left).
pub(super) fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() {
        "agent".to_owned()
    } else {
        out
    }
}

/// The error for an agent that is not live: missing or revoked.
pub(super) async fn missing_or_revoked(tx: &mut dyn ControlTx, agent: &AgentId) -> Error {
    match tx.agent_state(agent).await {
        Ok(AgentState::Missing) => Error::not_found("agent", agent.as_str()),
        Ok(_) => Error::Conflict(format!("agent {agent} is revoked")),
        Err(e) => e,
    }
}

impl ControlStore {
    /// Enrols a new agent with a bootstrap token: consumes the token (atomically: of two
    /// concurrent enrolments with one token exactly one succeeds), creates the agent and
    /// its key 1, and returns the secret. The agent id is derived from `name` plus a random
    /// suffix (`edge-01-3f9a2c1b`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidBootstrapToken`] for an unknown, expired or used token;
    /// [`Error::Invalid`] for a bad name.
    pub async fn enroll(&self, token: &SecretString, name: &str) -> Result<Enrolment> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(Error::invalid("name", "1 to 64 printable characters"));
        }
        let hash = util::sha256(token.expose_secret().as_bytes());
        let mut suffix = [0u8; 4];
        util::fill_random(&mut suffix)?;
        let agent_id = agent_id_of(&format!("{}-{}", slug(name), hex_lower(&suffix)))?;
        let secret = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let key_id = KeyId::new(1);
        let _w = self.inner.write.lock().await;
        // The transaction holds the database's write lock from its start (see
        // `ControlBackend::begin`): the check-and-consume is atomic across processes too.
        let mut tx = self.backend().begin().await?;
        let now = util::now_ms();
        let Some(token_id) = tx.consume_bootstrap_token(&hash, &agent_id, now).await? else {
            tracing::info!("enrolment refused: bootstrap token invalid, expired or used");
            return Err(Error::InvalidBootstrapToken);
        };
        tx.insert_agent(&agent_id, name, now).await?;
        tx.insert_key(&agent_id, key_id, &secret, now).await?;
        let detail = format!("key_id=1 name={name:?}");
        audit_in(
            &mut *tx,
            record(
                &Actor::bootstrap_token(&token_id),
                "agent.enroll",
                agent_id.as_str(),
                "success",
                &detail,
            ),
        )
        .await?;
        tx.commit().await?;
        self.reload_agent(&agent_id).await?;
        Ok(Enrolment {
            agent_id,
            key_id,
            secret,
        })
    }

    /// Every agent, by id.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>> {
        self.backend().agents().await
    }

    /// One agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub async fn get_agent(&self, agent: &AgentId) -> Result<AgentInfo> {
        self.backend()
            .agent(agent)
            .await?
            .ok_or_else(|| Error::not_found("agent", agent.as_str()))
    }

    /// Whether `agent` exists (enrolled, live or revoked): a single-row lookup, cheaper
    /// than [`get_agent`](Self::get_agent) (keys) or [`desired`](Self::desired) (every
    /// declared peer parsed).
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub async fn agent_exists(&self, agent: &AgentId) -> Result<bool> {
        self.backend().agent_exists(agent).await
    }

    /// `Ok` if `agent` exists (live or revoked), else [`Error::NotFound`] naming it: the
    /// check a request about an agent makes before anything else.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Database`].
    pub async fn require_agent(&self, agent: &AgentId) -> Result<()> {
        if self.agent_exists(agent).await? {
            Ok(())
        } else {
            Err(Error::not_found("agent", agent.as_str()))
        }
    }

    /// Revokes an agent: its keys are deleted and disappear from the keyring before this
    /// returns, so its next envelope fails verification (and, through the control version,
    /// within one poll interval on every other server sharing the database). The agent row
    /// stays (audit trail).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Conflict`] if already revoked.
    pub async fn revoke_agent(&self, actor: &Actor, agent: &AgentId) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            if !tx.revoke_agent(agent, util::now_ms()).await? {
                return Err(missing_or_revoked(&mut *tx, agent).await);
            }
            let keys = tx.delete_keys(agent).await?;
            let detail = format!("keys_deleted={keys}");
            audit_in(
                &mut *tx,
                record(actor, "agent.revoke", agent.as_str(), "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if res.is_ok() {
            self.inner.keyring.replace_agent(agent, HashMap::new());
        }
        self.finish(actor, "agent.revoke", agent.as_str(), res)
            .await
    }

    /// Deletes an agent with its keys and desired peers (its metric data is deleted by the
    /// caller from the ingest store).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub async fn delete_agent(&self, actor: &Actor, agent: &AgentId) -> Result<()> {
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            if !tx.delete_agent(agent).await? {
                return Err(Error::not_found("agent", agent.as_str()));
            }
            audit_in(
                &mut *tx,
                record(actor, "agent.delete", agent.as_str(), "success", ""),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if res.is_ok() {
            self.inner.keyring.replace_agent(agent, HashMap::new());
        }
        self.finish(actor, "agent.delete", agent.as_str(), res)
            .await
    }

    /// Rotates an agent's key: creates key N+1 (valid from now) and limits every older key
    /// to `now + overlap`. Keys already expired are deleted. The new secret is not returned
    /// here: the agent collects it with a request signed by its current key
    /// (`POST /api/v1/agent/key`, see the crate docs).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Conflict`] for a revoked agent.
    pub async fn rotate_key(
        &self,
        actor: &Actor,
        agent: &AgentId,
        overlap: Duration,
    ) -> Result<Rotation> {
        let secret = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let now = util::now_ms();
            let cutoff = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
            if !matches!(tx.agent_state(agent).await?, AgentState::Live { .. }) {
                return Err(missing_or_revoked(&mut *tx, agent).await);
            }
            let n = tx.cap_keys(agent, cutoff).await?;
            // Numbering stays monotonic: read the highest id before pruning expired keys.
            let max = tx.max_key_id(agent).await?;
            tx.delete_expired_keys(agent, now).await?;
            let new_id = max
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| Error::Conflict("key id space exhausted".into()))?;
            tx.insert_key(agent, KeyId::new(new_id), &secret, now)
                .await?;
            let detail =
                format!("new_key_id={new_id} previous_keys={n} previous_not_after_ms={cutoff}");
            audit_in(
                &mut *tx,
                record(
                    actor,
                    "agent.rotate_key",
                    agent.as_str(),
                    "success",
                    &detail,
                ),
            )
            .await?;
            tx.commit().await?;
            Ok(Rotation {
                agent_id: agent.to_string(),
                new_key_id: new_id,
                previous_keys_not_after_ms: cutoff,
            })
        }
        .await;
        if res.is_ok() {
            self.reload_agent(agent).await?;
        }
        self.finish(actor, "agent.rotate_key", agent.as_str(), res)
            .await
    }

    /// The newest key of a live agent, with its secret (for delivery to that agent only).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown or revoked agent.
    pub async fn newest_key(&self, agent: &AgentId) -> Result<NewestKey> {
        self.backend()
            .newest_key(agent)
            .await?
            .ok_or_else(|| Error::not_found("agent", agent.as_str()))
    }

    /// Records that an agent collected its newest key (a failure is logged, not returned).
    pub async fn audit_key_fetch(&self, agent: &AgentId, key_id: KeyId, signed_with: KeyId) {
        let detail = format!("key_id={key_id} signed_with={signed_with}");
        let actor = Actor::agent(agent);
        if let Err(e) = self
            .record_audit(
                &actor,
                "agent.fetch_key",
                agent.as_str(),
                "success",
                &detail,
            )
            .await
        {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }
}
