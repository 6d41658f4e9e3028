//! Notification routing: routes, grouping, silences and inhibition — pure, like the
//! [`Evaluator`](crate::Evaluator).
//!
//! The [`Router`] takes the evaluator's [`Transition`]s ([`Router::push`]) and, on each
//! [`Router::tick`] with an explicit `now`, returns the [`Notification`]s to send. It has
//! no clock and does no I/O; [`Router::next_deadline`] says when the next tick is due and
//! [`Router::snapshot`] / [`Router::restore`] carry its state over a restart.
//!
//! # Semantics (Alertmanager's, with the differences listed)
//!
//! - **Routes** are tried in order; an alert goes to the first route whose matchers all
//!   match, and on to later routes too when that route has `continue` set. An alert no
//!   route takes is kept (it can still inhibit others) but never notified, and counted in
//!   [`RouterStats::unrouted`]. *Difference:* a flat list instead of Alertmanager's tree;
//!   a route without matchers at the end is the catch-all.
//! - **Grouping**: alerts of one route with equal values of the route's `group_by` labels
//!   form a group (`group_by = ["..."]` groups by every label: one group per alert; an
//!   empty `group_by` puts all of the route's alerts in one group). A new group is flushed
//!   `group_wait` after its first alert, then every `group_interval`.
//! - **When a flush notifies** (Alertmanager's `DedupStage`): when an alert fires that the
//!   last notification of the group did not list as firing; when every alert resolved and
//!   the last notification listed some as firing; when `send_resolved` is on and an alert
//!   resolved that the last notification did not list as resolved; otherwise only when
//!   `repeat_interval` has passed since the last notification. A notification lists the
//!   group's firing alerts and (with `send_resolved`) its resolved ones; resolved alerts
//!   leave the group after the flush, and an empty group is deleted. An alert that fires
//!   and resolves again between two flushes is never notified.
//! - **Muted alerts** (silenced or inhibited) are left out of the comparison above. When a
//!   flush finds nothing but muted alerts it neither notifies nor records anything, and a
//!   muted alert the receiver was told fires, and that still fires, stays in the record of
//!   what the receiver was told — so when the silence ends the receiver is not told again
//!   what it already knows. *Difference:* Alertmanager records only the unmuted alerts and
//!   re-notifies such an alert when its silence ends.
//! - **Silences** ([`Silence`]): matchers and a time window. A silenced alert is left out
//!   of notifications, firing *and* resolved (as in Alertmanager: a receiver that saw an
//!   alert fire and then had it silenced does not see it resolve). Silences are created
//!   with [`Router::add_silence`], expired early with [`Router::expire_silence`], and
//!   purged a retention period after their end ([`Router::purge_silences`]).
//! - **Inhibition** ([`InhibitRule`]): a firing alert matching the rule's source matchers
//!   mutes every alert matching its target matchers that has the same values of the
//!   `equal` labels (a label missing on both sides counts as equal). An alert never
//!   inhibits itself. Example: an offline agent mutes its peers' alerts
//!   ([`InhibitRule::agent_offline`]).
//! - *Difference:* `send_resolved` is a route setting here (a receiver setting in
//!   Alertmanager).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sentra_alerts::route::{Route, Router, RouterConfig};
//! use sentra_core::UnixMillis;
//!
//! let mut route = Route::new("ops");
//! route.group_by = vec!["alertname".into()];
//! route.group_wait = Duration::from_secs(30);
//! let mut router = Router::new(RouterConfig::new(vec![route]))?;
//! assert_eq!(router.next_deadline(), None); // nothing to do yet
//! # let t0 = UnixMillis::from_millis(0);
//! # assert!(router.tick(t0).is_empty());
//! # Ok::<(), sentra_alerts::Error>(())
//! ```
//!
//! A complete run — transitions in, notifications out — is in the crate's
//! `examples/route.rs`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use sentra_core::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Problem, Result},
    eval::{Fingerprint, Status, Transition},
    rule::{MatchOp, Matcher},
};

type LabelSet = Vec<(String, String)>;

/// Which labels form a group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupBy {
    /// These labels (empty: one group for the whole route).
    Labels(Vec<String>),
    /// Every label (Alertmanager's `group_by: ['...']`): one group per alert.
    All,
}

