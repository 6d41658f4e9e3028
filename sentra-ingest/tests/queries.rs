//! Queries (and their bounds) and retention with rollups, on real SQLite files.

mod support;

use std::time::Duration;

use sentra_core::UnixMillis;
use sentra_ingest::{
    Aggregation, Config, Error, ExportFormat, Ingest, LabelMatcher, MatchOp, Order, Range,
    Resolution, Selector,
};
use support::*;

const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;

fn ms(t: i64) -> UnixMillis {
    UnixMillis::from_millis(t)
}

/// `lat{host=a|b|c}`: host a has 1..=10, b 11..=20, c 21..=30, one sample per 10 s from
/// `base`; `up{host}` counters.
async fn fixture(config: Config) -> (tempfile::TempDir, Ingest, i64) {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), config).await.unwrap();
    let now = UnixMillis::now().as_millis();
    let base = now - now.rem_euclid(HOUR) - 2 * HOUR;
    let a = agent("q-1");
    let mut samples = Vec::new();
    for (h, host) in ["a", "b", "c"].iter().enumerate() {
        for i in 0..10i64 {
            let v = (h as i64 * 10 + i + 1) as f64;
            samples.push(gauge("lat", &[("host", host)], base + i * 10_000, v));
            samples.push(counter(
                "up",
                &[("host", host)],
                base + i * 10_000,
                i as u64,
            ));
        }
    }
    let r = ingest
        .service()
        .push(verify(&batch(&a, 1, now, samples)))
        .await
        .unwrap();
    assert_eq!(r.status(), sentra_core::proto::AckStatus::Accepted);
    ingest.flush().await.unwrap();
    (dir, ingest, base)
}

