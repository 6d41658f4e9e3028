//! Sentra wire and domain types, the protobuf codec and the HMAC-signed batch envelope.
//!
//! This crate is the shared vocabulary of every other Sentra crate. It has no I/O and no
//! async runtime: everything here is a pure function of its inputs (the only exception is
//! [`Nonce::random`], which asks the operating system for random bytes).
//!
//! * [`proto`] — the generated protobuf types of `proto/sentra/v1/sentra.proto`
//!   (`MetricBatch`, `SignedBatch`, `Ack`, …), compiled with a pure-Rust compiler so that
//!   building never needs `protoc`.
//! * Domain types with validating constructors: [`AgentId`], [`KeyId`], [`Seq`],
//!   [`UnixMillis`], [`Batch`], [`Sample`], [`MetricName`], [`Labels`], [`WgDevice`], …
//!   Conversion from wire types returns a specific [`Error`] and never panics.
//! * [`prescan`] — bounds what decoding a payload would allocate (repeated-field counts and
//!   decoded size) before prost allocates anything; every batch decode runs it first.
//! * The signed envelope ([`envelope`]): [`Signer`] and [`Verifier`] with a pluggable
//!   [`Keyring`] supporting several keys per agent with validity windows.
//!
//! # Example
//!
//! ```
//! use sentra_core::{
//!     AgentId, Batch, KeyId, MemoryKeyring, Method, Nonce, SecretKey, Seq, Signer,
//!     UnixMillis, Validity, Verifier,
//! };
//!
//! # fn main() -> Result<(), sentra_core::Error> {
//! let agent = AgentId::new("edge-01")?;
//! let secret = SecretKey::from_bytes([7; 32]);
//! let now = UnixMillis::from_millis(1_760_000_000_000);
//!
//! // Agent side: build, encode once, sign the exact bytes.
//! let batch = Batch::new(agent.clone(), Seq::new(1)?, now);
//! let signer = Signer::new(agent.clone(), KeyId::new(1), &secret);
//! let envelope = signer.sign_batch(&batch, now, Nonce::from_bytes([0; 16]));
//!
//! // Server side: verify against the keyring, then decode.
//! let mut keyring = MemoryKeyring::new();
//! keyring.insert(agent, KeyId::new(1), &secret, Validity::always());
//! let verified = Verifier::new().verify(&envelope, Method::Push, now, &keyring)?;
//! assert_eq!(verified.decode_batch()?, batch);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod batch;
pub mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod key;
pub mod prescan;
pub mod proto;

pub use batch::{
    Batch, Bucket, Histogram, IpPrefix, LabelName, Labels, MetricName, Sample, Value, WgDevice,
    WgPeer, WgPublicKey,
};
pub use envelope::{Method, Nonce, Signer, Verified, Verifier};
pub use error::Error;
pub use id::{AgentId, KeyId, Seq, UnixMillis};
pub use key::{AgentKey, Keyring, MemoryKeyring, SecretKey, Validity};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
