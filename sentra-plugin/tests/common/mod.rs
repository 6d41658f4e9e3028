//! Shared helpers: compile the committed WAT plugins under ../plugins/wat.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use sentra_plugin::{Capabilities, Host, HostConfig, Manifest, Plugin};

pub fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

pub fn wat(name: &str) -> Vec<u8> {
    let path = plugins_dir().join("wat").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn manifest(name: &str, timeout: Duration) -> Manifest {
    Manifest::new(&name.replace('_', "-"), "0.1.0", Duration::from_secs(10))
        .expect("manifest")
        .with_timeout(timeout)
}

pub fn host(quarantine_after: u32) -> Host {
    let mut cfg = HostConfig::default();
    cfg.quarantine_after = quarantine_after;
    Host::new(cfg).expect("host")
}

pub fn load(host: &Host, name: &str, timeout: Duration, caps: Capabilities) -> Plugin {
    host.load(manifest(name, timeout).with_capabilities(caps), &wat(name))
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}
