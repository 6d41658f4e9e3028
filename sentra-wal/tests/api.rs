//! Public API behaviour on the real file system.

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use sentra_wal::{Entry, Error, Options, SyncPolicy, Wal};

fn records(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read_from(from)
        .map(|e| match e.expect("read") {
            Entry::Record(r) => (r.lsn(), r.into_payload()),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat(60)).into_bytes()
}

#[test]
fn append_read_ack_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().segment_size(4096).disk_cap(1 << 20);
    let (wal, rep) = Wal::open(dir.path(), opts.clone()).unwrap();
    assert_eq!((rep.records, rep.next_lsn, rep.acked_lsn), (0, 1, 0));
    for i in 1..=100u64 {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    let got = records(&wal, 1);
    assert_eq!(got.len(), 100);
    assert_eq!(got[41], (42, payload(42)));
    assert_eq!(records(&wal, 95).len(), 6);
    let segs_before = wal.stats().segments;
    assert!(segs_before > 1, "4 KiB segments must have rotated");
    wal.ack(60).unwrap();
    assert!(
        wal.stats().segments < segs_before,
        "acked segments are deleted"
    );
    assert_eq!(records(&wal, 61).first().map(|r| r.0), Some(61));
    assert!(matches!(
        wal.ack(1000),
        Err(Error::AckBeyondEnd {
            lsn: 1000,
            committed: 100
        })
    ));
    wal.close().unwrap();

    let (wal, rep) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(rep.acked_lsn, 60);
    assert_eq!(rep.next_lsn, 101);
    assert_eq!(rep.unacked_records, 40);
    assert!(
        rep.losses.is_empty() && rep.damage.is_empty() && rep.truncated_bytes == 0,
        "{rep:?}"
    );
    let got = records(&wal, 61);
    assert_eq!(got.len(), 40);
    assert_eq!(got[39], (100, payload(100)));
    assert_eq!(wal.append(b"more").unwrap(), 101);
}

#[test]
fn rejects_bad_records_and_second_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), Options::default().max_record_len(100)).unwrap();
    assert!(matches!(wal.append(b""), Err(Error::EmptyRecord)));
    assert!(matches!(
        wal.append(&[0; 101]),
        Err(Error::RecordTooLarge {
            len: 101,
            limit: 100
        })
    ));
    assert!(matches!(
        wal.append_batch(Vec::<Vec<u8>>::new()),
        Err(Error::EmptyRecord)
    ));
    assert!(matches!(
        Wal::open(dir.path(), Options::default()),
        Err(Error::Locked(_))
    ));
    assert!(matches!(
        Wal::open(
            dir.path().join("x"),
            Options::default().segment_size(1 << 20).disk_cap(1 << 20)
        ),
        Err(Error::InvalidConfig(_))
    ));
    // A reader outliving its `Wal` does not keep the directory locked.
    let reader = wal.read_from(1);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), Options::default()).unwrap();
    drop(reader);
    wal.append(b"x").unwrap();
}

#[test]
fn concurrent_appenders_get_unique_ordered_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        Options::default().segment_size(64 << 10).disk_cap(64 << 20),
    )
    .unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut lsns = Vec::new();
                for i in 0..50u8 {
                    lsns.push(wal.append(&[t, i]).unwrap());
                }
                lsns
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let got = records(&wal, 1);
    assert_eq!(got.len(), 400);
    // Per thread, payload order follows LSN order.
    for t in 0..8u8 {
        let seq: Vec<u8> = got
            .iter()
            .filter(|(_, p)| p[0] == t)
            .map(|(_, p)| p[1])
            .collect();
        assert_eq!(seq, (0..50).collect::<Vec<_>>());
    }
    assert!(wal.stats().groups <= 400);
}

struct NoopWake;
impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

