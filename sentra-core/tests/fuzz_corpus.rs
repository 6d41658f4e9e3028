//! Replays the committed cargo-fuzz corpora (`fuzz/corpus/<target>/`) through the same
//! harnesses the fuzz targets call, so every normal test run re-checks them without
//! cargo-fuzz or a nightly toolchain.

use std::{fs, path::Path};

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        harness(&fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "corpus {} is empty", dir.display());
}

#[test]
fn envelope_verify_corpus() {
    replay("envelope_verify", sentra_core::fuzzing::envelope_verify);
}

#[test]
fn metric_batch_decode_corpus() {
    replay(
        "metric_batch_decode",
        sentra_core::fuzzing::metric_batch_decode,
    );
}

/// Regenerates the seed inputs: `cargo test -p sentra-core --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    use prost::Message as _;
    use sentra_core::{
        AgentId, Batch, KeyId, Labels, MetricName, Nonce, Sample, SecretKey, Seq, Signer,
        UnixMillis, Value,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let agent = AgentId::new("seed-agent").unwrap();
    let mut batch = Batch::new(
        agent.clone(),
        Seq::new(3).unwrap(),
        UnixMillis::from_millis(1_760_000_000_000),
    );
    batch.samples.push(Sample::new(
        MetricName::new("up").unwrap(),
        Labels::from_pairs([("job", "agent")]).unwrap(),
        UnixMillis::from_millis(1_760_000_000_000),
        Value::Counter(1),
    ));
    let payload = batch.encode_to_vec();
    let env = Signer::new(agent, KeyId::new(1), &SecretKey::from_bytes([1; 32]))
        .sign_batch(&batch, batch.created, Nonce::from_bytes([2; 16]))
        .encode_to_vec();
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };
    write("metric_batch_decode", "valid", &payload);
    write(
        "metric_batch_decode",
        "truncated",
        &payload[..payload.len() / 2],
    );
    write("metric_batch_decode", "empty", &[]);
    write(
        "metric_batch_decode",
        "deep-nesting",
        &[0x22, 0x7f].repeat(64),
    );
    write("envelope_verify", "valid", &env);
    write("envelope_verify", "truncated", &env[..env.len() - 7]);
    write("envelope_verify", "empty", &[]);
    write(
        "envelope_verify",
        "huge-length",
        &[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    );
}
