//! Several batch transactions in flight at once (`CALLBRIDGE__PERSISTER__CONCURRENCY`):
//! made to overlap for certain by holding the calls' advisory locks from the test, so
//! that every batch waits inside its transaction until the test lets go.

mod common;

use callbridge_runtime::config::PersisterConfig;
use common::*;
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};

/// Batches in flight in these tests.
const CONCURRENCY: usize = 4;

fn concurrent_config(harness: &Harness, batch_size: usize, concurrency: usize) -> PersisterConfig {
    let mut env = harness.env(batch_size);
    env.push((
        "CALLBRIDGE__PERSISTER__CONCURRENCY".to_owned(),
        concurrency.to_string(),
    ));
    config_from(env)
}

/// Takes the advisory locks the persister takes for `calls` (`store::lock_calls`'s key),
/// in a transaction held until it is dropped or rolled back.
async fn hold_call_locks(pool: &PgPool, calls: &[&str]) -> Transaction<'static, Postgres> {
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(call_id, 0))
           FROM unnest($1::text[]) AS call_id",
    )
    .bind(calls)
    .execute(&mut *blocker)
    .await
    .unwrap();
    blocker
}

/// Persister transactions of this database now waiting for an advisory lock.
async fn waiting_for_call_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks
          WHERE locktype = 'advisory' AND NOT granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Events of three calls of batch 700, in an order that puts every call in several
/// batches of two.
fn interleaved_calls() -> Vec<callbridge_types::envelope::Envelope> {
    vec![
        call_event(700, "c1", "started", json!({"duration": 0})),
        call_event(700, "c2", "completed", json!({"duration": 30})),
        call_event(700, "c2", "started", json!({"duration": 0})),
        call_event(700, "c3", "failed", json!({"error_message": "network"})),
        call_event(700, "c3", "answered", json!({"disposition": "answered"})),
        call_event(700, "c1", "completed", json!({"duration": 61})),
        call_event(700, "c1", "answered", json!({"disposition": "answered"})),
        call_event(700, "c2", "answered", json!({"disposition": "answered"})),
    ]
}

#[tokio::test]
async fn concurrent_batches_on_the_same_calls_end_with_exact_rows_and_counts() {
    let events = interleaved_calls();

    // Reference: one batch at a time.
    let sequential = Harness::new().await;
    sequential.submitted_batch(700, 3).await;
    sequential.publish_all(&events).await;
    let persister = sequential.start(concurrent_config(&sequential, 8, 1)).await;
    sequential.settle().await;
    persister.stop().await;

    let harness = Harness::new().await;
    harness.submitted_batch(700, 3).await;
    let blocker = hold_call_locks(&harness.pool, &["c1", "c2", "c3"]).await;
    harness.publish_all(&events).await;
    let persister = harness
        .start(concurrent_config(&harness, 2, CONCURRENCY))
        .await;
    // Every slot holds a batch that inserted its events and waits for a call lock.
    wait_until("every batch in flight waits for a call lock", || async {
        waiting_for_call_locks(&harness.pool).await == CONCURRENCY as i64
    })
    .await;
    blocker.rollback().await.unwrap();
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;

    let rows = harness.call_logs().await;
    let statuses: Vec<(&str, &str, Option<i32>)> = rows
        .values()
        .map(|row| (row.call_id.as_str(), row.call_status.as_str(), row.duration))
        .collect();
    assert_eq!(
        statuses,
        [
            ("c1", "completed", Some(61)),
            ("c2", "completed", Some(30)),
            ("c3", "failed", Some(0))
        ]
    );
    assert_eq!(rows, sequential.call_logs().await);
    let batch = harness.batch(700).await;
    assert_eq!(
        (
            batch.completed_calls,
            batch.failed_calls,
            batch.batch_status.as_deref()
        ),
        (Some(2), Some(1), Some("completed"))
    );
    assert_eq!(harness.batches().await, sequential.batches().await);
    assert_eq!(harness.count("call_events").await, events.len() as i64);
    assert_eq!(harness.count("call_outcome_outbox").await, 3);
    assert!(harness.take_dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_batch_not_committed_is_not_acknowledged_when_later_ones_are() {
    let harness = Harness::new().await;
    let blocked = call_event(710, "blocked", "started", json!({}));
    let later: Vec<_> = (0..4)
        .map(|index| call_event(710, &format!("later{index}"), "started", json!({})))
        .collect();
    let blocker = hold_call_locks(&harness.pool, &["blocked"]).await;
    harness.publish(&blocked).await;
    harness.publish_all(&later).await;

    // One delivery per batch: the first waits for its call lock, the later ones commit.
    let persister = harness
        .start(concurrent_config(&harness, 1, CONCURRENCY))
        .await;
    harness.wait_for_events(later.len() as i64).await;

    // Stop while the first batch still waits, then end its transaction without a commit:
    // it retries no more once stopping, so it is left for redelivery.
    persister.request_stop();
    wait_until("the blocked batch's connection is terminated", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
              WHERE locktype = 'advisory' AND NOT granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&harness.pool)
        .await
        .unwrap()
            > 0
    })
    .await;
    persister.stop().await;
    blocker.rollback().await.unwrap();

    // Only the uncommitted delivery is back: the committed ones after it were
    // acknowledged, it was not.
    assert_eq!(harness.count("call_events").await, later.len() as i64);
    wait_until("the uncommitted delivery is back in the queue", || async {
        harness.ready_messages().await == 1
    })
    .await;

    let persister = harness.start(harness.config(8)).await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
    let rows = harness.call_logs().await;
    assert_eq!(rows.len(), 1 + later.len());
    assert_eq!(rows["blocked"].call_status, "started");
    assert!(harness.take_dead_letters().await.is_empty());
}
