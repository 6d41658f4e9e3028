//! The replay window against a model: a set of every stored seq per agent and the rules of
//! the crate docs, over random interleavings of pushes, failed group commits (undone with
//! `put_back`), restarts (the window rebuilt from a durable image kept the way the writer's
//! statements keep tables `agents`, `seq_ranges` and `accepted`), sequence resets and
//! agent deletions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use sentra_core::AgentId;

use super::{AgentMark, Ledger, Outcome, ReplayWindow};

/// The rules, written over a plain set of stored seqs.
#[derive(Clone, Debug, Default)]
struct Model {
    stored: BTreeSet<u64>,
    fingerprints: HashMap<u64, [u8; 32]>,
    floor: u64,
    ledger: Ledger,
    last_seen: i64,
}

impl Model {
    fn high_water(&self) -> u64 {
        self.stored.last().copied().unwrap_or(0)
    }

    #[allow(clippy::cast_sign_loss)]
    fn decide(&mut self, seq: u64, fp: [u8; 32], received: i64, window: u64, jump: u64) -> Outcome {
        self.last_seen = self.last_seen.max(received);
        let h = self.high_water();
        if self.stored.contains(&seq) {
            // the fingerprint is remembered only above the floor
            let conflict = seq > self.floor && self.fingerprints[&seq] != fp;
            return Outcome::Duplicate { conflict };
        }
        let mut gap_from = None;
        if seq > h {
            let clock = (received.max(0) as u64).saturating_mul(1000);
            let limit = h.max(clock).saturating_add(jump);
            if seq > limit {
                self.ledger.rejected_ahead += 1;
                return Outcome::Rejected {
                    ahead: true,
                    high_water: h,
                    limit,
                };
            }
            if h > 0 && seq > h + 1 {
                gap_from = Some(h + 1);
                self.ledger.gaps += 1;
                self.ledger.missing += seq - h - 1;
            }
        } else if seq <= self.floor {
            self.ledger.rejected_stale += 1;
            return Outcome::Rejected {
                ahead: false,
                high_water: h,
                limit: self.floor,
            };
        } else {
            self.ledger.missing = self.ledger.missing.saturating_sub(1);
        }
        self.ledger.accepted += 1;
        self.stored.insert(seq);
        self.fingerprints.insert(seq, fp);
        let h = self.high_water();
        self.floor = self.floor.max(h.saturating_sub(window));
        Outcome::Accepted {
            high_water: h,
            gap_from,
        }
    }

    fn reset(&mut self) -> u64 {
        let h = self.high_water();
        self.stored.clear();
        self.fingerprints.clear();
        self.floor = 0;
        self.ledger.missing = 0;
        h
    }
}

#[derive(Clone, Debug)]
enum Op {
    Push {
        agent: usize,
        seq: u64,
        fp: u8,
        received: i64,
    },
    /// The window rebuilt from its durable parts, as the writer does at start, with this
    /// (maybe changed) `Config::replay_window`.
    Restart(u64),
    /// A group whose commit failed: decided, then every mark put back.
    Failed(Vec<(usize, u64)>),
    Reset(usize),
    Forget(usize),
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1u64..120,
        1 => 120u64..10_000,
        1 => Just(u64::MAX),
        1 => (1u64 << 40)..(1u64 << 45),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0usize..3, seq(), 0u8..3, prop_oneof![4 => Just(0i64), 1 => -5i64..5, 1 => Just(i64::MAX)])
            .prop_map(|(agent, seq, fp, received)| Op::Push { agent, seq, fp, received }),
        2 => (1u64..10).prop_map(Op::Restart),
        1 => prop::collection::vec((0usize..3, seq()), 1..6).prop_map(Op::Failed),
        1 => (0usize..3).prop_map(Op::Reset),
        1 => (0usize..3).prop_map(Op::Forget),
    ]
}

fn agents() -> Vec<AgentId> {
    (0..3)
        .map(|i| AgentId::new(format!("agent-{i}")).unwrap())
        .collect()
}

