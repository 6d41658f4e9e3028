//! WireGuard over raw generic netlink.
//!
//! This crate will hold a typed WireGuard model (keys with redacted `Debug` and zeroize,
//! devices, peers, normalised allowed-IP prefixes), a sans-IO netlink layer (dump
//! coalescing, `NLM_F_DUMP_INTR` handling, SET messages chunked below 64 KiB) and an async
//! shell on tokio with a diff engine that applies desired state with the minimal number of
//! messages. It depends on no other sentra crate.
#![forbid(unsafe_code)]
