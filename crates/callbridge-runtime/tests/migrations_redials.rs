//! Migration 0012 (redials): the batch id allocator starts above every id in use, skips
//! ids an application takes later, never hands one id out twice under concurrency, and
//! the answered seconds of existing batches are counted once.

use callbridge_runtime::db::{self, MIGRATOR};
use callbridge_testkit::db::TestDb;
use sqlx::PgPool;

const REDIALS_VERSION: i64 = 12;

async fn at_version(version: i64) -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = db::connect_pool(db.url(), 10).await.unwrap();
    MIGRATOR.run_to(version, &pool).await.unwrap();
    (db, pool)
}

async fn allocate(pool: &PgPool, count: i32) -> Vec<i32> {
    sqlx::query_scalar("SELECT callbridge_allocate_batch_ids($1)")
        .bind(count)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_allocator_starts_above_existing_ids_and_existing_answered_seconds_are_summed() {
    let (_db, pool) = at_version(REDIALS_VERSION - 1).await;
    sqlx::raw_sql(
        "INSERT INTO call_batches (batch_id, accountcode) VALUES (7, 'ACME'), (8, 'ACME');
         INSERT INTO local_call_queue (phone_number, batch_id) VALUES ('9800000001', 40);
         INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status, duration)
         VALUES ('a', 'ACME', 7, '1', 'completed', 30), ('b', 'ACME', 7, '2', 'completed', 12),
                ('c', 'ACME', 7, '3', 'busy', 0), ('d', 'ACME', 8, '4', 'failed', 5)",
    )
    .execute(&pool)
    .await
    .unwrap();
    MIGRATOR.run_to(REDIALS_VERSION, &pool).await.unwrap();

    assert_eq!(allocate(&pool, 2).await, [41, 42]);
    // An application takes 43 and 45 for rows of its own: the allocator steps over them.
    sqlx::raw_sql(
        "INSERT INTO call_batches (batch_id, accountcode) VALUES (43, 'APP');
         INSERT INTO local_call_queue (phone_number, batch_id) VALUES ('9800000002', 45)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(allocate(&pool, 3).await, [44, 46, 47]);

    let seconds: Vec<(i32, i64, i32)> = sqlx::query_as(
        "SELECT batch_id, answered_seconds, exhausted_calls FROM call_batches ORDER BY batch_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(seconds, [(7, 42, 0), (8, 0, 0), (43, 0, 0)]);
}

#[tokio::test]
async fn concurrent_allocations_never_share_an_id_and_stay_32_bit() {
    let (_db, pool) = at_version(REDIALS_VERSION).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..25 {
                ids.extend(allocate(&pool, 4).await);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "an id was handed out twice");
    assert_eq!(count, 8 * 25 * 4);

    // At the API's 32-bit limit the allocator stops with an error instead of wrapping.
    sqlx::query("SELECT setval('callbridge_batch_id_seq', 2147483647)")
        .execute(&pool)
        .await
        .unwrap();
    let error = sqlx::query_scalar::<_, i32>("SELECT callbridge_allocate_batch_ids(1)")
        .fetch_all(&pool)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("reached maximum value"),
        "{error}"
    );
}
