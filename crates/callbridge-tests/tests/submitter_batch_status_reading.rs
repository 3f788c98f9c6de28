//! How batch-status is read is configuration (where the numbers are, what a 404 means),
//! because the real system documents no answer. Against the simulator answering in other
//! layouts, and hiding a batch it holds behind 404 for a while: with the right settings an
//! insert whose answer was lost is reconciled; with the wrong ones nothing is ever sent
//! twice, except with a 404 configured as "none", which the README warns about.

#[path = "submitter_common/mod.rs"]
mod common;

use callbridge_runtime::health::Readiness;
use callbridge_submitter::Submitter;
use common::{config_from, harness, numbers};
use serde_json::json;

const NUMBERS_PATH: &str = "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBERS_PATH";
const NOT_FOUND: &str = "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NOT_FOUND";

/// The insert takes effect, then the answer never comes before the request timeout.
fn timed_out_insert(extra: serde_json::Value) -> serde_json::Value {
    let mut knobs = json!({
        "accept_then_fail_rate": 1.0, "accept_then_fail_mode": "hang", "fault_budget": 1,
        "hang_ms": 3000, "fault_endpoints": ["insert"]
    });
    for (name, value) in extra.as_object().unwrap() {
        knobs[name] = value.clone();
    }
    knobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_layout_with_its_path_reconciles_a_timed_out_insert_as_submitted() {
    for (layout, path) in [
        ("flat", "/phone_numbers"),
        ("calls", "/data/calls/*/phone_number"),
        ("queue", "/queue/*/destination/number"),
    ] {
        let h = harness(timed_out_insert(json!({"batch_status_layout": layout}))).await;
        let sent = numbers(21, 3);
        h.enqueue(21, &sent).await;
        let submitter = h.submitter(&[
            ("CALLBRIDGE__API__REQUEST_TIMEOUT_MS", "1000"),
            (NUMBERS_PATH, path),
        ]);

        let report = submitter.drain_once().await.unwrap();
        assert_eq!(report.retried, 3, "{layout}: {report:?}");
        h.make_due().await;
        let report = submitter.drain_once().await.unwrap();

        assert_eq!(report.submitted, 3, "{layout}: {report:?}");
        assert_eq!(h.batch_status_requests(21), 1, "{layout}");
        assert_eq!(h.inserts(21), 1, "{layout}: resent");
        h.assert_each_accepted_once(21, &sent);
        assert!(
            h.rows()
                .await
                .iter()
                .all(|row| row.queue_status == "submitted"),
            "{layout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_answering_in_e164_is_matched_by_e164_and_never_resent_by_digits() {
    // The system was sent national numbers and lists them as +91…: digits differ.
    for (number_match, reconciled) in [("e164", "submitted"), ("digits", "needs_review")] {
        let h = harness(timed_out_insert(
            json!({"batch_status_number_prefix": "+91"}),
        ))
        .await;
        let sent = numbers(24, 3);
        h.enqueue(24, &sent).await;
        let submitter = h.submitter(&[
            ("CALLBRIDGE__API__REQUEST_TIMEOUT_MS", "1000"),
            (
                "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBER_MATCH",
                number_match,
            ),
            ("CALLBRIDGE__NUMBERS__DEFAULT_REGION", "IN"),
        ]);

        assert_eq!(
            submitter.drain_once().await.unwrap().retried,
            3,
            "{number_match}"
        );
        h.make_due().await;
        submitter.drain_once().await.unwrap();

        assert_eq!(h.inserts(24), 1, "{number_match}: resent");
        h.assert_each_accepted_once(24, &sent);
        assert!(
            h.rows()
                .await
                .iter()
                .all(|row| row.queue_status == reconciled),
            "{number_match}: {:?}",
            h.rows().await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_wrong_path_rows_go_to_review_naming_the_setting_and_are_never_resent() {
    // The default path is the flat layout's; the system answers in another.
    let h = harness(timed_out_insert(json!({"batch_status_layout": "calls"}))).await;
    let sent = numbers(22, 3);
    h.enqueue(22, &sent).await;
    let submitter = h.submitter(&[("CALLBRIDGE__API__REQUEST_TIMEOUT_MS", "1000")]);

    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    h.make_due().await;
    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.needs_review, 3, "{report:?}");
    for row in h.rows().await {
        assert_eq!(row.queue_status, "needs_review");
        let why = row.last_error.unwrap();
        assert!(why.contains(NUMBERS_PATH), "{why}");
        assert!(!sent.iter().any(|number| why.contains(number.as_str())));
    }
    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);
    assert_eq!(h.inserts(22), 1);
    h.assert_each_accepted_once(22, &sent);
}

/// The insert takes effect and its answer is a 500; batch-status then answers 404 for the
/// batch it holds (not indexed yet) for a minute.
fn hidden_batch() -> serde_json::Value {
    json!({
        "accept_then_fail_rate": 1.0, "accept_then_fail_mode": "error_500", "fault_budget": 1,
        "fault_endpoints": ["insert"], "batch_status_hidden_ms": 60_000
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_404_for_a_held_batch_sends_nothing_twice() {
    let h = harness(hidden_batch()).await;
    let sent = numbers(23, 3);
    h.enqueue(23, &sent).await;
    // The harness configures "none"; this is the setting's own default.
    let mut env = h.environment(&[]);
    env.remove(NOT_FOUND);
    let submitter = Submitter::new(h.pool.clone(), &config_from(env), Readiness::new()).unwrap();

    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    h.make_due().await;
    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.needs_review, 3, "{report:?}");
    assert!(
        h.rows()
            .await
            .iter()
            .all(|row| row.last_error.as_deref().unwrap().contains(NOT_FOUND))
    );
    h.make_due().await;
    assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);
    assert_eq!(h.inserts(23), 1);
    h.assert_each_accepted_once(23, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_404_configured_as_none_a_held_batch_is_accepted_twice() {
    // What the README warns about: this setting is only for a system whose operators
    // confirmed a 404 means "holds none of the batch".
    let h = harness(hidden_batch()).await;
    let sent = numbers(24, 3);
    h.enqueue(24, &sent).await;
    let submitter = h.submitter(&[(NOT_FOUND, "none")]);

    assert_eq!(submitter.drain_once().await.unwrap().retried, 3);
    h.make_due().await;
    let report = submitter.drain_once().await.unwrap();

    assert_eq!(report.submitted, 3, "{report:?}");
    assert_eq!(h.inserts(24), 2);
    let truth = h.sim.ground_truth(Some(24));
    for number in &sent {
        assert_eq!(truth.accepted_count(24, number), 2, "dialled twice");
    }
}
