//! kill -9 loop on real files: this test binary re-executes itself as a child that appends
//! from several threads and acknowledges as a shipper would, printing every LSN it got back
//! from `append` and every cursor position `ack` persisted. The parent SIGKILLs it at a random
//! moment, reopens the log and checks that every printed (acknowledged) record survived, in
//! order and byte for byte, and that the cursor did not move back. At least 30 cycles, bounded
//! to well under 60 seconds. (`harness = false`: the binary is its own child.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sentra_wal::{Entry, Options, Wal};

const CHILD_ENV: &str = "SENTRA_WAL_KILL_CHILD";

/// Odd cycles preallocate segments, even ones append to growing files; both meet in the same
/// directory.
fn opts(cycle: u32) -> Options {
    Options::default()
        .segment_size(64 << 10)
        .disk_cap(256 << 20)
        .preallocate(cycle % 2 == 1)
}

fn payload(cycle: u32, thread: u32, i: u32) -> Vec<u8> {
    let mut p = format!("{cycle}:{thread}:{i}:").into_bytes();
    p.resize(
        64 + ((i * 37 + thread * 11) % 300) as usize,
        b'a' + (i % 26) as u8,
    );
    p
}

fn child(dir: &Path, cycle: u32) -> ! {
    let wal = loop {
        match Wal::open(dir, opts(cycle)) {
            Ok((w, _)) => break Arc::new(w),
            // The killed predecessor's lock is released by the kernel when it dies.
            Err(sentra_wal::Error::Locked(_)) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("child open: {e}"),
        }
    };
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for t in 0..4u32 {
        let (wal, out) = (wal.clone(), out.clone());
        handles.push(std::thread::spawn(move || {
            for i in 0.. {
                let p = payload(cycle, t, i);
                let lsn = if i % 5 == 4 {
                    let batch = [p.clone(), payload(cycle, t + 100, i)];
                    let r = wal.append_batch(&batch).expect("append_batch");
                    let mut o = out.lock().unwrap();
                    writeln!(o, "rec {} {}", r.first, hex(&batch[0])).unwrap();
                    writeln!(o, "rec {} {}", r.last, hex(&batch[1])).unwrap();
                    o.flush().unwrap();
                    continue;
                } else {
                    wal.append(&p).expect("append")
                };
                let mut o = out.lock().unwrap();
                writeln!(o, "rec {lsn} {}", hex(&p)).unwrap();
                o.flush().unwrap();
            }
        }));
    }
    // Shipper: read from the cursor, "ship", acknowledge.
    let mut next = wal.acked_lsn() + 1;
    loop {
        let mut reader = wal.read_from(next);
        let mut last = None;
        for e in reader.by_ref().take(50) {
            if let Entry::Record(r) = e.expect("read") {
                last = Some(r.lsn());
            }
        }
        if let Some(l) = last {
            wal.ack(l).expect("ack");
            let mut o = out.lock().unwrap();
            writeln!(o, "ack {l}").unwrap();
            o.flush().unwrap();
            next = l + 1;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let cycle = std::env::var("SENTRA_WAL_KILL_CYCLE")
            .unwrap()
            .parse()
            .unwrap();
        child(Path::new(&dir), cycle);
    }
    // `cargo test -- --list` and filters: behave like a harness with one test.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("kill_loop: test");
        return;
    }
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"kill_loop".contains(a.as_str()))
    {
        println!(
            "running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out"
        );
        return;
    }
    println!("running 1 test");
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut acked_records: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut max_ack = 0u64;
    let mut seed = 0x9e37_79b9_u64 ^ u64::from(std::process::id());
    let mut cycles = 0u32;
    let mut total_verified = 0usize;
    let mut total_acked = 0usize;
    while cycles < 30 || (cycles < 40 && started.elapsed() < Duration::from_secs(20)) {
        assert!(
            started.elapsed() < Duration::from_secs(55),
            "kill loop exceeded its time bound"
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_ms = 40 + seed % 160;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, &dir)
            .env("SENTRA_WAL_KILL_CYCLE", cycles.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n') {
                    lines.push(line.trim_end().to_owned());
                }
                line.clear();
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "child must have been killed, not exited: {status:?}"
        );
        for line in reader.join().unwrap() {
            let mut it = line.split(' ');
            match (it.next(), it.next(), it.next()) {
                (Some("rec"), Some(l), Some(h)) => {
                    let lsn: u64 = l.parse().unwrap();
                    let prev = acked_records.insert(lsn, unhex(h));
                    assert!(prev.is_none(), "lsn {lsn} acknowledged twice");
                    total_acked += 1;
                }
                (Some("ack"), Some(l), None) => max_ack = max_ack.max(l.parse().unwrap()),
                _ => panic!("bad child line {line:?}"),
            }
        }
        // Recover and verify.
        let (wal, rep) = Wal::open(&dir, opts(cycles)).expect("recovery always opens");
        assert!(
            rep.acked_lsn >= max_ack,
            "cursor moved back: {} < {max_ack}",
            rep.acked_lsn
        );
        assert!(rep.losses.is_empty(), "cycle {cycles}: {rep:?}");
        let mut present = BTreeMap::new();
        let mut prev = 0;
        for e in wal.read_from(rep.acked_lsn + 1) {
            match e.unwrap() {
                Entry::Record(r) => {
                    assert!(r.lsn() > prev, "order");
                    prev = r.lsn();
                    present.insert(r.lsn(), r.into_payload());
                }
                other => panic!("cycle {cycles}: unexpected {other:?}"),
            }
        }
        for (lsn, p) in acked_records.range(rep.acked_lsn + 1..) {
            assert_eq!(
                present.get(lsn),
                Some(p),
                "cycle {cycles}: acknowledged lsn {lsn} lost or changed"
            );
            total_verified += 1;
        }
        wal.close().unwrap();
        acked_records = acked_records.split_off(&(rep.acked_lsn + 1));
        cycles += 1;
    }
    println!(
        "test kill_loop ... ok ({cycles} kill -9 cycles, {total_acked} appends acknowledged, {total_verified} record checks after kills, {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!("\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