/// The durable image: tables `agents` (scalars and ledger), `seq_ranges` and `accepted`,
/// changed as the writer's commit, reset and delete statements change them.
#[derive(Debug, Default)]
struct Durable {
    agents: BTreeMap<usize, (u64, u64, i64, Ledger)>,
    ranges: BTreeMap<(usize, u64), u64>,
    accepted: BTreeMap<(usize, u64), [u8; 32]>,
}

impl Durable {
    /// One committed decision of agent `i` (its mark `before` and now `m`).
    fn commit(
        &mut self,
        i: usize,
        before: Option<&AgentMark>,
        m: &AgentMark,
        stored: Option<(u64, [u8; 32])>,
    ) {
        // the window's fingerprint first, then the pruning below the (new) floor
        if let Some((seq, fp)) = stored {
            self.accepted.entry((i, seq)).or_insert(fp);
        }
        self.agents
            .insert(i, (m.high_water, m.floor, m.last_seen, m.ledger.clone()));
        if m.floor > 0 {
            self.accepted.retain(|(a, s), _| *a != i || *s > m.floor);
        }
        let (removed, written) = m.range_changes(before);
        for lo in removed {
            self.ranges.remove(&(i, lo));
        }
        for (lo, hi) in written {
            self.ranges.insert((i, lo), hi);
        }
    }

    fn reset(&mut self, i: usize) {
        if let Some((hw, floor, _, ledger)) = self.agents.get_mut(&i) {
            *hw = 0;
            *floor = 0;
            ledger.missing = 0;
        }
        self.ranges.retain(|(a, _), _| *a != i);
        self.accepted.retain(|(a, _), _| *a != i);
    }

    fn delete(&mut self, i: usize) {
        self.agents.remove(&i);
        self.reset(i);
    }

    /// The writer's start: a window rebuilt from the image.
    fn load(&self, window: u64, jump: u64, agents: &[AgentId]) -> ReplayWindow {
        let mut w = ReplayWindow::new(window, jump);
        for (i, (hw, floor, last_seen, ledger)) in &self.agents {
            w.restore(
                agents[*i].clone(),
                AgentMark::restore(*hw, *floor, *last_seen, ledger.clone()),
            );
        }
        for ((i, lo), hi) in &self.ranges {
            w.restore_range(&agents[*i], *lo, *hi);
        }
        for ((i, seq), fp) in &self.accepted {
            w.restore_seen(&agents[*i], *seq, *fp);
        }
        w
    }
}

