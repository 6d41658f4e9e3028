//! Alerting for Sentra.
//!
//! This crate will hold the alert rule model, a pure evaluator over metric samples, alert state
//! (pending, firing, resolved) and notifiers. It depends at most on `sentra-core`.
#![forbid(unsafe_code)]
