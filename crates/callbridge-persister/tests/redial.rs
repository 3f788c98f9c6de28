//! Redials created by the persister in the transaction that stores a terminal outcome:
//! exactly one per attempt whatever duplicates, orderings and replicas, due the policy's
//! interval after the outcome was stored (by the injected clock) and inside the
//! campaign's window, in a new batch; none for an outcome the policy does not name, for
//! a used-up attempt (then the number is exhausted, counted once), for a cancelled
//! campaign or for a number on the do-not-call list; and the daily cap counted across
//! campaigns.

mod common;

use std::sync::Arc;

use callbridge_types::clock::ManualClock;
use callbridge_types::envelope::Envelope;
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::json;
use sqlx::PgPool;

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// Creates a campaign with the given extra columns (SQL values).
async fn campaign(pool: &PgPool, name: &str, rules: &[(&str, &str)]) -> i32 {
    let columns: String = rules.iter().map(|(c, _)| format!(", {c}")).collect();
    let values: String = rules.iter().map(|(_, v)| format!(", {v}")).collect();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO campaigns (name{columns}) VALUES ($1{values}) RETURNING id"
    )))
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A submitted queue row of `campaign` for `phone` in `batch` (its batch created as the
/// submitter leaves it); returns the row's id.
async fn submitted_row(pool: &PgPool, campaign: i32, batch: i32, phone: &str) -> i32 {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, total_calls, batch_status, campaign_id)
         VALUES ($1, $2, 0, 'submitted', $3)
         ON CONFLICT (batch_id) DO NOTHING",
    )
    .bind(batch)
    .bind(ACCOUNT_CODE)
    .bind(campaign)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE call_batches SET total_calls = total_calls + 1 WHERE batch_id = $1")
        .bind(batch)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "INSERT INTO local_call_queue
                (phone_number, batch_id, queue_status, campaign_id, custom_data, submitted_at)
         VALUES ($1, $2, 'submitted', $3, '{\"customer_id\": \"C1\"}', now())
         RETURNING id",
    )
    .bind(phone)
    .bind(batch)
    .bind(campaign)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The events of one call of `phone` in `batch` ending in `outcome`.
fn call(batch: i32, call_id: &str, phone: &str, outcome: &str) -> Vec<Envelope> {
    let with_phone = |extra: serde_json::Value| {
        let mut extra = extra;
        extra["phone_number"] = json!(phone);
        extra
    };
    vec![
        call_event(
            batch,
            call_id,
            "started",
            with_phone(json!({"duration": 0})),
        ),
        call_event(
            batch,
            call_id,
            outcome,
            with_phone(json!({"end_time": "2026-06-15T12:00:30Z", "duration": 0})),
        ),
    ]
}

#[derive(Debug, sqlx::FromRow)]
struct Redial {
    id: i32,
    batch_id: i32,
    phone_number: String,
    attempt: i32,
    queue_status: String,
    next_attempt_at: DateTime<Utc>,
    custom_data: Option<serde_json::Value>,
    campaign_id: Option<i32>,
}

async fn redials_of(pool: &PgPool, row: i32) -> Vec<Redial> {
    sqlx::query_as(
        "SELECT id, batch_id, phone_number, attempt, queue_status, next_attempt_at, custom_data,
                campaign_id
           FROM local_call_queue WHERE redial_of = $1",
    )
    .bind(row)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until the persister settled `row` (its call's outcome and any redial are then
/// committed, in that one transaction).
async fn wait_settled(pool: &PgPool, row: i32) {
    wait_until("the row is settled", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT settled_status IS NOT NULL FROM local_call_queue WHERE id = $1",
        )
        .bind(row)
        .fetch_one(pool)
        .await
        .unwrap()
    })
    .await;
}

