//! Prometheus series of the JetStream bus, for the `/metrics` of ingest servers and
//! storage workers (`sentra_bus_*`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

type Result1 = [(&'static str, &'static str); 1];

/// The bus's series. Cloning gives another handle on the same series.
///
/// Register them once per registry with [`BusMetrics::register`]; the publisher and the
/// worker each have one ([`BusPublisher::metrics`](super::BusPublisher::metrics),
/// [`BusWorker::metrics`](super::BusWorker::metrics)).
#[derive(Clone, Debug)]
pub struct BusMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    publishes: Family<Result1, Counter>,
    puback_seconds: Histogram,
    messages: Family<Result1, Counter>,
    redeliveries: Counter,
    dead_letters: Counter,
    consumer_pending: Gauge,
    consumer_ack_pending: Gauge,
    connected: Gauge,
    reconnects: Counter,
    /// A `Connected` event after this is a reconnect.
    was_connected: AtomicBool,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BusMetrics {
    /// Fresh series, all zero.
    #[must_use]
    pub fn new() -> Self {
        let this = Self {
            inner: Arc::new(Inner {
                publishes: Family::default(),
                // 0.5 ms .. ~4 s: a PubAck with `sync_interval: always` is an fsync away.
                puback_seconds: Histogram::new(
                    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14),
                ),
                messages: Family::default(),
                redeliveries: Counter::default(),
                dead_letters: Counter::default(),
                consumer_pending: Gauge::default(),
                consumer_ack_pending: Gauge::default(),
                connected: Gauge::default(),
                reconnects: Counter::default(),
                was_connected: AtomicBool::new(false),
            }),
        };
        // Every result from the start (a scrape shows 0, not nothing).
        for r in ["accepted", "duplicate", "rejected", "failed"] {
            let _ = this.inner.publishes.get_or_create(&[("result", r)]);
            let _ = this.inner.messages.get_or_create(&[("result", r)]);
        }
        this
    }

    /// Registers every `sentra_bus_*` series in `registry`. Call once per registry.
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        registry.register(
            "sentra_bus_publishes",
            "Batches an ingest server put on the bus, by result (accepted, duplicate: \
             JetStream knew the Msg-Id, rejected: undecodable, failed: no connection or no \
             PubAck; the agent retries)",
            i.publishes.clone(),
        );
        registry.register(
            "sentra_bus_puback_seconds",
            "Time from publishing a batch to JetStream's PubAck",
            i.puback_seconds.clone(),
        );
        registry.register(
            "sentra_bus_worker_messages",
            "Messages a storage worker handled, by what the store answered (accepted, \
             duplicate, rejected, failed: nak'ed for redelivery)",
            i.messages.clone(),
        );
        registry.register(
            "sentra_bus_redeliveries",
            "Messages a storage worker received more than once (JetStream redeliveries)",
            i.redeliveries.clone(),
        );
        registry.register(
            "sentra_bus_dead_letters",
            "Messages a storage worker moved to the dead-letter stream",
            i.dead_letters.clone(),
        );
        registry.register(
            "sentra_bus_consumer_pending",
            "Messages in the stream not yet delivered to the workers' durable consumer",
            i.consumer_pending.clone(),
        );
        registry.register(
            "sentra_bus_consumer_ack_pending",
            "Messages delivered to the workers' consumer and not acknowledged yet",
            i.consumer_ack_pending.clone(),
        );
        registry.register(
            "sentra_bus_connected",
            "1 while this process is connected to NATS, 0 while it reconnects",
            i.connected.clone(),
        );
        registry.register(
            "sentra_bus_reconnects",
            "NATS connections re-established after a loss",
            i.reconnects.clone(),
        );
    }

    pub(super) fn publish(&self, result: &'static str) {
        self.inner
            .publishes
            .get_or_create(&[("result", result)])
            .inc();
    }

    pub(super) fn puback(&self, seconds: f64) {
        self.inner.puback_seconds.observe(seconds);
    }

    pub(super) fn message(&self, result: &'static str) {
        self.inner
            .messages
            .get_or_create(&[("result", result)])
            .inc();
    }

    pub(super) fn redelivered(&self) {
        self.inner.redeliveries.inc();
    }

    pub(super) fn dead_lettered(&self) {
        self.inner.dead_letters.inc();
    }

    pub(super) fn pending(&self, pending: u64, ack_pending: usize) {
        self.inner
            .consumer_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.inner
            .consumer_ack_pending
            .set(i64::try_from(ack_pending).unwrap_or(i64::MAX));
    }

    pub(super) fn connection(&self, connected: bool) {
        self.inner.connected.set(i64::from(connected));
        if connected && self.inner.was_connected.swap(true, Ordering::Relaxed) {
            self.inner.reconnects.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_and_count() {
        let m = BusMetrics::new();
        let mut r = Registry::default();
        m.register(&mut r);
        m.connection(true);
        m.connection(false);
        m.connection(true);
        m.publish("accepted");
        m.puback(0.002);
        m.pending(7, 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for want in [
            "sentra_bus_reconnects_total 1",
            "sentra_bus_connected 1",
            "sentra_bus_publishes_total{result=\"accepted\"} 1",
            "sentra_bus_puback_seconds_count 1",
            "sentra_bus_consumer_pending 7",
            "sentra_bus_consumer_ack_pending 2",
            "sentra_bus_dead_letters_total 0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
