//! The built binary killed at exact points (`CALLBRIDGE_FAILPOINT`, which aborts the
//! process there), then restarted without the failpoint: redelivery brings everything
//! back and the final rows, counters and outcomes are exact.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use callbridge_persister::failpoint::{FAILPOINT_VARIABLE, Failpoint};
use callbridge_types::envelope::Envelope;
use common::*;
use serde_json::json;
use tokio::process::{Child, Command};

/// SIGABRT, what `std::process::abort` ends the process with.
const SIGABRT: i32 = 6;

fn spawn_binary(harness: &Harness, failpoint: Option<Failpoint>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callbridge-persister"));
    command
        .env_clear()
        .envs(harness.env(8))
        // Logs go to the inherited stdout: the test runner shows them for a failure.
        .env("RUST_LOG", "info,sqlx=warn,lapin=warn")
        .kill_on_drop(true);
    if let Some(point) = failpoint {
        command.env(FAILPOINT_VARIABLE, point.name());
    }
    command.spawn().expect("the persister binary starts")
}

/// Runs the binary with `point` armed and waits until it aborts there.
async fn run_until_killed_at(harness: &Harness, point: Failpoint) {
    let mut child = spawn_binary(harness, Some(point));
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the persister never reached failpoint {}", point.name()))
        .unwrap();
    assert_eq!(status.signal(), Some(SIGABRT), "{status:?}");
}

/// Runs the binary normally until everything published is settled, then stops it with
/// SIGTERM.
async fn run_to_completion(harness: &Harness) {
    let child = spawn_binary(harness, None);
    harness.settle().await;
    terminate(child).await;
}

async fn terminate(mut child: Child) {
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the persister stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

async fn unpublished_outcomes(harness: &Harness) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM call_outcome_outbox WHERE published_at IS NULL")
        .fetch_one(&harness.pool)
        .await
        .unwrap()
}

/// Four calls of batch 500, two completed and two failed in other ways; batch 500 was
/// submitted with four numbers.
async fn publish_scenario(harness: &Harness) -> Vec<Envelope> {
    harness.submitted_batch(500, 4).await;
    let events = vec![
        call_event(500, "c1", "started", json!({"duration": 0})),
        call_event(500, "c1", "completed", json!({"duration": 61})),
        call_event(500, "c2", "started", json!({"duration": 0})),
        call_event(500, "c2", "failed", json!({"error_message": "network"})),
        call_event(500, "c3", "answered", json!({"disposition": "answered"})),
        call_event(500, "c3", "completed", json!({"duration": 12})),
        call_event(500, "c4", "started", json!({"duration": 0})),
        call_event(500, "c4", "busy", json!({})),
    ];
    harness.publish_all(&events).await;
    events
}

/// The rows, counters and outcomes the scenario must end with.
async fn assert_scenario_is_exact(harness: &Harness, events: &[Envelope]) {
    let statuses: BTreeMap<String, (String, Option<i32>)> = harness
        .call_logs()
        .await
        .into_iter()
        .map(|(call, row)| (call, (row.call_status, row.duration)))
        .collect();
    let expected: BTreeMap<String, (String, Option<i32>)> = [
        ("c1", "completed", 61),
        ("c2", "failed", 0),
        ("c3", "completed", 12),
        ("c4", "busy", 0),
    ]
    .into_iter()
    .map(|(call, status, duration)| (call.to_owned(), (status.to_owned(), Some(duration))))
    .collect();
    assert_eq!(statuses, expected);
    assert_eq!(harness.count("call_events").await, events.len() as i64);
    let batch = harness.batch(500).await;
    assert_eq!(
        (batch.completed_calls, batch.failed_calls),
        (Some(2), Some(2))
    );
    assert_eq!(batch.batch_status.as_deref(), Some("completed"));
    assert_eq!(harness.count("call_outcome_outbox").await, 4);
    harness.assert_all_acknowledged().await;
    assert!(harness.take_dead_letters().await.is_empty());
}

#[tokio::test]
async fn killed_after_the_transaction_began_but_before_commit() {
    let harness = Harness::new().await;
    let events = publish_scenario(&harness).await;

    run_until_killed_at(&harness, Failpoint::BeforeCommit).await;
    assert_eq!(
        harness.count("call_events").await,
        0,
        "nothing was committed"
    );

    run_to_completion(&harness).await;
    assert_scenario_is_exact(&harness, &events).await;
}

