//! The operator's actions against a real database: each changes exactly the rows it
//! names, refuses the others, and writes its `operator_actions` row in the same
//! transaction.

mod common;

use callbridge_ops::queue::{self, ResolveTarget};
use callbridge_ops::{Actor, OpsError, RulesChange, campaign};
use callbridge_types::campaign::{CampaignStatus, Days, parse_hours};
use callbridge_types::status::QueueStatus;
use chrono::{DateTime, TimeZone, Utc};
use common::migrated;
use serde_json::Value;
use sqlx::PgPool;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 14, 0, 0).unwrap()
}

fn far_future() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn ops() -> Actor {
    Actor::cli("alice")
}

/// Creates campaign `name` with one batch per entry of `batches`, each holding rows in
/// the given statuses; returns the campaign id.
async fn campaign_with(pool: &PgPool, name: &str, batches: &[(i32, &[&str])]) -> i32 {
    let mut conn = pool.acquire().await.unwrap();
    let created = campaign::for_enqueue(&mut conn, name, &RulesChange::default(), now())
        .await
        .unwrap();
    for (batch_id, statuses) in batches {
        sqlx::query(
            "INSERT INTO call_batches (batch_id, accountcode, batch_name, campaign_id)
             VALUES ($1, 'ACME', $2, $3)",
        )
        .bind(batch_id)
        .bind(name)
        .bind(created.id)
        .execute(pool)
        .await
        .unwrap();
        for (n, status) in statuses.iter().enumerate() {
            sqlx::query(
                "INSERT INTO local_call_queue
                        (phone_number, batch_id, queue_status, campaign_id, campaign_key, retry_count)
                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 = 'failed' THEN 3 ELSE 0 END)",
            )
            .bind(format!("98{batch_id:04}{n:04}"))
            .bind(batch_id)
            .bind(status)
            .bind(created.id)
            .bind(format!("campaign:{name}"))
            .execute(pool)
            .await
            .unwrap();
        }
    }
    created.id
}

