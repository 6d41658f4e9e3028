//! The peer applier: fetch the peers an operator declared for this agent's interfaces
//! (`FetchDesiredState`) and make the kernel match with `sentra-wg`'s minimal diff.
//!
//! * Only listed interfaces are managed; a listed interface's peers become exactly the
//!   declared ones (others are removed), preshared keys included. Device attributes (private
//!   key, port) are never touched.
//! * **Versioned.** The agent keeps the last state it fetched and sends its revision as
//!   `known_revision`: an unchanged state costs one small round trip and no data. Each
//!   interface remembers the revision the kernel was last made to match (its *applied*
//!   revision); a failed interface is retried from the kept state at the next interval.
//! * **Drift.** Every round re-reads each managed interface. A difference from the
//!   declaration at an already applied revision is drift (someone ran `wg set` by hand): it
//!   is reported peer by peer and corrected, unless the interface is observe-only
//!   ([`Config::observe_only`](crate::Config::observe_only)), whose kernel state the agent
//!   never changes.
//! * **Rejected declarations change nothing**: a bad key, endpoint or prefix, a peer listed
//!   twice or an allowed IP claimed by two peers rejects the whole interface before anything
//!   is sent, with an error naming the field.
//! * **Reported.** What happened per interface ([`InterfaceReport`]) goes into the next
//!   WireGuard batch as samples ([`InterfaceReport::samples`]): desired and applied
//!   revision, drift, errors. The server's status shows them per interface.
//! * Where WireGuard is unavailable the applier skips quietly (the collector already said
//!   why, once); a declared interface that does not exist is reported as that interface's
//!   error.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use prost::Message as _;
use sentra_core::{Method, Nonce, Seq, UnixMillis, proto};
use sentra_wg::{AllowedIp, DeviceConfig, Key, PeerConfig, PresharedKey};

use crate::samples::SampleSet;
use crate::ship::{Ingest, KeyState, current};
use crate::wireguard::WgCollector;

/// At most this many drifted peers and peer errors are listed per interface in a report's
/// samples (the counts are always complete).
pub const MAX_LISTED: usize = 20;

/// Converts one declared interface to `sentra-wg`'s desired configuration and checks it as a
/// whole (no peer twice, no allowed IP claimed by two peers).
///
/// # Errors
///
/// A message naming the bad field (a key that is not 32 bytes, a bad endpoint or prefix) or
/// the conflict.
pub fn desired_config(iface: &proto::DesiredInterface) -> Result<DeviceConfig, String> {
    let mut cfg = DeviceConfig::new();
    for (i, p) in iface.peers.iter().enumerate() {
        let bytes: [u8; 32] = p
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| format!("peers[{i}].public_key is {} bytes", p.public_key.len()))?;
        let mut peer = PeerConfig::new(Key::from_bytes(bytes));
        if !p.endpoint.is_empty() {
            let ep: SocketAddr = p
                .endpoint
                .parse()
                .map_err(|_| format!("peers[{i}].endpoint {:?} is not ip:port", p.endpoint))?;
            peer = peer.with_endpoint(ep);
        }
        for a in &p.allowed_ips {
            let ip: AllowedIp = a
                .parse()
                .map_err(|_| format!("peers[{i}].allowed_ips {a:?} is not a prefix"))?;
            peer = peer.with_allowed_ip(ip);
        }
        let ka = u16::try_from(p.persistent_keepalive_s)
            .map_err(|_| format!("peers[{i}].persistent_keepalive_s too large"))?;
        if ka != 0 {
            peer = peer.with_keepalive(ka);
        }
        if !p.preshared_key.is_empty() {
            // Never echo the key itself.
            let psk: [u8; 32] = p.preshared_key.as_slice().try_into().map_err(|_| {
                format!(
                    "peers[{i}].preshared_key is {} bytes, not 32",
                    p.preshared_key.len()
                )
            })?;
            let psk = PresharedKey::from_bytes(psk);
            if !psk.is_zero() {
                peer = peer.with_preshared_key(psk);
            }
        }
        cfg.peers.push(peer);
    }
    sentra_wg::diff::validate(&cfg).map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// How a peer differed from the declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DriftKind {
    /// Declared but not in the kernel (removed by hand).
    Missing,
    /// In the kernel but not declared (added by hand).
    Unexpected,
    /// In both, with other settings (allowed IPs, keepalive, endpoint, preshared key).
    Changed,
}

