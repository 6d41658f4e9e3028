//! The pure evaluator: observations and an explicit `now` in, transitions out.
//!
//! The evaluator keeps the latest observations it needs (per series, per WireGuard peer,
//! interface and agent) and one small state machine per (rule, matching entity):
//! inactive → pending (condition true, waiting for `for`) → firing → resolved (condition
//! false for `keep_firing_for`, the hysteresis against flapping) → inactive. It has no clock
//! and does no I/O: the caller passes the receive time of each batch and the `now` of each
//! tick, and sends the returned [`Transition`]s. Its whole state is a serde value
//! ([`State`]), so a store can persist it and a restart neither loses nor repeats
//! notifications.
//!
//! Data older than [`Config::stale_after`] is *unknown*: an alert over it keeps its current
//! phase instead of resolving or firing (an offline agent raises `agent_offline`, not a
//! storm of resolved peer alerts). A peer missing from the latest report of an agent that
//! still reports was removed: its alerts resolve. `absent` and `agent_offline` are about missing data and
//! are always evaluated.
//!
//! Performance: rules are indexed by metric name (or built-in domain); label matchers run
//! once per (rule, entity) when the entity is first seen, never per tick. A tick is a linear
//! walk over the matched pairs.

use std::{collections::HashMap, fmt, time::Duration};

use sentra_core::{Batch, UnixMillis, Value};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    rule::{Domain, Rule, RuleKind, Severity},
    template::Context,
};

/// Evaluator settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Observations older than this are unknown (default 5 min).
    pub stale_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(300),
        }
    }
}

/// A stable alert identity: FNV-1a 64 of the rule name and the alert's sorted labels.
/// Stable across restarts, platforms and versions of Rust.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(
    clippy::exhaustive_structs,
    reason = "a value newtype around the 64-bit hash; the field is the value"
)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Fingerprint {
    /// The fingerprint of `rule` with `labels` (sorted by name).
    #[must_use]
    pub fn of(rule: &str, labels: &[(String, String)]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(rule.as_bytes());
        eat(&[0xff]);
        for (n, v) in labels {
            eat(n.as_bytes());
            eat(&[0xfe]);
            eat(v.as_bytes());
            eat(&[0xff]);
        }
        Self(h)
    }
}

/// The phase of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum Phase {
    /// Condition false.
    #[default]
    Inactive,
    /// Condition true since `since` (ms), waiting for `for`.
    Pending {
        /// When the condition became true.
        since: i64,
    },
    /// Firing; active since `since`, condition last true at `last_true` (ms).
    Firing {
        /// When the condition became true.
        since: i64,
        /// Last tick the condition was true (for `keep_firing_for`).
        last_true: i64,
    },
}

/// What happened to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Status {
    /// Condition true, `for` not yet elapsed (not a notification).
    Pending,
    /// Started firing.
    Firing,
    /// Stopped firing.
    Resolved,
}

/// One state change to act upon.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// Alert identity.
    pub fingerprint: Fingerprint,
    /// Rule name.
    pub rule: String,
    /// The new status.
    pub status: Status,
    /// Severity.
    pub severity: String,
    /// Alert labels, sorted: the entity's labels, the rule's labels and `alertname`.
    pub labels: Vec<(String, String)>,
    /// The value that made the condition true (the last one, for a resolve).
    pub value: f64,
    /// When the condition became true.
    pub active_since: UnixMillis,
    /// The tick's `now`.
    pub at: UnixMillis,
    /// Rendered summary.
    pub summary: String,
    /// Rendered description.
    pub description: String,
}

impl Transition {
    /// A transition built by hand (replays, tests): `alertname` is set to `rule`, labels
    /// are sorted, the fingerprint is computed as the evaluator does; severity `warning`,
    /// value 0, empty summary and description (the fields are public: set them).
    #[must_use]
    pub fn new(
        rule: &str,
        status: Status,
        labels: Vec<(String, String)>,
        active_since: UnixMillis,
        at: UnixMillis,
    ) -> Self {
        let mut m: std::collections::BTreeMap<String, String> = labels.into_iter().collect();
        m.insert("alertname".to_owned(), rule.to_owned());
        let labels: Vec<(String, String)> = m.into_iter().collect();
        Self {
            fingerprint: Fingerprint::of(rule, &labels),
            rule: rule.to_owned(),
            status,
            severity: Severity::Warning.as_str().to_owned(),
            labels,
            value: 0.0,
            active_since,
            at,
            summary: String::new(),
            description: String::new(),
        }
    }

