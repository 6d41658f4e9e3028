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

/// One test's world: a temporary directory, the plugins directory inside it, and
/// `sentra plugin …` run against that directory.
struct Harness {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Harness {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("plugins");
        Self { tmp, dir }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A source directory with `<name>.wasm` and `plugin.toml` (`extra` appended to the
    /// manifest); the manifest's path.
    fn source(&self, name: &str, module: &[u8], extra: &str) -> PathBuf {
        let d = self.root().join(format!("src-{name}"));
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

    /// `sentra plugin check [args] <manifest>`.
    fn check(&self, args: &[&str], manifest: &Path) -> Output {
        sentra()
            .args(["plugin", "check"])
            .args(args)
            .arg(manifest)
            .output()
            .expect("run sentra")
    }

    /// `sentra plugin <args> --dir <plugins>`.
    fn plugin(&self, args: &[&str]) -> Output {
        sentra()
            .arg("plugin")
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .expect("run sentra")
    }

    /// `sentra plugin install --dir <plugins> [args] <manifest>`.
    fn install(&self, args: &[&str], manifest: &Path) -> Output {
        sentra()
            .args(["plugin", "install", "--dir"])
            .arg(&self.dir)
            .args(args)
            .arg(manifest)
            .output()
            .expect("run sentra")
    }

    /// [`Harness::install`] with `--signature <sig> --public-key <key>`.
    fn install_signed(&self, (key, sig): (&Path, &Path), manifest: &Path) -> Output {
        let (key, sig) = (key.to_str().expect("utf8"), sig.to_str().expect("utf8"));
        self.install(&["--signature", sig, "--public-key", key], manifest)
    }

    /// Neither of the plugins the hostile installs try is in the plugins directory.
    fn nothing_installed(&self) {
        assert!(
            !self.dir.join("uptime").exists() && !self.dir.join("grants").exists(),
            "nothing installed"
        );
    }
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
    let h = Harness::new();
    let m = h.source("uptime", &wat("uptime"), "");
    let text = ok(&h.check(&[], &m));
    assert!(text.contains("plugin uptime 1.2.3: ok"), "{text}");
    assert!(
        text.contains("plugin_up") && text.contains("source=\"wat\""),
        "{text}"
    );
    assert!(text.contains("plugin_runs_total"), "{text}");
    assert!(text.contains("log info: collected"), "{text}");
    let j: serde_json::Value = serde_json::from_str(&ok(&h.check(&["--json"], &m))).expect("json");
    assert_eq!(j["ok"], true);
    assert_eq!(j["samples"].as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j["samples"][0]["labels"]["kind"], "example", "{j}");
    assert_eq!(j["samples"][0]["value"]["gauge"], 1.0, "{j}");
}

#[test]
fn check_refuses_broken_and_runaway_plugins_with_the_reason() {
    let h = Harness::new();
    let good = wat("uptime");
    let truncated = h.source("truncated", &good[..good.len() - 7], "");
    let e = fails(&h.check(&[], &truncated));
    assert!(e.contains("does not compile"), "{e}");
    let looping = h.source("loop", &wat("loop"), "timeout = \"100ms\"\n");
    let started = std::time::Instant::now();
    let e = fails(&h.check(&[], &looping));
    assert!(e.contains("timeout"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let bomb = h.source("bomb", &wat("memory_bomb"), "");
    let e = fails(&h.check(&[], &bomb));
    assert!(e.contains("resource") || e.contains("limit"), "{e}");
    let unknown = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
           (memory (export "memory") 1) (func (export "collect") (result i32) (i32.const 0)))"#,
    )
    .expect("wat");
    let m = h.source("wasi", &unknown, "");
    let e = fails(&h.check(&[], &m));
    assert!(e.contains("interface"), "{e}");
    let bad = h.source("badschedule", &good, "");
    std::fs::write(
        &bad,
        "name = \"badschedule\"\nversion = \"1\"\nschedule = \"10ms\"\n",
    )
    .expect("w");
    let e = fails(&h.check(&[], &bad));
    assert!(e.contains("schedule"), "{e}");
}

#[test]
fn install_list_inspect_remove_with_a_verified_signature() {
    let h = Harness::new();
    let dir = &h.dir;
    let module = wat("uptime");
    let m = h.source("uptime", &module, "");
    let keys = Keys::new();
    let (pk, sig) = keys.files(h.root(), "good", &module);

    let text = ok(&h.install_signed((&pk, &sig), &m));
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
    let e = fails(&h.install(&[], &m));
    assert!(e.contains("already installed"), "{e}");
    ok(&h.install(&["--force"], &m));
    assert!(
        !dir.join("uptime/module.sig").exists(),
        "replaced by the unsigned install"
    );

    let text = ok(&h.plugin(&["list"]));
    assert!(
        text.contains("NAME") && text.contains("uptime") && text.contains("0 dirs, 0 env"),
        "{text}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&h.plugin(&["list", "--json"]))).expect("json");
    assert_eq!(j[0]["name"], "uptime");
    assert_eq!(j[0]["valid"], true);

    let text = ok(&h.plugin(&["inspect", "uptime"]));
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
    let j: serde_json::Value =
        serde_json::from_str(&ok(&h.plugin(&["inspect", "uptime", "--json"]))).expect("json");
    assert_eq!(j["sha256"], sha.as_str());
    assert_eq!(j["loads"], true);

    // A damaged install shows as invalid in the list, and cannot be inspected quietly.
    std::fs::write(dir.join("uptime/manifest.toml"), "name = \"other\"\n").expect("w");
    let text = ok(&h.plugin(&["list"]));
    assert!(text.contains("invalid"), "{text}");
    ok(&h.install(&["--force"], &m));

    let e = fails(&h.plugin(&["remove", "../etc"]));
    assert!(e.contains("not a plugin name"), "{e}");
    let e = fails(&h.plugin(&["remove", "nothere"]));
    assert!(e.contains("not installed"), "{e}");
    let text = ok(&h.plugin(&["remove", "uptime"]));
    assert!(text.contains("removed plugin uptime"), "{text}");
    assert!(!dir.join("uptime").exists());
    let text = ok(&h.plugin(&["list"]));
    assert!(text.contains("no plugins installed"), "{text}");
}

#[test]
fn install_refuses_hostile_input_before_anything_is_installed() {
    let h = Harness::new();
    let module = wat("uptime");
    let m = h.source("uptime", &module, "");
    let keys = Keys::new();

    // Bad signature: one bit flipped.
    let (pk, sig) = keys.files(h.root(), "flip", &module);
    let mut s = std::fs::read(&sig).unwrap();
    s[10] ^= 1;
    std::fs::write(&sig, &s).unwrap();
    let e = fails(&h.install_signed((&pk, &sig), &m));
    assert!(e.contains("signature does not match"), "{e}");
    h.nothing_installed();

    // Wrong key: signed by another key pair.
    let (_, sig) = Keys::new().files(h.root(), "other", &module);
    let e = fails(&h.install_signed((&pk, &sig), &m));
    assert!(e.contains("signature does not match"), "{e}");
    h.nothing_installed();

    // A signature over other bytes than the module (the module was changed after signing).
    let (pk2, sig2) = keys.files(h.root(), "stale", &wat("trap"));
    let e = fails(&h.install_signed((&pk2, &sig2), &m));
    assert!(e.contains("signature does not match"), "{e}");
    h.nothing_installed();

    // Malformed key / signature files, and a signature without a key.
    let short = h.root().join("short.pub");
    std::fs::write(&short, "AAAA").unwrap();
    let e = fails(&h.install_signed((&short, &sig), &m));
    assert!(e.contains("public key") && e.contains("expected 32"), "{e}");
    let e = fails(&h.install(&["--signature", sig.to_str().unwrap()], &m));
    assert!(e.contains("--public-key"), "{e}");
    h.nothing_installed();

    // Truncated module, even correctly signed: refused at load.
    let truncated = &module[..module.len() / 2];
    let tm = h.source("uptime", truncated, "");
    let (pk3, sig3) = keys.files(h.root(), "trunc", truncated);
    let e = fails(&h.install_signed((&pk3, &sig3), &tm));
    assert!(e.contains("does not compile"), "{e}");
    h.nothing_installed();

    // A plugin that fails its trial run.
    let trap = h.source("trapper", &wat("trap"), "");
    let e = fails(&h.install(&[], &trap));
    assert!(e.contains("trial run failed"), "{e}");
    assert!(!h.dir.join("trapper").exists());

    // Grants: refused without --allow-capabilities, listed in the error.
    let granted_dir = h.root().join("granted");
    std::fs::create_dir(&granted_dir).unwrap();
    let granting = format!(
        "[capabilities]\ndirs = [{{ guest = \"/data\", host = {:?} }}]\nenv = [\"SENTRA_SECRET\"]\n",
        granted_dir.display().to_string()
    );
    let grants = h.source("grants", &module, &granting);
    let e = fails(&h.install(&[], &grants));
    assert!(
        e.contains("--allow-capabilities")
            && e.contains("env SENTRA_SECRET")
            && e.contains("dir /data"),
        "{e}"
    );
    h.nothing_installed();
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
        let g = h.source("grants", &module, caps);
        let e = fails(&h.install(&["--allow-capabilities"], &g));
        assert!(e.contains("manifest"), "{tag}: {e}");
        h.nothing_installed();
    }
    // A granted directory that does not exist cannot be provided.
    let g = h.source(
        "grants",
        &module,
        "[capabilities]\ndirs = [{ guest = \"/data\", host = \"/nonexistent/sentra\" }]\n",
    );
    let e = fails(&h.install(&["--allow-capabilities"], &g));
    assert!(e.contains("capability"), "{e}");
    h.nothing_installed();
    // The module path must be a plain file next to the manifest.
    let esc = h.source(
        "uptime",
        &module,
        "module = \"../src-uptime/uptime.wasm\"\n",
    );
    let e = fails(&h.install(&[], &esc));
    assert!(e.contains("plain file name"), "{e}");
    h.nothing_installed();
    let m = h.source("uptime", &module, "");

    // With consent, the granted plugin installs (and the good one too).
    let grants = h.source("grants", &module, &granting);
    ok(&h.install(&["--allow-capabilities"], &grants));
    ok(&h.install(&[], &m));
    let text = ok(&h.plugin(&["inspect", "grants"]));
    assert!(
        text.contains("grant dir: /data") && text.contains("grant env: SENTRA_SECRET"),
        "{text}"
    );
}

/// Hard-links (or copies) `from` to `to`.
fn place(from: &str, to: &Path) {
    std::fs::hard_link(from, to)
        .or_else(|_| std::fs::copy(from, to).map(drop))
        .unwrap_or_else(|e| panic!("{from} -> {}: {e}", to.display()));
}

/// `sentra` runs `wg` and `completions` itself and execs `sentra-admin` / `sentra-plugin-host`
/// for the rest, found next to it (README.md). Alone in a directory, with an empty PATH, the
/// handed-over commands fail with status 1 and an error naming the missing executable and
/// where it was looked for, while its own commands still work; with the two placed next to
/// it they run, with the same output, errors and status as the helper run directly.
#[test]
fn sentra_runs_its_helpers_from_its_own_directory_or_names_the_missing_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let sentra_alone = bin.join("sentra");
    place(env!("CARGO_BIN_EXE_sentra"), &sentra_alone);
    let run = |exe: &Path, args: &[&str]| {
        Command::new(exe)
            .args(args)
            .env("PATH", "")
            .env_remove("SENTRA_AGENT_PLUGINS_DIR")
            .output()
            .expect("run")
    };
    let plugins = tmp.path().join("plugins");
    let plugins = plugins.to_str().unwrap();
    let wal = tmp.path().join("wal");
    std::fs::create_dir(&wal).unwrap();
    let wal = wal.to_str().unwrap();

    let o = run(
        &sentra_alone,
        &["plugin", "list", "--dir", plugins, "--json"],
    );
    let e = fails(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("runs the sentra-plugin-host executable")
            && e.contains(&format!("next to sentra (in {})", bin.display()))
            && e.contains("nor on PATH"),
        "{e}"
    );
    let o = run(&sentra_alone, &["wal", "inspect", wal]);
    let e = fails(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("runs the sentra-admin executable"), "{e}");
    assert!(ok(&run(&sentra_alone, &["wg", "--help"])).contains("Usage: sentra wg"));
    assert!(ok(&run(&sentra_alone, &["completions", "bash"])).contains("sentra"));

    place(
        env!("CARGO_BIN_EXE_sentra-admin"),
        &bin.join("sentra-admin"),
    );
    place(
        env!("CARGO_BIN_EXE_sentra-plugin-host"),
        &bin.join("sentra-plugin-host"),
    );
    assert_eq!(
        ok(&run(
            &sentra_alone,
            &["plugin", "list", "--dir", plugins, "--json"]
        ))
        .trim(),
        "[]"
    );
    let through = run(&sentra_alone, &["wal", "inspect", wal]);
    let direct = run(&bin.join("sentra-admin"), &["wal", "inspect", wal]);
    assert_eq!(
        (through.status.code(), &through.stdout, &through.stderr),
        (direct.status.code(), &direct.stdout, &direct.stderr)
    );
}
