//! A campaign's rows carry the instant they may go out as their due time, so the
//! submitter's claim, which reads only due rows, never meets a row its rules hold:
//! `callbridge enqueue` stamps each row with its own zone's window opening, `campaign set`
//! and `resume` stamp the waiting rows again at once, and a new pace applies from the
//! change on. Real Postgres, the real CLI binary, the simulator over HTTP, and a manual
//! clock for the submitter.

#[path = "submitter_common/mod.rs"]
mod common;

#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod cli;

use std::collections::BTreeSet;
use std::sync::Arc;

use callbridge_ops::audit::Actor;
use callbridge_ops::{RulesChange, campaign};
use callbridge_runtime::health::Readiness;
use callbridge_submitter::{DrainReport, Submitter};
use callbridge_types::campaign::{CallingWindow, Tz, parse_hours};
use callbridge_types::clock::{Clock, ManualClock};
use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use common::{ACCOUNT_CODE, Harness, harness, numbers};
use serde_json::json;
use sqlx::PgPool;

const NEW_YORK: Tz = Tz::America__New_York;
const KOLKATA_NAME: &str = "Asia/Kolkata";

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

fn actor() -> Actor {
    Actor::cli("test")
}

fn submitter(h: &Harness, clock: &ManualClock) -> Submitter {
    Submitter::with_clock(
        h.pool.clone(),
        &h.config(&[]),
        Readiness::new(),
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// Rounds until one claims nothing; what they claimed, submitted and deferred, added up.
async fn drain(submitter: &Submitter) -> DrainReport {
    let mut total = DrainReport::default();
    loop {
        let round = submitter.drain_once().await.unwrap();
        total.claimed += round.claimed;
        total.submitted += round.submitted;
        total.deferred += round.deferred;
        if round.claimed == 0 {
            return total;
        }
    }
}

/// Every waiting row's id, due time, hold and last change, as one text: what the claim
/// (or anything else) would have to write to change.
async fn waiting_rows_fingerprint(pool: &PgPool, time_zone: Option<&str>) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(
                    concat_ws('/', id, next_attempt_at, deferred_by_campaign, updated_at,
                              queue_status),
                    ',' ORDER BY id), '')
           FROM local_call_queue
          WHERE time_zone IS NOT DISTINCT FROM $1 AND queue_status = 'pending'",
    )
    .bind(time_zone)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The numbers the simulator accepted, each checked to be accepted once.
fn accepted_once(h: &Harness) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for call in h.sim.ground_truth(None).calls {
        assert!(
            seen.insert(call.phone_number.clone()),
            "{} accepted twice",
            call.phone_number
        );
    }
    seen
}

