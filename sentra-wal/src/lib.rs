//! Append-only segmented write-ahead log.
//!
//! This crate will hold a sans-IO record format, a group-committing writer thread that
//! acknowledges appends only after `fdatasync`, recovery that always opens (torn tails
//! truncated, damaged segments reported as loss ranges), a persisted shipped-cursor and a
//! disk cap. It depends on no other sentra crate.
#![forbid(unsafe_code)]
