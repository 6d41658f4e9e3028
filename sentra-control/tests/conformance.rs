//! One conformance suite for every control-store backend: the same test functions run
//! against SQLite (`control.db` in a temp dir) and PostgreSQL (a fresh database on a real
//! server from `sentra-testkit`: `SENTRA_TEST_PG_URL`, or a cluster started with
//! `initdb`/`pg_ctl`; a missing PostgreSQL fails with an install hint, never a skip).

use std::time::{Duration, Instant};

use sentra_control::{
    Actor, AuditQuery, ControlStore, Error, NewPeer, Password, PasswordCost, PeerSpec, Role,
    StoreOptions, UserUpdate,
    onboard::{AddressPool, generate_psk, public_key_of},
};
use sentra_core::{KeyId, Keyring as _};

const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

fn options(reload: Option<Duration>) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.password_cost = PasswordCost::insecure_for_tests();
    o.reload_interval = reload;
    o
}

/// Where a test's database lives; opens any number of stores on it.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(sentra_testkit::TestDb),
}

impl Db {
    async fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Self {
        Self::Postgres(
            sentra_testkit::TestDb::new()
                .await
                .unwrap_or_else(|e| panic!("test PostgreSQL: {e}")),
        )
    }

    async fn open(&self, reload: Option<Duration>) -> ControlStore {
        match self {
            Self::Sqlite(dir) => ControlStore::open(dir.path(), options(reload)).await,
            Self::Postgres(db) => ControlStore::open_postgres(db.url(), options(reload)).await,
        }
        .unwrap()
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    users_and_the_last_admin,
    sessions_end_with_token_version,
    enrolment_rotation_revocation,
    one_token_enrols_once_across_stores,
    desired_state_revisions,
    every_mutation_is_audited_in_its_transaction,
    changes_reach_another_store_within_1s,
    onboarding_allocates_each_address_once,
    preshared_keys_reach_the_agent,
);

async fn users_and_the_last_admin(db: Db) {
    let s = db.open(None).await;
    let me = Actor::local();
    s.create_user(&me, "root", Password::new("root password"), Role::Admin)
        .await
        .unwrap();
    let dup = s
        .create_user(&me, "root", Password::new("other password"), Role::Viewer)
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    assert!(matches!(
        s.create_user(&me, "bad name", Password::new("long enough"), Role::Viewer)
            .await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        s.delete_user(&me, "root").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.update_user(&me, "root", UserUpdate::default().role(Role::Viewer))
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.update_user(&me, "root", UserUpdate::default().disabled(true))
            .await,
        Err(Error::Conflict(_))
    ));
    s.create_user(&me, "second", Password::new("second password"), Role::Admin)
        .await
        .unwrap();
    let u = s
        .update_user(&me, "root", UserUpdate::default().role(Role::Viewer))
        .await
        .unwrap();
    assert_eq!(u.role, Role::Viewer);
    assert_eq!(s.get_user("root").await.unwrap().role, Role::Viewer);
    let names: Vec<_> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["root", "second"]);
    s.delete_user(&me, "root").await.unwrap();
    assert!(matches!(
        s.get_user("root").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_user(&me, "root").await,
        Err(Error::NotFound { .. })
    ));
}

