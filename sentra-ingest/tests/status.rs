//! Status cache: rates, counter resets, presence, peer liveness, rebuild after restart,
//! Prometheus exposition.

mod support;

use sentra_core::UnixMillis;
use sentra_ingest::{Config, Ingest, Presence, render_prometheus};
use support::*;

#[tokio::test]
async fn rates_resets_presence_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    let a = agent("gw-1");
    let t0 = UnixMillis::now().as_millis();
    let push = |seq: u64, at: i64, rx: u64, tx: u64| {
        let mut b = batch(&a, seq, at, vec![]);
        b.wg_devices.push(wg(rx, tx, Some(at - 5_000)));
        svc.push(verify(&b))
    };
    push(1, t0, 1_000, 5_000).await.unwrap();
    let s = ingest.status().snapshot_at(UnixMillis::from_millis(t0));
    let p = &s.agents[0].interfaces[0].peers[0];
    assert_eq!((p.rx_rate_bps, p.tx_rate_bps), (None, None));

    push(2, t0 + 10_000, 11_000, 25_000).await.unwrap();
    let s = ingest
        .status()
        .snapshot_at(UnixMillis::from_millis(t0 + 10_000));
    let ag = &s.agents[0];
    assert_eq!(ag.agent_id, "gw-1");
    assert_eq!(ag.high_water, 2);
    let i = &ag.interfaces[0];
    assert_eq!((i.name.as_str(), i.listen_port), ("wg0", 51820));
    let p = &i.peers[0];
    assert_eq!(p.rx_rate_bps, Some(1_000.0));
    assert_eq!(p.tx_rate_bps, Some(2_000.0));
    assert_eq!(p.endpoint.as_deref(), Some("192.0.2.7:51820"));
    assert_eq!(p.allowed_ips, ["10.7.0.2/32"]);
    assert_eq!(p.handshake_age_s, Some(5.0));
    assert!(p.online);
    assert_eq!(p.counter_resets, 0);

    // the interface was recreated: counters restart from zero
    push(3, t0 + 20_000, 3_000, 500).await.unwrap();
    let s = ingest
        .status()
        .snapshot_at(UnixMillis::from_millis(t0 + 20_000));
    let p = &s.agents[0].interfaces[0].peers[0];
    assert_eq!(p.rx_rate_bps, Some(300.0));
    assert_eq!(p.tx_rate_bps, Some(50.0));
    assert_eq!(p.counter_resets, 1);

    // a late, older status does not move the cache backwards
    let mut late = batch(&a, 2_000, t0 + 15_000, vec![]);
    late.wg_devices.push(wg(9, 9, None));
    // (seq far ahead so it is accepted; its collection time is older)
    svc.push(verify(&late)).await.unwrap();
    let s = ingest
        .status()
        .snapshot_at(UnixMillis::from_millis(t0 + 20_000));
    assert_eq!(s.agents[0].interfaces[0].peers[0].rx_bytes, 3_000);

    // presence and peer liveness as time passes (defaults: stale 30 s, offline 120 s,
    // handshake 210 s); last_seen is the server's receive time, close to t0
    let cache = ingest.status();
    let last_seen = cache.snapshot().agents[0].last_seen_ms;
    let at = |ms: i64| cache.snapshot_at(UnixMillis::from_millis(last_seen + ms));
    assert_eq!(at(10_000).agents[0].presence, Presence::Online);
    assert_eq!(at(31_000).agents[0].presence, Presence::Stale);
    assert_eq!(at(121_000).agents[0].presence, Presence::Offline);
    let hs = t0 + 20_000 - 5_000;
    let peer_online = |now: i64| {
        cache.snapshot_at(UnixMillis::from_millis(now)).agents[0].interfaces[0].peers[0].online
    };
    assert!(peer_online(hs + 210_000));
    assert!(!peer_online(hs + 210_001));

    let text = render_prometheus(&cache.snapshot_at(UnixMillis::from_millis(t0 + 20_000)));
    let key = peer_key(2).to_string();
    let labels = format!(
        "agent=\"gw-1\",interface=\"wg0\",public_key=\"{key}\",allowed_ips=\"10.7.0.2/32\""
    );
    assert!(
        text.contains(&format!("wireguard_sent_bytes_total{{{labels}}} 500\n")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "wireguard_received_bytes_total{{{labels}}} 3000\n"
    )));
    assert!(text.contains(&format!(
        "wireguard_latest_handshake_seconds{{{labels}}} {}\n",
        hs / 1000
    )));
    assert!(
        text.contains("# TYPE wireguard_sent_bytes counter"),
        "{text}"
    );
    assert!(text.contains("sentra_agent_up{agent=\"gw-1\"} 1"));
    ingest.shutdown().await.unwrap();

    // restart: the cache comes back from the database before any push
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let s = ingest
        .status()
        .snapshot_at(UnixMillis::from_millis(t0 + 20_000));
    let ag = &s.agents[0];
    assert_eq!(ag.high_water, 2_000);
    assert_eq!(ag.last_seen_ms, last_seen);
    assert_eq!(ag.status_time_ms, Some(t0 + 20_000));
    let p = &ag.interfaces[0].peers[0];
    assert_eq!((p.rx_bytes, p.tx_bytes), (3_000, 500));
    assert_eq!(p.endpoint.as_deref(), Some("192.0.2.7:51820"));
    ingest.shutdown().await.unwrap();
}

#[tokio::test]
async fn presence_thresholds_are_configurable_and_status_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.presence.stale_after = std::time::Duration::from_secs(1);
    config.presence.offline_after = std::time::Duration::from_secs(2);
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let a = agent("gw-2");
    let t = UnixMillis::now().as_millis();
    ingest
        .service()
        .push(verify(&batch(&a, 1, t, vec![])))
        .await
        .unwrap();
    let cache = ingest.status();
    assert_eq!(cache.presence(&a), Some(Presence::Online));
    assert_eq!(cache.presence(&agent("nobody")), None);
    let seen = cache.snapshot().agents[0].last_seen_ms;
    let p = |d| {
        cache
            .agent_at(&a, UnixMillis::from_millis(seen + d))
            .unwrap()
            .presence
    };
    assert_eq!(
        (p(1_000), p(1_001), p(2_001)),
        (Presence::Online, Presence::Stale, Presence::Offline)
    );
    let json =
        serde_json::to_value(cache.snapshot_at(UnixMillis::from_millis(seen + 5_000))).unwrap();
    assert_eq!(json["agents"][0]["presence"], "offline");
    ingest.shutdown().await.unwrap();
}