impl DriftKind {
    /// `missing`, `unexpected` or `changed`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unexpected => "unexpected",
            Self::Changed => "changed",
        }
    }
}

/// What one reconciliation of one interface found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceReport {
    /// The interface.
    pub interface: String,
    /// The revision of the declaration.
    pub desired_revision: u64,
    /// The revision the kernel was last made to match (0: never).
    pub applied_revision: u64,
    /// Whether the agent only observes this interface (never changes it).
    pub observe_only: bool,
    /// Peers that differed from an already applied declaration (by hand), found this round.
    pub drift: Vec<(Key, DriftKind)>,
    /// Whether that drift was corrected.
    pub drift_corrected: bool,
    /// Peers created, changed and removed this round (drift corrections included).
    pub added: usize,
    /// See [`InterfaceReport::added`].
    pub updated: usize,
    /// See [`InterfaceReport::added`].
    pub removed: usize,
    /// SET messages sent this round (0: nothing to do, or observe-only).
    pub set_messages: usize,
    /// Errors of single peers (the kernel refused the message starting at that peer).
    pub peer_errors: Vec<(Key, String)>,
    /// Why the interface as a whole was not applied (a rejected declaration, a missing
    /// device, a kernel error); nothing was changed when the declaration was rejected.
    pub error: Option<String>,
    /// Whether that error is WireGuard being unusable here (no kernel support or no
    /// `CAP_NET_ADMIN`): the collector already says so, the applier logs it quietly.
    pub wireguard_unavailable: bool,
}

impl InterfaceReport {
    /// Whether the kernel matches the declaration's revision after this round.
    #[must_use]
    pub fn in_sync(&self) -> bool {
        self.error.is_none()
            && self.peer_errors.is_empty()
            && self.applied_revision == self.desired_revision
            && (self.drift.is_empty() || self.drift_corrected)
    }

    /// The report as samples (labels `interface`, and `peer`/`kind`/`error` for listed
    /// items): `sentra_wg_desired_revision`, `sentra_wg_applied_revision`,
    /// `sentra_wg_in_sync` (1/0), `sentra_wg_observe_only` (1/0), `sentra_wg_drift_peers`,
    /// `sentra_wg_apply_peer_errors`, `sentra_wg_apply_set_messages` (gauges of this round),
    /// `sentra_wg_drift_peer` and `sentra_wg_apply_peer_error` (1 per listed peer, at most
    /// [`MAX_LISTED`]), `sentra_wg_apply_error` (1, with the reason). No key material except
    /// public keys.
    #[allow(
        clippy::cast_precision_loss,
        reason = "gauges are f64; revisions and counts stay far below 2^53"
    )]
    pub fn samples(&self, set: &mut SampleSet) {
        let i: &[(&str, &str)] = &[("interface", &self.interface)];
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        set.gauge(
            "sentra_wg_desired_revision",
            i,
            self.desired_revision as f64,
        );
        set.gauge(
            "sentra_wg_applied_revision",
            i,
            self.applied_revision as f64,
        );
        set.gauge("sentra_wg_in_sync", i, flag(self.in_sync()));
        set.gauge("sentra_wg_observe_only", i, flag(self.observe_only));
        set.gauge("sentra_wg_drift_peers", i, self.drift.len() as f64);
        set.gauge(
            "sentra_wg_apply_peer_errors",
            i,
            self.peer_errors.len() as f64,
        );
        set.gauge("sentra_wg_apply_set_messages", i, self.set_messages as f64);
        for (k, kind) in self.drift.iter().take(MAX_LISTED) {
            let k = k.to_string();
            set.gauge(
                "sentra_wg_drift_peer",
                &[
                    ("interface", &self.interface),
                    ("peer", &k),
                    ("kind", kind.as_str()),
                ],
                1.0,
            );
        }
        for (k, e) in self.peer_errors.iter().take(MAX_LISTED) {
            let k = k.to_string();
            set.gauge(
                "sentra_wg_apply_peer_error",
                &[("interface", &self.interface), ("peer", &k), ("error", e)],
                1.0,
            );
        }
        if let Some(e) = &self.error {
            set.gauge(
                "sentra_wg_apply_error",
                &[("interface", &self.interface), ("error", e)],
                1.0,
            );
        }
    }
}

