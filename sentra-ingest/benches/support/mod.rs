//! The ingest benches' shared workload: many agents, each with `series` series of
//! alternating gauges and counters, `points` points per series in each of `batches`
//! batches, signed before any clock starts. Used by `sentra-ingest`'s `pipeline` and `bus`
//! benches and, through `#[path]`, by `sentra-benches`' `ingest_e2e`, so the figures of the
//! three stay comparable.

use bytes::Bytes;
use sentra_core::{
    AgentId, Batch, KeyId, Labels, MemoryKeyring, Method, Nonce, Sample, SecretKey, Seq, Signer,
    UnixMillis, Validity, Value, proto::SignedBatch,
};

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux;
/// `CLK_TCK` = 100). The machine is shared, so wall-clock throughput understates what the
/// pipeline does with a whole machine; CPU time does not.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// A `u64` from the environment, or `default`.
pub(crate) fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workload's shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub(crate) agents: u64,
    pub(crate) series: u64,
    pub(crate) points: u64,
    pub(crate) batches: u64,
}

impl Shape {
    /// `BENCH_AGENTS`, `BENCH_SERIES`, `BENCH_POINTS`, `BENCH_BATCHES`, else
    /// `[agents, series, points, batches]` under `cargo bench` (which passes `--bench`) and
    /// a tiny shape under `cargo test --benches`.
    pub(crate) fn from_env([agents, series, points, batches]: [u64; 4]) -> Self {
        let quick = !std::env::args().any(|a| a == "--bench");
        let pick = |name, full, tiny| env(name, if quick { tiny } else { full });
        Self {
            agents: pick("BENCH_AGENTS", agents, 2),
            series: pick("BENCH_SERIES", series, 10),
            points: pick("BENCH_POINTS", points, 2),
            batches: pick("BENCH_BATCHES", batches, 3),
        }
    }

    /// `(agents, series, points, batches)`.
    pub(crate) fn parts(&self) -> (u64, u64, u64, u64) {
        (self.agents, self.series, self.points, self.batches)
    }

    /// Samples in one batch.
    pub(crate) fn per_batch(&self) -> u64 {
        self.series * self.points
    }

    /// Samples in the whole workload.
    pub(crate) fn total(&self) -> u64 {
        self.agents * self.batches * self.per_batch()
    }
}

/// The signed workload: every agent's envelopes in sequence order, the keyring that
/// verifies them, when they were signed, and their payload bytes.
pub(crate) struct Signed {
    pub(crate) keys: MemoryKeyring,
    pub(crate) now: UnixMillis,
    pub(crate) envelopes: Vec<Vec<SignedBatch>>,
    pub(crate) payload_bytes: usize,
}

/// Signs the workload: agent `<prefix>-<n>`, metrics `<prefix>_gauge` and
/// `<prefix>_counter_total`, labels `host`, `series` and `extra`, one hour back from now.
pub(crate) fn sign(
    shape: Shape,
    prefix: &str,
    extra: &[(&str, &str)],
    secret: &SecretKey,
) -> Signed {
    let Shape {
        agents,
        series,
        points,
        batches,
    } = shape;
    let mut keys = MemoryKeyring::new();
    let now = UnixMillis::now();
    let t0 = now.as_millis() - 3_600_000;
    let gauge: sentra_core::MetricName = format!("{prefix}_gauge").parse().unwrap();
    let counter: sentra_core::MetricName = format!("{prefix}_counter_total").parse().unwrap();
    let mut envelopes = Vec::new();
    let mut payload_bytes = 0usize;
    for a in 0..agents {
        let agent = AgentId::new(format!("{prefix}-{a}")).unwrap();
        keys.insert(agent.clone(), KeyId::new(1), secret, Validity::always());
        let signer = Signer::new(agent.clone(), KeyId::new(1), secret);
        let labels: Vec<Labels> = (0..series)
            .map(|s| {
                let mut pairs = vec![
                    ("host".to_owned(), format!("host-{a}")),
                    ("series".to_owned(), s.to_string()),
                ];
                pairs.extend(
                    extra
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                );
                Labels::from_pairs(pairs).unwrap()
            })
            .collect();
        let mut mine = Vec::new();
        // what real agents send: each collection a second apart with a few ms of jitter,
        // gauges walking randomly in hundredths (a CPU %, a temperature), counters growing
        // by random amounts (bytes); deterministic, so every run stores the same data
        let values = Values::from_env();
        let mut rng = SplitMix(a);
        let mut gauges: Vec<i64> = (0..series).map(|_| 5_000).collect();
        let mut counters: Vec<u64> = (0..series).map(|_| rng.below(1 << 40)).collect();
        for b in 0..batches {
            let mut batch = Batch::new(agent.clone(), Seq::new(b + 1).unwrap(), now);
            for p in 0..points {
                let jitter = rng.below(11) as i64 - 5;
                let ts = t0 + ((b * points + p) * 1000) as i64 + jitter;
                let step = (b * points + p) as i64;
                for (s, l) in labels.iter().enumerate() {
                    let value = match (values, s % 2 == 0, s % 10) {
                        // fleet: constant gauges (sizes, up flags), handshake ages
                        (Values::Fleet, true, 0 | 2) => Value::Gauge(s as f64 * 1024.0),
                        (Values::Fleet, true, 4) => Value::Gauge((step / 120 * 120) as f64),
                        // fleet: idle peers, error counters: constant or a few a time
                        (Values::Fleet, false, 1 | 3) => Value::Counter(counters[s]),
                        (Values::Fleet, false, 5) => {
                            counters[s] += rng.below(10);
                            Value::Counter(counters[s])
                        }
                        (_, true, _) => {
                            let g = &mut gauges[s];
                            *g = (*g + rng.below(101) as i64 - 50).clamp(0, 10_000);
                            Value::Gauge(*g as f64 / 100.0)
                        }
                        (_, false, _) => {
                            counters[s] += rng.below(1_000_000);
                            Value::Counter(counters[s])
                        }
                    };
                    batch.samples.push(Sample::new(
                        if s % 2 == 0 { &gauge } else { &counter }.clone(),
                        l.clone(),
                        UnixMillis::from_millis(ts),
                        value,
                    ));
                }
            }
            let payload = Bytes::from(batch.encode_to_vec());
            payload_bytes += payload.len();
            mine.push(signer.sign(Method::Push, batch.seq, now, Nonce::random(), payload));
        }
        envelopes.push(mine);
    }
    Signed {
        keys,
        now,
        envelopes,
        payload_bytes,
    }
}

