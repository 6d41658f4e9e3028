//! One server per data directory: an exclusive lock on `<data_dir>/server.lock`, held for
//! the life of the process.
//!
//! The lock is an OS file lock (`flock` on Linux), so it goes away with the process even
//! after `kill -9`; the file itself stays and holds the pid of the last holder, which is
//! what a refused second server names.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "server.lock";

/// Held while the server runs; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock or explains who holds it.
    pub(crate) fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse::<u32>().ok())
                    .map_or_else(
                        || "another process".to_owned(),
                        |pid| format!("another sentra-server (pid {pid})"),
                    );
                bail!(
                    "data directory {} is in use by {holder}: only one server may use a data \
                     directory at a time (lock file {}); stop the other server or give a \
                     different --data-dir",
                    data_dir.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        // We hold the lock: record our pid for the next one to be refused.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing the pid to {}", path.display()))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_the_same_process_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = format!("{:#}", DataDirLock::acquire(dir.path()).unwrap_err());
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(again.path(), dir.path().join(LOCK_FILE));
    }
}
