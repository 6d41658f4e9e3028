use std::time::Duration;

/// Configuration of an [`Ingest`](crate::Ingest) instance.
///
/// Start from [`Config::default`] and change fields:
///
/// ```
/// let mut config = sentra_ingest::Config::default();
/// config.retention = std::time::Duration::from_secs(7 * 24 * 3600);
/// config.limits.max_series = 200;
/// assert_eq!(config.replay_window, 64);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// How long raw samples are kept (default 30 days). Older data is served from rollups.
    pub retention: Duration,
    /// How long 1-minute rollups are kept (default 90 days).
    pub rollup_1m_retention: Duration,
    /// How long 1-hour rollups are kept (default 2 years).
    pub rollup_1h_retention: Duration,
    /// How often the background task computes rollups and applies retention (default 60 s).
    pub maintenance_interval: Duration,
    /// Presence and peer-liveness thresholds of the status cache.
    pub presence: PresenceConfig,
    /// How many sequence numbers below the high-water mark may still arrive late (out of
    /// order, e.g. two pushes in flight) and be accepted exactly once (default 64).
    pub replay_window: u64,
    /// How far a batch's seq may lie above `max(high-water mark, receive time in ms × 1000)`
    /// before it is refused with `REJECT_REASON_SEQ_TOO_FAR_AHEAD` (default 2⁴², also for
    /// an agent's first batch).
    ///
    /// Agents number batches `seq_base + LSN` with `seq_base ≤ max(clock_ms × 1000,
    /// previous base + 2⁴⁰)` (see the agent's `store` module), so a legitimate seq stays
    /// below `now_ms × 1000 + k × 2⁴⁰ + LSN` where `k` counts WAL re-creations while the
    /// agent's clock was behind. 2⁴² ≈ 4.4 × 10¹² leaves room for three such re-creations
    /// plus 2⁴⁰ collections, or an agent clock up to 50 days ahead when it chose its
    /// base. A seq like 2⁶⁴ − 1, which would make every later batch of the agent look
    /// old, is refused.
    pub max_seq_jump: u64,
    /// Sample timestamps later than the receive time plus this are clamped to the receive
    /// time and counted ([`IngestStats::clamped_samples`](crate::IngestStats)); default
    /// 300 s, the envelope's clock-skew window. See the crate docs, "Clock skew".
    pub max_future_skew: Duration,
    /// Most samples the writer puts into one group commit (default 250 000).
    pub max_group_samples: usize,
    /// Acked batches are staged durably and moved into the samples table in large groups
    /// (fewer B-tree page writes per sample): at the latest this long after the first one
    /// was staged (default 1 s). Queries see a batch once it is applied.
    pub apply_delay: Duration,
    /// Apply staged batches as soon as this many samples are staged (default 500 000).
    pub apply_samples: usize,
    /// Batches that may wait for the writer before callers are back-pressured (default 1024).
    pub queue_depth: usize,
    /// SQLite page cache of the writer connection, KiB (default 64 MiB). The hot set of the
    /// write path is about one 4 KiB leaf page per actively written series.
    pub cache_size_kib: u32,
    /// Buffered events per subscriber before it lags (default 1024).
    pub subscriber_capacity: usize,
    /// Read connections for queries (default 4).
    pub read_connections: u32,
    /// Bounds on queries.
    pub limits: QueryLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            rollup_1m_retention: Duration::from_secs(90 * 24 * 3600),
            rollup_1h_retention: Duration::from_secs(730 * 24 * 3600),
            maintenance_interval: Duration::from_secs(60),
            presence: PresenceConfig::default(),
            replay_window: 64,
            max_seq_jump: 1 << 42,
            max_future_skew: Duration::from_secs(300),
            max_group_samples: 250_000,
            apply_delay: Duration::from_secs(1),
            apply_samples: 500_000,
            queue_depth: 1024,
            cache_size_kib: 64 * 1024,
            subscriber_capacity: 1024,
            read_connections: 4,
            limits: QueryLimits::default(),
        }
    }
}

/// Thresholds that turn timestamps into presence and liveness.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PresenceConfig {
    /// An agent not heard from for longer than this is `stale` (default 30 s: three missed
    /// 10 s collections).
    pub stale_after: Duration,
    /// An agent not heard from for longer than this is `offline` (default 120 s).
    pub offline_after: Duration,
    /// A peer whose last handshake is older than this is offline (default 210 s: WireGuard
    /// re-handshakes every 120 s while traffic flows, gives up after 180 s, plus 30 s margin).
    pub peer_handshake_timeout: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(30),
            offline_after: Duration::from_secs(120),
            peer_handshake_timeout: Duration::from_secs(210),
        }
    }
}

/// Bounds every query so one request cannot exhaust memory or the database.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct QueryLimits {
    /// Most series one query may match (default 1000).
    pub max_series: usize,
    /// Most points one query may return, series × steps (default 100 000).
    pub max_points: u64,
    /// Most raw samples one query may read (percentiles, export; default 2 000 000).
    pub max_raw_samples: u64,
    /// Most rows of one export (default 1 000 000).
    pub max_export_rows: u64,
    /// Most metric names one listing returns (default 10 000).
    pub max_names: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_series: 1000,
            max_points: 100_000,
            max_raw_samples: 2_000_000,
            max_export_rows: 1_000_000,
            max_names: 10_000,
        }
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
