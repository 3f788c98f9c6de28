//! `callbridge retention run`: deletes what callbridge no longer needs to keep — callback
//! events older than `lifecycle.events_days`, outbox rows published before then, and
//! finished queue rows older than `lifecycle.queue_days` — in small transactions.
//!
//! Each chunk is one statement in its own transaction over at most `chunk_rows` rows
//! picked by primary key after the last chunk's (a keyset walk, no OFFSET), so no lock is
//! held for long, the services keep writing meanwhile, and nothing is rewritten: the space
//! goes back to the table for new rows once autovacuum has passed.
//!
//! What stays, whatever its age:
//! * `call_logs` and `call_batches`: the figures never change;
//! * a call's events unless every one of them is older than the cutoff and its row counts
//!   in its batch (terminal or expired): the events of a call go together. The persister
//!   folds a late callback of a call without events into the call's row, which stands for
//!   them (see `callbridge_persister::call_log`), so a callback arriving after retention
//!   still gives the row the history would; a call still going on keeps its events;
//! * outbox rows not published yet;
//! * queue rows still waiting or in `needs_review`, and rows of a batch that is not final
//!   (the batch routine reads them to decide its status).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use callbridge_types::status::{BatchStatus, QueueStatus};

use crate::audit::{self, Action, Actor};
use crate::{OpsError, db_error};

/// The cutoffs and chunk size of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Events received before this go, and outbox rows published before it.
    pub events_before: DateTime<Utc>,
    /// Finished queue rows last updated before this go.
    pub queue_before: DateTime<Utc>,
    /// Rows looked at per transaction.
    pub chunk_rows: u32,
}

/// The tables retention deletes from, in the order it works through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    CallEvents,
    CallOutcomeOutbox,
    LocalCallQueue,
}

impl Table {
    pub const ALL: [Table; 3] = [
        Table::CallEvents,
        Table::CallOutcomeOutbox,
        Table::LocalCallQueue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::CallEvents => "call_events",
            Table::CallOutcomeOutbox => "call_outcome_outbox",
            Table::LocalCallQueue => "local_call_queue",
        }
    }
}

/// Rows deleted (or, for a dry run, to delete) per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionCounts {
    pub call_events: u64,
    pub call_outcome_outbox: u64,
    pub local_call_queue: u64,
}

impl RetentionCounts {
    pub fn get(&self, table: Table) -> u64 {
        match table {
            Table::CallEvents => self.call_events,
            Table::CallOutcomeOutbox => self.call_outcome_outbox,
            Table::LocalCallQueue => self.local_call_queue,
        }
    }

    fn add(&mut self, table: Table, rows: u64) {
        match table {
            Table::CallEvents => self.call_events += rows,
            Table::CallOutcomeOutbox => self.call_outcome_outbox += rows,
            Table::LocalCallQueue => self.local_call_queue += rows,
        }
    }

    pub fn total(&self) -> u64 {
        self.call_events + self.call_outcome_outbox + self.local_call_queue
    }
}

/// Which events may go: `e` is a row of `call_events`, `$1` the cutoff. All of the
/// call's events are old, and the call's row (if any) counts in its batch.
const EVENT_DELETABLE: &str = "e.received_at < $1
    AND (e.call_id IS NULL OR (
         NOT EXISTS (SELECT 1 FROM call_events newer
                      WHERE newer.call_id = e.call_id AND newer.received_at >= $1)
         AND NOT EXISTS (SELECT 1 FROM call_logs l
                          WHERE l.call_id = e.call_id
                            AND callbridge_call_count_kind(l.call_status) IS NULL)))";

/// Which outbox rows may go: `o`, published before `$1`.
const OUTBOX_DELETABLE: &str = "o.published_at IS NOT NULL AND o.published_at < $1";

/// Which queue rows may go: `q`, finished (`$2`: the finished statuses), last updated
/// before `$1`, in no batch or a final one (`$3`: the final batch statuses).
/// `updated_at` is a local `TIMESTAMP` written with `CURRENT_TIMESTAMP`, so the cutoff
/// is read in the session's zone.
const QUEUE_DELETABLE: &str = "q.queue_status = ANY($2::text[])
    AND q.updated_at < ($1::timestamptz AT TIME ZONE current_setting('TimeZone'))
    AND (q.batch_id IS NULL OR EXISTS (SELECT 1 FROM call_batches b
                                        WHERE b.batch_id = q.batch_id
                                          AND b.batch_status = ANY($3::text[])))";

/// Queue statuses a row never leaves by itself: not waiting, not awaiting review.
fn finished_queue_statuses() -> Vec<&'static str> {
    QueueStatus::ALL
        .iter()
        .filter(|status| !status.is_waiting() && **status != QueueStatus::NeedsReview)
        .map(|status| status.as_str())
        .collect()
}

fn final_batch_statuses() -> Vec<&'static str> {
    BatchStatus::ALL
        .iter()
        .filter(|status| status.is_final())
        .map(|status| status.as_str())
        .collect()
}

