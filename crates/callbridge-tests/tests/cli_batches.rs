//! `callbridge batches` / `batch <id>`: local counts beside the centralized system's
//! batch-status, against a real database and the simulator.

#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use callbridge_sim::{SimConfig, Simulator};
use common::*;
use serde_json::{Value, json};

/// Two local batches (3 and 2 numbers); the simulator holds only the first.
async fn setup() -> (callbridge_testkit::db::TestDb, Simulator) {
    let (db, _pool) = migrated_db().await;
    let csv = "phone_number\n9876543210\n9876543211\n9876543212\n9876543213\n9876543214\n";
    let file = TempFile::with_contents("two.csv", csv.as_bytes());
    assert_success(
        &callbridge(
            &["enqueue", file.arg(), "--batch-size", "3"],
            &[
                ("CLIENT_CALLING_DB_URL", db.url()),
                ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
            ],
            None,
        )
        .await,
    );
    let sim = Simulator::spawn(SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap())
        .await
        .unwrap();
    // What the submitter would have sent for batch 1.
    let inserted = reqwest::Client::new()
        .post(format!("{}/api/v1/queues/insertdataincallqueue/", sim.base_url()))
        .header("X-API-KEY", API_KEY)
        .json(&json!({"batch_id": 1, "data": [
            {"phone_number": "9876543210"}, {"phone_number": "9876543211"}, {"phone_number": "9876543212"}]}))
        .send()
        .await
        .unwrap();
    assert!(inserted.status().is_success());
    (db, sim)
}

#[tokio::test]
async fn batches_show_local_counts_beside_the_centralized_view() {
    let (db, sim) = setup().await;
    let base_url = sim.base_url();
    let env = [
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY),
    ];

    let json_output = callbridge(&["batches", "--json"], &env, None).await;
    assert_success(&json_output);
    let listed: Value = serde_json::from_str(&stdout(&json_output)).unwrap();
    assert_eq!(listed[0]["batch_id"], 1);
    assert_eq!(listed[0]["batch_status"], "pending");
    assert_eq!(listed[0]["queue"]["rows"], 3);
    assert_eq!(listed[0]["queue"]["waiting"], 3);
    assert_eq!(listed[0]["centralized"]["answer"], "found");
    assert_eq!(listed[0]["centralized"]["total"], 3);
    assert_eq!(listed[0]["centralized"]["batch_status"], "queued");
    assert_eq!(listed[0]["centralized"]["numbers_held"], 3);
    assert_eq!(listed[1]["batch_id"], 2);
    assert_eq!(listed[1]["queue"]["rows"], 2);
    assert_eq!(listed[1]["centralized"]["answer"], "not_found");
    assert!(
        !stdout(&json_output).contains("9876543210"),
        "phone numbers stay out of the view"
    );

    let table = callbridge(&["batches"], &env, None).await;
    assert_success(&table);
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("BATCH") && lines[0].contains("CENTRAL"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("1 ") && lines[1].contains("queued"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2 ") && lines[2].contains("unknown"),
        "{text}"
    );

    let one = callbridge(&["batch", "1"], &env, None).await;
    assert_success(&one);
    assert!(
        stdout(&one).contains("centralized      queued (total 3, queued 3, dispatched 0"),
        "{}",
        stdout(&one)
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_refused_key_is_shown_per_batch_and_named() {
    let (db, sim) = setup().await;
    let base_url = sim.base_url();
    let env = [
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", "wrong-key"),
    ];

    let table = callbridge(&["batches"], &env, None).await;
    assert_success(&table);
    assert!(
        stdout(&table).contains("key refused (401)"),
        "{}",
        stdout(&table)
    );
    let one = callbridge(&["batch", "1"], &env, None).await;
    assert!(
        stdout(&one).contains("Invalid API key): check CENTRALIZED_CALLING_API_KEY"),
        "{}",
        stdout(&one)
    );
    sim.stop().await;
}

#[tokio::test]
async fn without_api_settings_the_local_view_is_shown_and_the_gap_named_once() {
    let (db, sim) = setup().await;

    let output = callbridge(&["batches"], &[("CLIENT_CALLING_DB_URL", db.url())], None).await;

    assert_success(&output);
    assert!(
        stderr(&output).contains("centralized view skipped: Missing required centralized calling configuration: CENTRALIZED_CALLING_BASE_URL"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output).lines().count(), 3, "{}", stdout(&output));
    let local = callbridge(
        &["batches", "--local", "--json"],
        &[("CLIENT_CALLING_DB_URL", db.url())],
        None,
    )
    .await;
    assert!(stderr(&local).is_empty(), "{}", stderr(&local));
    let listed: Value = serde_json::from_str(&stdout(&local)).unwrap();
    assert_eq!(listed[0]["centralized"], Value::Null);
    sim.stop().await;
}

#[tokio::test]
async fn an_unknown_batch_is_one_clear_line() {
    let (db, sim) = setup().await;

    let output = callbridge(
        &["batch", "999", "--local"],
        &[("CLIENT_CALLING_DB_URL", db.url())],
        None,
    )
    .await;

    assert_eq!(
        one_line_failure(&output),
        "error: batch 999 is not in call_batches"
    );
    sim.stop().await;
}
