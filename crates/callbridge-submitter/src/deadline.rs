//! The callback deadline: a submitted number whose call sent no terminal callback within
//! `lifecycle.callback_deadline` of its submission is reconciled against batch-status
//! and, its outcome still unknown, given the call status `expired`, so its batch can
//! complete. A terminal callback that arrives later replaces it (see
//! `callbridge_types::status`), and the batch's counts follow.
//!
//! The calls of a batch past the deadline are of two kinds:
//! * calls with a `call_logs` row in a status that counts nowhere (`started`,
//!   `answered`, an unknown status): the row becomes `expired`;
//! * numbers the centralized system accepted that never sent a callback at all: each gets
//!   a row of its own, `expired`, under the call id the ingress would derive for a
//!   callback without one (`<batch_id>:<phone_number>`), so a late callback without a
//!   call id lands on it. At most `total_calls` minus the batch's logged calls get one, so
//!   the batch never counts more calls than the system accepted.
//!
//! Either way the expiry is also an event in `call_events` (identity only, see
//! [`callbridge_types::lifecycle::expiry_event`]): a call's row is the fold of its events,
//! so the persister, folding a late callback with the expiry, writes a row that keeps
//! `expired` against a late `call_answered` and yields to a late terminal callback.
//! The expiry takes each call's lock (the persister's advisory lock on its id) and
//! re-reads its status under it, so a callback being stored at the same time either
//! lands first (the call is then not expired) or folds the expiry in after.
//!
//! Batch-status says which numbers the system holds and how many of the batch's calls
//! it placed, not how each call ended: when it answers, the outcome stays unknown and
//! the calls expire; when it cannot be asked, the batch waits for the next check.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use callbridge_types::centralized_api::NumberMatch;
use callbridge_types::event::derived_call_id;
use callbridge_types::lifecycle::{EXPIRY_EVENT_TYPE, expiry_event, expiry_event_id};
use callbridge_types::status::{BatchStatus, CallStatus};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

/// Batches looked at per check, oldest first; the rest wait for the next check.
const BATCHES_PER_CHECK: i64 = 100;

/// A batch with calls past the deadline.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OverdueBatch {
    pub batch_id: i32,
    pub accountcode: String,
    pub total_calls: i32,
}

/// What batch-status said about a batch, as the expiry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStatusSaid {
    /// It lists the numbers it holds (they say nothing of how each call ended).
    Holds(usize),
    /// Its answer could not be read.
    Unreadable,
}

/// What one deadline check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Batches past the deadline with calls still uncounted.
    pub overdue_batches: u64,
    /// Calls given the status `expired`.
    pub expired: u64,
    /// Batches left for the next check: batch-status could not be asked.
    pub postponed_batches: u64,
}

