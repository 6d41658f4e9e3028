//! The rule model and its TOML loader.

use std::{collections::BTreeMap, collections::HashSet, fmt, time::Duration};

use regex::Regex;
use serde::Deserialize;

use crate::{
    error::{Error, Problem, Result},
    template::Template,
};

/// How a label matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatchOp {
    /// `name="value"`: equal.
    Eq,
    /// `name!="value"`: not equal (an absent label counts as the empty string).
    Ne,
    /// `name=~"regex"`: the whole value matches.
    Re,
    /// `name!~"regex"`: the whole value does not match.
    NotRe,
}

/// One label matcher in Prometheus syntax, e.g. `interface=~"wg[0-9]+"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl Matcher {
    /// Parses `name OP "value"` with OP one of `=`, `!=`, `=~`, `!~`. Regexes are anchored
    /// at both ends, as in Prometheus. In the quoted value, `\"` and `\\` are escapes.
    ///
    /// # Errors
    ///
    /// [`Error::Matcher`] for a bad label name, operator, quoting or regex.
    pub fn parse(src: &str) -> Result<Self> {
        let bad = |m: &str| Error::Matcher {
            matcher: src.to_owned(),
            message: m.to_owned(),
        };
        let s = src.trim();
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| bad("expected an operator (=, !=, =~, !~) after the label name"))?;
        let name = &s[..end];
        sentra_core::LabelName::new(name)
            .map_err(|e| bad(&format!("invalid label name {name:?}: {e}")))?;
        let rest = s[end..].trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Re, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::Ne, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Eq, r)
        } else {
            return Err(bad(
                "expected an operator (=, !=, =~, !~) after the label name",
            ));
        };
        let rest = rest.trim();
        let inner = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|_| rest.len() >= 2)
            .ok_or_else(|| bad("the value must be in double quotes"))?;
        let mut value = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => value.push(e),
                    Some('n') => value.push('\n'),
                    _ => return Err(bad("unknown escape in value (use \\\" or \\\\)")),
                },
                '"' => return Err(bad("unescaped `\"` inside the value")),
                c => value.push(c),
            }
        }
        Self::new(name, op, value).map_err(|e| match e {
            Error::Matcher { message, .. } => bad(&message),
            e => e,
        })
    }

    /// Builds a matcher from its parts (the value unquoted). Regexes are anchored.
    ///
    /// # Errors
    ///
    /// [`Error::Matcher`] for a bad label name or regex.
    pub fn new(name: &str, op: MatchOp, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let bad = |m: String| Error::Matcher {
            matcher: format!("{name}{}{value:?}", op.as_str()),
            message: m,
        };
        sentra_core::LabelName::new(name)
            .map_err(|e| bad(format!("invalid label name {name:?}: {e}")))?;
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| bad(format!("invalid regex: {e}")))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value,
            re,
        })
    }

    /// The label name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    #[must_use]
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value (unquoted; the regex source for `=~` and `!~`).
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a sorted label set satisfies this matcher.
    #[must_use]
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let v = labels
            .binary_search_by(|(n, _)| n.as_str().cmp(&self.name))
            .map_or("", |i| labels[i].1.as_str());
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

impl MatchOp {
    /// The operator as written: `=`, `!=`, `=~` or `!~`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Re => "=~",
            Self::NotRe => "!~",
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// A numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum CmpOp {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl CmpOp {
    /// Applies the comparison; NaN compares false except with `!=`.
    #[must_use]
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            Self::Gt => a > b,
            Self::Ge => a >= b,
            Self::Lt => a < b,
            Self::Le => a <= b,
            Self::Eq => a == b,
            Self::Ne => a != b,
        }
    }
}

/// Alert severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention soon (the default).
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lowercase word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// What a rule checks.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RuleKind {
    /// The latest value of each matching series of `metric` compares true against `value`
    /// (counters compare their raw count; histograms their observation count).
    Threshold {
        /// Metric name.
        metric: String,
        /// Comparison.
        op: CmpOp,
        /// Right-hand side.
        value: f64,
    },
    /// A matching series of `metric` received no sample for `after`.
    Absent {
        /// Metric name.
        metric: String,
        /// Silence after which the series counts as absent.
        after: Duration,
    },
    /// The per-second rate of change between the two latest samples of each matching series
    /// compares true against `value`. A counter that went down was reset: its rate is taken
    /// from zero.
    Rate {
        /// Metric name.
        metric: String,
        /// Comparison.
        op: CmpOp,
        /// Right-hand side, per second.
        value: f64,
    },
    /// A peer's last handshake is older than `max_age`. Idle awareness: WireGuard only
    /// handshakes when it has something to send, so a peer **without** persistent keepalive
    /// is stale only if its `tx_bytes` grew during the last `max_age` (handshake initiations
    /// and queued data count as sent bytes): an idle peer with no keepalive and no traffic
    /// is not stale. A peer with persistent keepalive is expected to handshake every two
    /// minutes, so age alone decides. A peer that never handshook counts from when it was
    /// first seen.
    HandshakeStale {
        /// Maximum handshake age (default 180 s).
        max_age: Duration,
    },
    /// A peer's endpoint changed; the alert stays active for `hold` after the change.
    EndpointChanged {
        /// How long the alert stays active after a change (default 10 min).
        hold: Duration,
    },
    /// A peer's `rx_bytes` did not grow for `window` although its `tx_bytes` did: traffic
    /// goes out, nothing comes back.
    TransferStalled {
        /// Window (default 5 min).
        window: Duration,
    },
    /// An interface an agent reported before is missing from its latest report (every batch
    /// carries the agent's full WireGuard status).
    InterfaceGone,
    /// An agent sent nothing for `after`.
    AgentOffline {
        /// Silence after which the agent is offline (default 5 min).
        after: Duration,
    },
}