async fn exhausted(pool: &PgPool, batch: i32) -> i32 {
    sqlx::query_scalar("SELECT exhausted_calls FROM call_batches WHERE batch_id = $1")
        .bind(batch)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Marks `row` sent, as the submitter would once the centralized system took it.
async fn mark_submitted(pool: &PgPool, row: i32) {
    sqlx::query(
        "UPDATE local_call_queue SET queue_status = 'submitted', submitted_at = now() WHERE id = $1",
    )
    .bind(row)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE call_batches SET total_calls = total_calls + 1, batch_status = 'submitted'
          WHERE batch_id = (SELECT batch_id FROM local_call_queue WHERE id = $1)",
    )
    .bind(row)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn busy_duplicated_reordered_and_on_two_replicas_is_redialled_once_per_attempt() {
    let h = Harness::new().await;
    let now = utc("2026-06-15T12:01:00Z");
    let clock = ManualClock::new(now);
    let spring = campaign(
        &h.pool,
        "spring",
        &[
            ("redial_busy_retries", "2"),
            ("redial_busy_interval_secs", "900"),
        ],
    )
    .await;
    let first = submitted_row(&h.pool, spring, 600, "9876543210").await;

    // Two replicas, one storing event by event, one in batches.
    let replicas = [
        RunningPersister::start_with_clock(h.config(1), Arc::new(clock.clone())).await,
        RunningPersister::start_with_clock(h.config(8), Arc::new(clock.clone())).await,
    ];
    let mut attempt_row = first;
    let mut batch = 600;
    for attempt in 1..=3 {
        let events = call(batch, &format!("call-{attempt}"), "9876543210", "busy");
        // Terminal first, then started, then the terminal again (a sender's retry), and
        // a second copy of everything on top.
        let burst = [
            events[1].clone(),
            events[0].clone(),
            events[1].clone(),
            events[1].clone(),
            events[0].clone(),
        ];
        h.publish_all(&burst).await;
        // With two replicas the sentinel of `settle` can overtake the other one's batch:
        // wait for this attempt's row to be settled instead.
        wait_settled(&h.pool, attempt_row).await;

        let redials = redials_of(&h.pool, attempt_row).await;
        if attempt == 3 {
            assert!(redials.is_empty(), "busy=2: a third busy call is the last");
            assert_eq!(exhausted(&h.pool, batch).await, 1);
            break;
        }
        assert_eq!(redials.len(), 1, "attempt {attempt}: {redials:?}");
        let redial = &redials[0];
        assert_eq!(redial.attempt, attempt + 1);
        assert_eq!(redial.queue_status, "pending");
        assert_eq!(redial.phone_number, "9876543210");
        assert_eq!(redial.campaign_id, Some(spring));
        assert_eq!(redial.custom_data, Some(json!({"customer_id": "C1"})));
        assert_eq!(
            redial.next_attempt_at,
            clock.now_plus(TimeDelta::minutes(15))
        );
        assert_ne!(redial.batch_id, batch, "a redial goes out in a new batch");
        let (name, campaign_id): (String, Option<i32>) =
            sqlx::query_as("SELECT batch_name, campaign_id FROM call_batches WHERE batch_id = $1")
                .bind(redial.batch_id)
                .fetch_one(&h.pool)
                .await
                .unwrap();
        assert_eq!(
            (name.as_str(), campaign_id),
            ("spring (redial)", Some(spring))
        );
        assert_eq!(exhausted(&h.pool, batch).await, 0);

        // The submitter sends it; an hour later it ends busy again.
        mark_submitted(&h.pool, redial.id).await;
        clock.advance(TimeDelta::hours(1));
        attempt_row = redial.id;
        batch = redial.batch_id;
    }
    // A copy the first replica had prefetched but not stored goes back to the queue when
    // it stops: the other one, left alone, takes it, and the sentinel behind it shows it
    // is stored before that one stops too.
    let [first_replica, second_replica] = replicas;
    first_replica.stop().await;
    h.settle().await;
    second_replica.stop().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM local_call_queue")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "the number and its two redials");
    h.assert_all_acknowledged().await;
}

trait NowPlus {
    fn now_plus(&self, by: TimeDelta) -> DateTime<Utc>;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, by: TimeDelta) -> DateTime<Utc> {
        use callbridge_types::clock::Clock;
        self.now() + by
    }
}

