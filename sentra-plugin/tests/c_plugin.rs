//! The C plugins, built with Debian's clang/lld/wasi-libc: `plugins/c/netsnmp.c` parsing a
//! captured `/proc/net/snmp` and the live one through a read-only directory grant, and
//! `plugins/c/counters.c` exporting an operator's counters file.
//!
//! Modules come from `$SENTRA_PLUGIN_WASM_DIR/<name>.wasm` (set by
//! `scripts/check-plugins`, which builds it) or is built here when `clang` is installed.
//! Without either the tests print why and pass, unless `SENTRA_REQUIRE_C_PLUGINS=1`
//! (set by `scripts/check-plugins`) makes the absence a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sentra_core::Value;
use sentra_plugin::{Capabilities, Error, FailureKind, Manifest};

const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 2 64 988266 7
Icmp: InMsgs InErrors
Icmp: 2 0
IcmpMsg: InType3
IcmpMsg: 2
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens CurrEstab
Tcp: 1 200 120000 -1 9693 5552 12
Udp: InDatagrams NoPorts
Udp: 337 0
";

fn wasm() -> Option<Vec<u8>> {
    static WASM: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    WASM.get_or_init(|| load_or_build("netsnmp")).clone()
}

fn counters_wasm() -> Option<Vec<u8>> {
    static WASM: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    WASM.get_or_init(|| load_or_build("counters")).clone()
}

