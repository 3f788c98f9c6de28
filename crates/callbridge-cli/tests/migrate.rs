//! `callbridge migrate` as an operator runs it: the built binary against a real database.

use std::process::Output;

use callbridge_runtime::db::MIGRATOR;
use callbridge_testkit::db::TestDb;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Runs the built binary with only the given environment (hermetic: nothing from the
/// developer's shell leaks in), pointed at the test's database through the guide's variable.
async fn callbridge_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_callbridge"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

async fn callbridge(db: &TestDb, args: &[&str]) -> Output {
    callbridge_with_env(args, &[("CLIENT_CALLING_DB_URL", db.url())]).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// How many migrations this build embeds.
fn migration_count() -> usize {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count()
}

fn migration_lines(text: &str, prefix: &str) -> usize {
    text.lines().filter(|line| line.starts_with(prefix)).count()
}

#[tokio::test]
async fn up_creates_the_missing_database_and_applies_every_migration() {
    let db = TestDb::new().await.unwrap();
    let mut admin = PgConnection::connect(db.admin_url()).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE \"{}\"", db.name())))
        .execute(&mut admin)
        .await
        .unwrap();

    let output = callbridge(&db, &["migrate", "up"]).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("created database"), "{text}");
    assert_eq!(
        migration_lines(&text, "applied  "),
        migration_count(),
        "{text}"
    );
    assert!(text.contains("applied  0001 seed tables"), "{text}");

    let again = callbridge(&db, &["migrate", "up"]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("is up to date"),
        "{}",
        stdout(&again)
    );
}

#[tokio::test]
async fn status_lists_each_migration_as_applied_or_pending() {
    let db = TestDb::new().await.unwrap();
    let before = callbridge(&db, &["migrate", "status"]).await;
    assert!(before.status.success(), "{}", stderr(&before));
    assert_eq!(
        stdout(&before).matches(" pending").count(),
        migration_count(),
        "{}",
        stdout(&before)
    );

    callbridge(&db, &["migrate", "up"]).await;
    callbridge(&db, &["migrate", "down", "--steps", "2"]).await;

    let after = stdout(&callbridge(&db, &["migrate", "status"]).await);
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines.len(), migration_count(), "{after}");
    let (still_applied, reverted) = lines.split_at(migration_count() - 2);
    for line in still_applied {
        assert!(line.contains(" applied "), "{after}");
    }
    for line in reverted {
        assert!(line.ends_with("pending"), "{after}");
    }
}

#[tokio::test]
async fn status_json_gives_each_migration_its_state_and_when_it_was_applied() {
    let db = TestDb::new().await.unwrap();
    callbridge(&db, &["migrate", "up"]).await;
    callbridge(&db, &["migrate", "down", "--steps", "1"]).await;

    let output = callbridge(&db, &["migrate", "status", "--json"]).await;

    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not a JSON array ({error}): {}", stdout(&output)));
    assert_eq!(rows.len(), migration_count(), "{rows:#?}");
    let (applied, pending) = rows.split_at(migration_count() - 1);
    assert_eq!(applied[0]["version"], 1, "{rows:#?}");
    assert_eq!(applied[0]["description"], "seed tables", "{rows:#?}");
    for row in applied {
        assert_eq!(row["state"], "applied", "{rows:#?}");
        let installed_on = row["installed_on"]
            .as_str()
            .expect("installed_on is a string");
        chrono::DateTime::parse_from_rfc3339(installed_on).expect("installed_on is RFC 3339");
    }
    assert_eq!(pending[0]["state"], "pending", "{rows:#?}");
    assert!(pending[0].get("installed_on").is_none(), "{rows:#?}");
}

#[tokio::test]
async fn down_refuses_rows_without_force_in_one_line_and_fails() {
    let db = TestDb::new().await.unwrap();
    assert!(callbridge(&db, &["migrate", "up"]).await.status.success());
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("INSERT INTO call_logs (call_id, accountcode, phone_number, call_status) VALUES ('c1', 'ACME', '9876543210', 'completed')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let refused = callbridge(&db, &["migrate", "down", "--all"]).await;

    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert_eq!(message.trim_end().lines().count(), 1, "one line: {message}");
    assert!(message.starts_with("error: "), "{message}");
    assert!(
        message.contains("drop table call_logs") && message.contains("--force"),
        "{message}"
    );

    let forced = callbridge(&db, &["migrate", "down", "--all", "--force"]).await;
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(
        migration_lines(&stdout(&forced), "reverted "),
        1,
        "{}",
        stdout(&forced)
    );
}

#[tokio::test]
async fn the_guides_sqlalchemy_async_url_is_enough() {
    let db = TestDb::new().await.unwrap();
    let async_url = db.url().replacen("postgres://", "postgresql+asyncpg://", 1);

    let output = callbridge_with_env(
        &["migrate", "up"],
        &[("CLIENT_CALLING_ASYNC_DB_URL", async_url.as_str())],
    )
    .await;

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        migration_lines(&stdout(&output), "applied  "),
        migration_count()
    );
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'call_events'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 1, "migrated the database the async URL names");
}

#[tokio::test]
async fn an_unreachable_database_is_one_clear_line_and_a_failure() {
    let output = callbridge_with_env(
        &[
            "migrate",
            "status",
            "--database-url",
            "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nowhere",
        ],
        &[],
    )
    .await;

    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(
        message.contains("postgres@127.0.0.1:1/nowhere"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret"),
        "the password leaked: {message}"
    );
}