impl RuleKind {
    /// The `kind` as written in a rule file (`threshold`, `wg_handshake_stale`, …).
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Threshold { .. } => "threshold",
            Self::Absent { .. } => "absent",
            Self::Rate { .. } => "rate",
            Self::HandshakeStale { .. } => "wg_handshake_stale",
            Self::EndpointChanged { .. } => "wg_endpoint_changed",
            Self::TransferStalled { .. } => "wg_transfer_stalled",
            Self::InterfaceGone => "wg_interface_gone",
            Self::AgentOffline { .. } => "agent_offline",
        }
    }

    /// The metric (or built-in domain) this rule reads.
    #[must_use]
    pub fn domain(&self) -> Domain<'_> {
        match self {
            Self::Threshold { metric, .. }
            | Self::Absent { metric, .. }
            | Self::Rate { metric, .. } => Domain::Metric(metric),
            Self::HandshakeStale { .. }
            | Self::EndpointChanged { .. }
            | Self::TransferStalled { .. } => Domain::Peer,
            Self::InterfaceGone => Domain::Interface,
            Self::AgentOffline { .. } => Domain::Agent,
        }
    }
}

/// The kind of entity a rule is evaluated against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Domain<'a> {
    /// Series of one metric; labels are the sample labels plus `agent`.
    Metric(&'a str),
    /// WireGuard peers; labels `agent`, `interface`, `peer` (base64 public key).
    Peer,
    /// WireGuard interfaces; labels `agent`, `interface`.
    Interface,
    /// Agents; label `agent`.
    Agent,
}

/// A validated rule.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Rule {
    /// Unique name; also the `alertname` label.
    pub name: String,
    /// What it checks.
    pub kind: RuleKind,
    /// Label matchers selecting the series (or peers, interfaces, agents).
    pub matchers: Vec<Matcher>,
    /// How long the condition must hold before the alert fires (pending until then).
    pub for_: Duration,
    /// Hysteresis: how long the condition must be false before a firing alert resolves.
    pub keep_firing_for: Duration,
    /// Severity.
    pub severity: Severity,
    /// Extra labels, added to the alert's labels (they win over series labels).
    pub labels: BTreeMap<String, String>,
    /// Summary template.
    pub summary: Template,
    /// Description template.
    pub description: Template,
}

impl Rule {
    /// A rule with no matchers, no `for`, no hysteresis, severity warning, empty templates.
    #[must_use]
    pub fn new(name: impl Into<String>, kind: RuleKind) -> Self {
        Self {
            name: name.into(),
            kind,
            matchers: Vec::new(),
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            severity: Severity::Warning,
            labels: BTreeMap::new(),
            summary: Template::default(),
            description: Template::default(),
        }
    }

    /// Adds a matcher.
    #[must_use]
    pub fn with_matcher(mut self, m: Matcher) -> Self {
        self.matchers.push(m);
        self
    }

    /// Sets `for` and `keep_firing_for`.
    #[must_use]
    pub fn with_timing(mut self, for_: Duration, keep_firing_for: Duration) -> Self {
        self.for_ = for_;
        self.keep_firing_for = keep_firing_for;
        self
    }
}

/// A warning from validation: the rules load, but something looks wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// 1-based line of the rule.
    pub line: usize,
    /// Rule name.
    pub rule: String,
    /// What looks wrong.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: rule {:?}: {}",
            self.line, self.rule, self.message
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: String,
    metric: Option<String>,
    #[serde(default)]
    matchers: Vec<String>,
    op: Option<CmpOp>,
    value: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    after: Option<String>,
    max_age: Option<String>,
    hold: Option<String>,
    window: Option<String>,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    description: String,
}

