//! ENOSPC on a real (tmpfs) file system far below the disk cap: the append is refused with
//! `Error::DiskFull`, the log stays usable and consistent (no half frame, no reused or skipped
//! LSN), and appends work again once acknowledgements free space.
//!
//! Needs root to mount a tmpfs: runs when `SENTRA_TEST_MOUNT=1` (scripts/test sets it), else
//! prints a `SKIPPED:` line.

use std::path::{Path, PathBuf};
use std::process::Command;

use sentra_wal::{Entry, Error, Options, Wal};

/// A tmpfs mounted for the test; unmounted on drop (also when the test panics).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        if std::env::var_os("SENTRA_TEST_MOUNT").is_none_or(|v| v != "1") {
            eprintln!(
                "SKIPPED: sentra-wal disk_full needs SENTRA_TEST_MOUNT=1 and root to mount a {size} tmpfs"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed: {st}");
        Some(Self {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Tests run in parallel: a child process another test is forking (`mount`) may hold
        // our file descriptors for a moment (until its exec closes them), so the mount can be
        // busy briefly. Retry, then detach lazily rather than leak the mount.
        for _ in 0..20 {
            let ok = Command::new("umount")
                .arg(&self.path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; 3000 + (i as usize * 7) % 1000];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

fn records(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(from)
        .map(|e| match e.expect("read") {
            Entry::Record(r) => (r.lsn(), r.into_payload()),
            other => panic!("unexpected entry {other:?}"),
        })
        .collect()
}

#[test]
fn enospc_below_the_cap_refuses_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let dir: &Path = &fs.path.join("wal");
    // Cap 1 GiB on a 1 MiB file system: the disk fills long before the cap.
    let opts = Options::default().segment_size(128 << 10).disk_cap(1 << 30);
    let (wal, _) = Wal::open(dir, opts.clone()).expect("open");
    let mut stored = Vec::new();
    let err = loop {
        let i = stored.len() as u64 + 1;
        match wal.append(&payload(i)) {
            Ok(lsn) => {
                assert_eq!(lsn, i, "LSNs are dense");
                stored.push((lsn, payload(i)));
            }
            Err(e) => break e,
        }
        assert!(stored.len() < 10_000, "a 1 MiB file system never filled up");
    };
    assert!(
        matches!(err, Error::DiskFull { .. }) && err.is_disk_full(),
        "ENOSPC must be reported as DiskFull, got: {err:?}"
    );
    assert!(
        err.to_string().contains("no space left"),
        "clear message: {err}"
    );
    assert!(!wal.stats().poisoned, "a full disk must not poison the log");
    // Still full: refused again, nothing half-written, the log still consistent.
    let again = wal.append(&payload(999_999)).expect_err("still full");
    assert!(again.is_disk_full(), "{again:?}");
    assert_eq!(records(&wal, 1), stored, "exactly the acknowledged records");
    // Shipping frees space: acknowledge most records, appends work again with the next LSN.
    let last = stored.last().expect("some stored").0;
    wal.ack(last - 2).expect("ack frees segments");
    let lsn = wal
        .append(&payload(last + 1))
        .expect("append after space returned");
    assert_eq!(
        lsn,
        last + 1,
        "no LSN reused or skipped across the full episode"
    );
    stored.push((lsn, payload(last + 1)));
    wal.close().expect("close");
    // Reopen: no damage, nothing truncated, no loss, every unacknowledged record intact.
    let (wal, rep) = Wal::open(dir, opts).expect("reopen");
    assert!(rep.losses.is_empty(), "{rep:?}");
    assert!(rep.damage.is_empty(), "{rep:?}");
    assert_eq!(rep.truncated_bytes, 0, "{rep:?}");
    assert_eq!(rep.next_lsn, last + 2);
    let unacked: Vec<_> = stored.into_iter().filter(|(l, _)| *l > last - 2).collect();
    assert_eq!(records(&wal, last - 1), unacked);
}

/// Size of the segment file named for `first_lsn`.
fn segment_len(dir: &Path, first_lsn: u64) -> u64 {
    let name = sentra_wal::format::segment_name(first_lsn);
    std::fs::metadata(dir.join(name)).expect("segment").len()
}

#[test]
fn a_segment_too_large_to_preallocate_grows_instead() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let dir: &Path = &fs.path.join("wal");
    // Preallocation is the default; a 4 MiB segment cannot be zero-filled on a 1 MiB file
    // system: the segment falls back to growing, the fill is released, appends succeed.
    let opts = Options::default().segment_size(4 << 20).disk_cap(1 << 30);
    let (wal, _) = Wal::open(dir, opts.clone()).expect("open on a small disk");
    assert_eq!(wal.stats().growing_segments, 1, "{:?}", wal.stats());
    let len_before = segment_len(dir, 1);
    assert!(
        len_before < 4096,
        "the partial zero fill was released: {len_before} bytes"
    );
    let mut stored = Vec::new();
    for i in 1..=20u64 {
        let lsn = wal
            .append(&payload(i))
            .expect("append to a growing segment");
        assert_eq!(lsn, i);
        stored.push((lsn, payload(i)));
    }
    assert_eq!(records(&wal, 1), stored);
    let st = wal.stats();
    assert!(!st.poisoned);
    assert_eq!(
        st.disk_used,
        segment_len(dir, 1),
        "the cap counts the real size"
    );
    wal.close().expect("close");
    // Reopen: the tail still does not fit preallocated; it keeps growing, nothing lost.
    let (wal, rep) = Wal::open(dir, opts).expect("reopen");
    assert!(rep.losses.is_empty() && rep.damage.is_empty(), "{rep:?}");
    assert_eq!(rep.truncated_bytes, 0, "{rep:?}");
    assert_eq!(wal.stats().growing_segments, 1);
    assert_eq!(records(&wal, 1), stored);
    let lsn = wal.append(&payload(21)).expect("append after reopen");
    assert_eq!(lsn, 21);
}

#[test]
fn preallocated_log_fills_the_disk_then_refuses_and_recovers_exactly_what_was_acknowledged() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let dir: &Path = &fs.path.join("wal");
    // 192 KiB segments on 1 MiB: the first few are preallocated, a later one no longer fits
    // and grows until the disk is full.
    let opts = Options::default().segment_size(192 << 10).disk_cap(1 << 30);
    let (wal, _) = Wal::open(dir, opts.clone()).expect("open");
    assert_eq!(wal.stats().growing_segments, 0, "the first segment fits");
    assert_eq!(segment_len(dir, 1), 192 << 10, "preallocated by default");
    let mut stored = Vec::new();
    let err = loop {
        let i = stored.len() as u64 + 1;
        match wal.append(&payload(i)) {
            Ok(lsn) => {
                assert_eq!(lsn, i, "LSNs are dense");
                stored.push((lsn, payload(i)));
            }
            Err(e) => break e,
        }
        assert!(stored.len() < 10_000, "a 1 MiB file system never filled up");
    };
    assert!(err.is_disk_full(), "clear disk-full error, got: {err:?}");
    assert!(err.to_string().contains("no space left"), "{err}");
    let st = wal.stats();
    assert!(!st.poisoned, "a full disk must not poison the log");
    assert!(
        st.growing_segments >= 1,
        "a segment fell back to growing: {st:?}"
    );
    assert!(
        stored.len() > 200,
        "appends kept going after preallocation stopped fitting: {} records",
        stored.len()
    );
    assert_eq!(records(&wal, 1), stored);
    // A crash-like drop with a full disk: reopen returns exactly the acknowledged records.
    drop(wal);
    let (wal, rep) = Wal::open(dir, opts).expect("reopen on a full disk");
    assert!(rep.losses.is_empty() && rep.damage.is_empty(), "{rep:?}");
    assert_eq!(rep.truncated_bytes, 0, "{rep:?}");
    assert_eq!(rep.next_lsn, stored.len() as u64 + 1);
    assert_eq!(records(&wal, 1), stored, "exactly the acknowledged records");
    let again = wal.append(&payload(999_999)).expect_err("still full");
    assert!(again.is_disk_full(), "{again:?}");
    assert_eq!(records(&wal, 1), stored);
}