/// Batches still open (`submitted`, `in_progress`) whose counts have not reached
/// `total_calls` and whose last number went out before `cutoff`. The batch statuses are
/// bound from `BatchStatus` (the submitter's quoted literals are queue statuses only, a
/// rule its tests check); this statement runs once per check, so no partial index needs
/// them as literals.
#[tracing::instrument(skip_all)]
pub async fn overdue_batches(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<Vec<OverdueBatch>> {
    sqlx::query_as(
        "SELECT b.batch_id, b.accountcode, b.total_calls
           FROM call_batches b
          WHERE b.batch_status = ANY($3)
            AND coalesce(b.total_calls, 0) > 0
            AND coalesce(b.completed_calls, 0) + coalesce(b.failed_calls, 0) < b.total_calls
            AND coalesce((SELECT max(q.submitted_at) FROM local_call_queue q
                           WHERE q.batch_id = b.batch_id AND q.queue_status = 'submitted'),
                         b.submitted_at) < $1
          ORDER BY b.batch_id
          LIMIT $2",
    )
    .bind(cutoff)
    .bind(BATCHES_PER_CHECK)
    .bind([
        BatchStatus::Submitted.as_str(),
        BatchStatus::InProgress.as_str(),
    ])
    .fetch_all(pool)
    .await
    .context("while looking for batches past the callback deadline")
}

/// Expires the calls of `batch` whose outcome is still unknown, in one transaction, and
/// lets the batch routine recount it. Returns how many calls were expired.
#[tracing::instrument(skip_all, fields(batch_id = batch.batch_id, expired))]
pub async fn expire_batch(
    pool: &PgPool,
    batch: &OverdueBatch,
    number_match: NumberMatch,
    said: &BatchStatusSaid,
    deadline: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut tx = pool
        .begin()
        .await
        .context("while beginning the expiry transaction")?;
    let live = live_calls(&mut tx, batch.batch_id).await?;
    let unheard = unheard_numbers(&mut tx, batch, number_match).await?;
    let placeholders: Vec<String> = unheard
        .iter()
        .map(|number| derived_call_id(batch.batch_id, number))
        .collect();
    let mut call_ids: Vec<&str> = live.iter().map(String::as_str).collect();
    call_ids.extend(placeholders.iter().map(String::as_str));
    if call_ids.is_empty() {
        return Ok(0);
    }
    // The persister's lock on each call, in its key order, held until commit.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(key)
           FROM (SELECT DISTINCT hashtextextended(call_id, 0) AS key
                   FROM unnest($1::text[]) AS call_id
                  ORDER BY key) AS keys",
    )
    .bind(&call_ids)
    .execute(&mut *tx)
    .await
    .context("while locking the calls to expire")?;

    // Re-read under the locks: a callback stored meanwhile may have ended the call.
    let mut expired: Vec<ExpiredCall> = sqlx::query_as(
        "UPDATE call_logs
            SET call_status = $3, updated_at = CURRENT_TIMESTAMP
          WHERE call_id = ANY($1::text[]) AND batch_id = $2
            AND callbridge_call_count_kind(call_status) IS NULL
         RETURNING call_id, accountcode, batch_id, phone_number",
    )
    .bind(&live)
    .bind(batch.batch_id)
    .bind(CallStatus::Expired.as_str())
    .fetch_all(&mut *tx)
    .await
    .context("while expiring calls in call_logs")?;
    if !unheard.is_empty() {
        let created: Vec<ExpiredCall> = sqlx::query_as(
            "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
             SELECT call_id, $3, $4, phone_number, $5
               FROM unnest($1::text[], $2::text[]) AS t(call_id, phone_number)
              ORDER BY call_id
             ON CONFLICT (call_id) DO NOTHING
             RETURNING call_id, accountcode, batch_id, phone_number",
        )
        .bind(&placeholders)
        .bind(&unheard)
        .bind(&batch.accountcode)
        .bind(batch.batch_id)
        .bind(CallStatus::Expired.as_str())
        .fetch_all(&mut *tx)
        .await
        .context("while writing call_logs rows for numbers that never called back")?;
        expired.extend(created);
    }
    insert_expiry_events(&mut tx, &expired, said, deadline, now).await?;
    callbridge_runtime::db::refresh_batch(&mut *tx, batch.batch_id).await?;
    tx.commit()
        .await
        .context("while committing the expiry transaction")?;
    let count = expired.len() as u64;
    tracing::Span::current().record("expired", count);
    Ok(count)
}

#[derive(Debug, sqlx::FromRow)]
struct ExpiredCall {
    call_id: String,
    accountcode: String,
    batch_id: Option<i32>,
    phone_number: String,
}

/// Calls of the batch whose status counts nowhere yet.
async fn live_calls(tx: &mut PgConnection, batch_id: i32) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT call_id FROM call_logs
          WHERE batch_id = $1 AND callbridge_call_count_kind(call_status) IS NULL
          ORDER BY call_id",
    )
    .bind(batch_id)
    .fetch_all(&mut *tx)
    .await
    .context("while reading the batch's calls without an outcome")
}

