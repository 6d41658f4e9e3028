//! gRPC ingest transport for Sentra.
//!
//! This crate will hold the tonic + rustls server that accepts any tower `Service` of signed
//! batches, the client with deadline/retry/concurrency layers, and the HMAC authentication,
//! rate limit, load shedding, size cap, timeout and metrics layers. It depends only on
//! `sentra-core` among sentra crates.
#![forbid(unsafe_code)]