#[tokio::test]
async fn only_named_outcomes_of_live_campaigns_are_redialled_and_inside_the_window() {
    let h = Harness::new().await;
    // 20:50 in New York (EDT): the window closes at 21:00.
    let now = utc("2026-06-16T00:50:00Z");
    let clock = ManualClock::new(now);
    let policy = [
        ("redial_busy_retries", "1"),
        ("redial_busy_interval_secs", "1200"),
        ("redial_no_answer_retries", "1"),
        ("redial_no_answer_interval_secs", "60"),
    ];
    let windowed = campaign(
        &h.pool,
        "windowed",
        &[
            policy[0],
            policy[1],
            policy[2],
            policy[3],
            ("window_start", "'08:00'"),
            ("window_end", "'21:00'"),
            ("time_zone", "'America/New_York'"),
        ],
    )
    .await;
    let cancelled = campaign(&h.pool, "cancelled", &[policy[0], policy[1]]).await;
    let paused = campaign(&h.pool, "paused", &[policy[0], policy[1]]).await;
    let busy_late = submitted_row(&h.pool, windowed, 610, "9000000001").await;
    let no_answer = submitted_row(&h.pool, windowed, 610, "9000000002").await;
    let completed = submitted_row(&h.pool, windowed, 610, "9000000003").await;
    let failed = submitted_row(&h.pool, windowed, 610, "9000000004").await;
    let of_cancelled = submitted_row(&h.pool, cancelled, 611, "9000000005").await;
    let of_paused = submitted_row(&h.pool, paused, 612, "9000000006").await;
    let opted_out = submitted_row(&h.pool, windowed, 610, "9000000007").await;
    // Enqueue writes each row's E.164 form; the redial keeps it.
    sqlx::query("UPDATE local_call_queue SET phone_e164 = '+91' || phone_number")
        .execute(&h.pool)
        .await
        .unwrap();
    // It opted out after its first call went out.
    sqlx::query("INSERT INTO do_not_call (phone_number, source) VALUES ('+919000000007', 'cli')")
        .execute(&h.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE campaigns SET status = 'cancelled' WHERE id = $1")
        .bind(cancelled)
        .execute(&h.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE campaigns SET status = 'paused' WHERE id = $1")
        .bind(paused)
        .execute(&h.pool)
        .await
        .unwrap();

    let mut events = Vec::new();
    events.extend(call(610, "w1", "9000000001", "busy"));
    events.extend(call(610, "w2", "9000000002", "no_answer"));
    events.extend(call(610, "w3", "9000000003", "completed"));
    events.extend(call(610, "w4", "9000000004", "failed"));
    events.extend(call(611, "x1", "9000000005", "busy"));
    events.extend(call(612, "p1", "9000000006", "busy"));
    events.extend(call(610, "w5", "9000000007", "busy"));
    h.publish_all(&events).await;
    let persister = RunningPersister::start_with_clock(h.config(8), Arc::new(clock.clone())).await;
    h.settle().await;
    // /metrics counts the redials by the outcome each repeats: the busy number of the
    // windowed campaign and the paused campaign's, and the unanswered one. (Batches in
    // flight at once may record theirs in any order: awaited, not read once.)
    let series = |metrics: &str, outcome: &str| -> Option<f64> {
        let name = format!("callbridge_redials_created_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name.as_str()))
            .and_then(|value| value.parse().ok())
    };
    wait_until("the redials are counted", || async {
        let metrics = persister.metrics().await;
        series(&metrics, "busy") == Some(2.0) && series(&metrics, "no_answer") == Some(1.0)
    })
    .await;
    let metrics = persister.metrics().await;
    for outcome in ["completed", "failed", "timeout"] {
        assert_eq!(series(&metrics, outcome), None, "{metrics}");
    }
    persister.stop().await;

    // Busy + 20 min is 21:10, after the window: the next opening, 08:00 EDT.
    let late = redials_of(&h.pool, busy_late).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].next_attempt_at, utc("2026-06-16T12:00:00Z"));
    // No answer + 1 min is 20:51, inside it.
    let soon = redials_of(&h.pool, no_answer).await;
    assert_eq!(soon[0].next_attempt_at, now + TimeDelta::minutes(1));
    assert_ne!(soon[0].batch_id, late[0].batch_id, "one batch per due time");
    // Not named: completed is reached, failed is exhausted.
    assert!(redials_of(&h.pool, completed).await.is_empty());
    assert!(redials_of(&h.pool, failed).await.is_empty());
    assert_eq!(exhausted(&h.pool, 610).await, 1);
    // A cancelled campaign gets none (and the number is not exhausted); a paused one
    // gets its redial, which waits with it.
    assert!(redials_of(&h.pool, of_cancelled).await.is_empty());
    assert_eq!(exhausted(&h.pool, 611).await, 0);
    assert_eq!(redials_of(&h.pool, of_paused).await.len(), 1);
    // A number on the do-not-call list is not called again.
    assert!(redials_of(&h.pool, opted_out).await.is_empty());
    let e164: Option<String> =
        sqlx::query_scalar("SELECT phone_e164 FROM local_call_queue WHERE redial_of = $1")
            .bind(no_answer)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(e164.as_deref(), Some("+919000000002"));

    let settled: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT id, settled_status FROM local_call_queue WHERE redial_of IS NULL ORDER BY id",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        settled,
        [
            (busy_late, Some("busy".to_owned())),
            (no_answer, Some("no_answer".to_owned())),
            (completed, Some("completed".to_owned())),
            (failed, Some("failed".to_owned())),
            (of_cancelled, Some("busy".to_owned())),
            (of_paused, Some("busy".to_owned())),
            (opted_out, Some("busy".to_owned())),
        ]
    );
}

