//! Measures executions per second of the `wal_recovery` fuzz target's function
//! ([`sentra_wal::fuzz_recovery`]) over the committed corpus, without cargo-fuzz (which needs
//! nightly). Run with `cargo run --release -p sentra-wal --example fuzz_rate [seconds]`.

use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wal_recovery");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus at {}", dir.display());
    // Slowest inputs first (one run each), then the rate.
    let mut slow: Vec<(Duration, usize)> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let t = Instant::now();
            sentra_wal::fuzz_recovery(input);
            (t.elapsed(), i)
        })
        .collect();
    slow.sort_unstable_by(|a, b| b.cmp(a));
    for (t, i) in slow.iter().take(3) {
        println!("input {i}: {t:?}");
    }
    // Pseudo-random mutations of the corpus (xorshift), as a fuzzer would make.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = inputs.clone();
    for input in &base {
        for _ in 0..200 {
            let mut m = input.clone();
            if m.is_empty() {
                continue;
            }
            for _ in 0..1 + rnd() % 8 {
                let at = (rnd() % m.len() as u64) as usize;
                m[at] ^= 1 << (rnd() % 8);
            }
            inputs.push(m);
        }
    }
    let mut worst = (Duration::ZERO, 0usize);
    for (i, input) in inputs.iter().enumerate() {
        let t = Instant::now();
        sentra_wal::fuzz_recovery(input);
        worst = worst.max((t.elapsed(), i));
    }
    println!(
        "slowest of {} inputs: {:?} (#{})",
        inputs.len(),
        worst.0,
        worst.1
    );
    if let Ok(p) = std::env::var("FUZZ_RATE_DUMP") {
        std::fs::write(p, &inputs[worst.1]).expect("dump");
    }
    // libFuzzer's default input size filled with zeros: 2 048 empty files (the kind of input a
    // fuzzer produces constantly).
    let zeros = vec![0u8; 4096];
    let t = Instant::now();
    let mut k = 0u32;
    while t.elapsed() < Duration::from_secs_f64(secs / 3.0) || k == 0 {
        sentra_wal::fuzz_recovery(&zeros);
        k += 1;
    }
    println!(
        "4096 zero bytes: {:.0} exec/s",
        f64::from(k) / t.elapsed().as_secs_f64()
    );
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for input in &inputs {
            sentra_wal::fuzz_recovery(input);
            n += 1;
        }
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "{n} executions over {} corpus inputs in {took:.2} s: {:.0} exec/s",
        inputs.len(),
        n as f64 / took
    );
}
