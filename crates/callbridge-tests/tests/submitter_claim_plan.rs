//! The claim's cost does not grow with the size of the queue: once `local_call_queue` is
//! analysed (as `callbridge enqueue` does after a large campaign), the claim still reaches
//! only the rows it takes, never every row of the table (its submitted history included),
//! nor every row a batch ever had.

#[path = "submitter_common/mod.rs"]
mod common;

use callbridge_submitter::store::{BEGIN_CLAIM_SQL, CLAIM_DUE_ROWS_SQL};
use callbridge_testkit::db::TestDb;
use serde_json::Value;

/// Every plan node as (node type, relation), depth first.
fn plan_nodes(node: &Value, into: &mut Vec<(String, String)>) {
    into.push((
        node["Node Type"].as_str().unwrap_or_default().to_owned(),
        node["Relation Name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ));
    for child in node["Plans"].as_array().into_iter().flatten() {
        plan_nodes(child, into);
    }
}

/// A fresh database with every migration.
async fn migrated() -> (TestDb, sqlx::PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 2)
        .await
        .unwrap();
    (db, pool)
}

/// Runs one setup statement.
async fn run(pool: &sqlx::PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

#[tokio::test]
async fn a_large_analysed_queue_is_claimed_without_scanning_the_table() {
    let (_db, pool) = migrated().await;
    // Submitted history, and a large campaign just enqueued: 60 batches of 1,000 waiting.
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status, submitted_at)
         SELECT '+1555' || lpad(n::text, 7, '0'), n / 1000, 'submitted', now()
           FROM generate_series(1, 20000) AS n",
    )
    .await;
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, batch_id)
         SELECT '+1666' || lpad(n::text, 7, '0'), 100 + n / 1000
           FROM generate_series(0, 59999) AS n",
    )
    .await;
    // A do-not-call list far larger than any claim: each claimed row is looked up in it.
    run(
        &pool,
        "INSERT INTO do_not_call (phone_number, source)
         SELECT '+1777' || lpad(n::text, 7, '0'), 'cli' FROM generate_series(1, 200000) AS n",
    )
    .await;
    run(&pool, "ANALYZE local_call_queue").await;
    run(&pool, "ANALYZE do_not_call").await;

    for plan in explain_claim(&pool).await {
        let (kind, nodes) = (plan.kind, &plan.nodes);
        assert!(
            !plan.scans("do_not_call"),
            "the {kind} plan scans the whole do-not-call list: {nodes:?}"
        );
        assert!(
            plan.reads_by_index("do_not_call"),
            "the {kind} plan looks each row up in the do-not-call list by its key: {nodes:?}"
        );
        assert!(
            !plan.scans("local_call_queue"),
            "the {kind} plan scans the whole queue: {nodes:?}"
        );
        assert!(
            plan.reads_by_index("local_call_queue"),
            "the {kind} plan reads the queue through an index: {nodes:?}"
        );
    }
}

/// One plan of the claim: which kind, its JSON text and its nodes.
struct ClaimPlan {
    kind: &'static str,
    text: String,
    nodes: Vec<(String, String)>,
}

impl ClaimPlan {
    fn new(kind: &'static str, explained: &Value) -> Self {
        let mut nodes = Vec::new();
        plan_nodes(&explained[0]["Plan"], &mut nodes);
        Self {
            kind,
            text: explained.to_string(),
            nodes,
        }
    }

    /// Whether the plan reads all of `relation` (a sequential scan).
    fn scans(&self, relation: &str) -> bool {
        self.nodes
            .iter()
            .any(|(node, on)| node == "Seq Scan" && on == relation)
    }

    /// Whether the plan reads `relation` through one of its indexes somewhere.
    fn reads_by_index(&self, relation: &str) -> bool {
        self.nodes
            .iter()
            .any(|(node, on)| node.starts_with("Index") && on == relation)
    }
}

/// The claim's plans: the custom plan Postgres makes for these bound values, and the
/// generic plan the submitter runs it with (`BEGIN_CLAIM_SQL`), which is made without
/// them. Both must read only through indexes.
async fn explain_claim(pool: &sqlx::PgPool) -> Vec<ClaimPlan> {
    let custom: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {CLAIM_DUE_ROWS_SQL}"
    )))
    .bind("plan-test")
    .bind(1000_i64)
    .bind(120.0_f64)
    .bind(chrono::Utc::now())
    .bind("91")
    // No erasure key: the erased opt-outs' HMAC blocks are NULL.
    .bind(None::<&[u8]>)
    .bind(None::<&[u8]>)
    .fetch_one(pool)
    .await
    .unwrap();

    let mut tx = pool.begin_with(BEGIN_CLAIM_SQL).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE claim_plan (text, bigint, float8, timestamptz, text, bytea, bytea) AS \
         {CLAIM_DUE_ROWS_SQL}"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let generic: Value = sqlx::query_scalar(
        "EXPLAIN (FORMAT JSON) EXECUTE claim_plan ('plan-test', 1000, 120, now(), '91', NULL, NULL)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    // A prepared statement outlives the transaction (it is the session's).
    sqlx::raw_sql("DEALLOCATE claim_plan")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let generic_plan = ClaimPlan::new("generic", &generic);
    assert!(
        generic_plan.text.contains("$4"),
        "the generic plan is made without the bound values: {}",
        generic_plan.text
    );
    vec![ClaimPlan::new("custom", &custom), generic_plan]
}

