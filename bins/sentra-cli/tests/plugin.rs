//! `sentra plugin check|install|list|inspect|remove` as a process, with the committed WAT
//! plugins of `plugins/wat` in the real sandbox, real Ed25519 keys (ring) and hostile input:
//! bad signature, wrong key, truncated module, runaway and misdeclared modules, manifests
//! granting what the operator did not allow or escaping the plugin directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

fn sentra() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sentra"));
    c.env_remove("SENTRA_AGENT_PLUGINS_DIR");
    c
}

fn run(args: &[&str], extra: &[&Path]) -> Output {
    sentra()
        .args(args)
        .args(extra)
        .output()
        .expect("run sentra")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout.clone()).expect("utf8")
}

fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wat(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../plugins/wat/{name}.wat"));
    wat::parse_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A source directory with `<name>.wasm` and `plugin.toml`.
fn source(root: &Path, name: &str, module: &[u8], extra: &str) -> PathBuf {
    let d = root.join(format!("src-{name}"));
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join(format!("{name}.wasm")), module).expect("module");
    let m = d.join("plugin.toml");
    std::fs::write(
        &m,
        format!("name = \"{name}\"\nversion = \"1.2.3\"\nschedule = \"10s\"\n{extra}"),
    )
    .expect("manifest");
    m
}

struct Keys {
    pair: Ed25519KeyPair,
}

impl Keys {
    fn new() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        Self {
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"),
        }
    }
    /// Writes the public key (base64) and a signature over `module` (raw bytes).
    fn files(&self, root: &Path, tag: &str, module: &[u8]) -> (PathBuf, PathBuf) {
        let pk = root.join(format!("{tag}.pub"));
        let sig = root.join(format!("{tag}.sig"));
        std::fs::write(
            &pk,
            base64::engine::general_purpose::STANDARD.encode(self.pair.public_key().as_ref()),
        )
        .expect("pub");
        std::fs::write(&sig, self.pair.sign(module).as_ref()).expect("sig");
        (pk, sig)
    }
}

#[test]
fn check_runs_a_plugin_once_and_prints_what_it_emitted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = source(tmp.path(), "uptime", &wat("uptime"), "");
    let text = ok(&run(&["plugin", "check"], &[&m]));
    assert!(text.contains("plugin uptime 1.2.3: ok"), "{text}");
    assert!(
        text.contains("plugin_up") && text.contains("source=\"wat\""),
        "{text}"
    );
    assert!(text.contains("plugin_runs_total"), "{text}");
    assert!(text.contains("log info: collected"), "{text}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&run(&["plugin", "check", "--json"], &[&m]))).expect("json");
    assert_eq!(j["ok"], true);
    assert_eq!(j["samples"].as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j["samples"][0]["labels"]["kind"], "example", "{j}");
    assert_eq!(j["samples"][0]["value"]["gauge"], 1.0, "{j}");
}

#[test]
fn check_refuses_broken_and_runaway_plugins_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = wat("uptime");
    let truncated = source(tmp.path(), "truncated", &good[..good.len() - 7], "");
    let e = fails(&run(&["plugin", "check"], &[&truncated]));
    assert!(e.contains("does not compile"), "{e}");
    let looping = source(tmp.path(), "loop", &wat("loop"), "timeout = \"100ms\"\n");
    let started = std::time::Instant::now();
    let e = fails(&run(&["plugin", "check"], &[&looping]));
    assert!(e.contains("timeout"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let bomb = source(tmp.path(), "bomb", &wat("memory_bomb"), "");
    let e = fails(&run(&["plugin", "check"], &[&bomb]));
    assert!(e.contains("resource") || e.contains("limit"), "{e}");
    let unknown = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
           (memory (export "memory") 1) (func (export "collect") (result i32) (i32.const 0)))"#,
    )
    .expect("wat");
    let m = source(tmp.path(), "wasi", &unknown, "");
    let e = fails(&run(&["plugin", "check"], &[&m]));
    assert!(e.contains("interface"), "{e}");
    let bad = source(tmp.path(), "badschedule", &good, "");
    std::fs::write(
        &bad,
        "name = \"badschedule\"\nversion = \"1\"\nschedule = \"10ms\"\n",
    )
    .expect("w");
    let e = fails(&run(&["plugin", "check"], &[&bad]));
    assert!(e.contains("schedule"), "{e}");
}

