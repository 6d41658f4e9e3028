//! Compiles `proto/sentra/v1/sentra.proto` with `protox` (pure Rust), so building this crate
//! never needs `protoc`. The encoded descriptor set is also written out, so that
//! `sentra-transport` can generate its gRPC service code from the same schema.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/sentra/v1/sentra.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("sentra_v1_descriptor.bin"), fds.encode_to_vec())?;
    prost_build::Config::new()
        .bytes([".sentra.v1.SignedBatch.payload"])
        .compile_fds(fds)?;
    Ok(())
}
