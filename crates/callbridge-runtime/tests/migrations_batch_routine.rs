//! `callbridge_refresh_batch`, the one SQL routine that decides a batch's counts and status
//! (`migrations/0007_incremental_batch_refresh.up.sql`), shared by the persister and the
//! submitter.

use callbridge_runtime::db;
use callbridge_testkit::db::TestDb;
use callbridge_types::status::{BatchCount, BatchStatus, CallStatus};
use sqlx::{Connection, PgConnection, PgPool};

#[derive(Debug, sqlx::FromRow)]
struct Batch {
    batch_status: Option<String>,
    total_calls: Option<i32>,
    completed_calls: Option<i32>,
    failed_calls: Option<i32>,
    submitted: bool,
    completed: bool,
}

async fn migrated() -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = db::connect_and_migrate(db.url(), 4).await.unwrap();
    (db, pool)
}

async fn create_batch(pool: &PgPool, batch_id: i32, total_calls: i32) {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, total_calls) VALUES ($1, 'ACME', $2)",
    )
    .bind(batch_id)
    .bind(total_calls)
    .execute(pool)
    .await
    .unwrap();
}

async fn queue_row(pool: &PgPool, batch_id: i32, phone: &str, queue_status: &str) {
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status) VALUES ($1, $2, $3)",
    )
    .bind(phone)
    .bind(batch_id)
    .bind(queue_status)
    .execute(pool)
    .await
    .unwrap();
}

async fn set_queue_status(pool: &PgPool, batch_id: i32, queue_status: &str) {
    sqlx::query("UPDATE local_call_queue SET queue_status = $2 WHERE batch_id = $1")
        .bind(batch_id)
        .bind(queue_status)
        .execute(pool)
        .await
        .unwrap();
}

async fn log_call<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    batch_id: i32,
    call_id: &str,
    call_status: &str,
) {
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
         VALUES ($1, 'ACME', $2, '9876543210', $3)
         ON CONFLICT (call_id) DO UPDATE SET call_status = EXCLUDED.call_status",
    )
    .bind(call_id)
    .bind(batch_id)
    .bind(call_status)
    .execute(executor)
    .await
    .unwrap();
}

async fn refresh<'e>(executor: impl sqlx::PgExecutor<'e>, batch_id: i32) -> Option<BatchStatus> {
    db::refresh_batch(executor, batch_id).await.unwrap()
}

async fn batch(pool: &PgPool, batch_id: i32) -> Batch {
    sqlx::query_as(
        "SELECT batch_status, total_calls, completed_calls, failed_calls,
                submitted_at IS NOT NULL AS submitted, completed_at IS NOT NULL AS completed
           FROM call_batches WHERE batch_id = $1",
    )
    .bind(batch_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn terminal_statuses_in_sql_match_callbridge_types() {
    let (_db, pool) = migrated().await;
    let mut statuses: Vec<CallStatus> = CallStatus::KNOWN.to_vec();
    statuses.push(CallStatus::parse("voicemail").unwrap());
    statuses.push(CallStatus::parse("NO ANSWER ").unwrap());

    for (batch_id, status) in (1..).zip(&statuses) {
        create_batch(&pool, batch_id, 1).await;
        log_call(
            &pool,
            batch_id,
            &format!("call-{batch_id}"),
            status.as_str(),
        )
        .await;

        let new_status = refresh(&pool, batch_id).await.unwrap();

        let row = batch(&pool, batch_id).await;
        let counted_completed = status.batch_count() == Some(BatchCount::Completed);
        let counted_failed = status.batch_count() == Some(BatchCount::Failed);
        assert_eq!(
            (row.completed_calls, row.failed_calls),
            (
                Some(i32::from(counted_completed)),
                Some(i32::from(counted_failed))
            ),
            "SQL and callbridge_types disagree about {status:?}"
        );
        // One accepted call, reported in this status: the batch is done exactly when the
        // call is counted (terminal, or expired).
        let expected = if status.batch_count().is_some() {
            BatchStatus::Completed
        } else {
            BatchStatus::InProgress
        };
        assert_eq!(new_status, expected, "{status:?}");
    }
}

#[tokio::test]
async fn counts_are_exact_and_follow_status_changes() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 10, 5).await;
    for (call, status) in [
        ("a", "completed"),
        ("b", "completed"),
        ("c", "busy"),
        ("d", "no_answer"),
        ("e", "answered"),
    ] {
        log_call(&pool, 10, call, status).await;
    }
    // A call of another batch must not be counted here.
    create_batch(&pool, 11, 1).await;
    log_call(&pool, 11, "other", "completed").await;

    assert_eq!(refresh(&pool, 10).await, Some(BatchStatus::InProgress));
    let row = batch(&pool, 10).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(2), Some(2)));
    assert!(row.submitted && !row.completed);

    log_call(&pool, 10, "e", "completed").await;
    assert_eq!(refresh(&pool, 10).await, Some(BatchStatus::Completed));
    let row = batch(&pool, 10).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(3), Some(2)));
    // The returned status is the stored one.
    assert_eq!(row.batch_status.as_deref(), Some("completed"));
    assert!(row.completed);
}

