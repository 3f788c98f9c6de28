//! Migration 0009 (campaigns): existing `campaign_key` rows become campaigns, rows an
//! application inserts itself keep working unchanged, and the down step guards what
//! operators set up.

use callbridge_runtime::db::{self, DownTarget, MIGRATOR};
use callbridge_testkit::db::TestDb;
use sqlx::PgPool;

const CAMPAIGNS_VERSION: i64 = 9;

async fn at_version(version: i64) -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = db::connect_pool(db.url(), 2).await.unwrap();
    MIGRATOR.run_to(version, &pool).await.unwrap();
    (db, pool)
}

async fn insert_row(pool: &PgPool, phone: &str, batch_id: Option<i32>, campaign_key: Option<&str>) {
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, campaign_key) VALUES ($1, $2, $3)",
    )
    .bind(phone)
    .bind(batch_id)
    .bind(campaign_key)
    .execute(pool)
    .await
    .unwrap();
}

async fn create_batch(pool: &PgPool, batch_id: i32, batch_name: &str) {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, batch_name) VALUES ($1, 'ACME', $2)",
    )
    .bind(batch_id)
    .bind(batch_name)
    .execute(pool)
    .await
    .unwrap();
}

/// (phone_number, campaign name) of every queue row, by phone number.
async fn row_campaigns(pool: &PgPool) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT q.phone_number, c.name
           FROM local_call_queue q LEFT JOIN campaigns c ON c.id = q.campaign_id
          ORDER BY q.phone_number",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn existing_campaign_keys_become_campaigns_their_rows_and_batches_point_at() {
    let (_db, pool) = at_version(CAMPAIGNS_VERSION - 1).await;
    // As `callbridge enqueue` wrote them: `--campaign spring`, and a file without a name.
    create_batch(&pool, 1, "spring").await;
    create_batch(&pool, 2, "spring").await;
    create_batch(&pool, 3, "leads.csv (sha256:0123456789ab)").await;
    create_batch(&pool, 4, "by hand").await;
    insert_row(&pool, "9000000001", Some(1), Some("campaign:spring")).await;
    insert_row(&pool, "9000000002", Some(2), Some("campaign:spring")).await;
    insert_row(
        &pool,
        "9000000003",
        Some(3),
        Some("sha256:0123456789abcdef"),
    )
    .await;
    // An application's own row, without a campaign.
    insert_row(&pool, "9000000004", Some(4), None).await;

    db::migrate_up(&pool).await.unwrap();

    let campaigns: Vec<(String, String, i16, String, bool)> = sqlx::query_as(
        "SELECT name, status, window_days, time_zone,
                start_at IS NULL AND window_start IS NULL AND max_per_minute IS NULL
           FROM campaigns ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        campaigns,
        vec![
            (
                "leads.csv (sha256:0123456789ab)".into(),
                "active".into(),
                127,
                "UTC".into(),
                true
            ),
            ("spring".into(), "active".into(), 127, "UTC".into(), true),
        ],
        "one active campaign without rules per key, named as enqueue names it"
    );
    assert_eq!(
        row_campaigns(&pool).await,
        vec![
            ("9000000001".into(), Some("spring".into())),
            ("9000000002".into(), Some("spring".into())),
            (
                "9000000003".into(),
                Some("leads.csv (sha256:0123456789ab)".into())
            ),
            ("9000000004".into(), None),
        ]
    );
    let batches: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT b.batch_id, c.name
           FROM call_batches b LEFT JOIN campaigns c ON c.id = b.campaign_id
          ORDER BY b.batch_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        batches,
        vec![
            (1, Some("spring".into())),
            (2, Some("spring".into())),
            (3, Some("leads.csv (sha256:0123456789ab)".into())),
            (4, None)
        ]
    );
    let deferred: i64 =
        sqlx::query_scalar("SELECT count(*) FROM local_call_queue WHERE deferred_by_campaign")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(deferred, 0);
}

#[tokio::test]
async fn a_row_an_application_inserts_itself_has_no_campaign_and_is_due_at_once() {
    let (_db, pool) = at_version(CAMPAIGNS_VERSION).await;
    // Exactly the statement the integration guide's applications run.
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, custom_data)
         VALUES ('9876543210', 7, '{\"k\":1}')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let row: (String, Option<i32>, Option<String>, bool, bool) = sqlx::query_as(
        "SELECT queue_status, campaign_id, time_zone, deferred_by_campaign,
                next_attempt_at <= now()
           FROM local_call_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, ("pending".into(), None, None, false, true));
}

#[tokio::test]
async fn campaign_rules_are_checked_by_the_database() {
    let (_db, pool) = at_version(CAMPAIGNS_VERSION).await;
    for (what, insert) in [
        (
            "a window with a start but no end",
            "INSERT INTO campaigns (name, window_start) VALUES ('a', '09:00')",
        ),
        (
            "a pace of zero",
            "INSERT INTO campaigns (name, max_per_minute) VALUES ('b', 0)",
        ),
        (
            "no calling day",
            "INSERT INTO campaigns (name, window_days) VALUES ('c', 0)",
        ),
        (
            "an unknown status",
            "INSERT INTO campaigns (name, status) VALUES ('d', 'stopped')",
        ),
        ("a blank name", "INSERT INTO campaigns (name) VALUES ('  ')"),
        (
            "an unknown source",
            "INSERT INTO operator_actions (actor, source, action, target, rows_affected)
             VALUES ('ops', 'shell', 'campaign.pause', '{}', 0)",
        ),
    ] {
        assert!(
            sqlx::query(insert).execute(&pool).await.is_err(),
            "{what} was accepted"
        );
    }
    sqlx::query(
        "INSERT INTO campaigns (name, window_start, window_end, window_days, time_zone, max_per_minute)
         VALUES ('night', '21:00', '02:00', 63, 'Asia/Kolkata', 600)",
    )
    .execute(&pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn down_refuses_to_drop_campaigns_holding_rows_without_force() {
    let (_db, pool) = at_version(CAMPAIGNS_VERSION).await;
    sqlx::query("INSERT INTO campaigns (name) VALUES ('spring')")
        .execute(&pool)
        .await
        .unwrap();

    let err = db::migrate_down(&pool, DownTarget::Steps(1), false)
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("drop table campaigns") && message.contains("--force"),
        "{message}"
    );

    db::migrate_down(&pool, DownTarget::Steps(1), true)
        .await
        .unwrap();
    let campaigns: Option<String> = sqlx::query_scalar("SELECT to_regclass('campaigns')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(campaigns, None);
}