    /// Whether this should be sent to receivers (firing or resolved; not pending).
    #[must_use]
    pub fn is_notification(&self) -> bool {
        matches!(self.status, Status::Firing | Status::Resolved)
    }
}

/// The result of evaluating a condition on one entity.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cond {
    True(f64),
    False,
    Unknown,
}

/// Advances one alert's phase. Returns the new phase and the status to report, if any.
fn step(phase: Phase, cond: Cond, now: i64, for_ms: i64, keep_ms: i64) -> (Phase, Option<Status>) {
    match (phase, cond) {
        (p, Cond::Unknown) | (p @ Phase::Inactive, Cond::False) => (p, None),
        (Phase::Inactive, Cond::True(_)) if for_ms <= 0 => (
            Phase::Firing {
                since: now,
                last_true: now,
            },
            Some(Status::Firing),
        ),
        (Phase::Inactive, Cond::True(_)) => (Phase::Pending { since: now }, Some(Status::Pending)),
        (Phase::Pending { since }, Cond::True(_)) if now - since >= for_ms => (
            Phase::Firing {
                since,
                last_true: now,
            },
            Some(Status::Firing),
        ),
        (p @ Phase::Pending { .. }, Cond::True(_)) => (p, None),
        (Phase::Pending { .. }, Cond::False) => (Phase::Inactive, None),
        (Phase::Firing { since, .. }, Cond::True(_)) => (
            Phase::Firing {
                since,
                last_true: now,
            },
            None,
        ),
        (Phase::Firing { last_true, .. }, Cond::False) if now - last_true >= keep_ms => {
            (Phase::Inactive, Some(Status::Resolved))
        }
        (p @ Phase::Firing { .. }, Cond::False) => (p, None),
    }
}

