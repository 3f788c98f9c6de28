//! The Rust face of `callbridge_refresh_batch` (migration 0005), the one routine that
//! decides a batch's counts and status; persister and submitter both call it.

use anyhow::Context;
use callbridge_types::status::BatchStatus;
use sqlx::PgExecutor;

/// Recomputes `completed_calls`, `failed_calls` and `batch_status` of `batch_id` from
/// `call_logs` and `local_call_queue`, inside the caller's transaction (call it after
/// writing those rows, before committing). Locks the batch row until the transaction
/// ends: a transaction refreshing several batches must do so in ascending `batch_id`
/// order, or two of them can deadlock.
///
/// `None` when no `call_batches` row exists; the caller creates it first.
#[tracing::instrument(skip_all, fields(batch_id))]
pub async fn refresh_batch<'e>(
    executor: impl PgExecutor<'e>,
    batch_id: i32,
) -> anyhow::Result<Option<BatchStatus>> {
    let status: Option<String> = sqlx::query_scalar("SELECT callbridge_refresh_batch($1)")
        .bind(batch_id)
        .fetch_one(executor)
        .await
        .with_context(|| format!("while refreshing batch {batch_id}"))?;
    status
        .map(|status| BatchStatus::parse(&status))
        .transpose()
        .with_context(|| format!("while reading the status of batch {batch_id}"))
}
