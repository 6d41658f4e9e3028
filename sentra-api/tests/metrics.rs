//! `/metrics` as operators scrape it: one registry carrying the API's, the ingest
//! pipeline's and the gRPC transport's series, behind an optional scrape token. A real
//! transport server on loopback feeds a real ingest pipeline; the REST API is served on
//! loopback and scraped over HTTP.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use sentra_core::{Batch, Nonce, Seq, Signer, UnixMillis, proto::AckStatus};
use sentra_transport::{Client, RetryConfig, Server as GrpcServer, metrics::Metrics};
use support::*;

const SCRAPE_TOKEN: &str = "scrape-token-for-tests";

/// The value of the one line that starts with `series ` (exact labels), if any.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn transport_and_ingest_counters_reach_metrics_behind_the_scrape_token() {
    let mut config = test_config();
    config.metrics_token = Some(sentra_api::SecretString::new(SCRAPE_TOKEN));
    let s = start_full(config, true).await;
    let admin = s.admin().await;
    let agent = s.enroll(&admin, "edge-metrics").await;

    // The host wires the transport's series into the API's registry, as sentra-server does.
    let transport = Metrics::new();
    s.api.register_metrics(|r| transport.register(r));
    let ingest = s.ingest.clone().unwrap();
    let server = GrpcServer::builder(s.api.keyring(), ingest.service())
        .metrics(transport.clone())
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _grpc = tokio::spawn(async move { server.serve(listener).await.unwrap() });
    let client = Client::builder(format!("http://{addr}"))
        .retry(RetryConfig::disabled())
        .attempt_timeout(Duration::from_secs(5))
        .deadline(Duration::from_secs(10))
        .build()
        .unwrap();
    let signed = |seq: u64| {
        let batch = Batch::new(
            agent.agent_id.clone(),
            Seq::new(seq).unwrap(),
            UnixMillis::now(),
        );
        Signer::new(agent.agent_id.clone(), agent.key_id, &agent.secret).sign_batch(
            &batch,
            UnixMillis::now(),
            Nonce::random(),
        )
    };

    // Without the token, or with a wrong one: 401, and nothing of the page.
    for token in [None, Some("wrong"), Some("")] {
        let r = s.get("/metrics", token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}: {}", r.text);
        assert!(!r.text.contains("sentra_"), "{}", r.text);
        assert!(r.headers.contains_key("www-authenticate"));
    }
    let scrape = || async {
        let r = s.get("/metrics", Some(SCRAPE_TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.text
    };

    let before = scrape().await;
    let rejected_ahead = r#"sentra_ingest_batches_rejected_total{reason="seq_too_far_ahead"}"#;
    assert_eq!(value(&before, rejected_ahead), Some(0.0), "{before}");
    assert_eq!(
        value(&before, "sentra_ingest_batches_accepted_total"),
        Some(0.0)
    );
    assert!(
        before.contains("# TYPE sentra_transport_connections_closed_total counter\n"),
        "{before}"
    );

    // One stored batch, one rejected for its seq (far beyond the jump bound).
    let ack = client.push(signed(1)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Accepted, "{ack:?}");
    let ack = client.push(signed(u64::MAX >> 2)).await.unwrap();
    assert_eq!(ack.status(), AckStatus::Rejected, "{ack:?}");

    let after = scrape().await;
    assert_eq!(value(&after, rejected_ahead), Some(1.0), "{after}");
    assert_eq!(
        value(&after, "sentra_ingest_batches_accepted_total"),
        Some(1.0)
    );
    for (series, want) in [
        (
            r#"sentra_transport_requests_total{method="push",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"sentra_transport_requests_total{method="push",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"sentra_transport_request_duration_seconds_count{method="push",outcome="accepted"}"#,
            1.0,
        ),
        ("sentra_ingest_commit_duration_seconds_count", 1.0),
        ("sentra_ingest_queue_depth", 0.0),
        ("sentra_storage_healthy", 1.0),
        ("sentra_api_agents_with_keys", 1.0),
    ] {
        assert_eq!(value(&after, series), Some(want), "{series} in\n{after}");
    }
    // The agent's status series come from the same registry.
    assert_eq!(
        value(
            &after,
            &format!("sentra_agent_up{{agent=\"{}\"}}", agent.agent_id)
        ),
        Some(1.0),
        "{after}"
    );
    // Text format 0.0.4: HELP and TYPE for every family, counters named with `_total`.
    let mut typed = 0;
    for line in after.lines().filter(|l| l.starts_with("# TYPE ")) {
        typed += 1;
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            after.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        if line.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{line}");
        }
    }
    assert!(typed >= 25, "{typed} families:\n{after}");
    assert!(!after.contains("# EOF"));

    // A scraper asking for OpenMetrics gets it.
    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .bearer_auth(SCRAPE_TOKEN)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let om = r.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE sentra_ingest_batches_rejected counter\n"));
}

#[tokio::test]
async fn without_a_token_metrics_is_open_and_endpoints_are_opt_in() {
    let s = start_full(test_config(), true).await;
    let r = s.get("/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !r.text.contains("wireguard_peer_endpoint_info"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("# TYPE wireguard_peers gauge\n"),
        "{}",
        r.text
    );

    let mut config = test_config();
    config.metrics_peer_endpoints = true;
    let s = start_full(config, true).await;
    let r = s.get("/metrics", None).await;
    assert!(
        r.text
            .contains("# TYPE wireguard_peer_endpoint_info gauge\n"),
        "{}",
        r.text
    );
}
