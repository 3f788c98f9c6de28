//! `callbridge dnc` as an operator runs it: the built binary, a migrated database. Every
//! change lands in `do_not_call` in E.164 and is recorded in `operator_actions`; an
//! import reports its bad lines by number and stores nothing unless told to skip them;
//! `enqueue` stores a listed number `suppressed`, in no batch, and says which lines.

mod common;

use common::*;
use serde_json::Value;
use sqlx::PgPool;

fn env(db_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("CLIENT_CALLING_DB_URL", db_url),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
    ]
}

async fn run_json(args: &[&str], db_url: &str) -> Value {
    let output = callbridge(args, &env(db_url), None).await;
    assert_success(&output);
    serde_json::from_str(&stdout(&output)).unwrap()
}

async fn listed(pool: &PgPool) -> Vec<(String, Option<String>, String)> {
    sqlx::query_as("SELECT phone_number, reason, source FROM do_not_call ORDER BY phone_number")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn actions(pool: &PgPool) -> Vec<(String, String, i64, Value)> {
    sqlx::query_as("SELECT action, actor, rows_affected, target FROM operator_actions ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn add_check_list_and_remove_are_normalised_and_audited() {
    let (db, pool) = migrated_db().await;

    let added = run_json(
        &[
            "dnc",
            "add",
            "98765 43210",
            "+44 20 7183 8750",
            "+919876543210",
            "--reason",
            "opt-out by phone",
            "--actor",
            "carol",
            "--json",
        ],
        db.url(),
    )
    .await;
    assert_eq!(added["rows_affected"], 2, "{added}");
    assert_eq!(added["detail"]["already_listed"], 0, "{added}");
    assert_eq!(
        listed(&pool).await,
        [
            (
                "+442071838750".to_owned(),
                Some("opt-out by phone".to_owned()),
                "cli".to_owned()
            ),
            (
                "+919876543210".to_owned(),
                Some("opt-out by phone".to_owned()),
                "cli".to_owned()
            ),
        ]
    );

    let again = run_json(&["dnc", "add", "9876543210", "--json"], db.url()).await;
    assert_eq!(again["rows_affected"], 0);
    assert_eq!(again["detail"]["already_listed"], 1);

    let checked = run_json(&["dnc", "check", "098765-43210", "--json"], db.url()).await;
    assert_eq!(checked["listed"], true);
    assert_eq!(checked["entry"]["reason"], "opt-out by phone");
    let checked = run_json(&["dnc", "check", "9876543211", "--json"], db.url()).await;
    assert_eq!(checked["listed"], false);
    assert_eq!(checked["phone_number"], "+919876543211");

    let list = run_json(&["dnc", "list", "--json"], db.url()).await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["entries"].as_array().unwrap().len(), 2);

    let removed = run_json(
        &["dnc", "remove", "+91 98765 43210", "9876543211", "--json"],
        db.url(),
    )
    .await;
    assert_eq!(removed["rows_affected"], 1);
    assert_eq!(removed["detail"]["not_listed"], 1);
    assert_eq!(
        removed["detail"]["removed"][0]["reason"], "opt-out by phone",
        "the audit keeps what the removed entry said"
    );
    assert_eq!(listed(&pool).await.len(), 1);

    let audit = actions(&pool).await;
    let summary: Vec<(&str, &str, i64)> = audit
        .iter()
        .map(|(action, actor, rows, _)| (action.as_str(), actor.as_str(), *rows))
        .collect();
    assert_eq!(summary[0], ("dnc.add", "carol", 2));
    assert_eq!(summary[1].0, "dnc.add");
    assert_eq!(summary[2], ("dnc.remove", summary[2].1, 1));
    assert_eq!(
        summary.len(),
        3,
        "check and list change nothing and are not recorded"
    );
    assert_eq!(
        audit[2].3["numbers"],
        serde_json::json!(["+919876543210", "+919876543211"])
    );
}

#[tokio::test]
async fn a_number_that_is_not_one_changes_nothing_and_is_named() {
    let (db, pool) = migrated_db().await;
    let output = callbridge(&["dnc", "add", "9876543210", "12ab"], &env(db.url()), None).await;
    let message = one_line_failure(&output);
    assert!(
        message.contains("\"12ab\" is not a phone number"),
        "{message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(listed(&pool).await.is_empty());
    assert!(actions(&pool).await.is_empty());
}

#[tokio::test]
async fn an_import_reports_bad_lines_and_stores_nothing_unless_they_are_skipped() {
    let (db, pool) = migrated_db().await;
    let file = TempFile::with_contents(
        "optouts.txt",
        b"9876543210\n+91 98765 43211\n\nnot a number\n98765-43210\n+0123\n9876543212\n",
    );

    let refused = callbridge(&["dnc", "import", file.arg()], &env(db.url()), None).await;
    let message = one_line_failure(&refused);
    assert!(
        message.contains("2 invalid lines (lines 4, 6)"),
        "{message}"
    );
    assert!(message.contains("--skip-invalid"), "{message}");
    let errors = stderr(&refused);
    assert!(errors.contains("line 4: invalid phone_number"), "{errors}");
    assert!(
        errors.contains("line 6: invalid phone_number: +012 is not a country calling code"),
        "{errors}"
    );
    assert!(listed(&pool).await.is_empty(), "nothing was imported");
    assert!(actions(&pool).await.is_empty());

    let imported = run_json(
        &[
            "dnc",
            "import",
            file.arg(),
            "--skip-invalid",
            "--reason",
            "march list",
            "--json",
        ],
        db.url(),
    )
    .await;
    assert_eq!(imported["lines_read"], 6, "{imported}");
    assert_eq!(imported["invalid"], 2);
    assert_eq!(imported["duplicates"], 1);
    assert_eq!(imported["added"], 3);
    let lines: Vec<u64> = imported["invalid_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bad| bad["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6]);
    let stored = listed(&pool).await;
    assert_eq!(
        stored.iter().map(|row| row.0.as_str()).collect::<Vec<_>>(),
        ["+919876543210", "+919876543211", "+919876543212"]
    );
    assert!(
        stored
            .iter()
            .all(|row| row.1.as_deref() == Some("march list") && row.2 == "import optouts.txt")
    );

    // A CSV with a phone_number column; one number already listed.
    let csv = TempFile::with_contents(
        "crm.csv",
        b"name,phone_number\nA,9876543212\nB,+44 20 7183 8750\n",
    );
    let imported = run_json(&["dnc", "import", csv.arg(), "--json"], db.url()).await;
    assert_eq!(imported["added"], 1, "{imported}");
    assert_eq!(imported["already_listed"], 1);

    let audit = actions(&pool).await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].0, "dnc.import");
    assert_eq!(audit[0].2, 3);
    assert_eq!(audit[0].3["source"], "import optouts.txt");
}

