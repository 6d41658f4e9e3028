//! Cross-crate Sentra examples live in `examples/` of this package; run one with
//! `cargo run -p sentra-examples --example <name>`.