pub(crate) fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Parses the rules of a TOML rule file.
///
/// The file holds `[[rule]]` tables. Every rule has `name` (unique), `kind` and optional
/// `matchers` (a list of `label OP "value"` strings), `for`, `keep_firing_for` (durations in
/// `humantime` syntax, e.g. `"90s"`, `"5m"`), `severity` (`info`, `warning`, `critical`),
/// `labels`, `summary` and `description` (see [`crate::template`]). By kind:
///
/// | kind | fields |
/// |------|--------|
/// | `threshold` | `metric`, `op` (`>`, `>=`, `<`, `<=`, `==`, `!=`), `value` |
/// | `rate` | `metric`, `op`, `value` (per second) |
/// | `absent` | `metric`, `after` |
/// | `wg_handshake_stale` | `max_age` (default `"180s"`) |
/// | `wg_endpoint_changed` | `hold` (default `"10m"`) |
/// | `wg_transfer_stalled` | `window` (default `"5m"`) |
/// | `wg_interface_gone` | — |
/// | `agent_offline` | `after` (default `"5m"`) |
///
/// `known_metrics`, when given, turns a reference to a metric outside the set into a
/// [`Warning`] (not an error: the metric may simply not have been reported yet).
///
/// # Errors
///
/// [`Error::Syntax`] (with the line) for TOML that does not parse or has unknown fields;
/// [`Error::Invalid`] listing every invalid rule with its line and name.
pub fn parse_rules(
    src: &str,
    known_metrics: Option<&HashSet<String>>,
) -> Result<(Vec<Rule>, Vec<Warning>)> {
    let raw: RawFile = toml::from_str(src).map_err(|e| {
        Error::Syntax(Problem {
            line: e.span().map(|s| line_of(src, s.start)),
            rule: None,
            message: e.message().trim().to_owned(),
        })
    })?;
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = HashSet::new();
    for spanned in raw.rule {
        let line = line_of(src, spanned.span().start);
        let r = spanned.into_inner();
        let mut errs = Vec::new();
        let name = r.name.clone();
        if name.trim().is_empty() {
            errs.push("`name` must not be empty".to_owned());
        } else if !seen.insert(name.clone()) {
            errs.push("duplicate rule name".to_owned());
        }
        match build(r, &mut errs) {
            Some(rule) if errs.is_empty() => {
                if let (Domain::Metric(m), Some(known)) = (rule.kind.domain(), known_metrics)
                    && !known.contains(m)
                {
                    warnings.push(Warning {
                        line,
                        rule: name.clone(),
                        message: format!("unknown metric {m:?} (no agent reported it yet)"),
                    });
                }
                rules.push(rule);
            }
            _ => {}
        }
        problems.extend(errs.into_iter().map(|message| Problem {
            line: Some(line),
            rule: Some(name.clone()),
            message,
        }));
    }
    if problems.is_empty() {
        for w in &warnings {
            tracing::warn!(%w, "alert rule");
        }
        Ok((rules, warnings))
    } else {
        Err(Error::Invalid(problems))
    }
}

fn duration(
    field: &str,
    v: Option<&str>,
    default: Option<Duration>,
    errs: &mut Vec<String>,
) -> Duration {
    match v {
        None => {
            if default.is_none() {
                errs.push(format!("`{field}` is required for this kind"));
            }
            default.unwrap_or_default()
        }
        Some(s) => humantime::parse_duration(s).unwrap_or_else(|e| {
            errs.push(format!(
                "`{field}` = {s:?} is not a duration ({e}); e.g. \"90s\", \"5m\""
            ));
            Duration::ZERO
        }),
    }
}