/// One route: which alerts, to which receiver, grouped how, notified when.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Route {
    /// Receiver (notifier) name.
    pub receiver: String,
    /// All must match (none: every alert).
    pub matchers: Vec<Matcher>,
    /// Grouping labels (default: `alertname`).
    pub group_by: Vec<String>,
    /// Group by every label instead of `group_by`.
    pub group_by_all: bool,
    /// Wait before the first notification of a new group (default 30 s).
    pub group_wait: Duration,
    /// Interval between flushes of a group (default 5 min).
    pub group_interval: Duration,
    /// Re-send an unchanged notification after this (default 4 h).
    pub repeat_interval: Duration,
    /// Also try the following routes after this one matched.
    pub continue_: bool,
    /// Notify resolved alerts (default true).
    pub send_resolved: bool,
}

impl Route {
    /// A catch-all route to `receiver` with Alertmanager's default timing (group_wait 30 s,
    /// group_interval 5 min, repeat_interval 4 h), grouped by `alertname`.
    #[must_use]
    pub fn new(receiver: impl Into<String>) -> Self {
        Self {
            receiver: receiver.into(),
            matchers: Vec::new(),
            group_by: vec!["alertname".to_owned()],
            group_by_all: false,
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            continue_: false,
            send_resolved: true,
        }
    }

    /// How this route groups.
    #[must_use]
    pub fn grouping(&self) -> GroupBy {
        if self.group_by_all {
            GroupBy::All
        } else {
            GroupBy::Labels(self.group_by.clone())
        }
    }

    fn matches(&self, labels: &[(String, String)]) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// Source alerts mute target alerts with equal `equal` labels.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InhibitRule {
    /// Matchers of the inhibiting (firing) alert.
    pub source: Vec<Matcher>,
    /// Matchers of the muted alerts.
    pub target: Vec<Matcher>,
    /// Labels whose values must be equal on source and target.
    pub equal: Vec<String>,
}

impl InhibitRule {
    /// An inhibition rule.
    #[must_use]
    pub fn new(source: Vec<Matcher>, target: Vec<Matcher>, equal: Vec<String>) -> Self {
        Self {
            source,
            target,
            equal,
        }
    }

    /// A firing `alertname="<offline_rule>"` alert mutes every other alert with the same
    /// `agent` label: an offline agent's peers and interfaces do not page on their own.
    ///
    /// # Errors
    ///
    /// [`Error::Matcher`] if `offline_rule` makes an invalid matcher (it cannot: any value
    /// is a valid `=` matcher; the `Result` keeps the signature honest).
    pub fn agent_offline(offline_rule: &str) -> Result<Self> {
        Ok(Self::new(
            vec![Matcher::new("alertname", MatchOp::Eq, offline_rule)?],
            vec![Matcher::new("alertname", MatchOp::Ne, offline_rule)?],
            vec!["agent".to_owned()],
        ))
    }
}

/// Routes and inhibition rules.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Routes, tried in order.
    pub routes: Vec<Route>,
    /// Inhibition rules.
    pub inhibit: Vec<InhibitRule>,
}

impl RouterConfig {
    /// Routes and no inhibition rules.
    #[must_use]
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes,
            inhibit: Vec::new(),
        }
    }
}

/// A silence's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[allow(
    clippy::exhaustive_structs,
    reason = "a value newtype around the numeric id; the field is the value"
)]
pub struct SilenceId(pub u64);

impl std::fmt::Display for SilenceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A silence: alerts matching every matcher are muted between `starts_at` and `ends_at`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Silence {
    /// Matchers (at least one).
    pub matchers: Vec<Matcher>,
    /// Start of the window.
    pub starts_at: UnixMillis,
    /// End of the window (exclusive).
    pub ends_at: UnixMillis,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// A silence from `starts_at` for `duration`.
    #[must_use]
    pub fn new(matchers: Vec<Matcher>, starts_at: UnixMillis, duration: Duration) -> Self {
        Self {
            matchers,
            starts_at,
            ends_at: starts_at.saturating_add_millis(ms(duration)),
            created_by: String::new(),
            comment: String::new(),
        }
    }