/// Numbers of the batch the system accepted that no `call_logs` row of the batch
/// answers to (compared as `number_match` says, since a callback may spell a number
/// differently), at most `total_calls` minus the rows the batch has.
async fn unheard_numbers(
    tx: &mut PgConnection,
    batch: &OverdueBatch,
    number_match: NumberMatch,
) -> anyhow::Result<Vec<String>> {
    let logged: Vec<String> =
        sqlx::query_scalar("SELECT phone_number FROM call_logs WHERE batch_id = $1")
            .bind(batch.batch_id)
            .fetch_all(&mut *tx)
            .await
            .context("while reading the batch's logged numbers")?;
    let submitted: Vec<String> = sqlx::query_scalar(
        "SELECT phone_number FROM local_call_queue
          WHERE batch_id = $1 AND queue_status = 'submitted'
          ORDER BY id",
    )
    .bind(batch.batch_id)
    .fetch_all(&mut *tx)
    .await
    .context("while reading the batch's submitted numbers")?;
    let room = usize::try_from(batch.total_calls)
        .unwrap_or(0)
        .saturating_sub(logged.len());
    let mut heard: BTreeMap<String, usize> = BTreeMap::new();
    for number in &logged {
        *heard.entry(number_match.key(number)).or_default() += 1;
    }
    let mut unheard = Vec::new();
    for number in submitted {
        match heard.get_mut(&number_match.key(&number)) {
            Some(count) if *count > 0 => *count -= 1,
            _ => unheard.push(number),
        }
    }
    unheard.sort();
    unheard.dedup();
    unheard.truncate(room);
    Ok(unheard)
}

/// One expiry event per expired call (see the module docs); a repeated expiry adds none.
async fn insert_expiry_events(
    tx: &mut PgConnection,
    calls: &[ExpiredCall],
    said: &BatchStatusSaid,
    deadline: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if calls.is_empty() {
        return Ok(());
    }
    let batch_status = match said {
        BatchStatusSaid::Holds(numbers) => json!({"numbers_held": numbers}),
        BatchStatusSaid::Unreadable => json!("unreadable"),
    };
    let mut event_ids = Vec::with_capacity(calls.len());
    let mut call_ids = Vec::with_capacity(calls.len());
    let mut batch_ids = Vec::with_capacity(calls.len());
    let mut payloads = Vec::with_capacity(calls.len());
    let mut bodies = Vec::with_capacity(calls.len());
    for call in calls {
        event_ids.push(expiry_event_id(&call.call_id));
        call_ids.push(call.call_id.as_str());
        batch_ids.push(call.batch_id);
        // What callbridge knew when it gave up; the number stays in the event body only.
        payloads.push(Json(json!({
            "event_type": EXPIRY_EVENT_TYPE,
            "call_id": call.call_id,
            "batch_id": call.batch_id,
            "reason": format!(
                "no terminal callback within {} s of submission", deadline.as_secs()
            ),
            "batch_status": batch_status,
        })));
        bodies.push(Json(expiry_event(
            &call.call_id,
            &call.accountcode,
            call.batch_id,
            &call.phone_number,
        )));
    }
    sqlx::query(
        "INSERT INTO call_events
                (event_id, event_type, call_id, batch_id, call_status, payload, received_at, event)
         SELECT event_id, $5, call_id, batch_id, $8, payload, $6, event
           FROM unnest($1::text[], $2::text[], $3::int4[], $4::jsonb[], $7::jsonb[])
                AS t(event_id, call_id, batch_id, payload, event)
          ORDER BY event_id
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_ids)
    .bind(call_ids)
    .bind(batch_ids)
    .bind(payloads)
    .bind(EXPIRY_EVENT_TYPE)
    .bind(now)
    .bind(bodies)
    .bind(CallStatus::Expired.as_str())
    .execute(&mut *tx)
    .await
    .context("while recording the expiries in call_events")?;
    Ok(())
}
