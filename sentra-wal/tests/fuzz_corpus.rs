//! Replays the committed fuzz corpus of `fuzz/fuzz_targets/wal_recovery.rs` without
//! cargo-fuzz, and checks the seed images the corpus started from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sentra_wal::sim::SimFs;
use sentra_wal::{Options, Wal};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wal_recovery")
}

#[test]
fn replay_committed_corpus() {
    let dir = corpus_dir();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| sentra_wal::fuzz_recovery(&data));
        assert!(r.is_ok(), "corpus input {} panicked", path.display());
        n += 1;
    }
    assert!(n >= 5, "corpus at {} has only {n} inputs", dir.display());
}

/// Real logs in the fuzz input encoding: all records come back.
fn seed_images() -> Vec<(String, Vec<u8>, u64)> {
    let mut out = Vec::new();
    for (name, records, seg, ack) in [
        ("empty", 0u64, 4096u64, 0u64),
        ("one_record", 1, 4096, 0),
        ("multi_segment", 60, 512, 0),
        ("multi_segment_acked", 60, 512, 25),
        ("batches", 40, 1024, 10),
    ] {
        let fs = SimFs::new();
        let opts = Options::default()
            .segment_size(seg)
            .disk_cap(1 << 20)
            .max_record_len(1024);
        let (wal, _) = Wal::open_with(Arc::new(fs.clone()), "/wal", opts).unwrap();
        if name == "batches" {
            for i in 0..records / 4 {
                let b: Vec<Vec<u8>> = (0..4)
                    .map(|j| vec![(i * 4 + j) as u8; 1 + (j as usize * 9)])
                    .collect();
                wal.append_batch(&b).unwrap();
            }
        } else {
            for i in 0..records {
                wal.append(&vec![i as u8; 1 + (i as usize * 13) % 90])
                    .unwrap();
            }
        }
        if ack > 0 {
            wal.ack(ack).unwrap();
        }
        wal.close().unwrap();
        let img = sentra_wal::fuzz_image(&fs.image(Path::new("/wal")));
        out.push((name.to_owned(), img, records - ack));
    }
    out
}

#[test]
fn seed_images_recover_every_record() {
    let write = std::env::var_os("SENTRA_WAL_WRITE_CORPUS").is_some();
    for (name, img, unacked) in seed_images() {
        assert_eq!(sentra_wal::fuzz_recovery(&img), unacked, "{name}");
        if write {
            std::fs::create_dir_all(corpus_dir()).unwrap();
            std::fs::write(corpus_dir().join(format!("seed_{name}")), &img).unwrap();
        }
    }
}
