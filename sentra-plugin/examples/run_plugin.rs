//! Loads a small inline plugin (WAT) with a read-only directory grant, runs it once and
//! prints what it emitted: `cargo run -p sentra-plugin --example run_plugin`.

use std::time::Duration;

use sentra_plugin::{Capabilities, Host, HostConfig, Manifest};

const PLUGIN: &str = r#"
(module
  (import "sentra_v1" "read_file" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "sentra_v1" "emit_gauge" (func $gauge (param i32 i32 i32 i32 f64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "/data/value")
  (data (i32.const 16) "file_bytes")
  (data (i32.const 32) "file=value")
  (func (export "collect") (result i32)
    (local $n i32)
    (local.set $n (call $read (i32.const 0) (i32.const 11) (i32.const 1024) (i32.const 1024)))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (return (i32.const 1))))
    (call $gauge (i32.const 16) (i32.const 10) (i32.const 32) (i32.const 10)
      (f64.convert_i32_s (local.get $n)))
    (i32.const 0)))
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("value"), "42\n")?;
    let host = Host::new(HostConfig::default())?;
    let manifest = Manifest::new("example", "0.1.0", Duration::from_secs(10))?
        .with_timeout(Duration::from_millis(100))
        .with_capabilities(Capabilities::default().with_dir("/data", dir.path()));
    let plugin = host.load(manifest, &wat::parse_str(PLUGIN)?)?;
    let c = plugin.collect()?;
    for s in &c.samples {
        println!("{} {:?} {:?}", s.name, s.labels, s.value);
    }
    assert_eq!(c.samples.len(), 1);
    println!("ran in {:?}; stats {:?}", c.elapsed, plugin.stats());
    Ok(())
}