type LabelSet = Vec<(String, String)>;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Series {
    labels: LabelSet,
    /// (sample time ms, value) of the latest and the previous sample.
    last: (i64, f64),
    prev: Option<(i64, f64)>,
    counter: bool,
    received: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Peer {
    labels: LabelSet,
    agent: u32,
    first_seen: i64,
    seen: i64,
    /// Last handshake on the server's clock (agent skew removed).
    handshake: Option<i64>,
    keepalive: bool,
    rx: u64,
    tx: u64,
    rx_grew: i64,
    tx_grew: Option<i64>,
    endpoint: Option<String>,
    endpoint_changed: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Iface {
    labels: LabelSet,
    agent: u32,
    seen: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Agent {
    labels: LabelSet,
    seen: i64,
}

#[derive(Debug)]
struct Entities<T> {
    items: Vec<T>,
    index: HashMap<LabelSet, u32>,
}

impl<T> Default for Entities<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Target {
    entity: u32,
    phase: Phase,
    value: f64,
}

#[derive(Debug)]
struct Compiled {
    rule: Rule,
    for_ms: i64,
    keep_ms: i64,
    targets: Vec<Target>,
}

/// The evaluator. See the [module documentation](self).
#[derive(Debug)]
pub struct Evaluator {
    config: Config,
    rules: Vec<Compiled>,
    by_metric: HashMap<String, Vec<u32>>,
    peer_rules: Vec<u32>,
    iface_rules: Vec<u32>,
    agent_rules: Vec<u32>,
    metrics: HashMap<String, Entities<Series>>,
    peers: Entities<Peer>,
    ifaces: Entities<Iface>,
    agents: Entities<Agent>,
}

/// The evaluator's persistent state: observations and alert phases. Serialize it with any
/// serde format; restore it with [`Evaluator::restore`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct State {
    /// Format version (1).
    pub version: u32,
    series: Vec<(String, Series)>,
    peers: Vec<Peer>,
    ifaces: Vec<Iface>,
    agents: Vec<Agent>,
    alerts: Vec<SavedAlert>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedAlert {
    rule: String,
    entity: LabelSet,
    phase: Phase,
    value: f64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn secs(ms: i64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds as f64 are exact below 2^53 ms, far beyond any real time"
    )]
    let s = ms as f64 / 1000.0;
    s
}

impl Evaluator {
    /// An evaluator for `rules` with no observations.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if two rules share a name.
    pub fn new(rules: Vec<Rule>, config: Config) -> Result<Self> {
        let mut ev = Self {
            config,
            rules: Vec::new(),
            by_metric: HashMap::new(),
            peer_rules: Vec::new(),
            iface_rules: Vec::new(),
            agent_rules: Vec::new(),
            metrics: HashMap::new(),
            peers: Entities::default(),
            ifaces: Entities::default(),
            agents: Entities::default(),
        };
        let mut names = std::collections::HashSet::new();
        for rule in rules {
            if !names.insert(rule.name.clone()) {
                return Err(Error::Invalid(vec![crate::error::Problem {
                    line: None,
                    rule: Some(rule.name),
                    message: "duplicate rule name".into(),
                }]));
            }
            let idx = u32::try_from(ev.rules.len()).unwrap_or(u32::MAX);
            match rule.kind.domain() {
                Domain::Metric(m) => ev.by_metric.entry(m.to_owned()).or_default().push(idx),
                Domain::Peer => ev.peer_rules.push(idx),
                Domain::Interface => ev.iface_rules.push(idx),
                Domain::Agent => ev.agent_rules.push(idx),
            }
            ev.rules.push(Compiled {
                for_ms: ms(rule.for_),
                keep_ms: ms(rule.keep_firing_for),
                rule,
                targets: Vec::new(),
            });
        }
        Ok(ev)
    }

    /// Number of (rule, entity) pairs evaluated per tick.
    #[must_use]
    pub fn pair_count(&self) -> usize {
        self.rules.iter().map(|c| c.targets.len()).sum()
    }

    fn attach(rules: &mut [Compiled], idxs: &[u32], labels: &LabelSet, entity: u32) {
        for &r in idxs {
            let c = &mut rules[r as usize];
            if c.rule.matchers.iter().all(|m| m.matches(labels)) {
                c.targets.push(Target {
                    entity,
                    phase: Phase::Inactive,
                    value: 0.0,
                });
            }
        }
    }

    fn agent_entity(&mut self, agent: &str, received: i64) -> u32 {
        let labels = vec![("agent".to_owned(), agent.to_owned())];
        if let Some(&i) = self.agents.index.get(&labels) {
            let a = &mut self.agents.items[i as usize];
            a.seen = a.seen.max(received);
            return i;
        }
        self.insert_agent(Agent {
            labels,
            seen: received,
        })
    }

    fn insert_agent(&mut self, a: Agent) -> u32 {
        let i = u32::try_from(self.agents.items.len()).unwrap_or(u32::MAX);
        Self::attach(&mut self.rules, &self.agent_rules, &a.labels, i);
        self.agents.index.insert(a.labels.clone(), i);
        self.agents.items.push(a);
        i
    }

    fn insert_iface(&mut self, f: Iface) -> u32 {
        let i = u32::try_from(self.ifaces.items.len()).unwrap_or(u32::MAX);
        Self::attach(&mut self.rules, &self.iface_rules, &f.labels, i);
        self.ifaces.index.insert(f.labels.clone(), i);
        self.ifaces.items.push(f);
        i
    }

    fn insert_peer(&mut self, p: Peer) -> u32 {
        let i = u32::try_from(self.peers.items.len()).unwrap_or(u32::MAX);
        Self::attach(&mut self.rules, &self.peer_rules, &p.labels, i);
        self.peers.index.insert(p.labels.clone(), i);
        self.peers.items.push(p);
        i
    }

    fn insert_series(&mut self, metric: &str, s: Series) {
        let store = self.metrics.entry(metric.to_owned()).or_default();
        let i = u32::try_from(store.items.len()).unwrap_or(u32::MAX);
        if let Some(idxs) = self.by_metric.get(metric) {
            Self::attach(&mut self.rules, idxs, &s.labels, i);
        }
        store.index.insert(s.labels.clone(), i);
        store.items.push(s);
    }

    /// Takes in one batch, received by the server at `received`.
    ///
    /// Every sample updates its series (label `agent` is added unless the sample has it);
    /// samples older than the series' latest are ignored. The batch's WireGuard status is
    /// taken as the agent's full status: interfaces and peers missing from it are gone.
    pub fn observe(&mut self, batch: &Batch, received: UnixMillis) {
        let now = received.as_millis();
        let agent = batch.agent_id.as_str();
        let agent_idx = self.agent_entity(agent, now);
        for s in &batch.samples {
            let (v, counter) = match &s.value {
                Value::Gauge(g) => (*g, false),
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "alert thresholds compare as f64; counters above 2^53 lose only low digits"
                )]
                Value::Counter(c) => (*c as f64, true),
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "alert thresholds compare as f64; counts above 2^53 lose only low digits"
                )]
                Value::Histogram(h) => (h.count() as f64, true),
                _ => continue,
            };
            let ts = s.timestamp.as_millis();
            let mut labels: LabelSet = s
                .labels
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            if s.labels.get("agent").is_none() {
                let at = labels.partition_point(|(n, _)| n.as_str() < "agent");
                labels.insert(at, ("agent".to_owned(), agent.to_owned()));
            }
            let metric = s.name.as_str();
            if let Some(store) = self.metrics.get_mut(metric)
                && let Some(&i) = store.index.get(&labels)
            {
                let se = &mut store.items[i as usize];
                if ts > se.last.0 {
                    se.prev = Some(se.last);
                    se.last = (ts, v);
                    se.counter = counter;
                    se.received = se.received.max(now);
                }
                continue;
            }
            self.insert_series(
                metric,
                Series {
                    labels,
                    last: (ts, v),
                    prev: None,
                    counter,
                    received: now,
                },
            );
        }
        let skew = now - batch.created.as_millis();
        for d in &batch.wg_devices {
            let labels = vec![
                ("agent".to_owned(), agent.to_owned()),
                ("interface".to_owned(), d.name.clone()),
            ];
            match self.ifaces.index.get(&labels) {
                Some(&i) => self.ifaces.items[i as usize].seen = now,
                None => {
                    self.insert_iface(Iface {
                        labels,
                        agent: agent_idx,
                        seen: now,
                    });
                }
            }
            for p in &d.peers {
                let labels = vec![
                    ("agent".to_owned(), agent.to_owned()),
                    ("interface".to_owned(), d.name.clone()),
                    ("peer".to_owned(), p.public_key.to_string()),
                ];
                let handshake = p.last_handshake.map(|h| h.as_millis() + skew);
                let endpoint = p.endpoint.map(|e| e.to_string());
                if let Some(&i) = self.peers.index.get(&labels) {
                    let e = &mut self.peers.items[i as usize];
                    if p.rx_bytes != e.rx {
                        e.rx_grew = now;
                    }
                    if p.tx_bytes != e.tx {
                        e.tx_grew = Some(now);
                    }
                    if endpoint.is_some() && e.endpoint.is_some() && endpoint != e.endpoint {
                        e.endpoint_changed = Some(now);
                    }
                    if endpoint.is_some() {
                        e.endpoint = endpoint;
                    }
                    e.rx = p.rx_bytes;
                    e.tx = p.tx_bytes;
                    e.handshake = handshake;
                    e.keepalive = p.persistent_keepalive_s.is_some();
                    e.seen = now;
                } else {
                    self.insert_peer(Peer {
                        labels,
                        agent: agent_idx,
                        first_seen: now,
                        seen: now,
                        handshake,
                        keepalive: p.persistent_keepalive_s.is_some(),
                        rx: p.rx_bytes,
                        tx: p.tx_bytes,
                        rx_grew: now,
                        tx_grew: None,
                        endpoint,
                        endpoint_changed: None,
                    });
                }
            }
        }
    }

    /// Evaluates every rule at `now` and returns the transitions, in rule order.
    pub fn tick(&mut self, now: UnixMillis) -> Vec<Transition> {
        let now = now.as_millis();
        let stale = ms(self.config.stale_after);
        let mut out = Vec::new();
        let empty = Entities::default();
        for c in &mut self.rules {
            let kind = &c.rule.kind;
            let series = match kind.domain() {
                Domain::Metric(m) => self.metrics.get(m).unwrap_or(&empty),
                _ => &empty,
            };
            for t in &mut c.targets {
                let e = t.entity as usize;
                let cond = match kind {
                    RuleKind::Threshold { op, value, .. } => {
                        let s = &series.items[e];
                        if now - s.received > stale {
                            Cond::Unknown
                        } else if op.apply(s.last.1, *value) {
                            Cond::True(s.last.1)
                        } else {
                            Cond::False
                        }
                    }
                    RuleKind::Rate { op, value, .. } => {
                        let s = &series.items[e];
                        match s.prev {
                            _ if now - s.received > stale => Cond::Unknown,
                            Some((pt, pv)) if s.last.0 > pt => {
                                let dv = if s.counter && s.last.1 < pv {
                                    s.last.1
                                } else {
                                    s.last.1 - pv
                                };
                                let r = dv / secs(s.last.0 - pt);
                                if op.apply(r, *value) {
                                    Cond::True(r)
                                } else {
                                    Cond::False
                                }
                            }
                            _ => Cond::Unknown,
                        }
                    }
                    RuleKind::Absent { after, .. } => {
                        let gap = now - series.items[e].received;
                        if gap > ms(*after) {
                            Cond::True(secs(gap))
                        } else {
                            Cond::False
                        }
                    }
                    RuleKind::AgentOffline { after } => {
                        let gap = now - self.agents.items[e].seen;
                        if gap > ms(*after) {
                            Cond::True(secs(gap))
                        } else {
                            Cond::False
                        }
                    }
                    RuleKind::InterfaceGone => {
                        let f = &self.ifaces.items[e];
                        let a = &self.agents.items[f.agent as usize];
                        if now - a.seen > stale {
                            Cond::Unknown
                        } else if f.seen < a.seen {
                            Cond::True(secs(a.seen - f.seen))
                        } else {
                            Cond::False
                        }
                    }
                    RuleKind::HandshakeStale { .. }
                    | RuleKind::EndpointChanged { .. }
                    | RuleKind::TransferStalled { .. } => {
                        let p = &self.peers.items[e];
                        let a = &self.agents.items[p.agent as usize];
                        if now - a.seen > stale {
                            // the agent is silent: nothing is known about its peers
                            Cond::Unknown
                        } else if p.seen < a.seen {
                            // the agent reports, without this peer: it was removed
                            Cond::False
                        } else {
                            peer_cond(kind, p, now)
                        }
                    }
                };
                let (phase, status) = step(t.phase, cond, now, c.for_ms, c.keep_ms);
                if let Cond::True(v) = cond {
                    t.value = v;
                }
                if let Some(status) = status {
                    let since = match phase {
                        Phase::Pending { since } | Phase::Firing { since, .. } => since,
                        Phase::Inactive => match t.phase {
                            Phase::Firing { since, .. } | Phase::Pending { since } => since,
                            Phase::Inactive => now,
                        },
                    };
                    let labels = entity_labels(
                        kind.domain(),
                        &self.metrics,
                        &self.peers,
                        &self.ifaces,
                        &self.agents,
                        t.entity,
                    );
                    out.push(make_transition(
                        &c.rule, labels, status, t.value, since, now,
                    ));
                }
                t.phase = phase;
            }
        }
        out
    }

    /// The firing alerts, as transitions with status firing (for listing).
    #[must_use]
    pub fn firing(&self) -> Vec<Transition> {
        self.listing(false)
    }

    /// The firing and the pending alerts, as transitions with status firing or pending
    /// (for listing; `at` is when the condition was last true, or its start for pending).
    #[must_use]
    pub fn active(&self) -> Vec<Transition> {
        self.listing(true)
    }

    /// How many alerts are firing and how many pending (cheap: no labels or templates).
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        let (mut firing, mut pending) = (0, 0);
        for c in &self.rules {
            for t in &c.targets {
                match t.phase {
                    Phase::Firing { .. } => firing += 1,
                    Phase::Pending { .. } => pending += 1,
                    Phase::Inactive => {}
                }
            }
        }
        (firing, pending)
    }

    fn listing(&self, with_pending: bool) -> Vec<Transition> {
        let mut out = Vec::new();
        for c in &self.rules {
            for t in &c.targets {
                let (status, since, last_true) = match t.phase {
                    Phase::Firing { since, last_true } => (Status::Firing, since, last_true),
                    Phase::Pending { since } if with_pending => (Status::Pending, since, since),
                    _ => continue,
                };
                {
                    let labels = entity_labels(
                        c.rule.kind.domain(),
                        &self.metrics,
                        &self.peers,
                        &self.ifaces,
                        &self.agents,
                        t.entity,
                    );
                    out.push(make_transition(
                        &c.rule, labels, status, t.value, since, last_true,
                    ));
                }
            }
        }
        out
    }

    /// Forgets series, peers, interfaces and agents last seen before `cutoff`, except those
    /// an alert (pending or firing) is about, and agents whose peers or interfaces are kept.
    /// Without it, memory grows with every series ever seen; call it now and then (e.g.
    /// daily with a cutoff of a few days). A forgotten entity that reappears is tracked
    /// again from scratch. Returns how many entities were forgotten.
    pub fn forget_older_than(&mut self, cutoff: UnixMillis) -> usize {
        let cutoff = cutoff.as_millis();
        let mut state = self.snapshot();
        let active: std::collections::HashSet<&LabelSet> =
            state.alerts.iter().map(|a| &a.entity).collect();
        let before =
            state.series.len() + state.peers.len() + state.ifaces.len() + state.agents.len();
        state
            .series
            .retain(|(_, s)| s.received >= cutoff || active.contains(&s.labels));
        state
            .peers
            .retain(|p| p.seen >= cutoff || active.contains(&p.labels));
        state
            .ifaces
            .retain(|f| f.seen >= cutoff || active.contains(&f.labels));
        let mut keep_agent: Vec<bool> = state
            .agents
            .iter()
            .map(|a| a.seen >= cutoff || active.contains(&a.labels))
            .collect();
        for a in state
            .peers
            .iter()
            .map(|p| p.agent)
            .chain(state.ifaces.iter().map(|f| f.agent))
        {
            keep_agent[a as usize] = true;
        }
        let mut remap = vec![0u32; keep_agent.len()];
        let mut next = 0u32;
        for (i, k) in keep_agent.iter().enumerate() {
            remap[i] = next;
            if *k {
                next += 1;
            }
        }
        let mut i = 0;
        state.agents.retain(|_| {
            i += 1;
            keep_agent[i - 1]
        });
        for p in &mut state.peers {
            p.agent = remap[p.agent as usize];
        }
        for f in &mut state.ifaces {
            f.agent = remap[f.agent as usize];
        }
        drop(active);
        let after =
            state.series.len() + state.peers.len() + state.ifaces.len() + state.agents.len();
        let rules = self.rules.iter().map(|c| c.rule.clone()).collect();
        match Self::restore(rules, self.config, state) {
            Ok(ev) => {
                *self = ev;
                before - after
            }
            Err(e) => {
                tracing::error!(error = %e, "forgetting old entities failed; nothing forgotten");
                0
            }
        }
    }

    /// The persistent state.
    #[must_use]
    pub fn snapshot(&self) -> State {
        let mut alerts = Vec::new();
        for c in &self.rules {
            for t in &c.targets {
                if t.phase != Phase::Inactive {
                    alerts.push(SavedAlert {
                        rule: c.rule.name.clone(),
                        entity: entity_labels(
                            c.rule.kind.domain(),
                            &self.metrics,
                            &self.peers,
                            &self.ifaces,
                            &self.agents,
                            t.entity,
                        )
                        .clone(),
                        phase: t.phase,
                        value: t.value,
                    });
                }
            }
        }
        State {
            version: 1,
            series: self
                .metrics
                .iter()
                .flat_map(|(m, s)| s.items.iter().map(move |x| (m.clone(), x.clone())))
                .collect(),
            peers: self.peers.items.clone(),
            ifaces: self.ifaces.items.clone(),
            agents: self.agents.items.clone(),
            alerts,
        }
    }

    /// An evaluator for `rules` resuming from `state`. Alerts of rules that no longer exist
    /// are dropped (logged); rules may have changed since the state was saved.
    ///
    /// # Errors
    ///
    /// [`Error::State`] for an unknown format version or inconsistent entity references;
    /// the errors of [`Evaluator::new`].
    pub fn restore(rules: Vec<Rule>, config: Config, state: State) -> Result<Self> {
        if state.version != 1 {
            return Err(Error::State(format!(
                "format version {} is not supported (expected 1)",
                state.version
            )));
        }
        let mut ev = Self::new(rules, config)?;
        let n_agents = state.agents.len();
        for a in state.agents {
            ev.insert_agent(a);
        }
        for f in state.ifaces {
            if f.agent as usize >= n_agents {
                return Err(Error::State("interface refers to a missing agent".into()));
            }
            ev.insert_iface(f);
        }
        for p in state.peers {
            if p.agent as usize >= n_agents {
                return Err(Error::State("peer refers to a missing agent".into()));
            }
            ev.insert_peer(p);
        }
        for (m, s) in state.series {
            ev.insert_series(&m, s);
        }
        let by_name: HashMap<String, usize> = ev
            .rules
            .iter()
            .enumerate()
            .map(|(i, c)| (c.rule.name.clone(), i))
            .collect();
        for a in state.alerts {
            let Some(&ri) = by_name.get(&a.rule) else {
                tracing::info!(rule = %a.rule, "dropping saved alert of a rule that no longer exists");
                continue;
            };
            let c = &mut ev.rules[ri];
            let entity = match c.rule.kind.domain() {
                Domain::Metric(m) => ev.metrics.get(m).and_then(|s| s.index.get(&a.entity)),
                Domain::Peer => ev.peers.index.get(&a.entity),
                Domain::Interface => ev.ifaces.index.get(&a.entity),
                Domain::Agent => ev.agents.index.get(&a.entity),
            };
            if let Some(&e) = entity
                && let Some(t) = c.targets.iter_mut().find(|t| t.entity == e)
            {
                t.phase = a.phase;
                t.value = a.value;
            }
        }
        Ok(ev)
    }
}

