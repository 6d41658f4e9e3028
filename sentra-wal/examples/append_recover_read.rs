//! Append records, "crash", recover, read from the persisted cursor and acknowledge, then
//! tear the tail of the log as a power cut would and watch recovery cut it off.
//!
//! ```text
//! cargo run -p sentra-wal --example append_recover_read [DIR]
//! ```
//!
//! Without `DIR` it works in a temporary directory that is removed at the end.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sentra_wal::{Entry, Options, RecoveryReport, Wal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    println!("log directory: {}", dir.display());

    // 1. Append: each call returns once the record is fdatasync'ed (group commit).
    let (wal, report) = Wal::open(&dir, Options::default())?;
    print_report("first open", &report);
    let first = report.next_lsn;
    for i in 0..5 {
        let lsn = wal.append(format!("collection {i}").as_bytes())?;
        println!("appended lsn {lsn}");
    }
    let range = wal.append_batch([b"batch a".as_slice(), b"batch b".as_slice()])?;
    println!(
        "appended lsns {}..={} under one sync",
        range.first, range.last
    );
    // 2. "Crash": drop the handle without `close`; everything acknowledged is on disk.
    drop(wal);

    // 3. Recover and ship: read from the persisted cursor, acknowledge what was shipped.
    let (wal, report) = Wal::open(&dir, Options::default())?;
    print_report("after the crash", &report);
    let mut shipped = wal.acked_lsn();
    for entry in wal.read_from(wal.acked_lsn() + 1) {
        match entry? {
            Entry::Record(record) => {
                println!(
                    "read lsn {}: {:?}",
                    record.lsn(),
                    String::from_utf8_lossy(record.payload())
                );
                shipped = record.lsn();
                if shipped == first + 2 {
                    break; // ship only the first three now
                }
            }
            Entry::Loss(loss) => println!("records lost: {loss:?}"),
            _ => {}
        }
    }
    wal.ack(shipped)?; // cursor persisted (two checksummed slots)
    println!("acknowledged up to lsn {shipped}");
    wal.close()?;

    // 4. A power cut in the middle of a write leaves a torn record after the last whole
    //    one. Segments are preallocated (zero-filled) by default, so the torn bytes land in
    //    the zero fill: simulate the first 12 bytes of a frame (length, checksum, part of
    //    the LSN) written right after the last valid record.
    let tail = tail_segment(&dir)?;
    let end = sentra_wal::inspect_dir(&dir)?
        .segments
        .last()
        .map_or(0, |s| s.valid_end);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tail)?
        .write_all_at(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0x08, 0, 0, 0], end)?;
    println!("wrote a torn record at byte {end} of {}", tail.display());

    // 5. Recovery always opens: the torn tail is truncated, the cursor is where the
    //    shipper left it, and the remaining unshipped records are read again.
    let (wal, report) = Wal::open(&dir, Options::default())?;
    print_report("after the torn write", &report);
    assert_eq!(report.acked_lsn, shipped);
    assert!(report.truncated_bytes > 0);
    let unshipped = wal
        .read_from(wal.acked_lsn() + 1)
        .filter_map(|entry| match entry {
            Ok(Entry::Record(record)) => Some(record.lsn()),
            _ => None,
        })
        .collect::<Vec<_>>();
    println!("still to ship: lsns {unshipped:?}");
    wal.close()?;
    Ok(())
}

fn print_report(when: &str, report: &RecoveryReport) {
    println!(
        "{when}: {} segment(s), {} record(s) ({} unacknowledged), next lsn {}, acked lsn {}, \
         truncated {} byte(s), losses {:?}",
        report.segments,
        report.records,
        report.unacked_records,
        report.next_lsn,
        report.acked_lsn,
        report.truncated_bytes,
        report.losses
    );
}

/// The newest segment file (named after its first LSN, zero-padded: `format::segment_name`).
fn tail_segment(dir: &Path) -> std::io::Result<PathBuf> {
    let mut segments = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "wal"))
        .collect::<Vec<_>>();
    segments.sort();
    segments
        .pop()
        .ok_or_else(|| std::io::Error::other("no segment file"))
}
