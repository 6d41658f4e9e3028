#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub mod batch;
mod duration;
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
pub use duration::parse_duration;
pub use envelope::{Method, Nonce, Signer, Verified, Verifier};
pub use error::Error;
pub use id::{AgentId, KeyId, Seq, UnixMillis};
pub use key::{AgentKey, Keyring, MemoryKeyring, SecretKey, Validity};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
