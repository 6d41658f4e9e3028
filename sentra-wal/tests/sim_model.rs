//! Model-based power-loss test: random operation sequences (append, batch append, ack, rotate,
//! injected I/O faults, crash, clean reopen) run against the WAL on a simulated file system that
//! drops unsynced data and tears sectors at a crash, checked against an in-memory model after
//! every recovery.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::Arc;

use proptest::prelude::*;
use sentra_wal::sim::{FaultOp, SimFs};
use sentra_wal::{Entry, Error, Options, Wal};

const DIR: &str = "/wal";

#[derive(Debug, Clone)]
enum Op {
    Append(u8, usize),
    Batch(u8, usize),
    Ack(u8),
    Rotate,
    Fault(FaultOp, u64),
    Crash(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), 1usize..120).prop_map(|(b, n)| Op::Append(b, n)),
        3 => (any::<u8>(), 1usize..12).prop_map(|(b, n)| Op::Batch(b, n)),
        3 => any::<u8>().prop_map(Op::Ack),
        1 => Just(Op::Rotate),
        1 => (prop_oneof![
                Just(FaultOp::Write), Just(FaultOp::Sync), Just(FaultOp::Create),
                Just(FaultOp::SyncDir), Just(FaultOp::Remove)
             ], 0u64..4).prop_map(|(o, s)| Op::Fault(o, s)),
        2 => any::<u64>().prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn opts(prealloc: bool) -> Options {
    Options::default()
        .segment_size(300)
        .disk_cap(1 << 20)
        .max_record_len(1024)
        .preallocate(prealloc)
}

fn payload(b: u8, n: usize, salt: usize) -> Vec<u8> {
    (0..n).map(|i| b.wrapping_add((i + salt) as u8)).collect()
}

struct Harness {
    fs: SimFs,
    wal: Option<Wal>,
    /// Every append that returned Ok, by LSN, above the acknowledged cursor.
    model: BTreeMap<u64, Vec<u8>>,
    acked: u64,
    /// Acks that failed: the cursor may or may not have moved to one of them.
    maybe_acked: Vec<u64>,
    /// Payloads of appends that failed: they may or may not survive, in order.
    maybe: Vec<Vec<u8>>,
    poisoned: bool,
    counter: usize,
    prealloc: bool,
}