fn load_or_build(name: &str) -> Option<Vec<u8>> {
    let require = std::env::var_os("SENTRA_REQUIRE_C_PLUGINS").is_some_and(|v| v == "1");
    if let Some(dir) = std::env::var_os("SENTRA_PLUGIN_WASM_DIR") {
        let p = PathBuf::from(dir).join(format!("{name}.wasm"));
        return Some(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }
    let out = std::env::temp_dir().join(format!("sentra-{name}-{}.wasm", std::process::id()));
    let src = common::plugins_dir().join(format!("c/{name}.c"));
    match build(&src, &out) {
        Ok(()) => {
            let bytes = std::fs::read(&out).unwrap();
            let _ = std::fs::remove_file(&out);
            Some(bytes)
        }
        Err(why) if !require => {
            eprintln!(
                "SKIPPED: cannot build the C plugin ({why}); scripts/check-plugins installs clang"
            );
            None
        }
        Err(why) => panic!("SENTRA_REQUIRE_C_PLUGINS=1 but the C plugin cannot be built: {why}"),
    }
}

fn build(src: &Path, out: &Path) -> Result<(), String> {
    let o = Command::new("clang")
        .args([
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-O2",
            "-mexec-model=reactor",
        ])
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .map_err(|e| format!("clang: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn manifest(caps: Capabilities) -> Manifest {
    Manifest::new("netsnmp", "0.1.0", Duration::from_secs(15))
        .unwrap()
        .with_timeout(Duration::from_secs(1))
        .with_capabilities(caps)
}

fn value(c: &sentra_plugin::Collection, name: &str) -> Option<Value> {
    c.samples
        .iter()
        .find(|s| s.name.as_str() == name)
        .map(|s| s.value.clone())
}

#[test]
fn netsnmp_parses_a_granted_snmp_file() {
    let Some(wasm) = wasm() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snmp"), SNMP).unwrap();
    let host = common::host(5);
    let p = host
        .load(
            manifest(Capabilities::default().with_dir("/proc/net", dir.path())),
            &wasm,
        )
        .unwrap();
    assert!(
        p.imports().iter().all(|i| i.starts_with("sentra_v1.")),
        "{:?}",
        p.imports()
    );
    let c = p.collect().unwrap();
    assert_eq!(c.samples.len(), 16, "{:#?}", c.samples);
    assert_eq!(
        value(&c, "node_netstat_Ip_Forwarding"),
        Some(Value::Gauge(2.0))
    );
    assert_eq!(
        value(&c, "node_netstat_Ip_InReceives"),
        Some(Value::Counter(988_266))
    );
    assert_eq!(
        value(&c, "node_netstat_Ip_InHdrErrors"),
        Some(Value::Counter(7))
    );
    assert_eq!(
        value(&c, "node_netstat_IcmpMsg_InType3"),
        Some(Value::Counter(2))
    );
    assert_eq!(
        value(&c, "node_netstat_Tcp_MaxConn"),
        Some(Value::Gauge(-1.0))
    );
    assert_eq!(
        value(&c, "node_netstat_Tcp_ActiveOpens"),
        Some(Value::Counter(9693))
    );
    assert_eq!(
        value(&c, "node_netstat_Tcp_CurrEstab"),
        Some(Value::Gauge(12.0))
    );
    assert_eq!(
        value(&c, "node_netstat_Udp_NoPorts"),
        Some(Value::Counter(0))
    );
}

#[test]
fn netsnmp_reads_the_live_proc_net_snmp() {
    let Some(wasm) = wasm() else { return };
    if !Path::new("/proc/net/snmp").exists() {
        eprintln!("SKIPPED: no /proc/net/snmp on this system");
        return;
    }
    let host = common::host(5);
    let caps = Capabilities::default().with_dir("/proc/net", "/proc/net");
    let p = host.load(manifest(caps), &wasm).unwrap();
    let c = p.collect().unwrap();
    assert!(c.samples.len() > 20, "{} samples", c.samples.len());
    assert!(value(&c, "node_netstat_Tcp_CurrEstab").is_some());
    assert!(matches!(
        value(&c, "node_netstat_Ip_InReceives"),
        Some(Value::Counter(_))
    ));
    println!(
        "netsnmp on live /proc/net/snmp: {} samples in {:?}",
        c.samples.len(),
        c.elapsed
    );
}

#[test]
fn netsnmp_without_the_grant_fails_with_its_log_line() {
    let Some(wasm) = wasm() else { return };
    let host = common::host(5);
    let p = host.load(manifest(Capabilities::default()), &wasm).unwrap();
    let err = p.collect().unwrap_err();
    assert_eq!(err.failure_kind(), Some(FailureKind::Status), "{err}");
    let Error::Run { detail, .. } = &err else {
        unreachable!()
    };
    assert_eq!(
        detail,
        "collect returned 1; last log: snmp file not granted"
    );
}

#[test]
fn counters_exports_a_granted_counters_file() {
    let Some(wasm) = counters_wasm() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("counters"),
        "# written by a cron job\n\
         jobs_done_total 42 queue=default\n\
         \n\
         temperature_celsius -3.5 room=cellar site=a   # a comment\n\
         ratio 0.25\n",
    )
    .unwrap();
    let host = common::host(5);
    let m = Manifest::new("counters", "0.1.0", Duration::from_secs(15))
        .unwrap()
        .with_capabilities(Capabilities::default().with_dir("/data", dir.path()));
    let p = host.load(m, &wasm).unwrap();
    let c = p.collect().unwrap();
    assert_eq!(c.samples.len(), 3, "{:#?}", c.samples);
    assert_eq!(c.samples[0].name.as_str(), "jobs_done_total");
    assert_eq!(c.samples[0].value, Value::Counter(42));
    assert_eq!(c.samples[0].labels.get("queue"), Some("default"));
    assert_eq!(c.samples[1].value, Value::Gauge(-3.5));
    assert_eq!(c.samples[1].labels.get("room"), Some("cellar"));
    assert_eq!(c.samples[1].labels.get("site"), Some("a"));
    assert_eq!(c.samples[2].value, Value::Gauge(0.25));

    // A bad metric name is rejected by the host, failing the run with the reason.
    std::fs::write(dir.path().join("counters"), "9bad 1\n").unwrap();
    let err = p.collect().unwrap_err();
    assert_eq!(err.failure_kind(), Some(FailureKind::Output), "{err}");
    assert!(err.to_string().contains("metric name"), "{err}");
}
