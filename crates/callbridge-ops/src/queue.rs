//! The two repairs of queue rows: `retry` sends a campaign's failed rows again, `resolve`
//! settles rows whose outcome is unknown (`needs_review`) once the operator has compared
//! them with the centralized system's batch-status. Each refuses rows in any other
//! status, so a repair can never resend a number the centralized system may hold.

use std::collections::BTreeMap;

use callbridge_types::campaign::CampaignStatus;
use callbridge_types::status::{BatchStatus, QueueStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Action, Actor};
use crate::campaign::{ActionOutcome, lock_campaign, refresh_batches};
use crate::{OpsError, db_error};

/// Final batch statuses a repair may reopen: once rows of the batch wait again, or the
/// system holds more of them, the batch is no longer over.
fn reopenable() -> Vec<&'static str> {
    [BatchStatus::Completed, BatchStatus::Failed]
        .iter()
        .map(|status| status.as_str())
        .collect()
}

/// Puts `batches` that a repair made unfinished back to `pending`, for the refresh to
/// decide their status again from their rows and calls.
async fn reopen_batches(conn: &mut PgConnection, batches: &[i32]) -> Result<(), OpsError> {
    sqlx::query(
        "UPDATE call_batches
            SET batch_status = $3, completed_at = NULL, updated_at = CURRENT_TIMESTAMP
          WHERE batch_id = ANY($1) AND batch_status = ANY($2)",
    )
    .bind(batches)
    .bind(reopenable())
    .bind(BatchStatus::Pending.as_str())
    .execute(conn)
    .await
    .map_err(db_error("while reopening the rows' batches"))?;
    Ok(())
}

fn batches_of(rows: &[(i32, Option<i32>)]) -> Vec<i32> {
    let mut batches: Vec<i32> = rows.iter().filter_map(|row| row.1).collect();
    batches.sort_unstable();
    batches.dedup();
    batches
}

/// `queue retry --campaign NAME --status failed`: the campaign's `failed` rows go back
/// to `pending`, due at `now`, with their attempts counted from zero again. Only `failed`
/// is accepted: other rows are still on their way (pending, submitting), settled
/// (submitted, cancelled, suppressed), or of unknown outcome (needs_review, which
/// `resolve` settles). A row that may have reached the centralized system in an earlier
/// attempt keeps that evidence, so the submitter asks batch-status before resending it.
#[tracing::instrument(skip_all, fields(campaign = name))]
pub async fn retry(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    name: &str,
    status: QueueStatus,
) -> Result<ActionOutcome, OpsError> {
    if status != QueueStatus::Failed {
        return Err(OpsError::Refused(format!(
            "queue retry takes failed rows only (--status failed), not {status}: {}",
            match status {
                QueueStatus::NeedsReview =>
                    "their outcome is unknown, settle them with `callbridge queue resolve`",
                QueueStatus::Pending | QueueStatus::Submitting => "they are still being sent",
                _ => "they are settled",
            }
        )));
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    let campaign = lock_campaign(&mut tx, name).await?;
    if campaign.status == CampaignStatus::Cancelled {
        return Err(OpsError::Cancelled {
            name: campaign.name,
            verb: "retried",
        });
    }
    let rows: Vec<(i32, Option<i32>)> = sqlx::query_as(
        "UPDATE local_call_queue
            SET queue_status = $3, retry_count = 0, next_attempt_at = $4,
                deferred_by_campaign = false, lease_owner = NULL, lease_expires_at = NULL,
                updated_at = CURRENT_TIMESTAMP
          WHERE campaign_id = $1 AND queue_status = $2
         RETURNING id, batch_id",
    )
    .bind(campaign.id)
    .bind(QueueStatus::Failed.as_str())
    .bind(QueueStatus::Pending.as_str())
    .bind(now)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error("while putting the failed rows back to pending"))?;
    let batches = batches_of(&rows);
    reopen_batches(&mut tx, &batches).await?;
    refresh_batches(&mut tx, batches.iter().copied()).await?;
    let mut ids: Vec<i32> = rows.iter().map(|row| row.0).collect();
    ids.sort_unstable();
    let action = Action {
        action: "queue.retry",
        campaign_id: Some(campaign.id),
        target: json!({
            "campaign": campaign.name,
            "queue_status": QueueStatus::Failed,
            "ids": audit::listed_ids(&ids),
        }),
        rows_affected: i64::try_from(ids.len()).unwrap_or(i64::MAX),
        detail: Some(json!({ "batches": batches })),
    };
    let action_id = audit::record(&mut tx, now, actor, &action).await?;
    tx.commit()
        .await
        .map_err(db_error("while committing the retry"))?;
    Ok(ActionOutcome {
        action_id,
        action: action.action,
        campaign: Some(campaign.name),
        status: Some(campaign.status),
        rows_affected: action.rows_affected,
        target: action.target,
        detail: action.detail.unwrap_or(Value::Null),
    })
}

