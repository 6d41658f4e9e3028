//! `[storage]` in the server process: a PostgreSQL database that is unreachable, refuses
//! the password, does not exist, or a URL that is not a postgres:// URL stops the server at
//! start with an error that says what failed and where, and never shows the password; a
//! half-configured backend is refused before anything opens. The real PostgreSQL comes
//! from `sentra-testkit` (`SENTRA_TEST_PG_URL`, or a cluster started with `initdb`/`pg_ctl`;
//! a missing PostgreSQL fails with an install hint).

mod common;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use sentra_testkit::{PgServer, TestDb};

const SECRET: &str = "s3cr3t-pw-do-not-print";

use common::free_addr;

/// Removes every `SENTRA_*` variable this test inherited from `cmd`'s environment: a
/// developer's shell (a storage backend, a data directory, a database URL) must not change
/// what the spawned server does.
fn clean_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SENTRA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the server with `args` until it exits (it must, within 60 s): its output.
fn run_server(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentra-server"));
    clean_env(&mut cmd)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--grpc-listen", &free_addr().to_string()])
        .args(["--api-listen", &free_addr().to_string()])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the server did not stop on a bad database within 60 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The server given `url` (in a URL file) must fail with `want` in its error.
fn assert_refused(dir: &Path, url: &str, want: &[&str]) {
    let file = dir.join("database-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let out = run_server(
        dir,
        &[
            "--storage-backend",
            "postgres",
            "--database-url-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "started on a bad database:\n{text}");
    for w in want {
        assert!(text.contains(w), "{w:?} missing from:\n{text}");
    }
    assert!(!text.contains(SECRET), "the password leaked:\n{text}");
}

#[test]
fn a_bad_database_stops_the_server_with_a_clear_error_and_no_password() {
    let server = PgServer::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    // Nothing listens there.
    assert_refused(
        dir.path(),
        &format!("postgres://sentra:{SECRET}@127.0.0.1:{port}/sentra"),
        &[
            "opening the PostgreSQL metric store",
            &format!("127.0.0.1:{port}"),
        ],
    );
    // The real server with the wrong password.
    let good = server.url_for("postgres");
    let (scheme, rest) = good.split_once("://").unwrap();
    let (cred, host) = rest.split_once('@').unwrap();
    let user = cred.split(':').next().unwrap();
    assert_refused(
        dir.path(),
        &format!("{scheme}://{user}:{SECRET}@{host}"),
        &["opening the PostgreSQL metric store", "password"],
    );
    // A database that does not exist.
    assert_refused(
        dir.path(),
        &server.url_for("sentra_no_such_database"),
        &["sentra_no_such_database", "does not exist"],
    );
    // Not a URL PostgreSQL understands: refused by the configuration, before connecting.
    assert_refused(
        dir.path(),
        &format!("mysql://sentra:{SECRET}@127.0.0.1:{port}/sentra"),
        &["does not start with postgres://"],
    );
    assert_refused(
        dir.path(),
        &format!("postgres://u:{SECRET}@[::1:5432/x"),
        &["PostgreSQL URL"],
    );
}

#[test]
fn a_half_configured_backend_is_refused_before_anything_opens() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_server(dir.path(), &["--storage-backend", "postgres"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs a database URL"), "{err}");
    // A URL without the backend is a mistake, not a silent SQLite server.
    let url = format!("postgres://sentra:{SECRET}@127.0.0.1:1/sentra");
    let out = run_server(dir.path(), &[], &[("SENTRA_DATABASE_URL", &url)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("SENTRA_DATABASE_URL") && err.contains("--storage-backend postgres"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
    // The same from the TOML file.
    let toml = dir.path().join("server.toml");
    std::fs::write(&toml, "[storage]\nbackend = \"postgres\"\n").unwrap();
    let out = run_server(dir.path(), &["--config", toml.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a database URL"), "{err}");
    std::fs::write(&toml, "[storage]\nbackend = \"oracle\"\n").unwrap();
    let out = run_server(dir.path(), &["--config", toml.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown variant") && err.contains("sqlite"),
        "{err}"
    );
    // Nothing was created for a server that never started.
    assert!(!dir.path().join("data").join("metrics.db").exists());
}

/// One URL from the TOML file's `[storage]` puts both stores in one PostgreSQL database,
/// apart: the metric store in schema `sentra_metrics`, the control plane in `public`.
#[test]
fn one_database_holds_the_metric_store_and_the_control_plane() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, db.url()).unwrap();
    let toml = dir.path().join("server.toml");
    std::fs::write(
        &toml,
        format!(
            "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n",
            url_file.display()
        ),
    )
    .unwrap();
    let api = free_addr();
    let log = dir.path().join("server.log");
    let mut child = clean_env(&mut Command::new(env!("CARGO_BIN_EXE_sentra-server")))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--config", toml.to_str().unwrap()])
        .args(["--grpc-listen", &free_addr().to_string()])
        .args(["--api-listen", &api.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let tables = loop {
        let tables: Vec<(String, String)> = rt.block_on(async {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query_as(
                "SELECT table_schema::text, table_name::text FROM information_schema.tables \
                 WHERE table_name IN ('agents', 'chunks', 'users', '_sqlx_migrations') \
                 ORDER BY 1, 2",
            )
            .fetch_all(&mut c)
            .await
            .unwrap()
        });
        if tables.len() >= 6 || Instant::now() > deadline {
            break tables;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "server exited ({st}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let want: Vec<(String, String)> = [
        ("public", "_sqlx_migrations"),
        ("public", "agents"),
        ("public", "users"),
        ("sentra_metrics", "_sqlx_migrations"),
        ("sentra_metrics", "agents"),
        ("sentra_metrics", "chunks"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(
        tables,
        want,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!dir.path().join("data").join("metrics.db").exists());
    assert!(!dir.path().join("data").join("control.db").exists());
}
