//! The submitter against real Postgres and the simulator over real HTTP: each test
//! drives submission rounds synchronously (`drain_once`) and compares the queue rows and
//! `call_batches` with the simulator's ground truth.

#[path = "submitter_common/mod.rs"]
mod common;

use std::time::Duration;

use callbridge_sim::Endpoint;
use chrono::Utc;
use common::{ACCOUNT_CODE, harness, numbers};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_sends_each_batch_once_and_records_totals() {
    let h = harness(json!({})).await;
    let first = numbers(1, 3);
    let second = numbers(2, 2);
    h.enqueue(1, &first).await;
    h.enqueue(2, &second).await;
    let submitter = h.submitter(&[]);

    let report = submitter.drain_once().await.unwrap();

    assert_eq!((report.claimed, report.submitted), (5, 5), "{report:?}");
    assert!(report.dispatched);
    for row in h.rows().await {
        assert_eq!(row.queue_status, "submitted", "{row:?}");
        assert!(
            row.submitted_at.is_some() && row.lease_owner.is_none(),
            "{row:?}"
        );
        assert_eq!(row.retry_count, 0);
    }
    for (batch_id, sent) in [(1, &first), (2, &second)] {
        h.assert_each_accepted_once(batch_id, sent);
        assert_eq!(h.inserts(batch_id), 1, "one request per batch");
        let batch = h.batch(batch_id).await.unwrap();
        assert_eq!(batch.total_calls, Some(sent.len() as i32));
        assert_eq!(batch.batch_status.as_deref(), Some("submitted"));
        assert_eq!(batch.accountcode, ACCOUNT_CODE);
    }
    // Custom data travels with each number.
    let truth = h.sim.ground_truth(Some(1));
    let call = truth
        .calls_of_batch(1)
        .find(|call| call.phone_number == first[0])
        .unwrap();
    assert_eq!(
        call.custom_data,
        Some(json!({"customer_id": format!("C-{}", first[0])}))
    );
    // Dispatched: the simulator placed the calls.
    let everything = h.sim.ground_truth(None);
    assert!(everything.requests_to(Endpoint::Dispatch).count() >= 1);
    assert_eq!(everything.totals.calls_queued, 0);

    // Nothing is due any more: another round claims nothing and sends nothing.
    let again = submitter.drain_once().await.unwrap();
    assert_eq!(again.claimed, 0);
    assert_eq!(h.inserts(1) + h.inserts(2), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_answer_with_status_200_is_a_success_too() {
    let h = harness(json!({"response_layout": "nested", "insert_success_status": 200})).await;
    let sent = numbers(3, 4);
    h.enqueue(3, &sent).await;

    let report = h.submitter(&[]).drain_once().await.unwrap();

    assert_eq!(report.submitted, 4, "{report:?}");
    h.assert_each_accepted_once(3, &sent);
    assert_eq!(h.batch(3).await.unwrap().total_calls, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_is_retried_after_backoff_and_reconciled_first() {
    // The first two inserts fail with 500 and take no effect.
    let h =
        harness(json!({"error_rate": 1.0, "fault_budget": 2, "fault_endpoints": ["insert"]})).await;
    let sent = numbers(4, 3);
    h.enqueue(4, &sent).await;
    // A long backoff, so "not due yet" does not depend on timing.
    let submitter = h.submitter(&[
        ("CALLBRIDGE__SUBMITTER__BACKOFF_BASE_MS", "600000"),
        ("CALLBRIDGE__SUBMITTER__BACKOFF_MAX_MS", "600000"),
    ]);

    let report = submitter.drain_once().await.unwrap();
    assert_eq!((report.retried, report.submitted), (3, 0), "{report:?}");
    let before = Utc::now();
    for row in h.rows().await {
        assert_eq!(row.queue_status, "pending");
        assert_eq!(row.retry_count, 1);
        assert!(
            row.last_error.as_deref().unwrap().contains("HTTP 500"),
            "{row:?}"
        );
        // Exponential backoff with equal jitter: at least half the first delay (300 s).
        assert!(
            row.next_attempt_at >= before + chrono::Duration::seconds(290),
            "{row:?}"
        );
        // A 500 leaves the outcome unknown: the evidence of the attempt stays.
        assert!(row.attempt_started_at.is_some());
    }
    assert_eq!(
        submitter.drain_once().await.unwrap().claimed,
        0,
        "nothing is due during the backoff"
    );

    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    let second_wait = h.rows().await[0].next_attempt_at - Utc::now();
    assert!(
        second_wait >= chrono::Duration::seconds(290),
        "the second wait is not shorter"
    );

    h.make_due().await;
    let report = submitter.drain_once().await.unwrap();
    assert_eq!(report.submitted, 3, "{report:?}");
    for row in h.rows().await {
        assert_eq!(
            (row.queue_status.as_str(), row.retry_count),
            ("submitted", 2)
        );
    }
    h.assert_each_accepted_once(4, &sent);
    // Before each resend, batch-status proved the system held none of the rows.
    assert_eq!(h.all_inserts(), 3);
    assert_eq!(h.batch_status_requests(4), 2);
    assert_eq!(h.batch(4).await.unwrap().total_calls, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_waits_at_least_retry_after_and_needs_no_reconciliation() {
    let h = harness(json!({
        "rate_limit_rate": 1.0, "fault_budget": 1, "retry_after_secs": 120,
        "fault_endpoints": ["insert"]
    }))
    .await;
    let sent = numbers(5, 2);
    h.enqueue(5, &sent).await;
    // Backoff alone would wait milliseconds.
    let submitter = h.submitter(&[]);

    let before = Utc::now();
    let report = submitter.drain_once().await.unwrap();
    assert_eq!(report.retried, 2, "{report:?}");
    for row in h.rows().await {
        assert_eq!((row.queue_status.as_str(), row.retry_count), ("pending", 1));
        assert!(
            row.next_attempt_at >= before + chrono::Duration::seconds(119),
            "{row:?}"
        );
        assert!(
            row.last_error.as_deref().unwrap().contains("429"),
            "{row:?}"
        );
        // A 429 certainly took no effect: nothing to reconcile.
        assert!(row.attempt_started_at.is_none());
    }
    assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);

    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 2);
    h.assert_each_accepted_once(5, &sent);
    assert_eq!(h.batch_status_requests(5), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_fails_the_rows_with_the_apis_message() {
    let h = harness(json!({})).await;
    // custom_data must be an object: the API answers 400 {"detail": …}.
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, custom_data) VALUES ('9000000001', 6, '[1, 2]')",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    let submitter = h.submitter(&[]);

    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.failed, 1, "{report:?}");
    let row = &h.rows().await[0];
    assert_eq!(row.queue_status, "failed");
    let error = row.last_error.as_deref().unwrap();
    assert!(
        error.contains("HTTP 400")
            && error.contains("data.0.custom_data: must be an object or null"),
        "{error}"
    );
    let batch = h.batch(6).await.unwrap();
    assert_eq!(
        (batch.total_calls, batch.batch_status.as_deref()),
        (Some(0), Some("failed"))
    );
    assert_eq!(
        submitter.drain_once().await.unwrap().claimed,
        0,
        "a failed row is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_attempts_rows_fail_with_the_last_error_after_proving_nothing_is_held() {
    let h = harness(json!({"error_rate": 1.0, "fault_endpoints": ["insert"]})).await;
    let sent = numbers(7, 2);
    h.enqueue(7, &sent).await;
    let submitter = h.submitter(&[("CALLBRIDGE__SUBMITTER__MAX_ATTEMPTS", "3")]);

    let mut rounds = 0;
    while h.statuses().await.get("failed") != Some(&2) {
        rounds += 1;
        assert!(rounds <= 10, "rows never failed: {:?}", h.rows().await);
        h.make_due().await;
        submitter.drain_once().await.unwrap();
    }

    for row in h.rows().await {
        assert_eq!(row.retry_count, 3, "{row:?}");
        let error = row.last_error.unwrap();
        assert!(
            error.contains("gave up after 3 attempts") && error.contains("HTTP 500"),
            "{error}"
        );
    }
    assert_eq!(
        h.all_inserts(),
        3,
        "exactly the configured number of attempts"
    );
    assert_eq!(h.sim.ground_truth(Some(7)).totals.accepted_items, 0);
    assert_eq!(
        h.batch(7).await.unwrap().batch_status.as_deref(),
        Some("failed")
    );
    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_then_failed_insert_is_reconciled_as_submitted_and_not_resent() {
    // The answer is a 500, the connection closing without one, or none before our
    // request timeout ("hang").
    for mode in ["error_500", "drop_connection", "hang"] {
        let h = harness(json!({
            "accept_then_fail_rate": 1.0, "accept_then_fail_mode": mode, "fault_budget": 1,
            "hang_ms": 5000, "fault_endpoints": ["insert"]
        }))
        .await;
        let sent = numbers(8, 3);
        h.enqueue(8, &sent).await;
        let submitter = h.submitter(&[("CALLBRIDGE__API__REQUEST_TIMEOUT_MS", "1000")]);

        let report = submitter.drain_once().await.unwrap();
        assert_eq!(
            (report.retried, report.submitted),
            (3, 0),
            "{mode}: {report:?}"
        );
        assert_eq!(
            h.batch(8).await.map(|batch| batch.total_calls),
            None,
            "{mode}: nothing counted yet"
        );

        h.make_due().await;
        let report = submitter.drain_once().await.unwrap();
        assert_eq!(report.submitted, 3, "{mode}: {report:?}");
        h.assert_each_accepted_once(8, &sent);
        assert_eq!(
            h.inserts(8),
            1,
            "{mode}: resent after the system had accepted it"
        );
        assert_eq!(h.batch_status_requests(8), 1);
        assert_eq!(h.batch(8).await.unwrap().total_calls, Some(3), "{mode}");
        assert!(
            h.rows()
                .await
                .iter()
                .all(|row| row.queue_status == "submitted")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_accepted_insert_goes_to_review_and_is_never_resent() {
    // The system keeps the first item only and answers "warning".
    let h = harness(json!({"partial_accept_max": 1, "fault_budget": 1})).await;
    let sent = numbers(9, 3);
    h.enqueue(9, &sent).await;
    let submitter = h.submitter(&[]);

    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    h.make_due().await;
    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.needs_review, 3, "{report:?}");
    for row in h.rows().await {
        assert_eq!(row.queue_status, "needs_review");
        assert!(
            row.last_error
                .as_deref()
                .unwrap()
                .contains("holds 1 of these 3"),
            "{row:?}"
        );
    }
    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);
    assert_eq!(h.inserts(9), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batch_goes_out_in_chunks_of_at_most_1000() {
    let h = harness(json!({})).await;
    let sent = numbers(10, 2300);
    h.enqueue(10, &sent).await;
    let submitter = h.submitter(&[("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "5000")]);

    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.submitted, 2300, "{report:?}");
    h.assert_each_accepted_once(10, &sent);
    let truth = h.sim.ground_truth(Some(10));
    let sizes: Vec<usize> = truth
        .requests_to(Endpoint::Insert)
        .map(|request| request.items_stored)
        .collect();
    assert_eq!(sizes, [1000, 1000, 300]);
    assert_eq!(h.batch(10).await.unwrap().total_calls, Some(2300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_batches_are_claimed_up_to_the_claim_limit() {
    let h = harness(json!({})).await;
    for batch_id in 11..=14 {
        h.enqueue(batch_id, &numbers(batch_id, 30)).await;
    }
    let submitter = h.submitter(&[("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "70")]);

    // 30 + 30 fit in 70; a third batch would be split, so it waits for the next round.
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 60);
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 60);
    for batch_id in 11..=14 {
        assert_eq!(h.inserts(batch_id), 1, "batch {batch_id} was split");
        h.assert_each_accepted_once(batch_id, &numbers(batch_id, 30));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_a_batch_id_fail_with_a_reason() {
    let h = harness(json!({})).await;
    sqlx::query("INSERT INTO local_call_queue (phone_number) VALUES ('9000000002')")
        .execute(&h.pool)
        .await
        .unwrap();

    let report = h.submitter(&[]).drain_once().await.unwrap();

    assert_eq!(report.failed, 1);
    let row = &h.rows().await[0];
    assert_eq!(row.queue_status, "failed");
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .starts_with("batch_id is missing")
    );
    assert!(
        h.sim
            .ground_truth(None)
            .requests_to(Endpoint::Insert)
            .next()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_submitters_claim_disjoint_rows_and_each_number_is_accepted_once() {
    let h = harness(json!({})).await;
    for batch_id in 21..=24 {
        h.enqueue(batch_id, &numbers(batch_id, 50)).await;
    }
    let limit = [("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "100")];
    let first = h.submitter(&limit);
    let second = h.submitter(&limit);

    // The first round's requests wait in the simulator while the second round claims.
    h.sim.hold();
    let first_round = tokio::spawn({
        let first = first.clone();
        async move { first.drain_once().await }
    });
    wait_until_held(&h, 2).await;
    let second_round = tokio::spawn({
        let second = second.clone();
        async move { second.drain_once().await }
    });
    wait_until_held(&h, 4).await;
    // Mid-flight, each row is leased by exactly one of them, and each holds two batches.
    let owners: Vec<(i32, Option<String>)> = h
        .rows()
        .await
        .into_iter()
        .map(|row| (row.batch_id.unwrap(), row.lease_owner))
        .collect();
    for owner in [first.owner(), second.owner()] {
        let mut batches: Vec<i32> = owners
            .iter()
            .filter(|(_, leased)| leased.as_deref() == Some(owner))
            .map(|(batch_id, _)| *batch_id)
            .collect();
        assert_eq!(batches.len(), 100, "{owner}");
        batches.dedup();
        assert_eq!(batches.len(), 2, "{owner} holds whole batches");
    }
    h.sim.release();

    let first_report = first_round.await.unwrap().unwrap();
    let second_report = second_round.await.unwrap().unwrap();
    assert_eq!((first_report.claimed, second_report.claimed), (100, 100));
    assert_eq!(first_report.submitted + second_report.submitted, 200);
    for batch_id in 21..=24 {
        h.assert_each_accepted_once(batch_id, &numbers(batch_id, 50));
        assert_eq!(h.inserts(batch_id), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fernet_token_made_by_python_works_as_the_key() {
    let h = harness(json!({})).await;
    let script = "from cryptography.fernet import Fernet; k = Fernet.generate_key(); \
                  print(k.decode()); print(Fernet(k).encrypt(b'test-api-key').decode())";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 with the cryptography package is required");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let (key, token) = (lines.next().unwrap(), lines.next().unwrap());

    let mut env = h.environment(&[]);
    env.remove("CENTRALIZED_CALLING_API_KEY");
    env.insert("CENTRALIZED_CALLING_API_KEY_ENCRYPTED".into(), token.into());
    env.insert("ENCRYPTION_KEY".into(), key.into());
    let config = common::config_from(env);
    let submitter = callbridge_submitter::Submitter::new(
        h.pool.clone(),
        &config,
        callbridge_runtime::health::Readiness::new(),
    )
    .unwrap();
    let sent = numbers(30, 2);
    h.enqueue(30, &sent).await;

    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.submitted, 2, "{report:?}");
    assert!(!report.paused);
    h.assert_each_accepted_once(30, &sent);
}

async fn wait_until_held(h: &common::Harness, requests: usize) {
    let mut waited = 0;
    while h.sim.held_now() < requests {
        waited += 1;
        assert!(
            waited < 500,
            "expected {requests} requests held, have {}",
            h.sim.held_now()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_submitters_never_split_or_repeat_a_batch() {
    let h = harness(json!({})).await;
    for batch_id in 100..140 {
        h.enqueue(batch_id, &numbers(batch_id, 25)).await;
    }
    let rounds: Vec<_> = (0..6)
        .map(|_| {
            let submitter = h.submitter(&[("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "50")]);
            let pool = h.pool.clone();
            tokio::spawn(async move {
                loop {
                    let report = submitter.drain_once().await.unwrap();
                    if report.claimed > 0 {
                        continue;
                    }
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM local_call_queue WHERE queue_status IN ('pending', 'submitting')",
                    )
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    if waiting == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for round in rounds {
        round.await.unwrap();
    }

    assert_eq!(h.statuses().await.get("submitted"), Some(&1000));
    for batch_id in 100..140 {
        h.assert_each_accepted_once(batch_id, &numbers(batch_id, 25));
        assert_eq!(
            h.inserts(batch_id),
            1,
            "batch {batch_id} went out in more than one request"
        );
        assert_eq!(h.batch(batch_id).await.unwrap().total_calls, Some(25));
    }
}

/// `pg_class.reltuples` of the queue: -1 until the table is first analysed or vacuumed.
async fn queue_reltuples(h: &common::Harness) -> f32 {
    sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'local_call_queue'::regclass")
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_round_after_many_claimed_rows_analyses_the_queue() {
    let h = harness(json!({})).await;
    h.enqueue(1, &numbers(1, 30)).await;
    let submitter = h.submitter(&[("CALLBRIDGE__SUBMITTER__ANALYZE_AFTER_ROWS", "20")]);
    // Autovacuum leaves a table this small alone (it waits for 50 changed rows).
    assert_eq!(queue_reltuples(&h).await, -1.0, "never analysed yet");

    let busy = submitter.drain_once().await.unwrap();
    assert_eq!(busy.claimed, 30);
    assert_eq!(
        queue_reltuples(&h).await,
        -1.0,
        "a round that claimed rows does not analyse: more work may be waiting"
    );

    let idle = submitter.drain_once().await.unwrap();
    assert_eq!(idle.claimed, 0);
    assert_eq!(
        queue_reltuples(&h).await,
        30.0,
        "the idle round analysed the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_threshold_or_switched_off_the_queue_is_not_analysed() {
    for threshold in ["31", "0"] {
        let h = harness(json!({})).await;
        h.enqueue(1, &numbers(1, 30)).await;
        let submitter = h.submitter(&[("CALLBRIDGE__SUBMITTER__ANALYZE_AFTER_ROWS", threshold)]);
        assert_eq!(submitter.drain_once().await.unwrap().claimed, 30);
        assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);
        assert_eq!(
            queue_reltuples(&h).await,
            -1.0,
            "threshold {threshold}: 30 claimed rows are not enough"
        );
    }
}
