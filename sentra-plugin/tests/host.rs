//! The plugin host with real wasmtime and real plugin modules: the ABI, manifests,
//! interface checks, grants.

mod common;

use std::time::Duration;

use common::{host, load, manifest, wat};
use sentra_core::Value;
use sentra_plugin::{Capabilities, DirGrant, Error, LogLevel, Manifest};

const T: Duration = Duration::from_millis(500);

#[test]
fn good_plugin_emits_samples_labels_and_logs() {
    let host = host(5);
    let p = load(&host, "uptime", T, Capabilities::default());
    assert_eq!(
        p.imports(),
        [
            "sentra_v1.emit_gauge",
            "sentra_v1.emit_counter",
            "sentra_v1.log",
            "sentra_v1.now_ms"
        ]
    );
    for _ in 0..3 {
        let c = p.collect().expect("collect");
        assert_eq!(c.samples.len(), 2);
        let up = &c.samples[0];
        assert_eq!(up.name.as_str(), "plugin_up");
        assert_eq!(up.value, Value::Gauge(1.0));
        assert_eq!(up.labels.get("source"), Some("wat"));
        assert_eq!(up.labels.get("kind"), Some("example"));
        let runs = &c.samples[1];
        assert_eq!(runs.name.as_str(), "plugin_runs_total");
        let Value::Counter(secs) = runs.value else {
            panic!("counter expected, got {:?}", runs.value)
        };
        assert!(secs > 1_700_000_000, "now_ms/1000 = {secs}");
        assert_eq!(c.logs.len(), 1);
        assert_eq!(c.logs[0].level, LogLevel::Info);
        assert_eq!(c.logs[0].message, "collected");
    }
    let s = p.stats();
    assert_eq!(
        (s.runs, s.successes, s.samples, s.failures_total()),
        (3, 3, 6, 0)
    );
    assert!(!s.quarantined);
}

#[test]
fn interface_violations_are_refused_at_load() {
    let host = host(5);
    let m = || manifest("bad", T);
    let cases = [
        (
            r#"(module (memory (export "memory") 1))"#,
            "no exported function collect",
        ),
        (
            r#"(module (func (export "collect") (result i32) (i32.const 0)))"#,
            "no exported memory",
        ),
        (
            r#"(module (memory (export "memory") 1) (func (export "collect") (param i32) (result i32) (i32.const 0)))"#,
            "must have type () -> i32",
        ),
        (
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1) (func (export "collect") (result i32) (i32.const 0)))"#,
            "import wasi_snapshot_preview1.fd_write is not part of the plugin interface",
        ),
        (
            r#"(module (import "sentra_v1" "log" (func (param i64)))
                (memory (export "memory") 1) (func (export "collect") (result i32) (i32.const 0)))"#,
            "sentra_v1",
        ),
    ];
    for (src, want) in cases {
        let err = host.load(m(), &wat::parse_str(src).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Interface { .. }), "{err}");
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
    }
    let err = host.load(m(), b"\0asm\x01\0\0\0garbage").unwrap_err();
    assert!(matches!(err, Error::Compile { .. }), "{err}");
    // externref needs the GC feature, compiled out of this host (a pooling CVE class).
    let err = host
        .load(
            m(),
            &wat::parse_str(
                r#"(module (global (mut externref) (ref.null extern)) (memory (export "memory") 1)
                   (func (export "collect") (result i32) (i32.const 0)))"#,
            )
            .unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Compile { .. }), "{err}");
}

