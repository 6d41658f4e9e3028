//! The signed batch envelope.
//!
//! An agent serialises its [`MetricBatch`](crate::proto::MetricBatch) once and ships those
//! exact bytes as `SignedBatch.payload`. The HMAC-SHA256 tag covers this string-to-sign
//! (all integers big-endian, every variable-length field length-prefixed, so no two
//! different envelopes share a string-to-sign):
//!
//! ```text
//! "sentra-envelope\0"            domain separation
//! u32 version                    ENVELOPE_VERSION = 1
//! u16 len || method              gRPC method, e.g. "/sentra.v1.Ingest/Push"
//! u16 len || agent_id
//! u32 key_id
//! u64 seq
//! i64 created_ms
//! u16 len || nonce               16 random bytes
//! u64 len || payload             the bytes exactly as sent
//! ```
//!
//! Binding the method means a signed `Push` cannot be replayed as another call. Verification
//! ([`Verifier::verify`]) runs cheap checks first (version, field shapes, size), looks up the
//! key, compares the tag in constant time, checks the clock skew window, and only then lets
//! the caller decode the payload ([`Verified::decode_batch`]).
//!
//! The tag is computed in one streaming pass over the payload (no copy, no separate digest),
//! so verifying costs one SHA-256 pass over the payload plus a constant.

use std::fmt;

use bytes::Bytes;
use prost::Message as _;
use ring::hmac;

use crate::{
    AgentId, AgentKey, Batch, Error, KeyId, Keyring, Result, SecretKey, Seq, UnixMillis, proto,
};

/// The envelope format version this crate signs and verifies.
pub const ENVELOPE_VERSION: u32 = 1;
/// Length of the nonce in bytes.
pub const NONCE_LEN: usize = 16;
/// Length of the tag in bytes (HMAC-SHA256).
pub const TAG_LEN: usize = 32;
/// Default bound on `|created - now|`.
pub const DEFAULT_MAX_SKEW_MS: u64 = 300_000;
/// Default payload limit (4 MiB, tonic's default decoding limit).
pub const DEFAULT_MAX_PAYLOAD: usize = 4 * 1024 * 1024;
/// Longest skew window [`Verifier::max_skew_ms`] accepts (15 minutes).
pub const MAX_SKEW_LIMIT_MS: u64 = 900_000;

const DOMAIN: &[u8] = b"sentra-envelope\0";

/// The RPC an envelope is signed for; part of the string-to-sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `Ingest/Push`: the payload is a `MetricBatch`.
    Push,
    /// `Ingest/FetchDesiredState`: the payload is a `DesiredStateQuery`.
    FetchDesiredState,
    /// The REST call by which an agent collects its newest signing key during a rotation
    /// (`POST /api/v1/agent/key`); the payload names the agent.
    FetchKey,
}

impl Method {
    /// The path bound into the string-to-sign: the gRPC path, or the REST method and path.
    #[must_use]
    pub const fn path(self) -> &'static str {
        match self {
            Self::Push => "/sentra.v1.Ingest/Push",
            Self::FetchDesiredState => "/sentra.v1.Ingest/FetchDesiredState",
            Self::FetchKey => "POST /api/v1/agent/key",
        }
    }
}

/// 16 random bytes that make every envelope unique even if a `seq` were ever reused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// Wraps given bytes (tests, replays of a stored envelope).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; NONCE_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh nonce from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// If the system random source fails, which `getrandom(2)` does not do on Linux
    /// after boot; there is no safe fallback for a nonce.
    #[must_use]
    pub fn random() -> Self {
        let mut bytes = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("system random source failed");
        Self(bytes)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

/// The authenticated header of an envelope, borrowed for hashing.
struct Header<'a> {
    version: u32,
    method: Method,
    agent_id: &'a str,
    key_id: u32,
    seq: u64,
    created_ms: i64,
    nonce: &'a [u8],
}

/// Bytes reserved for the encoded header: domain, version, the method path, the agent id
/// (at most [`AgentId::MAX_LEN`]), key id, seq, created, nonce and payload length, with their
/// length prefixes (method paths are at most 64 bytes, checked in a test), plus up to one
/// SHA-256 block of the payload (see [`compute_tag`]).
const HEADER_CAP: usize =
    DOMAIN.len() + 4 + (2 + 64) + (2 + AgentId::MAX_LEN) + 4 + 8 + 8 + (2 + NONCE_LEN) + 8;
