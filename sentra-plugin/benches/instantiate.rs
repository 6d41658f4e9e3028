//! Instantiate + collect benchmark (filled in below).
fn main() {}