/// Makes one interface match its declaration (or, observe-only, only compares).
///
/// `applied_revision` is the revision this interface last matched (0: none); a difference
/// found when it equals `revision` is drift. Reads the device, computes the minimal diff and
/// sends only that. Never fails: every problem is in the report.
pub async fn reconcile(
    client: &sentra_wg::Client,
    iface: &proto::DesiredInterface,
    revision: u64,
    applied_revision: u64,
    observe_only: bool,
) -> InterfaceReport {
    let mut report = InterfaceReport {
        interface: iface.name.clone(),
        desired_revision: revision,
        applied_revision,
        observe_only,
        ..InterfaceReport::default()
    };
    let cfg = match desired_config(iface) {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(format!("declaration rejected: {e}"));
            return report;
        }
    };
    let actual = match client.get_device(iface.name.as_str()).await {
        Ok(d) => d,
        Err(e) => {
            report.wireguard_unavailable = e.is_unavailable();
            report.error = Some(e.to_string());
            return report;
        }
    };
    let update = match sentra_wg::diff(&actual, &cfg) {
        Ok(u) => u,
        Err(e) => {
            report.error = Some(format!("declaration rejected: {e}"));
            return report;
        }
    };
    if update.is_empty() {
        report.applied_revision = revision;
        return report;
    }
    for p in &update.peers {
        if p.remove {
            report.removed += 1;
        } else if p.update_only {
            report.updated += 1;
        } else {
            report.added += 1;
        }
    }
    if applied_revision == revision || observe_only {
        report.drift = update
            .peers
            .iter()
            .map(|p| {
                let kind = if p.remove {
                    DriftKind::Unexpected
                } else if p.update_only {
                    DriftKind::Changed
                } else {
                    DriftKind::Missing
                };
                (p.public_key, kind)
            })
            .collect();
        report.drift.sort_by_key(|a| (a.1, a.0));
    }
    if observe_only {
        (report.added, report.updated, report.removed) = (0, 0, 0);
        return report;
    }
    match client.set(iface.name.as_str(), &update).await {
        Ok(n) => {
            report.set_messages = n;
            report.applied_revision = revision;
            report.drift_corrected = !report.drift.is_empty();
        }
        Err(sentra_wg::Error::Partial {
            applied,
            failed_at,
            source,
            ..
        }) => {
            report.set_messages = applied;
            match failed_at {
                Some(k) => report.peer_errors.push((k, source.to_string())),
                None => report.error = Some(source.to_string()),
            }
        }
        Err(e) => {
            // The first message failed: attribute it to its first peer when it had one.
            match update.peers.first() {
                Some(p) if !matches!(e, sentra_wg::Error::NoDevice { .. }) => {
                    report.peer_errors.push((p.public_key, e.to_string()));
                }
                _ => report.error = Some(e.to_string()),
            }
        }
    }
    report
}

/// The applier's latest reports, shared with the WireGuard collector, which ships them in
/// its next batch.
pub(crate) type Reports = std::sync::Arc<std::sync::Mutex<BTreeMap<String, InterfaceReport>>>;

/// Applier state between rounds.
#[derive(Debug, Default)]
pub(crate) struct Applier {
    /// The last state fetched (its revision is what the agent "knows").
    state: Option<proto::DesiredState>,
    /// Per interface: the revision the kernel last matched.
    applied: BTreeMap<String, u64>,
    observe_only: BTreeSet<String>,
    reports: Reports,
    unimplemented_logged: bool,
}

