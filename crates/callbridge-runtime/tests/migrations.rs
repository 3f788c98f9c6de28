//! Every migration reverses; a down step never destroys rows without `--force`; status
//! reports what is applied and pending; the database is created when missing.

use callbridge_runtime::db::{
    self, DownTarget, MIGRATOR, MigrationState, MigrationStatus, MigrationSummary,
};
use callbridge_testkit::db::TestDb;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

fn all_versions() -> Vec<i64> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect()
}

fn versions(summaries: &[MigrationSummary]) -> Vec<i64> {
    summaries.iter().map(|m| m.version).collect()
}

fn applied(statuses: &[MigrationStatus]) -> Vec<i64> {
    statuses
        .iter()
        .filter(|s| matches!(s.state, MigrationState::Applied { .. }))
        .map(|s| s.version)
        .collect()
}

fn pending(statuses: &[MigrationStatus]) -> Vec<i64> {
    statuses
        .iter()
        .filter(|s| s.state == MigrationState::Pending)
        .map(|s| s.version)
        .collect()
}

/// Everything the migrations create in the public schema, one line per object.
async fn public_schema(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('column %s.%s %s null=%s default=%s', table_name, column_name,
                       data_type, is_nullable, column_default)
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'
         UNION ALL
         SELECT 'index ' || indexdef FROM pg_indexes
          WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'
         UNION ALL
         SELECT 'function ' || pg_get_functiondef(p.oid)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'public'
         UNION ALL
         SELECT 'trigger ' || pg_get_triggerdef(t.oid)
           FROM pg_trigger t WHERE NOT t.tgisinternal
         UNION ALL
         SELECT 'sequence ' || sequencename FROM pg_sequences WHERE schemaname = 'public'
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn fresh() -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = db::connect_pool(db.url(), 4).await.unwrap();
    (db, pool)
}

#[tokio::test]
async fn every_migration_reverses_up_down_up() {
    let (_db, pool) = fresh().await;

    let applied_first = db::migrate_up(&pool).await.unwrap();
    assert_eq!(versions(&applied_first), all_versions());
    let schema = public_schema(&pool).await;
    assert!(
        schema
            .iter()
            .any(|line| line.contains("callbridge_refresh_batch"))
    );

    let reverted = db::migrate_down(&pool, DownTarget::All, false)
        .await
        .unwrap();
    let mut newest_first = all_versions();
    newest_first.reverse();
    assert_eq!(versions(&reverted), newest_first);
    assert_eq!(
        public_schema(&pool).await,
        Vec::<String>::new(),
        "down left objects behind"
    );

    let applied_again = db::migrate_up(&pool).await.unwrap();
    assert_eq!(versions(&applied_again), all_versions());
    assert_eq!(public_schema(&pool).await, schema);
}

#[tokio::test]
async fn each_single_step_down_restores_the_previous_schema() {
    let (_db, pool) = fresh().await;
    let mut schema_after = Vec::new();
    for version in all_versions() {
        MIGRATOR.run_to(version, &pool).await.unwrap();
        schema_after.push((version, public_schema(&pool).await));
    }

    while let Some((version, schema)) = schema_after.pop() {
        assert_eq!(public_schema(&pool).await, schema);
        let reverted = db::migrate_down(&pool, DownTarget::Steps(1), false)
            .await
            .unwrap();
        assert_eq!(versions(&reverted), vec![version]);
    }
    assert!(public_schema(&pool).await.is_empty());
}

#[tokio::test]
async fn down_refuses_to_drop_a_table_holding_rows_without_force() {
    let (_db, pool) = fresh().await;
    // Up to 0005: 0006 (the persister's call_events.event) guards its column itself, so
    // the refusal to drop the table is seen below it.
    MIGRATOR.run_to(5, &pool).await.unwrap();
    sqlx::query(
        "INSERT INTO call_events (event_id, event_type, payload, received_at)
         VALUES ('evt-1', 'call_started', '{}', now())",
    )
    .execute(&pool)
    .await
    .unwrap();

    let err = db::migrate_down(&pool, DownTarget::All, false)
        .await
        .unwrap_err();

    let message = format!("{err:#}");
    assert!(
        message.contains("drop table call_events") && message.contains("--force"),
        "the refusal must name the table and --force: {message}"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);
    // The steps above it (empty tables) were reverted; 0002 and 0001 stay.
    let statuses = db::migration_status(&pool).await.unwrap();
    assert_eq!(applied(&statuses), vec![1, 2]);
    let above: Vec<String> = all_versions()
        .iter()
        .rev()
        .filter(|version| (3..=5).contains(*version))
        .map(i64::to_string)
        .collect();
    let reverted = format!("reverted before the failure: {}", above.join(", "));
    assert!(message.contains(&reverted), "{message}");
}

