//! The binary as a deployment runs it.

mod common;

use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use common::{PATIENCE, wait_until};
use tokio::process::Command;

#[tokio::test]
async fn the_migrate_flag_applies_the_migrations_before_consuming() {
    let db = TestDb::new().await.unwrap();
    let vhost = TestVhost::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbridge-persister"))
        .arg("--migrate")
        .env_clear()
        .env("CLIENT_CALLING_DB_URL", db.url())
        .env("RABBITMQ_URL", vhost.amqp_url())
        .env("PERSISTER_BIND", "127.0.0.1:0")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let expected = callbridge_runtime::db::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count() as i64;
    wait_until("every migration applied", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .is_ok_and(|applied| applied == expected)
    })
    .await;
    // Consuming: the persister declared its queue and subscribed.
    wait_until("a consumer on the persist queue", || async {
        vhost
            .queue(callbridge_types::topology::PERSIST_QUEUE)
            .await
            .is_ok_and(|queue| queue["consumers"].as_i64() == Some(1))
    })
    .await;

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn without_the_migrate_flag_the_schema_is_left_alone() {
    let db = TestDb::new().await.unwrap();
    let vhost = TestVhost::new().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbridge-persister"))
        .env_clear()
        .env("CLIENT_CALLING_DB_URL", db.url())
        .env("RABBITMQ_URL", vhost.amqp_url())
        .env("PERSISTER_BIND", "127.0.0.1:0")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until("a consumer on the persist queue", || async {
        vhost
            .queue(callbridge_types::topology::PERSIST_QUEUE)
            .await
            .is_ok_and(|queue| queue["consumers"].as_i64() == Some(1))
    })
    .await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!migrated, "the persister migrated without being told to");
    child.kill().await.unwrap();
}
