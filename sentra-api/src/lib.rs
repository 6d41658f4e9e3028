//! The Sentra REST API.
//!
//! This crate will hold the axum router served by `sentra-server`: JWT authentication with
//! admin and viewer roles, users with argon2id passwords, agent enrolment through single-use
//! bootstrap tokens, key rotation and revocation (a database-backed `sentra_core::Keyring`),
//! status and metric query endpoints over `sentra-ingest`, the audit log, health, readiness,
//! an OpenAPI document, a live status stream and Prometheus exposition.
//!
//! It is a separate crate from `sentra-ingest` so that a user embedding the ingest pipeline
//! does not pull in an HTTP framework, JWT and password hashing.
#![forbid(unsafe_code)]
