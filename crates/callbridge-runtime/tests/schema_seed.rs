//! The first migration is the integration guide's SQL: a database built by the migrations
//! and one built by the guide's own SQL (tests/fixtures/seed_schema.sql, copied verbatim)
//! must not differ in any column, index or constraint of the three tables, and a database
//! where the guide's SQL already ran is adopted.

use std::collections::BTreeSet;

use callbridge_runtime::db::{self, MIGRATOR};
use callbridge_testkit::db::TestDb;
use sqlx::{AssertSqlSafe, PgPool};

const SEED_SQL: &str = include_str!("fixtures/seed_schema.sql");
const SEED_TABLES: [&str; 3] = ["call_logs", "call_batches", "local_call_queue"];

/// One line per column, index and constraint of the seed's tables, spelled so that a
/// difference printed by the assertion reads on its own.
async fn seed_tables_schema(pool: &PgPool) -> BTreeSet<String> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT format('column %s.%s #%s %s(%s) nullable=%s default=%s', table_name, column_name,
                       ordinal_position, data_type, character_maximum_length, is_nullable,
                       coalesce(column_default, 'none'))
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name = ANY($1)",
    )
    .bind(&SEED_TABLES[..])
    .fetch_all(pool)
    .await
    .unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT tablename::text, indexdef FROM pg_indexes
          WHERE schemaname = 'public' AND tablename = ANY($1)",
    )
    .bind(&SEED_TABLES[..])
    .fetch_all(pool)
    .await
    .unwrap();
    let constraints: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
           FROM pg_constraint
          WHERE conrelid::regclass::text = ANY($1)",
    )
    .bind(&SEED_TABLES[..])
    .fetch_all(pool)
    .await
    .unwrap();

    let indexes = indexes
        .into_iter()
        .map(|(table, definition)| format!("index on {table}: {definition}"));
    let constraints = constraints
        .into_iter()
        .map(|(table, name, definition)| format!("constraint {table}.{name}: {definition}"));
    columns
        .into_iter()
        .chain(indexes)
        .chain(constraints)
        .collect()
}

async fn seed_database() -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(SEED_SQL))
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

fn report(label: &str, lines: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let lines: Vec<String> = lines
        .into_iter()
        .map(|line| format!("  {}", line.as_ref()))
        .collect();
    format!("{label}:\n{}", lines.join("\n"))
}

#[tokio::test]
async fn first_migration_builds_exactly_the_seed_schema() {
    let (_seed_db, seed_pool) = seed_database().await;
    let migrated_db = TestDb::new().await.unwrap();
    let migrated_pool = PgPool::connect(migrated_db.url()).await.unwrap();
    MIGRATOR.run_to(1, &migrated_pool).await.unwrap();

    let seed = seed_tables_schema(&seed_pool).await;
    let migrated = seed_tables_schema(&migrated_pool).await;

    // Guard against comparing two empty sets: the seed has 34 columns and 14 indexes
    // (its 9 CREATE INDEX, 3 primary keys, 2 UNIQUE columns).
    let count = |kind: &str| seed.iter().filter(|line| line.starts_with(kind)).count();
    assert_eq!(
        (count("column "), count("index ")),
        (34, 14),
        "{}",
        report("seed schema", &seed)
    );
    let only_seed: Vec<_> = seed.difference(&migrated).collect();
    let only_migrated: Vec<_> = migrated.difference(&seed).collect();
    assert!(
        only_seed.is_empty() && only_migrated.is_empty(),
        "{}\n{}",
        report("only in the seed's schema", only_seed),
        report("only after migration 0001", only_migrated)
    );
}

#[tokio::test]
async fn later_migrations_keep_every_seed_column_and_index_unchanged() {
    let (_seed_db, seed_pool) = seed_database().await;
    let migrated_db = TestDb::new().await.unwrap();
    let migrated_pool = db::connect_and_migrate(migrated_db.url(), 2).await.unwrap();

    let seed = seed_tables_schema(&seed_pool).await;
    let migrated = seed_tables_schema(&migrated_pool).await;

    let changed_or_lost: Vec<_> = seed.difference(&migrated).collect();
    assert!(
        changed_or_lost.is_empty(),
        "{}",
        report(
            "seed definitions changed or lost by later migrations",
            changed_or_lost
        )
    );
    // Later migrations did add to these tables (next_attempt_at etc.), so the check above
    // compared a real superset.
    assert!(migrated.len() > seed.len());
}

#[tokio::test]
async fn migrate_up_adopts_a_database_where_the_seed_sql_already_ran() {
    let (_db, pool) = seed_database().await;
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
         VALUES ('existing-call', 'ACME', 7, '9876543210', 'completed')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, total_calls) VALUES (7, 'ACME', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let seed = seed_tables_schema(&pool).await;

    let applied = db::migrate_up(&pool).await.unwrap();

    let versions: Vec<i64> = applied.iter().map(|m| m.version).collect();
    let all_versions: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    assert_eq!(
        versions, all_versions,
        "every migration applied on adoption"
    );

    let (call_id, batch_id): (String, Option<i32>) =
        sqlx::query_as("SELECT call_id, batch_id FROM call_logs")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((call_id.as_str(), batch_id), ("existing-call", Some(7)));

    // The adopted tables kept their definitions and gained the later columns.
    let adopted = seed_tables_schema(&pool).await;
    assert!(seed.is_subset(&adopted));
    let next_attempt_at: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                         WHERE table_name = 'local_call_queue' AND column_name = 'next_attempt_at')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(next_attempt_at);

    // Later migrations work on the adopted rows: the batch routine counts the old call.
    let status: Option<String> = sqlx::query_scalar("SELECT callbridge_refresh_batch(7)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("completed"));
}

#[tokio::test]
async fn adopting_a_table_without_a_seed_column_fails_naming_the_column() {
    let db = TestDb::new().await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    // A hand-made table missing `server_code`.
    sqlx::raw_sql(
        "CREATE TABLE call_logs (
            id SERIAL PRIMARY KEY, call_id VARCHAR(255) UNIQUE NOT NULL,
            accountcode VARCHAR(100) NOT NULL, batch_id INTEGER,
            phone_number VARCHAR(20) NOT NULL, call_status VARCHAR(50) NOT NULL,
            disposition VARCHAR(50), duration INTEGER, start_time TIMESTAMP,
            end_time TIMESTAMP, recording_url TEXT, error_message TEXT, custom_data JSON,
            created_at TIMESTAMP, updated_at TIMESTAMP)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let err = db::migrate_up(&pool).await.unwrap_err();

    let message = format!("{err:#}");
    assert!(
        message.contains("call_logs.server_code"),
        "unexpected error: {message}"
    );
    // Nothing half-applied: the first migration rolled back as a whole.
    let seed_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ANY($1)",
    )
    .bind(&SEED_TABLES[..])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(seed_tables, 1);
}