#[tokio::test]
async fn refreshing_an_unchanged_batch_leaves_updated_at_alone() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 12, 2).await;
    log_call(&pool, 12, "a", "completed").await;
    refresh(&pool, 12).await;
    // Backdate updated_at, so a needless write would be visible.
    sqlx::query("UPDATE call_batches SET updated_at = '2000-01-01' WHERE batch_id = 12")
        .execute(&pool)
        .await
        .unwrap();

    refresh(&pool, 12).await;

    let updated_at: String =
        sqlx::query_scalar("SELECT updated_at::text FROM call_batches WHERE batch_id = 12")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(updated_at, "2000-01-01 00:00:00");
}

#[tokio::test]
async fn status_moves_only_forward() {
    let (_db, pool) = migrated().await;
    // Already in progress with nothing to show for it: does not fall back to pending.
    create_batch(&pool, 20, 0).await;
    sqlx::query("UPDATE call_batches SET batch_status = 'in_progress' WHERE batch_id = 20")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(refresh(&pool, 20).await, Some(BatchStatus::InProgress));

    // Completed stays completed even when the evidence disappears; the counts follow it.
    create_batch(&pool, 21, 1).await;
    log_call(&pool, 21, "a", "completed").await;
    assert_eq!(refresh(&pool, 21).await, Some(BatchStatus::Completed));
    sqlx::query("DELETE FROM call_logs WHERE batch_id = 21")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(refresh(&pool, 21).await, Some(BatchStatus::Completed));
    assert_eq!(batch(&pool, 21).await.completed_calls, Some(0));

    // Failed is final too.
    create_batch(&pool, 22, 0).await;
    queue_row(&pool, 22, "9876543210", "failed").await;
    assert_eq!(refresh(&pool, 22).await, Some(BatchStatus::Failed));
    queue_row(&pool, 22, "9876543211", "pending").await;
    assert_eq!(refresh(&pool, 22).await, Some(BatchStatus::Failed));
}

#[tokio::test]
async fn pending_until_accepted_then_submitted() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 30, 0).await;
    queue_row(&pool, 30, "9876543210", "pending").await;
    queue_row(&pool, 30, "9876543211", "pending").await;
    assert_eq!(refresh(&pool, 30).await, Some(BatchStatus::Pending));
    assert!(!batch(&pool, 30).await.submitted);

    // What the submitter does on success: rows submitted, total_calls set, then refresh.
    set_queue_status(&pool, 30, "submitted").await;
    sqlx::query("UPDATE call_batches SET total_calls = 2 WHERE batch_id = 30")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(refresh(&pool, 30).await, Some(BatchStatus::Submitted));
    let row = batch(&pool, 30).await;
    assert!(row.submitted && !row.completed);
    assert_eq!(row.total_calls, Some(2));
}

