//! The built-in alert engine end to end, with real processes and sockets: a `sentra-server`
//! process with a routing file (one signed webhook receiver), an agent enrolled over REST
//! that pushes real signed batches over gRPC, and an HTTP receiver in this test.
//!
//! A peer with persistent keepalive whose last handshake is 200 s old fires
//! `WgHandshakeStale` (built-in rule, > 180 s): the receiver gets exactly one `firing`
//! notification, signed (`Sentra-Signature`, HMAC-SHA256 over "t.body"). The server is then
//! stopped (SIGTERM) and started again on the same data directory while the alert fires,
//! and evaluates a new batch (the peer still stale): no second `firing` arrives. A batch
//! with a fresh handshake resolves it: exactly one `resolved` notification follows, and
//! nothing else after more evaluation ticks. Every wait is on a condition with a bound.
//!
//! ## One evaluator per fleet (the alert lease)
//!
//! One alert evaluator per fleet: two `sentra-server` processes on one PostgreSQL control
//! database (a real server from `sentra-testkit`: `SENTRA_TEST_PG_URL`, or a cluster
//! started with `initdb`/`pg_ctl`), a real HTTP receiver in this test, an agent enrolled
//! over REST pushing real signed batches over gRPC to both servers.
//!
//! Only the server holding the alert lease (a PostgreSQL session advisory lock) evaluates:
//! a peer with a 200 s old handshake reported to both servers gives exactly one `firing`
//! notification; the standby answers 503 on `/api/v1/alerts` and 0 on
//! `sentra_alerts_leader`. The holder is killed with SIGKILL once its state is saved to
//! the database; the standby takes the lease, restores the state (the alert still fires,
//! no second `firing`), and a fresh handshake gives exactly one `resolved` notification.
//! A holder whose database session the database ends exits with an error (another server
//! may already evaluate) and the standby takes the lease.
//! Every wait is on a condition with a bound; no timing is asserted.

mod common;

use std::{net::SocketAddr, path::Path, sync::Mutex, time::Duration};

use common::{
    Agent, Received, Server, free_addr, http, json, login, metric, shared_database, start_receiver,
    wait_for,
};
use sentra_control::{Actor, ControlStore, Password, PasswordCost, Role, StoreOptions};
use sentra_core::UnixMillis;

const USER: &str = "alerts-admin";
const PASSWORD: &str = "alerts-admin-password-1";
const SECRET: &str = "webhook-signing-secret-for-the-test";

/// A routing file with one signed webhook receiver (`ops`) for `WgHandshakeStale`.
fn routing_file(dir: &Path, hook: SocketAddr) -> std::path::PathBuf {
    let secret_file = dir.join("hook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let routing = dir.join("routing.toml");
    std::fs::write(
        &routing,
        format!(
            r#"
[[receiver]]
name = "ops"
url = "http://{hook}/hook"
secret_file = "{}"
timeout = "10s"
backoff = "200ms"

[[route]]
receiver = "ops"
matchers = ['alertname="WgHandshakeStale"']
group_by = ["alertname", "agent"]
group_wait = "1s"
group_interval = "2s"
repeat_interval = "1h"
send_resolved = true
"#,
            secret_file.display()
        ),
    )
    .unwrap();
    routing
}

/// A server with the alert lease on the shared PostgreSQL control database.
fn lease_server(dir: &Path, name: &str, url_file: &Path, routing: &Path) -> Server {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[alerts]\nlease = true\nrouting_file = \"{}\"\ntick = \"500ms\"\nstate_save_every = \"500ms\"\n",
            dir.join(name).display(),
            routing.display()
        ),
    )
    .unwrap();
    let args = [
        "--config".as_ref(),
        config.as_os_str(),
        "--control-database-url-file".as_ref(),
        url_file.as_os_str(),
    ];
    Server::start(dir, name, free_addr(), free_addr(), &args)
}

fn leader(s: &Server) -> Option<u64> {
    metric(s.api, "sentra_alerts_leader")
}

