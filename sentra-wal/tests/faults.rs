//! I/O fault injection (EIO, ENOSPC) and disk-cap behaviour with a stalled reader.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use sentra_wal::sim::{FaultOp, SimFs};
use sentra_wal::{Entry, Error, FullPolicy, LossCause, Options, Wal};

const DIR: &str = "/wal";

fn open(fs: &SimFs, opts: Options) -> Wal {
    Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap().0
}

fn read_all(wal: &Wal, from: u64) -> Vec<Entry> {
    wal.read_from(from).map(Result::unwrap).collect()
}

fn lsns(entries: &[Entry]) -> Vec<u64> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Record(r) => Some(r.lsn()),
            _ => None,
        })
        .collect()
}

#[test]
fn sync_failure_poisons_and_is_never_retried() {
    let fs = SimFs::new();
    let wal = open(&fs, Options::default());
    wal.append(b"ok").unwrap();
    let syncs = fs.sync_count();
    fs.inject(FaultOp::Sync, 0, ErrorKind::Other, false);
    let err = wal.append(b"lost").unwrap_err();
    assert!(matches!(err, Error::Io { op: "sync", .. }), "{err}");
    // Fail-stop: nothing else is accepted and no further sync is attempted.
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned(_))));
    assert!(matches!(wal.append_batch([b"y"]), Err(Error::Poisoned(_))));
    assert!(matches!(wal.rotate(), Err(Error::Poisoned(_))));
    assert!(matches!(wal.ack(1), Err(Error::Poisoned(_))));
    assert!(wal.stats().poisoned);
    assert_eq!(
        fs.sync_count(),
        syncs + 1,
        "a failed fsync must not be retried"
    );
    // Committed data stays readable.
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1]);
    drop(wal);
    // Recovery after the failure: the acknowledged record is there, the failed one may not be.
    fs.crash(7);
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, Options::default()).unwrap();
    assert!(rep.losses.is_empty());
    assert_eq!(lsns(&read_all(&wal, 1))[0], 1);
    wal.append(b"again").unwrap();
}

#[test]
fn write_enospc_truncates_back_and_stays_usable() {
    // Growing segments: with the (default) preallocation the zero fill is already allocated
    // and an append cannot hit ENOSPC.
    let opts = Options::default().preallocate(false);
    let fs = SimFs::new();
    let wal = open(&fs, opts.clone());
    for i in 0..10u8 {
        wal.append(&[i; 100]).unwrap();
    }
    // The disk is full: the next write fails with ENOSPC, reported as DiskFull.
    fs.set_capacity(Some(fs.used_bytes() + 50));
    let err = wal.append(&[0xee; 200]).unwrap_err();
    match &err {
        Error::DiskFull { source, .. } => assert_eq!(source.kind(), ErrorKind::StorageFull),
        other => panic!("{other}"),
    }
    // Not poisoned: small appends that fit still work, with the next LSN (none reused).
    assert!(!wal.stats().poisoned);
    assert_eq!(wal.append(b"x").unwrap(), 11);
    fs.set_capacity(None);
    assert_eq!(wal.append(&[0xee; 200]).unwrap(), 12);
    drop(wal);
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap();
    assert_eq!(rep.records, 12);
    assert_eq!(rep.truncated_bytes, 0, "nothing half-written remains");
    let entries = read_all(&wal, 1);
    assert_eq!(lsns(&entries), (1..=12).collect::<Vec<_>>());
    let Entry::Record(r) = &entries[10] else {
        panic!("record expected")
    };
    assert_eq!(r.payload(), b"x");
}