async fn sessions_end_with_token_version(db: Db) {
    let s = db.open(None).await;
    let me = Actor::local();
    s.create_user(&me, "admin", Password::new("admin password"), Role::Admin)
        .await
        .unwrap();
    s.create_user(&me, "alice", Password::new("alice password"), Role::Viewer)
        .await
        .unwrap();
    assert!(matches!(
        s.authenticate("alice", Password::new("wrong password"))
            .await,
        Err(Error::Unauthenticated)
    ));
    assert!(matches!(
        s.authenticate("nobody", Password::new("alice password"))
            .await,
        Err(Error::Unauthenticated)
    ));
    let (_, v1) = s
        .authenticate_session("alice", Password::new("alice password"))
        .await
        .unwrap();
    assert!(s.session_valid("alice", v1).await);
    // Logout ends the token.
    s.end_sessions(&Actor::user("alice"), "alice")
        .await
        .unwrap();
    assert!(!s.session_valid("alice", v1).await);
    let (_, v2) = s
        .authenticate_session("alice", Password::new("alice password"))
        .await
        .unwrap();
    assert_ne!(v1, v2);
    // A password change needs the current password and ends the tokens.
    assert!(matches!(
        s.change_password(
            "alice",
            Password::new("not it at all"),
            Password::new("new password 1")
        )
        .await,
        Err(Error::Unauthenticated)
    ));
    assert!(s.session_valid("alice", v2).await);
    s.change_password(
        "alice",
        Password::new("alice password"),
        Password::new("new password 1"),
    )
    .await
    .unwrap();
    assert!(!s.session_valid("alice", v2).await);
    assert!(
        s.authenticate("alice", Password::new("alice password"))
            .await
            .is_err()
    );
    let (_, v3) = s
        .authenticate_session("alice", Password::new("new password 1"))
        .await
        .unwrap();
    // A role change keeps the token but the current role applies.
    s.update_user(&me, "alice", UserUpdate::default().role(Role::Admin))
        .await
        .unwrap();
    let subj = s.token_subject("alice").await.unwrap().unwrap();
    assert_eq!((subj.role, subj.token_version), (Role::Admin, v3));
    // Disabling ends the tokens and refuses logins.
    s.update_user(&me, "alice", UserUpdate::default().disabled(true))
        .await
        .unwrap();
    assert!(!s.session_valid("alice", v3).await);
    assert!(matches!(
        s.authenticate("alice", Password::new("new password 1"))
            .await,
        Err(Error::Unauthenticated)
    ));
    // A deleted and re-created user does not inherit old tokens.
    s.update_user(&me, "alice", UserUpdate::default().disabled(false))
        .await
        .unwrap();
    let (_, v4) = s
        .authenticate_session("alice", Password::new("new password 1"))
        .await
        .unwrap();
    s.delete_user(&me, "alice").await.unwrap();
    assert!(s.token_subject("alice").await.unwrap().is_none());
    s.create_user(&me, "alice", Password::new("alice password"), Role::Viewer)
        .await
        .unwrap();
    assert!(!s.session_valid("alice", v4).await);
}

