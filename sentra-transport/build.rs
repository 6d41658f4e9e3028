//! Generates the tonic service code for `sentra.v1.Ingest` from the descriptor set that
//! `sentra-core` compiled with `protox`, so building never needs `protoc`. Message types are
//! not generated here: `extern_path` points them at `sentra_core::proto`, so the client, the
//! server and sentra-core share one set of types.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = prost_types::FileDescriptorSet::decode(sentra_core::proto::FILE_DESCRIPTOR_SET)?;
    // Only the halves the enabled features use: the `client` feature needs tonic's channel
    // for the generated client, `server` its server traits.
    let client = std::env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure()
        .build_client(client)
        .build_server(server)
        .build_transport(false)
        .extern_path(".sentra.v1", "::sentra_core::proto")
        // Decode errors become INVALID_ARGUMENT (tonic-prost says INTERNAL), see `codec`.
        .codec_path("crate::codec::SentraCodec")
        .compile_fds(fds)?;
    Ok(())
}