async fn statuses(pool: &PgPool, batch_id: i32) -> Vec<String> {
    sqlx::query_scalar("SELECT queue_status FROM local_call_queue WHERE batch_id = $1 ORDER BY id")
        .bind(batch_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn batch_status(pool: &PgPool, batch_id: i32) -> Option<String> {
    sqlx::query_scalar("SELECT batch_status FROM call_batches WHERE batch_id = $1")
        .bind(batch_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// (action, actor, source, rows_affected, at) of every recorded action, oldest first.
async fn actions(pool: &PgPool) -> Vec<(String, String, String, i64, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT action, actor, source, rows_affected, at FROM operator_actions ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn defer(pool: &PgPool, batch_id: i32, by_campaign: bool) {
    sqlx::query(
        "UPDATE local_call_queue SET next_attempt_at = $2, deferred_by_campaign = $3
          WHERE batch_id = $1 AND queue_status = 'pending'",
    )
    .bind(batch_id)
    .bind(far_future())
    .bind(by_campaign)
    .execute(pool)
    .await
    .unwrap();
}

/// next_attempt_at of the batch's pending rows.
async fn due_times(pool: &PgPool, batch_id: i32) -> Vec<(DateTime<Utc>, bool)> {
    sqlx::query_as(
        "SELECT next_attempt_at, deferred_by_campaign FROM local_call_queue
          WHERE batch_id = $1 AND queue_status = 'pending' ORDER BY id",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn pause_and_resume_record_who_did_it_and_resume_brings_back_rows_the_rules_held() {
    let (_db, pool) = migrated().await;
    campaign_with(
        &pool,
        "spring",
        &[(1, &["pending", "pending"]), (2, &["pending", "submitted"])],
    )
    .await;
    // Batch 1 waits because of the campaign (the claim deferred it), batch 2 for a retry.
    defer(&pool, 1, true).await;
    defer(&pool, 2, false).await;

    let paused = campaign::pause(&pool, now(), &ops(), "spring")
        .await
        .unwrap();
    assert_eq!(paused.status, Some(CampaignStatus::Paused));
    assert_eq!(paused.rows_affected, 3, "the three waiting rows");
    assert_eq!(
        campaign::show(&pool, "spring").await.unwrap().status,
        CampaignStatus::Paused
    );

    let later = now() + chrono::TimeDelta::minutes(5);
    let resumed = campaign::resume(&pool, later, &Actor::cli("bob"), "spring")
        .await
        .unwrap();
    assert_eq!(resumed.status, Some(CampaignStatus::Active));
    assert_eq!(resumed.detail["due_again"], 2);
    assert_eq!(
        due_times(&pool, 1).await,
        vec![(later, false), (later, false)]
    );
    assert_eq!(
        due_times(&pool, 2).await,
        vec![(far_future(), false)],
        "a retry backoff is not the campaign's to shorten"
    );

    let recorded = actions(&pool).await;
    assert_eq!(
        recorded,
        vec![
            (
                "campaign.pause".into(),
                "alice".into(),
                "cli".into(),
                3,
                now()
            ),
            (
                "campaign.resume".into(),
                "bob".into(),
                "cli".into(),
                3,
                later
            ),
        ]
    );
}

#[tokio::test]
async fn set_changes_the_rules_and_brings_back_rows_the_old_rules_held() {
    let (_db, pool) = migrated().await;
    campaign_with(&pool, "spring", &[(1, &["pending"])]).await;
    defer(&pool, 1, true).await;

    let change = RulesChange {
        hours: Some(Some(parse_hours("09:00-20:00").unwrap())),
        days: Some(Days::parse("mon-fri").unwrap()),
        time_zone: Some("America/New_York".parse().unwrap()),
        max_per_minute: Some(Some(600)),
        ..RulesChange::default()
    };
    let set = campaign::set(&pool, now(), &ops(), "spring", &change)
        .await
        .unwrap();

    assert_eq!(set.action, "campaign.set");
    assert_eq!(set.detail["before"]["window"], Value::Null);
    assert_eq!(set.detail["after"]["window"], "09:00-20:00");
    assert_eq!(set.detail["due_again"], 1);
    let shown = campaign::show(&pool, "spring").await.unwrap();
    assert_eq!(shown.rules.window.as_deref(), Some("09:00-20:00"));
    assert_eq!(shown.rules.days.as_deref(), Some("mon-fri"));
    assert_eq!(shown.rules.time_zone, "America/New_York");
    assert_eq!(shown.rules.max_per_minute, Some(600));
    let stored: (i16, String) =
        sqlx::query_as("SELECT window_days, time_zone FROM campaigns WHERE name = 'spring'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, (0b001_1111, "America/New_York".into()));
    assert_eq!(due_times(&pool, 1).await, vec![(now(), false)]);
    assert_eq!(actions(&pool).await.len(), 1);
}

#[tokio::test]
async fn cancel_cancels_the_waiting_rows_in_one_transaction_and_refreshes_their_batches() {
    let (_db, pool) = migrated().await;
    campaign_with(
        &pool,
        "spring",
        &[
            // Sent and called: completes once its call ends.
            (1, &["submitted", "pending"]),
            // Nothing sent: ends cancelled.
            (2, &["pending", "pending"]),
            // A row a submitter holds right now: left to it.
            (3, &["submitting", "pending"]),
        ],
    )
    .await;
    sqlx::query("UPDATE call_batches SET total_calls = 1 WHERE batch_id = 1")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
         VALUES ('c1', 'ACME', 1, '9800010000', 'completed')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let cancelled = campaign::cancel(&pool, now(), &ops(), "spring")
        .await
        .unwrap();

    assert_eq!(cancelled.rows_affected, 4);
    assert_eq!(cancelled.detail["in_flight"], 1);
    assert_eq!(cancelled.detail["batches"], serde_json::json!([1, 2, 3]));
    assert_eq!(statuses(&pool, 1).await, ["submitted", "cancelled"]);
    assert_eq!(statuses(&pool, 2).await, ["cancelled", "cancelled"]);
    assert_eq!(statuses(&pool, 3).await, ["submitting", "cancelled"]);
    assert_eq!(batch_status(&pool, 1).await.as_deref(), Some("completed"));
    assert_eq!(batch_status(&pool, 2).await.as_deref(), Some("cancelled"));
    assert_eq!(batch_status(&pool, 3).await.as_deref(), Some("pending"));
    let counters: (i32, i32) =
        sqlx::query_as("SELECT completed_calls, failed_calls FROM call_batches WHERE batch_id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counters, (1, 0), "the counters are call_logs'");

    let shown = campaign::show(&pool, "spring").await.unwrap();
    assert_eq!(shown.status, CampaignStatus::Cancelled);
    assert_eq!(
        (
            shown.figures.cancelled,
            shown.figures.waiting,
            shown.figures.reached
        ),
        (4, 1, 1)
    );

    // A cancelled campaign stays cancelled.
    let resumed = campaign::resume(&pool, now(), &ops(), "spring").await;
    let message = resumed.unwrap_err().to_string();
    assert!(message.contains("cannot be resumed"), "{message}");
    assert!(matches!(
        campaign::set(
            &pool,
            now(),
            &ops(),
            "spring",
            &RulesChange {
                max_per_minute: Some(Some(5)),
                ..RulesChange::default()
            }
        )
        .await,
        Err(OpsError::Cancelled { .. })
    ));
    assert_eq!(
        actions(&pool).await.len(),
        1,
        "a refused action changes nothing and records nothing"
    );
}

#[tokio::test]
async fn an_unknown_campaign_is_named_with_what_to_do() {
    let (_db, pool) = migrated().await;
    let error = campaign::pause(&pool, now(), &ops(), "nope")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no campaign is named \"nope\": `callbridge campaign list` shows the campaigns"
    );
}

#[tokio::test]
async fn retry_puts_failed_rows_back_with_fresh_attempts_and_refuses_other_statuses() {
    let (_db, pool) = migrated().await;
    campaign_with(
        &pool,
        "spring",
        &[(1, &["failed", "failed"]), (2, &["failed", "submitted"])],
    )
    .await;
    campaign_with(&pool, "other", &[(3, &["failed"])]).await;
    sqlx::query("UPDATE call_batches SET batch_status = 'failed' WHERE batch_id = 1")
        .execute(&pool)
        .await
        .unwrap();

    for refused in [
        QueueStatus::NeedsReview,
        QueueStatus::Pending,
        QueueStatus::Submitted,
    ] {
        let error = queue::retry(&pool, now(), &ops(), "spring", refused)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("failed rows only"),
            "{refused}: {error}"
        );
    }
    let retried = queue::retry(&pool, now(), &ops(), "spring", QueueStatus::Failed)
        .await
        .unwrap();

    assert_eq!(retried.rows_affected, 3);
    assert_eq!(statuses(&pool, 1).await, ["pending", "pending"]);
    assert_eq!(statuses(&pool, 2).await, ["pending", "submitted"]);
    assert_eq!(
        statuses(&pool, 3).await,
        ["failed"],
        "another campaign's row"
    );
    let attempts: Vec<(i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT retry_count, next_attempt_at FROM local_call_queue
          WHERE campaign_id = (SELECT id FROM campaigns WHERE name = 'spring')
            AND queue_status = 'pending'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, vec![(0, now()); 3]);
    assert_eq!(
        batch_status(&pool, 1).await.as_deref(),
        Some("pending"),
        "a failed batch whose rows wait again is open again"
    );
    assert_eq!(
        actions(&pool).await,
        vec![("queue.retry".into(), "alice".into(), "cli".into(), 3, now())]
    );
    let target: Value = sqlx::query_scalar("SELECT target FROM operator_actions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(target["queue_status"], "failed");
    assert_eq!(target["ids"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn retry_keeps_the_evidence_of_an_earlier_attempt_so_the_submitter_reconciles_first() {
    let (_db, pool) = migrated().await;
    campaign_with(&pool, "spring", &[(1, &["failed"])]).await;
    sqlx::query("UPDATE local_call_queue SET attempt_started_at = $1")
        .bind(now())
        .execute(&pool)
        .await
        .unwrap();

    queue::retry(&pool, now(), &ops(), "spring", QueueStatus::Failed)
        .await
        .unwrap();

    let evidence: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT attempt_started_at FROM local_call_queue")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(evidence, Some(now()));
}

#[tokio::test]
async fn resolve_refuses_the_whole_set_when_one_row_is_not_needs_review() {
    let (_db, pool) = migrated().await;
    campaign_with(
        &pool,
        "spring",
        &[(1, &["needs_review", "submitted", "needs_review"])],
    )
    .await;
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM local_call_queue ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();

    let error = queue::resolve(
        &pool,
        now(),
        &ops(),
        &ResolveTarget::Ids(ids.clone()),
        QueueStatus::Submitted,
        None,
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("{} (submitted)", ids[1]))
            && message.contains("nothing was changed"),
        "{message}"
    );
    let missing = queue::rows_to_resolve(&pool, &ResolveTarget::Ids(vec![9999]))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("9999 (no such row)"),
        "{missing}"
    );
    assert_eq!(
        statuses(&pool, 1).await,
        ["needs_review", "submitted", "needs_review"]
    );
    assert!(actions(&pool).await.is_empty());
}

#[tokio::test]
async fn resolve_as_submitted_counts_the_rows_as_accepted() {
    let (_db, pool) = migrated().await;
    campaign_with(
        &pool,
        "spring",
        &[(1, &["needs_review", "submitted", "needs_review"])],
    )
    .await;
    sqlx::query("UPDATE call_batches SET total_calls = 1 WHERE batch_id = 1")
        .execute(&pool)
        .await
        .unwrap();
    let centralized = serde_json::json!({"answer": "found", "total": 3});

    let rows = queue::rows_to_resolve(&pool, &ResolveTarget::Batch(1))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let resolved = queue::resolve(
        &pool,
        now(),
        &ops(),
        &ResolveTarget::Batch(1),
        QueueStatus::Submitted,
        Some(centralized.clone()),
    )
    .await
    .unwrap();

    assert_eq!(resolved.rows_affected, 2);
    assert_eq!(resolved.campaign.as_deref(), Some("spring"));
    assert_eq!(
        statuses(&pool, 1).await,
        ["submitted", "submitted", "submitted"]
    );
    let batch: (Option<i32>, Option<String>) =
        sqlx::query_as("SELECT total_calls, batch_status FROM call_batches WHERE batch_id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(batch, (Some(3), Some("submitted".into())));
    let recorded: (String, i64, Value, Value) =
        sqlx::query_as("SELECT action, rows_affected, target, detail FROM operator_actions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded.0, "queue.resolve");
    assert_eq!(recorded.1, 2);
    assert_eq!(recorded.2["batch_id"], 1);
    assert_eq!(recorded.3["as"], "submitted");
    assert_eq!(recorded.3["centralized"], centralized);

    // Settled now: resolving the batch again finds nothing to settle.
    let again = queue::resolve(
        &pool,
        now(),
        &ops(),
        &ResolveTarget::Batch(1),
        QueueStatus::Submitted,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        again.to_string().contains("no needs_review rows"),
        "{again}"
    );
}

#[tokio::test]
async fn resolve_as_pending_sends_the_rows_again_without_reconciling() {
    let (_db, pool) = migrated().await;
    campaign_with(&pool, "spring", &[(1, &["needs_review"])]).await;
    sqlx::query("UPDATE local_call_queue SET attempt_started_at = now(), retry_count = 2")
        .execute(&pool)
        .await
        .unwrap();
    let id: i32 = sqlx::query_scalar("SELECT id FROM local_call_queue")
        .fetch_one(&pool)
        .await
        .unwrap();

    queue::resolve(
        &pool,
        now(),
        &ops(),
        &ResolveTarget::Ids(vec![id]),
        QueueStatus::Pending,
        None,
    )
    .await
    .unwrap();

    let row: (String, Option<DateTime<Utc>>, i32, DateTime<Utc>) = sqlx::query_as(
        "SELECT queue_status, attempt_started_at, retry_count, next_attempt_at FROM local_call_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, ("pending".into(), None, 0, now()));

    // Nothing else is a resolution.
    let error = queue::resolve(
        &pool,
        now(),
        &ops(),
        &ResolveTarget::Ids(vec![id]),
        QueueStatus::Failed,
        None,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("not failed"), "{error}");
}

#[tokio::test]
async fn figures_count_each_status_and_an_active_campaign_with_nothing_waiting_reads_completed() {
    let (_db, pool) = migrated().await;
    campaign_with(
        &pool,
        "spring",
        &[(
            1,
            &[
                "submitted",
                "submitted",
                "failed",
                "needs_review",
                "cancelled",
                "suppressed",
            ],
        )],
    )
    .await;
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
         VALUES ('a', 'ACME', 1, '1', 'completed'), ('b', 'ACME', 1, '2', 'busy')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // What submitter and persister keep on the batch: two numbers accepted, the calls
    // counted, the answered call's 120 seconds, the busy number exhausted.
    sqlx::query(
        "UPDATE call_batches SET total_calls = 2, answered_seconds = 120, exhausted_calls = 1
          WHERE batch_id = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("SELECT callbridge_refresh_batch(1)")
        .execute(&pool)
        .await
        .unwrap();
    campaign_with(&pool, "empty", &[]).await;

    let listed = campaign::list(&pool).await.unwrap();

    assert_eq!(listed.len(), 2);
    let spring = &listed[0];
    assert_eq!(spring.name, "spring");
    assert_eq!(spring.status, CampaignStatus::Completed);
    let json = serde_json::to_value(spring).unwrap();
    for (field, expected) in [
        ("numbers", 6),
        ("waiting", 0),
        ("submitted", 2),
        ("reached", 1),
        ("not_reached", 1),
        ("failed", 1),
        ("needs_review", 1),
        ("cancelled", 1),
        ("suppressed", 1),
        // Calls placed: the two numbers the centralized system accepted.
        ("attempts", 2),
        ("redials", 0),
        ("exhausted", 1),
        ("batches", 1),
        ("answered_seconds", 120),
    ] {
        assert_eq!(json[field], expected, "{field}");
    }
    assert_eq!(json["asr"], 0.5, "one answered call of two attempts");
    assert_eq!(json["acd_seconds"], 120.0);
    assert_eq!(
        serde_json::to_value(&listed[1]).unwrap()["asr"],
        Value::Null
    );
    assert_eq!(json["status"], "completed");
    assert_eq!(json["name"], "spring");
    assert_eq!(json["time_zone"], "UTC");
    assert_eq!(
        listed[1].status,
        CampaignStatus::Active,
        "nothing enqueued yet"
    );
}

#[tokio::test]
async fn enqueue_into_an_existing_campaign_keeps_its_rules_and_refuses_other_ones() {
    let (_db, pool) = migrated().await;
    let rules = RulesChange {
        max_per_minute: Some(Some(60)),
        ..RulesChange::default()
    };
    let mut conn = pool.acquire().await.unwrap();
    let first = campaign::for_enqueue(&mut conn, "spring", &rules, now())
        .await
        .unwrap();
    let again = campaign::for_enqueue(&mut conn, "spring", &rules, now())
        .await
        .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.id, again.id);
    assert_eq!(again.rules.max_per_minute, Some(60));
    // No rule options: adds to it as it is.
    campaign::for_enqueue(&mut conn, "spring", &RulesChange::default(), now())
        .await
        .unwrap();

    let other = RulesChange {
        max_per_minute: Some(Some(120)),
        ..RulesChange::default()
    };
    let error = campaign::for_enqueue(&mut conn, "spring", &other, now())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("campaign set"), "{error}");
    drop(conn);

    campaign::cancel(&pool, now(), &ops(), "spring")
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let error = campaign::for_enqueue(&mut conn, "spring", &RulesChange::default(), now())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot be added to"), "{error}");
}

#[tokio::test]
async fn a_redial_policy_and_a_daily_cap_are_stored_as_columns_and_shown() {
    let (_db, pool) = migrated().await;
    let policy =
        callbridge_types::campaign::RedialPolicy::parse("busy=2x15m,no_answer=1x60m").unwrap();
    let rules = RulesChange {
        redial: Some(policy),
        max_attempts_per_day: Some(Some(3)),
        ..RulesChange::default()
    };
    let mut conn = pool.acquire().await.unwrap();
    campaign::for_enqueue(&mut conn, "spring", &rules, now())
        .await
        .unwrap();
    drop(conn);
    // Retries and interval of busy, no_answer and failed, then the cap, as text.
    let columns: String = sqlx::query_scalar(
        "SELECT concat_ws(',', redial_busy_retries, redial_busy_interval_secs,
                          redial_no_answer_retries, redial_no_answer_interval_secs,
                          redial_failed_retries, coalesce(redial_failed_interval_secs::text, '-'),
                          max_attempts_per_day)
           FROM campaigns WHERE name = 'spring'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(columns, "2,900,1,3600,0,-,3");
    let shown = campaign::show(&pool, "spring").await.unwrap();
    assert_eq!(
        shown.rules.redial.as_deref(),
        Some("busy=2x15m,no_answer=1x1h")
    );
    assert_eq!(shown.rules.max_attempts_per_day, Some(3));

    let change = RulesChange {
        redial: Some(callbridge_types::campaign::RedialPolicy::parse("timeout=1x30m").unwrap()),
        ..RulesChange::default()
    };
    let set = campaign::set(&pool, now(), &ops(), "spring", &change)
        .await
        .unwrap();
    assert_eq!(set.detail["before"]["redial"], "busy=2x15m,no_answer=1x1h");
    assert_eq!(set.detail["after"]["redial"], "timeout=1x30m");
    let shown = campaign::show(&pool, "spring").await.unwrap();
    assert_eq!(shown.rules.redial.as_deref(), Some("timeout=1x30m"));
    assert_eq!(shown.rules.max_attempts_per_day, Some(3), "kept");

    let removed = RulesChange {
        redial: Some(callbridge_types::campaign::RedialPolicy::NONE),
        max_attempts_per_day: Some(None),
        ..RulesChange::default()
    };
    campaign::set(&pool, now(), &ops(), "spring", &removed)
        .await
        .unwrap();
    let shown = campaign::show(&pool, "spring").await.unwrap();
    assert_eq!(
        (shown.rules.redial, shown.rules.max_attempts_per_day),
        (None, None)
    );
}