    /// Where the silence stands at `now`.
    #[must_use]
    pub fn state(&self, now: UnixMillis) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether the silence mutes `labels` at `now`.
    #[must_use]
    pub fn mutes(&self, labels: &[(String, String)], now: UnixMillis) -> bool {
        self.state(now) == SilenceState::Active && self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// Where a silence stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SilenceState {
    /// Starts in the future.
    Pending,
    /// Muting.
    Active,
    /// Over.
    Expired,
}

/// One alert in a notification.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NotifiedAlert {
    /// Identity.
    pub fingerprint: Fingerprint,
    /// Firing or resolved.
    pub status: Status,
    /// Labels, sorted (with `alertname` and `severity`).
    pub labels: Vec<(String, String)>,
    /// `summary` and `description` when not empty, sorted.
    pub annotations: Vec<(String, String)>,
    /// When the condition became true.
    pub starts_at: UnixMillis,
    /// When it resolved (resolved alerts only).
    pub ends_at: Option<UnixMillis>,
}

/// One notification for one receiver about one group.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Notification {
    /// Receiver name.
    pub receiver: String,
    /// Stable group identity (route index, receiver and group labels).
    pub group_key: String,
    /// The group's labels.
    pub group_labels: Vec<(String, String)>,
    /// Firing if any alert fires, else resolved.
    pub status: Status,
    /// Firing alerts first, then resolved; each sorted by labels.
    pub alerts: Vec<NotifiedAlert>,
    /// The tick's `now`.
    pub at: UnixMillis,
}

impl Notification {
    /// Labels every alert has with the same value.
    #[must_use]
    pub fn common_labels(&self) -> Vec<(String, String)> {
        common(self.alerts.iter().map(|a| &a.labels))
    }

    /// Annotations every alert has with the same value.
    #[must_use]
    pub fn common_annotations(&self) -> Vec<(String, String)> {
        common(self.alerts.iter().map(|a| &a.annotations))
    }
}

fn common<'a>(mut sets: impl Iterator<Item = &'a LabelSet>) -> LabelSet {
    let Some(first) = sets.next() else {
        return Vec::new();
    };
    let mut out = first.clone();
    for s in sets {
        out.retain(|kv| s.contains(kv));
    }
    out
}

/// Counters and sizes, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Alerts known (firing, or resolved and not yet flushed).
    pub alerts: usize,
    /// Aggregation groups.
    pub groups: usize,
    /// Silences kept (any state).
    pub silences: usize,
    /// Firing alerts no route took (cumulative).
    pub unrouted: u64,
    /// Notifications returned by `tick` (cumulative).
    pub notifications: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Alert {
    labels: LabelSet,
    annotations: LabelSet,
    starts_at: i64,
    ends_at: Option<i64>,
}