async fn enrolment_rotation_revocation(db: Db) {
    let s = db.open(None).await;
    let me = Actor::local();
    let tok = s
        .issue_bootstrap_token(&me, Duration::from_secs(600), "edge")
        .await
        .unwrap();
    assert!(tok.token.expose_secret().starts_with("sntb_"));
    let unknown = sentra_core::AgentId::new("edge-router-1-nobody").unwrap();
    assert!(!s.agent_exists(&unknown).await.unwrap());
    assert!(matches!(
        s.require_agent(&unknown).await,
        Err(Error::NotFound { .. })
    ));
    let e = s.enroll(&tok.token, "Edge Router #1").await.unwrap();
    assert!(
        e.agent_id.as_str().starts_with("edge-router-1-"),
        "{}",
        e.agent_id
    );
    assert!(s.agent_exists(&e.agent_id).await.unwrap());
    s.require_agent(&e.agent_id).await.unwrap();
    assert!(matches!(
        s.enroll(&tok.token, "again").await,
        Err(Error::InvalidBootstrapToken)
    ));
    let listed = s.list_bootstrap_tokens().await.unwrap();
    assert_eq!(
        listed[0].used_by_agent.as_deref(),
        Some(e.agent_id.as_str())
    );
    assert!(s.keyring().lookup(&e.agent_id, e.key_id).is_some());

    let before = sentra_core::UnixMillis::now().as_millis();
    let r = s
        .rotate_key(&me, &e.agent_id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(r.new_key_id, 2);
    assert!(r.previous_keys_not_after_ms >= before + 3_600_000);
    let newest = s.newest_key(&e.agent_id).await.unwrap();
    assert_eq!(newest.key_id, KeyId::new(2));
    assert!(s.keyring().lookup(&e.agent_id, KeyId::new(1)).is_some());
    assert!(s.keyring().lookup(&e.agent_id, KeyId::new(2)).is_some());
    let info = s.get_agent(&e.agent_id).await.unwrap();
    assert_eq!(info.keys.len(), 2);
    assert_eq!(
        info.keys[0].not_after_ms,
        Some(r.previous_keys_not_after_ms)
    );
    assert_eq!(info.keys[1].not_after_ms, None);
    // Zero overlap: older keys expire now and are pruned in the same rotation; numbering
    // stays monotonic.
    s.rotate_key(&me, &e.agent_id, Duration::ZERO)
        .await
        .unwrap();
    assert!(s.keyring().lookup(&e.agent_id, KeyId::new(2)).is_none());
    let r4 = s
        .rotate_key(&me, &e.agent_id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(r4.new_key_id, 4);
    let ids: Vec<_> = s
        .get_agent(&e.agent_id)
        .await
        .unwrap()
        .keys
        .iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(ids, [4]);

    s.revoke_agent(&me, &e.agent_id).await.unwrap();
    assert_eq!(s.keyring().agents(), 0);
    assert!(matches!(
        s.revoke_agent(&me, &e.agent_id).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.rotate_key(&me, &e.agent_id, Duration::ZERO).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.newest_key(&e.agent_id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(s.get_agent(&e.agent_id).await.unwrap().revoked_ms.is_some());
    // A revoked agent still exists (its declarations and audit trail remain).
    assert!(s.agent_exists(&e.agent_id).await.unwrap());
    s.delete_agent(&me, &e.agent_id).await.unwrap();
    assert!(matches!(
        s.get_agent(&e.agent_id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!s.agent_exists(&e.agent_id).await.unwrap());
    assert!(s.list_agents().await.unwrap().is_empty());
    // Reopened: the keyring is loaded from the database.
    let tok = s
        .issue_bootstrap_token(&me, Duration::from_secs(600), "")
        .await
        .unwrap();
    let e2 = s.enroll(&tok.token, "edge").await.unwrap();
    drop(s);
    let again = db.open(None).await;
    assert!(again.keyring().lookup(&e2.agent_id, e2.key_id).is_some());
    assert_eq!(again.keyring().agents(), 1);
}

/// Two stores on one database (two servers): of many concurrent enrolments with one
/// token exactly one succeeds.
async fn one_token_enrols_once_across_stores(db: Db) {
    let a = db.open(None).await;
    let b = db.open(None).await;
    let tok = a
        .issue_bootstrap_token(&Actor::local(), Duration::from_secs(600), "")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = tok.token.clone();
        tasks.push(tokio::spawn(async move { s.enroll(&t, "edge").await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::InvalidBootstrapToken) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(a.list_agents().await.unwrap().len(), 1);
}

async fn desired_state_revisions(db: Db) {
    let s = db.open(None).await;
    let me = Actor::local();
    let tok = s
        .issue_bootstrap_token(&me, Duration::from_secs(600), "")
        .await
        .unwrap();
    let e = s.enroll(&tok.token, "edge").await.unwrap();
    let peers = vec![PeerSpec::new(K1).with_allowed_ips(["10.0.0.7/24"])];
    assert_eq!(
        s.set_desired_interface(&me, &e.agent_id, "wg0", peers.clone())
            .await
            .unwrap(),
        1
    );
    // The same declaration again changes nothing.
    assert_eq!(
        s.set_desired_interface(&me, &e.agent_id, "wg0", peers)
            .await
            .unwrap(),
        1
    );
    let two = vec![
        PeerSpec::new(K1),
        PeerSpec::new(K2).with_endpoint("192.0.2.1:51820"),
    ];
    assert_eq!(
        s.set_desired_interface(&me, &e.agent_id, "wg0", two)
            .await
            .unwrap(),
        2
    );
    let info = s.desired(&e.agent_id).await.unwrap();
    assert_eq!((info.revision, info.interfaces.len()), (2, 1));
    assert_eq!(info.interfaces[0].peers.len(), 2);
    let unchanged = s.desired_state(&e.agent_id, 2).await.unwrap();
    assert!(unchanged.unchanged && unchanged.interfaces.is_empty());
    let full = s.desired_state(&e.agent_id, 0).await.unwrap();
    assert_eq!((full.revision, full.interfaces[0].peers.len()), (2, 2));
    assert!(matches!(
        s.set_desired_interface(&me, &e.agent_id, "0123456789abcdef", vec![])
            .await,
        Err(Error::Invalid { .. })
    ));
    let conflict = vec![PeerSpec::new(K1), PeerSpec::new(K1)];
    assert!(matches!(
        s.set_desired_interface(&me, &e.agent_id, "wg1", conflict)
            .await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        s.delete_desired_interface(&me, &e.agent_id, "wg0")
            .await
            .unwrap(),
        3
    );
    assert!(matches!(
        s.delete_desired_interface(&me, &e.agent_id, "wg0").await,
        Err(Error::NotFound { .. })
    ));
    s.revoke_agent(&me, &e.agent_id).await.unwrap();
    assert!(matches!(
        s.set_desired_interface(&me, &e.agent_id, "wg0", vec![])
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.desired_state(&e.agent_id, 0).await,
        Err(Error::NotFound { .. })
    ));
}

/// Address pools and onboarding (issue 16): the next free address, never twice, freed on
/// removal, conflicts naming the other side, durable across a reopen, audited.
async fn onboarding_allocates_each_address_once(db: Db) {
    let s = db.open(None).await;
    let me = Actor::local();
    let tok = s
        .issue_bootstrap_token(&me, Duration::from_secs(600), "")
        .await
        .unwrap();
    let a = s.enroll(&tok.token, "hub").await.unwrap().agent_id;
    let tok = s
        .issue_bootstrap_token(&me, Duration::from_secs(600), "")
        .await
        .unwrap();
    let b = s.enroll(&tok.token, "hub2").await.unwrap().agent_id;
    let pool = AddressPool::parse(["10.8.0.0/29", "fd00:8::/64"]).unwrap();
    // No pool yet: nothing to allocate from.
    assert!(matches!(
        s.add_peer(&me, &a, "wg0", NewPeer::default()).await,
        Err(Error::NotFound { .. })
    ));
    s.set_address_pool(&me, &a, "wg0", &pool).await.unwrap();
    // Another interface's pool may not overlap; the error names the other interface.
    let err = s
        .set_address_pool(
            &me,
            &b,
            "wg0",
            &AddressPool::parse(["10.8.0.4/30"]).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains(&format!("{a}/wg0"))),
        "{err}"
    );
    s.set_address_pool(
        &me,
        &b,
        "wg0",
        &AddressPool::parse(["10.9.0.0/24"]).unwrap(),
    )
    .await
    .unwrap();

    let first = s
        .add_peer(&me, &a, "wg0", NewPeer::default())
        .await
        .unwrap();
    assert_eq!(first.peer.allowed_ips, ["10.8.0.2/32", "fd00:8::2/128"]);
    let private = first.private_key.as_ref().expect("a generated key");
    assert_eq!(public_key_of(private).unwrap(), first.peer.public_key);
    assert_eq!(first.revision, 1);
    let mut own = NewPeer::default();
    own.public_key = Some(K1.into());
    let second = s.add_peer(&me, &a, "wg0", own).await.unwrap();
    assert!(second.private_key.is_none());
    assert_eq!(second.peer.allowed_ips, ["10.8.0.3/32", "fd00:8::3/128"]);
    // A static address inside another peer's allowed IPs names that peer.
    let mut taken = NewPeer::default();
    taken.address = Some("10.8.0.3".into());
    let err = s.add_peer(&me, &a, "wg0", taken).await.unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains(K1)),
        "{err}"
    );
    // The same public key twice is refused.
    let mut again = NewPeer::default();
    again.public_key = Some(K1.into());
    assert!(matches!(
        s.add_peer(&me, &a, "wg0", again).await,
        Err(Error::Conflict(_))
    ));

    // Durable: a reopened store allocates after what is declared, never twice.
    drop(s);
    let s = db.open(None).await;
    assert_eq!(s.address_pool(&a, "wg0").await.unwrap(), Some(pool));
    let mut seen = vec![first.addresses[0], second.addresses[0]];
    for _ in 0..3 {
        let p = s
            .add_peer(&me, &a, "wg0", NewPeer::default())
            .await
            .unwrap();
        assert!(!seen.contains(&p.addresses[0]), "{} twice", p.addresses[0]);
        seen.push(p.addresses[0]);
    }
    // .0 network, .1 the interface, .2-.6 peers, .7 broadcast: exhausted.
    let err = s
        .add_peer(&me, &a, "wg0", NewPeer::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict(m) if m.contains("10.8.0.0/29")),
        "{err}"
    );
    // Removal frees the address for the next peer.
    let rev = s.remove_peer(&me, &a, "wg0", K1).await.unwrap();
    assert!(matches!(
        s.remove_peer(&me, &a, "wg0", K1).await,
        Err(Error::NotFound { .. })
    ));
    let next = s
        .add_peer(&me, &a, "wg0", NewPeer::default())
        .await
        .unwrap();
    assert_eq!(next.addresses[0].to_string(), "10.8.0.3/32");
    assert_eq!(next.revision, rev + 1);
    let state = s.desired_state(&a, 0).await.unwrap();
    assert_eq!(state.interfaces[0].peers.len(), 5);

    // Audited with who and what; no private key anywhere in the log.
    let log = s.audit_log(&AuditQuery::default()).await.unwrap();
    let adds: Vec<_> = log.iter().filter(|e| e.action == "peer.add").collect();
    assert!(adds.iter().any(|e| e.outcome == "success"
        && e.actor == "local"
        && e.detail.contains(&first.peer.public_key)
        && e.detail.contains("10.8.0.2/32")));
    assert!(adds.iter().any(|e| e.outcome == "conflict"));
    assert!(
        log.iter()
            .any(|e| e.action == "peer.remove" && e.detail.contains(K1))
    );
    assert!(
        log.iter()
            .any(|e| e.action == "pool.set" && e.outcome == "conflict")
    );
    let secret = private.expose_secret();
    assert!(log.iter().all(|e| !e.detail.contains(secret)));
}

async fn every_mutation_is_audited_in_its_transaction(db: Db) {
    let s = db.open(None).await;
    let me = Actor::local();
    s.create_user(&me, "root", Password::new("root password"), Role::Admin)
        .await
        .unwrap();
    assert!(s.delete_user(&me, "root").await.is_err());
    s.authenticate("root", Password::new("wrong password"))
        .await
        .unwrap_err();
    s.record_audit(&me, "data.delete", "edge-1", "success", "rows=3")
        .await
        .unwrap();
    let log = s.audit_log(&AuditQuery::default()).await.unwrap();
    let seen: Vec<_> = log
        .iter()
        .map(|e| (e.action.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("data.delete", "success"),
            ("auth.login", "denied"),
            ("user.delete", "conflict"),
            ("user.create", "success"),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(log[3].actor, "local");
    assert_eq!(log[3].detail, "role=admin");
    // Paging: before an id, with a limit.
    let mut q = AuditQuery::default();
    q.before_id = Some(log[1].id);
    q.limit = Some(1);
    let page = s.audit_log(&q).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, log[2].id);
}

/// Two stores on one database (as two servers): a change through one reaches the other's
/// keyring and user epoch within 1 s through the control version and its poller.
async fn changes_reach_another_store_within_1s(db: Db) {
    let poll = Some(Duration::from_millis(250));
    let a = db.open(poll).await;
    let b = db.open(poll).await;
    let me = Actor::local();
    let tok = a
        .issue_bootstrap_token(&me, Duration::from_secs(600), "")
        .await
        .unwrap();
    let e = a.enroll(&tok.token, "edge").await.unwrap();
    let t0 = Instant::now();
    while b.keyring().lookup(&e.agent_id, e.key_id).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "enrolment not seen in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t_enrol = t0.elapsed();
    a.revoke_agent(&me, &e.agent_id).await.unwrap();
    let t1 = Instant::now();
    while b.keyring().lookup(&e.agent_id, e.key_id).is_some() {
        assert!(
            t1.elapsed() < Duration::from_secs(1),
            "revocation not seen in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t_revoke = t1.elapsed();
    let epoch = b.user_epoch();
    a.create_user(&me, "alice", Password::new("alice password"), Role::Viewer)
        .await
        .unwrap();
    let t2 = Instant::now();
    while b.user_epoch() == epoch {
        assert!(
            t2.elapsed() < Duration::from_secs(1),
            "user change not seen in 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t_user = t2.elapsed();
    eprintln!("propagation (poll 250 ms): enrol {t_enrol:?}, revoke {t_revoke:?}, user {t_user:?}");
}

/// An unreachable or malformed PostgreSQL URL fails clearly, without the password.
#[tokio::test]
async fn postgres_errors_never_carry_the_url() {
    let unreachable = "postgres://sentra:hunter2-canary@127.0.0.1:1/control";
    let e = ControlStore::open_postgres(unreachable, options(None))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(matches!(e, Error::Database(_)), "{text}");
    assert!(!text.contains("hunter2-canary"), "{text}");
    let e = ControlStore::open_postgres("not a url hunter2-canary", options(None))
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(matches!(e, Error::Invalid { .. }), "{text}");
    assert!(!text.contains("hunter2-canary"), "{text}");
}

/// PostgreSQL LISTEN/NOTIFY: with a 60 s poll interval, another store still sees an
/// enrolment within 1 s (only the notification can wake it that early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_the_other_store_before_the_poll() {
    let db = Db::postgres().await;
    let a = db.open(Some(Duration::from_secs(60))).await;
    let b = db.open(Some(Duration::from_secs(60))).await;
    // Let both pollers take their immediate first tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tok = a
        .issue_bootstrap_token(&Actor::local(), Duration::from_secs(600), "")
        .await
        .unwrap();
    let e = a.enroll(&tok.token, "edge").await.unwrap();
    let t0 = Instant::now();
    while b.keyring().lookup(&e.agent_id, e.key_id).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "NOTIFY did not wake the other store within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("NOTIFY propagation: {:?}", t0.elapsed());
}

/// The access-token key: one for every store on a PostgreSQL database (created by the
/// first), none on SQLite (it stays in `jwt-hs256.key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_key_is_shared_on_postgres_and_local_on_sqlite() {
    let db = Db::postgres().await;
    let (a, b) = (db.open(None).await, db.open(None).await);
    let ka = a
        .shared_jwt_key()
        .await
        .unwrap()
        .expect("shared on PostgreSQL");
    let kb = b
        .shared_jwt_key()
        .await
        .unwrap()
        .expect("shared on PostgreSQL");
    assert_eq!(ka.len(), 32);
    assert_eq!(*ka, *kb);
    let lite = Db::sqlite().await.open(None).await;
    assert!(lite.shared_jwt_key().await.unwrap().is_none());
}

/// Preshared keys (issue 16): stored on add, sent in `FetchDesiredState` for that peer only,
/// durable, forgotten when the peer leaves (remove, a declaration without it, deleting the
/// interface), never in the audit log; a malformed one is refused before any change.
async fn preshared_keys_reach_the_agent(db: Db) {
    use base64::Engine as _;
    let b64 = |k: &str| base64::engine::general_purpose::STANDARD.decode(k).unwrap();
    let s = db.open(None).await;
    let me = Actor::local();
    let tok = s
        .issue_bootstrap_token(&me, Duration::from_secs(600), "")
        .await
        .unwrap();
    let a = s.enroll(&tok.token, "hub").await.unwrap().agent_id;
    let pool = AddressPool::parse(["10.8.0.0/24"]).unwrap();
    s.set_address_pool(&me, &a, "wg0", &pool).await.unwrap();
    let psk_of = |state: &sentra_core::proto::DesiredState, key: &str| {
        state
            .interfaces
            .iter()
            .flat_map(|i| &i.peers)
            .find(|p| p.public_key == b64(key))
            .map(|p| p.preshared_key.clone())
    };

    let mut bad = NewPeer::default();
    bad.preshared_key = Some(sentra_control::SecretString::new("not-a-key"));
    assert!(matches!(
        s.add_peer(&me, &a, "wg0", bad).await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(s.desired_state(&a, 0).await.unwrap().revision, 0);

    let psk1 = generate_psk().unwrap();
    let mut with = NewPeer::default();
    with.public_key = Some(K1.into());
    with.preshared_key = Some(psk1.clone());
    s.add_peer(&me, &a, "wg0", with).await.unwrap();
    let mut without = NewPeer::default();
    without.public_key = Some(K2.into());
    s.add_peer(&me, &a, "wg0", without).await.unwrap();
    // Durable: a reopened store still sends it.
    drop(s);
    let s = db.open(None).await;
    let state = s.desired_state(&a, 0).await.unwrap();
    assert_eq!(psk_of(&state, K1), Some(b64(psk1.expose_secret())));
    assert_eq!(psk_of(&state, K2), Some(Vec::new()));
    assert_eq!(b64(psk1.expose_secret()).len(), 32);

    // Removed with the peer: the same key re-added without a PSK gets none.
    s.remove_peer(&me, &a, "wg0", K1).await.unwrap();
    let mut again = NewPeer::default();
    again.public_key = Some(K1.into());
    s.add_peer(&me, &a, "wg0", again).await.unwrap();
    assert_eq!(
        psk_of(&s.desired_state(&a, 0).await.unwrap(), K1),
        Some(Vec::new())
    );

    // A declaration that drops the peer forgets its PSK; one that keeps it keeps it.
    s.remove_peer(&me, &a, "wg0", K2).await.unwrap();
    let psk2 = generate_psk().unwrap();
    let mut with = NewPeer::default();
    with.public_key = Some(K2.into());
    with.preshared_key = Some(psk2.clone());
    let added = s.add_peer(&me, &a, "wg0", with).await.unwrap();
    let k1 = PeerSpec::new(K1).with_allowed_ips(["10.8.0.2/32"]);
    let k2 = PeerSpec::new(K2).with_allowed_ips(added.peer.allowed_ips.clone());
    s.set_desired_interface(&me, &a, "wg0", vec![k1.clone(), k2.clone()])
        .await
        .unwrap();
    assert_eq!(
        psk_of(&s.desired_state(&a, 0).await.unwrap(), K2),
        Some(b64(psk2.expose_secret()))
    );
    s.set_desired_interface(&me, &a, "wg0", vec![k1.clone()])
        .await
        .unwrap();
    s.set_desired_interface(&me, &a, "wg0", vec![k1.clone(), k2.clone()])
        .await
        .unwrap();
    assert_eq!(
        psk_of(&s.desired_state(&a, 0).await.unwrap(), K2),
        Some(Vec::new())
    );

    // Deleting the interface forgets its PSKs too.
    s.remove_peer(&me, &a, "wg0", K2).await.unwrap();
    let mut with = NewPeer::default();
    with.public_key = Some(K2.into());
    with.preshared_key = Some(psk2.clone());
    s.add_peer(&me, &a, "wg0", with).await.unwrap();
    s.delete_desired_interface(&me, &a, "wg0").await.unwrap();
    s.set_desired_interface(&me, &a, "wg0", vec![k1, k2])
        .await
        .unwrap();
    assert_eq!(
        psk_of(&s.desired_state(&a, 0).await.unwrap(), K2),
        Some(Vec::new())
    );

    // Audited as having one, never the key itself.
    let log = s.audit_log(&AuditQuery::default()).await.unwrap();
    assert!(log.iter().any(|e| e.action == "peer.add"
        && e.detail.contains(K1)
        && e.detail.contains("preshared_key=true")));
    for psk in [&psk1, &psk2] {
        assert!(log.iter().all(|e| !e.detail.contains(psk.expose_secret())));
    }
}