impl Harness {
    fn open(&mut self) -> Result<(), TestCaseError> {
        self.fs.clear_faults();
        let (wal, rep) = Wal::open_with(Arc::new(self.fs.clone()), DIR, opts(self.prealloc))
            .map_err(|e| TestCaseError::fail(format!("recovery failed to open: {e}")))?;
        // The cursor is the last successful ack or one of the failed ones after it.
        prop_assert!(
            rep.acked_lsn == self.acked || self.maybe_acked.contains(&rep.acked_lsn),
            "acked {} model {} maybe {:?}",
            rep.acked_lsn,
            self.acked,
            self.maybe_acked
        );
        self.acked = rep.acked_lsn;
        self.model.retain(|l, _| *l > self.acked);
        self.maybe_acked.clear();
        // Losses may only concern records that were never acknowledged (a torn sector in the
        // middle of unsynced data, with later unsynced sectors surviving, looks like damage).
        let durable_last = self
            .model
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.acked);
        prop_assert!(
            rep.losses.iter().all(|l| l.first > durable_last),
            "loss of acknowledged data: {:?} (durable up to {})",
            rep,
            durable_last
        );
        // Everything acknowledged-as-appended is there, in order; extra records are failed
        // appends that happened to survive.
        let mut got = Vec::new();
        for e in wal.read_from(self.acked + 1) {
            match e.map_err(|e| TestCaseError::fail(e.to_string()))? {
                Entry::Record(r) => got.push((r.lsn(), r.into_payload())),
                Entry::Loss(l) => prop_assert!(l.first > durable_last, "reader loss {:?}", l),
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            }
        }
        let expected: Vec<(u64, Vec<u8>)> =
            self.model.iter().map(|(l, p)| (*l, p.clone())).collect();
        prop_assert!(
            got.len() >= expected.len(),
            "lost acknowledged records: got {} want {}",
            got.len(),
            expected.len()
        );
        prop_assert_eq!(&got[..expected.len()], &expected[..]);
        let mut maybe = self.maybe.iter();
        for (lsn, p) in &got[expected.len()..] {
            prop_assert!(maybe.any(|m| m == p), "record {} was never appended", lsn);
            self.model.insert(*lsn, p.clone());
        }
        self.maybe.clear();
        let last = self
            .model
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.acked);
        let lost_end = rep.losses.iter().map(|l| l.last).max().unwrap_or(0);
        prop_assert_eq!(rep.next_lsn, last.max(lost_end) + 1);
        self.wal = Some(wal);
        self.poisoned = false;
        Ok(())
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("open")
    }

    fn after_error(&mut self, e: &Error) -> Result<(), TestCaseError> {
        if e.is_disk_full() {
            // ENOSPC on a write: refused, not poisoned (the log stays usable).
            return Ok(());
        }
        prop_assert!(
            matches!(e, Error::Io { .. } | Error::Poisoned(_)),
            "unexpected error {e}"
        );
        self.poisoned = true;
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("op {op:?}");
        }
        self.counter += 1;
        match *op {
            Op::Append(b, n) => {
                let p = payload(b, n, self.counter);
                match self.wal().append(&p) {
                    Ok(lsn) => {
                        prop_assert!(!self.poisoned, "append succeeded on a poisoned log");
                        prop_assert!(
                            lsn > self.model.keys().next_back().copied().unwrap_or(self.acked)
                        );
                        self.model.insert(lsn, p);
                    }
                    Err(e) => {
                        self.after_error(&e)?;
                        self.maybe.push(p);
                    }
                }
            }
            Op::Batch(b, n) => {
                let ps: Vec<Vec<u8>> = (0..n)
                    .map(|i| payload(b, 1 + (i * 13) % 50, self.counter + i))
                    .collect();
                match self.wal().append_batch(&ps) {
                    Ok(r) => {
                        prop_assert!(!self.poisoned);
                        prop_assert_eq!(r.len(), n as u64);
                        for (i, p) in ps.into_iter().enumerate() {
                            self.model.insert(r.first + i as u64, p);
                        }
                    }
                    Err(e) => {
                        self.after_error(&e)?;
                        self.maybe.extend(ps);
                    }
                }
            }
            Op::Ack(f) => {
                let last = self.model.keys().next_back().copied().unwrap_or(self.acked);
                let target = self.acked + (last - self.acked) * u64::from(f) / 255;
                match self.wal().ack(target) {
                    Ok(()) => {
                        prop_assert!(!self.poisoned);
                        if target > self.acked {
                            self.acked = target;
                            self.model.retain(|l, _| *l > target);
                        }
                    }
                    Err(e) => {
                        self.after_error(&e)?;
                        self.maybe_acked.push(target);
                    }
                }
            }
            Op::Rotate => {
                if let Err(e) = self.wal().rotate() {
                    self.after_error(&e)?;
                }
            }
            Op::Fault(op, skip) => {
                let kind = if op == FaultOp::Write {
                    ErrorKind::StorageFull
                } else {
                    ErrorKind::Other
                };
                self.fs.inject(op, skip, kind, false);
            }
            Op::Crash(seed) => {
                self.fs.crash(seed);
                drop(self.wal.take());
                self.open()?;
            }
            Op::Reopen => {
                let r = self.wal.take().expect("open").close();
                if !self.poisoned {
                    // A fault may still fire during the final sync.
                    if let Err(e) = r {
                        self.after_error(&e)?;
                    }
                }
                self.open()?;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn crash_recovery_matches_model(ops in proptest::collection::vec(op(), 1..60), final_seed: u64, prealloc: bool) {
        let mut h = Harness {
            fs: SimFs::new(),
            wal: None,
            model: BTreeMap::new(),
            acked: 0,
            maybe_acked: Vec::new(),
            maybe: Vec::new(),
            poisoned: false,
            counter: 0,
            prealloc,
        };
        h.open()?;
        for op in &ops {
            h.apply(op)?;
        }
        h.apply(&Op::Crash(final_seed))?;
    }
}