#[tokio::test]
async fn every_query_answers_correctly() {
    let (_dir, ingest, base) = fixture(Config::default()).await;
    let q = ingest.query();
    assert_eq!(q.names(None).await.unwrap(), ["lat", "up"]);
    let lat = Selector::metric("lat").unwrap();
    let host = |op, v: &str| LabelMatcher::new("host", op, v).unwrap();

    let latest = q
        .latest(&lat.clone().with(host(MatchOp::Eq, "b")))
        .await
        .unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0].timestamp_ms, latest[0].value),
        (base + 90_000, 20.0)
    );
    assert_eq!(latest[0].series.labels["host"], "b");
    assert_eq!(latest[0].series.agent_id, "q-1");
    assert_eq!(latest[0].series.kind, "gauge");
    let not_b = q
        .latest(&lat.clone().with(host(MatchOp::NotEq, "b")))
        .await
        .unwrap();
    assert_eq!(not_b.len(), 2);
    let by_agent = q.latest(&lat.clone().agent(agent("q-1"))).await.unwrap();
    assert_eq!(by_agent.len(), 3);
    assert!(
        q.latest(&lat.clone().agent(agent("q-2")))
            .await
            .unwrap()
            .is_empty()
    );
    let up = q.latest(&Selector::metric("up").unwrap()).await.unwrap();
    assert_eq!((up[0].value, up[0].series.kind), (9.0, "counter"));

    // history: 50 s steps over host a's 10 samples (values 1..=10)
    let a_only = lat.clone().with(host(MatchOp::Eq, "a"));
    let range = Range::new(ms(base), ms(base + 100_000), Duration::from_secs(50)).unwrap();
    let h = |agg| {
        let q = q.clone();
        let s = a_only.clone();
        async move { q.history(&s, range, agg, Resolution::Auto).await.unwrap() }
    };
    let avg = h(Aggregation::Avg).await;
    assert_eq!(avg[0].resolution, Resolution::Raw);
    assert_eq!(avg[0].points, [(base, 3.0), (base + 50_000, 8.0)]);
    assert_eq!(
        h(Aggregation::Min).await[0].points,
        [(base, 1.0), (base + 50_000, 6.0)]
    );
    assert_eq!(
        h(Aggregation::Max).await[0].points,
        [(base, 5.0), (base + 50_000, 10.0)]
    );
    assert_eq!(
        h(Aggregation::Sum).await[0].points,
        [(base, 15.0), (base + 50_000, 40.0)]
    );
    assert_eq!(
        h(Aggregation::Count).await[0].points,
        [(base, 5.0), (base + 50_000, 5.0)]
    );
    assert_eq!(
        h(Aggregation::Last).await[0].points,
        [(base, 5.0), (base + 50_000, 10.0)]
    );

    let agg = q
        .aggregate(&lat, ms(base), ms(base + HOUR), Aggregation::Max)
        .await
        .unwrap();
    let maxes: Vec<f64> = agg.iter().map(|v| v.value).collect();
    assert_eq!(maxes, [10.0, 20.0, 30.0]);

    let top = q
        .top_n(
            &lat,
            ms(base),
            ms(base + HOUR),
            Aggregation::Avg,
            2,
            Order::Desc,
        )
        .await
        .unwrap();
    let hosts: Vec<&str> = top
        .iter()
        .map(|v| v.series.labels["host"].as_str())
        .collect();
    assert_eq!(hosts, ["c", "b"]);
    let bottom = q
        .top_n(
            &lat,
            ms(base),
            ms(base + HOUR),
            Aggregation::Avg,
            1,
            Order::Asc,
        )
        .await
        .unwrap();
    assert_eq!(bottom[0].value, 5.5);

    let p = q
        .percentiles(&a_only, ms(base), ms(base + HOUR), &[0.0, 0.5, 0.9, 1.0])
        .await
        .unwrap();
    assert_eq!(p[0].samples, 10);
    assert_eq!(
        p[0].values,
        [(0.0, 1.0), (0.5, 5.5), (0.9, 9.1), (1.0, 10.0)]
    );

    let csv = q
        .export(&a_only, ms(base), ms(base + 20_000), ExportFormat::Csv)
        .await
        .unwrap();
    assert_eq!(csv.rows, 2);
    assert_eq!(csv.content_type(), "text/csv; charset=utf-8");
    assert_eq!(
        csv.body,
        format!(
            "agent,name,labels,timestamp_ms,value\nq-1,lat,\"{{\"\"host\"\":\"\"a\"\"}}\",{base},1\nq-1,lat,\"{{\"\"host\"\":\"\"a\"\"}}\",{},2\n",
            base + 10_000
        )
    );
    let json = q
        .export(&a_only, ms(base), ms(base + 20_000), ExportFormat::Json)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v[1]["value"], 2.0);
    assert_eq!(v[1]["labels"]["host"], "a");
    assert_eq!(v[1]["timestamp_ms"], base + 10_000);
    ingest.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_parameters_get_specific_errors() {
    let mut config = Config::default();
    config.limits.max_series = 2;
    config.limits.max_export_rows = 5;
    config.limits.max_raw_samples = 5;
    config.limits.max_names = 1;
    let (_dir, ingest, base) = fixture(config).await;
    let q = ingest.query();
    let lat = Selector::metric("lat").unwrap();
    let one = lat
        .clone()
        .with(LabelMatcher::new("host", MatchOp::Eq, "a").unwrap());

    // step 0, empty and inverted ranges
    assert!(matches!(
        Range::new(ms(base), ms(base + 1), Duration::ZERO),
        Err(Error::InvalidQuery(_))
    ));
    assert!(matches!(
        Range::new(ms(base), ms(base), Duration::from_secs(1)),
        Err(Error::InvalidQuery(_))
    ));
    assert!(matches!(
        q.aggregate(&one, ms(base + 1), ms(base), Aggregation::Avg)
            .await,
        Err(Error::InvalidQuery(_))
    ));
    // a huge range at 1 ms steps
    let huge = Range::new(ms(i64::MIN), ms(i64::MAX), Duration::from_millis(1)).unwrap();
    assert!(matches!(
        q.history(&one, huge, Aggregation::Avg, Resolution::Auto)
            .await,
        Err(Error::TooManyPoints { .. })
    ));
    // a huge range as a single aggregate is fine (bounded by series), and answers
    let all = q
        .aggregate(&one, ms(i64::MIN), ms(i64::MAX), Aggregation::Count)
        .await
        .unwrap();
    assert_eq!(all[0].value, 10.0);
    // too many series
    assert!(matches!(
        q.latest(&lat).await,
        Err(Error::TooManySeries { limit: 2 })
    ));
    assert!(matches!(
        q.series(&Selector::any()).await,
        Err(Error::TooManySeries { .. })
    ));
    assert!(matches!(
        q.names(None).await,
        Err(Error::TooManySeries { limit: 1 })
    ));
    // series × steps over the point limit
    let mut cfg_points = Config::default();
    cfg_points.limits.max_points = 10;
    let (_d2, ingest2, base2) = fixture(cfg_points).await;
    let r = Range::new(ms(base2), ms(base2 + 100_000), Duration::from_secs(25)).unwrap();
    assert!(matches!(
        ingest2
            .query()
            .history(
                &Selector::metric("lat").unwrap(),
                r,
                Aggregation::Avg,
                Resolution::Raw
            )
            .await,
        Err(Error::TooManyPoints {
            requested: 12,
            limit: 10
        })
    ));
    ingest2.shutdown().await.unwrap();
    // invalid label filters and names
    for bad in [
        "",
        "host",
        "bad-name=x",
        "1x=y",
        "__name__=up",
        "a b=c",
        "$.x')--=1",
    ] {
        assert!(
            matches!(LabelMatcher::parse(bad), Err(Error::InvalidQuery(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        Selector::metric("lat{x}"),
        Err(Error::InvalidQuery(_))
    ));
    assert!(matches!(
        "median".parse::<Aggregation>(),
        Err(Error::InvalidQuery(_))
    ));
    // a label value that looks like SQL is just a value
    let odd = lat
        .clone()
        .with(LabelMatcher::new("host", MatchOp::Eq, "a' OR 1=1 --").unwrap());
    assert!(q.latest(&odd).await.unwrap().is_empty());
    // quantiles and top-N
    for qs in [&[][..], &[1.5], &[-0.1], &[f64::NAN]] {
        assert!(matches!(
            q.percentiles(&one, ms(base), ms(base + HOUR), qs).await,
            Err(Error::InvalidQuery(_))
        ));
    }
    assert!(matches!(
        q.percentiles(&one, ms(base), ms(base + HOUR), &[0.5]).await,
        Err(Error::TooManyPoints { limit: 5, .. })
    ));
    assert!(matches!(
        q.top_n(
            &one,
            ms(base),
            ms(base + HOUR),
            Aggregation::Max,
            0,
            Order::Desc
        )
        .await,
        Err(Error::InvalidQuery(_))
    ));
    assert!(matches!(
        q.top_n(
            &one,
            ms(base),
            ms(base + HOUR),
            Aggregation::Max,
            3,
            Order::Desc
        )
        .await,
        Err(Error::InvalidQuery(_))
    ));
    // exports past the row limit
    assert!(matches!(
        q.export(&one, ms(base), ms(base + HOUR), ExportFormat::Csv)
            .await,
        Err(Error::TooManyPoints { limit: 5, .. })
    ));
    // a rollup resolution that does not fit the step
    let r = Range::new(ms(base), ms(base + HOUR), Duration::from_secs(90)).unwrap();
    assert!(matches!(
        q.history(&one, r, Aggregation::Avg, Resolution::Hour).await,
        Err(Error::InvalidQuery(_))
    ));
    ingest.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_keeps_rollups_of_old_samples_and_late_data_fixes_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    let svc = ingest.service();
    let a = agent("r-1");
    let now = UnixMillis::now().as_millis();
    let old = now - now.rem_euclid(HOUR) - 40 * 24 * HOUR; // older than 30 days, hour aligned
    // one sample per 30 s for two hours: values 0, 1, 2, ...
    let samples: Vec<_> = (0..240)
        .map(|i| gauge("temp", &[], old + i * 30_000, i as f64))
        .collect();
    svc.push(verify(&batch(&a, 1, now, samples))).await.unwrap();
    svc.push(verify(&batch(
        &a,
        2,
        now,
        vec![gauge("temp", &[], now, 99.0)],
    )))
    .await
    .unwrap();

    let report = ingest.run_maintenance(ms(now)).await.unwrap();
    assert_eq!(report.series_rolled_up, 1);
    assert_eq!(report.minute_buckets, 121); // 120 old minutes + the current one
    assert_eq!(report.hour_buckets, 3);

    let q = ingest.query();
    let sel = Selector::metric("temp").unwrap();
    // raw data older than the retention is gone, the recent sample is not
    let raw = Range::new(ms(old), ms(old + 2 * HOUR), Duration::from_secs(3600)).unwrap();
    let r = q
        .history(&sel, raw, Aggregation::Avg, Resolution::Raw)
        .await
        .unwrap();
    assert!(r[0].points.is_empty());
    assert_eq!(q.latest(&sel).await.unwrap()[0].value, 99.0);
    // the old range is served from hour rollups automatically
    let r = q
        .history(&sel, raw, Aggregation::Avg, Resolution::Auto)
        .await
        .unwrap();
    assert_eq!(r[0].resolution, Resolution::Hour);
    assert_eq!(r[0].points, [(old, 59.5), (old + HOUR, 179.5)]);
    for (agg, want) in [
        (Aggregation::Min, [0.0, 120.0]),
        (Aggregation::Max, [119.0, 239.0]),
        (Aggregation::Sum, [7140.0, 21540.0]),
        (Aggregation::Count, [120.0, 120.0]),
        (Aggregation::Last, [119.0, 239.0]),
    ] {
        let r = q.history(&sel, raw, agg, Resolution::Auto).await.unwrap();
        let got: Vec<f64> = r[0].points.iter().map(|p| p.1).collect();
        assert_eq!(got, want, "{agg:?}");
    }
    // and from minute rollups at a 30-minute step
    let half = Range::new(ms(old), ms(old + HOUR), Duration::from_secs(1800)).unwrap();
    let r = q
        .history(&sel, half, Aggregation::Max, Resolution::Auto)
        .await
        .unwrap();
    assert_eq!(r[0].resolution, Resolution::Minute);
    assert_eq!(r[0].points, [(old, 59.0), (old + 30 * MIN, 119.0)]);

    // a late sample in an already rolled-up recent minute updates its buckets next pass
    let recent = now - now.rem_euclid(MIN) - 10 * MIN;
    svc.push(verify(&batch(
        &a,
        3,
        now,
        vec![gauge("temp", &[], recent, 5.0)],
    )))
    .await
    .unwrap();
    svc.push(verify(&batch(
        &a,
        4,
        now,
        vec![gauge("temp", &[], recent + 1, 7.0)],
    )))
    .await
    .unwrap();
    ingest.run_maintenance(ms(now)).await.unwrap();
    let m = Range::new(ms(recent), ms(recent + MIN), Duration::from_secs(60)).unwrap();
    let r = q
        .history(&sel, m, Aggregation::Avg, Resolution::Minute)
        .await
        .unwrap();
    assert_eq!(r[0].points, [(recent, 6.0)]);
    ingest.shutdown().await.unwrap();

    // after a restart nothing is rolled up twice or lost
    let ingest = Ingest::open(dir.path(), Config::default()).await.unwrap();
    ingest.run_maintenance(ms(now)).await.unwrap();
    let r = ingest
        .query()
        .history(&sel, m, Aggregation::Count, Resolution::Minute)
        .await
        .unwrap();
    assert_eq!(r[0].points, [(recent, 2.0)]);
    // rollups past their own retention go too
    ingest
        .run_maintenance(ms(now + 800 * 24 * HOUR))
        .await
        .unwrap();
    let r = ingest
        .query()
        .history(&sel, raw, Aggregation::Avg, Resolution::Hour)
        .await
        .unwrap();
    assert!(r[0].points.is_empty());
    ingest.shutdown().await.unwrap();
}