impl Alert {
    fn firing_at(&self, now: i64) -> bool {
        self.ends_at.is_none_or(|e| e > now)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Sent {
    at: i64,
    firing: BTreeSet<Fingerprint>,
    resolved: BTreeSet<Fingerprint>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    route: usize,
    receiver: String,
    labels: LabelSet,
    alerts: BTreeSet<Fingerprint>,
    next_flush: i64,
    sent: Option<Sent>,
}

type GroupId = (usize, LabelSet);

/// The router's persistent state (alerts, groups with what each last notified, silences).
/// Serialize it with any serde format; restore with [`Router::restore`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouterState {
    /// Format version (1).
    pub version: u32,
    alerts: Vec<(Fingerprint, Alert)>,
    groups: Vec<Group>,
    silences: Vec<SavedSilence>,
    next_silence: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedSilence {
    id: u64,
    matchers: Vec<(String, String, String)>,
    starts_at: i64,
    ends_at: i64,
    created_by: String,
    comment: String,
}

/// The router. See the [module documentation](self).
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    alerts: BTreeMap<Fingerprint, Alert>,
    groups: BTreeMap<GroupId, Group>,
    silences: BTreeMap<SilenceId, Silence>,
    next_silence: u64,
    unrouted: u64,
    notifications: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> &'a str {
    labels
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .map_or("", |i| labels[i].1.as_str())
}

impl Router {
    /// A router with no alerts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when there is no route, a receiver name is empty, a `group_interval`
    /// is zero, or a grouping label is not a valid label name.
    pub fn new(config: RouterConfig) -> Result<Self> {
        let mut problems = Vec::new();
        if config.routes.is_empty() {
            problems.push(
                "no route: add at least one (a route without matchers takes every alert)"
                    .to_owned(),
            );
        }
        for (i, r) in config.routes.iter().enumerate() {
            if r.receiver.trim().is_empty() {
                problems.push(format!("route {i}: empty receiver name"));
            }
            if r.group_interval.is_zero() {
                problems.push(format!("route {i}: group_interval must be positive"));
            }
            for l in &r.group_by {
                if l != "..." && sentra_core::LabelName::new(l).is_err() {
                    problems.push(format!("route {i}: invalid group_by label {l:?}"));
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        Ok(Self {
            config,
            alerts: BTreeMap::new(),
            groups: BTreeMap::new(),
            silences: BTreeMap::new(),
            next_silence: 1,
            unrouted: 0,
            notifications: 0,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Takes one evaluator transition. Pending transitions are ignored; a firing one adds
    /// (or refreshes) the alert and puts it in its groups, the first alert of a new group
    /// scheduling its flush at `t.at + group_wait`; a resolved one marks the alert resolved
    /// at `t.at` (an alert the router never saw firing is ignored).
    pub fn push(&mut self, t: &Transition) {
        let now = t.at.as_millis();
        match t.status {
            Status::Firing => {
                let mut labels = t.labels.clone();
                if !labels.iter().any(|(n, _)| n == "severity") && !t.severity.is_empty() {
                    labels.push(("severity".to_owned(), t.severity.clone()));
                    labels.sort();
                }
                let mut annotations = Vec::new();
                if !t.description.is_empty() {
                    annotations.push(("description".to_owned(), t.description.clone()));
                }
                if !t.summary.is_empty() {
                    annotations.push(("summary".to_owned(), t.summary.clone()));
                }
                if !self.place(t.fingerprint, &labels, Some(now)) {
                    self.unrouted += 1;
                }
                self.alerts.insert(
                    t.fingerprint,
                    Alert {
                        labels,
                        annotations,
                        starts_at: t.active_since.as_millis(),
                        ends_at: None,
                    },
                );
            }
            Status::Resolved => {
                // an alert no group holds is forgotten at the next tick
                if let Some(a) = self.alerts.get_mut(&t.fingerprint) {
                    a.ends_at = Some(now);
                }
            }
            Status::Pending => {}
        }
    }

    /// Puts an alert in the groups of its routes; a new group flushes `group_wait` after
    /// `now` (or at the next tick when `now` is `None`). Returns whether any route took it.
    fn place(&mut self, fp: Fingerprint, labels: &[(String, String)], now: Option<i64>) -> bool {
        let routes = self.routes_for(labels);
        let routed = !routes.is_empty();
        for r in routes {
            let key = self.group_key(r, labels);
            let route = &self.config.routes[r];
            let next_flush = now.map_or(i64::MIN, |n| n.saturating_add(ms(route.group_wait)));
            let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                route: r,
                receiver: route.receiver.clone(),
                labels: key.1,
                alerts: BTreeSet::new(),
                next_flush,
                sent: None,
            });
            g.alerts.insert(fp);
        }
        routed
    }

    fn routes_for(&self, labels: &[(String, String)]) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, r) in self.config.routes.iter().enumerate() {
            if r.matches(labels) {
                out.push(i);
                if !r.continue_ {
                    break;
                }
            }
        }
        out
    }

    fn group_key(&self, route: usize, labels: &[(String, String)]) -> GroupId {
        let r = &self.config.routes[route];
        let gl: LabelSet = if r.group_by_all || r.group_by.iter().any(|l| l == "...") {
            labels.to_vec()
        } else {
            let mut v: LabelSet = r
                .group_by
                .iter()
                .map(|n| (n.clone(), label(labels, n).to_owned()))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        (route, gl)
    }

    /// Whether an alert with `labels` (and fingerprint `fp`) is silenced or inhibited at
    /// `now`.
    #[must_use]
    pub fn is_muted(&self, fp: Fingerprint, labels: &[(String, String)], now: UnixMillis) -> bool {
        self.is_silenced(labels, now) || self.is_inhibited(fp, labels, now)
    }

    /// Whether an active silence mutes `labels` at `now`.
    #[must_use]
    pub fn is_silenced(&self, labels: &[(String, String)], now: UnixMillis) -> bool {
        self.silences.values().any(|s| s.mutes(labels, now))
    }

    fn is_inhibited(&self, fp: Fingerprint, labels: &[(String, String)], now: UnixMillis) -> bool {
        let t = now.as_millis();
        self.config.inhibit.iter().any(|rule| {
            rule.target.iter().all(|m| m.matches(labels))
                && self.alerts.iter().any(|(sfp, s)| {
                    *sfp != fp
                        && s.firing_at(t)
                        && rule.source.iter().all(|m| m.matches(&s.labels))
                        && rule
                            .equal
                            .iter()
                            .all(|l| label(&s.labels, l) == label(labels, l))
                })
        })
    }

    /// When the next group flush is due (`None`: no groups). Call [`tick`](Self::tick) then.
    #[must_use]
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.groups
            .values()
            .map(|g| g.next_flush)
            .min()
            .map(UnixMillis::from_millis)
    }

    /// Flushes every group due at `now` and returns the notifications to send, in group
    /// order.
    pub fn tick(&mut self, now: UnixMillis) -> Vec<Notification> {
        let t = now.as_millis();
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush <= t)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        if due.is_empty() {
            return out;
        }
        let inhibitors = inhibitors(&self.config.inhibit, &self.alerts, t);
        for key in due {
            let Some(g) = self.groups.get(&key) else {
                continue;
            };
            let route = &self.config.routes[g.route];
            let mut firing = BTreeSet::new();
            let mut resolved = BTreeSet::new();
            // muted alerts the receiver was told fire and that still fire: it still
            // believes them, rightly; they stay in the record of what it was told
            let mut believed = BTreeSet::new();
            let told = g.sent.as_ref().map(|s| &s.firing);
            for fp in &g.alerts {
                let Some(a) = self.alerts.get(fp) else {
                    continue;
                };
                if self.is_silenced(&a.labels, now)
                    || inhibited_by(&self.config.inhibit, &inhibitors, *fp, &a.labels)
                {
                    if a.firing_at(t) && told.is_some_and(|f| f.contains(fp)) {
                        believed.insert(*fp);
                    }
                    continue;
                }
                if a.firing_at(t) {
                    firing.insert(*fp);
                } else {
                    resolved.insert(*fp);
                }
            }
            let notify = match &g.sent {
                // everything muted: no notification and no record of one (Alertmanager's
                // pipeline stops when the mute stages leave no alert), so a silence that
                // ends does not make the group re-send what the receiver already has
                _ if firing.is_empty() && resolved.is_empty() => false,
                None => !firing.is_empty(),
                Some(sent) if !firing.is_subset(&sent.firing) => true,
                Some(sent) if firing.is_empty() => !sent.firing.is_subset(&believed),
                Some(sent) if route.send_resolved && !resolved.is_subset(&sent.resolved) => true,
                Some(sent) => t.saturating_sub(sent.at) > ms(route.repeat_interval),
            };
            let mut notification = None;
            if notify {
                let mut alerts = Vec::new();
                let listed = firing.iter().map(|fp| (fp, Status::Firing)).chain(
                    resolved
                        .iter()
                        .filter(|_| route.send_resolved)
                        .map(|fp| (fp, Status::Resolved)),
                );
                for (fp, status) in listed {
                    let a = &self.alerts[fp];
                    alerts.push(NotifiedAlert {
                        fingerprint: *fp,
                        status,
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        starts_at: UnixMillis::from_millis(a.starts_at),
                        ends_at: a.ends_at.map(UnixMillis::from_millis),
                    });
                }
                // firing before resolved, each by labels
                alerts.sort_by(|a, b| {
                    (a.status == Status::Resolved, &a.labels)
                        .cmp(&(b.status == Status::Resolved, &b.labels))
                });
                if !alerts.is_empty() {
                    notification = Some(Notification {
                        receiver: route.receiver.clone(),
                        group_key: group_key_string(&route.receiver, g.route, &g.labels),
                        group_labels: g.labels.clone(),
                        status: if firing.is_empty() {
                            Status::Resolved
                        } else {
                            Status::Firing
                        },
                        alerts,
                        at: now,
                    });
                }
            }
            let interval = ms(route.group_interval);
            let g = self.groups.get_mut(&key).expect("group is present");
            if notify {
                let mut firing = firing;
                firing.extend(believed);
                g.sent = Some(Sent {
                    at: t,
                    firing,
                    resolved,
                });
            }
            // resolved alerts leave the group after the flush
            let alerts = &self.alerts;
            g.alerts
                .retain(|fp| alerts.get(fp).is_some_and(|a| a.firing_at(t)));
            let mut next = g.next_flush.saturating_add(interval);
            if next <= t {
                next = t.saturating_add(interval);
            }
            g.next_flush = next;
            if g.alerts.is_empty() {
                self.groups.remove(&key);
            }
            if let Some(n) = notification {
                self.notifications += 1;
                out.push(n);
            }
        }
        // forget resolved alerts no group holds any more
        let held: BTreeSet<Fingerprint> = self
            .groups
            .values()
            .flat_map(|g| g.alerts.iter().copied())
            .collect();
        self.alerts
            .retain(|fp, a| a.firing_at(t) || held.contains(fp));
        out
    }

    /// Adds a silence and returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when it has no matcher, matches every alert (all matchers match
    /// the empty label set), or ends before it starts.
    pub fn add_silence(&mut self, silence: Silence) -> Result<SilenceId> {
        if silence.matchers.is_empty() {
            return Err(Error::Config("a silence needs at least one matcher".into()));
        }
        if silence.matchers.iter().all(|m| m.matches(&[])) {
            return Err(Error::Config(
                "a silence must not match every alert (each of its matchers matches an empty label set)"
                    .into(),
            ));
        }
        if silence.ends_at <= silence.starts_at {
            return Err(Error::Config(format!(
                "a silence must end after it starts ({} <= {})",
                silence.ends_at, silence.starts_at
            )));
        }
        let id = SilenceId(self.next_silence);
        self.next_silence += 1;
        self.silences.insert(id, silence);
        Ok(id)
    }

    /// Ends a silence at `now` (a pending one is ended before it starts).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown id or a silence already expired.
    pub fn expire_silence(&mut self, id: SilenceId, now: UnixMillis) -> Result<()> {
        let s = self
            .silences
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("silence {id}")))?;
        match s.state(now) {
            SilenceState::Expired => Err(Error::Config(format!("silence {id} already expired"))),
            SilenceState::Pending => {
                s.starts_at = now;
                s.ends_at = now;
                Ok(())
            }
            SilenceState::Active => {
                s.ends_at = now;
                Ok(())
            }
        }
    }