/// Checks the `Sentra-Signature` of `r` against the shared secret and returns the parsed
/// body.
fn verified(r: &Received) -> serde_json::Value {
    let sig = r.signature.as_deref().expect("a Sentra-Signature header");
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("malformed signature {sig}"));
    let want = sentra_alerts::notify::signature(
        &sentra_alerts::notify::Secret::new(SECRET),
        t,
        r.body.as_bytes(),
    );
    assert_eq!(sig, want, "the HMAC over t.body does not verify");
    let wrong = sentra_alerts::notify::signature(
        &sentra_alerts::notify::Secret::new("another secret"),
        t,
        r.body.as_bytes(),
    );
    assert_ne!(sig, wrong);
    let age = UnixMillis::now().as_millis() / 1000 - t;
    assert!(
        (-5..300).contains(&age),
        "signature timestamp {t} is {age} s old"
    );
    json(&r.body)
}

fn firing_count(received: &Mutex<Vec<Received>>) -> usize {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| json(&r.body)["status"] == "firing")
        .count()
}

#[test]
fn stale_handshake_fires_once_survives_a_restart_and_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (hook, received) = start_receiver();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // an admin and a bootstrap token, straight in the control store
    let token = rt.block_on(async {
        let store = sentra_api::ControlStore::open(&data, sentra_api::StoreOptions::default())
            .await
            .unwrap();
        store
            .create_user(
                &sentra_api::Actor::local(),
                USER,
                sentra_api::Password::new(PASSWORD),
                sentra_api::Role::Admin,
            )
            .await
            .unwrap();
        let t = store
            .issue_bootstrap_token(
                &sentra_api::Actor::local(),
                Duration::from_secs(600),
                "alerts",
            )
            .await
            .unwrap();
        t.token.expose_secret().to_owned()
    });

    let routing = routing_file(dir.path(), hook);
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[alerts]\nrouting_file = \"{}\"\ntick = \"500ms\"\n",
            data.display(),
            routing.display()
        ),
    )
    .unwrap();
    let (grpc, api) = (free_addr(), free_addr());
    let args = ["--config".as_ref(), config.as_os_str()];
    let server = Server::start(dir.path(), "server", api, grpc, &args);

    // enrol over REST
    let agent = Agent::enroll(api, &token, "gw-alerts");

    // stale: 200 s > 180 s
    agent.push_peer_handshake(&rt, grpc, 1, Duration::from_secs(200));
    let firing = wait_for("one firing notification", Duration::from_secs(60), || {
        received.lock().unwrap().first().cloned()
    });
    let n = verified(&firing);
    assert_eq!(n["status"], "firing", "{n}");
    assert_eq!(n["receiver"], "ops");
    assert_eq!(n["version"], "4");
    let alerts = n["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{n}");
    assert_eq!(alerts[0]["labels"]["alertname"], "WgHandshakeStale");
    assert_eq!(alerts[0]["labels"]["agent"], agent.id.as_str());
    assert_eq!(alerts[0]["labels"]["interface"], "wg0");
    let fingerprint = alerts[0]["fingerprint"].as_str().unwrap().to_owned();
    eprintln!("receiver got: {}", firing.body);

    // the API shows it firing
    let bearer = login(api, USER, PASSWORD);
    let (status, body) = http(api, "GET", "/api/v1/alerts", Some(&bearer), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let list = json(&body);
    assert!(
        list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "WgHandshakeStale" && a["status"] == "firing"),
        "{list}"
    );

    // restart while firing
    let status = server.terminate();
    assert!(status.success(), "server exited with {status}");
    assert!(data.join("alerts-state.json").exists());
    let server = Server::start(dir.path(), "server", api, grpc, &args);
    // still stale; wait until the restarted engine observed it and ticked twice since
    agent.push_peer_handshake(&rt, grpc, 2, Duration::from_secs(210));
    wait_for("the batch evaluated", Duration::from_secs(60), || {
        (metric(api, "sentra_alerts_batches_total")? >= 1).then_some(())
    });
    let ticks = metric(api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks", Duration::from_secs(60), || {
        (metric(api, "sentra_alerts_ticks_total")? >= ticks + 6).then_some(())
    });
    assert_eq!(
        metric(api, "sentra_alerts_firing"),
        Some(1),
        "the alert still fires after the restart"
    );
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "a restart must not repeat the firing notification"
    );

    // a fresh handshake resolves it: exactly one resolved notification
    agent.push_peer_handshake(&rt, grpc, 3, Duration::from_secs(5));
    let resolved = wait_for("one resolved notification", Duration::from_secs(60), || {
        received.lock().unwrap().get(1).cloned()
    });
    let n = verified(&resolved);
    assert_eq!(n["status"], "resolved", "{n}");
    let alerts = n["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{n}");
    assert_eq!(alerts[0]["status"], "resolved");
    assert_eq!(alerts[0]["fingerprint"], fingerprint.as_str());
    eprintln!("receiver got: {}", resolved.body);

    // nothing more: several flush intervals later, still two
    let ticks = metric(api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks", Duration::from_secs(60), || {
        (metric(api, "sentra_alerts_ticks_total")? >= ticks + 10).then_some(())
    });
    assert_eq!(metric(api, "sentra_alerts_firing"), Some(0));
    assert_eq!(
        received.lock().unwrap().len(),
        2,
        "exactly one firing and one resolved notification"
    );
    assert_eq!(
        metric(api, "sentra_alerts_notifications_delivered_total"),
        Some(1)
    );
    let status = server.terminate();
    assert!(status.success(), "server exited with {status}");

    // the server log names the receiver, never the secret or the URL's path
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("alert engine started"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the signing secret leaked into the log"
    );
}

