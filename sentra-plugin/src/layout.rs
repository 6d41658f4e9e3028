//! How plugins are installed, for the agent that loads them and the CLI that installs,
//! lists and removes them: one directory per plugin under a plugins directory, named like
//! the plugin, holding [`MANIFEST_FILE`], the module the manifest names (a plain relative
//! path inside the directory) and optionally [`SIGNATURE_FILE`]. Entries whose name starts
//! with `.` are staging directories of an install in progress, not plugins.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sentra_plugin::layout;
//! let plugins = tempfile::tempdir()?;
//! let dir = plugins.path().join("counter");
//! std::fs::create_dir(&dir)?;
//! std::fs::write(
//!     dir.join(layout::MANIFEST_FILE),
//!     "name = \"counter\"\nversion = \"1\"\nschedule = \"5s\"\nmodule = \"counter.wasm\"\n",
//! )?;
//! assert_eq!(layout::installed_dirs(plugins.path())?, vec![dir.clone()]);
//! assert_eq!(layout::read_installed(&dir)?.name, "counter");
//! # Ok(()) }
//! ```

use std::path::{Component, Path, PathBuf};

use crate::{Error, Manifest, Result};

/// The manifest's file name inside a plugin's directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The optional signature's file name inside a plugin's directory.
pub const SIGNATURE_FILE: &str = "module.sig";

/// The plugin directories under `plugins_dir`, in name order (staging directories, whose
/// names start with `.`, left out); a missing `plugins_dir` has none.
///
/// # Errors
///
/// Only if `plugins_dir` exists but cannot be listed.
pub fn installed_dirs(plugins_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(plugins_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Reads and checks the manifest of the plugin installed in `dir`: its `name` matches the
/// directory and its `module` is a plain relative path inside it.
///
/// # Errors
///
/// [`Error::Io`] or [`Error::Manifest`] (naming the manifest's path and the rule broken).
pub fn read_installed(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let raw = Manifest::from_file(&path)?;
    let broken = |message: String| Error::Manifest {
        origin: path.display().to_string(),
        message,
    };
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if raw.name != dir_name {
        return Err(broken(format!(
            "name {:?} does not match its directory {dir_name:?}",
            raw.name
        )));
    }
    // `from_file` joined a relative module onto `dir`; refuse anything that leaves it.
    let inside = raw.module.strip_prefix(dir).ok().filter(|rel| {
        !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))
    });
    if inside.is_none() {
        return Err(broken(format!(
            "module {:?} must be a file inside the plugin's directory",
            raw.module
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_module_must_stay_inside_the_plugin_directory() {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("p");
        std::fs::create_dir(&dir).expect("mkdir");
        let write = |module: &str| {
            std::fs::write(
                dir.join(MANIFEST_FILE),
                format!("name = \"p\"\nversion = \"1\"\nschedule = \"5s\"\nmodule = {module:?}\n"),
            )
            .expect("write");
        };
        write("p.wasm");
        assert!(read_installed(&dir).is_ok());
        for bad in ["../q.wasm", "/etc/passwd", "a/../../q.wasm"] {
            write(bad);
            let e = read_installed(&dir).expect_err(bad).to_string();
            assert!(e.contains("inside the plugin's directory"), "{bad}: {e}");
        }
        std::fs::write(
            dir.join(MANIFEST_FILE),
            "name = \"other\"\nversion = \"1\"\nschedule = \"5s\"\n",
        )
        .expect("write");
        let e = read_installed(&dir).expect_err("name").to_string();
        assert!(e.contains("does not match its directory"), "{e}");
    }

    #[test]
    fn staging_directories_and_files_are_not_plugins() {
        let root = tempfile::tempdir().expect("tmp");
        for d in ["b", "a", ".install-c-1"] {
            std::fs::create_dir(root.path().join(d)).expect("mkdir");
        }
        std::fs::write(root.path().join("README"), "").expect("write");
        let dirs = installed_dirs(root.path()).expect("list");
        assert_eq!(dirs, vec![root.path().join("a"), root.path().join("b")]);
        assert!(
            installed_dirs(&root.path().join("missing"))
                .expect("missing")
                .is_empty()
        );
    }
}