/// What a run would delete, per table (`--dry-run`), counted with the run's own rules.
#[tracing::instrument(skip_all)]
pub async fn preview(pool: &PgPool, policy: &RetentionPolicy) -> Result<RetentionCounts, OpsError> {
    let count = |sql: String, table: Table| async move {
        let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
        let query = match table {
            Table::LocalCallQueue => query
                .bind(policy.queue_before)
                .bind(finished_queue_statuses())
                .bind(final_batch_statuses()),
            _ => query.bind(policy.events_before),
        };
        query
            .fetch_one(pool)
            .await
            .map(|rows| u64::try_from(rows).unwrap_or(0))
            .map_err(db_error("while counting what retention would delete"))
    };
    Ok(RetentionCounts {
        call_events: count(
            format!("SELECT count(*) FROM call_events e WHERE {EVENT_DELETABLE}"),
            Table::CallEvents,
        )
        .await?,
        call_outcome_outbox: count(
            format!("SELECT count(*) FROM call_outcome_outbox o WHERE {OUTBOX_DELETABLE}"),
            Table::CallOutcomeOutbox,
        )
        .await?,
        local_call_queue: count(
            format!("SELECT count(*) FROM local_call_queue q WHERE {QUEUE_DELETABLE}"),
            Table::LocalCallQueue,
        )
        .await?,
    })
}

/// One chunk's statement for `table`: `$1` the cutoff; then the last id looked at and the
/// chunk size (`$2`, `$3`), for the queue after its status lists (`$4`, `$5`). Returns
/// the last id looked at (NULL when the walk is over) and the rows deleted.
fn chunk_sql(table: Table) -> String {
    match table {
        // A call's events go together: every event of a call picked in this chunk goes,
        // also those after the chunk's last id (they are old too, or the call would not
        // qualify).
        Table::CallEvents => format!(
            "WITH looked AS (
                 SELECT id, call_id, received_at FROM call_events
                  WHERE id > $2 ORDER BY id LIMIT $3
             ), doomed_calls AS (
                 SELECT DISTINCT e.call_id FROM looked e
                  WHERE e.call_id IS NOT NULL AND {EVENT_DELETABLE}
             ), deleted AS (
                 -- Two index lookups joined by id, not one OR, which would scan the table.
                 DELETE FROM call_events d
                  USING (SELECT id FROM call_events
                          WHERE call_id IN (SELECT call_id FROM doomed_calls)
                         UNION
                         SELECT id FROM looked e
                          WHERE e.call_id IS NULL AND e.received_at < $1) AS doomed
                  WHERE d.id = doomed.id
                 RETURNING 1
             )
             SELECT (SELECT max(id) FROM looked)::int8, (SELECT count(*) FROM deleted)"
        ),
        Table::CallOutcomeOutbox => format!(
            "WITH looked AS (
                 SELECT id FROM call_outcome_outbox WHERE id > $2 ORDER BY id LIMIT $3
             ), deleted AS (
                 DELETE FROM call_outcome_outbox o
                  WHERE o.id IN (SELECT id FROM looked) AND {OUTBOX_DELETABLE}
                 RETURNING 1
             )
             SELECT (SELECT max(id) FROM looked)::int8, (SELECT count(*) FROM deleted)"
        ),
        Table::LocalCallQueue => format!(
            "WITH looked AS (
                 SELECT id FROM local_call_queue WHERE id > $4 ORDER BY id LIMIT $5
             ), deleted AS (
                 DELETE FROM local_call_queue q
                  WHERE q.id IN (SELECT id FROM looked) AND {QUEUE_DELETABLE}
                 RETURNING 1
             )
             SELECT (SELECT max(id) FROM looked)::int8, (SELECT count(*) FROM deleted)"
        ),
    }
}

/// Deletes, chunk by chunk, what [`preview`] counts; calls `progress(table, rows)` after
/// each chunk with the rows it deleted; records one `operator_actions` row at the end
/// (`retention.run`, with the counts and cutoffs). Returns the rows deleted per table.
#[tracing::instrument(skip_all, fields(deleted))]
pub async fn run(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    policy: &RetentionPolicy,
    mut progress: impl FnMut(Table, u64),
) -> Result<RetentionCounts, OpsError> {
    let mut deleted = RetentionCounts::default();
    for table in Table::ALL {
        let sql = chunk_sql(table);
        let mut after: i64 = 0;
        loop {
            let query = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            let query = match table {
                Table::LocalCallQueue => query
                    .bind(policy.queue_before)
                    .bind(finished_queue_statuses())
                    .bind(final_batch_statuses()),
                _ => query.bind(policy.events_before),
            };
            let (last, rows): (Option<i64>, i64) = query
                .bind(after)
                .bind(i64::from(policy.chunk_rows))
                .fetch_one(pool)
                .await
                .map_err(db_error("while deleting a chunk of old rows"))?;
            let rows = u64::try_from(rows).unwrap_or(0);
            deleted.add(table, rows);
            progress(table, rows);
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        tracing::info!(
            table = table.name(),
            rows = deleted.get(table),
            "retention: old rows deleted"
        );
    }
    let mut conn = pool
        .acquire()
        .await
        .map_err(db_error("while connecting to record the retention run"))?;
    audit::record(
        &mut conn,
        now,
        actor,
        &Action {
            action: "retention.run",
            campaign_id: None,
            target: json!({
                "events_before": policy.events_before,
                "queue_before": policy.queue_before,
            }),
            rows_affected: i64::try_from(deleted.total()).unwrap_or(i64::MAX),
            detail: Some(json!(deleted)),
        },
    )
    .await?;
    tracing::Span::current().record("deleted", deleted.total());
    Ok(deleted)
}