    /// The silences, by id.
    pub fn silences(&self) -> impl Iterator<Item = (SilenceId, &Silence)> {
        self.silences.iter().map(|(k, v)| (*k, v))
    }

    /// Drops silences that ended more than `retention` before `now`; returns how many.
    pub fn purge_silences(&mut self, now: UnixMillis, retention: Duration) -> usize {
        let before = self.silences.len();
        let cutoff = now.as_millis().saturating_sub(ms(retention));
        self.silences.retain(|_, s| s.ends_at.as_millis() > cutoff);
        before - self.silences.len()
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            alerts: self.alerts.len(),
            groups: self.groups.len(),
            silences: self.silences.len(),
            unrouted: self.unrouted,
            notifications: self.notifications,
        }
    }

    /// The whole state, to persist.
    #[must_use]
    pub fn snapshot(&self) -> RouterState {
        RouterState {
            version: 1,
            alerts: self.alerts.iter().map(|(k, v)| (*k, v.clone())).collect(),
            groups: self.groups.values().cloned().collect(),
            silences: self
                .silences
                .iter()
                .map(|(id, s)| SavedSilence {
                    id: id.0,
                    matchers: s
                        .matchers
                        .iter()
                        .map(|m| {
                            (
                                m.name().to_owned(),
                                m.op().as_str().to_owned(),
                                m.value().to_owned(),
                            )
                        })
                        .collect(),
                    starts_at: s.starts_at.as_millis(),
                    ends_at: s.ends_at.as_millis(),
                    created_by: s.created_by.clone(),
                    comment: s.comment.clone(),
                })
                .collect(),
            next_silence: self.next_silence,
        }
    }

    /// A router with `config` and a saved state. Groups whose route no longer exists (or
    /// now has another receiver) are dropped; their firing alerts are routed again under
    /// `config` and flushed at the next tick (new to their receivers).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid config; [`Error::State`] for an unknown version or
    /// a saved silence matcher that no longer parses.
    pub fn restore(config: RouterConfig, state: RouterState) -> Result<Self> {
        if state.version != 1 {
            return Err(Error::State(format!(
                "router state version {} (expected 1)",
                state.version
            )));
        }
        let mut r = Self::new(config)?;
        r.alerts = state.alerts.into_iter().collect();
        for g in state.groups {
            if r.config
                .routes
                .get(g.route)
                .is_some_and(|route| route.receiver == g.receiver)
            {
                r.groups.insert((g.route, g.labels.clone()), g);
            }
        }
        for s in state.silences {
            let mut matchers = Vec::new();
            for (name, op, value) in s.matchers {
                let op = match op.as_str() {
                    "=" => MatchOp::Eq,
                    "!=" => MatchOp::Ne,
                    "=~" => MatchOp::Re,
                    "!~" => MatchOp::NotRe,
                    other => {
                        return Err(Error::State(format!(
                            "silence {}: unknown matcher operator {other:?}",
                            s.id
                        )));
                    }
                };
                matchers.push(
                    Matcher::new(&name, op, value)
                        .map_err(|e| Error::State(format!("silence {}: {e}", s.id)))?,
                );
            }
            r.silences.insert(
                SilenceId(s.id),
                Silence {
                    matchers,
                    starts_at: UnixMillis::from_millis(s.starts_at),
                    ends_at: UnixMillis::from_millis(s.ends_at),
                    created_by: s.created_by,
                    comment: s.comment,
                },
            );
        }
        r.next_silence = state.next_silence.max(1);
        // firing alerts whose groups were dropped (their route changed) are routed again
        // and flushed at the next tick
        let held: BTreeSet<Fingerprint> = r
            .groups
            .values()
            .flat_map(|g| g.alerts.iter().copied())
            .collect();
        let orphans: Vec<(Fingerprint, LabelSet)> = r
            .alerts
            .iter()
            .filter(|(fp, a)| a.ends_at.is_none() && !held.contains(fp))
            .map(|(fp, a)| (*fp, a.labels.clone()))
            .collect();
        for (fp, labels) in orphans {
            r.place(fp, &labels, None);
        }
        Ok(r)
    }
}