/// A campaign waiting for its calling window leaves the queue full of rows that are not
/// due. Left to choose, Postgres then plans the claim afresh on every round, which costs
/// more than running it; the submitter's claims all run the one generic plan instead.
#[tokio::test]
async fn every_claim_runs_the_generic_plan_while_rows_wait_for_their_window() {
    let db = TestDb::new().await.unwrap();
    // One connection, so the claims and the look at its prepared statements share it.
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 1)
        .await
        .unwrap();
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, batch_id, next_attempt_at)
         SELECT '+1666' || lpad(n::text, 7, '0'), 100 + n / 500, now() + interval '12 hours'
           FROM generate_series(0, 49999) AS n",
    )
    .await;
    run(&pool, "ANALYZE local_call_queue").await;

    const CLAIMS: i64 = 12;
    for _ in 0..CLAIMS {
        let claimed = callbridge_submitter::store::claim_due_rows(
            &pool,
            "plan-test",
            1000,
            std::time::Duration::from_secs(120),
            chrono::Utc::now(),
            Some(1),
            None,
        )
        .await
        .unwrap();
        assert!(claimed.is_empty(), "no row is due: {claimed:?}");
    }

    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements
          WHERE statement = $1",
    )
    .bind(CLAIM_DUE_ROWS_SQL)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (generic, custom),
        (CLAIMS, 0),
        "every claim runs the cached generic plan, none is planned afresh"
    );
}

#[tokio::test]
async fn a_new_row_of_a_long_submitted_batch_is_claimed_without_reading_its_history() {
    let (_db, pool) = migrated().await;
    // A 60,000-number campaign enqueued and analysed while waiting (as enqueue does),
    // then submitted.
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, batch_id)
         SELECT '+1555' || lpad(n::text, 7, '0'), 7 FROM generate_series(1, 60000) AS n",
    )
    .await;
    run(&pool, "ANALYZE local_call_queue").await;
    run(
        &pool,
        "UPDATE local_call_queue SET queue_status = 'submitted', submitted_at = now()",
    )
    .await;
    // Autovacuum analyses a table this changed within a minute. Until then the planner
    // believes the batch is still waiting; such claims cost one read of the batch's
    // rows (about 20 ms for these 60,000; without JIT, see `callbridge_runtime::db`).
    run(&pool, "ANALYZE local_call_queue").await;
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, batch_id) VALUES ('+19990000001', 7)",
    )
    .await;

    for plan in explain_claim(&pool).await {
        let (kind, text) = (plan.kind, &plan.text);
        assert!(
            !plan.scans("local_call_queue"),
            "the {kind} plan scans the whole queue: {:?}",
            plan.nodes
        );
        assert!(
            text.contains("idx_local_queue_waiting_by_batch"),
            "in the {kind} plan, the batch's waiting rows are found through the index of \
             waiting rows: {text}"
        );
    }

    let claimed: Vec<String> = sqlx::query(CLAIM_DUE_ROWS_SQL)
        .bind("plan-test")
        .bind(1000_i64)
        .bind(120.0_f64)
        .bind(chrono::Utc::now())
        .bind("91")
        .bind(None::<&[u8]>)
        .bind(None::<&[u8]>)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| sqlx::Row::get(row, "phone_number"))
        .collect();
    assert_eq!(claimed, ["+19990000001"], "only the new row is claimed");
}

/// The per-day cap counts a number's calls of a day as an index range, however long the
/// queue's history: the claim pays for it only for rows of a capped campaign.
#[tokio::test]
async fn a_numbers_calls_of_the_day_are_counted_through_an_index() {
    let (_db, pool) = migrated().await;
    // A long history of calls to 50,000 numbers, and a campaign waiting.
    run(
        &pool,
        "INSERT INTO local_call_queue
                (phone_number, phone_e164, batch_id, queue_status, submitted_at, next_attempt_at)
         SELECT n::text, '+1555' || lpad((n % 50000)::text, 7, '0'), n / 1000, 'submitted',
                now(), now() - make_interval(hours => n % 2000)
           FROM generate_series(1, 200000) AS n",
    )
    .await;
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, phone_e164, batch_id)
         SELECT n::text, '+1666' || lpad(n::text, 7, '0'), 1000 + n / 1000
           FROM generate_series(0, 59999) AS n",
    )
    .await;
    run(&pool, "ANALYZE local_call_queue").await;

    let now = chrono::Utc::now();
    let explained: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {}",
        callbridge_submitter::daily_cap::CALLS_OF_THE_DAY_SQL
    )))
    .bind(vec!["+15550000042", "+15550000043"])
    .bind(vec![now - chrono::TimeDelta::days(1); 2])
    .bind(vec![now; 2])
    .bind(vec![1_i32, 2])
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut nodes = Vec::new();
    plan_nodes(&explained[0]["Plan"], &mut nodes);
    let plan = explained.to_string();

    assert!(
        !nodes
            .iter()
            .any(|(kind, relation)| kind == "Seq Scan" && relation == "local_call_queue"),
        "the count scans the whole queue: {nodes:?}"
    );
    assert!(
        plan.contains("idx_local_queue_e164_due"),
        "a number's calls of a day are read as a range of its index: {plan}"
    );
}
