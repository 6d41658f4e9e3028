//! Sentra wire and domain types.
#![forbid(unsafe_code)]
