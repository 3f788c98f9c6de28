//! Redials end to end, every component real: the simulator scripts each number's
//! outcomes (`PUT /admin/script`), its signed callbacks go through the ingress and
//! RabbitMQ to the persister, which adds the redials, and the submitter sends them once
//! due. Persister and submitter share one scaled clock (300×), so fifteen minutes pass
//! in three seconds.

#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use callbridge_ops::RulesChange;
use callbridge_runtime::config::Settings;
use callbridge_runtime::health::Readiness;
use callbridge_sim::{Outcome, SimConfig, Simulator};
use callbridge_submitter::Submitter;
use callbridge_types::campaign::RedialPolicy;
use callbridge_types::clock::{ScaledClock, SharedClock};
use chrono::{DateTime, TimeDelta, Utc};
use cli_ingress::Ingress;
use common::*;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Clock seconds per real second.
const FACTOR: f64 = 300.0;

/// Queues `numbers` as one new batch of `campaign`, as `callbridge enqueue` would.
async fn enqueue(pool: &PgPool, campaign: i32, numbers: &[&str]) -> i32 {
    let batch_id: i32 = sqlx::query_scalar("SELECT callbridge_allocate_batch_ids(1)")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, batch_name, campaign_id)
         VALUES ($1, $2, 'spring', $3)",
    )
    .bind(batch_id)
    .bind(ACCOUNT_CODE)
    .bind(campaign)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, campaign_id, campaign_key)
         SELECT number, $1, $2, 'campaign:spring' FROM unnest($3::text[]) AS number",
    )
    .bind(batch_id)
    .bind(campaign)
    .bind(numbers)
    .execute(pool)
    .await
    .unwrap();
    batch_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripted_busy_busy_completed_is_called_three_times_each_an_interval_after_the_last() {
    let (db, pool) = migrated_db().await;
    let vhost = callbridge_testkit::vhost::TestVhost::new().await;
    let ingress = Ingress::spawn(&vhost.amqp_url(), &[CALLBACK_SECRET], true, None).await;
    let sim = Simulator::spawn(SimConfig::for_tests(&ingress.url).unwrap())
        .await
        .unwrap();
    // Duplicated and reordered callbacks, as a real sender may deliver them.
    sim.patch_knobs(&serde_json::json!({"duplicate_rate": 0.5, "reorder_rate": 0.5}))
        .unwrap();
    let (reached_late, reached, failed, always_busy) =
        ("9100000001", "9100000002", "9100000003", "9100000004");
    use Outcome::{Busy, Completed, Failed};
    sim.set_script(BTreeMap::from([
        (reached_late.to_owned(), vec![Busy, Busy, Completed]),
        (reached.to_owned(), vec![Completed]),
        (failed.to_owned(), vec![Failed]),
        (always_busy.to_owned(), vec![Busy, Busy, Busy, Busy]),
    ]));

    let mut conn = pool.acquire().await.unwrap();
    let campaign = callbridge_ops::campaign::for_enqueue(
        &mut conn,
        "spring",
        &RulesChange {
            redial: Some(RedialPolicy::parse("busy=2x15m").unwrap()),
            ..RulesChange::default()
        },
        Utc::now(),
    )
    .await
    .unwrap();
    drop(conn);
    let first_batch = enqueue(
        &pool,
        campaign.id,
        &[reached_late, reached, failed, always_busy],
    )
    .await;

    let amqp_url = vhost.amqp_url();
    let base_url = sim.base_url();
    let settings = Settings::load_from([
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("RABBITMQ_URL", amqp_url.as_str()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("PERSISTER_BIND", "127.0.0.1:0"),
        ("SUBMITTER_BIND", "127.0.0.1:0"),
        ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "100"),
    ])
    .unwrap();
    let clock: SharedClock = Arc::new(ScaledClock::new(Utc::now(), FACTOR));
    let shutdown = CancellationToken::new();
    let persister = callbridge_persister::Persister::build(settings.persister().unwrap())
        .await
        .unwrap()
        .with_clock(clock.clone());
    let persisting = tokio::spawn(persister.run_until_stopped(shutdown.clone()));
    let submitter = Submitter::with_clock(
        pool.clone(),
        &settings.submitter().unwrap(),
        Readiness::new(),
        clock.clone(),
    )
    .unwrap();
    let stop = shutdown.clone();
    let submitting = tokio::spawn(async move {
        submitter.run(&Arc::new(Notify::new()), &stop).await;
    });

    // Done when both redialled numbers had their three calls and every callback is in.
    let calls_of = |number: &str| {
        sim.ground_truth(None)
            .calls
            .into_iter()
            .filter(|call| call.phone_number == number)
            .collect::<Vec<_>>()
    };
    let mut waited = Duration::ZERO;
    while calls_of(reached_late).len() < 3 || calls_of(always_busy).len() < 3 {
        assert!(
            waited < Duration::from_secs(90),
            "the redials never went out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        waited += Duration::from_millis(200);
    }
    // Time for anything wrong to show: a fourth call would be due 15 clock minutes later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(sim.wait_idle(Duration::from_secs(30)).await);
    let settled = |row: &str| {
        let pool = pool.clone();
        let row = row.to_owned();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM local_call_queue WHERE phone_number = $1 AND settled_status IS NULL",
            )
            .bind(row)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for _ in 0..100 {
        if settled(always_busy).await == 0 && settled(reached_late).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    persisting.await.unwrap().unwrap();
    submitting.await.unwrap();

    // Exactly three attempts in the simulator's ground truth, ending as scripted.
    let outcomes = |number: &str| -> Vec<Option<Outcome>> {
        calls_of(number).iter().map(|c| c.outcome).collect()
    };
    assert_eq!(
        outcomes(reached_late),
        [Some(Busy), Some(Busy), Some(Completed)]
    );
    assert_eq!(outcomes(always_busy), [Some(Busy), Some(Busy), Some(Busy)]);
    // completed and failed are never redialled.
    assert_eq!(outcomes(reached), [Some(Completed)]);
    assert_eq!(outcomes(failed), [Some(Failed)]);

    // Each call was placed at least the interval after the previous call's terminal
    // callback reached callbridge (both real instants; the clock ran FACTOR× faster).
    for number in [reached_late, always_busy] {
        let calls = calls_of(number);
        for pair in calls.windows(2) {
            let terminal_received: DateTime<Utc> = sqlx::query_scalar(
                "SELECT min(received_at) FROM call_events
                  WHERE call_id = $1 AND call_status IN ('busy', 'completed', 'failed')",
            )
            .bind(&pair[0].call_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            let real_gap = pair[1].accepted_at - terminal_received;
            let clock_gap =
                TimeDelta::milliseconds((real_gap.num_milliseconds() as f64 * FACTOR) as i64);
            assert!(
                clock_gap >= TimeDelta::minutes(15),
                "{number}: redial placed {clock_gap} after the busy callback"
            );
            assert_ne!(
                pair[0].batch_id, pair[1].batch_id,
                "a redial has its own batch"
            );
        }
    }

    // The queue holds each redial as attempt n+1 of the row it repeats; the last busy
    // attempt is exhausted, counted once on its batch.
    let chain: Vec<(String, i32, bool, Option<String>)> = sqlx::query_as(
        "SELECT phone_number, attempt, redial_of IS NOT NULL, settled_status
           FROM local_call_queue ORDER BY phone_number, attempt",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let of = |number: &str| -> Vec<(i32, bool, Option<String>)> {
        chain
            .iter()
            .filter(|row| row.0 == number)
            .map(|row| (row.1, row.2, row.3.clone()))
            .collect()
    };
    let busy = || Some("busy".to_owned());
    assert_eq!(
        of(reached_late),
        [
            (1, false, busy()),
            (2, true, busy()),
            (3, true, Some("completed".to_owned()))
        ]
    );
    assert_eq!(
        of(always_busy),
        [(1, false, busy()), (2, true, busy()), (3, true, busy())]
    );
    let exhausted: i64 = sqlx::query_scalar(
        "SELECT sum(exhausted_calls)::int8 FROM call_batches WHERE campaign_id = $1",
    )
    .bind(campaign.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    // The busy number after its third call, and the failed one.
    assert_eq!(exhausted, 2);
    assert!(first_batch > 0);

    // The campaign's figures, from the batches' aggregates, agree with call_logs.
    let figures = callbridge_ops::campaign::show(&pool, "spring")
        .await
        .unwrap()
        .figures;
    let (answered, answered_seconds): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(duration), 0)::int8 FROM call_logs
          WHERE call_status = 'completed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (
            figures.numbers,
            figures.attempts,
            figures.redials,
            figures.reached,
            figures.not_reached,
            figures.exhausted
        ),
        (4, 8, 4, 2, 6, 2)
    );
    assert_eq!(answered, 2);
    assert_eq!(figures.answered_seconds, answered_seconds);
    assert_eq!(figures.asr, Some(2.0 / 8.0));
    assert_eq!(figures.acd_seconds, Some(answered_seconds as f64 / 2.0));
}
