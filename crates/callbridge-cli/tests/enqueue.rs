//! `callbridge enqueue` as an operator runs it: the built binary, a real CSV, a real
//! migrated database.

mod common;

use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The UK numbers of [`campaign_csv`] are sent in E.164: the national form (the default)
/// carries only numbers of the default region (IN).
fn env(db_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("CLIENT_CALLING_DB_URL", db_url),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("CALLBRIDGE__NUMBERS__SEND_FORM", "e164"),
    ]
}

/// The defaults: region IN, national form.
fn env_national(db_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("CLIENT_CALLING_DB_URL", db_url),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
    ]
}

/// `count` distinct numbers, `+44…` style, one per line, with two custom columns.
fn campaign_csv(count: usize, start: usize) -> String {
    let mut csv = String::from("customer_id,phone_number,segment\n");
    for n in start..start + count {
        csv.push_str(&format!("C{n},+44 7700 {n:06},gold\n"));
    }
    csv
}

async fn queue_rows(pool: &PgPool) -> Vec<(String, i32, Option<Value>, String, String)> {
    sqlx::query_as(
        "SELECT phone_number, batch_id, custom_data, queue_status, campaign_key
           FROM local_call_queue ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn batches(pool: &PgPool) -> Vec<(i32, String, Option<String>, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT b.batch_id, b.accountcode, b.batch_name, b.batch_status,
                (SELECT count(*) FROM local_call_queue q WHERE q.batch_id = b.batch_id)
           FROM call_batches b ORDER BY b.batch_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_campaign_becomes_batches_of_500_in_file_order_and_a_rerun_adds_nothing() {
    let (db, pool) = migrated_db().await;
    let mut csv = campaign_csv(1_201, 0);
    // Two repeats, written differently: normalised, then dropped and reported.
    csv.push_str("again,+44-7700-000005,gold\nagain,(+44) 7700 000006,\n");
    let file = TempFile::with_contents("spring.csv", csv.as_bytes());

    let first = callbridge(&["enqueue", file.arg()], &env(db.url()), None).await;

    assert_success(&first);
    let report = stdout(&first);
    assert!(report.contains("duplicates        2"), "{report}");
    assert!(
        report.contains("enqueued          1201 in 3 batches"),
        "{report}"
    );
    assert!(
        stderr(&first).contains("line 1203: duplicate of line 7"),
        "{}",
        stderr(&first)
    );
    let batch_rows = batches(&pool).await;
    let sizes: Vec<i64> = batch_rows.iter().map(|batch| batch.4).collect();
    assert_eq!(sizes, [500, 500, 201]);
    for (_, accountcode, name, status, _) in &batch_rows {
        assert_eq!(accountcode, ACCOUNT_CODE);
        assert!(
            name.as_deref().unwrap().starts_with("spring.csv (sha256:"),
            "{name:?}"
        );
        assert_eq!(status.as_deref(), Some("pending"));
    }
    let rows = queue_rows(&pool).await;
    assert_eq!(rows.len(), 1_201);
    // File order: the first 500 numbers are the first batch, and so on.
    assert_eq!(rows[0].0, "+447700000000");
    assert_eq!(rows[0].1, batch_rows[0].0);
    assert_eq!(rows[500].0, "+447700000500");
    assert_eq!(rows[500].1, batch_rows[1].0);
    assert_eq!(
        rows[0].2,
        Some(json!({"customer_id": "C0", "segment": "gold"}))
    );
    assert!(
        rows.iter()
            .all(|row| row.3 == "pending" && row.4.starts_with("sha256:"))
    );

    // The same numbers again, renamed and reformatted: the same campaign, nothing added.
    let reformatted = TempFile::with_contents(
        "copy.csv",
        campaign_csv(1_201, 0).replace(' ', "").as_bytes(),
    );
    let again = callbridge(&["enqueue", reformatted.arg()], &env(db.url()), None).await;
    assert_success(&again);
    assert!(
        stdout(&again).contains("already enqueued  1201"),
        "{}",
        stdout(&again)
    );
    assert!(
        stdout(&again).contains("enqueued          0 (nothing new)"),
        "{}",
        stdout(&again)
    );
    assert_eq!(queue_rows(&pool).await.len(), 1_201);
    assert_eq!(batches(&pool).await.len(), 3);
}

#[tokio::test]
async fn custom_data_with_quotes_commas_and_newlines_is_stored_as_written() {
    let (db, pool) = migrated_db().await;
    let csv = "phone_number,note,empty\n9876543210,\"say \"\"hi\"\", then\nbye\",\n9876543211,,\n";
    let file = TempFile::with_contents("notes.csv", csv.as_bytes());

    assert_success(&callbridge(&["enqueue", file.arg()], &env(db.url()), None).await);

    let rows = queue_rows(&pool).await;
    assert_eq!(rows[0].2, Some(json!({"note": "say \"hi\", then\nbye"})));
    assert_eq!(
        rows[1].2, None,
        "a row whose other cells are empty has no custom_data"
    );
}

#[tokio::test]
async fn invalid_numbers_stop_the_enqueue_with_their_lines_unless_skip_invalid() {
    let (db, pool) = migrated_db().await;
    let csv = "phone_number\n9876543210\n12345\n9876543211\n98765x43210\n";
    let file = TempFile::with_contents("bad.csv", csv.as_bytes());

    let refused = callbridge(&["enqueue", file.arg()], &env_national(db.url()), None).await;

    let message = one_line_failure(&refused);
    assert!(
        message.contains("2 invalid phone numbers (lines 3, 5)"),
        "{message}"
    );
    assert!(message.contains("--skip-invalid"), "{message}");
    assert!(
        stderr(&refused)
            .contains("line 3: invalid phone_number: not a valid number of country +91"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !stderr(&refused).contains("12345"),
        "the bad value is not echoed"
    );
    assert!(queue_rows(&pool).await.is_empty(), "nothing was inserted");
    assert!(batches(&pool).await.is_empty());

    let skipped = callbridge(
        &["enqueue", file.arg(), "--skip-invalid"],
        &env_national(db.url()),
        None,
    )
    .await;
    assert_success(&skipped);
    let numbers: Vec<String> = queue_rows(&pool)
        .await
        .into_iter()
        .map(|row| row.0)
        .collect();
    // Sent in the national form, as the integration guide shows; kept in E.164 beside.
    assert_eq!(numbers, ["9876543210", "9876543211"]);
    let e164: Vec<String> =
        sqlx::query_scalar("SELECT phone_e164 FROM local_call_queue ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(e164, ["+919876543210", "+919876543211"]);
}

#[tokio::test]
async fn a_named_campaign_grows_by_its_new_numbers_in_a_new_batch() {
    let (db, pool) = migrated_db().await;
    let week1 = TempFile::with_contents("week1.csv", campaign_csv(3, 0).as_bytes());
    let week2 = TempFile::with_contents("week2.csv", campaign_csv(5, 0).as_bytes());
    let args = |file: &TempFile| {
        vec![
            "enqueue".to_owned(),
            file.arg().to_owned(),
            "--campaign".into(),
            "retention".into(),
        ]
    };

    let first = args(&week1);
    assert_success(
        &callbridge(
            &first.iter().map(String::as_str).collect::<Vec<_>>(),
            &env(db.url()),
            None,
        )
        .await,
    );
    let second = args(&week2);
    let grown = callbridge(
        &second.iter().map(String::as_str).collect::<Vec<_>>(),
        &env(db.url()),
        None,
    )
    .await;

    assert_success(&grown);
    assert!(
        stdout(&grown).contains("already enqueued  3"),
        "{}",
        stdout(&grown)
    );
    let batch_rows = batches(&pool).await;
    assert_eq!(
        batch_rows.iter().map(|batch| batch.4).collect::<Vec<_>>(),
        [3, 2]
    );
    assert!(
        batch_rows
            .iter()
            .all(|batch| batch.2.as_deref() == Some("retention"))
    );
    // The same numbers under another campaign are another campaign's calls.
    let other = callbridge(
        &["enqueue", week1.arg(), "--campaign", "winback"],
        &env(db.url()),
        None,
    )
    .await;
    assert_success(&other);
    assert_eq!(queue_rows(&pool).await.len(), 8);
}

#[tokio::test]
async fn concurrent_enqueues_of_one_campaign_store_it_once_without_empty_batches() {
    let (db, pool) = migrated_db().await;
    let file = TempFile::with_contents("race.csv", campaign_csv(1_200, 0).as_bytes());
    let environment = env(db.url());
    let args = ["enqueue", file.arg()];

    let runs =
        futures::future::join_all((0..4).map(|_| callbridge(&args, &environment, None))).await;

    for run in &runs {
        assert_success(run);
    }
    assert_eq!(queue_rows(&pool).await.len(), 1_200);
    let sizes: Vec<i64> = batches(&pool).await.iter().map(|batch| batch.4).collect();
    assert_eq!(sizes, [500, 500, 200]);
}

#[tokio::test]
async fn batch_size_is_bounded_by_the_apis_1000_and_chosen_per_run() {
    let (db, pool) = migrated_db().await;
    let file = TempFile::with_contents("sized.csv", campaign_csv(250, 0).as_bytes());

    let refused = callbridge(
        &["enqueue", file.arg(), "--batch-size", "1001"],
        &env(db.url()),
        None,
    )
    .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("1001 is not in 1..=1000"),
        "{}",
        stderr(&refused)
    );

    assert_success(
        &callbridge(
            &["enqueue", file.arg(), "--batch-size", "100", "--json"],
            &env(db.url()),
            None,
        )
        .await,
    );
    let sizes: Vec<i64> = batches(&pool).await.iter().map(|batch| batch.4).collect();
    assert_eq!(sizes, [100, 100, 50]);
}

#[tokio::test]
async fn new_batch_ids_come_from_the_shared_allocator_and_skip_ids_an_application_took() {
    let (db, pool) = migrated_db().await;
    // An application's own batch and its own queue rows, under ids it chose itself.
    sqlx::query("INSERT INTO call_batches (batch_id, accountcode) VALUES (1, 'OTHER')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO local_call_queue (phone_number, batch_id) VALUES ('9800000000', 2)")
        .execute(&pool)
        .await
        .unwrap();
    let file = TempFile::with_contents("next.csv", campaign_csv(2, 0).as_bytes());

    let output = callbridge(&["enqueue", file.arg(), "--json"], &env(db.url()), None).await;

    assert_success(&output);
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["batches"], json!([{"batch_id": 3, "numbers": 2}]));
    assert_eq!(report["enqueued"], 2);
    // The allocator moved past it: the next id anyone gets is higher.
    let next: i32 = sqlx::query_scalar("SELECT callbridge_allocate_batch_ids(1)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(next > 3, "{next}");
}

#[tokio::test]
async fn without_an_account_code_nothing_is_read_and_the_variable_is_named() {
    let (db, _pool) = migrated_db().await;
    let file = TempFile::with_contents("a.csv", campaign_csv(2, 0).as_bytes());

    let output = callbridge(
        &["enqueue", file.arg()],
        &[("CLIENT_CALLING_DB_URL", db.url())],
        None,
    )
    .await;

    let message = one_line_failure(&output);
    assert!(
        message.contains("CENTRALIZED_CALLING_ACCOUNT_CODE"),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_without_a_phone_number_column_is_one_clear_line() {
    let (db, _pool) = migrated_db().await;
    let file = TempFile::with_contents("a.csv", b"number\n9876543210\n");

    let output = callbridge(&["enqueue", file.arg()], &env(db.url()), None).await;

    let message = one_line_failure(&output);
    assert!(message.contains("no phone_number column"), "{message}");
}

/// How many times Postgres has analysed `table` by request (autovacuum's runs are counted
/// apart, in `autoanalyze_count`).
async fn analyze_count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A campaign large enough that its COPY travels in several chunks (of 1 MiB).
const LARGE_CAMPAIGN: usize = 60_000;

#[tokio::test]
async fn a_large_campaign_is_analysed_after_commit_and_wakes_the_submitters_once() {
    let (db, pool) = migrated_db().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("callbridge_queue").await.unwrap();
    let large = TempFile::with_contents("large.csv", campaign_csv(LARGE_CAMPAIGN, 0).as_bytes());

    assert_success(&callbridge(&["enqueue", large.arg()], &env(db.url()), None).await);

    // The submitter plans its claim by these statistics right away, not after autovacuum's
    // next round: they must count the new rows.
    assert_eq!(analyze_count(&pool, "local_call_queue").await, 1);
    assert_eq!(analyze_count(&pool, "call_batches").await, 1);
    let counted: f32 = sqlx::query_scalar(
        "SELECT reltuples FROM pg_class WHERE oid = 'local_call_queue'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counted, LARGE_CAMPAIGN as f32);

    // One COPY in one transaction: idle submitters are woken once.
    // Notifications arrive in commit order, so the marker sent afterwards comes last.
    sqlx::query("SELECT pg_notify('callbridge_queue', 'marker')")
        .execute(&pool)
        .await
        .unwrap();
    let mut wake_ups = 0;
    loop {
        let notification =
            tokio::time::timeout(std::time::Duration::from_secs(60), listener.recv())
                .await
                .expect("the marker notification arrives")
                .unwrap();
        if notification.payload() == "marker" {
            break;
        }
        wake_ups += 1;
    }
    assert_eq!(wake_ups, 1);

    // A few numbers more leave the statistics as good as they were: no ANALYZE.
    let small = TempFile::with_contents("small.csv", campaign_csv(10, 0).as_bytes());
    assert_success(
        &callbridge(
            &["enqueue", small.arg(), "--campaign", "small"],
            &env(db.url()),
            None,
        )
        .await,
    );
    assert_eq!(analyze_count(&pool, "local_call_queue").await, 1);
}

#[tokio::test]
async fn a_grown_campaign_fills_whole_batches_with_its_new_numbers_in_file_order() {
    let (db, pool) = migrated_db().await;
    let number = |n: usize| format!("+447700{n:06}");
    // Week 1: every other number. Week 2: all of them and 10,000 more, so the numbers it
    // adds are scattered through the whole file.
    let mut week1 = String::from("phone_number\n");
    for n in (0..2 * LARGE_CAMPAIGN).step_by(2) {
        week1.push_str(&format!("{}\n", number(n)));
    }
    let week2_numbers = 2 * LARGE_CAMPAIGN + 10_000;
    let mut week2 = String::from("phone_number\n");
    for n in 0..week2_numbers {
        week2.push_str(&format!("{}\n", number(n)));
    }
    week2.push_str(&format!("{}\nnot a number\n", number(7)));
    let week1 = TempFile::with_contents("week1.csv", week1.as_bytes());
    let week2 = TempFile::with_contents("week2.csv", week2.as_bytes());
    let enqueue = |file: &TempFile| {
        [
            "enqueue".to_owned(),
            file.arg().to_owned(),
            "--campaign".to_owned(),
            "big".to_owned(),
            "--skip-invalid".to_owned(),
            "--json".to_owned(),
        ]
    };
    let first = enqueue(&week1);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_success(&callbridge(&first, &env(db.url()), None).await);

    let second = enqueue(&week2);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let grown = callbridge(&second, &env(db.url()), None).await;

    assert_success(&grown);
    let report: Value = serde_json::from_str(&stdout(&grown)).unwrap();
    let added: Vec<String> = (0..week2_numbers)
        .filter(|n| n % 2 == 1 || *n >= 2 * LARGE_CAMPAIGN)
        .map(number)
        .collect();
    assert_eq!(report["rows_read"], week2_numbers + 2);
    assert_eq!(report["invalid"], 1);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["already_enqueued"], LARGE_CAMPAIGN);
    assert_eq!(report["enqueued"], added.len());
    let week1_batches = LARGE_CAMPAIGN / 500;
    let first_new_batch = week1_batches as i32 + 1;
    let expected_batches: Vec<Value> = (0..added.len() / 500)
        .map(|index| json!({"batch_id": first_new_batch + index as i32, "numbers": 500}))
        .collect();
    assert_eq!(report["batches"], json!(expected_batches));

    let stored: Vec<(String, i32)> = sqlx::query_as(
        "SELECT phone_number, batch_id FROM local_call_queue
          WHERE batch_id >= $1 ORDER BY id",
    )
    .bind(first_new_batch)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<(String, i32)> = added
        .into_iter()
        .enumerate()
        .map(|(position, number)| (number, first_new_batch + (position / 500) as i32))
        .collect();
    assert!(
        stored == expected,
        "the added numbers are not in file order, 500 to a batch"
    );
    let sizes: Vec<i64> = batches(&pool).await.iter().map(|batch| batch.4).collect();
    assert!(sizes.iter().all(|&size| size == 500), "{sizes:?}");
}

#[tokio::test]
async fn a_pipe_is_refused_because_the_file_is_read_twice() {
    let (db, pool) = migrated_db().await;

    let output = callbridge(
        &["enqueue", "/dev/stdin"],
        &env(db.url()),
        Some(&campaign_csv(2, 0)),
    )
    .await;

    let message = one_line_failure(&output);
    assert!(message.contains("is not a regular file"), "{message}");
    assert!(queue_rows(&pool).await.is_empty());
}
