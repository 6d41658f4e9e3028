//! Generated protobuf types for `sentra.v1` (see `proto/sentra/v1/sentra.proto`).
//!
//! These are the wire types; prefer the validated domain types at the crate root
//! ([`Batch`](crate::Batch) and friends) in application code.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::use_self,
    missing_debug_implementations
)]
#![allow(
    clippy::exhaustive_structs,
    clippy::exhaustive_enums,
    reason = "prost-generated protobuf messages: the schema evolves by field numbers, and \
              users build wire messages with struct literals and `..Default::default()`"
)]

include!(concat!(env!("OUT_DIR"), "/sentra.v1.rs"));

/// The encoded `google.protobuf.FileDescriptorSet` of the `sentra.v1` schema, for code
/// generators (sentra-transport builds its gRPC service from it) and reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sentra_v1_descriptor.bin"));
