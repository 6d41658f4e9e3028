//! `sentra plugin check|install|list|inspect|remove`: WASM plugin collectors of an agent.
//!
//! The plugin directory layout is the agent's (`sentra_agent::plugin`):
//! `<dir>/<name>/manifest.toml`, the module it names (a plain file name) and an optional
//! `module.sig` (the Ed25519 signature `install` verified). `check` and `install` load the
//! module in the same sandbox as the agent (`sentra-plugin`) and run it once under its
//! limits; nothing a plugin emits reaches the terminal unescaped.
//!
//! This module (and wasmtime with it) is linked only into the `sentra-plugin-host`
//! executable: `sentra plugin …` execs it (src/exec.rs), so the `sentra` binary that every
//! other command starts stays small (bins/sentra-cli/README.md).

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use sentra_core::Value;
use sentra_plugin::layout::{MANIFEST_FILE, SIGNATURE_FILE};
use sentra_plugin::{Collection, Host, HostConfig, Manifest, Plugin};
use serde_json::json;

use crate::plugin_args::{PluginArgs, PluginCommand};
use crate::safe::{display_safe, json_pretty};
use crate::table::Table;

pub(crate) fn run(args: PluginArgs) -> anyhow::Result<()> {
    match args.command {
        PluginCommand::Check { manifest, json } => check(&manifest, json),
        PluginCommand::Install {
            manifest,
            dir,
            signature,
            public_key,
            allow_capabilities,
            no_run,
            force,
        } => install(&Install {
            manifest,
            dir: dir.dir,
            signature,
            public_key,
            allow_capabilities,
            no_run,
            force,
        }),
        PluginCommand::List { dir, json } => list(&dir.dir, json),
        PluginCommand::Inspect { name, dir, json } => inspect(&dir.dir, &name, json),
        PluginCommand::Remove { name, dir } => remove(&dir.dir, &name),
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn host() -> anyhow::Result<Host> {
    Host::new(HostConfig::default()).context("starting the plugin sandbox")
}

fn read_module(manifest: &Manifest) -> anyhow::Result<Vec<u8>> {
    std::fs::read(&manifest.module)
        .with_context(|| format!("reading module {}", manifest.module.display()))
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Gauge(x) => json!({ "gauge": x }),
        Value::Counter(c) => json!({ "counter": c }),
        _ => json!({ "histogram": null }),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Gauge(x) => format!("{x}"),
        Value::Counter(c) => format!("{c} (counter)"),
        _ => "(histogram)".to_owned(),
    }
}

fn labels_text(s: &sentra_core::Sample) -> String {
    let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    if l.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", l.join(","))
    }
}

fn collection_json(c: &Collection) -> serde_json::Value {
    json!({
        "samples": c.samples.iter().map(|s| json!({
            "name": s.name.as_str(),
            "labels": s.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "value": value_json(&s.value),
        })).collect::<Vec<_>>(),
        "logs": c.logs.iter().map(|l| json!({
            "level": format!("{:?}", l.level).to_lowercase(),
            "message": l.message,
        })).collect::<Vec<_>>(),
        "logs_dropped": c.logs_dropped,
        "elapsed_us": u64::try_from(c.elapsed.as_micros()).unwrap_or(u64::MAX),
    })
}

fn check(path: &Path, json: bool) -> anyhow::Result<()> {
    let manifest = Manifest::from_file(path)?;
    let wasm = read_module(&manifest)?;
    let host = host()?;
    let (plugin, c) = host.check(manifest, &wasm)?;
    if json {
        let mut v = collection_json(&c);
        v["plugin"] = json!(plugin.name());
        v["imports"] = json!(plugin.imports());
        v["ok"] = json!(true);
        return print(&(json_pretty(&v)? + "\n"));
    }
    let mut text = format!(
        "plugin {} {}: ok, one run in {:?}, {} samples, {} log lines{}\nimports: {}\n",
        plugin.name(),
        display_safe(&plugin.manifest().version),
        c.elapsed,
        c.samples.len(),
        c.logs.len(),
        if c.logs_dropped > 0 {
            format!(" ({} dropped)", c.logs_dropped)
        } else {
            String::new()
        },
        plugin.imports().join(", "),
    );
    let mut t = Table::new(["SAMPLE", "LABELS", "VALUE"]);
    for s in &c.samples {
        t.row([
            s.name.as_str().to_owned(),
            labels_text(s),
            value_text(&s.value),
        ]);
    }
    text.push_str(&t.to_string());
    for l in &c.logs {
        text.push_str(&format!(
            "log {}: {}\n",
            format!("{:?}", l.level).to_lowercase(),
            display_safe(&l.message)
        ));
    }
    print(&text)
}

