//! The database-backed agent keyring.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

use sentra_core::{AgentId, AgentKey, KeyId, Keyring};

type Keys = HashMap<AgentId, HashMap<KeyId, AgentKey>>;

/// The agents' HMAC verification keys, as held by the control store.
///
/// An in-memory copy of the `agent_keys` table, loaded when the
/// [`ControlStore`](crate::ControlStore) opens and replaced agent by agent right after
/// every committed change (enrolment, rotation, revocation, deletion), and reloaded whole
/// when the control store's poller sees that another process sharing the database changed
/// something (see [`ControlStore::refresh`](crate::ControlStore::refresh)). [`Keyring::lookup`]
/// is one read-lock and one hash lookup: no database access, no allocation beyond cloning
/// the key schedule. Cheap to clone; all clones share one table.
///
/// Hand it to `sentra-transport`'s authentication layer (`Verifier::verify(.., &keyring)`).
#[derive(Clone, Default)]
pub struct DbKeyring {
    keys: Arc<RwLock<Keys>>,
}

impl fmt::Debug for DbKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbKeyring")
            .field("agents", &self.agents())
            .finish_non_exhaustive()
    }
}

impl DbKeyring {
    /// Number of agents that currently have at least one key.
    #[must_use]
    pub fn agents(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn replace_all(&self, keys: Keys) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// Replaces every key of `agent`; an empty map removes the agent.
    pub(crate) fn replace_agent(&self, agent: &AgentId, keys: HashMap<KeyId, AgentKey>) {
        let mut guard = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.is_empty() {
            guard.remove(agent);
        } else {
            guard.insert(agent.clone(), keys);
        }
    }
}

impl Keyring for DbKeyring {
    fn lookup(&self, agent_id: &AgentId, key_id: KeyId) -> Option<AgentKey> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent_id)?
            .get(&key_id)
            .cloned()
    }
}
