//! The per-day cap on calls to one number holds across campaigns at the moment of
//! sending: a number enqueued into two campaigns with `max_attempts_per_day` 1 reaches
//! the centralized system (the simulator's ground truth) once that day, whatever
//! replicas claim its rows at once; the other row waits, unpolled, for its campaign's
//! first opening of the next local day, and goes then. Time is the submitter's
//! injectable clock.

#[path = "submitter_common/mod.rs"]
mod common;

use std::sync::Arc;

use callbridge_runtime::health::Readiness;
use callbridge_submitter::Submitter;
use callbridge_types::clock::ManualClock;
use chrono::{DateTime, TimeDelta, Utc};
use common::{ACCOUNT_CODE, Harness, harness, numbers};
use serde_json::json;

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// A campaign with at most `cap` calls a day to one number, in Kolkata's time, with an
/// optional calling window (`window_start`, `window_end` as SQL values).
async fn campaign(h: &Harness, name: &str, cap: i32, window: Option<(&str, &str)>) -> i32 {
    let (start, end) = window.unzip();
    sqlx::query_scalar(
        "INSERT INTO campaigns (name, max_attempts_per_day, time_zone, window_start, window_end)
         VALUES ($1, $2, 'Asia/Kolkata', $3::time, $4::time) RETURNING id",
    )
    .bind(name)
    .bind(cap)
    .bind(start)
    .bind(end)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

/// Queues `numbers` (national, with their E.164 form) as batch `batch_id` of `campaign`,
/// due at `due`, as `callbridge enqueue` writes them.
async fn enqueue(
    h: &Harness,
    campaign: i32,
    batch_id: i32,
    numbers: &[String],
    due: DateTime<Utc>,
) {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, batch_status, campaign_id)
         VALUES ($1, $2, 'pending', $3)",
    )
    .bind(batch_id)
    .bind(ACCOUNT_CODE)
    .bind(campaign)
    .execute(&h.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO local_call_queue
                (phone_number, phone_e164, batch_id, campaign_id, next_attempt_at)
         SELECT number, '+91' || number, $1, $2, $4 FROM unnest($3::text[]) AS number",
    )
    .bind(batch_id)
    .bind(campaign)
    .bind(numbers)
    .bind(due)
    .execute(&h.pool)
    .await
    .unwrap();
}

fn submitter(h: &Harness, clock: &ManualClock, extra: &[(&str, &str)]) -> Submitter {
    Submitter::with_clock(
        h.pool.clone(),
        &h.config(extra),
        Readiness::new(),
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// How many times the simulator accepted `number`, in any batch.
fn accepted(h: &Harness, number: &str) -> u32 {
    let truth = h.sim.ground_truth(None);
    truth
        .batches
        .keys()
        .map(|batch| truth.accepted_count(*batch, number))
        .sum()
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    batch_id: i32,
    queue_status: String,
    next_attempt_at: DateTime<Utc>,
    deferred_by_campaign: bool,
}

async fn rows_of(h: &Harness, batch_id: i32) -> Vec<Row> {
    sqlx::query_as(
        "SELECT batch_id, queue_status, next_attempt_at, deferred_by_campaign
           FROM local_call_queue WHERE batch_id = $1 ORDER BY id",
    )
    .bind(batch_id)
    .fetch_all(&h.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_in_two_capped_campaigns_is_called_once_a_day_and_the_next_day_again() {
    let h = harness(json!({})).await;
    // 10:00 in Kolkata.
    let clock = ManualClock::new(utc("2026-06-15T04:30:00Z"));
    let a = campaign(&h, "a", 1, None).await;
    // b calls 09:00-18:00 Kolkata time.
    let b = campaign(&h, "b", 1, Some(("09:00", "18:00"))).await;
    let shared = vec!["9876543210".to_owned()];
    let due = clock_now(&clock) - TimeDelta::minutes(1);
    enqueue(&h, a, 41, &shared, due).await;
    enqueue(&h, b, 42, &shared, due).await;
    let submitter = submitter(&h, &clock, &[]);

    let report = submitter.drain_once().await.unwrap();

    assert_eq!(
        (report.submitted, report.held_by_daily_cap),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(accepted(&h, &shared[0]), 1, "one call today");
    h.assert_each_accepted_once(41, &shared);
    // b's row waits, not polled for, until b's first opening tomorrow: 09:00 in Kolkata.
    let held = rows_of(&h, 42).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].queue_status, "pending");
    assert_eq!(held[0].next_attempt_at, utc("2026-06-16T03:30:00Z"));
    assert!(held[0].deferred_by_campaign);
    assert_eq!(held[0].batch_id, 42);

    // Later the same day nothing more goes out, however often the submitter looks.
    clock.set(utc("2026-06-15T18:29:59Z"));
    for _ in 0..3 {
        let again = submitter.drain_once().await.unwrap();
        assert_eq!(again.claimed, 0, "{again:?}");
    }
    assert_eq!(accepted(&h, &shared[0]), 1);

    // The next day, at b's opening, the second call goes.
    clock.set(utc("2026-06-16T03:30:00Z"));
    let next_day = submitter.drain_once().await.unwrap();
    assert_eq!(next_day.submitted, 1, "{next_day:?}");
    assert_eq!(accepted(&h, &shared[0]), 2);
    assert_eq!(
        h.sim.ground_truth(Some(42)).accepted_count(42, &shared[0]),
        1
    );
    assert_eq!(rows_of(&h, 42).await[0].queue_status, "submitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_claiming_one_numbers_rows_at_once_send_it_once_a_day() {
    let h = harness(json!({})).await;
    let clock = ManualClock::new(utc("2026-06-15T04:30:00Z"));
    let a = campaign(&h, "a", 1, None).await;
    let b = campaign(&h, "b", 1, None).await;
    let due = clock_now(&clock) - TimeDelta::minutes(1);
    // Rounds of 20 numbers, each in a batch of a and a batch of b.
    let rounds = 5;
    let mut all = Vec::new();
    for round in 0..rounds {
        let shared = numbers(60 + round, 20);
        enqueue(&h, a, 100 + 2 * round, &shared, due).await;
        enqueue(&h, b, 101 + 2 * round, &shared, due).await;
        all.extend(shared);
    }
    // A claim takes one batch of 20: the replicas take a's and b's batches side by side.
    let limit = [("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "20")];
    let replicas = [submitter(&h, &clock, &limit), submitter(&h, &clock, &limit)];

    loop {
        let (one, two) = tokio::join!(replicas[0].drain_once(), replicas[1].drain_once());
        let (one, two) = (one.unwrap(), two.unwrap());
        if one.claimed == 0 && two.claimed == 0 {
            break;
        }
    }

    for number in &all {
        assert_eq!(
            accepted(&h, number),
            1,
            "{number} was called more than once today"
        );
    }
    let statuses = h.statuses().await;
    assert_eq!(statuses.get("submitted"), Some(&all.len()), "{statuses:?}");
    assert_eq!(statuses.get("pending"), Some(&all.len()), "{statuses:?}");

    // Tomorrow (no window: from midnight in Kolkata) each goes once more.
    clock.set(utc("2026-06-15T18:30:00Z"));
    loop {
        let (one, two) = tokio::join!(replicas[0].drain_once(), replicas[1].drain_once());
        let (one, two) = (one.unwrap(), two.unwrap());
        if one.claimed == 0 && two.claimed == 0 {
            break;
        }
    }
    for number in &all {
        assert_eq!(accepted(&h, number), 2, "{number}: one call a day");
    }
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    use callbridge_types::clock::Clock;
    clock.now()
}
