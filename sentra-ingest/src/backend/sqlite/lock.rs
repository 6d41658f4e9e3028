//! One pipeline per data directory: an exclusive lock on `<data_dir>/ingest.lock`, held by
//! the writer's store, so it ends with the writer task (shutdown, or the drain after the
//! [`Ingest`](crate::Ingest) was dropped, or the runtime going away).
//!
//! An OS file lock (`flock` on Linux): it goes away with the process even after `kill -9`,
//! and a second open in the same process is refused too. The file stays and holds the pid
//! of the last holder, which is what a refused second open names.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "ingest.lock";

/// How long an open waits for the lock: a pipeline of this process that was just dropped
/// finishes its queue and lets go within milliseconds; another server does not.
const WAIT: Duration = Duration::from_secs(2);

/// Takes the lock on `data_dir` (which exists) or explains who holds it. Dropping the
/// returned file releases it.
pub(crate) async fn lock(data_dir: &Path) -> Result<File> {
    let give_up = Instant::now() + WAIT;
    loop {
        match try_lock(data_dir) {
            Err(Error::DataDirInUse { .. }) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn try_lock(data_dir: &Path) -> Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let io_error = |source| Error::DataDir {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error)?;
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
                    |pid| format!("another process (pid {pid})"),
                );
            return Err(Error::DataDirInUse {
                path: data_dir.display().to_string(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_error(e)),
    }
    // We hold the lock: record our pid for the next one to be refused.
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_data())
        .map_err(io_error)?;
    Ok(file)
}
