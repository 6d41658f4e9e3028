//! The storage layer the log runs on: a small file-system trait with a real implementation
//! ([`RealFs`]) and a simulated one for crash testing ([`SimFs`](crate::sim::SimFs)).
//!
//! All file I/O is positional (`pread`/`pwrite`), so a file handle can be shared between the
//! writer thread and readers without seek state.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; create the file, truncating any existing content.
    Create,
}

/// An open file.
pub trait VfsFile: Send + Sync + Debug {
    /// Reads at `offset`; returns the number of bytes read (0 at end of file).
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage (for example `StorageFull`).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current length of the file.
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage.
    fn len(&self) -> io::Result<u64>;
    /// `true` if the file has no bytes.
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file.
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: makes written data and the file size durable.
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage. After an error the file must not be trusted.
    fn sync_data(&self) -> io::Result<()>;

    /// Reads until `buf` is full or the file ends; returns the number of bytes read.
    ///
    /// # Errors
    ///
    /// I/O errors of the underlying storage.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// A held directory lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Debug + Send + Sync>;

/// The file-system operations the log needs.
pub trait Vfs: Send + Sync + Debug + 'static {
    /// Opens a file.
    ///
    /// # Errors
    ///
    /// I/O errors, `NotFound` if it must exist and does not.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>>;
    /// Creates a directory and its parents.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    ///
    /// # Errors
    ///
    /// I/O errors, `NotFound` if the directory does not exist.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Removes a file.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations and removals) durable.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Tries to take an exclusive lock on the file at `path` (creating it); `Ok(None)` if
    /// another holder has it.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
}

/// The real file system (`std::fs`).
#[derive(Debug, Clone, Copy, Default)]
#[allow(
    clippy::exhaustive_structs,
    reason = "a stateless unit marker, built as `RealFs`; state would be a new type"
)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl VfsFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Vfs for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::Create => o.read(true).write(true).create(true).truncate(true),
        };
        Ok(Box::new(RealFile(o.open(path)?)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Ok(name) = e?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Box::new(LockFile(f, path.to_path_buf())))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// The lock is held as long as the file stays open.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "held only for its drop (releases the lock); the path is for Debug output"
)]
struct LockFile(File, PathBuf);