#[tokio::test]
async fn killed_after_commit_but_before_ack() {
    let harness = Harness::new().await;
    let events = publish_scenario(&harness).await;

    run_until_killed_at(&harness, Failpoint::AfterCommitBeforeAck).await;
    assert!(
        harness.count("call_events").await > 0,
        "the first batch committed"
    );
    // Committed, yet every message is still there to be redelivered.
    wait_until(
        "the killed consumer's messages are back in the queue",
        || async { harness.ready_messages().await == events.len() as u32 },
    )
    .await;

    run_to_completion(&harness).await;
    assert_scenario_is_exact(&harness, &events).await;
}

#[tokio::test]
async fn many_kills_in_a_row_dead_letter_nothing() {
    let harness = Harness::new().await;
    let events = publish_scenario(&harness).await;

    // Each kill returns the deliveries unacknowledged, which counts toward the queue's
    // x-delivery-limit; ten are far below it.
    for _ in 0..10 {
        run_until_killed_at(&harness, Failpoint::BeforeCommit).await;
    }
    assert_eq!(harness.count("call_events").await, 0);

    run_to_completion(&harness).await;
    assert_scenario_is_exact(&harness, &events).await;
}

#[tokio::test]
async fn outcomes_survive_a_crash_between_commit_and_publish() {
    let harness = Harness::new().await;
    let events = publish_scenario(&harness).await;

    run_until_killed_at(&harness, Failpoint::AfterCommitBeforeOutboxPublish).await;
    assert!(harness.count("call_outcome_outbox").await > 0);
    assert!(
        harness.take_outcomes().await.is_empty(),
        "nothing was published"
    );

    assert!(unpublished_outcomes(&harness).await > 0);

    let child = spawn_binary(&harness, None);
    harness.settle().await;
    wait_until("every outcome published", || async {
        unpublished_outcomes(&harness).await == 0
    })
    .await;
    terminate(child).await;
    let outcomes: BTreeMap<String, String> = harness
        .take_outcomes()
        .await
        .into_iter()
        .map(|outcome| (outcome.message_id, outcome.routing_key))
        .collect();
    let deciding = |call: &str, kind: &str| {
        events
            .iter()
            .find(|e| {
                e.event.call_id == call && e.event.event_type.as_str() == format!("call_{kind}")
            })
            .unwrap()
            .event_id
            .clone()
    };
    let expected: BTreeMap<String, String> = [
        (deciding("c1", "completed"), "outcome.completed"),
        (deciding("c2", "failed"), "outcome.failed"),
        (deciding("c3", "completed"), "outcome.completed"),
        (deciding("c4", "busy"), "outcome.busy"),
    ]
    .into_iter()
    .map(|(id, key)| (id, key.to_owned()))
    .collect();
    assert_eq!(outcomes, expected);
    assert_scenario_is_exact(&harness, &events).await;
}

#[tokio::test]
async fn killed_mid_batch_a_busy_call_still_gets_exactly_one_redial() {
    let harness = Harness::new().await;
    let campaign: i32 = sqlx::query_scalar(
        "INSERT INTO campaigns (name, redial_busy_retries, redial_busy_interval_secs)
         VALUES ('spring', 2, 900) RETURNING id",
    )
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, total_calls, batch_status, campaign_id)
         VALUES (510, $1, 1, 'submitted', $2)",
    )
    .bind(ACCOUNT_CODE)
    .bind(campaign)
    .execute(&harness.pool)
    .await
    .unwrap();
    let row: i32 = sqlx::query_scalar(
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status, campaign_id)
         VALUES ('9876543210', 510, 'submitted', $1) RETURNING id",
    )
    .bind(campaign)
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    let events = [
        call_event(510, "r1", "started", json!({"duration": 0})),
        call_event(510, "r1", "busy", json!({})),
        call_event(510, "r1", "busy", json!({})),
    ];
    harness.publish_all(&events).await;

    for _ in 0..2 {
        run_until_killed_at(&harness, Failpoint::BeforeCommit).await;
    }
    let redials = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM local_call_queue WHERE redial_of = $1")
            .bind(row)
            .fetch_one(&harness.pool)
            .await
            .unwrap()
    };
    assert_eq!(redials().await, 0, "nothing was committed");
    run_until_killed_at(&harness, Failpoint::AfterCommitBeforeAck).await;
    run_to_completion(&harness).await;

    assert_eq!(redials().await, 1);
    let attempt: i32 =
        sqlx::query_scalar("SELECT attempt FROM local_call_queue WHERE redial_of = $1")
            .bind(row)
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!(attempt, 2);
    harness.assert_all_acknowledged().await;
}