#[tokio::test]
async fn down_refuses_to_drop_seed_tables_holding_rows_without_force() {
    let (_db, pool) = fresh().await;
    db::migrate_up(&pool).await.unwrap();
    let all_but_the_first = u32::try_from(all_versions().len() - 1).unwrap();
    db::migrate_down(&pool, DownTarget::Steps(all_but_the_first), false)
        .await
        .unwrap();
    sqlx::query("INSERT INTO call_batches (batch_id, accountcode) VALUES (1, 'ACME')")
        .execute(&pool)
        .await
        .unwrap();

    let err = db::migrate_down(&pool, DownTarget::All, false)
        .await
        .unwrap_err();

    let message = format!("{err:#}");
    assert!(
        message.contains("drop table call_batches") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(
        applied(&db::migration_status(&pool).await.unwrap()),
        vec![1]
    );
}

#[tokio::test]
async fn down_with_force_drops_tables_holding_rows() {
    let (_db, pool) = fresh().await;
    db::migrate_up(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO call_events (event_id, event_type, payload, received_at, event)
         VALUES ('evt-1', 'call_started', '{}', now(), '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO local_call_queue (phone_number, batch_id) VALUES ('9876543210', 1)")
        .execute(&pool)
        .await
        .unwrap();

    let reverted = db::migrate_down(&pool, DownTarget::All, true)
        .await
        .unwrap();

    assert_eq!(reverted.len(), all_versions().len());
    assert!(public_schema(&pool).await.is_empty());
}

#[tokio::test]
async fn force_does_not_leak_into_pooled_connections() {
    let db = TestDb::new().await.unwrap();
    // One connection: if migrate_down handed its forced session back, we would get it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap();
    db::migrate_up(&pool).await.unwrap();

    db::migrate_down(&pool, DownTarget::Steps(1), true)
        .await
        .unwrap();

    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('callbridge.allow_destructive_down', true)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(setting.as_deref(), Some("on"));
}

#[tokio::test]
async fn status_lists_applied_and_pending_migrations() {
    let (_db, pool) = fresh().await;

    let statuses = db::migration_status(&pool).await.unwrap();
    assert_eq!(pending(&statuses), all_versions());
    assert!(statuses.iter().all(|s| !s.description.is_empty()));

    MIGRATOR.run_to(2, &pool).await.unwrap();
    let statuses = db::migration_status(&pool).await.unwrap();
    assert_eq!(applied(&statuses), vec![1, 2]);
    let later: Vec<i64> = all_versions().into_iter().filter(|v| *v > 2).collect();
    assert_eq!(pending(&statuses), later);

    let applied_now = db::migrate_up(&pool).await.unwrap();
    assert_eq!(versions(&applied_now), later);
    assert!(db::migrate_up(&pool).await.unwrap().is_empty());
    assert_eq!(
        applied(&db::migration_status(&pool).await.unwrap()),
        all_versions()
    );
}

#[tokio::test]
async fn status_reports_a_migration_only_a_newer_binary_knows() {
    let (_db, pool) = fresh().await;
    db::migrate_up(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let statuses = db::migration_status(&pool).await.unwrap();

    let last = statuses.last().unwrap();
    assert_eq!(last.version, 9999);
    assert!(matches!(last.state, MigrationState::Unknown { .. }));
    // Running this binary's migrations against it is refused rather than guessed at.
    assert!(db::migrate_up(&pool).await.is_err());
}

#[tokio::test]
async fn ensure_database_exists_creates_a_missing_database_once() {
    let db = TestDb::new().await.unwrap();
    let mut admin = PgConnection::connect(db.admin_url()).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE \"{}\"", db.name())))
        .execute(&mut admin)
        .await
        .unwrap();

    // Two racing creators: exactly one creates it, neither fails.
    let (first, second) = tokio::join!(
        db::ensure_database_exists(db.url()),
        db::ensure_database_exists(db.url())
    );
    let created = [first.unwrap(), second.unwrap()];
    assert_eq!(created.iter().filter(|created| **created).count(), 1);

    assert!(!db::ensure_database_exists(db.url()).await.unwrap());
    let pool = db::connect_pool(db.url(), 1).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, db.name());
}