#[test]
fn install_list_inspect_remove_with_a_verified_signature() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("plugins");
    let module = wat("uptime");
    let m = source(tmp.path(), "uptime", &module, "");
    let keys = Keys::new();
    let (pk, sig) = keys.files(tmp.path(), "good", &module);
    let d = ["--dir", dir.to_str().expect("utf8")];

    let text = ok(&run(
        &[
            "plugin",
            "install",
            d[0],
            d[1],
            "--signature",
            sig.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
        ],
        &[&m],
    ));
    assert!(
        text.contains("installed plugin uptime 1.2.3") && text.contains("signature verified"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(dir.join("uptime/uptime.wasm")).expect("module"),
        module
    );
    assert!(dir.join("uptime/manifest.toml").is_file());
    assert_eq!(
        std::fs::read(dir.join("uptime/module.sig")).expect("sig"),
        std::fs::read(&sig).unwrap()
    );

    // Installing again needs --force.
    let e = fails(&run(&["plugin", "install", d[0], d[1]], &[&m]));
    assert!(e.contains("already installed"), "{e}");
    ok(&run(&["plugin", "install", d[0], d[1], "--force"], &[&m]));
    assert!(
        !dir.join("uptime/module.sig").exists(),
        "replaced by the unsigned install"
    );

    let text = ok(&run(&["plugin", "list", d[0], d[1]], &[]));
    assert!(
        text.contains("NAME") && text.contains("uptime") && text.contains("0 dirs, 0 env"),
        "{text}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&run(&["plugin", "list", "--json", d[0], d[1]], &[])))
            .expect("json");
    assert_eq!(j[0]["name"], "uptime");
    assert_eq!(j[0]["valid"], true);

    let text = ok(&run(&["plugin", "inspect", "uptime", d[0], d[1]], &[]));
    let sha: String = ring::digest::digest(&ring::digest::SHA256, &module)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(text.contains(&sha), "{text}");
    assert!(
        text.contains("grants:    none") && text.contains("imports:   sentra_v1.emit_gauge"),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&run(
        &["plugin", "inspect", "uptime", "--json", d[0], d[1]],
        &[],
    )))
    .expect("json");
    assert_eq!(j["sha256"], sha.as_str());
    assert_eq!(j["loads"], true);

    // A damaged install shows as invalid in the list, and cannot be inspected quietly.
    std::fs::write(dir.join("uptime/manifest.toml"), "name = \"other\"\n").expect("w");
    let text = ok(&run(&["plugin", "list", d[0], d[1]], &[]));
    assert!(text.contains("invalid"), "{text}");
    ok(&run(&["plugin", "install", d[0], d[1], "--force"], &[&m]));

    let e = fails(&run(&["plugin", "remove", "../etc", d[0], d[1]], &[]));
    assert!(e.contains("not a plugin name"), "{e}");
    let e = fails(&run(&["plugin", "remove", "nothere", d[0], d[1]], &[]));
    assert!(e.contains("not installed"), "{e}");
    let text = ok(&run(&["plugin", "remove", "uptime", d[0], d[1]], &[]));
    assert!(text.contains("removed plugin uptime"), "{text}");
    assert!(!dir.join("uptime").exists());
    let text = ok(&run(&["plugin", "list", d[0], d[1]], &[]));
    assert!(text.contains("no plugins installed"), "{text}");
}