#[test]
fn one_evaluator_per_fleet_and_the_standby_takes_over_without_renotifying() {
    let (rt, db, dir, url_file) = shared_database();
    let (hook, received) = start_receiver();

    // an admin and a bootstrap token, straight in the shared control store
    let mut opts = StoreOptions::default();
    opts.password_cost = PasswordCost::insecure_for_tests();
    opts.reload_interval = None;
    let token = rt.block_on(async {
        let ops = ControlStore::open_postgres(db.url(), opts).await.unwrap();
        ops.create_user(&Actor::local(), USER, Password::new(PASSWORD), Role::Admin)
            .await
            .unwrap();
        let t = ops
            .issue_bootstrap_token(&Actor::local(), Duration::from_secs(600), "alerts-ha")
            .await
            .unwrap();
        t.token.expose_secret().to_owned()
    });

    let routing = routing_file(dir.path(), hook);

    // a starts first and takes the lease; b waits on standby
    let a = lease_server(dir.path(), "a", &url_file, &routing);
    wait_for("a holds the alert lease", Duration::from_secs(60), || {
        (leader(&a)? == 1).then_some(())
    });
    let b = lease_server(dir.path(), "b", &url_file, &routing);
    wait_for("b on standby", Duration::from_secs(60), || {
        b.log_text()
            .contains("alert engine on standby")
            .then_some(())
    });
    assert_eq!(leader(&b), Some(0), "{}", b.log_text());

    // enrol over REST (through a; the agent is known to both)
    let agent = Agent::enroll(a.api, &token, "gw-ha");

    // the standby answers 503 on the alerts API
    let bearer_b = login(b.api, USER, PASSWORD);
    let (status, body) = http(b.api, "GET", "/api/v1/alerts", Some(&bearer_b), None).unwrap();
    assert_eq!(status, 503, "the standby does not evaluate: {body}");

    // the same stale peer reported to both servers: one firing notification
    agent.push_peer_handshake(&rt, a.grpc, 1, Duration::from_secs(200));
    agent.push_peer_handshake(&rt, b.grpc, 2, Duration::from_secs(201));
    let firing = wait_for("one firing notification", Duration::from_secs(60), || {
        received.lock().unwrap().first().cloned()
    });
    let n = verified(&firing);
    assert_eq!(n["status"], "firing", "{n}");
    let fingerprint = n["alerts"][0]["fingerprint"].as_str().unwrap().to_owned();
    eprintln!("receiver got: {}", firing.body);
    // the holder's state, with the notification recorded, is saved to the database twice
    // after the notification arrived (so at least one save started after it)
    let saves = metric(a.api, "sentra_alerts_state_saves_total").unwrap();
    wait_for("two more state saves", Duration::from_secs(60), || {
        (metric(a.api, "sentra_alerts_state_saves_total")? >= saves + 2).then_some(())
    });
    let ticks = metric(a.api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks on a", Duration::from_secs(60), || {
        (metric(a.api, "sentra_alerts_ticks_total")? >= ticks + 6).then_some(())
    });
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "two servers, one evaluator: exactly one firing notification"
    );
    assert_eq!(leader(&b), Some(0));

    // kill -9 the holder: b takes over from the saved state
    a.kill9();
    wait_for("b holds the alert lease", Duration::from_secs(60), || {
        (leader(&b)? == 1).then_some(())
    });
    assert!(
        b.log_text()
            .contains("this server holds the alert lease and evaluates the alerts"),
        "{}",
        b.log_text()
    );
    let body = wait_for("the alert firing on b", Duration::from_secs(60), || {
        let (status, body) = http(b.api, "GET", "/api/v1/alerts", Some(&bearer_b), None)?;
        (status == 200
            && json(&body)["alerts"]
                .as_array()?
                .iter()
                .any(|x| x["rule"] == "WgHandshakeStale" && x["status"] == "firing"))
        .then_some(body)
    });
    eprintln!("b after the takeover: {body}");
    // still stale: evaluated on b, no second firing
    agent.push_peer_handshake(&rt, b.grpc, 3, Duration::from_secs(210));
    wait_for("the batch evaluated on b", Duration::from_secs(60), || {
        (metric(b.api, "sentra_alerts_batches_total")? >= 1).then_some(())
    });
    let ticks = metric(b.api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks on b", Duration::from_secs(60), || {
        (metric(b.api, "sentra_alerts_ticks_total")? >= ticks + 6).then_some(())
    });
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "the takeover must not repeat the firing notification"
    );

    // a fresh handshake: exactly one resolved notification, from b
    agent.push_peer_handshake(&rt, b.grpc, 4, Duration::from_secs(5));
    let resolved = wait_for("one resolved notification", Duration::from_secs(60), || {
        received.lock().unwrap().get(1).cloned()
    });
    let n = verified(&resolved);
    assert_eq!(n["status"], "resolved", "{n}");
    assert_eq!(n["alerts"][0]["fingerprint"], fingerprint.as_str());
    eprintln!("receiver got: {}", resolved.body);
    let ticks = metric(b.api, "sentra_alerts_ticks_total").unwrap();
    wait_for("more ticks on b", Duration::from_secs(60), || {
        (metric(b.api, "sentra_alerts_ticks_total")? >= ticks + 10).then_some(())
    });
    assert_eq!(metric(b.api, "sentra_alerts_firing"), Some(0));
    assert_eq!(firing_count(&received), 1, "no second firing");
    assert_eq!(
        received.lock().unwrap().len(),
        2,
        "exactly one firing and one resolved notification"
    );
    assert!(!b.log_text().contains(SECRET));
}

