//! A simulated, fault-injecting file system for crash testing.
//!
//! [`SimFs`] keeps every file in memory twice: the bytes a process sees (the page cache) and the
//! bytes that are durable (the last successful `sync_data`). Directory entries are tracked the
//! same way: a created or removed name is durable only after [`Vfs::sync_dir`].
//! [`SimFs::crash`] simulates a power cut: for every file with unsynced changes, each 512-byte
//! sector independently keeps its durable content, takes the new content, or is *torn* (a
//! prefix of the new bytes followed by zeros or garbage), and the file length is either the
//! durable or the new one; every unsynced directory change is kept or dropped at random. Bytes
//! that were durable before the crash are never damaged (the "powersafe overwrite" assumption
//! of SQLite, RocksDB and Prometheus). Handles and locks from before the crash stop working,
//! as if the process had died.
//!
//! Faults can be injected per operation ([`SimFs::inject`]) and a capacity set
//! ([`SimFs::set_capacity`]) to produce `ENOSPC` (`ErrorKind::StorageFull`). Directories
//! themselves are always durable.
//!
//! This is the storage layer the crate's own power-loss tests run on; it is public so that
//! users can test their own code against a WAL that crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::vfs::{LockGuard, OpenMode, Vfs, VfsFile};

const SECTOR: usize = 512;

/// Operations that faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FaultOp {
    /// `write_all_at`.
    Write,
    /// `sync_data` on a file.
    Sync,
    /// Opening with [`OpenMode::Create`].
    Create,
    /// `remove_file`.
    Remove,
    /// `sync_dir`.
    SyncDir,
    /// `set_len`.
    SetLen,
    /// `read_at`.
    Read,
}

#[derive(Debug)]
struct Fault {
    op: FaultOp,
    skip: u64,
    kind: io::ErrorKind,
    persistent: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    entries: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    generation: u64,
    faults: Vec<Fault>,
    capacity: Option<u64>,
    syncs: u64,
}

impl State {
    fn check_fault(&mut self, op: FaultOp) -> io::Result<()> {
        if op == FaultOp::Sync {
            self.syncs += 1;
        }
        let mut hit = None;
        for (i, f) in self.faults.iter_mut().enumerate() {
            if f.op == op {
                if f.skip == 0 {
                    hit = Some((i, f.kind, f.persistent));
                    break;
                }
                f.skip -= 1;
            }
        }
        match hit {
            Some((i, kind, persistent)) => {
                if !persistent {
                    self.faults.remove(i);
                }
                Err(io::Error::new(kind, format!("injected {op:?} fault")))
            }
            None => Ok(()),
        }
    }

    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self.entries.values().copied().collect();
        live.iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.data.len() as u64)
            .sum()
    }

    /// Drops the inode `ino` if no name (current or durable) refers to it any more. Checking
    /// one inode keeps name operations linear; a full [`State::gc`] per operation made building
    /// an image of n files O(n² log n) (the fuzz target ran at 5 executions per second on an
    /// input of zeros: 2 048 empty files).
    fn release(&mut self, ino: Option<u64>) {
        if let Some(ino) = ino
            && !self.entries.values().any(|&i| i == ino)
            && !self.durable.values().any(|&i| i == ino)
        {
            self.inodes.remove(&ino);
        }
    }

    fn gc(&mut self) {
        let live: BTreeSet<u64> = self
            .entries
            .values()
            .chain(self.durable.values())
            .copied()
            .collect();
        self.inodes.retain(|k, _| live.contains(k));
    }
}

/// The simulated file system; cheap to clone (clones share state).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// A small deterministic PRNG (SplitMix64) so crashes are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Creates a generator from a seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl SimFs {
    /// An empty file system.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the `skip`+1-th next `op` fail with `kind` (once, or every time after that if
    /// `persistent`).
    pub fn inject(&self, op: FaultOp, skip: u64, kind: io::ErrorKind, persistent: bool) {
        self.lock().faults.push(Fault {
            op,
            skip,
            kind,
            persistent,
        });
    }

    /// Removes all injected faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Limits the total size of all files; writes growing past it fail with `StorageFull`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Total bytes in live files.
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// Number of file `sync_data` calls so far.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Simulates a power cut (see the module docs). Deterministic for a given `seed`.
    pub fn crash(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut st = self.lock();
        st.generation += 1;
        st.locks.clear();
        // Directory entries.
        let names: BTreeSet<PathBuf> = st
            .entries
            .keys()
            .chain(st.durable.keys())
            .cloned()
            .collect();
        let mut entries = BTreeMap::new();
        for n in names {
            let cur = st.entries.get(&n).copied();
            let dur = st.durable.get(&n).copied();
            let pick = if cur == dur || rng.below(2) == 0 {
                dur
            } else {
                cur
            };
            if let Some(ino) = pick {
                entries.insert(n, ino);
            }
        }
        st.entries = entries.clone();
        st.durable = entries;
        st.gc();
        // File contents.
        for inode in st.inodes.values_mut() {
            if inode.data == inode.synced {
                continue;
            }
            let len = if rng.below(2) == 0 {
                inode.synced.len()
            } else {
                inode.data.len()
            };
            let mut out = vec![0u8; len];
            for (s, chunk) in out.chunks_mut(SECTOR).enumerate() {
                let base = s * SECTOR;
                let old = |i: usize| inode.synced.get(base + i).copied().unwrap_or(0);
                let new = |i: usize| inode.data.get(base + i).copied().unwrap_or(0);
                let same = (0..chunk.len()).all(|i| old(i) == new(i));
                let mode = if same { 0 } else { rng.below(3) };
                let cut = rng.below(chunk.len() as u64 + 1) as usize;
                let garbage = rng.below(2) == 0;
                for (i, b) in chunk.iter_mut().enumerate() {
                    *b = match mode {
                        0 => old(i),
                        1 => new(i),
                        _ if old(i) == new(i) => old(i),
                        _ if i < cut => new(i),
                        _ if garbage => rng.next_u64() as u8,
                        _ => 0,
                    };
                }
            }
            inode.data = out.clone();
            inode.synced = out;
        }
    }

    /// Writes a file durably (entry and content), bypassing faults: for building test images.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let mut st = self.lock();
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(
            ino,
            Inode {
                data: bytes.to_vec(),
                synced: bytes.to_vec(),
            },
        );
        let old = st.entries.insert(path.to_path_buf(), ino);
        let old_durable = st.durable.insert(path.to_path_buf(), ino);
        if let Some(p) = path.parent() {
            st.dirs.insert(p.to_path_buf());
        }
        st.release(old);
        st.release(old_durable);
    }

    /// The current (page cache) content of a file.
    #[must_use]
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        st.entries
            .get(path)
            .and_then(|i| st.inodes.get(i))
            .map(|n| n.data.clone())
    }

    /// All files below `dir` with their current content, sorted by name.
    #[must_use]
    pub fn image(&self, dir: &Path) -> Vec<(String, Vec<u8>)> {
        let st = self.lock();
        st.entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .filter_map(|(p, i)| {
                let name = p.file_name()?.to_str()?.to_owned();
                Some((name, st.inodes.get(i)?.data.clone()))
            })
            .collect()
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    ino: u64,
    generation: u64,
    writable: bool,
}