#[test]
fn async_append_resolves_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), Options::default()).unwrap();
    let a = wal.append_async(b"one");
    let b = wal.append_batch_async([b"two".as_slice(), b"three"]);
    let bad = wal.append_async(b"");
    // Each future resolves only once its records are durable: checked right after each one,
    // before anything else could have synced them.
    let ra = block_on(a).unwrap();
    assert_eq!((ra.first, ra.last), (1, 1));
    assert!(
        wal.stats().durable_lsn >= ra.last,
        "resolved before durable: {:?}",
        wal.stats()
    );
    let r = block_on(b).unwrap();
    assert_eq!((r.first, r.last, r.len()), (2, 3, 3 - 1));
    assert!(
        wal.stats().durable_lsn >= r.last,
        "resolved before durable: {:?}",
        wal.stats()
    );
    assert!(matches!(block_on(bad), Err(Error::EmptyRecord)));
    assert_eq!(wal.stats().durable_lsn, 3);
}

/// Blocked appenders share one wake-up per answered group: when groups are split (a tiny
/// `max_group_bytes`), each answer also wakes appenders of later groups, which must go back to
/// sleep and still get exactly their own LSN; async appends in between resolve too.
#[test]
fn split_groups_wake_every_blocked_appender_with_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        Options::default()
            .segment_size(64 << 10)
            .disk_cap(64 << 20)
            .max_group_bytes(64),
    )
    .unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..24u8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..20u8 {
                    if i % 5 == 4 {
                        let r = block_on(wal.append_async(&[t, i])).unwrap();
                        got.push((r.first, i));
                    } else {
                        got.push((wal.append(&[t, i]).unwrap(), i));
                    }
                }
                (t, got)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in threads {
        let (t, got) = h.join().unwrap();
        for (lsn, i) in got {
            all.push((lsn, vec![t, i]));
        }
    }
    all.sort_unstable();
    assert_eq!(
        all.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        (1..=480).collect::<Vec<_>>()
    );
    // Every appender got the LSN of its own record.
    assert_eq!(records(&wal, 1), all);
    assert!(wal.stats().groups > 24, "{:?}", wal.stats());
}

#[test]
fn rotate_and_sync_policies() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Interval(Duration::from_millis(5)),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), Options::default().sync_policy(policy)).unwrap();
        wal.append(b"a").unwrap();
        wal.rotate().unwrap();
        wal.rotate().unwrap(); // empty active segment: no-op
        wal.append(b"b").unwrap();
        assert_eq!(wal.stats().segments, 2);
        if policy == SyncPolicy::Always {
            assert_eq!(wal.stats().durable_lsn, 2);
        }
        assert!(wal.wait_committed(2, Duration::from_secs(1)));
        assert!(!wal.wait_committed(3, Duration::from_millis(10)));
        wal.close().unwrap();
        let (wal, rep) = Wal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(rep.records, 2, "{policy:?}: clean close keeps everything");
        assert_eq!(records(&wal, 1).len(), 2);
    }
}

#[test]
fn inspect_sees_live_log_without_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        Options::default().segment_size(4096).disk_cap(1 << 20),
    )
    .unwrap();
    for _ in 0..50 {
        wal.append(&[7u8; 200]).unwrap();
    }
    wal.ack(10).unwrap();
    let ins = sentra_wal::inspect_dir(dir.path()).unwrap();
    assert!(ins.is_clean(), "{ins:?}");
    assert_eq!(ins.acked_lsn, Some(10));
    assert_eq!(ins.segments.last().unwrap().next_lsn, 51);
    assert!(ins.segments.iter().rev().skip(1).all(|s| s.sealed));
    // The writer is still usable: inspection took no lock.
    wal.append(b"x").unwrap();
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Wal>();
    send_sync::<Error>();
    send_sync::<sentra_wal::RecoveryReport>();
    send::<sentra_wal::Reader>();
    send::<sentra_wal::AppendFuture>();
    // The blocking API is usable from many threads through a shared reference.
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), Options::default()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| wal.append(b"a").unwrap());
        s.spawn(|| wal.append(b"b").unwrap());
    });
    assert_eq!(wal.committed_lsn(), 2);
}
