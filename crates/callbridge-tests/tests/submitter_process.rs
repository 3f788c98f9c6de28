//! The built `callbridge-submitter` binary, killed and stopped for real.

#[path = "submitter_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Harness, harness, numbers};
use serde_json::json;

/// Starts the binary with exactly `env`, its output in a log file named after `label`.
fn start(env: &BTreeMap<String, String>, label: &str) -> (Child, PathBuf) {
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "submitter-{label}-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(callbridge_testkit::binary::workspace_binary(
        "callbridge-submitter",
        "callbridge-submitter",
    ))
    .env_clear()
    .envs(env)
    .env("RUST_LOG", "info")
    .stdout(Stdio::from(file.try_clone().unwrap()))
    .stderr(Stdio::from(file))
    .spawn()
    .unwrap();
    (child, log)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

async fn wait_for(what: &str, log: &PathBuf, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "gave up waiting: {what}\n--- submitter log ---\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn wait_exit(child: &mut Child, log: &PathBuf) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().ok();
    panic!(
        "the submitter did not exit\n--- submitter log ---\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn environment(h: &Harness) -> BTreeMap<String, String> {
    // A short lease, so the restarted process takes over the dead one's rows soon.
    h.environment(&[
        ("CALLBRIDGE__SUBMITTER__LEASE_SECS", "2"),
        ("CALLBRIDGE__API__REQUEST_TIMEOUT_MS", "1500"),
        ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "100"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_a_request_held_then_restarted_every_number_is_accepted_exactly_once() {
    // Only inserts are held (a dispatch at start must not be).
    let h = harness(json!({"fault_endpoints": ["insert"]})).await;
    let sent = numbers(60, 5);
    h.enqueue(60, &sent).await;
    let env = environment(&h);

    h.sim.hold();
    let (mut first, first_log) = start(&env, "killed");
    wait_for("the insert to be in flight", &first_log, async || {
        h.sim.held_now() == 1
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().unwrap();
    for row in h.rows().await {
        // The evidence of the attempt was committed before the request went out.
        assert!(
            row.queue_status == "submitting" && row.attempt_started_at.is_some(),
            "{row:?}"
        );
    }
    // Whatever the held request does now, the restarted process must find out.
    h.sim.release();

    let (mut second, second_log) = start(&env, "restarted");
    wait_for("every row to be submitted", &second_log, async || {
        h.statuses().await.get("submitted") == Some(&5)
    })
    .await;
    signal(&second, "TERM");
    assert!(wait_exit(&mut second, &second_log).await.success());

    h.assert_each_accepted_once(60, &sent);
    let batch = h.batch(60).await.unwrap();
    assert_eq!(batch.total_calls, Some(5));
    assert_eq!(batch.batch_status.as_deref(), Some("submitted"));
    // The restarted process asked batch-status before deciding.
    assert!(h.batch_status_requests(60) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_cleanly() {
    let h = harness(json!({"fault_endpoints": ["insert"]})).await;
    let sent = numbers(61, 3);
    h.enqueue(61, &sent).await;
    let env = h.environment(&[("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "100")]);

    h.sim.hold();
    let (mut child, log) = start(&env, "sigterm");
    wait_for("the insert to be in flight", &log, async || {
        h.sim.held_now() == 1
    })
    .await;
    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    h.sim.release();

    assert!(wait_exit(&mut child, &log).await.success());
    assert_eq!(h.statuses().await.get("submitted"), Some(&3));
    h.assert_each_accepted_once(61, &sent);
}

#[tokio::test]
async fn a_missing_setting_stops_the_binary_with_one_line_naming_it() {
    let output = Command::new(callbridge_testkit::binary::workspace_binary(
        "callbridge-submitter",
        "callbridge-submitter",
    ))
    .env_clear()
    .env("CENTRALIZED_CALLING_API_KEY", "k")
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CENTRALIZED_CALLING_BASE_URL"), "{stderr}");
}
