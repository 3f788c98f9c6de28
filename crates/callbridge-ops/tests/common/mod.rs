//! What the operator-action tests share.

use callbridge_testkit::db::TestDb;
use sqlx::PgPool;

/// A fresh database with every migration, and a pool of 4 connections on it.
pub async fn migrated() -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 4)
        .await
        .unwrap();
    (db, pool)
}
