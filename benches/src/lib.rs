//! Cross-crate Sentra benchmarks live in `benches/` of this package; single-crate benchmarks
//! live in their crate. Run with `cargo bench -p sentra-benches`.
