//! The whole loop, every component real: the demo CSV → `callbridge enqueue` →
//! submitter → simulator → signed callbacks (duplicates and reordering on) → ingress →
//! RabbitMQ → persister → Postgres. What Postgres ends with must equal what the
//! simulator says happened, call by call and batch by batch.

#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use callbridge_runtime::config::Settings;
use callbridge_sim::{SimConfig, Simulator};
use cli_ingress::Ingress;
use common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const DEMO_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/demo-campaign.csv"
);
/// Distinct numbers in the demo CSV (it also holds 3 repeats, written differently).
const DEMO_NUMBERS: usize = 1_000;

#[derive(Debug, sqlx::FromRow)]
struct CallLog {
    call_id: String,
    batch_id: Option<i32>,
    phone_number: String,
    call_status: String,
    accountcode: String,
}

#[derive(Debug, sqlx::FromRow)]
struct BatchCounts {
    batch_id: i32,
    total_calls: Option<i32>,
    completed_calls: Option<i32>,
    failed_calls: Option<i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_number_is_called_once_and_postgres_ends_equal_to_the_simulators_truth() {
    let (db, pool) = migrated_db().await;
    let vhost = callbridge_testkit::vhost::TestVhost::new().await;
    let ingress = Ingress::spawn(&vhost.amqp_url(), &[CALLBACK_SECRET], true, None).await;
    let sim = Simulator::spawn(SimConfig::for_tests(&ingress.url).unwrap())
        .await
        .unwrap();
    sim.patch_knobs(&json!({"duplicate_rate": 0.3, "reorder_rate": 0.3}))
        .unwrap();

    let base_url = sim.base_url();
    let amqp_url = vhost.amqp_url();
    let settings = Settings::load_from([
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("RABBITMQ_URL", amqp_url.as_str()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("PERSISTER_BIND", "127.0.0.1:0"),
        ("SUBMITTER_BIND", "127.0.0.1:0"),
        ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "200"),
    ])
    .unwrap();
    let shutdown = CancellationToken::new();
    let persister = callbridge_persister::Persister::build(settings.persister().unwrap())
        .await
        .unwrap();
    let persisting = tokio::spawn(persister.run_until_stopped(shutdown.clone()));
    let submitter = callbridge_submitter::Application::build(&settings.submitter().unwrap())
        .await
        .unwrap();
    let submitting = tokio::spawn(submitter.run_until_stopped(shutdown.clone()));

    let enqueued = callbridge(
        &["enqueue", DEMO_CSV],
        &[
            ("CLIENT_CALLING_DB_URL", db.url()),
            ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ],
        None,
    )
    .await;
    assert_success(&enqueued);
    assert!(
        stdout(&enqueued).contains("enqueued          1000 in 2 batches"),
        "{}",
        stdout(&enqueued)
    );
    assert!(
        stdout(&enqueued).contains("duplicates        3"),
        "{}",
        stdout(&enqueued)
    );

    // Done when every batch is completed; a minute is far more than it needs.
    let mut statuses = Vec::new();
    for _ in 0..600 {
        statuses = sqlx::query_scalar::<_, Option<String>>(
            "SELECT batch_status FROM call_batches ORDER BY batch_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if statuses.len() == 2
            && statuses
                .iter()
                .all(|status| status.as_deref() == Some("completed"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        statuses,
        [Some("completed".to_owned()), Some("completed".to_owned())]
    );
    assert!(
        sim.wait_idle(Duration::from_secs(60)).await,
        "callbacks still in flight"
    );
    let truth = sim.ground_truth(None);

    // The simulator really sent duplicates and reordered calls.
    assert!(truth.totals.duplicates_sent > 0, "{:?}", truth.totals);
    assert!(truth.calls.iter().any(|call| call.reordered));
    assert!(
        truth.calls.iter().all(|call| call.all_acknowledged()),
        "every callback acknowledged"
    );

    // No number was accepted twice, and every number of the campaign was accepted.
    let accepted: usize = truth
        .batches
        .values()
        .flat_map(|batch| batch.accepted.values())
        .map(|&count| count as usize)
        .sum();
    assert_eq!(accepted, DEMO_NUMBERS);
    for (batch_id, batch) in &truth.batches {
        for (number, count) in &batch.accepted {
            assert_eq!(
                *count, 1,
                "{number} accepted {count} times in batch {batch_id}"
            );
        }
    }

    // Every call_logs row equals the simulator's outcome for that call.
    let logs: Vec<CallLog> = sqlx::query_as(
        "SELECT call_id, batch_id, phone_number, call_status, accountcode FROM call_logs",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(logs.len(), truth.calls.len());
    let by_call_id: BTreeMap<&str, &CallLog> =
        logs.iter().map(|log| (log.call_id.as_str(), log)).collect();
    for call in &truth.calls {
        let log = by_call_id
            .get(call.call_id.as_str())
            .unwrap_or_else(|| panic!("no call_logs row for {}", call.call_id));
        let outcome = call.outcome.expect("every call was dispatched").status();
        assert_eq!(log.call_status, outcome.as_str(), "{}", call.call_id);
        assert_eq!(log.phone_number, call.phone_number);
        assert_eq!(log.batch_id, Some(call.batch_id));
        assert_eq!(log.accountcode, ACCOUNT_CODE);
    }

    // The batch counters equal the simulator's counts.
    let batches: Vec<BatchCounts> = sqlx::query_as(
        "SELECT batch_id, total_calls, completed_calls, failed_calls FROM call_batches ORDER BY batch_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for BatchCounts {
        batch_id,
        total_calls: total,
        completed_calls: completed,
        failed_calls: failed,
    } in batches
    {
        let calls: Vec<_> = truth.calls_of_batch(batch_id).collect();
        let completed_in_sim = calls
            .iter()
            .filter(|call| call.outcome.unwrap().status().counts_as_completed())
            .count();
        assert_eq!(total, Some(calls.len() as i32), "batch {batch_id}");
        assert_eq!(completed, Some(completed_in_sim as i32), "batch {batch_id}");
        assert_eq!(
            failed,
            Some((calls.len() - completed_in_sim) as i32),
            "batch {batch_id}"
        );
    }
    let queue: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT queue_status FROM local_call_queue")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(queue, ["submitted"]);

    shutdown.cancel();
    persisting.await.unwrap().unwrap();
    submitting.await.unwrap().unwrap();
    sim.stop().await;
}
