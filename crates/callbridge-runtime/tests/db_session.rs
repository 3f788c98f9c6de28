//! Session settings every pooled connection starts with.

use callbridge_runtime::db;
use callbridge_testkit::db::TestDb;

#[tokio::test]
async fn pooled_connections_never_jit_compile_statements() {
    let test_db = TestDb::new().await.unwrap();
    let pool = db::connect_pool(test_db.url(), 2).await.unwrap();
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jit, "off");
    let server_default: String =
        sqlx::query_scalar("SELECT boot_val FROM pg_settings WHERE name = 'jit'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        server_default, "on",
        "the server's own default is on: the pool turned it off"
    );
}
