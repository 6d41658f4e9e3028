//! The replay / de-duplication window, sans I/O: the per-agent decision for a pushed
//! `(agent, seq, fingerprint, receive time)` against the agent's durable high-water mark,
//! the exact set of stored seqs (as ranges) and the recent fingerprint window.
//!
//! The rules are the crate docs' "Sequence numbers". This module only decides and keeps
//! the in-memory state; the writer makes the state durable in the same transaction as the
//! batch ([`crate::backend::Commit`]) and rebuilds it from those durable parts at start
//! ([`AgentMark::restore`], [`ReplayWindow::restore_range`], [`ReplayWindow::restore_seen`]).
//! Property-tested against a model (a set of every stored seq) in `replay/tests.rs`.

use std::collections::{BTreeMap, HashMap};

use sentra_core::AgentId;

/// What happened to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored; `gap_from` is the first skipped seq when this seq jumped over missing ones.
    Accepted {
        high_water: u64,
        gap_from: Option<u64>,
    },
    /// Already stored (`conflict`: from a different envelope).
    Duplicate { conflict: bool },
    /// Refused: too far ahead of the high-water mark (`ahead`) or below it and never stored.
    Rejected {
        ahead: bool,
        high_water: u64,
        limit: u64,
    },
}

/// Durable per-agent counters (see [`AgentLedger`](crate::AgentLedger)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
    pub(crate) accepted: u64,
    pub(crate) gaps: u64,
    pub(crate) missing: u64,
    pub(crate) rejected_stale: u64,
    pub(crate) rejected_ahead: u64,
}

/// The replay state of one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AgentMark {
    /// Highest seq stored; 0: none (seqs start at 1).
    pub(crate) high_water: u64,
    /// Every seq ever stored (since the last sequence reset), as inclusive ranges lo → hi,
    /// disjoint and never adjacent.
    pub(crate) stored: BTreeMap<u64, u64>,
    pub(crate) ledger: Ledger,
    /// Every seq at or below this counts as delivered (it only moves up, so a smaller
    /// window after a restart cannot re-open seqs whose records were pruned).
    pub(crate) floor: u64,
    /// Accepted seqs above `floor`, with fingerprints.
    pub(crate) seen: BTreeMap<u64, [u8; 32]>,
    /// Latest receive time of any batch of this agent (Unix ms).
    pub(crate) last_seen: i64,
}

impl AgentMark {
    /// The durable scalar part of a mark, as loaded at start; ranges and the fingerprint
    /// window are added with [`ReplayWindow::restore_range`] / [`ReplayWindow::restore_seen`].
    pub(crate) fn restore(high_water: u64, floor: u64, last_seen: i64, ledger: Ledger) -> Self {
        Self {
            high_water,
            floor,
            last_seen,
            ledger,
            ..Self::default()
        }
    }

    pub(crate) fn is_stored(&self, seq: u64) -> bool {
        self.stored
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, hi)| *hi >= seq)
    }

    /// Records `seq` (not yet stored) in the ranges, merging neighbours.
    fn insert_stored(&mut self, seq: u64) {
        let below = self
            .stored
            .range(..seq)
            .next_back()
            .filter(|(_, hi)| hi.checked_add(1) == Some(seq))
            .map(|(lo, _)| *lo);
        let above = seq
            .checked_add(1)
            .and_then(|n| self.stored.get(&n).map(|hi| (n, *hi)));
        let lo = below.unwrap_or(seq);
        let hi = match above {
            Some((n, hi)) => {
                self.stored.remove(&n);
                hi
            }
            None => seq,
        };
        self.stored.insert(lo, hi);
    }

    /// Decides `seq` and, when it is stored, records it (see the crate docs).
    #[allow(
        clippy::cast_sign_loss,
        reason = "the receive time is clamped to >= 0 before the cast"
    )]
    fn decide(
        &mut self,
        seq: u64,
        fingerprint: [u8; 32],
        received_ms: i64,
        window: u64,
        max_jump: u64,
    ) -> Outcome {
        self.last_seen = self.last_seen.max(received_ms);
        if self.is_stored(seq) {
            return Outcome::Duplicate {
                conflict: self.seen.get(&seq).is_some_and(|fp| *fp != fingerprint),
            };
        }
        let mut gap_from = None;
        if seq > self.high_water {
            // Legitimate seqs are `seq_base + LSN`, `seq_base ≤ max(clock_ms × 1000,
            // previous base + 2⁴⁰)`: see `Config::max_seq_jump`.
            let clock = (received_ms.max(0) as u64).saturating_mul(1000);
            let limit = self.high_water.max(clock).saturating_add(max_jump);
            if seq > limit {
                self.ledger.rejected_ahead += 1;
                return Outcome::Rejected {
                    ahead: true,
                    high_water: self.high_water,
                    limit,
                };
            }
            if self.high_water > 0 && seq > self.high_water + 1 {
                gap_from = Some(self.high_water + 1);
                self.ledger.gaps += 1;
                self.ledger.missing += seq - self.high_water - 1;
            }
        } else if seq <= self.floor {
            self.ledger.rejected_stale += 1;
            return Outcome::Rejected {
                ahead: false,
                high_water: self.high_water,
                limit: self.floor,
            };
        } else {
            // a seq overtaken by a later one (pipelined pushes) arrives within the window
            self.ledger.missing = self.ledger.missing.saturating_sub(1);
        }
        self.ledger.accepted += 1;
        self.insert_stored(seq);
        self.high_water = self.high_water.max(seq);
        self.seen.insert(seq, fingerprint);
        self.floor = self.floor.max(self.high_water.saturating_sub(window));
        let floor = self.floor;
        while self
            .seen
            .first_key_value()
            .is_some_and(|(s, _)| *s <= floor)
        {
            self.seen.pop_first();
        }
        Outcome::Accepted {
            high_water: self.high_water,
            gap_from,
        }
    }

    /// What the durable copy of the stored-seq ranges must change to go from `before`'s
    /// ranges (`None`: the agent had no mark) to this mark's: the ranges to delete (by
    /// `lo`) and the ranges to write (insert or replace by `lo`).
    pub(crate) fn range_changes(&self, before: Option<&Self>) -> (Vec<u64>, Vec<(u64, u64)>) {
        let empty = BTreeMap::new();
        let old = before.map_or(&empty, |b| &b.stored);
        let removed = old
            .keys()
            .filter(|lo| !self.stored.contains_key(lo))
            .copied()
            .collect();
        let written = self
            .stored
            .iter()
            .filter(|(lo, hi)| old.get(lo) != Some(hi))
            .map(|(lo, hi)| (*lo, *hi))
            .collect();
        (removed, written)
    }

    /// Forgets the high-water mark, floor, window and stored seqs (the ledger stays, its
    /// `missing` count restarts); returns the previous high-water mark.
    fn reset(&mut self) -> u64 {
        let previous = self.high_water;
        self.high_water = 0;
        self.floor = 0;
        self.ledger.missing = 0;
        self.seen.clear();
        self.stored.clear();
        previous
    }
}