const BLOCK: usize = 64;

/// The string-to-sign header, encoded on the stack.
struct HeaderBytes {
    buf: [u8; HEADER_CAP + BLOCK],
    len: usize,
}

impl HeaderBytes {
    fn put(&mut self, bytes: &[u8]) {
        // Every field is bounded (see HEADER_CAP): callers validate agent id and nonce
        // lengths before signing or verifying, so this never goes out of bounds.
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn put_short(&mut self, field: &[u8]) {
        let len = u16::try_from(field.len()).expect("short envelope field over 64 KiB");
        self.put(&len.to_be_bytes());
        self.put(field);
    }
}

/// HMAC-SHA256 over the string-to-sign. The header is encoded on the stack and topped up with
/// the payload's first bytes to a whole number of SHA-256 blocks, so the MAC sees two
/// `update` calls of whole blocks (header, rest of the payload) instead of a dozen small ones
/// and a partial block carried into the payload (together worth several blocks of a 1 KiB
/// payload).
fn compute_tag(key: &hmac::Key, h: &Header<'_>, payload: &[u8]) -> hmac::Tag {
    let mut b = HeaderBytes {
        buf: [0; HEADER_CAP + BLOCK],
        len: 0,
    };
    b.put(DOMAIN);
    b.put(&h.version.to_be_bytes());
    b.put_short(h.method.path().as_bytes());
    b.put_short(h.agent_id.as_bytes());
    b.put(&h.key_id.to_be_bytes());
    b.put(&h.seq.to_be_bytes());
    b.put(&h.created_ms.to_be_bytes());
    b.put_short(h.nonce);
    b.put(&(payload.len() as u64).to_be_bytes());
    // The inner hash starts after HMAC's one-block key pad, so block boundaries of the
    // string-to-sign are multiples of BLOCK.
    let top_up = ((BLOCK - b.len % BLOCK) % BLOCK).min(payload.len());
    b.put(&payload[..top_up]);
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&b.buf[..b.len]);
    ctx.update(&payload[top_up..]);
    ctx.sign()
}

/// Signs envelopes for one agent with one key.
pub struct Signer {
    agent_id: AgentId,
    key_id: KeyId,
    key: hmac::Key,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("agent_id", &self.agent_id)
            .field("key_id", &self.key_id)
            .field("key", &"redacted")
            .finish()
    }
}

impl Signer {
    /// A signer for `agent_id` using key `key_id`.
    #[must_use]
    pub fn new(agent_id: AgentId, key_id: KeyId, secret: &SecretKey) -> Self {
        Self {
            agent_id,
            key_id,
            key: secret.hmac_key(),
        }
    }

    /// The agent this signer signs for.
    #[must_use]
    pub fn agent_id(&self) -> &AgentId {
        &self.agent_id
    }

    /// The key id put in every envelope.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs already-encoded payload bytes for `method`.
    #[must_use]
    pub fn sign(
        &self,
        method: Method,
        seq: Seq,
        created: UnixMillis,
        nonce: Nonce,
        payload: Bytes,
    ) -> proto::SignedBatch {
        let header = Header {
            version: ENVELOPE_VERSION,
            method,
            agent_id: self.agent_id.as_str(),
            key_id: self.key_id.get(),
            seq: seq.get(),
            created_ms: created.as_millis(),
            nonce: nonce.as_bytes(),
        };
        let tag = compute_tag(&self.key, &header, &payload);
        proto::SignedBatch {
            version: ENVELOPE_VERSION,
            agent_id: self.agent_id.as_str().to_owned(),
            key_id: self.key_id.get(),
            seq: seq.get(),
            created_ms: created.as_millis(),
            nonce: nonce.as_bytes().to_vec(),
            payload,
            tag: tag.as_ref().to_vec(),
        }
    }

    /// Encodes `batch` once and signs it for [`Method::Push`] with the batch's own `seq`,
    /// at signing time `signed_at` (normally now; see [`Verified::created`]).
    ///
    /// The batch's agent id should be this signer's; the server rejects a mismatch.
    #[must_use]
    pub fn sign_batch(
        &self,
        batch: &Batch,
        signed_at: UnixMillis,
        nonce: Nonce,
    ) -> proto::SignedBatch {
        let payload = Bytes::from(batch.encode_to_vec());
        self.sign(Method::Push, batch.seq, signed_at, nonce, payload)
    }
}