#[tokio::test]
async fn enqueue_stores_a_listed_number_suppressed_in_no_batch_and_names_its_line() {
    let (db, pool) = migrated_db().await;
    run_json(&["dnc", "add", "+91 98765 43211", "--json"], db.url()).await;
    let file = TempFile::with_contents(
        "spring.csv",
        b"phone_number\n9876543210\n98765-43211\n9876543212\n",
    );

    let output = callbridge(
        &["enqueue", file.arg(), "--campaign", "spring"],
        &env(db.url()),
        None,
    )
    .await;
    assert_success(&output);
    let report = stdout(&output);
    assert!(
        report.contains("suppressed        1 (on the do-not-call list, never sent: line 3)"),
        "{report}"
    );
    assert!(
        report.contains("enqueued          2 in 1 batch"),
        "{report}"
    );

    let rows: Vec<(String, Option<i32>, String)> = sqlx::query_as(
        "SELECT phone_number, batch_id, queue_status FROM local_call_queue ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows[1],
        ("9876543211".to_owned(), None, "suppressed".to_owned())
    );
    assert_eq!(rows[0].2, "pending");
    assert_eq!(rows[2].2, "pending");

    // Enqueuing it again adds nothing, the suppressed number included.
    let again = callbridge(
        &["enqueue", file.arg(), "--campaign", "spring", "--json"],
        &env(db.url()),
        None,
    )
    .await;
    assert_success(&again);
    let again: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(again["already_enqueued"], 3);
    assert_eq!(again["suppressed"], 0);

    let shown = run_json(&["campaign", "show", "spring", "--json"], db.url()).await;
    assert_eq!(shown["suppressed"], 1, "{shown}");
}

#[tokio::test]
async fn check_shows_the_numbers_waiting_rows_that_the_claim_will_suppress() {
    let (db, pool) = migrated_db().await;
    let file = TempFile::with_contents("spring.csv", b"phone_number\n9876543210\n9876543219\n");
    let output = callbridge(
        &["enqueue", file.arg(), "--campaign", "spring"],
        &env(db.url()),
        None,
    )
    .await;
    assert_success(&output);

    // Not listed: its row waits and will be sent.
    let output = callbridge(&["dnc", "check", "+91 98765 43210"], &env(db.url()), None).await;
    assert_success(&output);
    let text = stdout(&output);
    assert!(text.contains("is not on the do-not-call list"), "{text}");
    assert!(
        text.contains("1 row of it waits: each will be sent when it is due"),
        "{text}"
    );
    assert!(text.contains("spring"), "{text}");

    // Listed after it was enqueued: the same row is now one the claim will suppress.
    run_json(&["dnc", "add", "9876543210", "--json"], db.url()).await;
    let output = callbridge(&["dnc", "check", "9876543210"], &env(db.url()), None).await;
    assert_success(&output);
    let text = stdout(&output);
    assert!(text.contains("is on the do-not-call list since"), "{text}");
    assert!(
        text.contains("1 row of it waits: each will be suppressed, never sent, when it is due"),
        "{text}"
    );
    let checked = run_json(&["dnc", "check", "9876543210", "--json"], db.url()).await;
    let row: i32 =
        sqlx::query_scalar("SELECT id FROM local_call_queue WHERE phone_e164 = '+919876543210'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(checked["waiting_total"], 1, "{checked}");
    assert_eq!(checked["waiting"][0]["id"], row, "{checked}");
    assert_eq!(checked["waiting"][0]["campaign"], "spring", "{checked}");
    assert_eq!(checked["waiting"][0]["attempt"], 1, "{checked}");

    // A row that went out no longer waits.
    sqlx::query("UPDATE local_call_queue SET queue_status = 'submitted' WHERE id = $1")
        .bind(row)
        .execute(&pool)
        .await
        .unwrap();
    let checked = run_json(&["dnc", "check", "9876543210", "--json"], db.url()).await;
    assert_eq!(checked["waiting_total"], 0, "{checked}");
    assert_eq!(checked["waiting"], serde_json::json!([]), "{checked}");
    // Another number's rows are not its.
    let other = run_json(&["dnc", "check", "9876543219", "--json"], db.url()).await;
    assert_eq!(other["waiting_total"], 1, "{other}");
}