#[test]
fn eio_on_every_write_path_operation() {
    for op in [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::Create,
        FaultOp::SyncDir,
        FaultOp::Remove,
    ] {
        for skip in 0..3 {
            let fs = SimFs::new();
            let opts = Options::default().segment_size(256).disk_cap(1 << 20);
            let wal = open(&fs, opts.clone());
            let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
            fs.inject(op, skip, ErrorKind::Other, true);
            let mut failed = false;
            let mut injected_seen = false;
            let mut note = |e: &Error| {
                let injected = format!("injected {op:?} fault");
                let mut src: Option<&dyn std::error::Error> = Some(e);
                while let Some(x) = src {
                    if x.to_string().contains(&injected) {
                        injected_seen = true;
                    }
                    src = x.source();
                }
            };
            for i in 0..40u8 {
                match wal.append(&[i; 40]) {
                    Ok(l) => {
                        assert!(!failed, "{op:?}: success after a failure");
                        acked.push((l, vec![i; 40]));
                    }
                    Err(e) => {
                        assert!(matches!(e, Error::Io { .. } | Error::Poisoned(_)), "{e}");
                        note(&e);
                        failed = true;
                    }
                }
                if i % 10 == 9
                    && let Some(&(l, _)) = acked.last()
                    && let Err(e) = wal.ack(l)
                {
                    note(&e);
                    failed = true;
                }
            }
            assert!(
                failed && injected_seen,
                "{op:?} skip {skip}: the injected fault never fired"
            );
            drop(wal);
            fs.clear_faults();
            fs.crash(skip);
            let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap();
            let got: Vec<(u64, Vec<u8>)> = read_all(&wal, rep.acked_lsn + 1)
                .into_iter()
                .filter_map(|e| match e {
                    Entry::Record(r) => Some((r.lsn(), r.into_payload())),
                    _ => None,
                })
                .collect();
            let want: Vec<(u64, Vec<u8>)> = acked
                .into_iter()
                .filter(|(l, _)| *l > rep.acked_lsn)
                .collect();
            assert!(got.len() >= want.len(), "{op:?} skip {skip}: records lost");
            assert_eq!(
                &got[..want.len()],
                &want[..],
                "{op:?} skip {skip}: every acknowledged record, with its payload"
            );
        }
    }
}

#[test]
fn cap_refuses_with_full_until_the_stalled_reader_acks() {
    for prealloc in [false, true] {
        cap_refuses(prealloc);
    }
}

fn cap_refuses(prealloc: bool) {
    let fs = SimFs::new();
    let cap = 8 * 1024;
    let opts = Options::default()
        .segment_size(2048)
        .disk_cap(cap)
        .preallocate(prealloc);
    let wal = open(&fs, opts);
    let mut last = 0;
    let full = loop {
        match wal.append(&[1u8; 200]) {
            Ok(l) => last = l,
            Err(e) => break e,
        }
        assert!(
            fs.used_bytes() <= cap + 8192,
            "never above the cap (+ cursor file)"
        );
    };
    assert!(full.is_full(), "{full}");
    assert!(!wal.stats().poisoned, "Full is backpressure, not a failure");
    assert!(wal.stats().disk_used <= cap);
    // Nothing was dropped: every record is still there.
    assert_eq!(lsns(&read_all(&wal, 1)), (1..=last).collect::<Vec<_>>());
    assert!(wal.append(&[3u8; 200]).unwrap_err().is_full(), "still full");
    // The shipper catches up: space is reclaimed and appends succeed again.
    wal.ack(last).unwrap();
    let next = wal.append(&[2u8; 200]).unwrap();
    assert_eq!(next, last + 1);
    assert!(wal.losses().is_empty());
}

