//! Damage to a written log on the real file system (issue 10 items 7, 8 and 9): bytes are
//! flipped in the files of a closed log, the log is reopened, and every fsynced record must be
//! either recovered or counted in a reported loss; LSNs are never handed out twice; cursor
//! resets and losses are reported exactly once.

use std::path::Path;

use sentra_wal::{Entry, Loss, LossCause, Options, RecoveryReport, Wal, format};

fn opts() -> Options {
    Options::default()
        .segment_size(64 << 10)
        .disk_cap(1 << 30)
        .preallocate(true)
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![(i % 253) as u8; 40 + (i as usize * 11) % 90];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// A log with records 1..=100 in a sealed segment and 101..=189 in the (unsealed) tail.
fn build(dir: &Path) {
    let (wal, _) = Wal::open(dir, opts()).expect("open");
    for i in 1..=100 {
        assert_eq!(wal.append(&payload(i)).expect("append"), i);
    }
    wal.rotate().expect("rotate");
    for i in 101..=189 {
        assert_eq!(wal.append(&payload(i)).expect("append"), i);
    }
    wal.close().expect("close");
}

fn seg(dir: &Path, first: u64) -> std::path::PathBuf {
    dir.join(format::segment_name(first))
}

fn flip(path: &Path, at: usize, mask: u8) {
    let mut b = std::fs::read(path).expect("read");
    b[at] ^= mask;
    std::fs::write(path, b).expect("write");
}

/// Reads everything; checks each record's payload; returns (record LSNs, loss entries).
fn read(wal: &Wal) -> (Vec<u64>, Vec<Loss>) {
    let mut lsns = Vec::new();
    let mut losses = Vec::new();
    for e in wal.read_from(wal.acked_lsn() + 1) {
        match e.expect("read") {
            Entry::Record(r) => {
                assert_eq!(r.payload(), payload(r.lsn()), "lsn {} payload", r.lsn());
                lsns.push(r.lsn());
            }
            Entry::Loss(l) => losses.push(l),
            other => panic!("unexpected {other:?}"),
        }
    }
    (lsns, losses)
}

fn reopen(dir: &Path) -> (Wal, RecoveryReport) {
    Wal::open(dir, opts()).expect("recovery always opens")
}

/// The reported losses as (first, last, cause).
fn loss_ranges(rep: &RecoveryReport) -> Vec<(u64, u64, LossCause)> {
    rep.losses
        .iter()
        .map(|l| (l.first, l.last, l.cause))
        .collect()
}

/// Every LSN in 1..=189 is a record or inside a reported loss; the next append gets 190.
fn all_accounted(wal: &Wal, rep: &RecoveryReport) {
    let (lsns, _) = read(wal);
    for l in 1..=189 {
        assert!(
            lsns.contains(&l) || rep.losses.iter().any(|x| x.first <= l && l <= x.last),
            "lsn {l} vanished silently: {rep:?}"
        );
    }
    assert_eq!(wal.append(b"next").expect("append"), 190, "no LSN reused");
}

#[test]
fn damaged_tail_header_outside_the_salt_is_repaired_without_loss() {
    let dir = tempfile::tempdir().expect("tmp");
    build(dir.path());
    // Magic and creation time: the salt is intact, the records validate with it.
    flip(&seg(dir.path(), 101), 0, 0xff);
    flip(&seg(dir.path(), 101), 41, 0x10);
    let (wal, rep) = reopen(dir.path());
    assert!(!rep.damage.is_empty(), "the damage is reported: {rep:?}");
    assert!(rep.losses.is_empty(), "{rep:?}");
    assert_eq!(rep.next_lsn, 190, "{rep:?}");
    let (lsns, losses) = read(&wal);
    assert_eq!(lsns, (1..=189).collect::<Vec<_>>());
    assert!(losses.is_empty());
    all_accounted(&wal, &rep);
    wal.close().expect("close");
    // Repaired for good: the next open finds nothing.
    let (_wal, rep) = reopen(dir.path());
    assert!(rep.damage.is_empty() && rep.losses.is_empty(), "{rep:?}");
}

#[test]
fn destroyed_tail_header_is_a_reported_loss_and_lsns_are_not_reused() {
    let dir = tempfile::tempdir().expect("tmp");
    build(dir.path());
    // Salt destroyed (8 bits of it): the frames cannot be verified any more.
    flip(&seg(dir.path(), 101), 33, 0xff);
    let (wal, rep) = reopen(dir.path());
    assert_eq!(
        loss_ranges(&rep),
        vec![(101, 189, LossCause::Corrupt)],
        "{rep:?}"
    );
    assert_eq!(rep.new_losses, rep.losses);
    assert!(rep.next_lsn >= 190, "{rep:?}");
    let (lsns, losses) = read(&wal);
    assert_eq!(lsns, (1..=100).collect::<Vec<_>>());
    assert_eq!(losses.len(), 1);
    assert_eq!((losses[0].first, losses[0].last), (101, 189));
    all_accounted(&wal, &rep);
}

/// Offset of the frame of `lsn` in the tail segment (first LSN 101).
fn frame_offset(bytes: &[u8], lsn: u64) -> usize {
    let mut off = format::SEGMENT_HEADER_LEN;
    for l in 101..lsn {
        off += format::frame_len(payload(l).len());
    }
    assert_eq!(
        u64::from_le_bytes(bytes[off + 8..off + 16].try_into().expect("8")),
        lsn
    );
    off
}

#[test]
fn damaged_length_field_in_the_middle_loses_only_that_record() {
    for mask in [0x01_u8, 0x40, 0xff] {
        let dir = tempfile::tempdir().expect("tmp");
        build(dir.path());
        let path = seg(dir.path(), 101);
        let bytes = std::fs::read(&path).expect("read");
        let at = frame_offset(&bytes, 150);
        flip(&path, at, mask);
        let (wal, rep) = reopen(dir.path());
        assert_eq!(
            loss_ranges(&rep),
            vec![(150, 150, LossCause::Corrupt)],
            "mask {mask:#x}: {rep:?}"
        );
        let (lsns, _) = read(&wal);
        let want: Vec<u64> = (1..=189).filter(|&l| l != 150).collect();
        assert_eq!(
            lsns, want,
            "mask {mask:#x}: valid records after the damage are kept"
        );
        all_accounted(&wal, &rep);
        wal.close().expect("close");
        // Reported once: the next open knows the loss already.
        let (_wal, rep) = reopen(dir.path());
        assert!(rep.new_losses.is_empty(), "mask {mask:#x}: {rep:?}");
    }
}

#[test]
fn torn_tail_is_truncated_silently() {
    let dir = tempfile::tempdir().expect("tmp");
    build(dir.path());
    let path = seg(dir.path(), 101);
    let bytes = std::fs::read(&path).expect("read");
    let at = frame_offset(&bytes, 189);
    // The last frame was only partly written.
    std::fs::write(&path, &bytes[..at + 30]).expect("cut");
    let (wal, rep) = reopen(dir.path());
    assert!(rep.losses.is_empty(), "{rep:?}");
    assert_eq!(rep.next_lsn, 189);
    let (lsns, _) = read(&wal);
    assert_eq!(lsns, (1..=188).collect::<Vec<_>>());
}

#[test]
fn cursor_reset_is_reported_once() {
    let dir = tempfile::tempdir().expect("tmp");
    build(dir.path());
    {
        let (wal, _) = reopen(dir.path());
        wal.ack(120).expect("ack");
        wal.ack(130).expect("ack");
        wal.close().expect("close");
    }
    // Both slots damaged.
    let cursor = dir.path().join("cursor");
    flip(&cursor, 20, 0xff);
    flip(&cursor, format::CURSOR_SLOT_LEN + 20, 0xff);
    let (wal, rep) = reopen(dir.path());
    assert!(rep.cursor_reset, "{rep:?}");
    assert!(
        rep.damage.iter().any(|d| d.contains("cursor")),
        "the reset is described: {rep:?}"
    );
    // Acknowledged records may be sent again, but nothing is called lost: segment 1 (fully
    // acknowledged) was deleted, so the position restarts at the first record held.
    assert!(rep.losses.is_empty(), "{rep:?}");
    assert_eq!(rep.acked_lsn, 100, "{rep:?}");
    wal.close().expect("close");
    let (_wal, rep) = reopen(dir.path());
    assert!(!rep.cursor_reset, "reported once: {rep:?}");
    assert!(rep.damage.is_empty(), "{rep:?}");
    assert_eq!(rep.acked_lsn, 100);
}

/// The tail segment is preallocated (the default) and a power cut tore a record in its zero
/// fill: either the last record reached the disk only in part (the rest of its frame is
/// still zero), or a frame-like header with a bad checksum sits after the last whole record.
/// Recovery keeps every whole record, cuts the torn bytes, reports no loss; appends continue
/// after the last whole record in a segment preallocated again, and the next open is clean.
#[test]
fn torn_record_in_a_preallocated_zero_filled_tail() {
    for torn_last in [true, false] {
        let dir = tempfile::tempdir().expect("tmp");
        build(dir.path());
        let path = seg(dir.path(), 101);
        let mut bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), 64 << 10, "tail segment preallocated");
        let at = frame_offset(&bytes, 189);
        let end = at + format::frame_len(payload(189).len());
        assert!(
            bytes[end..].iter().all(|b| *b == 0),
            "zero fill after the frames"
        );
        let whole = if torn_last {
            // Only the first 30 bytes of the last frame reached the disk.
            bytes[at + 30..end].fill(0);
            188
        } else {
            // A frame header (length 100, LSN 190) whose checksum does not match.
            bytes[end..end + 4].copy_from_slice(&100u32.to_le_bytes());
            bytes[end + 4..end + 8].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
            bytes[end + 8..end + 16].copy_from_slice(&190u64.to_le_bytes());
            bytes[end + 16] = 1;
            bytes[end + 24..end + 60].fill(0x77);
            189
        };
        std::fs::write(&path, &bytes).expect("tear");
        let (wal, rep) = reopen(dir.path());
        assert!(rep.losses.is_empty(), "torn_last {torn_last}: {rep:?}");
        assert_eq!(rep.next_lsn, whole + 1, "torn_last {torn_last}: {rep:?}");
        assert!(rep.truncated_bytes > 0, "torn bytes cut: {rep:?}");
        let (lsns, _) = read(&wal);
        assert_eq!(
            lsns,
            (1..=whole).collect::<Vec<_>>(),
            "torn_last {torn_last}"
        );
        for i in whole + 1..=whole + 3 {
            assert_eq!(wal.append(&payload(i)).expect("append"), i);
        }
        wal.close().expect("close");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            64 << 10,
            "preallocated again after the cut"
        );
        let (wal, rep) = reopen(dir.path());
        assert!(rep.damage.is_empty(), "torn_last {torn_last}: {rep:?}");
        assert!(rep.losses.is_empty(), "torn_last {torn_last}: {rep:?}");
        let (lsns, _) = read(&wal);
        assert_eq!(
            lsns,
            (1..=whole + 3).collect::<Vec<_>>(),
            "torn_last {torn_last}"
        );
    }
}