struct Install {
    manifest: PathBuf,
    dir: PathBuf,
    signature: Option<PathBuf>,
    public_key: Option<PathBuf>,
    allow_capabilities: bool,
    no_run: bool,
    force: bool,
}

/// Reads a key or signature file: exactly `len` raw bytes, or base64 text of them.
fn read_key_file(path: &Path, len: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if raw.len() == len {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(b) if b.len() == len => Ok(b),
        _ => bail!(
            "{what} {}: expected {len} raw bytes or their base64, got {} bytes",
            path.display(),
            raw.len()
        ),
    }
}

fn install(a: &Install) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.manifest)
        .with_context(|| format!("reading {}", a.manifest.display()))?;
    let origin = a.manifest.display().to_string();
    let parsed = Manifest::parse(&text, &origin)?;
    // The manifest is copied verbatim: its module must be a file next to it.
    let plain = {
        let mut c = parsed.module.components();
        matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
    };
    if !plain {
        bail!(
            "{origin}: module {:?} must be a plain file name next to the manifest",
            parsed.module
        );
    }
    let manifest = Manifest::from_file(&a.manifest)?;
    let name = manifest.name.clone();
    let wasm = read_module(&manifest)?;

    // 1. Signature, before anything else is done with the module.
    let signature = match (&a.signature, &a.public_key) {
        (Some(sig), Some(key)) => {
            let sig = read_key_file(sig, sentra_plugin::signature::SIGNATURE_LEN, "signature")?;
            let key = read_key_file(key, sentra_plugin::signature::PUBLIC_KEY_LEN, "public key")?;
            sentra_plugin::verify_module(&name, &wasm, &sig, &key)?;
            Some(sig)
        }
        _ => None,
    };
    // 2. Grants: only with the operator's explicit consent.
    let caps = &manifest.capabilities;
    if (!caps.dirs.is_empty() || !caps.env.is_empty()) && !a.allow_capabilities {
        let mut granted: Vec<String> = caps
            .dirs
            .iter()
            .map(|d| format!("dir {} -> {}", d.guest, d.host.display()))
            .collect();
        granted.extend(caps.env.iter().map(|e| format!("env {e}")));
        bail!(
            "plugin {name}: the manifest grants {}; review them and pass --allow-capabilities to install",
            granted.join(", ")
        );
    }
    // 3. Load (interface, limits, grants) and, unless told not to, one run.
    let host = host()?;
    let plugin = host.load(manifest, &wasm)?;
    if !a.no_run {
        plugin
            .collect()
            .with_context(|| format!("plugin {name}: the trial run failed (--no-run skips it)"))?;
    }
    // 4. Copy: into a fresh directory next to the target, then renamed into place.
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dest = a.dir.join(&name);
    if dest.exists() && !a.force {
        bail!(
            "plugin {name} is already installed in {} (--force replaces it)",
            dest.display()
        );
    }
    let tmp = a
        .dir
        .join(format!(".install-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> std::io::Result<()> {
        std::fs::write(tmp.join(MANIFEST_FILE), &text)?;
        std::fs::write(tmp.join(&parsed.module), &wasm)?;
        if let Some(sig) = &signature {
            std::fs::write(tmp.join(SIGNATURE_FILE), sig)?;
        }
        std::fs::File::open(&tmp)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
    print(&format!(
        "installed plugin {name} {} in {}{}; the agent loads it at its next start\n",
        display_safe(&plugin.manifest().version),
        dest.display(),
        if signature.is_some() {
            " (signature verified)"
        } else {
            " (unsigned)"
        }
    ))
}

/// An installed plugin's manifest, checked as the agent checks it; `Err` is the reason it
/// would be refused.
fn installed(dir: &Path) -> Result<Manifest, String> {
    sentra_plugin::layout::read_installed(dir).map_err(|e| e.to_string())
}

fn installed_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    sentra_plugin::layout::installed_dirs(dir).with_context(|| format!("listing {}", dir.display()))
}

fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for d in installed_dirs(dir)? {
        let dir_name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let signed = d.join(SIGNATURE_FILE).is_file();
        rows.push((dir_name, installed(&d), signed));
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, m, signed)| match m {
                Ok(m) => json!({
                    "name": n, "version": m.version, "schedule": humantime::format_duration(m.schedule).to_string(),
                    "timeout": humantime::format_duration(m.timeout).to_string(),
                    "dirs": m.capabilities.dirs.len(), "env": m.capabilities.env.len(),
                    "signed": signed, "valid": true,
                }),
                Err(e) => json!({ "name": n, "valid": false, "error": e, "signed": signed }),
            })
            .collect();
        return print(&(json_pretty(&v)? + "\n"));
    }
    if rows.is_empty() {
        return print(&format!("no plugins installed in {}\n", dir.display()));
    }
    let mut t = Table::new(["NAME", "VERSION", "SCHEDULE", "GRANTS", "SIGNED", "STATUS"]);
    for (n, m, signed) in rows {
        let signed = if signed { "yes" } else { "no" }.to_owned();
        match m {
            Ok(m) => t.row([
                n,
                m.version.clone(),
                humantime::format_duration(m.schedule).to_string(),
                format!(
                    "{} dirs, {} env",
                    m.capabilities.dirs.len(),
                    m.capabilities.env.len()
                ),
                signed,
                "ok".to_owned(),
            ]),
            Err(e) => t.row([
                n,
                "-".into(),
                "-".into(),
                "-".into(),
                signed,
                format!("invalid: {e}"),
            ]),
        }
    }
    print(&t.to_string())
}

/// `name` as a plugin directory under `dir`; refuses anything that is not a plugin name
/// (no path separators, no `..`).
fn plugin_dir(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let ok = !name.is_empty()
        && name.len() <= sentra_plugin::manifest::MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        bail!(
            "{:?} is not a plugin name ([a-z0-9_-], at most {} characters)",
            display_safe(name),
            sentra_plugin::manifest::MAX_NAME_LEN
        );
    }
    let d = dir.join(name);
    if !d.join(MANIFEST_FILE).is_file() && !d.is_dir() {
        bail!("plugin {name} is not installed in {}", dir.display());
    }
    Ok(d)
}

fn inspect(dir: &Path, name: &str, json: bool) -> anyhow::Result<()> {
    let d = plugin_dir(dir, name)?;
    let m = installed(&d).map_err(|e| anyhow::anyhow!("plugin {name}: {e}"))?;
    let wasm = read_module(&m)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &wasm);
    let sha: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let signed = d.join(SIGNATURE_FILE).is_file();
    let loaded: Result<Plugin, String> = host()?.load(m.clone(), &wasm).map_err(|e| e.to_string());
    let imports = loaded
        .as_ref()
        .map(|p| p.imports().to_vec())
        .unwrap_or_default();
    if json {
        let v = json!({
            "name": m.name,
            "version": m.version,
            "module": m.module.display().to_string(),
            "module_bytes": wasm.len(),
            "sha256": sha,
            "signed": signed,
            "schedule": humantime::format_duration(m.schedule).to_string(),
            "timeout": humantime::format_duration(m.timeout).to_string(),
            "memory": m.memory,
            "dirs": m.capabilities.dirs.iter().map(|g| json!({"guest": g.guest, "host": g.host.display().to_string()})).collect::<Vec<_>>(),
            "env": m.capabilities.env,
            "imports": imports,
            "loads": loaded.is_ok(),
            "error": loaded.as_ref().err(),
        });
        return print(&(json_pretty(&v)? + "\n"));
    }
    let mut text = format!(
        "name:      {}\nversion:   {}\nmodule:    {} ({} bytes)\nsha256:    {sha}\nsigned:    {}\nschedule:  {}\ntimeout:   {}\nmemory:    {}\n",
        m.name,
        display_safe(&m.version),
        display_safe(&m.module.display().to_string()),
        wasm.len(),
        if signed {
            "yes (verified at install)"
        } else {
            "no"
        },
        humantime::format_duration(m.schedule),
        humantime::format_duration(m.timeout),
        m.memory
            .map_or_else(|| "host default".to_owned(), |b| format!("{b} bytes")),
    );
    if m.capabilities.dirs.is_empty() && m.capabilities.env.is_empty() {
        text.push_str("grants:    none\n");
    }
    for g in &m.capabilities.dirs {
        text.push_str(&format!(
            "grant dir: {} -> {} (read-only)\n",
            display_safe(&g.guest),
            display_safe(&g.host.display().to_string())
        ));
    }
    for e in &m.capabilities.env {
        text.push_str(&format!("grant env: {}\n", display_safe(e)));
    }
    match &loaded {
        Ok(_) => text.push_str(&format!("imports:   {}\n", imports.join(", "))),
        Err(e) => text.push_str(&format!("loads:     no: {}\n", display_safe(e))),
    }
    print(&text)
}

fn remove(dir: &Path, name: &str) -> anyhow::Result<()> {
    let d = plugin_dir(dir, name)?;
    std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    print(&format!(
        "removed plugin {name} from {}; the agent drops it at its next start\n",
        dir.display()
    ))
}
