//! Harnesses shared by the cargo-fuzz targets in `fuzz/` and the corpus replay test.
//! Not public API.

use prost::Message as _;

use crate::{
    AgentId, Batch, KeyId, MemoryKeyring, Method, SecretKey, UnixMillis, Validity, Verifier, proto,
};

/// Parses `data` as a `SignedBatch` and verifies it against a keyring holding a key the
/// input cannot know. Must never panic; must never verify.
pub fn envelope_verify(data: &[u8]) {
    let Ok(envelope) = proto::SignedBatch::decode(data) else {
        return;
    };
    let mut keyring = MemoryKeyring::new();
    if let Ok(agent) = AgentId::new(envelope.agent_id.as_str()) {
        keyring.insert(
            agent,
            KeyId::new(envelope.key_id),
            &SecretKey::from_bytes(*b"fuzzing-key-the-input-cannot-see"),
            Validity::always(),
        );
    }
    let now = UnixMillis::from_millis(envelope.created_ms);
    let result = Verifier::new().verify(&envelope, Method::Push, now, &keyring);
    assert!(result.is_err(), "an envelope verified without the key");
}

/// Decodes `data` as a `MetricBatch` payload and converts it to the domain type; if that
/// succeeds, the re-encoding must decode to the same batch. Must never panic.
pub fn metric_batch_decode(data: &[u8]) {
    if let Ok(batch) = Batch::decode(data) {
        let again = Batch::decode(&batch.encode_to_vec()).expect("re-encoded batch decodes");
        // NaN gauges make PartialEq false; compare the encodings instead.
        assert_eq!(again.encode_to_vec(), batch.encode_to_vec());
    }
}