impl SimFile {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.fs.lock();
        if st.generation != self.generation {
            return Err(io::Error::other("simulated process crashed: stale handle"));
        }
        Ok(st)
    }
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
    }
}

fn inode(st: &mut State, ino: u64) -> io::Result<&mut Inode> {
    st.inodes
        .get_mut(&ino)
        .ok_or_else(|| io::Error::other("inode vanished"))
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.state()?;
        st.check_fault(FaultOp::Read)?;
        let n = inode(&mut st, self.ino)?;
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        if off >= n.data.len() {
            return Ok(0);
        }
        let k = buf.len().min(n.data.len() - off);
        buf[..k].copy_from_slice(&n.data[off..off + k]);
        Ok(k)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state()?;
        st.check_fault(FaultOp::Write)?;
        let off =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = off + buf.len();
        let cur = inode(&mut st, self.ino)?.data.len();
        if let Some(cap) = st.capacity {
            let grow = end.saturating_sub(cur) as u64;
            if st.used() + grow > cap {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "simulated disk full",
                ));
            }
        }
        let n = inode(&mut st, self.ino)?;
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[off..end].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.state()?;
        Ok(inode(&mut st, self.ino)?.data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state()?;
        st.check_fault(FaultOp::SetLen)?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        inode(&mut st, self.ino)?.data.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state()?;
        st.check_fault(FaultOp::Sync)?;
        let n = inode(&mut st, self.ino)?;
        n.synced.clone_from(&n.data);
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

impl Vfs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>> {
        let mut st = self.lock();
        let ino = match mode {
            OpenMode::Read | OpenMode::ReadWrite => *st
                .entries
                .get(path)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?,
            OpenMode::Create => {
                st.check_fault(FaultOp::Create)?;
                if !path.parent().is_some_and(|p| st.dirs.contains(p)) {
                    return Err(io::Error::from(io::ErrorKind::NotFound));
                }
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                let old = st.entries.insert(path.to_path_buf(), ino);
                st.release(old);
                ino
            }
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            ino,
            generation: st.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        for a in path.ancestors() {
            st.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains(dir) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(st
            .entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_fault(FaultOp::Remove)?;
        let ino = st
            .entries
            .remove(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        st.release(Some(ino));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.check_fault(FaultOp::SyncDir)?;
        let st = &mut *st;
        st.durable.retain(|p, _| p.parent() != Some(dir));
        for (p, i) in &st.entries {
            if p.parent() == Some(dir) {
                st.durable.insert(p.clone(), *i);
            }
        }
        st.gc();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let mut st = self.lock();
        if !st.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_and_drops_unsynced_entries() {
        let fs = SimFs::new();
        let d = Path::new("/w");
        fs.create_dir_all(d).unwrap();
        let f = fs.open(&d.join("a"), OpenMode::Create).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(d).unwrap();
        f.write_all_at(&[7u8; 2000], 5).unwrap();
        let g = fs.open(&d.join("b"), OpenMode::Create).unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.sync_data().unwrap();
        fs.crash(1);
        let a = fs.file(&d.join("a")).unwrap();
        assert_eq!(&a[..5], b"hello");
        assert!(f.len().is_err(), "old handles die with the process");
    }

    #[test]
    fn capacity_and_faults() {
        let fs = SimFs::new();
        let d = Path::new("/w");
        fs.create_dir_all(d).unwrap();
        fs.set_capacity(Some(10));
        let f = fs.open(&d.join("a"), OpenMode::Create).unwrap();
        f.write_all_at(&[1; 10], 0).unwrap();
        assert_eq!(
            f.write_all_at(&[1], 10).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        f.write_all_at(&[2; 10], 0).unwrap();
        fs.inject(FaultOp::Sync, 1, io::ErrorKind::Other, false);
        f.sync_data().unwrap();
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
    }

    #[test]
    fn lock_is_exclusive_until_drop_or_crash() {
        let fs = SimFs::new();
        let p = Path::new("/w/LOCK");
        let g = fs.try_lock(p).unwrap().unwrap();
        assert!(fs.try_lock(p).unwrap().is_none());
        drop(g);
        let _g = fs.try_lock(p).unwrap().unwrap();
        fs.crash(0);
        assert!(fs.try_lock(p).unwrap().is_some());
    }
}