#[tokio::test]
async fn completed_only_when_no_queue_row_of_the_batch_waits() {
    let (_db, pool) = migrated().await;
    // 2 of the batch's numbers accepted and finished, a third still queued locally.
    create_batch(&pool, 40, 2).await;
    queue_row(&pool, 40, "9876543210", "submitted").await;
    queue_row(&pool, 40, "9876543211", "submitted").await;
    queue_row(&pool, 40, "9876543212", "pending").await;
    log_call(&pool, 40, "a", "completed").await;
    log_call(&pool, 40, "b", "timeout").await;

    assert_eq!(refresh(&pool, 40).await, Some(BatchStatus::InProgress));

    sqlx::query(
        "UPDATE local_call_queue SET queue_status = 'submitting' WHERE phone_number = '9876543212'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(refresh(&pool, 40).await, Some(BatchStatus::InProgress));

    sqlx::query(
        "UPDATE local_call_queue SET queue_status = 'failed' WHERE phone_number = '9876543212'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(refresh(&pool, 40).await, Some(BatchStatus::Completed));
    assert!(batch(&pool, 40).await.completed);
}

#[tokio::test]
async fn failed_only_when_the_centralized_system_accepted_none() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 50, 0).await;
    queue_row(&pool, 50, "9876543210", "failed").await;
    queue_row(&pool, 50, "9876543211", "pending").await;
    // One number still waiting: not decided yet.
    assert_eq!(refresh(&pool, 50).await, Some(BatchStatus::Pending));

    // One number's outcome unknown: it may have been accepted, so not failed.
    sqlx::query("UPDATE local_call_queue SET queue_status = 'needs_review' WHERE phone_number = '9876543211'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(refresh(&pool, 50).await, Some(BatchStatus::Pending));

    set_queue_status(&pool, 50, "failed").await;
    assert_eq!(refresh(&pool, 50).await, Some(BatchStatus::Failed));
    let row = batch(&pool, 50).await;
    assert!(row.completed && !row.submitted);

    // A batch without any queue row (submitted by other means) is never "failed".
    create_batch(&pool, 51, 0).await;
    assert_eq!(refresh(&pool, 51).await, Some(BatchStatus::Pending));
}

#[tokio::test]
async fn unknown_batch_is_not_created() {
    let (_db, pool) = migrated().await;
    assert_eq!(refresh(&pool, 404).await, None);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM call_batches")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

/// Two writers (persister replicas) each add a call and refresh the same batch in their own
/// transactions. The second refresh waits for the first writer's commit and then counts
/// its row too, so the final counts are right without anyone refreshing again.
#[tokio::test]
async fn concurrent_refreshers_count_each_others_committed_rows() {
    let (db, pool) = migrated().await;
    create_batch(&pool, 60, 2).await;
    let mut first = PgConnection::connect(db.url()).await.unwrap();
    let mut second = PgConnection::connect(db.url()).await.unwrap();
    let second_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut second)
        .await
        .unwrap();

    let mut first_tx = first.begin().await.unwrap();
    log_call(&mut *first_tx, 60, "a", "completed").await;
    assert_eq!(
        refresh(&mut *first_tx, 60).await,
        Some(BatchStatus::InProgress)
    );

    let second_writer = tokio::spawn(async move {
        let mut tx = second.begin().await.unwrap();
        log_call(&mut *tx, 60, "b", "busy").await;
        let status = refresh(&mut *tx, 60).await;
        tx.commit().await.unwrap();
        status
    });
    // Commit the first only once the second is blocked on the batch row lock, the
    // interleaving that would lose a count if the routine read counts before locking.
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE pid = $1 AND wait_event_type = 'Lock')",
        )
        .bind(second_pid)
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    first_tx.commit().await.unwrap();

    assert_eq!(second_writer.await.unwrap(), Some(BatchStatus::Completed));
    let row = batch(&pool, 60).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(1)));
}

