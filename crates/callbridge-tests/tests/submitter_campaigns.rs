//! Campaign rules in the submitter, against real Postgres and the simulator over real
//! HTTP, with the clock injected: pause and resume, cancel with two replicas, the calling
//! window per row zone, and pacing across two replicas judged by the simulator's own
//! acceptance times.

#[path = "submitter_common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use callbridge_ops::audit::Actor;
use callbridge_runtime::health::Readiness;
use callbridge_submitter::Submitter;
use callbridge_types::clock::{Clock, ManualClock, ScaledClock, SharedClock, SystemClock};
use chrono::{DateTime, TimeDelta, Utc};
use common::{ACCOUNT_CODE, Harness, harness, numbers};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const POLL_INTERVAL: Duration = Duration::from_millis(200);

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// Creates campaign `name` with the rules given as SQL column values.
async fn create_campaign(pool: &PgPool, name: &str, rules: &[(&str, &str)]) -> i32 {
    let columns: Vec<&str> = rules.iter().map(|(column, _)| *column).collect();
    let values: Vec<&str> = rules.iter().map(|(_, value)| *value).collect();
    let (columns, values) = if rules.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!(", {}", columns.join(", ")),
            format!(", {}", values.join(", ")),
        )
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO campaigns (name{columns}) VALUES ($1{values}) RETURNING id"
    )))
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Queues `numbers` of the campaign under `batch_id` (with its `call_batches` row, as
/// `callbridge enqueue` writes it), due at `due`, in `time_zone` (else the campaign's).
async fn enqueue(
    pool: &PgPool,
    campaign_id: i32,
    batch_id: i32,
    numbers: &[String],
    time_zone: Option<&str>,
    due: DateTime<Utc>,
) {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, campaign_id) VALUES ($1, $2, $3)
         ON CONFLICT (batch_id) DO NOTHING",
    )
    .bind(batch_id)
    .bind(ACCOUNT_CODE)
    .bind(campaign_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, campaign_id, time_zone, next_attempt_at)
         SELECT number, $1, $2, $3, $4 FROM unnest($5::text[]) AS t(number)",
    )
    .bind(batch_id)
    .bind(campaign_id)
    .bind(time_zone)
    .bind(due)
    .bind(numbers)
    .execute(pool)
    .await
    .unwrap();
}

fn submitter(h: &Harness, clock: SharedClock, extra: &[(&str, &str)]) -> Submitter {
    let mut settings = vec![("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "200")];
    settings.extend_from_slice(extra);
    Submitter::with_clock(
        h.pool.clone(),
        &h.config(&settings),
        Readiness::new(),
        clock,
    )
    .unwrap()
}

/// Runs `submitter`'s loop until the returned token is cancelled.
fn spawn(submitter: Submitter) -> (CancellationToken, JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        let wake = Arc::new(Notify::new());
        submitter.run(&wake, &stop).await;
    });
    (shutdown, handle)
}

async fn stop(replicas: Vec<(CancellationToken, JoinHandle<()>)>) {
    for (shutdown, _) in &replicas {
        shutdown.cancel();
    }
    for (_, handle) in replicas {
        handle.await.unwrap();
    }
}

/// Row counts by queue status.
async fn statuses(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as("SELECT queue_status, count(*) FROM local_call_queue GROUP BY queue_status")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn wait_for(what: &str, patience: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, sqlx::FromRow)]
struct BatchCounts {
    batch_id: i32,
    total_calls: Option<i32>,
    completed_calls: Option<i32>,
    failed_calls: Option<i32>,
    batch_status: Option<String>,
    logged: i64,
}