#[test]
fn drop_oldest_records_the_loss() {
    let fs = SimFs::new();
    let cap = 8 * 1024;
    let opts = Options::default()
        .segment_size(2048)
        .disk_cap(cap)
        .full_policy(FullPolicy::DropOldest);
    let wal = open(&fs, opts.clone());
    for i in 0..200u32 {
        wal.append(&i.to_le_bytes().repeat(50)).unwrap();
        assert!(wal.stats().disk_used <= cap);
    }
    let st = wal.stats();
    assert!(st.dropped_records > 0);
    let losses = wal.losses();
    assert!(losses.iter().all(|l| l.cause == LossCause::DroppedOldest));
    assert_eq!(
        losses.iter().map(|l| l.records()).sum::<u64>(),
        st.dropped_records
    );
    // The stalled reader sees the loss first, then the surviving records, contiguous.
    let entries = read_all(&wal, 1);
    match &entries[0] {
        Entry::Loss(l) => {
            assert_eq!((l.first, l.cause), (1, LossCause::DroppedOldest));
            assert_eq!(lsns(&entries)[0], l.last + 1);
        }
        other => panic!("expected a loss first, got {other:?}"),
    }
    assert_eq!(*lsns(&entries).last().unwrap(), 200);
    drop(wal);
    // After a restart the gap is still reported.
    let (_wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap();
    assert_eq!(rep.losses.len(), 1);
    assert_eq!(rep.losses[0].first, 1);
    assert_eq!(
        fs.image(Path::new(DIR))
            .iter()
            .filter(|(n, _)| n.ends_with(".wal"))
            .count(),
        rep.segments
    );
}

#[test]
fn payload_corruption_in_the_tail_reports_the_exact_loss() {
    let fs = SimFs::new();
    let wal = open(&fs, Options::default());
    for i in 1..=10u8 {
        wal.append(&[i; 100]).unwrap();
    }
    drop(wal);
    // Flip a byte inside record 4's payload (frames are 24 + 104 bytes after a 64-byte header).
    let seg = Path::new(DIR).join(sentra_wal::format::segment_name(1));
    let mut bytes = fs.file(&seg).unwrap();
    bytes[64 + 3 * 128 + 24 + 50] ^= 0x01;
    fs.put_file(&seg, &bytes);
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, Options::default()).unwrap();
    // Only the damaged record is lost: the valid records behind it are kept (moved to a new
    // segment), and its LSN is never handed out again.
    assert_eq!(rep.losses.len(), 1, "{rep:?}");
    assert_eq!((rep.losses[0].first, rep.losses[0].last), (4, 4));
    assert_eq!(rep.losses[0].cause, LossCause::Corrupt);
    assert_eq!(rep.new_losses, rep.losses);
    assert_eq!(rep.next_lsn, 11, "lost LSNs are never handed out again");
    assert_eq!(wal.append(b"new").unwrap(), 11);
    let entries = read_all(&wal, 1);
    assert_eq!(lsns(&entries), vec![1, 2, 3, 5, 6, 7, 8, 9, 10, 11]);
    assert!(entries.iter().any(
        |e| matches!(e, Entry::Loss(l) if (l.first, l.last, l.cause) == (4, 4, LossCause::Corrupt))
    ));
    // Reopening again still opens, keeps the order, and does not report the loss as new.
    drop(wal);
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, Options::default()).unwrap();
    assert_eq!(rep.next_lsn, 12);
    assert!(rep.new_losses.is_empty(), "{rep:?}");
    assert!(rep.damage.is_empty(), "{rep:?}");
    assert_eq!(
        lsns(&read_all(&wal, 1)),
        vec![1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    );
}

#[test]
fn disk_full_under_drop_oldest_drops_oldest_segments_like_the_cap() {
    let fs = SimFs::new();
    let opts = Options::default()
        .segment_size(1024)
        .disk_cap(1 << 20)
        .full_policy(FullPolicy::DropOldest);
    let wal = open(&fs, opts);
    for i in 0..40u8 {
        wal.append(&[i; 100]).unwrap();
    }
    // The file system fills up far below the cap.
    fs.set_capacity(Some(fs.used_bytes() + 300));
    let mut refused = 0;
    let mut stored = Vec::new();
    for i in 40..120u8 {
        match wal.append(&[i; 100]) {
            Ok(l) => stored.push((l, i)),
            Err(e) => {
                assert!(e.is_disk_full() || e.is_full(), "{e}");
                refused += 1;
            }
        }
    }
    assert!(!wal.stats().poisoned);
    assert!(
        stored.len() >= 70,
        "the oldest segments make room for new records ({} stored, {refused} refused)",
        stored.len()
    );
    assert!(wal.stats().dropped_records > 0);
    assert!(
        wal.losses()
            .iter()
            .any(|l| l.cause == LossCause::DroppedOldest && l.first == 1),
        "{:?}",
        wal.losses()
    );
    // The newest records are all there, with their payloads, in order.
    let entries = read_all(&wal, 1);
    let got: Vec<(u64, u8)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Record(r) => Some((r.lsn(), r.payload()[0])),
            _ => None,
        })
        .collect();
    let tail = &got[got.len() - 10..];
    assert_eq!(tail, &stored[stored.len() - 10..]);
}

