//! Exhaustive damage sweeps over a small multi-segment image (in memory, `SimFs`): truncation
//! of every file at every byte, every single-bit flip, garbage and zero tails. Recovery must
//! always open, never return a wrong record, keep every record before a tail cut, and never
//! lose data silently.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sentra_wal::sim::SimFs;
use sentra_wal::{Entry, Options, Wal, format};

const DIR: &str = "/wal";

fn opts() -> Options {
    Options::default()
        .segment_size(256)
        .disk_cap(1 << 20)
        .max_record_len(1024)
}

thread_local! {
    static PREALLOC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn build_opts() -> Options {
    opts().preallocate(PREALLOC.with(std::cell::Cell::get))
}

/// Builds the reference image: several sealed segments, an open tail, a cursor at 5.
type Image = Vec<(String, Vec<u8>)>;

fn build_image() -> (Image, BTreeMap<u64, Vec<u8>>) {
    let fs = SimFs::new();
    let (wal, _) = Wal::open_with(Arc::new(fs.clone()), DIR, build_opts()).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..24u64 {
        let p: Vec<u8> = (0..(1 + (i * 7) % 23))
            .map(|j| (i * 31 + j) as u8)
            .collect();
        let lsn = wal.append(&p).unwrap();
        model.insert(lsn, p);
    }
    wal.ack(5).unwrap();
    wal.close().unwrap();
    let image = fs.image(Path::new(DIR));
    let segs = image.iter().filter(|(n, _)| n.ends_with(".wal")).count();
    assert!(segs >= 4, "image must span several segments, has {segs}");
    (image, model)
}

struct Outcome {
    records: Vec<u64>,
    /// Loss entries the reader yielded.
    losses: Vec<sentra_wal::Loss>,
    acked: u64,
    lost: u64,
    report_flags_damage: bool,
    next_lsn: u64,
}

/// Opens a (damaged) image, reads everything, checks invariants that hold for any damage.
fn check(
    image: &[(String, Vec<u8>)],
    model: &BTreeMap<u64, Vec<u8>>,
    append_after: bool,
) -> Outcome {
    let fs = SimFs::new();
    for (n, b) in image {
        fs.put_file(&Path::new(DIR).join(n), b);
    }
    let (wal, rep) =
        Wal::open_with(Arc::new(fs.clone()), DIR, opts()).expect("recovery must always open");
    let mut records = Vec::new();
    let mut losses = Vec::new();
    let mut lost = 0;
    let mut expect = rep.acked_lsn + 1;
    for e in wal.read_from(rep.acked_lsn + 1) {
        match e.expect("reading a recovered log never fails on data damage") {
            Entry::Record(r) => {
                assert!(r.lsn() >= expect, "records out of order");
                assert_eq!(
                    model.get(&r.lsn()),
                    Some(&r.payload().to_vec()),
                    "wrong payload at lsn {}",
                    r.lsn()
                );
                records.push(r.lsn());
                expect = r.lsn() + 1;
            }
            Entry::Loss(l) => {
                assert!(
                    l.first >= expect && l.last >= l.first,
                    "loss {l:?} overlaps delivered data"
                );
                lost += l.records();
                expect = l.last + 1;
                losses.push(l);
            }
            other => panic!("{other:?}"),
        }
    }
    let report_flags_damage =
        !rep.damage.is_empty() || !rep.losses.is_empty() || rep.truncated_bytes > 0;
    if append_after {
        // The log keeps working after recovery.
        let lsn = wal.append(b"after").expect("append after recovery");
        assert_eq!(lsn, rep.next_lsn);
        assert!(lsn > *records.last().unwrap_or(&0));
    }
    Outcome {
        records,
        losses,
        acked: rep.acked_lsn,
        lost,
        report_flags_damage,
        next_lsn: rep.next_lsn,
    }
}

fn assert_not_silent(o: &Outcome, model: &BTreeMap<u64, Vec<u8>>, acked_floor: u64, what: &str) {
    let expected: u64 = model.keys().filter(|l| **l > acked_floor).count() as u64;
    if (o.records.len() as u64) < expected {
        assert!(
            o.report_flags_damage || o.lost > 0,
            "{what}: records vanished silently ({} of {expected})",
            o.records.len()
        );
    }
}

#[test]
fn truncate_every_file_at_every_byte() {
    truncate_sweep();
}

/// The same sweep over an image whose tail segment is preallocated (zero filled).
#[test]
fn truncate_every_byte_preallocated() {
    PREALLOC.with(|p| p.set(true));
    truncate_sweep();
}

fn truncate_sweep() {
    let (image, model) = build_image();
    let tail = image
        .iter()
        .filter(|(n, _)| n.ends_with(".wal"))
        .map(|(n, _)| n.clone())
        .max()
        .unwrap();
    let mut cases = 0;
    for (idx, (name, bytes)) in image.iter().enumerate() {
        for cut in 0..=bytes.len() {
            let mut img = image.clone();
            img[idx].1.truncate(cut);
            let o = check(&img, &model, true);
            cases += 1;
            if *name == tail {
                // A torn tail: every record whose frame lies wholly before the cut survives,
                // nothing is reported lost, the tail is truncated to a frame boundary.
                let first = format::parse_segment_name(name).unwrap();
                let mut end = format::SEGMENT_HEADER_LEN;
                let mut whole = 0;
                for lsn in first.. {
                    let Some(p) = model.get(&lsn) else { break };
                    end += format::frame_len(p.len());
                    if end <= cut {
                        whole += 1;
                    }
                }
                let from_tail = o.records.iter().filter(|l| **l >= first).count();
                if cut >= format::SEGMENT_HEADER_LEN {
                    assert_eq!(from_tail, whole, "tail cut at {cut}");
                    assert_eq!(o.lost, 0, "tail cut at {cut}");
                    assert_eq!(o.next_lsn, first + whole as u64);
                }
                let before = model.keys().filter(|l| **l > 5 && **l < first).count();
                assert_eq!(
                    o.records.len() - from_tail,
                    before,
                    "sealed segments untouched by a tail cut"
                );
            }
            // Cutting the tail at a frame boundary is indistinguishable from a crash before
            // those appends; anywhere else a shortened file must be reported.
            if name.ends_with(".wal") && *name != tail {
                assert_not_silent(&o, &model, 5, &format!("{name} cut at {cut}"));
            }
        }
    }
    assert!(cases > 500, "{cases}");
}

#[test]
fn flip_every_bit() {
    let (image, model) = build_image();
    let mut cases = 0;
    for (idx, (name, bytes)) in image.iter().enumerate() {
        // The cursor file is two 4 KiB slots; the first 36 bytes carry the position, the
        // next 8 (at least) the list of losses already reported.
        let bits: Vec<usize> = if name == "cursor" {
            (0..44 * 8).chain(4096 * 8..(4096 + 44) * 8).collect()
        } else {
            (0..bytes.len() * 8).collect()
        };
        for bit in bits {
            let mut img = image.clone();
            img[idx].1[bit / 8] ^= 1 << (bit % 8);
            let o = check(&img, &model, false);
            // No flip anywhere — the cursor included — may drop records silently: a flip that
            // moved the acknowledged position forward would skip unshipped records unnoticed.
            assert!(
                o.acked <= 5,
                "{name} bit {bit}: acknowledged position moved forward to {}",
                o.acked
            );
            assert_not_silent(&o, &model, 5, &format!("{name} bit {bit}"));
            cases += 1;
        }
    }
    assert!(cases > 5_000, "{cases}");
}

#[test]
fn garbage_and_zero_tails_and_stray_files() {
    let (image, model) = build_image();
    let tail_idx = image
        .iter()
        .rposition(|(n, _)| n.ends_with(".wal"))
        .unwrap();
    let mut seed = 0x1234_5678_u64;
    for extra in [1usize, 7, 8, 23, 24, 100, 511, 512, 4096] {
        for zero in [true, false] {
            let mut img = image.clone();
            for _ in 0..extra {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                img[tail_idx]
                    .1
                    .push(if zero { 0 } else { (seed >> 33) as u8 });
            }
            let o = check(&img, &model, true);
            assert_eq!(o.records.len(), 19, "appended junk must not cost records");
            assert_eq!(o.lost, 0);
        }
    }
    // A missing middle segment, alone: a Missing loss covering exactly its LSNs.
    let segs: Vec<usize> = (0..image.len())
        .filter(|&i| image[i].0.ends_with(".wal"))
        .collect();
    let (mid, after) = (segs[1], segs[2]);
    let first = format::parse_segment_name(&image[mid].0).unwrap();
    let last = format::parse_segment_name(&image[after].0).unwrap() - 1;
    assert!(first > 5, "the middle segment holds unacknowledged records");
    let mut img = image.clone();
    img.remove(mid);
    let o = check(&img, &model, true);
    assert_eq!(
        o.losses
            .iter()
            .map(|l| (l.first, l.last, l.cause))
            .collect::<Vec<_>>(),
        vec![(first, last, sentra_wal::LossCause::Missing)],
        "missing segment {}",
        image[mid].0
    );
    let expected: Vec<u64> = model
        .keys()
        .copied()
        .filter(|l| *l > 5 && !(first..=last).contains(l))
        .collect();
    assert_eq!(o.records, expected, "every other record delivered");
    // Empty files, foreign files, a segment file that is all zeros.
    let mut img = image.clone();
    img.push(("notes.txt".into(), b"hello".to_vec()));
    img.push((format::segment_name(10_000), vec![0; 300]));
    let o = check(&img, &model, true);
    assert_eq!(
        o.records.len(),
        19,
        "stray files cost no record: {:?}",
        o.losses
    );
    assert_eq!(o.lost, 0);
    let mut img = image.clone();
    for f in &mut img {
        f.1.clear();
    }
    check(&img, &model, true);
}