/// Every number the simulator accepted, with how often.
fn accepted(h: &Harness) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for call in h.sim.ground_truth(None).calls {
        *counts.entry(call.phone_number).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_inserts_within_a_poll_interval_and_resume_sends_every_number_once() {
    // Slow requests and one batch per claim, so the campaign is mid-way when paused.
    let h = harness(json!({"latency_ms": 60})).await;
    let campaign = create_campaign(&h.pool, "spring", &[]).await;
    let mut all = Vec::new();
    for batch in 1..=40 {
        let sent = numbers(batch, 20);
        enqueue(&h.pool, campaign, batch, &sent, None, Utc::now()).await;
        all.extend(sent);
    }
    let replica = spawn(submitter(
        &h,
        SystemClock::shared(),
        &[("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "20")],
    ));
    wait_for("a few batches sent", Duration::from_secs(30), async || {
        h.sim.ground_truth(None).calls.len() >= 100
    })
    .await;

    callbridge_ops::campaign::pause(&h.pool, Utc::now(), &Actor::cli("test"), "spring")
        .await
        .unwrap();
    let paused_at = Utc::now();
    tokio::time::sleep(POLL_INTERVAL * 5).await;

    let late: Vec<DateTime<Utc>> = h
        .sim
        .ground_truth(None)
        .calls
        .iter()
        .map(|call| call.accepted_at)
        .filter(|at| *at > paused_at + TimeDelta::from_std(POLL_INTERVAL).unwrap())
        .collect();
    assert!(
        late.is_empty(),
        "inserted after the pause was committed plus a poll interval: {late:?}"
    );
    let waiting = statuses(&h.pool).await.get("pending").copied().unwrap_or(0);
    assert!(waiting > 0, "the pause came after the campaign was sent");
    let deferred: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM local_call_queue WHERE queue_status = 'pending' AND deferred_by_campaign",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(deferred > 0, "the paused rows wait without being polled");

    callbridge_ops::campaign::resume(&h.pool, Utc::now(), &Actor::cli("test"), "spring")
        .await
        .unwrap();
    wait_for("every row submitted", Duration::from_secs(60), async || {
        statuses(&h.pool).await == BTreeMap::from([("submitted".to_owned(), all.len() as i64)])
    })
    .await;
    stop(vec![replica]).await;

    let accepted = accepted(&h);
    assert_eq!(accepted.len(), all.len(), "every number accepted");
    assert!(
        accepted.values().all(|count| *count == 1),
        "a number was accepted twice: {:?}",
        accepted
            .iter()
            .filter(|(_, count)| **count > 1)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_two_replicas_leaves_waiting_rows_cancelled_and_never_sent() {
    let h = harness(json!({"latency_ms": 60})).await;
    let campaign = create_campaign(&h.pool, "mistake", &[]).await;
    for batch in 1..=40 {
        enqueue(
            &h.pool,
            campaign,
            batch,
            &numbers(batch, 20),
            None,
            Utc::now(),
        )
        .await;
    }
    let limit = [("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "20")];
    let replicas = vec![
        spawn(submitter(&h, SystemClock::shared(), &limit)),
        spawn(submitter(&h, SystemClock::shared(), &limit)),
    ];
    wait_for("a few batches sent", Duration::from_secs(30), async || {
        h.sim.ground_truth(None).calls.len() >= 100
    })
    .await;

    callbridge_ops::campaign::cancel(&h.pool, Utc::now(), &Actor::cli("test"), "mistake")
        .await
        .unwrap();
    wait_for("nothing waiting", Duration::from_secs(30), async || {
        let now = statuses(&h.pool).await;
        !now.contains_key("pending") && !now.contains_key("submitting")
    })
    .await;
    // Rounds in flight had their chance to send something they should not.
    tokio::time::sleep(POLL_INTERVAL * 3).await;
    stop(replicas).await;

    let accepted = accepted(&h);
    let rows: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT batch_id, phone_number, queue_status FROM local_call_queue ORDER BY id",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    let mut submitted_per_batch: BTreeMap<i32, i32> = BTreeMap::new();
    let mut cancelled_per_batch: BTreeMap<i32, i32> = BTreeMap::new();
    for (batch_id, number, status) in &rows {
        match status.as_str() {
            "submitted" => {
                assert_eq!(accepted.get(number), Some(&1), "{number} accepted once");
                *submitted_per_batch.entry(*batch_id).or_default() += 1;
            }
            "cancelled" => {
                assert_eq!(accepted.get(number), None, "cancelled {number} was sent");
                *cancelled_per_batch.entry(*batch_id).or_default() += 1;
            }
            other => panic!("row of batch {batch_id} left {other}"),
        }
    }
    assert!(
        !cancelled_per_batch.is_empty(),
        "the cancel came after the campaign was sent"
    );
    assert_eq!(
        accepted.len(),
        submitted_per_batch.values().sum::<i32>() as usize
    );
    let batches: Vec<BatchCounts> = sqlx::query_as(
        "SELECT b.batch_id, b.total_calls, b.completed_calls, b.failed_calls, b.batch_status,
                (SELECT count(*) FROM call_logs l WHERE l.batch_id = b.batch_id) AS logged
           FROM call_batches b ORDER BY b.batch_id",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    for BatchCounts {
        batch_id,
        total_calls: total,
        completed_calls: completed,
        failed_calls: failed,
        batch_status: status,
        logged,
    } in batches
    {
        let submitted = submitted_per_batch.get(&batch_id).copied().unwrap_or(0);
        assert_eq!(
            total.unwrap_or(0),
            submitted,
            "batch {batch_id} total_calls"
        );
        assert_eq!(
            i64::from(completed.unwrap_or(0) + failed.unwrap_or(0)),
            logged,
            "batch {batch_id} counters against call_logs"
        );
        let expected = if submitted == 0 {
            "cancelled"
        } else {
            "submitted"
        };
        assert_eq!(status.as_deref(), Some(expected), "batch {batch_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_sends_new_york_rows_until_21_00_and_kolkata_rows_in_their_own_hours() {
    let h = harness(json!({})).await;
    // 2026-12-04 20:59:30 in New York (EST, UTC-5) is 07:29:30 on the 5th in Kolkata.
    let clock = ManualClock::new(utc("2026-12-05T01:59:30Z"));
    let campaign = create_campaign(
        &h.pool,
        "calling-hours",
        &[
            ("window_start", "'08:00'"),
            ("window_end", "'21:00'"),
            ("time_zone", "'America/New_York'"),
        ],
    )
    .await;
    let (new_york, kolkata, new_york_late, new_york_after) =
        (numbers(1, 3), numbers(2, 3), numbers(3, 3), numbers(4, 3));
    enqueue(&h.pool, campaign, 1, &new_york, None, clock.now()).await;
    enqueue(
        &h.pool,
        campaign,
        2,
        &kolkata,
        Some("Asia/Kolkata"),
        clock.now(),
    )
    .await;
    let submitter = submitter(&h, Arc::new(clock.clone()), &[]);

    let first = submitter.drain_once().await.unwrap();
    assert_eq!((first.submitted, first.deferred), (3, 3), "{first:?}");
    let kolkata_due: Vec<(DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT next_attempt_at, deferred_by_campaign FROM local_call_queue WHERE batch_id = 2",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert!(
        kolkata_due
            .iter()
            .all(|row| *row == (utc("2026-12-05T02:30:00Z"), true)),
        "Kolkata rows wait for 08:00 there: {kolkata_due:?}"
    );

    // The last second of New York's window still sends.
    clock.set(utc("2026-12-05T01:59:59Z"));
    enqueue(&h.pool, campaign, 3, &new_york_late, None, clock.now()).await;
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 3);

    // 21:00 New York: closed until 08:00 tomorrow there.
    clock.set(utc("2026-12-05T02:00:00Z"));
    enqueue(&h.pool, campaign, 4, &new_york_after, None, clock.now()).await;
    let closed = submitter.drain_once().await.unwrap();
    assert_eq!((closed.submitted, closed.deferred), (0, 3), "{closed:?}");
    let new_york_due: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT next_attempt_at FROM local_call_queue WHERE batch_id = 4")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert!(
        new_york_due
            .iter()
            .all(|due| *due == utc("2026-12-05T13:00:00Z")),
        "{new_york_due:?}"
    );

    // Nothing is claimed, let alone sent, until a row's opening.
    clock.set(utc("2026-12-05T02:29:59Z"));
    assert_eq!(submitter.drain_once().await.unwrap().claimed, 0);
    clock.set(utc("2026-12-05T02:30:00Z"));
    assert_eq!(submitter.drain_once().await.unwrap().submitted, 3);

    let accepted: BTreeSet<String> = accepted(&h).into_keys().collect();
    let expected: BTreeSet<String> = new_york
        .iter()
        .chain(&new_york_late)
        .chain(&kolkata)
        .cloned()
        .collect();
    assert_eq!(accepted, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_holds_every_minute_of_acceptances_to_the_limit_across_two_replicas() {
    const FACTOR: f64 = 5.0;
    let h = harness(json!({})).await;
    let real_start = Utc::now();
    let clock = ScaledClock::new(real_start, FACTOR);
    // The simulator stamps acceptances in real time; this is the clock's reading then.
    let on_clock = |real: DateTime<Utc>| {
        real_start
            + TimeDelta::from_std((real - real_start).to_std().unwrap().mul_f64(FACTOR)).unwrap()
    };
    let campaign = create_campaign(&h.pool, "paced", &[("max_per_minute", "600")]).await;
    let mut all = Vec::new();
    for batch in 1..=3 {
        let sent = numbers(batch, 1000);
        enqueue(&h.pool, campaign, batch, &sent, None, real_start).await;
        all.extend(sent);
    }
    let shared: SharedClock = Arc::new(clock.clone());
    let replicas = vec![
        spawn(submitter(&h, Arc::clone(&shared), &[])),
        spawn(submitter(&h, Arc::clone(&shared), &[])),
    ];
    wait_for(
        "every row submitted",
        clock.real_time_until(real_start + TimeDelta::minutes(7)),
        async || statuses(&h.pool).await.get("submitted") == Some(&(all.len() as i64)),
    )
    .await;
    stop(replicas).await;

    let mut accepted_at: Vec<DateTime<Utc>> = h
        .sim
        .ground_truth(None)
        .calls
        .iter()
        .map(|call| on_clock(call.accepted_at))
        .collect();
    assert_eq!(accepted_at.len(), all.len(), "each number accepted once");
    accepted_at.sort();
    // The busiest 60-second span (both ends included) of acceptance times.
    let mut busiest = 0;
    let mut first = 0;
    for last in 0..accepted_at.len() {
        while accepted_at[last] - accepted_at[first] > TimeDelta::seconds(60) {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    assert!(busiest <= 600, "{busiest} numbers accepted within 60 s");
    let took = *accepted_at.last().unwrap() - real_start;
    assert!(
        took >= TimeDelta::seconds(270) && took <= TimeDelta::seconds(330),
        "3,000 numbers at 600 a minute took {took} (5 min ± 10 %)"
    );
}