impl Applier {
    pub(crate) fn new(observe_only: BTreeSet<String>, reports: Reports) -> Self {
        Self {
            observe_only,
            reports,
            ..Self::default()
        }
    }

    /// One round: fetch (with the revision held), then reconcile every declared interface.
    pub(crate) async fn round(
        &mut self,
        ingest: &dyn Ingest,
        creds: &KeyState,
        wg: &tokio::sync::Mutex<WgCollector>,
    ) {
        let creds = current(creds);
        let known = self.state.as_ref().map_or(0, |s| s.revision);
        let query = proto::DesiredStateQuery {
            agent_id: creds.agent_id().as_str().to_owned(),
            known_revision: known,
        };
        let envelope = creds.signer().sign(
            Method::FetchDesiredState,
            Seq::FIRST,
            UnixMillis::now(),
            Nonce::random(),
            query.encode_to_vec().into(),
        );
        match ingest.fetch_desired_state(envelope).await {
            Ok(s) if s.unchanged || (s.revision == known && known != 0) => {}
            Ok(s) => self.state = Some(s),
            Err(e) if e.unimplemented => {
                if !self.unimplemented_logged {
                    tracing::info!(
                        "the server manages no peers (FetchDesiredState unimplemented); applier idle"
                    );
                    self.unimplemented_logged = true;
                }
                return;
            }
            Err(e) => {
                // Still check the kept state for drift below.
                tracing::debug!(error = %e, "fetching desired peers failed; retrying next interval");
            }
        }
        let Some(state) = &self.state else { return };
        // The netlink client is shared with the WireGuard collector: hold the lock only to
        // get (or connect) it, not across the applying.
        let client = match wg.lock().await.client().await {
            Ok(c) => c.clone(),
            Err(e) => {
                tracing::debug!(
                    reason = e.reason(),
                    "desired peers not applied: WireGuard unavailable"
                );
                return;
            }
        };
        let mut reports = BTreeMap::new();
        for iface in &state.interfaces {
            let before = self.applied.get(&iface.name).copied().unwrap_or(0);
            let observe = self.observe_only.contains(&iface.name);
            let r = reconcile(&client, iface, state.revision, before, observe).await;
            log_report(&r, before);
            self.applied.insert(iface.name.clone(), r.applied_revision);
            reports.insert(iface.name.clone(), r);
        }
        self.applied.retain(|name, _| reports.contains_key(name));
        *self
            .reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reports;
    }
}

