//! What every submitter test stands on: its own migrated database, an in-process
//! simulator of the centralized system, and readers for the rows both sides hold.
#![allow(dead_code)]

use std::collections::BTreeMap;

use callbridge_runtime::config::{Settings, SubmitterConfig};
use callbridge_runtime::health::Readiness;
use callbridge_sim::{SimConfig, Simulator};
use callbridge_submitter::Submitter;
use callbridge_testkit::db::TestDb;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

/// The key `SimConfig::for_tests` registers.
pub const API_KEY: &str = "test-api-key";
/// The account `SimConfig::for_tests` dials for.
pub const ACCOUNT_CODE: &str = "SIM001";

pub struct Harness {
    pub db: TestDb,
    pub pool: PgPool,
    pub sim: Simulator,
}

/// A fresh database with every migration, and a fast simulator whose callbacks go
/// nowhere (only its API matters here) with `knobs` patched in.
pub async fn harness(knobs: Value) -> Harness {
    let db = TestDb::new().await.unwrap();
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 10)
        .await
        .unwrap();
    // Port 9 (discard) on loopback: nothing listens, and one attempt per callback is enough.
    let sim = Simulator::spawn(SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap())
        .await
        .unwrap();
    let mut all_knobs = json!({"callback_max_attempts": 1});
    for (name, value) in knobs.as_object().unwrap() {
        all_knobs[name] = value.clone();
    }
    sim.patch_knobs(&all_knobs).unwrap();
    Harness { db, pool, sim }
}

impl Harness {
    /// The environment a deployment would set, plus `extra` (`CALLBRIDGE__…` overrides).
    /// Backoff is tiny and the lease short unless `extra` says otherwise. A 404 from
    /// batch-status means "none held", as an operator would configure after confirming it:
    /// the simulator answers 404 only for a batch it never stored (unless told to hide one).
    pub fn environment(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            ("CENTRALIZED_CALLING_BASE_URL", self.sim.base_url()),
            ("CENTRALIZED_CALLING_API_KEY", API_KEY.to_owned()),
            ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE.to_owned()),
            ("CLIENT_CALLING_DB_URL", self.db.url().to_owned()),
            ("SUBMITTER_BIND", "127.0.0.1:0".to_owned()),
            ("CALLBRIDGE__SUBMITTER__BACKOFF_BASE_MS", "10".to_owned()),
            ("CALLBRIDGE__SUBMITTER__BACKOFF_MAX_MS", "40".to_owned()),
            ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "200".to_owned()),
            ("CALLBRIDGE__SUBMITTER__LEASE_SECS", "30".to_owned()),
            ("CALLBRIDGE__API__REQUEST_TIMEOUT_MS", "10000".to_owned()),
            (
                "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NOT_FOUND",
                "none".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        for (name, value) in extra {
            env.insert((*name).to_owned(), (*value).to_owned());
        }
        env
    }

    pub fn config(&self, extra: &[(&str, &str)]) -> SubmitterConfig {
        config_from(self.environment(extra))
    }

    pub fn submitter(&self, extra: &[(&str, &str)]) -> Submitter {
        Submitter::new(self.pool.clone(), &self.config(extra), Readiness::new()).unwrap()
    }

    /// Queues `numbers` under `batch_id`, each with custom data naming it, the way an
    /// application (or `callbridge enqueue`) would.
    pub async fn enqueue(&self, batch_id: i32, numbers: &[String]) {
        let custom: Vec<Value> = numbers
            .iter()
            .map(|number| json!({"customer_id": format!("C-{number}")}))
            .collect();
        sqlx::query(
            "INSERT INTO local_call_queue (phone_number, batch_id, custom_data)
             SELECT number, $1, custom FROM unnest($2::text[], $3::jsonb[]) AS t(number, custom)",
        )
        .bind(batch_id)
        .bind(numbers)
        .bind(&custom)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    pub async fn rows(&self) -> Vec<QueueRow> {
        sqlx::query_as(
            "SELECT id, batch_id, phone_number, queue_status, retry_count, last_error,
                    next_attempt_at, attempt_started_at, lease_owner, submitted_at
               FROM local_call_queue ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub async fn statuses(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for row in self.rows().await {
            *counts.entry(row.queue_status).or_insert(0) += 1;
        }
        counts
    }

    pub async fn batch(&self, batch_id: i32) -> Option<BatchRow> {
        sqlx::query_as(
            "SELECT batch_id, accountcode, total_calls, batch_status FROM call_batches WHERE batch_id = $1",
        )
        .bind(batch_id)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
    }

    /// Makes every waiting row due now, as if its backoff had passed.
    pub async fn make_due(&self) {
        sqlx::query(
            "UPDATE local_call_queue SET next_attempt_at = now() WHERE queue_status = 'pending'",
        )
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Asserts the simulator accepted each of `numbers` exactly once under `batch_id`.
    pub fn assert_each_accepted_once(&self, batch_id: i32, numbers: &[String]) {
        let truth = self.sim.ground_truth(Some(batch_id));
        for number in numbers {
            assert_eq!(
                truth.accepted_count(batch_id, number),
                1,
                "batch {batch_id}: a number was accepted {} times",
                truth.accepted_count(batch_id, number)
            );
        }
        assert_eq!(
            truth.totals.accepted_items,
            numbers.len(),
            "batch {batch_id}: extra items accepted"
        );
    }

    /// Insert requests the simulator read for `batch_id`.
    pub fn inserts(&self, batch_id: i32) -> usize {
        self.sim
            .ground_truth(Some(batch_id))
            .requests_to(callbridge_sim::Endpoint::Insert)
            .count()
    }

    /// Every insert request the simulator answered, also those refused before it read
    /// the body (a fault answered before the batch is known records no batch_id).
    pub fn all_inserts(&self) -> usize {
        self.sim
            .ground_truth(None)
            .requests_to(callbridge_sim::Endpoint::Insert)
            .count()
    }

    pub fn batch_status_requests(&self, batch_id: i32) -> usize {
        self.sim
            .ground_truth(Some(batch_id))
            .requests_to(callbridge_sim::Endpoint::BatchStatus)
            .count()
    }
}

pub fn config_from(env: BTreeMap<String, String>) -> SubmitterConfig {
    Settings::load_from(env).unwrap().submitter().unwrap()
}

/// `count` distinct ten-digit numbers for `batch`.
pub fn numbers(batch: i32, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("9{batch:04}{n:05}")).collect()
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueRow {
    pub id: i32,
    pub batch_id: Option<i32>,
    pub phone_number: String,
    pub queue_status: String,
    pub retry_count: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub attempt_started_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchRow {
    pub batch_id: i32,
    pub accountcode: String,
    pub total_calls: Option<i32>,
    pub batch_status: Option<String>,
}