/// Per inhibition rule: the `equal` label values of the firing source alerts, each with up
/// to two source fingerprints (enough to know whether an alert other than the target itself
/// inhibits it). Built once per tick, so muting is a lookup per alert, not a scan.
type Sources<'a> = HashMap<Vec<&'a str>, [Option<Fingerprint>; 2]>;

fn inhibitors<'a>(
    rules: &[InhibitRule],
    alerts: &'a BTreeMap<Fingerprint, Alert>,
    t: i64,
) -> Vec<Sources<'a>> {
    rules
        .iter()
        .map(|rule| {
            let mut m = Sources::new();
            for (fp, a) in alerts {
                if a.firing_at(t) && rule.source.iter().all(|x| x.matches(&a.labels)) {
                    let key = rule.equal.iter().map(|l| label(&a.labels, l)).collect();
                    let e = m.entry(key).or_default();
                    if e[0].is_none() {
                        e[0] = Some(*fp);
                    } else if e[1].is_none() {
                        e[1] = Some(*fp);
                    }
                }
            }
            m
        })
        .collect()
}

fn inhibited_by(
    rules: &[InhibitRule],
    sources: &[Sources<'_>],
    fp: Fingerprint,
    labels: &[(String, String)],
) -> bool {
    rules.iter().zip(sources).any(|(rule, sources)| {
        if !rule.target.iter().all(|x| x.matches(labels)) {
            return false;
        }
        let key: Vec<&str> = rule.equal.iter().map(|l| label(labels, l)).collect();
        sources
            .get(&key)
            .is_some_and(|e| e.iter().flatten().any(|s| *s != fp))
    })
}

fn group_key_string(receiver: &str, route: usize, labels: &[(String, String)]) -> String {
    let mut s = format!("{receiver}/{route}:{{");
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{n}={v:?}"));
    }
    s.push('}');
    s
}

