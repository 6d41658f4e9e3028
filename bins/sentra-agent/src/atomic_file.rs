//! The agent's one way to replace a small file: write a temporary file next to it (mode
//! as given, `create_new`), `fsync` it, rename it over the target, `fsync` the directory.
//! A crash leaves either the old or the new content, never a torn file, and the rename is
//! durable once this returns. Used for the credentials (0600) and `wal.seq-base`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Replaces `path` with `bytes` atomically and durably; a new file gets `mode`.
///
/// The temporary file is `.<name>.tmp` in the same directory (a stale one from a crash is
/// removed first). The directory must exist.
///
/// # Errors
///
/// [`Error::Io`] naming the step that failed (create, write, rename into place, sync
/// directory) and its path.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp)(e));
    }
    drop(f);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("rename into place", path)(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn replaces_with_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("secret.toml");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o600).expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("secret.toml")]);
    }

    #[test]
    fn a_stale_temporary_file_is_replaced_and_errors_name_the_step() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("wal.seq-base");
        std::fs::write(dir.path().join(".wal.seq-base.tmp"), b"torn").expect("stale");
        write_atomic(&p, b"7\n", 0o644).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"7\n");
        let missing = dir.path().join("no/such/dir/file");
        let e = write_atomic(&missing, b"x", 0o600).expect_err("no directory");
        assert!(e.to_string().contains("create"), "{e}");
    }
}