/// The replay state of every agent, with the two bounds of the decision.
#[derive(Debug)]
pub(crate) struct ReplayWindow {
    marks: HashMap<AgentId, AgentMark>,
    /// [`Config::replay_window`](crate::Config::replay_window), at least 1.
    window: u64,
    /// [`Config::max_seq_jump`](crate::Config::max_seq_jump).
    max_jump: u64,
}

impl ReplayWindow {
    pub(crate) fn new(window: u64, max_jump: u64) -> Self {
        Self {
            marks: HashMap::new(),
            window: window.max(1),
            max_jump,
        }
    }

    /// The decision for `(agent, seq)` received at `received_ms`; an accepted seq is
    /// recorded at once (so a later batch of the same group sees it). The caller makes the
    /// new state durable with the batch, or puts the previous mark back
    /// ([`ReplayWindow::put_back`]) when that fails.
    pub(crate) fn decide(
        &mut self,
        agent: &AgentId,
        seq: u64,
        fingerprint: [u8; 32],
        received_ms: i64,
    ) -> Outcome {
        let (window, max_jump) = (self.window, self.max_jump);
        let mark = match self.marks.get_mut(agent) {
            Some(m) => m,
            None => self.marks.entry(agent.clone()).or_default(),
        };
        mark.decide(seq, fingerprint, received_ms, window, max_jump)
    }

    /// The mark of `agent`, if it was ever heard of.
    pub(crate) fn get(&self, agent: &AgentId) -> Option<&AgentMark> {
        self.marks.get(agent)
    }

    /// The high-water mark of `agent` (0: none).
    pub(crate) fn high_water(&self, agent: &AgentId) -> u64 {
        self.marks.get(agent).map_or(0, |m| m.high_water)
    }

    /// Whether `agent` has a mark.
    pub(crate) fn contains(&self, agent: &AgentId) -> bool {
        self.marks.contains_key(agent)
    }

    /// Every agent's mark.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&AgentId, &AgentMark)> {
        self.marks.iter()
    }

    /// Puts back a mark saved before a decision (`None`: the agent had none), undoing
    /// decisions whose commit failed.
    pub(crate) fn put_back(&mut self, agent: AgentId, before: Option<AgentMark>) {
        match before {
            Some(m) => {
                self.marks.insert(agent, m);
            }
            None => {
                self.marks.remove(&agent);
            }
        }
    }

    /// Restores an agent's durable mark (start-up).
    pub(crate) fn restore(&mut self, agent: AgentId, mark: AgentMark) {
        self.marks.insert(agent, mark);
    }

    /// Restores one durable stored-seq range of a restored agent (start-up).
    pub(crate) fn restore_range(&mut self, agent: &AgentId, lo: u64, hi: u64) {
        if let Some(m) = self.marks.get_mut(agent) {
            m.stored.insert(lo, hi);
        }
    }

    /// Restores one durable fingerprint of the window of a restored agent (start-up).
    pub(crate) fn restore_seen(&mut self, agent: &AgentId, seq: u64, fingerprint: [u8; 32]) {
        if let Some(m) = self.marks.get_mut(agent) {
            m.seen.insert(seq, fingerprint);
        }
    }

    /// Forgets `agent`'s sequence state (see [`Ingest::reset_sequence`](crate::Ingest::reset_sequence));
    /// `None` when the agent has no mark, else the previous high-water mark.
    pub(crate) fn reset(&mut self, agent: &AgentId) -> Option<u64> {
        self.marks.get_mut(agent).map(AgentMark::reset)
    }

    /// Forgets `agent` entirely (agent deleted); whether it had a mark.
    pub(crate) fn forget(&mut self, agent: &AgentId) -> bool {
        self.marks.remove(agent).is_some()
    }
}

#[cfg(test)]
mod tests;