#[test]
fn a_holder_that_loses_its_session_exits_and_the_standby_takes_over() {
    let (rt, db, dir, url_file) = shared_database();
    let routing = dir.path().join("routing.toml");
    std::fs::write(&routing, "[[route]]\nreceiver = \"log\"\n").unwrap();

    let mut a = lease_server(dir.path(), "a", &url_file, &routing);
    wait_for("a holds the alert lease", Duration::from_secs(60), || {
        (leader(&a)? == 1).then_some(())
    });
    let b = lease_server(dir.path(), "b", &url_file, &routing);
    wait_for("b on standby", Duration::from_secs(60), || {
        b.log_text()
            .contains("alert engine on standby")
            .then_some(())
    });

    // the database ends the holder's session (as a restart or a broken network would)
    let ended = rt.block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let n: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND database =
               (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        n.len()
    });
    assert_eq!(ended, 1, "one session holds the lease");
    let status = wait_for("a exits", Duration::from_secs(60), || {
        a.child.try_wait().unwrap()
    });
    assert!(!status.success(), "a lost lease is an error exit: {status}");
    assert!(
        a.log_text().contains("lost the alert lease"),
        "{}",
        a.log_text()
    );
    wait_for("b holds the alert lease", Duration::from_secs(60), || {
        (leader(&b)? == 1).then_some(())
    });
}
