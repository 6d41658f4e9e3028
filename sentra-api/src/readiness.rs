//! What `/readyz` reports besides the control store and the ingest pipeline: named
//! components of the embedding process (the gRPC listener, a local agent, …) that the
//! server marks as failing when they stop.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;

/// Named component states fed by the process that serves the API; `GET /readyz` answers
/// `503` with one reason per failing component (`{"component", "message"}`), and
/// `/metrics` reports `sentra_component_ready{component="…"}`.
///
/// Cloning gives another handle on the same states. Components never set are not listed.
#[derive(Clone, Debug)]
pub struct Readiness {
    states: Arc<watch::Sender<BTreeMap<String, Option<String>>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// No components yet: ready.
    #[must_use]
    pub fn new() -> Self {
        Self {
            states: Arc::new(watch::Sender::new(BTreeMap::new())),
        }
    }

    /// Marks `component` as working.
    pub fn set_ready(&self, component: &str) {
        self.set(component, None);
    }

    /// Marks `component` as failing with `message` (shown in `/readyz`: no secrets).
    pub fn set_failing(&self, component: &str, message: impl Into<String>) {
        self.set(component, Some(message.into()));
    }

    fn set(&self, component: &str, state: Option<String>) {
        self.states.send_if_modified(|m| {
            let old = m.insert(component.to_owned(), state.clone());
            old.as_ref() != Some(&state)
        });
    }

    /// Every component with its failure message (`None`: ready), by name.
    #[must_use]
    pub fn components(&self) -> Vec<(String, Option<String>)> {
        self.states
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The failing components and why, by name.
    #[must_use]
    pub fn failing(&self) -> Vec<(String, String)> {
        self.states
            .borrow()
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|m| (k.clone(), m.clone())))
            .collect()
    }

    /// A receiver that sees every change.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, Option<String>>> {
        self.states.subscribe()
    }
}

/// The reasons the ingest pipeline and the components give for not being ready, as
/// `{"component", "message", …}` objects (empty: ready).
pub(crate) fn reasons(
    ingest: Option<&sentra_ingest::Ingest>,
    readiness: &Readiness,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    if let Some(ingest) = ingest {
        let h = ingest.health();
        if let sentra_ingest::StorageHealth::Failing {
            error,
            since,
            failed_commits,
        } = &h.storage
        {
            out.push(serde_json::json!({
                "component": "storage",
                "message": format!(
                    "metrics storage cannot commit: {error} ({failed_commits} failed commits \
                     since {since_ms} ms Unix time); nothing is acknowledged until a commit \
                     succeeds again",
                    since_ms = since.as_millis()
                ),
                "error": error,
                "since_ms": since.as_millis(),
                "failed_commits": failed_commits,
            }));
        }
        if let Some(task) = &h.dead_task {
            out.push(serde_json::json!({
                "component": "ingest",
                "message": format!("ingest task died: {task}"),
            }));
        }
    }
    for (component, message) in readiness.failing() {
        out.push(serde_json::json!({ "component": component, "message": message }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_components_are_listed_until_ready_again() {
        let r = Readiness::new();
        let mut rx = r.subscribe();
        r.set_ready("grpc");
        assert!(r.failing().is_empty());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        r.set_ready("grpc");
        assert!(!rx.has_changed().unwrap(), "no change, no wake-up");
        r.clone().set_failing("local agent", "WAL locked");
        assert_eq!(
            r.failing(),
            vec![("local agent".to_owned(), "WAL locked".to_owned())]
        );
        r.set_ready("local agent");
        assert!(r.failing().is_empty());
        assert_eq!(r.components().len(), 2);

        r.set_failing("local \"agent\"", "x");
        let reasons = reasons(None, &r);
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons[0]["message"], "x");
    }
}