/// Which rows `resolve` settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveTarget {
    /// These rows, every one of which must be `needs_review`.
    Ids(Vec<i32>),
    /// The `needs_review` rows of this batch (there must be one at least).
    Batch(i32),
}

impl ResolveTarget {
    fn json(&self) -> Value {
        match self {
            ResolveTarget::Ids(ids) => json!({ "ids": ids }),
            ResolveTarget::Batch(batch_id) => {
                json!({ "batch_id": batch_id, "queue_status": QueueStatus::NeedsReview })
            }
        }
    }
}

/// A row `resolve` would settle, as the operator reviews it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReviewRow {
    pub id: i32,
    pub batch_id: Option<i32>,
    pub phone_number: String,
    pub queue_status: String,
    pub last_error: Option<String>,
    pub campaign: Option<String>,
    pub campaign_status: Option<String>,
}

const REVIEW_ROWS_SQL: &str = "
SELECT q.id, q.batch_id, q.phone_number, q.queue_status, q.last_error,
       c.name AS campaign, c.status AS campaign_status
  FROM local_call_queue q
  LEFT JOIN campaigns c ON c.id = q.campaign_id
 WHERE CASE WHEN $1::INTEGER[] IS NOT NULL THEN q.id = ANY($1)
            ELSE q.batch_id = $2 AND q.queue_status = $3 END
 ORDER BY q.id";

async fn review_rows(
    conn: &mut PgConnection,
    target: &ResolveTarget,
    lock: bool,
) -> Result<Vec<ReviewRow>, OpsError> {
    let (ids, batch_id) = match target {
        ResolveTarget::Ids(ids) => (Some(ids.clone()), None),
        ResolveTarget::Batch(batch_id) => (None, Some(*batch_id)),
    };
    let sql = if lock {
        format!("{REVIEW_ROWS_SQL} FOR UPDATE OF q")
    } else {
        REVIEW_ROWS_SQL.to_owned()
    };
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .bind(batch_id)
        .bind(QueueStatus::NeedsReview.as_str())
        .fetch_all(conn)
        .await
        .map_err(db_error("while reading the rows to resolve"))
}

/// The rows `resolve` would settle, without changing anything: the caller shows them
/// beside the centralized system's batch-status before asking for the resolution.
pub async fn rows_to_resolve(
    pool: &PgPool,
    target: &ResolveTarget,
) -> Result<Vec<ReviewRow>, OpsError> {
    let mut conn = pool.acquire().await.map_err(db_error("while connecting"))?;
    let rows = review_rows(&mut conn, target, false).await?;
    check_resolvable(target, &rows)?;
    Ok(rows)
}

/// Refuses the whole resolution unless every row it names exists and is `needs_review`.
fn check_resolvable(target: &ResolveTarget, rows: &[ReviewRow]) -> Result<(), OpsError> {
    match target {
        ResolveTarget::Batch(batch_id) if rows.is_empty() => Err(OpsError::Refused(format!(
            "batch {batch_id} has no needs_review rows: nothing to resolve (`callbridge batch {batch_id}` shows its rows)"
        ))),
        ResolveTarget::Batch(_) => Ok(()),
        ResolveTarget::Ids(ids) => {
            let found: BTreeMap<i32, &ReviewRow> = rows.iter().map(|row| (row.id, row)).collect();
            let mut problems: Vec<String> = Vec::new();
            for id in ids {
                match found.get(id) {
                    None => problems.push(format!("{id} (no such row)")),
                    Some(row) if row.queue_status != QueueStatus::NeedsReview.as_str() => {
                        problems.push(format!("{id} ({})", row.queue_status));
                    }
                    Some(_) => {}
                }
            }
            if ids.is_empty() {
                return Err(OpsError::Refused(
                    "queue resolve needs row ids or --batch ID".into(),
                ));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(OpsError::Refused(format!(
                    "queue resolve settles needs_review rows only; nothing was changed: {}",
                    problems.join(", ")
                )))
            }
        }
    }
}

