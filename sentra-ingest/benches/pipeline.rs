//! Pipeline benchmark (placeholder until written).
fn main() {}