#[tokio::test]
async fn the_daily_cap_counts_every_campaigns_calls_to_a_number() {
    let h = Harness::new().await;
    let now = utc("2026-06-15T10:00:00Z");
    let clock = ManualClock::new(now);
    // Both campaigns redial busy numbers every 10 minutes, three times; at most three
    // calls a day (UTC) to one number across them.
    let rules = [
        ("redial_busy_retries", "3"),
        ("redial_busy_interval_secs", "600"),
        ("max_attempts_per_day", "3"),
    ];
    let a = campaign(&h.pool, "a", &rules).await;
    let b = campaign(&h.pool, "b", &rules).await;
    let shared = "9111111111";
    let of_a = submitted_row(&h.pool, a, 620, shared).await;
    let of_b = submitted_row(&h.pool, b, 621, shared).await;
    // Both calls went out this morning; enqueue wrote each row's E.164 form, which the
    // cap counts a number by.
    sqlx::query(
        "UPDATE local_call_queue SET next_attempt_at = $1, phone_e164 = '+91' || phone_number",
    )
    .bind(now - TimeDelta::minutes(2))
    .execute(&h.pool)
    .await
    .unwrap();

    let mut events = call(620, "a1", shared, "busy");
    events.extend(call(621, "b1", shared, "busy"));
    h.publish_all(&events).await;
    // Two replicas race to redial the one number.
    let replicas = [
        RunningPersister::start_with_clock(h.config(1), Arc::new(clock.clone())).await,
        RunningPersister::start_with_clock(h.config(1), Arc::new(clock.clone())).await,
    ];
    wait_settled(&h.pool, of_a).await;
    wait_settled(&h.pool, of_b).await;
    for replica in replicas {
        replica.stop().await;
    }

    let mut dues = Vec::new();
    for row in [of_a, of_b] {
        let redials = redials_of(&h.pool, row).await;
        assert_eq!(redials.len(), 1, "each campaign redials its own row once");
        dues.push(redials[0].next_attempt_at);
    }
    dues.sort();
    // Two calls this morning and one redial make three: the other redial waits for the
    // next day (no window: its first instant).
    assert_eq!(
        dues,
        [now + TimeDelta::minutes(10), utc("2026-06-16T00:00:00Z")]
    );
}
