//! `StoreOptions::lock_data_dir`: one locking store per data directory (what `sentra-server`
//! asks for), while stores without the option still share `control.db` (`sentra init` next
//! to a running server).

use sentra_control::{ControlStore, Error, PasswordCost, StoreOptions};

fn options(lock: bool) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.password_cost = PasswordCost::insecure_for_tests();
    o.reload_interval = None;
    o.lock_data_dir = lock;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_locking_store_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = ControlStore::open(dir.path(), options(true)).await.unwrap();

    let err = ControlStore::open(dir.path(), options(true))
        .await
        .expect_err("the directory is locked");
    assert!(matches!(err, Error::DataDirInUse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(
        text.contains("in use") && text.contains("control.lock"),
        "{text}"
    );

    // A store without the option shares the database as before.
    let shared = ControlStore::open(dir.path(), options(false))
        .await
        .unwrap();
    drop(shared);

    // The lock ends with the store that held it.
    drop(first);
    ControlStore::open(dir.path(), options(true)).await.unwrap();
}
