//! `callbridge enqueue` with rules, `callbridge campaign …` and `callbridge queue …`
//! against a real database (and, for the repairs, the simulator and a real submitter):
//! each command does what it says, prints `--json`, records who did it, and fails in one
//! line that says what to do.

#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use callbridge_runtime::config::Settings;
use callbridge_sim::{SimConfig, Simulator};
use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

fn env(db: &callbridge_testkit::db::TestDb) -> Vec<(&str, &str)> {
    vec![
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("USER", "os-user"),
    ]
}

fn json_of(output: &std::process::Output) -> Value {
    assert_success(output);
    serde_json::from_str(&stdout(output)).unwrap_or_else(|error| {
        panic!("{error}: {}", stdout(output));
    })
}

const RULES: [&str; 10] = [
    "--start-at",
    "2026-03-02T09:00:00-05:00",
    "--window",
    "08:00-21:00",
    "--days",
    "mon-sat",
    "--time-zone",
    "America/New_York",
    "--max-per-minute",
    "600",
];

/// (action, actor, rows_affected) of every recorded action, oldest first.
async fn actions(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT action, actor, rows_affected FROM operator_actions ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn enqueue_with_rules_creates_the_campaign_and_a_second_enqueue_adds_nothing() {
    let (db, pool) = migrated_db().await;
    let csv = "phone_number,timezone,name\n9876543210,Asia/Kolkata,A\n9876543211,,B\n9876543212,America/Chicago,C\n";
    let file = TempFile::with_contents("spring.csv", csv.as_bytes());
    let mut args = vec!["enqueue", file.arg(), "--campaign", "spring", "--json"];
    args.extend(RULES);

    let first = json_of(&callbridge(&args, &env(&db), None).await);
    let second = json_of(&callbridge(&args, &env(&db), None).await);

    assert_eq!(first["campaign"], "spring");
    assert_eq!(first["campaign_created"], true);
    assert_eq!(first["enqueued"], 3);
    assert_eq!(second["campaign_created"], false);
    assert_eq!(second["enqueued"], 0);
    assert_eq!(second["already_enqueued"], 3);
    let campaign: (
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        String,
        String,
        i16,
        String,
        Option<i32>,
    ) = sqlx::query_as(
        "SELECT status, start_at, window_start::TEXT, window_end::TEXT, window_days, time_zone,
                    max_per_minute
               FROM campaigns WHERE name = 'spring'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        campaign,
        (
            "active".into(),
            Some("2026-03-02T14:00:00Z".parse().unwrap()),
            "08:00:00".into(),
            "21:00:00".into(),
            0b011_1111,
            "America/New_York".into(),
            Some(600)
        )
    );
    let rows: Vec<(String, Option<String>, bool, bool)> = sqlx::query_as(
        "SELECT q.phone_number, q.time_zone,
                q.campaign_id = c.id, b.campaign_id = c.id
           FROM local_call_queue q
           JOIN campaigns c ON c.name = 'spring'
           JOIN call_batches b ON b.batch_id = q.batch_id
          ORDER BY q.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("9876543210".into(), Some("Asia/Kolkata".into()), true, true),
            ("9876543211".into(), None, true, true),
            (
                "9876543212".into(),
                Some("America/Chicago".into()),
                true,
                true
            ),
        ]
    );
    assert_eq!(
        actions(&pool).await,
        vec![
            ("campaign.enqueue".into(), "os-user".into(), 3),
            ("campaign.enqueue".into(), "os-user".into(), 0),
        ]
    );

    // Other rules for the same campaign are `campaign set`'s, not a second enqueue's.
    let other = callbridge(
        &[
            "enqueue",
            file.arg(),
            "--campaign",
            "spring",
            "--max-per-minute",
            "60",
        ],
        &env(&db),
        None,
    )
    .await;
    let line = one_line_failure(&other);
    assert!(line.contains("callbridge campaign set spring"), "{line}");

    // A row whose zone is not an IANA name stops the enqueue, with its line.
    let bad = TempFile::with_contents("bad.csv", b"phone_number,timezone\n9876543219,Eastern\n");
    let refused = callbridge(
        &["enqueue", bad.arg(), "--campaign", "autumn"],
        &env(&db),
        None,
    )
    .await;
    let line = one_line_failure(&refused);
    assert!(line.contains("1 invalid row (line 2)"), "{line}");
    assert!(stderr(&refused).contains("line 2: invalid timezone \"Eastern\""));
}

