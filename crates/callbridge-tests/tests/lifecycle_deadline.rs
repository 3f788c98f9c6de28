//! The callback deadline against real Postgres, the simulator over real HTTP and the
//! persister's own store: a submitted call that sends no terminal callback becomes
//! `expired` once the deadline passes on the submitter's (injected) clock, so its batch
//! completes; a late terminal callback replaces it and the counts follow.

#[path = "submitter_common/mod.rs"]
mod common;

use std::sync::Arc;

use callbridge_persister::store::{IncomingEvent, store_batch};
use callbridge_runtime::health::Readiness;
use callbridge_submitter::Submitter;
use callbridge_types::clock::ManualClock;
use callbridge_types::envelope::Envelope;
use callbridge_types::event::validate_callback;
use chrono::{TimeDelta, Utc};
use common::{Harness, harness, numbers};
use serde_json::{Value, json};

fn submitter_with_clock(h: &Harness, clock: &ManualClock) -> Submitter {
    Submitter::with_clock(
        h.pool.clone(),
        &h.config(&[("CALLBRIDGE__LIFECYCLE__CALLBACK_DEADLINE", "2h")]),
        Readiness::new(),
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// Stores one callback as the persister does when it consumes it.
async fn callback(h: &Harness, event_id: &str, payload: Value) {
    let event = validate_callback(payload.to_string().as_bytes(), "SIM001").unwrap();
    let incoming = IncomingEvent {
        envelope: Envelope::new(event_id.to_owned(), Utc::now(), event, &payload),
        trace_id: None,
    };
    store_batch(&h.pool, &[&incoming], Utc::now())
        .await
        .unwrap();
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Figures {
    batch_status: Option<String>,
    total_calls: Option<i32>,
    completed_calls: Option<i32>,
    failed_calls: Option<i32>,
}

async fn figures(h: &Harness, batch_id: i32) -> Figures {
    sqlx::query_as(
        "SELECT batch_status, total_calls, completed_calls, failed_calls
           FROM call_batches WHERE batch_id = $1",
    )
    .bind(batch_id)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

/// The batch's counts as a recount of `call_logs` gives them.
async fn recount(h: &Harness, batch_id: i32) -> (i32, i32) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE callbridge_call_count_kind(call_status) = 'completed')::int4,
                count(*) FILTER (WHERE callbridge_call_count_kind(call_status) = 'failed')::int4
           FROM call_logs WHERE batch_id = $1",
    )
    .bind(batch_id)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

async fn status_of(h: &Harness, call_id: &str) -> String {
    sqlx::query_scalar("SELECT call_status FROM call_logs WHERE call_id = $1")
        .bind(call_id)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_terminal_callback_expires_and_a_late_callback_replaces_it() {
    let h = harness(json!({})).await;
    let batch = 7;
    let sent = numbers(batch, 2);
    h.enqueue(batch, &sent).await;
    let clock = ManualClock::new(Utc::now());
    let submitter = submitter_with_clock(&h, &clock);
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 2);

    // The first number's call starts and is answered; the second never calls back.
    callback(
        &h,
        "e-started",
        json!({"event_type": "call_started", "call_id": "call-a", "batch_id": batch,
               "phone_number": sent[0], "duration": 0, "disposition": "dialing",
               "custom_data": {"customer_id": "C-1"}}),
    )
    .await;
    assert_eq!(
        figures(&h, batch).await.batch_status.as_deref(),
        Some("in_progress")
    );

    // Before the deadline nothing expires.
    clock.advance(TimeDelta::minutes(119));
    let early = submitter.expire_overdue_calls().await.unwrap();
    assert_eq!(early.expired, 0, "{early:?}");
    assert_eq!(status_of(&h, "call-a").await, "started");

    // Past it: batch-status answers (it holds both numbers, but says nothing of how the
    // calls ended), so both calls expire and the batch completes.
    clock.advance(TimeDelta::minutes(2));
    let report = submitter.expire_overdue_calls().await.unwrap();
    assert_eq!(
        (report.expired, report.postponed_batches),
        (2, 0),
        "{report:?}"
    );
    assert!(h.batch_status_requests(batch) >= 1);
    assert_eq!(status_of(&h, "call-a").await, "expired");
    let unheard = format!("{batch}:{}", sent[1]);
    assert_eq!(status_of(&h, &unheard).await, "expired");
    assert_eq!(
        figures(&h, batch).await,
        Figures {
            batch_status: Some("completed".into()),
            total_calls: Some(2),
            completed_calls: Some(0),
            failed_calls: Some(2),
        }
    );
    // The expiry kept what the call's callbacks said.
    let custom: Value =
        sqlx::query_scalar("SELECT custom_data FROM call_logs WHERE call_id = 'call-a'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(custom["customer_id"], "C-1");

    // A second check expires nothing more.
    assert_eq!(submitter.expire_overdue_calls().await.unwrap().expired, 0);

    // A late call_answered does not reopen the call.
    callback(
        &h,
        "e-answered",
        json!({"event_type": "call_answered", "call_id": "call-a", "batch_id": batch,
               "phone_number": sent[0]}),
    )
    .await;
    assert_eq!(status_of(&h, "call-a").await, "expired");

    // A late terminal callback replaces expired, and the counts follow it exactly.
    callback(
        &h,
        "e-completed",
        json!({"event_type": "call_completed", "call_id": "call-a", "batch_id": batch,
               "phone_number": sent[0], "duration": 42,
               "end_time": "2026-01-01T10:00:00Z"}),
    )
    .await;
    assert_eq!(status_of(&h, "call-a").await, "completed");
    let after = figures(&h, batch).await;
    assert_eq!(
        (after.completed_calls, after.failed_calls),
        (Some(1), Some(1))
    );
    assert_eq!(recount(&h, batch).await, (1, 1));

    // The number that never called back: its late callback without a call id lands on the
    // row its expiry created.
    callback(
        &h,
        "e-busy",
        json!({"event_type": "call_busy", "batch_id": batch, "phone_number": sent[1],
               "end_time": "2026-01-01T10:01:00Z"}),
    )
    .await;
    assert_eq!(status_of(&h, &unheard).await, "busy");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM call_logs WHERE batch_id = $1")
        .bind(batch)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2, "one row per accepted number");
    let last = figures(&h, batch).await;
    assert_eq!(
        (last.completed_calls, last.failed_calls),
        (Some(1), Some(1))
    );
    assert_eq!(recount(&h, batch).await, (1, 1));
    assert_eq!(last.batch_status.as_deref(), Some("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_while_batch_status_cannot_be_asked() {
    let h = harness(json!({})).await;
    let batch = 8;
    let sent = numbers(batch, 1);
    h.enqueue(batch, &sent).await;
    let clock = ManualClock::new(Utc::now());
    let submitter = submitter_with_clock(&h, &clock);
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 1);
    h.sim
        .patch_knobs(&json!({"error_rate": 1.0, "fault_endpoints": ["batch_status"]}))
        .unwrap();

    clock.advance(TimeDelta::hours(3));
    let report = submitter.expire_overdue_calls().await.unwrap();
    assert_eq!(
        (report.expired, report.postponed_batches),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(
        figures(&h, batch).await.batch_status.as_deref(),
        Some("submitted")
    );

    // Once batch-status answers again, the next check expires the call.
    h.sim.patch_knobs(&json!({"error_rate": 0.0})).unwrap();
    assert_eq!(submitter.expire_overdue_calls().await.unwrap().expired, 1);
    assert_eq!(
        figures(&h, batch).await.batch_status.as_deref(),
        Some("completed")
    );
}
