//! Onboarding on the store: address pools per interface, adding and removing one peer.

use std::net::IpAddr;

use sentra_core::{AgentId, IpPrefix};

use crate::{
    Error, PeerSpec, Result, SecretString,
    backend::AgentState,
    desired::{self, check_interface},
    onboard::{AddressPool, KeyPair, check_address_free, check_pools_disjoint},
    util,
};

use super::{Actor, ControlStore, agents::missing_or_revoked, audit_in, record};

/// A peer to onboard on an interface.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct NewPeer {
    /// The client's own public key; `None` makes the server generate a key pair and
    /// return the private key once.
    pub public_key: Option<String>,
    /// A static address instead of the pool's next free one (must not overlap another
    /// peer's allowed IPs).
    pub address: Option<String>,
    /// Persistent keepalive the server side uses (0: off).
    pub persistent_keepalive_s: u16,
    /// A preshared key for this peer. The control plane stores it (the server interface
    /// needs it: it reaches the agent in `FetchDesiredState`); it is never logged,
    /// audited or shown by a REST view.
    pub preshared_key: Option<SecretString>,
}

/// The outcome of [`ControlStore::add_peer`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Onboarded {
    /// The declared peer (its allowed IPs are its addresses).
    pub peer: PeerSpec,
    /// The client's addresses.
    pub addresses: Vec<IpPrefix>,
    /// The generated private key, returned this once and never stored.
    pub private_key: Option<SecretString>,
    /// The agent's desired-state revision after the change.
    pub revision: u64,
}

/// The first host address of each prefix: the interface's own, never handed out.
fn interface_addresses(pool: &AddressPool) -> Vec<IpAddr> {
    pool.prefixes()
        .iter()
        .filter_map(|p| match p.addr() {
            IpAddr::V4(a) if p.prefix_len() <= 30 => Some(IpAddr::V4((u32::from(a) + 1).into())),
            IpAddr::V6(a) if p.prefix_len() <= 126 => Some(IpAddr::V6((u128::from(a) + 1).into())),
            _ => None,
        })
        .collect()
}