/// A window of one hour that opens two hours from now in New York: closed now there, and
/// in Kolkata, whose clock is 9½ or 10½ hours ahead.
fn window_opening_in_two_hours(now: DateTime<Utc>) -> (String, NaiveTime) {
    let local = now.with_timezone(&NEW_YORK).time();
    let start = local.overflowing_add_signed(TimeDelta::hours(2)).0;
    let start = NaiveTime::parse_from_str(&start.format("%H:%M").to_string(), "%H:%M").unwrap();
    let end = start.overflowing_add_signed(TimeDelta::hours(1)).0;
    (
        format!("{}-{}", start.format("%H:%M"), end.format("%H:%M")),
        start,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_dates_each_row_at_its_zones_opening_and_the_claim_meets_none_before_it() {
    let h = harness(json!({})).await;
    let kolkata: Tz = KOLKATA_NAME.parse().unwrap();
    let before = Utc::now();
    let (hours, start) = window_opening_in_two_hours(before);
    let window = CallingWindow::parse(&hours, "all").unwrap();
    assert!(!window.is_open(NEW_YORK, before) && !window.is_open(kolkata, before));
    let new_york_opening = window.next_opening(NEW_YORK, before).unwrap();
    let kolkata_opening = window.next_opening(kolkata, before).unwrap();
    assert_ne!(new_york_opening, kolkata_opening);
    assert_eq!(new_york_opening.with_timezone(&NEW_YORK).time(), start);

    // 5,000 numbers in the campaign's zone (New York), then 5,000 with their own, Kolkata.
    let mut csv = String::from("phone_number,timezone\n");
    let mut new_york_numbers = BTreeSet::new();
    let mut kolkata_numbers = BTreeSet::new();
    for n in 0..10_000 {
        let number = format!("98765{n:05}");
        if n < 5_000 {
            csv.push_str(&format!("{number},\n"));
            new_york_numbers.insert(number);
        } else {
            csv.push_str(&format!("{number},{KOLKATA_NAME}\n"));
            kolkata_numbers.insert(number);
        }
    }
    let file = cli::TempFile::with_contents("hours.csv", csv.as_bytes());
    let enqueued = cli::callbridge(
        &[
            "enqueue",
            file.arg(),
            "--campaign",
            "hours",
            "--window",
            &hours,
            "--time-zone",
            "America/New_York",
            "--json",
        ],
        &[
            ("CLIENT_CALLING_DB_URL", h.db.url()),
            ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
            ("USER", "test"),
        ],
        None,
    )
    .await;
    cli::assert_success(&enqueued);
    let after = Utc::now();
    assert_eq!(window.next_opening(NEW_YORK, after), Some(new_york_opening));

    let stamped: Vec<(Option<String>, DateTime<Utc>, bool, i64)> = sqlx::query_as(
        "SELECT time_zone, next_attempt_at, deferred_by_campaign, count(*)
           FROM local_call_queue WHERE queue_status = 'pending'
          GROUP BY 1, 2, 3 ORDER BY 1 NULLS FIRST",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        stamped,
        vec![
            (None, new_york_opening, true, 5_000),
            (Some(KOLKATA_NAME.to_owned()), kolkata_opening, true, 5_000),
        ],
        "every row waits for its own zone's opening"
    );

    // Before New York opens the claim finds nothing and writes nothing.
    let clock = ManualClock::new(after);
    let submitter = submitter(&h, &clock);
    let new_york_rows = waiting_rows_fingerprint(&h.pool, None).await;
    let kolkata_rows = waiting_rows_fingerprint(&h.pool, Some(KOLKATA_NAME)).await;
    clock.set(new_york_opening - TimeDelta::seconds(1));
    let closed = drain(&submitter).await;
    assert_eq!((closed.claimed, closed.deferred), (0, 0), "{closed:?}");
    assert_eq!(waiting_rows_fingerprint(&h.pool, None).await, new_york_rows);

    // New York opens: its rows go, Kolkata's are not even claimed.
    clock.set(new_york_opening);
    let opened = drain(&submitter).await;
    assert_eq!(
        (opened.claimed, opened.submitted, opened.deferred),
        (5_000, 5_000, 0),
        "{opened:?}"
    );
    assert_eq!(
        waiting_rows_fingerprint(&h.pool, Some(KOLKATA_NAME)).await,
        kolkata_rows
    );
    assert_eq!(accepted_once(&h), new_york_numbers);

    // The window opened all day: Kolkata's rows are due at once and sent.
    let set = campaign::set(
        &h.pool,
        clock.now(),
        &actor(),
        "hours",
        &RulesChange {
            hours: Some(Some(parse_hours("00:00-24:00").unwrap())),
            ..RulesChange::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(set.detail["due_again"], 5_000);
    let due: Vec<(DateTime<Utc>, bool, i64)> = sqlx::query_as(
        "SELECT next_attempt_at, deferred_by_campaign, count(*)
           FROM local_call_queue WHERE queue_status = 'pending' GROUP BY 1, 2",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(due, vec![(clock.now(), false, 5_000)]);
    let rest = drain(&submitter).await;
    assert_eq!((rest.submitted, rest.deferred), (5_000, 0), "{rest:?}");
    let everyone: BTreeSet<String> = new_york_numbers.union(&kolkata_numbers).cloned().collect();
    assert_eq!(accepted_once(&h), everyone);
}

/// Creates campaign `name` with `rules` as `enqueue` would; returns its id.
async fn create_campaign(pool: &PgPool, name: &str, rules: &RulesChange) -> i32 {
    let mut conn = pool.acquire().await.unwrap();
    campaign::for_enqueue(&mut conn, name, rules, Utc::now())
        .await
        .unwrap()
        .id
}

/// Rows of the campaign as an application inserts them (due at `due`, not dated by the
/// campaign's rules), with their batch.
async fn insert_rows(
    pool: &PgPool,
    campaign_id: i32,
    batch_id: i32,
    numbers: &[String],
    time_zone: Option<&str>,
    due: DateTime<Utc>,
) {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, campaign_id) VALUES ($1, $2, $3)",
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

/// (due, held) of the batch's waiting rows, one entry per distinct pair.
async fn due_times(pool: &PgPool, batch_id: i32) -> Vec<(DateTime<Utc>, bool)> {
    sqlx::query_as(
        "SELECT DISTINCT next_attempt_at, deferred_by_campaign FROM local_call_queue
          WHERE batch_id = $1 AND queue_status = 'pending' ORDER BY 1",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_dates_the_waiting_rows_at_their_opening_not_now() {
    let h = harness(json!({})).await;
    // 20:59:30 in New York (inside 08:00-21:00), 07:29:30 in Kolkata (opens at 02:30Z).
    let now = utc("2026-12-05T01:59:30Z");
    let kolkata_opening = utc("2026-12-05T02:30:00Z");
    let clock = ManualClock::new(now);
    let id = create_campaign(
        &h.pool,
        "evening",
        &RulesChange {
            hours: Some(Some(parse_hours("08:00-21:00").unwrap())),
            time_zone: Some(NEW_YORK),
            ..RulesChange::default()
        },
    )
    .await;
    insert_rows(&h.pool, id, 1, &numbers(1, 3), None, now).await;
    insert_rows(&h.pool, id, 2, &numbers(2, 3), Some(KOLKATA_NAME), now).await;
    let submitter = submitter(&h, &clock);

    let paused = campaign::pause(&h.pool, now, &actor(), "evening")
        .await
        .unwrap();
    assert_eq!(paused.detail["held"], 6);
    for batch in [1, 2] {
        assert_eq!(
            due_times(&h.pool, batch).await,
            vec![(now + TimeDelta::days(1), true)]
        );
    }
    let held = drain(&submitter).await;
    assert_eq!((held.claimed, held.deferred), (0, 0), "{held:?}");

    let resumed = campaign::resume(&h.pool, now, &actor(), "evening")
        .await
        .unwrap();
    assert_eq!(resumed.detail["due_again"], 3, "New York's rows");
    assert_eq!(due_times(&h.pool, 1).await, vec![(now, false)]);
    assert_eq!(
        due_times(&h.pool, 2).await,
        vec![(kolkata_opening, true)],
        "Kolkata's rows wait for 08:00 there, not for the claim to find them"
    );
    let new_york = drain(&submitter).await;
    assert_eq!(
        (new_york.claimed, new_york.submitted, new_york.deferred),
        (3, 3, 0),
        "{new_york:?}"
    );
    clock.set(kolkata_opening);
    let kolkata = drain(&submitter).await;
    assert_eq!((kolkata.submitted, kolkata.deferred), (3, 0), "{kolkata:?}");
    assert_eq!(accepted_once(&h).len(), 6);
}

/// Rows of the campaign still `pending`.
async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM local_call_queue WHERE queue_status = 'pending'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn set_pace(pool: &PgPool, now: DateTime<Utc>, max_per_minute: u32) {
    campaign::set(
        pool,
        now,
        &actor(),
        "paced",
        &RulesChange {
            max_per_minute: Some(Some(max_per_minute)),
            ..RulesChange::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faster_pace_applies_at_once_instead_of_waiting_for_slots_booked_at_the_old_one() {
    let h = harness(json!({})).await;
    let now = utc("2026-12-05T12:00:00Z");
    let clock = ManualClock::new(now);
    let paced = RulesChange {
        max_per_minute: Some(Some(60)),
        ..RulesChange::default()
    };
    let id = create_campaign(&h.pool, "paced", &paced).await;
    insert_rows(&h.pool, id, 1, &numbers(1, 200), None, now).await;
    let submitter = submitter(&h, &clock);
    // At 60 a minute two numbers go now; the others book slots over the next 3½ minutes.
    let first = drain(&submitter).await;
    assert_eq!(first.submitted, 2, "{first:?}");
    let booked: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(paced_slot_at) FROM local_call_queue")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert!(booked.unwrap() > now + TimeDelta::minutes(3), "{booked:?}");

    set_pace(&h.pool, now, 6_000).await;

    // At 6,000 a minute (100 a second) the other 198 take two seconds, not 3½ minutes.
    for second in 0..=3 {
        clock.set(now + TimeDelta::seconds(second));
        drain(&submitter).await;
    }
    assert_eq!(pending(&h.pool).await, 0);
    assert_eq!(accepted_once(&h).len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_pace_applies_at_once_instead_of_sending_on_slots_booked_at_the_old_one() {
    let h = harness(json!({})).await;
    let now = utc("2026-12-05T12:00:00Z");
    let clock = ManualClock::new(now);
    let paced = RulesChange {
        max_per_minute: Some(Some(6_000)),
        ..RulesChange::default()
    };
    let id = create_campaign(&h.pool, "paced", &paced).await;
    insert_rows(&h.pool, id, 1, &numbers(1, 500), None, now).await;
    insert_rows(&h.pool, id, 2, &numbers(2, 500), None, now).await;
    let submitter = submitter(&h, &clock);
    // At 6,000 a minute a second's worth goes now; the rest book slots over ~9 seconds.
    let first = drain(&submitter).await;
    assert!(
        (90..=110).contains(&first.submitted),
        "a second's worth at 6,000 a minute: {first:?}"
    );

    set_pace(&h.pool, now, 60).await;

    // At 60 a minute, ten seconds send about ten numbers, not the 900 booked before.
    let mut sent = 0;
    for second in 1..=10 {
        clock.set(now + TimeDelta::seconds(second));
        sent += drain(&submitter).await.submitted;
    }
    assert!(
        (5..=12).contains(&sent),
        "{sent} numbers sent in the ten seconds after the pace fell to 60 a minute"
    );
    assert_eq!(accepted_once(&h).len() as u64, first.submitted + sent);
}