fn peer_cond(kind: &RuleKind, p: &Peer, now: i64) -> Cond {
    match kind {
        RuleKind::HandshakeStale { max_age } => {
            let max = ms(*max_age);
            let age = now - p.handshake.unwrap_or(p.first_seen);
            let trying = p.keepalive || p.tx_grew.is_some_and(|t| now - t <= max);
            if age > max && trying {
                Cond::True(secs(age))
            } else {
                Cond::False
            }
        }
        RuleKind::EndpointChanged { hold } => match p.endpoint_changed {
            Some(t) if now - t < ms(*hold) => Cond::True(secs(now - t)),
            _ => Cond::False,
        },
        RuleKind::TransferStalled { window } => {
            let w = ms(*window);
            let sending = p.tx_grew.is_some_and(|t| now - t <= w);
            let quiet = now - p.rx_grew;
            if sending && quiet > w {
                Cond::True(secs(quiet))
            } else {
                Cond::False
            }
        }
        _ => Cond::Unknown,
    }
}

fn entity_labels<'a>(
    d: Domain<'_>,
    metrics: &'a HashMap<String, Entities<Series>>,
    peers: &'a Entities<Peer>,
    ifaces: &'a Entities<Iface>,
    agents: &'a Entities<Agent>,
    e: u32,
) -> &'a LabelSet {
    let e = e as usize;
    match d {
        Domain::Metric(m) => &metrics[m].items[e].labels,
        Domain::Peer => &peers.items[e].labels,
        Domain::Interface => &ifaces.items[e].labels,
        Domain::Agent => &agents.items[e].labels,
    }
}

/// The alert labels: entity labels, overridden by rule labels, plus `alertname`.
#[must_use]
pub fn alert_labels(rule: &Rule, entity: &[(String, String)]) -> Vec<(String, String)> {
    let mut m: std::collections::BTreeMap<&str, &str> = entity
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    for (n, v) in &rule.labels {
        m.insert(n, v);
    }
    m.insert("alertname", &rule.name);
    m.into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

fn make_transition(
    rule: &Rule,
    entity: &LabelSet,
    status: Status,
    value: f64,
    since: i64,
    now: i64,
) -> Transition {
    let labels = alert_labels(rule, entity);
    let severity: Severity = rule.severity;
    let cx = Context {
        labels: &labels,
        value,
        rule: &rule.name,
        severity: severity.as_str(),
    };
    Transition {
        fingerprint: Fingerprint::of(&rule.name, &labels),
        rule: rule.name.clone(),
        status,
        severity: severity.as_str().to_owned(),
        summary: rule.summary.render(&cx),
        description: rule.description.render(&cx),
        labels,
        value,
        active_since: UnixMillis::from_millis(since),
        at: UnixMillis::from_millis(now),
    }
}
