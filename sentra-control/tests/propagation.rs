//! Multi-node propagation: two `ControlStore`s on one SQLite file (WAL mode), as two
//! servers sharing a database would be. A key rotated, an agent revoked or enrolled, or a
//! user deleted through one store reaches the other's keyring and session checks through
//! the durable control version and its poller, within 1 s.

use std::time::{Duration, Instant};

use sentra_control::{Actor, ControlStore, Password, PasswordCost, Role, StoreOptions};
use sentra_core::Keyring as _;

fn options(reload: Option<Duration>) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.password_cost = PasswordCost::insecure_for_tests();
    o.reload_interval = reload;
    o
}

/// Polls `cond` until it holds; returns how long that took, or panics after 1 s.
async fn within_1s(what: &str, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: not seen by the other store within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_store_reach_the_other_within_1s() {
    let dir = tempfile::tempdir().unwrap();
    let a = ControlStore::open(dir.path(), options(Some(Duration::from_millis(250))))
        .await
        .unwrap();
    let b = ControlStore::open(dir.path(), options(Some(Duration::from_millis(250))))
        .await
        .unwrap();
    let admin = Actor::local();
    a.create_user(&admin, "root", Password::new("root password"), Role::Admin)
        .await
        .unwrap();

    // Enrolment through A: B's keyring verifies the new agent's key.
    let tok = a
        .issue_bootstrap_token(&admin, Duration::from_secs(60), "")
        .await
        .unwrap();
    let e = a.enroll(&tok.token, "edge").await.unwrap();
    let t_enrol = within_1s("enrolment", async || {
        b.keyring().lookup(&e.agent_id, e.key_id).is_some()
    })
    .await;

    // Rotation through A: B knows key 2.
    let r = a
        .rotate_key(&admin, &e.agent_id, Duration::from_secs(3600))
        .await
        .unwrap();
    let k2 = sentra_core::KeyId::new(r.new_key_id);
    let t_rotate = within_1s("rotation", async || {
        b.keyring().lookup(&e.agent_id, k2).is_some()
    })
    .await;

    // Revocation through A: B drops every key of the agent.
    a.revoke_agent(&admin, &e.agent_id).await.unwrap();
    let t_revoke = within_1s("revocation", async || {
        b.keyring().lookup(&e.agent_id, e.key_id).is_none()
            && b.keyring().lookup(&e.agent_id, k2).is_none()
    })
    .await;

    // A user deleted through A: B's session check fails, and B's user epoch moves so its
    // long-lived streams re-check.
    a.create_user(
        &admin,
        "alice",
        Password::new("alice password"),
        Role::Viewer,
    )
    .await
    .unwrap();
    let (_, version) = b
        .authenticate_session("alice", Password::new("alice password"))
        .await
        .unwrap();
    assert!(b.session_valid("alice", version).await);
    let epoch = b.user_epoch();
    a.delete_user(&admin, "alice").await.unwrap();
    assert!(
        !b.session_valid("alice", version).await,
        "checked per request"
    );
    let t_user = within_1s("user deletion", async || b.user_epoch() != epoch).await;

    eprintln!(
        "propagation (poll 250 ms): enrol {t_enrol:?}, rotate {t_rotate:?}, revoke {t_revoke:?}, user {t_user:?}"
    );
}

/// The control: without the poller, the other store never sees the change, so the test
/// above proves the poller (not some shared cache) carries it.
#[tokio::test]
async fn without_the_poller_the_other_store_keeps_its_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let a = ControlStore::open(dir.path(), options(None)).await.unwrap();
    let b = ControlStore::open(dir.path(), options(None)).await.unwrap();
    let tok = a
        .issue_bootstrap_token(&Actor::local(), Duration::from_secs(60), "")
        .await
        .unwrap();
    let e = a.enroll(&tok.token, "edge").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(b.keyring().lookup(&e.agent_id, e.key_id).is_none());
    // An explicit refresh sees the new control version and reloads.
    assert!(b.refresh().await.unwrap());
    assert!(b.keyring().lookup(&e.agent_id, e.key_id).is_some());
    assert!(!b.refresh().await.unwrap(), "nothing changed since");
}

/// The version moves with every committed change and not with a refused one (it is bumped
/// inside the change's own transaction).
#[tokio::test]
async fn the_control_version_moves_only_with_committed_changes() {
    let dir = tempfile::tempdir().unwrap();
    let a = ControlStore::open(dir.path(), options(None)).await.unwrap();
    let b = ControlStore::open(dir.path(), options(None)).await.unwrap();
    let admin = Actor::local();
    a.create_user(&admin, "root", Password::new("root password"), Role::Admin)
        .await
        .unwrap();
    assert!(b.refresh().await.unwrap());
    // Refused: the last admin cannot be deleted; the transaction rolls back.
    assert!(a.delete_user(&admin, "root").await.is_err());
    assert!(
        !b.refresh().await.unwrap(),
        "a rolled-back change moved the version"
    );
    // A logout ends tokens: committed, so it moves.
    a.end_sessions(&admin, "root").await.unwrap();
    assert!(b.refresh().await.unwrap());
}