/// The in-process benches' workload (agents `bench-<n>`, label `kind="bench"`) verified,
/// as the ingest service receives it after the transport, and its payload bytes.
#[allow(dead_code)] // `ingest_e2e` pushes the signed envelopes through gRPC instead
pub(crate) fn verified_workload(shape: Shape) -> (Vec<Vec<sentra_core::Verified>>, usize) {
    let signed = sign(
        shape,
        "bench",
        &[("kind", "bench")],
        &SecretKey::from_bytes([1; 32]),
    );
    (verified(&signed), signed.payload_bytes)
}

/// The workload verified, as the ingest service receives it after the transport.
#[allow(dead_code)] // `ingest_e2e` pushes the envelopes through gRPC instead
pub(crate) fn verified(signed: &Signed) -> Vec<Vec<sentra_core::Verified>> {
    let verifier = sentra_core::Verifier::new();
    signed
        .envelopes
        .iter()
        .map(|mine| {
            mine.iter()
                .map(|env| {
                    verifier
                        .verify(env, Method::Push, signed.now, &signed.keys)
                        .unwrap()
                })
                .collect()
        })
        .collect()
}

/// The workload's values (`BENCH_VALUES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Values {
    /// Every gauge a random walk in hundredths, every counter growing by up to 10^6 per
    /// point (busy byte counters): the hard case for compression (the default).
    Busy,
    /// A fleet's mix, as the agent's collectors see it: of the gauges, 40 % constant
    /// (sizes, up flags), 20 % handshake ages changing every 2 minutes, 40 % random walks;
    /// of the counters, 40 % idle (peers without traffic), 20 % growing by a few per
    /// point (errors, packets), 40 % busy.
    Fleet,
}

impl Values {
    pub(crate) fn from_env() -> Self {
        match std::env::var("BENCH_VALUES").as_deref() {
            Ok("fleet") => Self::Fleet,
            Ok("busy") | Err(_) => Self::Busy,
            Ok(other) => panic!("BENCH_VALUES: {other:?} is not busy or fleet"),
        }
    }
}

/// SplitMix64: a tiny deterministic generator for the workload's values.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for a workload.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every chunk row (`series_id, gen, data`) of a SQLite store, for [`distinct_samples`].
pub(crate) const SQLITE_CHUNKS: &str = "SELECT series_id, gen, data FROM chunks";
/// The same for the PostgreSQL store.
pub(crate) const PG_CHUNKS: &str = "SELECT series_id, gen, data FROM sentra_metrics.chunks";

/// The distinct samples stored in `rows` (chunk rows `series_id, gen, data`), as queries
/// see them: what the benches check after their clock.
#[allow(dead_code)] // not every bench that includes this module counts samples
pub(crate) fn distinct_samples(rows: Vec<(i64, i64, Vec<u8>)>) -> u64 {
    sentra_ingest::storage::samples_of_chunks(rows)
        .unwrap()
        .len() as u64
}