fn matchers(line: usize, list: &[String], problem: &mut dyn FnMut(usize, String)) -> Vec<Matcher> {
    let mut out = Vec::new();
    for m in list {
        match Matcher::parse(m) {
            Ok(m) => out.push(m),
            Err(e) => problem(line, e.to_string()),
        }
    }
    out
}

fn dur(
    line: usize,
    field: &str,
    v: Option<&String>,
    default: Duration,
    problem: &mut dyn FnMut(usize, String),
) -> Duration {
    match v {
        None => default,
        Some(s) => humantime::parse_duration(s).unwrap_or_else(|e| {
            problem(line, format!("`{field}` {s:?}: {e}"));
            default
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    route: Vec<toml::Spanned<RawRoute>>,
    #[serde(default)]
    inhibit: Vec<toml::Spanned<RawInhibit>>,
    /// `[[receiver]]` tables: read by `notify::parse_receivers` (feature `notify`), so one
    /// file can hold routes and the receivers they name.
    #[serde(default, rename = "receiver")]
    _receiver: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: String,
    #[serde(default)]
    matchers: Vec<String>,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    #[serde(default, rename = "continue")]
    continue_: bool,
    send_resolved: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    source: Vec<String>,
    target: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

/// Parses a routing file: `[[route]]` tables (`receiver`, `matchers`, `group_by`,
/// `group_wait`, `group_interval`, `repeat_interval`, `continue`, `send_resolved`) and
/// `[[inhibit]]` tables (`source`, `target` matcher lists, `equal` labels). `[[receiver]]`
/// tables are allowed beside them and left to `notify::parse_receivers`.
///
/// ```
/// let config = sentra_alerts::route::parse_routing(r#"
/// [[route]]
/// receiver = "pager"
/// matchers = ['severity="critical"']
/// group_by = ["alertname", "agent"]
/// group_wait = "10s"
///
/// [[route]]
/// receiver = "chat"
///
/// [[inhibit]]
/// source = ['alertname="AgentOffline"']
/// target = ['alertname!="AgentOffline"']
/// equal = ["agent"]
/// "#)?;
/// assert_eq!(config.routes.len(), 2);
/// # Ok::<(), sentra_alerts::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Syntax`] for TOML that does not parse; [`Error::Invalid`] listing every bad
/// matcher or duration with its line.
pub fn parse_routing(src: &str) -> Result<RouterConfig> {
    let raw: RawRouting = toml::from_str(src).map_err(|e| {
        Error::Syntax(Problem {
            line: e.span().map(|s| crate::rule::line_of(src, s.start)),
            rule: None,
            message: e.message().trim().to_owned(),
        })
    })?;
    let mut problems = Vec::new();
    let mut problem = |line: usize, message: String| {
        problems.push(Problem {
            line: Some(line),
            rule: None,
            message,
        });
    };
    let mut routes = Vec::new();
    for spanned in raw.route {
        let line = crate::rule::line_of(src, spanned.span().start);
        let r = spanned.into_inner();
        let mut route = Route::new(r.receiver);
        route.matchers = matchers(line, &r.matchers, &mut problem);
        if let Some(g) = r.group_by {
            route.group_by_all = g.iter().any(|l| l == "...");
            route.group_by = g.into_iter().filter(|l| l != "...").collect();
        }
        route.group_wait = dur(
            line,
            "group_wait",
            r.group_wait.as_ref(),
            route.group_wait,
            &mut problem,
        );
        route.group_interval = dur(
            line,
            "group_interval",
            r.group_interval.as_ref(),
            route.group_interval,
            &mut problem,
        );
        route.repeat_interval = dur(
            line,
            "repeat_interval",
            r.repeat_interval.as_ref(),
            route.repeat_interval,
            &mut problem,
        );
        route.continue_ = r.continue_;
        route.send_resolved = r.send_resolved.unwrap_or(true);
        routes.push(route);
    }
    let mut inhibit = Vec::new();
    for spanned in raw.inhibit {
        let line = crate::rule::line_of(src, spanned.span().start);
        let r = spanned.into_inner();
        let source = matchers(line, &r.source, &mut problem);
        let target = matchers(line, &r.target, &mut problem);
        inhibit.push(InhibitRule::new(source, target, r.equal));
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let config = RouterConfig { routes, inhibit };
    // the same checks as Router::new, reported the same way
    Router::new(config.clone())?;
    Ok(config)
}
