//! The Rust face of `callbridge_refresh_batch` (migrations 0005 and 0007), the one
//! routine that decides a batch's counts and status. The services call the routine from
//! their own SQL, in their own transactions: the submitter its one-argument form after
//! adding to `total_calls`; the persister its other form,
//! `callbridge_refresh_batch(batch_id, completed_delta, failed_delta)`, for every batch a
//! transaction touched in one statement, with what that transaction changed (it passes
//! `NULL` deltas, and so has the routine recount, only for a batch row it has just
//! created). This wrapper is the one-argument form for a caller with nothing else to do in
//! the same statement: tests, and a tool recounting a batch.

use anyhow::Context;
use callbridge_types::status::BatchStatus;
use sqlx::PgExecutor;

/// Recounts `completed_calls` and `failed_calls` of `batch_id` from `call_logs` and
/// decides its `batch_status` (probing `local_call_queue` only where the decision needs
/// it), inside the caller's transaction (call it after
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
