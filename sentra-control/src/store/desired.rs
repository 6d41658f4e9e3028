//! Desired peers per agent and interface, and the `FetchDesiredState` answer.

use sentra_core::{AgentId, proto};

use crate::{
    Error, PeerSpec, Result,
    backend::AgentState,
    desired::{self, check_interface},
    util,
};

use super::{Actor, ControlStore, DesiredInfo, agents::missing_or_revoked, audit_in, record};

impl ControlStore {
    /// Declares the peers of one interface of an agent (replacing the previous list).
    /// The input is validated and normalised; the agent's revision is bumped when the
    /// normalised list differs from the stored one. Returns the revision.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`], [`Error::Conflict`] (a key or allowed IP claimed twice, or a
    /// revoked agent), [`Error::NotFound`].
    pub async fn set_desired_interface(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
        peers: Vec<PeerSpec>,
    ) -> Result<u64> {
        check_interface(interface)?;
        let target = format!("{agent}/{interface}");
        let peers = match desired::normalise(peers) {
            // A well-formed declaration that conflicts is a refused change: audit it.
            Err(e @ Error::Conflict(_)) => {
                return self.finish(actor, "desired.set", &target, Err(e)).await;
            }
            other => other?,
        };
        let json = serde_json::to_string(&peers).map_err(|e| Error::Internal(e.to_string()))?;
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let AgentState::Live {
                desired_revision: mut rev,
            } = tx.agent_state(agent).await?
            else {
                return Err(missing_or_revoked(&mut *tx, agent).await);
            };
            let changed = tx
                .upsert_desired_interface(agent, interface, &json, util::now_ms())
                .await?;
            // A peer the new list drops loses its preshared key (a later peer with the
            // same public key must not inherit it).
            for (name, key, _) in self.backend().preshared_keys(agent).await? {
                if name == interface && !peers.iter().any(|p| p.public_key == key) {
                    tx.set_preshared_key(agent, interface, &key, None).await?;
                }
            }
            if changed {
                rev += 1;
                tx.set_desired_revision(agent, rev).await?;
            }
            let detail = format!("peers={} revision={rev} changed={changed}", peers.len());
            audit_in(
                &mut *tx,
                record(actor, "desired.set", &target, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(rev)
        }
        .await;
        self.finish(actor, "desired.set", &target, res).await
    }

    /// Stops managing one interface of an agent. Returns the new revision.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if nothing was declared for it.
    pub async fn delete_desired_interface(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
    ) -> Result<u64> {
        let target = format!("{agent}/{interface}");
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            if !tx.delete_desired_interface(agent, interface).await? {
                return Err(Error::not_found("desired interface", target.clone()));
            }
            tx.delete_interface_preshared_keys(agent, interface).await?;
            let rev = match tx.agent_state(agent).await? {
                // A revoked agent keeps its row; its revision still moves.
                AgentState::Live { desired_revision }
                | AgentState::Revoked { desired_revision } => desired_revision + 1,
                AgentState::Missing => return Err(Error::not_found("agent", agent.as_str())),
            };
            tx.set_desired_revision(agent, rev).await?;
            let detail = format!("revision={rev}");
            audit_in(
                &mut *tx,
                record(actor, "desired.delete", &target, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(rev)
        }
        .await;
        self.finish(actor, "desired.delete", &target, res).await
    }

    /// Everything declared for an agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub async fn desired(&self, agent: &AgentId) -> Result<DesiredInfo> {
        let revision = self
            .backend()
            .desired_revision(agent, false)
            .await?
            .ok_or_else(|| Error::not_found("agent", agent.as_str()))?;
        let interfaces = self.backend().desired_interfaces(agent).await?;
        Ok(DesiredInfo {
            agent_id: agent.to_string(),
            revision,
            interfaces,
        })
    }

    /// The wire answer to `FetchDesiredState` for an authenticated agent.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown or revoked agent.
    pub async fn desired_state(
        &self,
        agent: &AgentId,
        known_revision: u64,
    ) -> Result<proto::DesiredState> {
        let revision = self
            .backend()
            .desired_revision(agent, true)
            .await?
            .ok_or_else(|| Error::not_found("agent", agent.as_str()))?;
        if revision == known_revision {
            return Ok(proto::DesiredState {
                revision,
                unchanged: true,
                interfaces: Vec::new(),
            });
        }
        let info = self.desired(agent).await?;
        let psks = self.backend().preshared_keys(agent).await?;
        let psk_of = |interface: &str, key: &str| {
            psks.iter()
                .find(|(i, k, _)| i == interface && k == key)
                .map(|(_, _, psk)| psk)
        };
        Ok(proto::DesiredState {
            revision: info.revision,
            unchanged: false,
            interfaces: info
                .interfaces
                .iter()
                .map(|i| proto::DesiredInterface {
                    name: i.name.clone(),
                    peers: i
                        .peers
                        .iter()
                        .map(|p| desired::to_proto(p, psk_of(&i.name, &p.public_key)))
                        .collect(),
                })
                .collect(),
        })
    }
}
