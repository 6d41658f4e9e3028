//! `sentra init --control-database-url-file`: the first admin in a shared PostgreSQL
//! control database (a real server from `sentra-testkit`), and errors that never show
//! the URL.

mod common;

use common::{ok, run};
use sentra_control::{ControlStore, Password, Role, StoreOptions};

#[test]
fn init_creates_the_first_admin_in_a_postgres_control_database() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt
        .block_on(sentra_testkit::TestDb::new())
        .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let url_file = tmp.path().join("control-db.url");
    std::fs::write(&url_file, format!("{}\n", db.url())).unwrap();
    let url_s = url_file.to_str().unwrap();
    let data = tmp.path().join("data");

    let out = ok(&run(
        tmp.path(),
        "http://127.0.0.1:1",
        &[
            "init",
            "--data-dir",
            data.to_str().unwrap(),
            "--control-database-url-file",
            url_s,
            "--password-stdin",
            "--json",
        ],
        Some("a long passphrase\n"),
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["username"].as_str(), v["control_database"].as_str()),
        (Some("admin"), Some("postgres"))
    );
    assert!(
        !data.join("control.db").exists(),
        "init wrote a local control.db"
    );

    let mut opts = StoreOptions::default();
    opts.reload_interval = None;
    let user = rt.block_on(async {
        let store = ControlStore::open_postgres(db.url(), opts).await.unwrap();
        store
            .authenticate("admin", Password::new("a long passphrase"))
            .await
            .unwrap()
    });
    assert_eq!(user.role, Role::Admin);

    // An unreachable database: a clear error naming what failed, never the password.
    let bad = tmp.path().join("bad.url");
    std::fs::write(&bad, "postgres://sentra:hunter2-canary@127.0.0.1:1/control").unwrap();
    let out = run(
        tmp.path(),
        "http://127.0.0.1:1",
        &[
            "init",
            "--control-database-url-file",
            bad.to_str().unwrap(),
            "--password-stdin",
        ],
        Some("a long passphrase\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("PostgreSQL control database"), "{err}");
    assert!(!err.contains("hunter2-canary"), "{err}");
    drop(db);
}