fn build(r: RawRule, errs: &mut Vec<String>) -> Option<Rule> {
    let mut used: Vec<&str> = Vec::new();
    let mut metric = || {
        r.metric.clone().unwrap_or_else(|| {
            errs.push("`metric` is required for this kind".to_owned());
            String::new()
        })
    };
    let kind = match r.kind.as_str() {
        "threshold" | "rate" => {
            used.extend(["metric", "op", "value"]);
            let metric = metric();
            let op = r.op.unwrap_or_else(|| {
                errs.push("`op` is required for this kind (>, >=, <, <=, ==, !=)".to_owned());
                CmpOp::Gt
            });
            let value = r.value.unwrap_or_else(|| {
                errs.push("`value` is required for this kind".to_owned());
                0.0
            });
            if value.is_nan() {
                errs.push("`value` must not be NaN".to_owned());
            }
            if r.kind == "rate" {
                RuleKind::Rate { metric, op, value }
            } else {
                RuleKind::Threshold { metric, op, value }
            }
        }
        "absent" => {
            used.extend(["metric", "after"]);
            let metric = metric();
            RuleKind::Absent {
                metric,
                after: duration("after", r.after.as_deref(), None, errs),
            }
        }
        "wg_handshake_stale" => {
            used.push("max_age");
            RuleKind::HandshakeStale {
                max_age: duration(
                    "max_age",
                    r.max_age.as_deref(),
                    Some(Duration::from_secs(180)),
                    errs,
                ),
            }
        }
        "wg_endpoint_changed" => {
            used.push("hold");
            RuleKind::EndpointChanged {
                hold: duration(
                    "hold",
                    r.hold.as_deref(),
                    Some(Duration::from_secs(600)),
                    errs,
                ),
            }
        }
        "wg_transfer_stalled" => {
            used.push("window");
            RuleKind::TransferStalled {
                window: duration(
                    "window",
                    r.window.as_deref(),
                    Some(Duration::from_secs(300)),
                    errs,
                ),
            }
        }
        "wg_interface_gone" => RuleKind::InterfaceGone,
        "agent_offline" => {
            used.push("after");
            RuleKind::AgentOffline {
                after: duration(
                    "after",
                    r.after.as_deref(),
                    Some(Duration::from_secs(300)),
                    errs,
                ),
            }
        }
        other => {
            errs.push(format!(
                "unknown kind {other:?}; expected one of threshold, rate, absent, \
                 wg_handshake_stale, wg_endpoint_changed, wg_transfer_stalled, \
                 wg_interface_gone, agent_offline"
            ));
            return None;
        }
    };
    for (field, set) in [
        ("metric", r.metric.is_some()),
        ("op", r.op.is_some()),
        ("value", r.value.is_some()),
        ("after", r.after.is_some()),
        ("max_age", r.max_age.is_some()),
        ("hold", r.hold.is_some()),
        ("window", r.window.is_some()),
    ] {
        if set && !used.contains(&field) {
            errs.push(format!("`{field}` does not apply to kind {:?}", r.kind));
        }
    }
    if let Domain::Metric(m) = kind.domain()
        && !m.is_empty()
        && sentra_core::MetricName::new(m).is_err()
    {
        errs.push(format!("`metric` = {m:?} is not a valid metric name"));
    }
    let matchers = r
        .matchers
        .iter()
        .filter_map(|m| Matcher::parse(m).map_err(|e| errs.push(e.to_string())).ok())
        .collect();
    for name in r.labels.keys() {
        if sentra_core::LabelName::new(name.as_str()).is_err() {
            errs.push(format!("label name {name:?} is not valid"));
        }
    }
    let mut tpl = |field: &str, s: &str| {
        Template::parse(s).unwrap_or_else(|e| {
            errs.push(format!("`{field}`: {e}"));
            Template::default()
        })
    };
    let summary = tpl("summary", &r.summary);
    let description = tpl("description", &r.description);
    let for_ = duration("for", r.for_.as_deref(), Some(Duration::ZERO), errs);
    let keep_firing_for = duration(
        "keep_firing_for",
        r.keep_firing_for.as_deref(),
        Some(Duration::ZERO),
        errs,
    );
    Some(Rule {
        name: r.name,
        kind,
        matchers,
        for_,
        keep_firing_for,
        severity: r.severity,
        labels: r.labels,
        summary,
        description,
    })
}

/// The built-in WireGuard rules with their defaults: `WgHandshakeStale` (180 s),
/// `WgEndpointChanged`, `WgTransferStalled`, `WgInterfaceGone`, `AgentOffline` (5 min).
#[must_use]
pub fn builtin_wireguard_rules() -> Vec<Rule> {
    const SRC: &str = r#"
[[rule]]
name = "WgHandshakeStale"
kind = "wg_handshake_stale"
severity = "critical"
summary = "WireGuard peer {{ $labels.peer }} on {{ $labels.agent }}/{{ $labels.interface }}: no handshake for {{ $value }} s"

[[rule]]
name = "WgEndpointChanged"
kind = "wg_endpoint_changed"
severity = "info"
summary = "WireGuard peer {{ $labels.peer }} on {{ $labels.agent }}/{{ $labels.interface }} changed endpoint"

[[rule]]
name = "WgTransferStalled"
kind = "wg_transfer_stalled"
severity = "warning"
summary = "WireGuard peer {{ $labels.peer }} on {{ $labels.agent }}/{{ $labels.interface }}: nothing received for {{ $value }} s while sending"

[[rule]]
name = "WgInterfaceGone"
kind = "wg_interface_gone"
severity = "critical"
summary = "WireGuard interface {{ $labels.interface }} disappeared from {{ $labels.agent }}"

[[rule]]
name = "AgentOffline"
kind = "agent_offline"
severity = "critical"
summary = "Agent {{ $labels.agent }} sent nothing for {{ $value }} s"
"#;
    parse_rules(SRC, None).map(|(r, _)| r).unwrap_or_default()
}
