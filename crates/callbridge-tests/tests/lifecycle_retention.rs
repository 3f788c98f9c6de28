//! `callbridge retention run` over a million callback events on real Postgres, while the
//! persister keeps storing: old events, published outbox rows and finished queue rows go;
//! recent ones, open calls, unpublished outcomes and rows the batch routine still reads
//! stay; `call_logs` and `call_batches` are identical before and after; and a callback
//! arriving after its call's events were deleted still gives the row its history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use callbridge_ops::Actor;
use callbridge_ops::retention::{self, RetentionCounts, RetentionPolicy};
use callbridge_persister::store::{IncomingEvent, store_batch};
use callbridge_testkit::db::TestDb;
use callbridge_types::envelope::Envelope;
use callbridge_types::event::validate_callback;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

const OLD_CALLS: i64 = 200_000;
const RECENT_CALLS: i64 = 50_000;
const EVENTS_PER_CALL: i64 = 4;

async fn store(pool: &PgPool, event_id: &str, received_at: DateTime<Utc>, payload: Value) {
    let event = validate_callback(payload.to_string().as_bytes(), "ACME").unwrap();
    let incoming = IncomingEvent {
        envelope: Envelope::new(event_id.to_owned(), received_at, event, &payload),
        trace_id: None,
    };
    store_batch(pool, &[&incoming], Utc::now()).await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Every row of call_logs and call_batches outside batch 99 (the one the persister keeps
/// writing during the run), as one digest.
async fn figures(pool: &PgPool) -> (String, String) {
    let logs: String = sqlx::query_scalar(
        "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM call_logs t
          WHERE t.batch_id IS DISTINCT FROM 99",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let batches: String = sqlx::query_scalar(
        "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM call_batches t
          WHERE t.batch_id <> 99",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (logs, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_rows_in_chunks_and_keeps_every_figure() {
    let db = TestDb::new().await.unwrap();
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 6)
        .await
        .unwrap();
    let now = Utc::now();
    let old = now - TimeDelta::days(40);

    // A million events: OLD_CALLS finished calls of 40 days ago and RECENT_CALLS of now,
    // four events each, with the finished calls' rows and their batch.
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, total_calls, completed_calls,
                                   failed_calls, batch_status)
         VALUES (1, 'ACME', $1, $1, 0, 'completed')",
    )
    .bind(i32::try_from(OLD_CALLS).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
         SELECT 'old-' || n, 'ACME', 1, '9876543210', 'completed'
           FROM generate_series(1, $1) AS n",
    )
    .bind(OLD_CALLS)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO call_events (event_id, event_type, call_id, batch_id, call_status,
                                  payload, received_at, event)
         SELECT 'g-' || n, 'call_completed', call_id, 1, 'completed', '{}'::jsonb,
                CASE WHEN n <= $1 * $3 THEN $4 ELSE $5 END,
                jsonb_build_object('event_type', 'call_completed', 'accountcode', 'ACME',
                                   'batch_id', 1, 'call_id', call_id,
                                   'phone_number', '9876543210', 'call_status', 'completed')
           FROM (SELECT n, CASE WHEN n <= $1 * $3 THEN 'old-' || ((n - 1) / $3 + 1)
                                ELSE 'new-' || ((n - 1) / $3 + 1) END AS call_id
                   FROM generate_series(1, ($1 + $2) * $3) AS n) AS generated",
    )
    .bind(OLD_CALLS)
    .bind(RECENT_CALLS)
    .bind(EVENTS_PER_CALL)
    .bind(old)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();

    // Calls that keep their old events: one with a recent event too, one still going on.
    store(&pool, "mixed-1", old, json!({"event_type": "call_started", "call_id": "mixed", "batch_id": 2, "phone_number": "9876500001"})).await;
    store(&pool, "mixed-2", now, json!({"event_type": "call_completed", "call_id": "mixed", "batch_id": 2, "phone_number": "9876500001"})).await;
    store(&pool, "live-1", old, json!({"event_type": "call_started", "call_id": "live", "batch_id": 2, "phone_number": "9876500002"})).await;
    // A finished call whose events go; its late callback comes after the run.
    store(&pool, "pruned-1", old, json!({"event_type": "call_started", "call_id": "pruned", "batch_id": 3, "phone_number": "9876500003", "duration": 0, "custom_data": {"customer_id": "C-3"}})).await;
    store(&pool, "pruned-2", old, json!({"event_type": "call_completed", "call_id": "pruned", "batch_id": 3, "phone_number": "9876500003", "duration": 61, "end_time": "2026-01-01T10:00:00Z"})).await;

    // Outbox: published long ago (goes), published now and not yet published (stay).
    sqlx::query("UPDATE call_outcome_outbox SET published_at = $1 WHERE event_id = 'pruned-2'")
        .bind(old)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO call_outcome_outbox (event_id, call_id, call_status, payload, published_at)
         VALUES ('o-recent', 'x', 'completed', '{}', now()),
                ('o-unpublished', 'y', 'completed', '{}', NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();

    // Queue rows: finished long ago in a final batch (go); the same in an open batch, a
    // pending and a needs_review row, and a recent finished row (stay).
    // Batch 2 (the persister created it) is still in progress: its calls are open.
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status, updated_at)
         VALUES ('9000000001', 1, 'submitted', LOCALTIMESTAMP - interval '100 days'),
                ('9000000002', 1, 'failed', LOCALTIMESTAMP - interval '100 days'),
                ('9000000003', 2, 'submitted', LOCALTIMESTAMP - interval '100 days'),
                ('9000000004', NULL, 'pending', LOCALTIMESTAMP - interval '100 days'),
                ('9000000005', 1, 'needs_review', LOCALTIMESTAMP - interval '100 days'),
                ('9000000006', 1, 'submitted', LOCALTIMESTAMP)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let events_before_run = scalar(&pool, "SELECT count(*) FROM call_events").await;
    assert!(events_before_run >= 1_000_000, "{events_before_run}");
    let before = figures(&pool).await;

    let policy = RetentionPolicy {
        events_before: now - TimeDelta::days(30),
        queue_before: now - TimeDelta::days(90),
        chunk_rows: 5_000,
    };
    let planned = retention::preview(&pool, &policy).await.unwrap();
    let expected = RetentionCounts {
        call_events: u64::try_from(OLD_CALLS * EVENTS_PER_CALL).unwrap() + 2,
        call_outcome_outbox: 1,
        local_call_queue: 2,
    };
    assert_eq!(planned, expected);

    // The persister keeps storing callbacks of batch 99 throughout the run.
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (pool, stop, stored) = (pool.clone(), Arc::clone(&stop), Arc::clone(&stored));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                n += 1;
                store(&pool, &format!("feed-{n}"), Utc::now(), json!({"event_type": "call_completed", "call_id": format!("feed-{n}"), "batch_id": 99, "phone_number": "9876511111"})).await;
                stored.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut chunks = 0u64;
    let deleted = retention::run(&pool, now, &Actor::cli("test"), &policy, |_, _| chunks += 1)
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    feeder.await.unwrap();

    assert_eq!(deleted, expected);
    assert!(chunks > 200, "small transactions: {chunks} chunks");
    assert_eq!(
        figures(&pool).await,
        before,
        "call_logs or call_batches changed"
    );
    let fed = i64::try_from(stored.load(Ordering::Relaxed)).unwrap();
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM call_events").await,
        events_before_run - i64::try_from(expected.call_events).unwrap() + fed
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM call_events WHERE call_id LIKE 'old-%'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM call_events WHERE call_id LIKE 'new-%'"
        )
        .await,
        RECENT_CALLS * EVENTS_PER_CALL
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM call_events WHERE call_id IN ('mixed', 'live')"
        )
        .await,
        3
    );
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM call_logs WHERE batch_id = 99").await,
        fed
    );
    let outbox: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM call_outcome_outbox ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!outbox.contains(&"pruned-2".to_owned()), "{outbox:?}");
    assert!(
        outbox.contains(&"o-recent".to_owned()) && outbox.contains(&"o-unpublished".to_owned())
    );
    let queue: Vec<String> =
        sqlx::query_scalar("SELECT phone_number FROM local_call_queue ORDER BY phone_number")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        queue,
        ["9000000003", "9000000004", "9000000005", "9000000006"]
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM operator_actions WHERE action = 'retention.run'"
        )
        .await,
        1
    );

    // A second run finds nothing more.
    let again = retention::run(&pool, now, &Actor::cli("test"), &policy, |_, _| {})
        .await
        .unwrap();
    assert_eq!(again, RetentionCounts::default());

    // A late call_started of the pruned call: the row keeps its outcome and every field,
    // and no outcome is published again.
    store(&pool, "pruned-late", now, json!({"event_type": "call_started", "call_id": "pruned", "batch_id": 3, "phone_number": "9876500003", "duration": 0})).await;
    let (status, duration, custom): (String, i32, Value) = sqlx::query_as(
        "SELECT call_status, duration, custom_data FROM call_logs WHERE call_id = 'pruned'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), duration), ("completed", 61));
    assert_eq!(custom["customer_id"], "C-3");
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM call_outcome_outbox WHERE call_id = 'pruned'"
        )
        .await,
        0
    );
}
