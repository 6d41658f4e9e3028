//! `sentra doctor` against real servers: SQLite's integrity check on a data directory
//! (issue 10, item 4) and the reasons of a 503 from `/readyz` (item 1's visibility).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use common::{Server, ok};

fn checks(stdout: &[u8]) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("doctor JSON: {e}: {}", String::from_utf8_lossy(stdout)));
    v.as_array().unwrap().clone()
}

fn find<'a>(checks: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name:?} check in {checks:?}"))
}

/// Moves everything from the copy's `-wal` into the main file (so damage to the main file is
/// not masked by newer page versions in the WAL) and removes the `-wal`.
fn checkpoint(db: &Path) {
    use sqlx::Connection as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("PRAGMA journal_mode=DELETE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    assert!(!db.with_extension("db-wal").exists());
}

/// Overwrites the b-tree page header (page type, free block, cell count) of the pages in the
/// middle third of an SQLite file: every b-tree page hit is now malformed.
fn damage_middle_pages(db: &Path) -> usize {
    let mut bytes = std::fs::read(db).unwrap();
    let ps = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        n => usize::from(n),
    };
    let pages = bytes.len() / ps;
    assert!(pages >= 6, "{} has only {pages} pages", db.display());
    let (from, to) = (pages / 3, 2 * pages / 3);
    for p in from..to {
        bytes[p * ps..p * ps + 8]
            .copy_from_slice(&[0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }
    std::fs::write(db, bytes).unwrap();
    to - from
}

#[test]
fn doctor_runs_sqlite_integrity_check_on_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), &["--local-agent"]);
    server.init_and_login();
    // wait until the local agent's samples are committed
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = serde_json::from_str(&ok(
            &server.run(&["metrics", "latest", "node_load1", "--json"], None)
        ))
        .unwrap();
        if v["values"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no samples stored: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
    server.terminate();

    // a damaged copy of the stopped server's databases
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for f in [
        "metrics.db",
        "metrics.db-wal",
        "control.db",
        "control.db-wal",
    ] {
        let src = server.data.join(f);
        if src.exists() {
            std::fs::copy(&src, copy.join(f)).unwrap();
        }
    }
    checkpoint(&copy.join("metrics.db"));
    let damaged = damage_middle_pages(&copy.join("metrics.db"));
    assert!(damaged > 0);

    // the server runs again on the intact data directory
    let server = Server::start(tmp.path(), &[]);
    server.login();
    let doctor = |dir: &Path| {
        server.run(
            &[
                "doctor",
                "--json",
                "--grpc",
                &server.grpc,
                "--data-dir",
                dir.to_str().unwrap(),
            ],
            None,
        )
    };

    let bad = doctor(&copy);
    let c = checks(&bad.stdout);
    let m = find(&c, "metrics.db integrity");
    assert_eq!(m["outcome"], "fail", "{m}");
    let detail = m["detail"].as_str().unwrap();
    assert!(
        detail.contains("integrity check") && detail.contains("metrics.db"),
        "{detail}"
    );
    assert_eq!(find(&c, "control.db integrity")["outcome"], "ok");
    assert!(
        !bad.status.success(),
        "doctor exits non-zero on a failed check"
    );
    // the text form says FAIL on that line
    let text = server.run(
        &[
            "doctor",
            "--grpc",
            &server.grpc,
            "--data-dir",
            copy.to_str().unwrap(),
        ],
        None,
    );
    assert!(!text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("metrics.db integrity") && l.contains("FAIL")),
        "{text}"
    );

    // the live data directory, read-only while the server writes to it: all ok
    let good = doctor(&server.data);
    let c = checks(&good.stdout);
    assert_eq!(find(&c, "metrics.db integrity")["outcome"], "ok", "{c:?}");
    assert_eq!(find(&c, "control.db integrity")["outcome"], "ok", "{c:?}");
    assert!(good.status.success(), "{c:?}");
}

/// A minimal HTTP server that answers `/readyz` with 503 and the reasons body the server
/// sends when a component is failing, and every other path with `{}`.
fn not_ready_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /readyz ") {
                (
                    "503 Service Unavailable",
                    r#"{"status":"unavailable","reasons":[{"component":"ingest","message":"storage failing since 2026-11-29T20:00:00Z: database or disk is full (3 commits failed)"},"writer: task ended"]}"#,
                )
            } else {
                ("200 OK", "{}")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn doctor_shows_the_reasons_of_a_503_from_readyz() {
    let tmp = tempfile::tempdir().unwrap();
    let api = not_ready_server();
    let out = common::run(
        tmp.path(),
        &api,
        &["doctor", "--json", "--grpc", "127.0.0.1:9"],
        None,
    );
    assert!(!out.status.success());
    let c = checks(&out.stdout);
    let r = find(&c, "readiness");
    assert_eq!(r["outcome"], "fail");
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains("ingest: storage failing since")
            && detail.contains("database or disk is full")
            && detail.contains("writer: task ended"),
        "{detail}"
    );
}