#[test]
fn install_refuses_hostile_input_before_anything_is_installed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("plugins");
    let d = ["--dir", dir.to_str().expect("utf8")];
    let module = wat("uptime");
    let m = source(tmp.path(), "uptime", &module, "");
    let keys = Keys::new();
    let nothing_installed = || {
        assert!(
            !dir.join("uptime").exists() && !dir.join("grants").exists(),
            "nothing installed"
        );
    };
    let install = |extra: &[&str], manifest: &Path| {
        let mut args = vec!["plugin", "install", d[0], d[1]];
        args.extend_from_slice(extra);
        run(&args, &[manifest])
    };

    // Bad signature: one bit flipped.
    let (pk, sig) = keys.files(tmp.path(), "flip", &module);
    let mut s = std::fs::read(&sig).unwrap();
    s[10] ^= 1;
    std::fs::write(&sig, &s).unwrap();
    let e = fails(&install(
        &[
            "--signature",
            sig.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
        ],
        &m,
    ));
    assert!(e.contains("signature does not match"), "{e}");
    nothing_installed();

    // Wrong key: signed by another key pair.
    let (_, sig) = Keys::new().files(tmp.path(), "other", &module);
    let e = fails(&install(
        &[
            "--signature",
            sig.to_str().unwrap(),
            "--public-key",
            pk.to_str().unwrap(),
        ],
        &m,
    ));
    assert!(e.contains("signature does not match"), "{e}");
    nothing_installed();

    // A signature over other bytes than the module (the module was changed after signing).
    let (pk2, sig2) = keys.files(tmp.path(), "stale", &wat("trap"));
    let e = fails(&install(
        &[
            "--signature",
            sig2.to_str().unwrap(),
            "--public-key",
            pk2.to_str().unwrap(),
        ],
        &m,
    ));
    assert!(e.contains("signature does not match"), "{e}");
    nothing_installed();

    // Malformed key / signature files, and a signature without a key.
    std::fs::write(tmp.path().join("short.pub"), "AAAA").unwrap();
    let short = tmp.path().join("short.pub");
    let e = fails(&install(
        &[
            "--signature",
            sig.to_str().unwrap(),
            "--public-key",
            short.to_str().unwrap(),
        ],
        &m,
    ));
    assert!(e.contains("public key") && e.contains("expected 32"), "{e}");
    let e = fails(&install(&["--signature", sig.to_str().unwrap()], &m));
    assert!(e.contains("--public-key"), "{e}");
    nothing_installed();

    // Truncated module, even correctly signed: refused at load.
    let truncated = &module[..module.len() / 2];
    let tm = source(tmp.path(), "uptime", truncated, "");
    let (pk3, sig3) = keys.files(tmp.path(), "trunc", truncated);
    let e = fails(&install(
        &[
            "--signature",
            sig3.to_str().unwrap(),
            "--public-key",
            pk3.to_str().unwrap(),
        ],
        &tm,
    ));
    assert!(e.contains("does not compile"), "{e}");
    nothing_installed();

    // A plugin that fails its trial run.
    let trap = source(tmp.path(), "trapper", &wat("trap"), "");
    let e = fails(&install(&[], &trap));
    assert!(e.contains("trial run failed"), "{e}");
    assert!(!dir.join("trapper").exists());

    // Grants: refused without --allow-capabilities, listed in the error.
    let granted_dir = tmp.path().join("granted");
    std::fs::create_dir(&granted_dir).unwrap();
    let grants = source(
        tmp.path(),
        "grants",
        &module,
        &format!(
            "[capabilities]\ndirs = [{{ guest = \"/data\", host = {:?} }}]\nenv = [\"SENTRA_SECRET\"]\n",
            granted_dir.display().to_string()
        ),
    );
    let e = fails(&install(&[], &grants));
    assert!(
        e.contains("--allow-capabilities")
            && e.contains("env SENTRA_SECRET")
            && e.contains("dir /data"),
        "{e}"
    );
    nothing_installed();
    // Grants the manifest format forbids: not even --allow-capabilities installs them.
    for (tag, caps) in [
        (
            "dotdot",
            "[capabilities]\ndirs = [{ guest = \"/data/../etc\", host = \"/etc\" }]\n",
        ),
        (
            "relhost",
            "[capabilities]\ndirs = [{ guest = \"/data\", host = \"etc\" }]\n",
        ),
        ("badenv", "[capabilities]\nenv = [\"PATH=/bin\"]\n"),
        ("unknown", "[capabilities]\nnetwork = true\n"),
    ] {
        let g = source(tmp.path(), "grants", &module, caps);
        let e = fails(&install(&["--allow-capabilities"], &g));
        assert!(e.contains("manifest"), "{tag}: {e}");
        nothing_installed();
    }
    // A granted directory that does not exist cannot be provided.
    let g = source(
        tmp.path(),
        "grants",
        &module,
        "[capabilities]\ndirs = [{ guest = \"/data\", host = \"/nonexistent/sentra\" }]\n",
    );
    let e = fails(&install(&["--allow-capabilities"], &g));
    assert!(e.contains("capability"), "{e}");
    nothing_installed();
    // The module path must be a plain file next to the manifest.
    let esc = source(
        tmp.path(),
        "uptime",
        &module,
        "module = \"../src-uptime/uptime.wasm\"\n",
    );
    let e = fails(&install(&[], &esc));
    assert!(e.contains("plain file name"), "{e}");
    nothing_installed();
    let m = source(tmp.path(), "uptime", &module, "");

    // With consent, the granted plugin installs (and the good one too).
    let grants = source(
        tmp.path(),
        "grants",
        &module,
        &format!(
            "[capabilities]\ndirs = [{{ guest = \"/data\", host = {:?} }}]\nenv = [\"SENTRA_SECRET\"]\n",
            granted_dir.display().to_string()
        ),
    );
    ok(&install(&["--allow-capabilities"], &grants));
    ok(&install(&[], &m));
    let text = ok(&run(&["plugin", "inspect", "grants", d[0], d[1]], &[]));
    assert!(
        text.contains("grant dir: /data") && text.contains("grant env: SENTRA_SECRET"),
        "{text}"
    );
}