#[test]
fn enospc_creating_a_segment_is_retried_and_open_survives_it() {
    let fs = SimFs::new();
    let opts = Options::default().segment_size(512).disk_cap(1 << 20);
    let wal = open(&fs, opts.clone());
    for i in 1..=3u8 {
        wal.append(&[i; 50]).unwrap();
    }
    // The rotation seals the segment, then cannot create the next one.
    fs.inject(FaultOp::Create, 0, ErrorKind::StorageFull, true);
    let e = wal.rotate().unwrap_err();
    assert!(e.is_disk_full(), "{e:?}");
    let e = wal.append(&[9; 50]).unwrap_err();
    assert!(e.is_disk_full(), "{e:?}");
    assert!(!wal.stats().poisoned);
    wal.close().unwrap();
    // Reopen while the disk is still full: the tail is sealed and no new segment can be
    // created, yet the log opens (its records can be shipped) and refuses appends cleanly.
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts.clone()).unwrap();
    assert_eq!((rep.records, rep.next_lsn), (3, 4), "{rep:?}");
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 3]);
    assert!(wal.append(&[9; 50]).unwrap_err().is_disk_full());
    // Space returns: the segment is created and the next LSN follows without a gap.
    fs.clear_faults();
    assert_eq!(wal.append(&[4; 50]).unwrap(), 4);
    wal.close().unwrap();
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap();
    assert!(rep.losses.is_empty() && rep.damage.is_empty(), "{rep:?}");
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2, 3, 4]);
}

#[test]
fn preallocation_that_does_not_fit_falls_back_to_growing_and_survives_a_power_cut() {
    // Preallocation is the default. 64 KiB segments on a file system with 40 KiB left: the
    // zero fill fails with ENOSPC, is released, the segment grows; appends take what fits.
    let fs = SimFs::new();
    let opts = Options::default().segment_size(64 << 10).disk_cap(1 << 30);
    fs.set_capacity(Some(40 << 10));
    let (wal, _) = Wal::open_with(Arc::new(fs.clone()), DIR, opts.clone()).unwrap();
    assert_eq!(wal.stats().growing_segments, 1, "{:?}", wal.stats());
    assert!(
        fs.used_bytes() < 16 << 10,
        "the partial fill was released: {} bytes used",
        fs.used_bytes()
    );
    let mut acked = Vec::new();
    let err = loop {
        let i = acked.len() as u64 + 1;
        match wal.append(&[i as u8; 300]) {
            Ok(lsn) => {
                assert_eq!(lsn, i);
                acked.push(lsn);
            }
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "the file system never filled up");
    };
    assert!(err.is_disk_full(), "{err:?}");
    assert!(!wal.stats().poisoned);
    assert!(acked.len() > 50, "appends went on in the growing segment");
    // Power cut with the disk full: recovery returns exactly the acknowledged records.
    drop(wal);
    fs.crash(11);
    fs.set_capacity(None);
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap();
    assert!(rep.losses.is_empty() && rep.damage.is_empty(), "{rep:?}");
    assert_eq!(lsns(&read_all(&wal, 1)), acked);
    // With room again the (continued) tail is preallocated and appends go on.
    assert_eq!(wal.stats().growing_segments, 0);
    assert_eq!(wal.append(b"more").unwrap(), acked.len() as u64 + 1);
}

#[test]
fn efbig_while_preallocating_falls_back_to_growing() {
    let fs = SimFs::new();
    let opts = Options::default().segment_size(64 << 10).disk_cap(1 << 30);
    let wal = open(&fs, opts.clone());
    wal.append(b"first").unwrap();
    // Rotation writes the seal, then the next segment's header, then its zero fill: the
    // fill (third write) hits a file-size limit.
    fs.inject(FaultOp::Write, 2, ErrorKind::FileTooLarge, false);
    wal.rotate().unwrap();
    assert_eq!(wal.stats().growing_segments, 1);
    assert_eq!(wal.append(b"second").unwrap(), 2);
    assert!(!wal.stats().poisoned);
    wal.close().unwrap();
    let (wal, rep) = Wal::open_with(Arc::new(fs.clone()), DIR, opts).unwrap();
    assert!(rep.losses.is_empty() && rep.damage.is_empty(), "{rep:?}");
    assert_eq!(lsns(&read_all(&wal, 1)), vec![1, 2]);
}