fn log_report(r: &InterfaceReport, before: u64) {
    if let Some(e) = &r.error
        && r.wireguard_unavailable
    {
        tracing::debug!(interface = %r.interface, error = %e, "declared peers not applied: WireGuard unavailable");
    } else if let Some(e) = &r.error {
        tracing::warn!(interface = %r.interface, revision = r.desired_revision, error = %e, "declared peers not applied; retrying next interval");
    }
    for (k, e) in &r.peer_errors {
        tracing::warn!(interface = %r.interface, peer = %k, error = %e, "applying a declared peer failed; retrying next interval");
    }
    if !r.drift.is_empty() {
        tracing::warn!(
            interface = %r.interface,
            peers = r.drift.len(),
            corrected = r.drift_corrected,
            observe_only = r.observe_only,
            "WireGuard peers differ from the declaration (changed outside Sentra)"
        );
    }
    if r.set_messages > 0 && r.applied_revision != before {
        tracing::info!(
            interface = %r.interface,
            revision = r.applied_revision,
            added = r.added,
            updated = r.updated,
            removed = r.removed,
            messages = r.set_messages,
            "applied declared peers"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_declared_peers() {
        let iface = proto::DesiredInterface {
            name: "wg0".into(),
            peers: vec![proto::DesiredPeer {
                public_key: vec![1; 32],
                endpoint: "[2001:db8::1]:51820".into(),
                allowed_ips: vec!["10.0.0.2/32".into(), "fd00::/64".into()],
                persistent_keepalive_s: 25,
                preshared_key: vec![7; 32],
            }],
        };
        let cfg = desired_config(&iface).expect("valid");
        assert_eq!(cfg.peers.len(), 1);
        let p = &cfg.peers[0];
        assert_eq!(p.public_key, Key::from_bytes([1; 32]));
        assert_eq!(
            p.endpoint.map(|e| e.to_string()).as_deref(),
            Some("[2001:db8::1]:51820")
        );
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.persistent_keepalive, 25);
        assert_eq!(p.preshared_key, Some(PresharedKey::from_bytes([7; 32])));
        assert!(
            cfg.private_key.is_none() && cfg.listen_port.is_none(),
            "device attributes untouched"
        );
    }

    #[test]
    fn rejects_bad_fields() {
        let mut iface = proto::DesiredInterface {
            name: "wg0".into(),
            peers: vec![proto::DesiredPeer {
                public_key: vec![1; 31],
                ..Default::default()
            }],
        };
        assert!(desired_config(&iface).unwrap_err().contains("public_key"));
        iface.peers[0].public_key = vec![1; 32];
        iface.peers[0].endpoint = "nope".into();
        assert!(desired_config(&iface).unwrap_err().contains("endpoint"));
        iface.peers[0].endpoint.clear();
        iface.peers[0].allowed_ips = vec!["10.0.0.0/40".into()];
        assert!(desired_config(&iface).unwrap_err().contains("allowed_ips"));
        iface.peers[0].allowed_ips.clear();
        iface.peers[0].persistent_keepalive_s = 70_000;
        assert!(desired_config(&iface).is_err());
        iface.peers[0].persistent_keepalive_s = 0;
        iface.peers[0].preshared_key = vec![9; 16];
        let e = desired_config(&iface).unwrap_err();
        assert_eq!(e, "peers[0].preshared_key is 16 bytes, not 32");
        // an all-zero key means "none", as in the kernel
        iface.peers[0].preshared_key = vec![0; 32];
        assert_eq!(desired_config(&iface).unwrap().peers[0].preshared_key, None);
    }

    fn peer(key: u8, ips: &[&str]) -> proto::DesiredPeer {
        proto::DesiredPeer {
            public_key: vec![key; 32],
            allowed_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_inconsistent_declarations_as_a_whole() {
        let twice = proto::DesiredInterface {
            name: "wg0".into(),
            peers: vec![peer(1, &["10.0.0.1/32"]), peer(1, &["10.0.0.2/32"])],
        };
        assert!(desired_config(&twice).unwrap_err().contains("listed twice"));
        let conflict = proto::DesiredInterface {
            name: "wg0".into(),
            peers: vec![peer(1, &["10.0.0.1/32"]), peer(2, &["10.0.0.1/32"])],
        };
        let e = desired_config(&conflict).unwrap_err();
        assert!(
            e.contains("allowed IP 10.0.0.1/32 is claimed by both"),
            "{e}"
        );
    }

    #[test]
    fn a_report_becomes_samples() {
        let r = InterfaceReport {
            interface: "wg0".into(),
            desired_revision: 7,
            applied_revision: 6,
            drift: vec![
                (Key::from_bytes([1; 32]), DriftKind::Missing),
                (Key::from_bytes([2; 32]), DriftKind::Unexpected),
            ],
            peer_errors: vec![(Key::from_bytes([3; 32]), "invalid argument".into())],
            ..InterfaceReport::default()
        };
        assert!(!r.in_sync());
        let mut set = SampleSet::new(UnixMillis::from_millis(1_700_000_000_000));
        r.samples(&mut set);
        assert_eq!(set.invalid(), 0);
        let samples = set.into_samples();
        let value = |name: &str| {
            samples
                .iter()
                .filter(|s| s.name.as_str() == name)
                .map(|s| match s.value {
                    sentra_core::Value::Gauge(v) => v,
                    _ => f64::NAN,
                })
                .collect::<Vec<f64>>()
        };
        assert_eq!(value("sentra_wg_desired_revision"), [7.0]);
        assert_eq!(value("sentra_wg_applied_revision"), [6.0]);
        assert_eq!(value("sentra_wg_in_sync"), [0.0]);
        assert_eq!(value("sentra_wg_drift_peers"), [2.0]);
        assert_eq!(value("sentra_wg_drift_peer"), [1.0, 1.0]);
        assert_eq!(value("sentra_wg_apply_peer_error"), [1.0]);
        assert!(value("sentra_wg_apply_error").is_empty());
        let kinds: Vec<String> = samples
            .iter()
            .filter(|s| s.name.as_str() == "sentra_wg_drift_peer")
            .map(|s| format!("{:?}", s.labels))
            .collect();
        assert!(
            kinds[0].contains("missing") && kinds[1].contains("unexpected"),
            "{kinds:?}"
        );

        let ok = InterfaceReport {
            interface: "wg0".into(),
            desired_revision: 7,
            applied_revision: 7,
            ..InterfaceReport::default()
        };
        assert!(ok.in_sync());
    }

    /// A server that answers with a fixed state (or "unchanged" once the agent knows it)
    /// and records the revision each query carried.
    struct FakeServer {
        state: proto::DesiredState,
        known: std::sync::Mutex<Vec<u64>>,
    }

    impl Ingest for FakeServer {
        fn push(
            &self,
            _: proto::SignedBatch,
        ) -> crate::ship::BoxFuture<'_, Result<proto::Ack, crate::IngestError>> {
            unreachable!("the applier never pushes")
        }
        fn fetch_desired_state(
            &self,
            envelope: proto::SignedBatch,
        ) -> crate::ship::BoxFuture<'_, Result<proto::DesiredState, crate::IngestError>> {
            let q = proto::DesiredStateQuery::decode(envelope.payload).expect("query");
            self.known.lock().unwrap().push(q.known_revision);
            let state = if q.known_revision == self.state.revision {
                proto::DesiredState {
                    revision: self.state.revision,
                    unchanged: true,
                    interfaces: Vec::new(),
                }
            } else {
                self.state.clone()
            };
            Box::pin(async move { Ok(state) })
        }
    }

    /// Without a kernel device (`wgapplytest0` exists nowhere; on a host without WireGuard
    /// the module is missing): the revision the agent knows is sent back, an unchanged answer
    /// still reconciles the kept state, and every round leaves a report with the reason.
    #[tokio::test(flavor = "current_thread")]
    async fn rounds_send_the_known_revision_and_keep_reconciling() {
        let server = FakeServer {
            state: proto::DesiredState {
                revision: 3,
                unchanged: false,
                interfaces: vec![proto::DesiredInterface {
                    name: "wgapplytest0".into(),
                    peers: vec![peer(1, &["10.0.0.1/32"])],
                }],
            },
            known: std::sync::Mutex::default(),
        };
        let creds: KeyState = std::sync::Arc::new(std::sync::RwLock::new(crate::Credentials::new(
            sentra_core::AgentId::new("edge-01").unwrap(),
            sentra_core::KeyId::new(1),
            sentra_core::SecretKey::from_bytes([7; 32]),
        )));
        let wg = tokio::sync::Mutex::new(WgCollector::new());
        let reports = Reports::default();
        let mut applier = Applier::new(BTreeSet::new(), reports.clone());
        for _ in 0..2 {
            applier.round(&server, &creds, &wg).await;
            let r = reports.lock().unwrap().get("wgapplytest0").cloned();
            let r = r.expect("a report for the declared interface");
            assert_eq!((r.desired_revision, r.applied_revision), (3, 0));
            assert!(r.error.is_some() && !r.in_sync(), "{r:?}");
            reports.lock().unwrap().clear();
        }
        assert_eq!(*server.known.lock().unwrap(), [0, 3]);
    }
}
