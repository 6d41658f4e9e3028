use std::{collections::HashMap, fmt, sync::Arc};

use ring::hmac;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{AgentId, Error, KeyId, Result, UnixMillis};

/// A 32-byte HMAC-SHA256 secret shared by one agent and the server.
///
/// `Debug` prints `SecretKey(redacted)`; the bytes are zeroed on drop. There is no
/// `Display`, `PartialEq` or `Serialize`: reading the bytes takes an explicit
/// [`SecretKey::expose_secret`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Length of a key in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw key bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies a key out of a slice.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] unless the slice is exactly 32 bytes (the length is reported,
    /// never the content).
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::malformed("secret key", format!("{} bytes, expected 32", bytes.len()))
        })?;
        Ok(Self(arr))
    }

    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] if the system random source fails (it does not on Linux).
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Error::malformed("secret key", "system random source failed"))?;
        Ok(Self(bytes))
    }

    /// The raw key bytes. Every call site is a place a secret can leak: keep them few.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

/// When a key may be used to verify, in server time: `[not_before, not_after)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    clippy::exhaustive_structs,
    reason = "a plain half-open interval of two optional bounds; complete as it is"
)]
pub struct Validity {
    /// First instant the key is valid (inclusive); `None` means since forever.
    pub not_before: Option<UnixMillis>,
    /// Instant the key stops being valid (exclusive); `None` means until revoked.
    pub not_after: Option<UnixMillis>,
}

impl Validity {
    /// Valid at all times (until removed from the keyring).
    #[must_use]
    pub const fn always() -> Self {
        Self {
            not_before: None,
            not_after: None,
        }
    }

    /// Valid in `[not_before, not_after)`.
    #[must_use]
    pub const fn between(not_before: UnixMillis, not_after: UnixMillis) -> Self {
        Self {
            not_before: Some(not_before),
            not_after: Some(not_after),
        }
    }

    /// Whether `at` lies inside the window.
    #[must_use]
    pub fn contains(&self, at: UnixMillis) -> bool {
        self.not_before.is_none_or(|nb| at >= nb) && self.not_after.is_none_or(|na| at < na)
    }
}

/// A verification key of one agent: the HMAC key schedule plus its validity window.
///
/// Cheap to clone. The key schedule is derived once at construction; `ring` does not zero
/// it on drop, which is why keyrings should hold [`AgentKey`]s for their lifetime rather
/// than re-deriving them from [`SecretKey`]s on every request.
#[derive(Clone)]
pub struct AgentKey {
    key: hmac::Key,
    validity: Validity,
}

impl AgentKey {
    /// Derives the verification key for `secret`, valid during `validity`.
    #[must_use]
    pub fn new(secret: &SecretKey, validity: Validity) -> Self {
        Self {
            key: secret.hmac_key(),
            validity,
        }
    }

    /// The validity window.
    #[must_use]
    pub fn validity(&self) -> Validity {
        self.validity
    }

    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.key
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey")
            .field("key", &"redacted")
            .field("validity", &self.validity)
            .finish()
    }
}

/// Where a [`Verifier`](crate::Verifier) finds an agent's keys.
///
/// Implement it over your own store (a database cache, a secrets manager). The lookup must
/// not distinguish "unknown agent" from "unknown key" to the client; the verifier takes care
/// of that by mapping both to the same wire reason.
pub trait Keyring {
    /// The key `key_id` of `agent_id`, if registered (whatever its validity).
    fn lookup(&self, agent_id: &AgentId, key_id: KeyId) -> Option<AgentKey>;
}

impl<K: Keyring + ?Sized> Keyring for &K {
    fn lookup(&self, agent_id: &AgentId, key_id: KeyId) -> Option<AgentKey> {
        (**self).lookup(agent_id, key_id)
    }
}

impl<K: Keyring + ?Sized> Keyring for Arc<K> {
    fn lookup(&self, agent_id: &AgentId, key_id: KeyId) -> Option<AgentKey> {
        (**self).lookup(agent_id, key_id)
    }
}

/// An in-memory [`Keyring`]: several keys per agent, each with its own validity window.
///
/// An agent has one key, two during a rotation: its keys are a short list searched in
/// order, so a lookup hashes only the agent id.
#[derive(Clone, Debug, Default)]
pub struct MemoryKeyring {
    keys: HashMap<AgentId, Vec<(KeyId, AgentKey)>>,
}

