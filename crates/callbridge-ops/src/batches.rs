//! Batches as stored locally: each `call_batches` row with the counts of its
//! `local_call_queue` rows by status, as `callbridge batches`/`batch` and the console's
//! campaign page show them (beside the centralized system's view,
//! [`crate::centralized`]).

use callbridge_types::status::QueueStatus;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::{OpsError, db_error};

/// One batch as stored locally.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LocalBatch {
    pub batch_id: i32,
    pub batch_name: Option<String>,
    pub accountcode: String,
    pub batch_status: Option<String>,
    pub total_calls: Option<i32>,
    pub completed_calls: Option<i32>,
    pub failed_calls: Option<i32>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Its `local_call_queue` rows, by `queue_status`.
    #[sqlx(flatten)]
    pub queue: QueueCounts,
}

#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct QueueCounts {
    pub rows: i64,
    /// `pending` or `submitting`: not yet held by the centralized system.
    pub waiting: i64,
    pub submitted: i64,
    /// `failed`: given up on (the last error says why).
    pub failed: i64,
    pub needs_review: i64,
    /// `cancelled` with their campaign: never sent.
    pub cancelled: i64,
}

/// Which batches to read: the newest (highest `batch_id`) `limit` of those that match.
#[derive(Debug, Clone, Default)]
pub struct BatchFilter<'a> {
    pub batch_id: Option<i32>,
    /// A `batch_status`.
    pub status: Option<&'a str>,
    pub campaign_id: Option<i32>,
    pub limit: u32,
    /// Batches skipped before the first one returned (newest first), for pages.
    pub offset: u32,
}

/// The newest matching batches, returned oldest first, with their queue counts. `$6`–`$10`:
/// the queue statuses counted (waiting, submitted, failed, needs_review, cancelled),
/// bound from `QueueStatus`. A campaign's batches are found through
/// `idx_call_batches_campaign` and each batch's rows through `idx_local_queue_batch_id`,
/// so the cost is that of the batches shown, not of the table.
const BATCHES_SQL: &str = "
SELECT b.batch_id, b.batch_name, b.accountcode, b.batch_status, b.total_calls,
       b.completed_calls, b.failed_calls, b.created_at, b.updated_at, b.submitted_at,
       b.completed_at, q.rows, q.waiting, q.submitted, q.failed, q.needs_review, q.cancelled
  FROM (SELECT * FROM call_batches
         WHERE ($1::INTEGER IS NULL OR batch_id = $1)
           AND ($2::TEXT IS NULL OR batch_status = $2)
           AND ($3::INTEGER IS NULL OR campaign_id = $3)
         ORDER BY batch_id DESC
         LIMIT $4 OFFSET $5) AS b
  CROSS JOIN LATERAL (
        SELECT count(*) AS rows,
               count(*) FILTER (WHERE queue_status = ANY($6)) AS waiting,
               count(*) FILTER (WHERE queue_status = $7) AS submitted,
               count(*) FILTER (WHERE queue_status = $8) AS failed,
               count(*) FILTER (WHERE queue_status = $9) AS needs_review,
               count(*) FILTER (WHERE queue_status = $10) AS cancelled
          FROM local_call_queue
         WHERE local_call_queue.batch_id = b.batch_id) AS q
 ORDER BY b.batch_id";

/// The batches `filter` selects (see [`BATCHES_SQL`]).
#[tracing::instrument(skip_all, fields(campaign_id = filter.campaign_id))]
pub async fn load(pool: &PgPool, filter: &BatchFilter<'_>) -> Result<Vec<LocalBatch>, OpsError> {
    let waiting: Vec<&str> = QueueStatus::WAITING.iter().map(|s| s.as_str()).collect();
    sqlx::query_as(BATCHES_SQL)
        .bind(filter.batch_id)
        .bind(filter.status)
        .bind(filter.campaign_id)
        .bind(i64::from(filter.limit))
        .bind(i64::from(filter.offset))
        .bind(waiting)
        .bind(QueueStatus::Submitted.as_str())
        .bind(QueueStatus::Failed.as_str())
        .bind(QueueStatus::NeedsReview.as_str())
        .bind(QueueStatus::Cancelled.as_str())
        .fetch_all(pool)
        .await
        .map_err(db_error("while reading call_batches"))
}