/// The routine with a caller's deltas (migration 0007), as the persister calls it.
async fn refresh_with_deltas(
    pool: &PgPool,
    batch_id: i32,
    completed: Option<i32>,
    failed: Option<i32>,
) -> Option<String> {
    sqlx::query_scalar("SELECT callbridge_refresh_batch($1, $2, $3)")
        .bind(batch_id)
        .bind(completed)
        .bind(failed)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn set_counts(pool: &PgPool, batch_id: i32, completed: Option<i32>, failed: Option<i32>) {
    sqlx::query(
        "UPDATE call_batches SET completed_calls = $2, failed_calls = $3 WHERE batch_id = $1",
    )
    .bind(batch_id)
    .bind(completed)
    .bind(failed)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn count_kind_in_sql_matches_callbridge_types() {
    let (_db, pool) = migrated().await;
    let mut statuses: Vec<CallStatus> = CallStatus::KNOWN.to_vec();
    statuses.push(CallStatus::parse("voicemail").unwrap());
    for status in &statuses {
        let kind: Option<String> = sqlx::query_scalar("SELECT callbridge_call_count_kind($1)")
            .bind(status.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
        let expected = status.batch_count().map(BatchCount::as_str);
        assert_eq!(kind.as_deref(), expected, "{status:?}");
    }
}

#[tokio::test]
async fn deltas_are_added_to_the_stored_counts_and_a_missing_count_is_recounted() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 20, 10).await;
    log_call(&pool, 20, "a", "completed").await;
    // Stored counts that a recount would not give: the deltas must be added to them.
    set_counts(&pool, 20, Some(5), Some(7)).await;
    refresh_with_deltas(&pool, 20, Some(1), Some(-1)).await;
    let row = batch(&pool, 20).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(6), Some(6)));

    // NULL deltas, or a NULL stored count: recounted.
    refresh_with_deltas(&pool, 20, None, None).await;
    let row = batch(&pool, 20).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(0)));
    set_counts(&pool, 20, None, Some(3)).await;
    refresh_with_deltas(&pool, 20, Some(4), Some(4)).await;
    let row = batch(&pool, 20).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(0)));
    // The one-argument form (the submitter's) recounts too.
    set_counts(&pool, 20, Some(5), Some(7)).await;
    refresh(&pool, 20).await;
    let row = batch(&pool, 20).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(0)));
}

#[tokio::test]
async fn with_deltas_the_batch_completes_only_when_no_queue_row_waits() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 30, 2).await;
    queue_row(&pool, 30, "9000000001", "submitted").await;
    queue_row(&pool, 30, "9000000002", "pending").await;
    log_call(&pool, 30, "a", "completed").await;
    assert_eq!(
        refresh_with_deltas(&pool, 30, Some(1), Some(0))
            .await
            .as_deref(),
        Some("in_progress")
    );
    log_call(&pool, 30, "b", "busy").await;
    // Counts reached total_calls, but a number still waits.
    assert_eq!(
        refresh_with_deltas(&pool, 30, Some(0), Some(1))
            .await
            .as_deref(),
        Some("in_progress")
    );
    set_queue_status(&pool, 30, "submitted").await;
    assert_eq!(
        refresh_with_deltas(&pool, 30, Some(0), Some(0))
            .await
            .as_deref(),
        Some("completed")
    );
    let row = batch(&pool, 30).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(1)));
    assert!(row.completed);
}

#[tokio::test]
async fn migration_0007_recounts_the_stored_counts() {
    let db = TestDb::new().await.unwrap();
    let pool = db::connect_pool(db.url(), 2).await.unwrap();
    db::MIGRATOR.run_to(6, &pool).await.unwrap();
    create_batch(&pool, 40, 3).await;
    create_batch(&pool, 41, 3).await;
    log_call(&pool, 40, "a", "completed").await;
    log_call(&pool, 40, "b", "no_answer").await;
    log_call(&pool, 40, "c", "answered").await;
    // Counts the deltas must not start from.
    set_counts(&pool, 40, Some(9), None).await;
    set_counts(&pool, 41, Some(2), Some(2)).await;

    db::migrate_up(&pool).await.unwrap();
    let row = batch(&pool, 40).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(1)));
    let row = batch(&pool, 41).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(0), Some(0)));
}

