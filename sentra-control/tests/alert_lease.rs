//! The alert lease on a real PostgreSQL (`sentra-testkit`): one holder at a time, released
//! when the holder's session ends, and the state row written and read through it.

use sentra_control::alert_lease::AlertLease;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_released_with_its_session_state_kept() {
    let db = sentra_testkit::TestDb::new()
        .await
        .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let first = AlertLease::try_acquire(db.url())
        .await
        .unwrap()
        .expect("the first server takes the lease");
    assert!(
        AlertLease::try_acquire(db.url()).await.unwrap().is_none(),
        "a second server must not take a held lease"
    );
    first.check().await.unwrap();
    assert_eq!(first.load_state().await.unwrap(), None, "nothing saved yet");
    first.save_state(b"one").await.unwrap();
    first.save_state(b"two").await.unwrap();
    assert_eq!(
        first.load_state().await.unwrap().as_deref(),
        Some(&b"two"[..])
    );

    // the holder's session ends: the next server takes the lease and finds the state
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let second = loop {
        if let Some(l) = AlertLease::try_acquire(db.url()).await.unwrap() {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was not released within 30 s of the holder's session ending"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        second.load_state().await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert!(AlertLease::try_acquire(db.url()).await.unwrap().is_none());

    // an unreachable database: an error that never shows the password
    let err = AlertLease::try_acquire("postgres://user:hunter2@127.0.0.1:1/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("control database"), "{err}");
}