#[tokio::test]
async fn campaign_commands_show_figures_as_json_and_record_every_control_with_its_actor() {
    let (db, pool) = migrated_db().await;
    let file = TempFile::with_contents(
        "spring.csv",
        b"phone_number\n9876543210\n9876543211\n9876543212\n",
    );
    assert_success(
        &callbridge(
            &["enqueue", file.arg(), "--campaign", "spring"],
            &env(&db),
            None,
        )
        .await,
    );

    let listed = json_of(&callbridge(&["campaign", "list", "--json"], &env(&db), None).await);
    let shown =
        json_of(&callbridge(&["campaign", "show", "spring", "--json"], &env(&db), None).await);
    for field in [
        "name",
        "status",
        "numbers",
        "waiting",
        "submitted",
        "reached",
        "failed",
        "cancelled",
        "suppressed",
        "attempts",
    ] {
        assert!(listed[0].get(field).is_some(), "list --json lacks {field}");
        assert!(shown.get(field).is_some(), "show --json lacks {field}");
    }
    assert_eq!(shown["name"], "spring");
    assert_eq!(shown["status"], "active");
    assert_eq!(
        (shown["numbers"].clone(), shown["waiting"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(shown["recent_actions"][0]["action"], "campaign.enqueue");

    let paused = json_of(
        &callbridge(
            &["campaign", "pause", "spring", "--actor", "alice", "--json"],
            &env(&db),
            None,
        )
        .await,
    );
    assert_eq!(paused["action"], "campaign.pause");
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["rows_affected"], 3);
    let set = callbridge(
        &[
            "campaign",
            "set",
            "spring",
            "--window",
            "09:00-17:00",
            "--actor",
            "bob",
        ],
        &env(&db),
        None,
    )
    .await;
    assert_success(&set);
    assert!(
        stdout(&set).contains("window - -> 09:00-17:00"),
        "{}",
        stdout(&set)
    );
    let resumed = callbridge(&["campaign", "resume", "spring"], &env(&db), None).await;
    assert_success(&resumed);
    assert!(
        stdout(&resumed).starts_with("campaign spring active"),
        "{}",
        stdout(&resumed)
    );
    let table = callbridge(&["campaign", "list"], &env(&db), None).await;
    assert_success(&table);
    assert!(
        stdout(&table)
            .lines()
            .nth(1)
            .unwrap()
            .contains("09:00-17:00 all"),
        "{}",
        stdout(&table)
    );
    let cancelled =
        json_of(&callbridge(&["campaign", "cancel", "spring", "--json"], &env(&db), None).await);
    assert_eq!(cancelled["rows_affected"], 3);
    assert_eq!(cancelled["status"], "cancelled");

    assert_eq!(
        actions(&pool).await,
        vec![
            ("campaign.enqueue".into(), "os-user".into(), 3),
            ("campaign.pause".into(), "alice".into(), 3),
            ("campaign.set".into(), "bob".into(), 3),
            ("campaign.resume".into(), "os-user".into(), 3),
            ("campaign.cancel".into(), "os-user".into(), 3),
        ]
    );
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT queue_status FROM local_call_queue")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["cancelled"]);
    let batches = json_of(&callbridge(&["batches", "--local", "--json"], &env(&db), None).await);
    assert_eq!(batches[0]["batch_status"], "cancelled");
    assert_eq!(batches[0]["queue"]["cancelled"], 3);

    // Errors: one line, saying what to do.
    for (args, expected) in [
        (
            vec!["campaign", "resume", "spring"],
            "error: campaign \"spring\" is cancelled: a cancelled campaign cannot be resumed; enqueue its numbers into a new campaign",
        ),
        (
            vec!["campaign", "pause", "winter"],
            "error: no campaign is named \"winter\": `callbridge campaign list` shows the campaigns",
        ),
        (
            vec!["campaign", "set", "spring", "--window", "9-5"],
            "error: --window: calling window \"9-5\" is not HH:MM-HH:MM (for example 08:00-21:00)",
        ),
        (
            vec![
                "queue",
                "retry",
                "--campaign",
                "spring",
                "--status",
                "needs_review",
            ],
            "error: queue retry takes failed rows only (--status failed), not needs_review: their outcome is unknown, settle them with `callbridge queue resolve`",
        ),
    ] {
        let output = callbridge(&args, &env(&db), None).await;
        assert_eq!(one_line_failure(&output), expected, "{args:?}");
    }
    assert_eq!(
        actions(&pool).await.len(),
        5,
        "a refused command records nothing"
    );
}

/// Runs a submitter against `sim` until `done` holds (or 30 s pass), then stops it.
async fn submit_until(
    db: &callbridge_testkit::db::TestDb,
    sim: &Simulator,
    pool: &PgPool,
    done: &'static str,
) {
    let base_url = sim.base_url();
    let settings = Settings::load_from([
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("SUBMITTER_BIND", "127.0.0.1:0"),
        ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "100"),
    ])
    .unwrap();
    let shutdown = CancellationToken::new();
    let submitter = callbridge_submitter::Application::build(&settings.submitter().unwrap())
        .await
        .unwrap();
    let submitting = tokio::spawn(submitter.run_until_stopped(shutdown.clone()));
    let mut reached = false;
    for _ in 0..300 {
        reached = sqlx::query_scalar::<_, bool>(done)
            .fetch_one(pool)
            .await
            .unwrap();
        if reached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    submitting.await.unwrap().unwrap();
    assert!(reached, "the submitter never reached: {done}");
}

/// How many times the simulator accepted each number, by number.
fn accepted(sim: &Simulator) -> std::collections::BTreeMap<String, u64> {
    let truth = sim.ground_truth(None);
    let mut counts = std::collections::BTreeMap::new();
    for batch in truth.batches.values() {
        for (number, count) in &batch.accepted {
            *counts.entry(number.clone()).or_insert(0) += u64::from(*count);
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_retry_and_resolve_move_the_right_rows_and_nothing_is_sent_twice() {
    let (db, pool) = migrated_db().await;
    let sim = Simulator::spawn(SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap())
        .await
        .unwrap();
    let base_url = sim.base_url();
    let mut cli_env = env(&db);
    cli_env.extend([
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY),
    ]);
    // Batch 1: two numbers the submitter gave up on. Batch 2: two numbers whose outcome
    // is unknown, of which the centralized system holds the first only.
    let file = TempFile::with_contents(
        "spring.csv",
        b"phone_number\n9876543210\n9876543211\n9876543212\n9876543213\n",
    );
    assert_success(
        &callbridge(
            &[
                "enqueue",
                file.arg(),
                "--campaign",
                "spring",
                "--batch-size",
                "2",
            ],
            &cli_env,
            None,
        )
        .await,
    );
    sqlx::query(
        "UPDATE local_call_queue
            SET queue_status = CASE batch_id WHEN 1 THEN 'failed' ELSE 'needs_review' END,
                retry_count = CASE batch_id WHEN 1 THEN 5 ELSE 1 END,
                last_error = 'test: as the submitter left it',
                attempt_started_at = CASE batch_id WHEN 2 THEN now() END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let inserted = reqwest::Client::new()
        .post(format!("{base_url}/api/v1/queues/insertdataincallqueue/"))
        .header("X-API-KEY", API_KEY)
        .json(&json!({"batch_id": 2, "data": [{"phone_number": "9876543212"}]}))
        .send()
        .await
        .unwrap();
    assert!(inserted.status().is_success());
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM local_call_queue ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();

    // Refused: a row that is not needs_review, named among others. Nothing changes.
    let mixed = format!("{},{}", ids[0], ids[2]);
    let refused = callbridge(
        &["queue", "resolve", &mixed, "--as", "pending"],
        &cli_env,
        None,
    )
    .await;
    let line = one_line_failure(&refused);
    assert!(
        line.contains(&format!("{} (failed)", ids[0])) && line.contains("nothing was changed"),
        "{line}"
    );

    let retried = json_of(
        &callbridge(
            &[
                "queue",
                "retry",
                "--campaign",
                "spring",
                "--status",
                "failed",
                "--json",
                "--actor",
                "alice",
            ],
            &cli_env,
            None,
        )
        .await,
    );
    assert_eq!(retried["rows_affected"], 2);
    let held = callbridge(
        &[
            "queue",
            "resolve",
            &ids[2].to_string(),
            "--as",
            "submitted",
            "--actor",
            "alice",
        ],
        &cli_env,
        None,
    )
    .await;
    assert_success(&held);
    assert!(
        stdout(&held).contains("batch 2, centralized system: queued (total 1, numbers held 1"),
        "the batch-status is shown before resolving: {}",
        stdout(&held)
    );
    let not_held = json_of(
        &callbridge(
            &[
                "queue",
                "resolve",
                &ids[3].to_string(),
                "--as",
                "pending",
                "--json",
            ],
            &cli_env,
            None,
        )
        .await,
    );
    assert_eq!(not_held["rows_affected"], 1);
    assert_eq!(not_held["detail"]["centralized"]["2"]["answer"], "found");

    submit_until(
        &db,
        &sim,
        &pool,
        "SELECT count(*) = 4 FROM local_call_queue WHERE queue_status = 'submitted'",
    )
    .await;

    let counts = accepted(&sim);
    assert_eq!(
        counts,
        [
            ("9876543210".to_owned(), 1),
            ("9876543211".to_owned(), 1),
            ("9876543212".to_owned(), 1),
            ("9876543213".to_owned(), 1),
        ]
        .into_iter()
        .collect(),
        "every number accepted exactly once"
    );
    let totals: Vec<Option<i32>> =
        sqlx::query_scalar("SELECT total_calls FROM call_batches ORDER BY batch_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(totals, [Some(2), Some(2)]);
    let recorded: Vec<(String, String, i64)> = actions(&pool).await.split_off(1);
    assert_eq!(
        recorded,
        vec![
            ("queue.retry".into(), "alice".into(), 2),
            ("queue.resolve".into(), "alice".into(), 1),
            ("queue.resolve".into(), "os-user".into(), 1),
        ]
    );
    sim.stop().await;
}
