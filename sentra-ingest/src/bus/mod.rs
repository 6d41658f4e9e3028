//! Message buses between ingest servers and storage workers (scale-out).
//!
//! [`jetstream`]: NATS JetStream. An ingest server verifies a push and publishes it
//! ([`jetstream::BusPublisher`]); storage workers ([`jetstream::BusWorker`]) feed what they
//! pull into an [`Ingest`](crate::Ingest) on the shared (PostgreSQL) store, which makes the
//! replay decision against the durable high-water mark there.

pub mod jetstream;
