//! Real PostgreSQL: the shared server, per-test databases, and a private cluster that is
//! stopped, crashed and started again.

use sentra_testkit::{PgServer, TestDb};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn test_db_is_fresh_and_dropped() {
    let (a, b) = (TestDb::new().await.unwrap(), TestDb::new().await.unwrap());
    assert_ne!(a.name(), b.name());
    let mut conn = PgConnection::connect(a.url()).await.unwrap();
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(db, a.name());
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let name = a.name().to_owned();
    drop(a); // drops with FORCE, even with our connection open
    let mut admin = PgConnection::connect(PgServer::shared().unwrap().url())
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 0, "database {name} still exists after drop");
    drop(b);
}

#[tokio::test]
async fn own_cluster_survives_stop_and_crash() {
    let server = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let fsync: String = {
        let mut c = PgConnection::connect(server.url()).await.unwrap();
        sqlx::query("CREATE TABLE t (x int)")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query_scalar("SHOW fsync")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(fsync, "on");

    server.stop().unwrap();
    let err = PgConnection::connect(server.url()).await.unwrap_err();
    assert!(
        !err.to_string().contains(&server.url()[20..40]),
        "password in error: {err}"
    );
    server.start_again().unwrap();
    {
        let mut c = PgConnection::connect(server.url()).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    server.crash().unwrap();
    assert!(PgConnection::connect(server.url()).await.is_err());
    server.start_again().unwrap();
    let mut c = PgConnection::connect(server.url()).await.unwrap();
    let sum: i64 = sqlx::query_scalar("SELECT sum(x) FROM t")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(sum, 3, "a committed row was lost across stop/crash");
}