#[tokio::test]
async fn a_batch_all_of_whose_rows_are_cancelled_ends_cancelled() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 60, 0).await;
    queue_row(&pool, 60, "9876543210", "cancelled").await;
    queue_row(&pool, 60, "9876543211", "pending").await;
    // One number still waiting: not decided yet.
    assert_eq!(refresh(&pool, 60).await, Some(BatchStatus::Pending));

    set_queue_status(&pool, 60, "cancelled").await;
    assert_eq!(refresh(&pool, 60).await, Some(BatchStatus::Cancelled));
    let row = batch(&pool, 60).await;
    assert!(row.completed && !row.submitted);

    // Final: rows that change afterwards do not move it.
    set_queue_status(&pool, 60, "pending").await;
    assert_eq!(refresh(&pool, 60).await, Some(BatchStatus::Cancelled));
}

#[tokio::test]
async fn a_batch_whose_rows_were_all_suppressed_or_cancelled_ends_cancelled() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 62, 0).await;
    queue_row(&pool, 62, "9876543210", "suppressed").await;
    queue_row(&pool, 62, "9876543211", "pending").await;
    assert_eq!(refresh(&pool, 62).await, Some(BatchStatus::Pending));

    sqlx::query(
        "UPDATE local_call_queue SET queue_status = 'cancelled'
          WHERE batch_id = 62 AND queue_status = 'pending'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(refresh(&pool, 62).await, Some(BatchStatus::Cancelled));

    // Suppressed only, too.
    create_batch(&pool, 63, 0).await;
    queue_row(&pool, 63, "9876543212", "suppressed").await;
    assert_eq!(refresh(&pool, 63).await, Some(BatchStatus::Cancelled));
}

#[tokio::test]
async fn suppressed_rows_do_not_keep_a_batch_whose_calls_ended_from_completing_or_failing() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 64, 0).await;
    queue_row(&pool, 64, "9876543210", "suppressed").await;
    queue_row(&pool, 64, "9876543211", "failed").await;
    assert_eq!(refresh(&pool, 64).await, Some(BatchStatus::Failed));
}

#[tokio::test]
async fn a_batch_of_failed_and_cancelled_rows_ends_failed() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 61, 0).await;
    queue_row(&pool, 61, "9876543210", "cancelled").await;
    queue_row(&pool, 61, "9876543211", "failed").await;

    assert_eq!(refresh(&pool, 61).await, Some(BatchStatus::Failed));
}

#[tokio::test]
async fn cancelled_rows_do_not_keep_a_batch_whose_calls_ended_from_completing() {
    let (_db, pool) = migrated().await;
    create_batch(&pool, 62, 1).await;
    queue_row(&pool, 62, "9876543210", "submitted").await;
    queue_row(&pool, 62, "9876543211", "cancelled").await;
    log_call(&pool, 62, "call-62", "answered").await;
    assert_eq!(refresh(&pool, 62).await, Some(BatchStatus::InProgress));

    log_call(&pool, 62, "call-62", "completed").await;
    assert_eq!(refresh(&pool, 62).await, Some(BatchStatus::Completed));
    let row = batch(&pool, 62).await;
    assert_eq!((row.completed_calls, row.failed_calls), (Some(1), Some(0)));
}

#[tokio::test]
async fn a_batch_with_an_accepted_number_is_never_cancelled() {
    let (_db, pool) = migrated().await;
    // The centralized system accepted one number (total_calls = 1) whose call is not
    // reported yet; the rest of the batch was cancelled.
    create_batch(&pool, 63, 1).await;
    queue_row(&pool, 63, "9876543210", "cancelled").await;

    assert_eq!(refresh(&pool, 63).await, Some(BatchStatus::Submitted));
}