/// Verifies envelopes. Cheap to construct and to share.
#[derive(Clone, Debug)]
pub struct Verifier {
    max_skew_ms: u64,
    max_payload: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier with the default limits: ±300 s skew, 4 MiB payloads.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// Sets the allowed clock skew, capped at [`MAX_SKEW_LIMIT_MS`] (15 minutes): a longer
    /// window only widens the replay window without helping a healthy fleet.
    #[must_use]
    pub fn max_skew_ms(mut self, ms: u64) -> Self {
        self.max_skew_ms = ms.min(MAX_SKEW_LIMIT_MS);
        self
    }

    /// Sets the largest accepted payload.
    #[must_use]
    pub const fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Verifies `envelope` as a call of `method` at server time `now`.
    ///
    /// Order of checks: version; field shapes (agent id, nonce and tag lengths); payload
    /// size; key lookup and validity at `now`; the tag, compared in constant time; the
    /// clock skew. The payload is not decoded here: see [`Verified::decode_batch`].
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`], [`Error::Malformed`], [`Error::TooLarge`],
    /// [`Error::UnknownKey`], [`Error::KeyNotValid`], [`Error::BadTag`] or
    /// [`Error::ClockSkew`].
    pub fn verify<K: Keyring + ?Sized>(
        &self,
        envelope: &proto::SignedBatch,
        method: Method,
        now: UnixMillis,
        keyring: &K,
    ) -> Result<Verified> {
        if envelope.version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                version: envelope.version,
            });
        }
        let agent_id = AgentId::new(envelope.agent_id.as_str())?;
        if envelope.nonce.len() != NONCE_LEN {
            return Err(Error::malformed(
                "nonce",
                format!("{} bytes, expected {NONCE_LEN}", envelope.nonce.len()),
            ));
        }
        if envelope.tag.len() != TAG_LEN {
            return Err(Error::malformed(
                "tag",
                format!("{} bytes, expected {TAG_LEN}", envelope.tag.len()),
            ));
        }
        let seq = Seq::new(envelope.seq)?;
        if envelope.payload.len() > self.max_payload {
            return Err(Error::TooLarge {
                len: envelope.payload.len(),
                limit: self.max_payload,
            });
        }
        let key_id = KeyId::new(envelope.key_id);
        let key: AgentKey = keyring
            .lookup(&agent_id, key_id)
            .ok_or_else(|| Error::UnknownKey {
                agent_id: agent_id.to_string(),
                key_id: key_id.get(),
            })?;
        if !key.validity().contains(now) {
            return Err(Error::KeyNotValid {
                agent_id: agent_id.to_string(),
                key_id: key_id.get(),
                at_ms: now.as_millis(),
            });
        }
        let header = Header {
            version: envelope.version,
            method,
            agent_id: agent_id.as_str(),
            key_id: envelope.key_id,
            seq: envelope.seq,
            created_ms: envelope.created_ms,
            nonce: &envelope.nonce,
        };
        let expected = compute_tag(key.hmac(), &header, &envelope.payload);
        #[allow(
            deprecated,
            reason = "ring keeps this as its constant-time comparison primitive"
        )]
        ring::constant_time::verify_slices_are_equal(expected.as_ref(), &envelope.tag)
            .map_err(|_| Error::BadTag)?;
        let skew_ms = envelope.created_ms.saturating_sub(now.as_millis());
        if skew_ms.unsigned_abs() > self.max_skew_ms {
            return Err(Error::ClockSkew {
                skew_ms,
                limit_ms: self.max_skew_ms,
            });
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&envelope.tag);
        Ok(Verified {
            agent_id,
            key_id,
            seq,
            created: UnixMillis::from_millis(envelope.created_ms),
            tag,
            payload: envelope.payload.clone(),
        })
    }
}

/// An envelope whose tag checked out: its header is authentic, its payload not yet decoded.
#[derive(Clone, Debug)]
pub struct Verified {
    agent_id: AgentId,
    key_id: KeyId,
    seq: Seq,
    created: UnixMillis,
    tag: [u8; TAG_LEN],
    payload: Bytes,
}

impl Verified {
    /// The authenticated agent.
    #[must_use]
    pub fn agent_id(&self) -> &AgentId {
        &self.agent_id
    }

    /// The key that verified.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The authenticated sequence number.
    #[must_use]
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The authenticated signing time (not the batch's collection time).
    #[must_use]
    pub fn created(&self) -> UnixMillis {
        self.created
    }

    /// A fingerprint of the exact envelope (its tag). Two deliveries of the same `seq` with
    /// the same fingerprint are a retry; with different fingerprints, a conflict.
    #[must_use]
    pub fn fingerprint(&self) -> &[u8; TAG_LEN] {
        &self.tag
    }

    /// The raw payload bytes as signed.
    #[must_use]
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Decodes the payload as a `MetricBatch`, validates it into a [`Batch`] and checks that
    /// it agrees with the authenticated header (agent id and seq).
    ///
    /// The creation times may differ on purpose: the envelope's `created_ms` is the signing
    /// time (it bounds replay through the skew window), the batch's is the collection time,
    /// which can be hours older when an agent drains its log after an outage.
    ///
    /// The payload is pre-scanned first ([`crate::prescan`]), so a hostile payload of empty
    /// repeated messages is rejected before prost allocates it.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], [`Error::Malformed`], [`Error::DecodedTooLarge`] or
    /// [`Error::HeaderMismatch`].
    pub fn decode_batch(&self) -> Result<Batch> {
        crate::prescan::scan_metric_batch(&self.payload)?;
        let wire = proto::MetricBatch::decode(self.payload.clone()).map_err(Error::decode)?;
        let batch = Batch::try_from(wire)?;
        if batch.agent_id != self.agent_id {
            return Err(Error::HeaderMismatch { field: "agent_id" });
        }
        if batch.seq != self.seq {
            return Err(Error::HeaderMismatch { field: "seq" });
        }
        Ok(batch)
    }

    /// Decodes the payload as a `DesiredStateQuery` (for [`Method::FetchDesiredState`]) and
    /// checks its agent id against the header.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] or [`Error::HeaderMismatch`].
    pub fn decode_desired_state_query(&self) -> Result<proto::DesiredStateQuery> {
        let query =
            proto::DesiredStateQuery::decode(self.payload.clone()).map_err(Error::decode)?;
        if query.agent_id != self.agent_id.as_str() {
            return Err(Error::HeaderMismatch { field: "agent_id" });
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string-to-sign of the module documentation, built independently into a `Vec`.
    fn string_to_sign(h: &Header<'_>, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"sentra-envelope\0");
        v.extend_from_slice(&h.version.to_be_bytes());
        for short in [h.method.path().as_bytes(), h.agent_id.as_bytes()] {
            v.extend_from_slice(&(short.len() as u16).to_be_bytes());
            v.extend_from_slice(short);
        }
        v.extend_from_slice(&h.key_id.to_be_bytes());
        v.extend_from_slice(&h.seq.to_be_bytes());
        v.extend_from_slice(&h.created_ms.to_be_bytes());
        v.extend_from_slice(&(h.nonce.len() as u16).to_be_bytes());
        v.extend_from_slice(h.nonce);
        v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn method_paths_fit_the_header_buffer() {
        for m in [Method::Push, Method::FetchDesiredState, Method::FetchKey] {
            assert!(m.path().len() <= 64, "{}", m.path());
        }
    }

    #[test]
    fn tag_is_the_hmac_of_the_documented_string_to_sign() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let longest = "a".repeat(AgentId::MAX_LEN);
        for (agent_id, method, payload) in [
            ("edge-01", Method::Push, vec![0x5a; 1024]),
            (longest.as_str(), Method::FetchDesiredState, Vec::new()),
            ("x", Method::FetchKey, vec![1; 200_000]),
        ] {
            let h = Header {
                version: ENVELOPE_VERSION,
                method,
                agent_id,
                key_id: 0x0102_0304,
                seq: u64::MAX - 1,
                created_ms: -5,
                nonce: &[9; NONCE_LEN],
            };
            let expected = hmac::sign(&key, &string_to_sign(&h, &payload));
            assert_eq!(
                compute_tag(&key, &h, &payload).as_ref(),
                expected.as_ref(),
                "{agent_id} {method:?}"
            );
        }
    }
}
