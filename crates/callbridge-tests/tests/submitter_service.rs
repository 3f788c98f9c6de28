//! The submitter as a service: readiness and metrics over HTTP, waking on NOTIFY, and
//! what a shutdown does to the request in flight and the rows not sent yet.

#[path = "submitter_common/mod.rs"]
mod common;

use std::time::Duration;

use callbridge_submitter::Application;
use common::{harness, numbers};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn get(app_addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{app_addr}{path}"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Polls `check` until it holds; the bound only keeps a broken build from hanging.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_pauses_reports_not_ready_and_resumes_by_itself_without_losing_rows() {
    let h = harness(json!({"reject_all_keys": true})).await;
    let sent = numbers(50, 3);
    h.enqueue(50, &sent).await;
    let app = Application::build(&h.config(&[])).await.unwrap();
    let addr = app.health_addr();
    let submitter = app.submitter();

    let report = submitter.drain_once().await.unwrap();

    assert!(report.paused && submitter.is_paused(), "{report:?}");
    assert_eq!((report.claimed, report.released, report.retried), (3, 3, 0));
    for row in h.rows().await {
        // Back as they were: no attempt counted, nothing to reconcile, not leased.
        assert_eq!(
            (row.queue_status.as_str(), row.retry_count),
            ("pending", 0),
            "{row:?}"
        );
        assert!(
            row.attempt_started_at.is_none() && row.lease_owner.is_none(),
            "{row:?}"
        );
    }
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    let reason = serde_json::from_str::<Value>(&body).unwrap()["reasons"]["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("CENTRALIZED_CALLING_API_KEY") && reason.contains("401"),
        "{reason}"
    );
    assert!(
        !reason.contains(common::API_KEY),
        "the key itself must never be shown"
    );
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.lines().any(|line| line == "submitter_paused 1"),
        "{metrics}"
    );

    // Still refused: the round only probes, and claims nothing.
    let report = submitter.drain_once().await.unwrap();
    assert!(report.paused && report.claimed == 0, "{report:?}");
    assert_eq!(h.all_inserts(), 1);

    // The centralized system accepts the key again: submission resumes by itself.
    h.sim
        .patch_knobs(&json!({"reject_all_keys": false}))
        .unwrap();
    let report = submitter.drain_once().await.unwrap();
    assert!(!report.paused && report.submitted == 3, "{report:?}");
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.lines().any(|line| line == "submitter_paused 0"),
        "{metrics}"
    );
    h.assert_each_accepted_once(50, &sent);
    assert!(h.rows().await.iter().all(|row| row.retry_count == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_submitter_long_before_it_would_poll() {
    let h = harness(json!({})).await;
    // Polling alone would take ten minutes.
    let app =
        Application::build(&h.config(&[("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "600000")]))
            .await
            .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    // The first round (an empty queue) dispatches what a predecessor may have left.
    eventually("the first round", || async {
        h.sim
            .ground_truth(None)
            .requests_to(callbridge_sim::Endpoint::Dispatch)
            .count()
            > 0
    })
    .await;

    let sent = numbers(51, 4);
    h.enqueue(51, &sent).await;
    eventually("the new rows are submitted", || async {
        h.statuses().await.get("submitted") == Some(&4)
    })
    .await;

    h.assert_each_accepted_once(51, &sent);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_releases_rows_not_sent() {
    // Only inserts are held (a dispatch at start must not be).
    let h = harness(json!({"fault_endpoints": ["insert"]})).await;
    let sent = numbers(52, 2500);
    h.enqueue(52, &sent).await;
    let app =
        Application::build(&h.config(&[("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "5000")]))
            .await
            .unwrap();
    let shutdown = CancellationToken::new();
    h.sim.hold();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    eventually("the first chunk is in flight", || async {
        h.sim.held_now() == 1
    })
    .await;

    shutdown.cancel();
    // The service waits for the request in flight instead of abandoning it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "stopped while a request was in flight"
    );
    h.sim.release();
    running.await.unwrap().unwrap();

    let statuses = h.statuses().await;
    assert_eq!(statuses.get("submitted"), Some(&1000), "{statuses:?}");
    assert_eq!(statuses.get("pending"), Some(&1500), "{statuses:?}");
    for row in h
        .rows()
        .await
        .iter()
        .filter(|row| row.queue_status == "pending")
    {
        // Never sent: no lease, no evidence, no attempt counted.
        assert!(
            row.lease_owner.is_none() && row.attempt_started_at.is_none() && row.retry_count == 0,
            "{row:?}"
        );
    }
    assert_eq!(h.sim.ground_truth(Some(52)).totals.accepted_items, 1000);
    assert_eq!(h.batch(52).await.unwrap().total_calls, Some(1000));
}

/// `value` of the `call_submissions_total` series for `status` on the metrics page, 0 when
/// the series is absent (nothing counted yet).
fn submissions(metrics: &str, status: &str) -> u64 {
    let prefix = format!("call_submissions_total{{status=\"{status}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_submissions_total_counts_every_row_by_its_outcome() {
    // The first insert fails with 500 and takes no effect.
    let h =
        harness(json!({"error_rate": 1.0, "fault_budget": 1, "fault_endpoints": ["insert"]})).await;
    let app = Application::build(&h.config(&[
        ("CALLBRIDGE__SUBMITTER__BACKOFF_BASE_MS", "600000"),
        ("CALLBRIDGE__SUBMITTER__BACKOFF_MAX_MS", "600000"),
    ]))
    .await
    .unwrap();
    let addr = app.health_addr();
    let submitter = app.submitter();
    let counted = |statuses: [&'static str; 4]| async move {
        let (_, metrics) = get(addr, "/metrics").await;
        statuses.map(|status| submissions(&metrics, status))
    };
    const STATUSES: [&str; 4] = ["submitted", "retried", "failed", "needs_review"];

    h.enqueue(60, &numbers(60, 3)).await;
    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    assert_eq!(counted(STATUSES).await, [0, 3, 0, 0]);

    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 3);
    assert_eq!(counted(STATUSES).await, [3, 3, 0, 0]);

    // custom_data must be an object: the API answers 400 and the row fails at once.
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, custom_data) VALUES ('9006100001', 61, '[1, 2]')",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    assert_eq!(submitter.drain_once().await.unwrap().failed, 1);
    assert_eq!(counted(STATUSES).await, [3, 3, 1, 0]);

    // The system keeps the first item only and answers "warning": retried, then settled
    // by batch-status as held in part.
    h.sim
        .patch_knobs(&json!({"error_rate": 0.0, "partial_accept_max": 1, "fault_budget": 1}))
        .unwrap();
    h.enqueue(62, &numbers(62, 3)).await;
    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().needs_review, 3);
    assert_eq!(counted(STATUSES).await, [3, 6, 1, 3]);
}

/// `local_call_queue_rows` reports every queue status but the sent history, and a status
/// that emptied as 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gauge_counts_every_status_but_the_sent_history() {
    let h = harness(json!({})).await;
    let app = Application::build(&h.config(&[])).await.unwrap();
    let addr = app.health_addr();
    let submitter = app.submitter();
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status)
         SELECT '90070' || lpad(n::text, 5, '0'), 70, status
           FROM unnest(ARRAY['pending', 'pending', 'failed', 'needs_review', 'cancelled',
                             'suppressed', 'suppressed', 'suppressed', 'submitted'])
                WITH ORDINALITY AS s(status, n)",
    )
    .execute(&h.pool)
    .await
    .unwrap();

    submitter.refresh_gauges().await.unwrap();

    let (_, metrics) = get(addr, "/metrics").await;
    let rows = |status: &str| -> Option<f64> {
        let prefix = format!("local_call_queue_rows{{queue_status=\"{status}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.parse().unwrap())
    };
    assert_eq!(rows("pending"), Some(2.0), "{metrics}");
    assert_eq!(rows("submitting"), Some(0.0), "{metrics}");
    assert_eq!(rows("failed"), Some(1.0), "{metrics}");
    assert_eq!(rows("needs_review"), Some(1.0), "{metrics}");
    assert_eq!(rows("cancelled"), Some(1.0), "{metrics}");
    assert_eq!(rows("suppressed"), Some(3.0), "{metrics}");
    assert_eq!(rows("submitted"), None, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_expired_total_counts_every_call_given_up_on() {
    let h = harness(json!({})).await;
    let app = Application::build(&h.config(&[("CALLBRIDGE__LIFECYCLE__CALLBACK_DEADLINE", "2h")]))
        .await
        .unwrap();
    let addr = app.health_addr();
    let submitter = app.submitter();
    h.enqueue(61, &numbers(61, 2)).await;
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 2);
    // Sent three hours ago, as far as the 2 h deadline is concerned (the service runs on
    // the system clock: the rows are made older instead).
    for table in ["local_call_queue", "call_batches"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET submitted_at = submitted_at - interval '3 hours'"
        )))
        .execute(&h.pool)
        .await
        .unwrap();
    }
    let expired_total = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("callbridge_calls_expired_total "))
            .map_or(0, |value| value.parse().unwrap())
    };
    assert_eq!(expired_total(&get(addr, "/metrics").await.1), 0);
    assert_eq!(submitter.expire_overdue_calls().await.unwrap().expired, 2);
    assert_eq!(expired_total(&get(addr, "/metrics").await.1), 2);
}