impl MemoryKeyring {
    /// An empty keyring.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces key `key_id` of `agent_id`.
    pub fn insert(
        &mut self,
        agent_id: AgentId,
        key_id: KeyId,
        secret: &SecretKey,
        validity: Validity,
    ) {
        let key = AgentKey::new(secret, validity);
        let keys = self.keys.entry(agent_id).or_default();
        match keys.iter_mut().find(|(id, _)| *id == key_id) {
            Some((_, old)) => *old = key,
            None => keys.push((key_id, key)),
        }
    }

    /// Removes one key; returns whether it existed.
    pub fn remove(&mut self, agent_id: &AgentId, key_id: KeyId) -> bool {
        let Some(keys) = self.keys.get_mut(agent_id) else {
            return false;
        };
        let before = keys.len();
        keys.retain(|(id, _)| *id != key_id);
        let removed = keys.len() < before;
        if keys.is_empty() {
            self.keys.remove(agent_id);
        }
        removed
    }

    /// Removes every key of an agent; returns how many there were.
    pub fn remove_agent(&mut self, agent_id: &AgentId) -> usize {
        self.keys.remove(agent_id).map_or(0, |k| k.len())
    }

    /// Number of agents with at least one key.
    #[must_use]
    pub fn agents(&self) -> usize {
        self.keys.len()
    }
}

impl Keyring for MemoryKeyring {
    fn lookup(&self, agent_id: &AgentId, key_id: KeyId) -> Option<AgentKey> {
        self.keys
            .get(agent_id)?
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, key)| key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        let dbg = format!("{k:?} {:?}", AgentKey::new(&k, Validity::always()));
        assert!(!dbg.to_lowercase().contains("ab"), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
    }

    #[test]
    fn from_slice_reports_length_only() {
        let err = SecretKey::from_slice(&[1, 2, 3]).unwrap_err().to_string();
        assert!(err.contains("3 bytes"), "{err}");
    }

    #[test]
    fn validity_window_is_half_open() {
        let v = Validity::between(UnixMillis::from_millis(10), UnixMillis::from_millis(20));
        assert!(!v.contains(UnixMillis::from_millis(9)));
        assert!(v.contains(UnixMillis::from_millis(10)));
        assert!(v.contains(UnixMillis::from_millis(19)));
        assert!(!v.contains(UnixMillis::from_millis(20)));
        assert!(Validity::always().contains(UnixMillis::from_millis(i64::MIN)));
    }

    #[test]
    fn keyring_remove() {
        let mut ring = MemoryKeyring::new();
        let a = AgentId::new("a").unwrap();
        ring.insert(
            a.clone(),
            KeyId::new(1),
            &SecretKey::from_bytes([1; 32]),
            Validity::always(),
        );
        ring.insert(
            a.clone(),
            KeyId::new(2),
            &SecretKey::from_bytes([2; 32]),
            Validity::always(),
        );
        assert!(ring.lookup(&a, KeyId::new(2)).is_some());
        assert!(ring.remove(&a, KeyId::new(2)));
        assert!(!ring.remove(&a, KeyId::new(2)));
        assert_eq!(ring.remove_agent(&a), 1);
        assert_eq!(ring.agents(), 0);
    }

    #[test]
    fn keyring_insert_replaces_the_same_key_id() {
        let mut ring = MemoryKeyring::new();
        let a = AgentId::new("a").unwrap();
        let window = Validity::between(UnixMillis::from_millis(1), UnixMillis::from_millis(2));
        ring.insert(
            a.clone(),
            KeyId::new(7),
            &SecretKey::from_bytes([1; 32]),
            window,
        );
        ring.insert(
            a.clone(),
            KeyId::new(7),
            &SecretKey::from_bytes([2; 32]),
            Validity::always(),
        );
        let key = ring.lookup(&a, KeyId::new(7)).expect("key 7");
        assert_eq!(key.validity(), Validity::always());
        assert!(ring.lookup(&a, KeyId::new(8)).is_none());
        assert_eq!(ring.remove_agent(&a), 1);
    }
}
