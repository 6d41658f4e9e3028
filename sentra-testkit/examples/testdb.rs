//! Creates a throwaway database on the test server and prints its name.
//!
//! `eval "$(scripts/pg-test-server start)"; cargo run -p sentra-testkit --example testdb`

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), sentra_testkit::Error> {
    let db = sentra_testkit::TestDb::new().await?;
    let pool = sqlx::PgPool::connect(db.url()).await?;
    let v: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await?;
    println!("database {} on PostgreSQL {v}", db.name());
    pool.close().await;
    Ok(())
}
