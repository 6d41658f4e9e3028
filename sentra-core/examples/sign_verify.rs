//! Sign a batch on the agent side, verify and decode it on the server side, and see a
//! tampered envelope and an unknown key refused.
//!
//! ```text
//! cargo run -p sentra-core --example sign_verify
//! ```

use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, Verifier,
};

fn main() -> Result<(), sentra_core::Error> {
    let agent = AgentId::new("edge-01")?;
    // In a real deployment the secret comes from enrolment (`sentra-api`), never a constant.
    let secret = SecretKey::from_bytes([7; 32]);
    let now = UnixMillis::now();

    // Agent side: build a batch, encode it once and sign the exact bytes.
    let mut batch = Batch::new(agent.clone(), Seq::new(1)?, now);
    batch.samples.push(Sample::new(
        "cpu_usage_ratio".parse()?,
        Labels::from_pairs([("core", "0")])?,
        now,
        Value::Gauge(0.25),
    ));
    let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
    let envelope = signer.sign_batch(&batch, now, Nonce::random());
    println!(
        "signed seq {} for {agent}: {} payload bytes",
        envelope.seq,
        envelope.payload.len()
    );

    // Server side: a keyring with the agent's key, a verifier, then decode.
    let mut keyring = MemoryKeyring::new();
    keyring.insert(agent.clone(), KeyId::new(1), &secret, Validity::always());
    let verifier = Verifier::new();
    let verified = verifier.verify(&envelope, Method::Push, now, &keyring)?;
    let decoded = verified.decode_batch()?;
    assert_eq!(decoded, batch);
    println!("verified and decoded: {} sample(s)", decoded.samples.len());

    // One flipped payload byte and the tag no longer matches.
    let mut tampered = envelope.clone();
    let mut payload = tampered.payload.to_vec();
    payload[0] ^= 1;
    tampered.payload = payload.into();
    match verifier.verify(&tampered, Method::Push, now, &keyring) {
        Ok(_) => panic!("a tampered envelope must not verify"),
        Err(e) => println!("tampered envelope refused: {e}"),
    }

    // An agent whose key the server does not know is refused the same way.
    let stranger = Signer::new(AgentId::new("edge-99")?, KeyId::new(1), &secret);
    let foreign = stranger.sign_batch(&batch, now, Nonce::random());
    match verifier.verify(&foreign, Method::Push, now, &keyring) {
        Ok(_) => panic!("an unknown agent must not verify"),
        Err(e) => println!("unknown agent refused: {e}"),
    }
    Ok(())
}