/// `queue resolve IDS|--batch ID --as submitted|pending`: settles `needs_review` rows.
///
/// * `submitted`: the centralized system holds them. The rows become `submitted` and
///   their batches' `total_calls` grow by as many, so a batch completes only once their
///   calls have ended too.
/// * `pending`: it does not hold them. The rows are sent again, due at `now`, without the
///   reconciliation an unknown outcome otherwise calls for (the operator settled it).
///
/// Refused as a whole, with nothing changed, when any row it names is in another status
/// (or, for `pending`, belongs to a cancelled campaign). `centralized` is the
/// batch-status the operator was shown; it is kept in the audit row.
#[tracing::instrument(skip_all)]
pub async fn resolve(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    target: &ResolveTarget,
    resolution: QueueStatus,
    centralized: Option<Value>,
) -> Result<ActionOutcome, OpsError> {
    if !matches!(resolution, QueueStatus::Submitted | QueueStatus::Pending) {
        return Err(OpsError::Refused(format!(
            "queue resolve settles rows as submitted (the centralized system holds them) or pending (it does not: send them again), not {resolution}"
        )));
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    let rows = review_rows(&mut tx, target, true).await?;
    check_resolvable(target, &rows)?;
    if resolution == QueueStatus::Pending {
        let cancelled = CampaignStatus::Cancelled.as_str();
        if let Some(row) = rows
            .iter()
            .find(|row| row.campaign_status.as_deref() == Some(cancelled))
        {
            return Err(OpsError::Refused(format!(
                "row {} belongs to cancelled campaign {:?}: it cannot be sent again; resolve it as submitted or leave it",
                row.id,
                row.campaign.as_deref().unwrap_or_default()
            )));
        }
    }
    let ids: Vec<i32> = rows.iter().map(|row| row.id).collect();
    let changed: Vec<(i32, Option<i32>)> = if resolution == QueueStatus::Submitted {
        sqlx::query_as(
            "UPDATE local_call_queue
                SET queue_status = $3, submitted_at = coalesce(submitted_at, $4),
                    lease_owner = NULL, lease_expires_at = NULL, deferred_by_campaign = false,
                    updated_at = CURRENT_TIMESTAMP
              WHERE id = ANY($1) AND queue_status = $2
             RETURNING id, batch_id",
        )
    } else {
        sqlx::query_as(
            "UPDATE local_call_queue
                SET queue_status = $3, next_attempt_at = $4, attempt_started_at = NULL,
                    retry_count = 0, lease_owner = NULL, lease_expires_at = NULL,
                    deferred_by_campaign = false, updated_at = CURRENT_TIMESTAMP
              WHERE id = ANY($1) AND queue_status = $2
             RETURNING id, batch_id",
        )
    }
    .bind(&ids)
    .bind(QueueStatus::NeedsReview.as_str())
    .bind(resolution.as_str())
    .bind(now)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error("while settling the rows"))?;
    let batches = batches_of(&changed);
    if resolution == QueueStatus::Submitted {
        // The system holds them: they count in total_calls, as if the submitter had
        // seen them accepted.
        for batch_id in &batches {
            let accepted = changed
                .iter()
                .filter(|row| row.1 == Some(*batch_id))
                .count();
            sqlx::query(
                "UPDATE call_batches
                    SET total_calls = coalesce(total_calls, 0) + $2, updated_at = CURRENT_TIMESTAMP
                  WHERE batch_id = $1",
            )
            .bind(batch_id)
            .bind(i32::try_from(accepted).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db_error("while adding the rows to total_calls"))?;
        }
    }
    reopen_batches(&mut tx, &batches).await?;
    refresh_batches(&mut tx, batches.iter().copied()).await?;
    let campaigns: Vec<&str> = {
        let mut names: Vec<&str> = rows
            .iter()
            .filter_map(|row| row.campaign.as_deref())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    // One campaign: the action is that campaign's. Several (rows named by id): none.
    let campaign_id: Option<i32> = match campaigns.as_slice() {
        [name] => sqlx::query_scalar("SELECT id FROM campaigns WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error("while reading the rows' campaign"))?,
        _ => None,
    };
    let action = Action {
        action: "queue.resolve",
        campaign_id,
        target: target.json(),
        rows_affected: i64::try_from(changed.len()).unwrap_or(i64::MAX),
        detail: Some(json!({
            "as": resolution,
            "ids": audit::listed_ids(&ids),
            "batches": batches,
            "centralized": centralized,
        })),
    };
    let action_id = audit::record(&mut tx, now, actor, &action).await?;
    tx.commit()
        .await
        .map_err(db_error("while committing the resolution"))?;
    Ok(ActionOutcome {
        action_id,
        action: action.action,
        campaign: match campaigns.as_slice() {
            [name] => Some((*name).to_owned()),
            _ => None,
        },
        status: None,
        rows_affected: action.rows_affected,
        target: action.target,
        detail: action.detail.unwrap_or(Value::Null),
    })
}