#[test]
fn manifest_parses_and_reports_clear_errors() {
    let m = Manifest::parse(
        r#"
name = "netsnmp"
version = "0.1.0"
schedule = "15s"
timeout = "200ms"
[capabilities]
dirs = [{ guest = "/proc/net", host = "/proc/net" }]
env = ["NETSNMP_PATH"]
"#,
        "netsnmp.toml",
    )
    .unwrap();
    assert_eq!(m.schedule, Duration::from_secs(15));
    assert_eq!(m.timeout, Duration::from_millis(200));
    assert_eq!(m.module.to_str(), Some("netsnmp.wasm"));
    assert_eq!(
        m.capabilities.dirs,
        [DirGrant::new("/proc/net", "/proc/net")]
    );
    assert_eq!(m.capabilities.env, ["NETSNMP_PATH"]);

    // Nothing granted by default.
    let m = Manifest::parse("name = \"a\"\nversion = \"1\"\nschedule = \"1m\"", "a.toml").unwrap();
    assert_eq!(m.capabilities, Capabilities::default());

    let bad = [
        (
            "name = \"A b\"\nversion = \"1\"\nschedule = \"1m\"",
            "name = \"A b\"",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"soon\"",
            "schedule = \"soon\"",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"10ms\"",
            "at least",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"1s\"\ntimeout = \"2s\"",
            "at most the schedule",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"1m\"\nsecret = 1",
            "unknown field `secret`",
        ),
        ("name = \"a\"\nschedule = \"1m\"", "missing field `version`"),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"1m\"\n[capabilities]\ndirs = [{ guest = \"/x/../y\", host = \"/y\" }]",
            "capabilities.dirs[0].guest",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"1m\"\n[capabilities]\ndirs = [{ guest = \"/x\", host = \"rel\" }]",
            "capabilities.dirs[0].host",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nschedule = \"1m\"\n[capabilities]\nenv = [\"A=B\"]",
            "capabilities.env[0]",
        ),
    ];
    for (text, want) in bad {
        let err = Manifest::parse(text, "m.toml").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Manifest { .. }), "{msg}");
        assert!(msg.starts_with("plugin manifest m.toml: "), "{msg}");
        assert!(msg.contains(want), "{msg} lacks {want:?}");
    }
}

#[test]
fn missing_granted_dir_is_a_capability_error() {
    let host = host(5);
    let caps = Capabilities::default().with_dir("/data", "/nonexistent/sentra-plugin-test");
    let err = host
        .load(
            manifest("uptime", T).with_capabilities(caps),
            &wat("uptime"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Capability { .. }), "{err}");
    assert!(err.to_string().contains("dir:/data"), "{err}");
}

#[test]
fn manifest_file_resolves_module_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uptime.wasm"), wat("uptime")).unwrap();
    let path = dir.path().join("uptime.toml");
    std::fs::write(
        &path,
        "name = \"uptime\"\nversion = \"0.1.0\"\nschedule = \"10s\"\n",
    )
    .unwrap();
    let m = Manifest::from_file(&path).unwrap();
    assert_eq!(m.module, dir.path().join("uptime.wasm"));
    let host = host(5);
    let p = host.load_file(m).unwrap();
    assert_eq!(p.collect().unwrap().samples.len(), 2);
}

#[test]
fn check_runs_once_and_signatures_guard_the_module_bytes() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let host = host(5);
    let bytes = wat("uptime");
    let (p, c) = host.check(manifest("uptime", T), &bytes).unwrap();
    assert_eq!((c.samples.len(), p.stats().runs), (2, 1));

    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let public = key.public_key().as_ref().to_vec();
    let sig = key.sign(&bytes);
    sentra_plugin::verify_module("uptime", &bytes, sig.as_ref(), &public).unwrap();

    let mut tampered = bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let err = sentra_plugin::verify_module("uptime", &tampered, sig.as_ref(), &public).unwrap_err();
    assert!(matches!(err, Error::Signature { .. }), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    let other =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let err =
        sentra_plugin::verify_module("uptime", &bytes, sig.as_ref(), other.public_key().as_ref())
            .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let err =
        sentra_plugin::verify_module("uptime", &bytes, &sig.as_ref()[..10], &public).unwrap_err();
    assert!(
        err.to_string()
            .contains("signature is 10 bytes, expected 64"),
        "{err}"
    );
}