impl ControlStore {
    /// Sets the address pool of one interface of an agent.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`]; [`Error::Conflict`] when the pool overlaps another
    /// interface's pool (naming it) or the agent is revoked; [`Error::NotFound`].
    pub async fn set_address_pool(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
        pool: &AddressPool,
    ) -> Result<()> {
        check_interface(interface)?;
        let target = format!("{agent}/{interface}");
        let prefixes = pool
            .prefixes()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            if !matches!(tx.agent_state(agent).await?, AgentState::Live { .. }) {
                return Err(missing_or_revoked(&mut *tx, agent).await);
            }
            // Read after begin: the transaction holds the control-plane write lock.
            let others = self.backend().address_pools().await?;
            let mut parsed = Vec::new();
            for (a, i, p) in &others {
                if a == agent.as_str() && i == interface {
                    continue;
                }
                parsed.push((format!("{a}/{i}"), AddressPool::parse(p.split(','))?));
            }
            let mut all: Vec<(&str, &AddressPool)> =
                parsed.iter().map(|(n, p)| (n.as_str(), p)).collect();
            all.push((&target, pool));
            check_pools_disjoint(&all)?;
            tx.set_address_pool(agent, interface, &prefixes, util::now_ms())
                .await?;
            let detail = format!("prefixes={prefixes}");
            audit_in(
                &mut *tx,
                record(actor, "pool.set", &target, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.finish(actor, "pool.set", &target, res).await
    }

    /// The address pool of one interface, if one is set.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn address_pool(
        &self,
        agent: &AgentId,
        interface: &str,
    ) -> Result<Option<AddressPool>> {
        self.backend()
            .address_pools()
            .await?
            .into_iter()
            .find(|(a, i, _)| a == agent.as_str() && i == interface)
            .map(|(_, _, p)| AddressPool::parse(p.split(',')))
            .transpose()
    }

    /// Onboards one peer on an interface: its address is the pool's next free one (or
    /// the static address asked for), its key the client's or a fresh pair whose private
    /// half is returned once and never stored. The interface's desired peers gain it and
    /// the agent's revision moves; the audit entry names the public key and addresses.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown agent or an interface without pool;
    /// [`Error::Conflict`] for a taken address (naming the peer), an exhausted pool, a
    /// public key already declared, or a revoked agent; [`Error::Invalid`].
    pub async fn add_peer(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
        new: NewPeer,
    ) -> Result<Onboarded> {
        check_interface(interface)?;
        if let Some(psk) = &new.preshared_key
            && util::b64_decode(psk.expose_secret()).is_none_or(|b| b.len() != 32)
        {
            return Err(Error::invalid(
                "preshared_key",
                "not 32 bytes in standard base64",
            ));
        }
        let target = format!("{agent}/{interface}");
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let AgentState::Live {
                desired_revision: rev,
            } = tx.agent_state(agent).await?
            else {
                return Err(missing_or_revoked(&mut *tx, agent).await);
            };
            let pool = self
                .address_pool(agent, interface)
                .await?
                .ok_or_else(|| Error::not_found("address pool", target.clone()))?;
            let mut peers = self
                .backend()
                .desired_interfaces(agent)
                .await?
                .into_iter()
                .find(|i| i.name == interface)
                .map(|i| i.peers)
                .unwrap_or_default();
            let addresses = match &new.address {
                Some(a) => {
                    check_address_free(a, &peers, None)?;
                    let p: IpPrefix = desired::normalise(vec![
                        PeerSpec::new(util::b64(&[0; 32])).with_allowed_ips([a.as_str()]),
                    ])?
                    .remove(0)
                    .allowed_ips
                    .remove(0)
                    .parse()
                    .map_err(|_| Error::invalid("address", "not an IP address"))?;
                    vec![p]
                }
                None => pool.next_free(&peers, &interface_addresses(&pool))?,
            };
            let (public_key, private_key) = match new.public_key {
                Some(k) => (k, None),
                None => {
                    let pair = KeyPair::generate()?;
                    (pair.public_key, Some(pair.private_key))
                }
            };
            let mut spec = PeerSpec::new(public_key)
                .with_allowed_ips(addresses.iter().map(ToString::to_string));
            spec.persistent_keepalive_s = new.persistent_keepalive_s;
            peers.push(spec);
            let peers = desired::normalise(peers)?;
            let peer = peers.last().cloned().unwrap_or_else(|| PeerSpec::new(""));
            let json = serde_json::to_string(&peers).map_err(|e| Error::Internal(e.to_string()))?;
            tx.upsert_desired_interface(agent, interface, &json, util::now_ms())
                .await?;
            tx.set_preshared_key(
                agent,
                interface,
                &peer.public_key,
                new.preshared_key.as_ref(),
            )
            .await?;
            let rev = rev + 1;
            tx.set_desired_revision(agent, rev).await?;
            let detail = format!(
                "public_key={} addresses={} generated_key={} preshared_key={} revision={rev}",
                peer.public_key,
                peer.allowed_ips.join(","),
                private_key.is_some(),
                new.preshared_key.is_some()
            );
            audit_in(
                &mut *tx,
                record(actor, "peer.add", &target, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(Onboarded {
                peer,
                addresses,
                private_key,
                revision: rev,
            })
        }
        .await;
        self.finish(actor, "peer.add", &target, res).await
    }

    /// Removes one peer from an interface; its addresses are free again. Returns the
    /// agent's new revision.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown agent or peer; [`Error::Conflict`] for a
    /// revoked agent.
    pub async fn remove_peer(
        &self,
        actor: &Actor,
        agent: &AgentId,
        interface: &str,
        public_key: &str,
    ) -> Result<u64> {
        check_interface(interface)?;
        let target = format!("{agent}/{interface}");
        let _w = self.inner.write.lock().await;
        let res = async {
            let mut tx = self.backend().begin().await?;
            let AgentState::Live {
                desired_revision: rev,
            } = tx.agent_state(agent).await?
            else {
                return Err(missing_or_revoked(&mut *tx, agent).await);
            };
            let mut peers = self
                .backend()
                .desired_interfaces(agent)
                .await?
                .into_iter()
                .find(|i| i.name == interface)
                .map(|i| i.peers)
                .unwrap_or_default();
            let before = peers.len();
            peers.retain(|p| p.public_key != public_key.trim());
            if peers.len() == before {
                return Err(Error::not_found("peer", format!("{target}/{public_key}")));
            }
            let json = serde_json::to_string(&peers).map_err(|e| Error::Internal(e.to_string()))?;
            tx.upsert_desired_interface(agent, interface, &json, util::now_ms())
                .await?;
            tx.set_preshared_key(agent, interface, public_key.trim(), None)
                .await?;
            let rev = rev + 1;
            tx.set_desired_revision(agent, rev).await?;
            let detail = format!("public_key={} revision={rev}", public_key.trim());
            audit_in(
                &mut *tx,
                record(actor, "peer.remove", &target, "success", &detail),
            )
            .await?;
            tx.commit().await?;
            Ok(rev)
        }
        .await;
        self.finish(actor, "peer.remove", &target, res).await
    }
}
