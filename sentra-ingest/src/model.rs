//! Batches flattened into stored rows.

use std::sync::Arc;

use sentra_core::{AgentId, Batch, Labels, MetricName, Seq, UnixMillis, Value, WgDevice};

/// A stored sample value: gauges are `REAL` (NaN stored as `NULL`), counters `INTEGER`
/// (the `u64` bit pattern in an `i64`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Stored {
    Gauge(f64),
    Counter(u64),
}

impl Stored {
    pub(crate) const fn kind(self) -> i64 {
        match self {
            Self::Gauge(_) => 0,
            Self::Counter(_) => 1,
        }
    }
}

/// One sample that does not come straight from `Batch::samples`: histogram parts and
/// series derived from WireGuard status.
#[derive(Clone, Debug)]
pub(crate) struct Extra {
    pub(crate) name: MetricName,
    pub(crate) labels: Labels,
    pub(crate) ts: i64,
    pub(crate) value: Stored,
}

/// A verified, decoded batch ready for the writer.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) batch: Arc<Batch>,
    pub(crate) fingerprint: [u8; 32],
    pub(crate) received: UnixMillis,
    /// The signed payload bytes, staged durably until the samples are applied.
    pub(crate) payload: bytes::Bytes,
    pub(crate) extra: Vec<Extra>,
    /// Encoded WireGuard status (a `MetricBatch` holding only `wg_devices`), if any.
    pub(crate) wg_blob: Option<Vec<u8>>,
    /// Samples whose timestamp was clamped to `received` (too far in the future).
    pub(crate) clamped: usize,
}

impl Prepared {
    pub(crate) fn agent(&self) -> &AgentId {
        &self.batch.agent_id
    }

    pub(crate) fn seq(&self) -> Seq {
        self.batch.seq
    }

    /// Rows this batch writes.
    pub(crate) fn row_count(&self) -> usize {
        self.batch.samples.len() + self.extra.len()
    }
}

/// Flattens `batch`: histograms become `_bucket{le}`, `_count` and `_sum` series (as in
/// Prometheus), WireGuard peers become `wireguard_*` series.
///
/// Sample timestamps (and the collection time) later than `received + max_future_skew_ms`
/// are replaced by `received` and counted: an agent clock running ahead must not plant
/// points in the future (see the crate docs, "Clock skew"). Deterministic for a given
/// `received`, so re-preparing a staged batch after a restart stores the same rows.
///
/// # Errors
///
/// A human-readable reason when a derived name would be invalid (too long).
pub(crate) fn prepare(
    mut batch: Batch,
    fingerprint: [u8; 32],
    received: UnixMillis,
    payload: bytes::Bytes,
    max_future_skew_ms: i64,
) -> Result<Prepared, String> {
    let latest = received
        .as_millis()
        .saturating_add(max_future_skew_ms.max(0));
    let mut clamped = 0;
    for s in &mut batch.samples {
        if s.timestamp.as_millis() > latest {
            s.timestamp = received;
            clamped += 1;
        }
    }
    if batch.created.as_millis() > latest {
        batch.created = received;
    }
    let mut extra = Vec::new();
    for s in &batch.samples {
        if let Value::Histogram(h) = &s.value {
            let ts = s.timestamp.as_millis();
            let suffixed = |suffix: &str| {
                MetricName::new(format!("{}{suffix}", s.name))
                    .map_err(|e| format!("histogram {}: {e}", s.name))
            };
            let base: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(n, _)| *n != "le")
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            let bucket_name = suffixed("_bucket")?;
            let with_le = |le: String| {
                let mut pairs = base.clone();
                pairs.push(("le".to_owned(), le));
                Labels::from_pairs(pairs).map_err(|e| e.to_string())
            };
            for b in h.buckets() {
                extra.push(Extra {
                    name: bucket_name.clone(),
                    labels: with_le(format_le(b.upper_bound))?,
                    ts,
                    value: Stored::Counter(b.cumulative_count),
                });
            }
            extra.push(Extra {
                name: bucket_name,
                labels: with_le("+Inf".to_owned())?,
                ts,
                value: Stored::Counter(h.count()),
            });
            extra.push(Extra {
                name: suffixed("_count")?,
                labels: s.labels.clone(),
                ts,
                value: Stored::Counter(h.count()),
            });
            extra.push(Extra {
                name: suffixed("_sum")?,
                labels: s.labels.clone(),
                ts,
                value: Stored::Gauge(h.sum()),
            });
        }
    }
    let wg_blob = if batch.wg_devices.is_empty() {
        None
    } else {
        wg_series(&batch.wg_devices, batch.created.as_millis(), &mut extra)?;
        Some(encode_devices(&batch))
    };
    Ok(Prepared {
        batch: Arc::new(batch),
        fingerprint,
        received,
        payload,
        extra,
        wg_blob,
        clamped,
    })
}

/// Formats a bucket bound the way Prometheus does (`0.5`, `1`, `1e+06` is not needed).
fn format_le(v: f64) -> String {
    format!("{v}")
}

/// Names of the series derived from WireGuard peer status (as prometheus_wireguard_exporter
/// names them).
pub(crate) const WG_SENT: &str = "wireguard_sent_bytes_total";
/// Received bytes.
pub(crate) const WG_RECEIVED: &str = "wireguard_received_bytes_total";
/// Latest handshake, Unix seconds (0 = never).
pub(crate) const WG_HANDSHAKE: &str = "wireguard_latest_handshake_seconds";

fn wg_series(devices: &[WgDevice], ts: i64, out: &mut Vec<Extra>) -> Result<(), String> {
    let sent = MetricName::new(WG_SENT).map_err(|e| e.to_string())?;
    let received = MetricName::new(WG_RECEIVED).map_err(|e| e.to_string())?;
    let handshake = MetricName::new(WG_HANDSHAKE).map_err(|e| e.to_string())?;
    for d in devices {
        for p in &d.peers {
            let labels = Labels::from_pairs([
                ("interface", d.name.clone()),
                ("public_key", p.public_key.to_string()),
            ])
            .map_err(|e| e.to_string())?;
            out.push(Extra {
                name: sent.clone(),
                labels: labels.clone(),
                ts,
                value: Stored::Counter(p.tx_bytes),
            });
            out.push(Extra {
                name: received.clone(),
                labels: labels.clone(),
                ts,
                value: Stored::Counter(p.rx_bytes),
            });
            #[allow(
                clippy::cast_precision_loss,
                reason = "seconds as f64 are exact below 2^53 ms"
            )]
            let hs = p
                .last_handshake
                .map_or(0.0, |t| t.as_millis() as f64 / 1000.0);
            out.push(Extra {
                name: handshake.clone(),
                labels,
                ts,
                value: Stored::Gauge(hs),
            });
        }
    }
    Ok(())
}

fn encode_devices(batch: &Batch) -> Vec<u8> {
    let mut only = Batch::new(batch.agent_id.clone(), batch.seq, batch.created);
    only.wg_devices.clone_from(&batch.wg_devices);
    only.encode_to_vec()
}

/// Decodes what [`encode_devices`] stored.
pub(crate) fn decode_devices(blob: &[u8]) -> Option<Batch> {
    Batch::decode(blob).ok()
}

/// Canonical JSON of a label set: an object with keys in sorted order.
pub(crate) fn labels_json(labels: &Labels) -> String {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(n, v)| (n.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Parses canonical label JSON back (for query results).
pub(crate) fn parse_labels_json(s: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s) {
        Ok(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
