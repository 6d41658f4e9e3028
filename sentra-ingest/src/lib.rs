//! The Sentra server pipeline.
//!
//! This crate will hold the ingest service (verified batch, replay and de-duplication against a
//! durable per-agent high-water mark, storage, status cache, subscribers), the SQLite storage
//! layer and the REST API.
#![forbid(unsafe_code)]