fn check(w: &ReplayWindow, agent: &AgentId, model: Option<&Model>) -> Result<(), TestCaseError> {
    let Some(model) = model else {
        prop_assert!(w.get(agent).is_none());
        return Ok(());
    };
    let Some(m) = w.get(agent) else {
        prop_assert!(model.stored.is_empty() && model.ledger == Ledger::default());
        return Ok(());
    };
    // ranges: disjoint, never adjacent, exactly the stored set
    let mut prev: Option<u64> = None;
    let mut from_ranges = BTreeSet::new();
    for (&lo, &hi) in &m.stored {
        prop_assert!(lo <= hi);
        if let Some(p) = prev {
            prop_assert!(
                lo > p.saturating_add(1),
                "ranges overlap or touch: {:?}",
                m.stored
            );
        }
        prev = Some(hi);
        prop_assert!(hi - lo < 100_000, "test seqs make small ranges");
        from_ranges.extend(lo..=hi);
    }
    prop_assert_eq!(&from_ranges, &model.stored);
    prop_assert_eq!(m.high_water, model.high_water());
    prop_assert_eq!(m.floor, model.floor);
    prop_assert_eq!(&m.ledger, &model.ledger);
    prop_assert_eq!(m.last_seen, model.last_seen);
    let above_floor: BTreeSet<u64> = model.stored.range(model.floor + 1..).copied().collect();
    let seen: BTreeSet<u64> = m.seen.keys().copied().collect();
    prop_assert_eq!(seen, above_floor);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_match_the_model(
        first_window in 1u64..10,
        jump in prop_oneof![Just(50u64), Just(1u64 << 42)],
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let agents = agents();
        let mut window = first_window;
        let mut w = ReplayWindow::new(window, jump);
        let mut durable = Durable::default();
        let mut models: Vec<Option<Model>> = vec![None; 3];
        for op in ops {
            match op {
                Op::Push { agent, seq, fp, received } => {
                    let model = models[agent].get_or_insert_with(Model::default);
                    let want = model.decide(seq, [fp; 32], received, window, jump);
                    let before = w.get(&agents[agent]).cloned();
                    let got = w.decide(&agents[agent], seq, [fp; 32], received);
                    prop_assert_eq!(got, want, "agent {} seq {}", agent, seq);
                    let stored = matches!(got, Outcome::Accepted { .. }).then_some((seq, [fp; 32]));
                    let m = w.get(&agents[agent]).expect("decided");
                    durable.commit(agent, before.as_ref(), m, stored);
                }
                Op::Failed(group) => {
                    let saved: Vec<_> = agents.iter().map(|a| w.get(a).cloned()).collect();
                    for (agent, seq) in group {
                        w.decide(&agents[agent], seq, [7; 32], 0);
                    }
                    for (a, m) in agents.iter().zip(saved) {
                        w.put_back(a.clone(), m);
                    }
                }
                Op::Restart(new_window) => {
                    window = new_window;
                    w = durable.load(window, jump, &agents);
                }
                Op::Reset(agent) => {
                    let want = models[agent].as_mut().map(Model::reset);
                    prop_assert_eq!(w.reset(&agents[agent]), want);
                    durable.reset(agent);
                }
                Op::Forget(agent) => {
                    let had = models[agent].take().is_some();
                    prop_assert_eq!(w.forget(&agents[agent]), had);
                    durable.delete(agent);
                }
            }
            for (i, a) in agents.iter().enumerate() {
                check(&w, a, models[i].as_ref())?;
            }
        }
    }

    /// A failed commit puts the saved marks back: deciding again gives the same answers.
    #[test]
    fn put_back_undoes_a_group(
        before in prop::collection::vec(1u64..60, 0..40),
        group in prop::collection::vec(1u64..80, 1..20),
    ) {
        let agent = &agents()[0];
        let mut w = ReplayWindow::new(8, 1 << 42);
        for s in before {
            w.decide(agent, s, [0; 32], 0);
        }
        let saved = w.get(agent).cloned();
        let first: Vec<Outcome> = group.iter().map(|s| w.decide(agent, *s, [1; 32], 0)).collect();
        w.put_back(agent.clone(), saved.clone());
        prop_assert_eq!(w.get(agent).cloned(), saved);
        let again: Vec<Outcome> = group.iter().map(|s| w.decide(agent, *s, [1; 32], 0)).collect();
        prop_assert_eq!(first, again);
    }
}

#[test]
fn the_documented_cases() {
    let a = &agents()[0];
    let mut w = ReplayWindow::new(4, 1 << 42);
    // a far-ahead first batch (2⁶⁴ − 1) cannot silence the agent
    assert!(matches!(
        w.decide(a, u64::MAX, [0; 32], 1_000),
        Outcome::Rejected { ahead: true, .. }
    ));
    assert_eq!(
        w.decide(a, 10, [0; 32], 1_000),
        Outcome::Accepted {
            high_water: 10,
            gap_from: None
        }
    );
    assert_eq!(
        w.decide(a, 13, [0; 32], 1_000),
        Outcome::Accepted {
            high_water: 13,
            gap_from: Some(11)
        }
    );
    // overtaken within the window: stored once, then a duplicate
    assert!(matches!(
        w.decide(a, 12, [0; 32], 1_000),
        Outcome::Accepted { .. }
    ));
    assert_eq!(
        w.decide(a, 12, [0; 32], 1_000),
        Outcome::Duplicate { conflict: false }
    );
    assert_eq!(
        w.decide(a, 12, [9; 32], 1_000),
        Outcome::Duplicate { conflict: true }
    );
    // below the window and never stored: its own status, not "already stored"
    assert!(matches!(
        w.decide(a, 5, [0; 32], 1_000),
        Outcome::Rejected { ahead: false, .. }
    ));
    assert_eq!(w.get(a).unwrap().ledger.missing, 1);
    assert_eq!(w.reset(a), Some(13));
    assert!(matches!(
        w.decide(a, 5, [0; 32], 1_000),
        Outcome::Accepted { high_water: 5, .. }
    ));
}
