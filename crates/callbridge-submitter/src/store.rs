//! The submitter's SQL on `local_call_queue` and `call_batches`, beside the code that
//! runs it. Every change to a row is guarded by `lease_owner = $owner AND queue_status =
//! 'submitting'`, so a submitter that lost its lease (it stalled past the expiry and
//! another took the rows over) can never overwrite the new owner's outcome.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use callbridge_types::erasure::HmacPads;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::reconcile::SettledNumbers;

/// A row this submitter leased.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClaimedRow {
    pub id: i32,
    pub batch_id: Option<i32>,
    pub phone_number: String,
    pub custom_data: Option<Value>,
    /// Failed attempts so far.
    pub retry_count: i32,
    pub last_error: Option<String>,
    /// `attempt_started_at` before this claim: set when an earlier request may have
    /// carried the row, which must then be reconciled before it is sent again.
    pub previous_attempt_started_at: Option<DateTime<Utc>>,
    /// The row's campaign; `None` for a row an application inserted itself.
    pub campaign_id: Option<i32>,
    /// The row's own IANA zone; `None`: its campaign's.
    pub time_zone: Option<String>,
    /// The pacing slot the row holds (see `campaign`), if any.
    pub paced_slot_at: Option<DateTime<Utc>>,
    /// Its number was on the do-not-call list: the claim made it `suppressed` instead of
    /// leasing it, and it must not be sent.
    pub suppressed: bool,
    /// The row's number in E.164 (written by enqueue; `None` for an application's row):
    /// what the per-day cap counts calls by.
    pub phone_e164: Option<String>,
    /// Its campaign's `max_attempts_per_day`, if it has one.
    pub max_attempts_per_day: Option<i32>,
    /// Set when the claim found its number's calls of the day used up: the row went back
    /// to `pending`, due then (see `daily_cap`), and must not be sent now.
    #[sqlx(skip)]
    pub held_until: Option<DateTime<Utc>>,
}

impl ClaimedRow {
    /// An earlier request may have carried this row.
    pub fn outcome_unknown(&self) -> bool {
        self.previous_attempt_started_at.is_some()
    }
}

/// A leased row going back to `pending` untouched, with the evidence of an earlier
/// attempt it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub id: i32,
    pub attempt_started_at: Option<DateTime<Utc>>,
}

/// The claim statement of [`claim_due_rows`] (its first step): `$1` the lease owner, `$2`
/// the most rows, `$3` the lease in seconds, `$4` the current instant of the submitter's
/// clock (due times are compared with it; leases, which measure real time, with the
/// database's), `$5` the default region's country calling code (text, e.g. `91`; NULL
/// when there is none). Public so a test can check its plan.
///
/// A leased row's `next_attempt_at` becomes `$4`: for a row that goes out, the instant of
/// its call, which is what the per-day cap counts a number's calls of a day by.
///
/// The do-not-call list is checked here, in the statement that takes the rows, so no
/// entry committed before a row is claimed can be missed: each picked row is looked up
/// in `do_not_call` by its primary key, and a listed one becomes `suppressed` (returned
/// with `suppressed` true, never leased) instead of `submitting`. The number looked up
/// is the row's `phone_e164` (written by enqueue); a row an application inserted has
/// none, and its `phone_number` is read as E.164 when it starts with `+`, else as a
/// national number of the default region (trunk zeros dropped). An erased number stays on
/// the list as its stand-in: `$6` and `$7`, the erasure key's HMAC blocks (NULL without a
/// key), let the same lookup find it (see `callbridge_types::erasure`). A row whose own
/// number was erased is suppressed too: there is nothing left to dial.
pub const CLAIM_DUE_ROWS_SQL: &str = r#"
WITH RECURSIVE oldest AS (
    -- The oldest due work, read through the partial indexes on next_attempt_at and
    -- lease_expires_at, so a deep queue costs no more to claim from than a shallow one.
    -- Looking a few claims deep lets concurrent claims find batches the others skip.
    (SELECT batch_id, next_attempt_at AS due_at
       FROM local_call_queue
      WHERE queue_status = 'pending' AND next_attempt_at <= $4
      ORDER BY next_attempt_at
      LIMIT $2 * 4)
    UNION ALL
    (SELECT batch_id, lease_expires_at
       FROM local_call_queue
      WHERE queue_status = 'submitting' AND lease_expires_at < now()
      ORDER BY lease_expires_at
      LIMIT $2 * 4)
),
candidates AS (
    SELECT batch_id, min(due_at) AS due_at
      FROM oldest
     WHERE batch_id IS NOT NULL
     GROUP BY batch_id
),
sized AS (
    SELECT c.batch_id, due.row_count,
           row_number() OVER (ORDER BY c.due_at, c.batch_id) AS position
      FROM candidates c
     CROSS JOIN LATERAL (
           SELECT count(*) AS row_count
             FROM (SELECT 1
                     FROM local_call_queue q
                    WHERE q.batch_id = c.batch_id
                      AND ((q.queue_status = 'pending' AND q.next_attempt_at <= $4)
                           OR (q.queue_status = 'submitting' AND q.lease_expires_at < now()))
                    LIMIT $2) capped
           ) due
),
walk (position, batch_id, taken, chosen) AS (
    -- Walks the candidates in order, taking each whole batch that still fits (the first
    -- one even when it alone exceeds the limit) and that no concurrent claim holds: the
    -- transaction-scoped advisory lock makes a concurrent claim skip the whole batch
    -- instead of taking the rows this one has not reached yet. It is released when this
    -- statement commits, by which time the rows are leased.
    SELECT 0::bigint, NULL::integer, 0::bigint, false
    UNION ALL
    SELECT s.position, s.batch_id,
           w.taken + CASE WHEN pick.locked THEN s.row_count ELSE 0 END,
           pick.locked
      FROM walk w
      JOIN sized s ON s.position = w.position + 1
     CROSS JOIN LATERAL (
           -- CASE fixes the order: only a batch that fits is locked.
           SELECT CASE WHEN w.taken = 0 OR w.taken + s.row_count <= $2
                       THEN pg_try_advisory_xact_lock(hashtext('callbridge.submitter.claim'), s.batch_id)
                       ELSE false
                  END AS locked
           ) pick
     WHERE w.taken < $2
),
chosen AS (
    SELECT batch_id FROM walk WHERE chosen
),
picked_batched AS (
    SELECT q.id, q.queue_status AS previous_status,
           q.attempt_started_at AS previous_attempt_started_at, q.lease_owner AS previous_owner,
           -- A row whose number was erased has nothing left to dial.
           (q.phone_number LIKE 'erased:%'
            OR EXISTS (SELECT 1
                         FROM (SELECT CASE
                                      WHEN q.phone_e164 IS NOT NULL THEN q.phone_e164
                                      WHEN btrim(q.phone_number) LIKE '+%'
                                      THEN '+' || regexp_replace(q.phone_number, '[^0-9]', '', 'g')
                                      ELSE '+' || $5::TEXT || ltrim(regexp_replace(q.phone_number, '[^0-9]', '', 'g'), '0')
                                      END AS number) n
                        -- Two lookups by the list's key: the number, then its stand-in.
                        WHERE EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone_number = n.number)
                           OR EXISTS (SELECT 1 FROM do_not_call d
                                       WHERE d.phone_number = callbridge_erased_stand_in(
                                                 n.number, $6::BYTEA, $7::BYTEA))))
           AS on_do_not_call
      FROM local_call_queue q
     WHERE q.batch_id IN (SELECT batch_id FROM chosen)
       AND ((q.queue_status = 'pending' AND q.next_attempt_at <= $4)
            OR (q.queue_status = 'submitting' AND q.lease_expires_at < now()))
     ORDER BY q.batch_id, q.id
     LIMIT $2
     -- Row locks until the lease is written; rows another claim holds are skipped, not
     -- waited for, so replicas never block each other and never claim the same row.
       FOR UPDATE SKIP LOCKED
),
picked_unbatched AS (
    -- Rows an application inserted without a batch_id cannot be sent; they are claimed
    -- only to be failed with a reason, and only scanned for when one is among the oldest.
    -- (Not checked against do_not_call: such a row is failed, never sent.)
    SELECT q.id, q.queue_status AS previous_status,
           q.attempt_started_at AS previous_attempt_started_at, q.lease_owner AS previous_owner,
           false AS on_do_not_call
      FROM local_call_queue q
     WHERE q.batch_id IS NULL
       AND EXISTS (SELECT 1 FROM oldest WHERE oldest.batch_id IS NULL)
       AND ((q.queue_status = 'pending' AND q.next_attempt_at <= $4)
            OR (q.queue_status = 'submitting' AND q.lease_expires_at < now()))
     LIMIT $2
       FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT * FROM picked_batched
    UNION ALL
    SELECT * FROM picked_unbatched
)
UPDATE local_call_queue q
   SET queue_status = CASE WHEN p.on_do_not_call THEN 'suppressed' ELSE 'submitting' END,
       lease_owner = CASE WHEN p.on_do_not_call THEN NULL ELSE $1 END,
       lease_expires_at = CASE WHEN p.on_do_not_call THEN NULL
                               ELSE now() + make_interval(secs => $3) END,
       -- A suppressed row keeps the evidence of any earlier attempt: it was not sent now.
       attempt_started_at = CASE WHEN p.on_do_not_call THEN q.attempt_started_at ELSE now() END,
       next_attempt_at = CASE WHEN p.on_do_not_call THEN q.next_attempt_at ELSE $4 END,
       -- A lease that expired is an attempt whose outcome nobody recorded: it counts.
       retry_count = coalesce(q.retry_count, 0)
                     + CASE WHEN p.previous_status = 'submitting' THEN 1 ELSE 0 END,
       last_error = CASE WHEN p.on_do_not_call
                         THEN 'on the do-not-call list when it was due: never sent'
                         WHEN p.previous_status = 'submitting'
                         THEN format('the lease of %s expired before the outcome of its request was recorded', p.previous_owner)
                         ELSE q.last_error END,
       updated_at = CURRENT_TIMESTAMP
  FROM picked p
 WHERE q.id = p.id
   -- The same rows again, as an array: it makes the planner fetch them by primary key.
   -- Otherwise, once the table is analysed, it hashes the whole table (its submitted
   -- history included) on every claim, a cost that grows with every campaign.
   AND q.id = ANY (ARRAY(SELECT id FROM picked))
RETURNING q.id, q.batch_id, q.phone_number, q.custom_data, q.retry_count, q.last_error,
          p.previous_attempt_started_at, q.campaign_id, q.time_zone, q.paced_slot_at,
          p.on_do_not_call AS suppressed, q.phone_e164,
          -- Looked up by primary key, and only for a row of a campaign.
          CASE WHEN q.campaign_id IS NOT NULL
               THEN (SELECT c.max_attempts_per_day FROM campaigns c WHERE c.id = q.campaign_id)
          END AS max_attempts_per_day
"#;

/// What one claim binds into [`CLAIM_DUE_ROWS_SQL`] (its `$1`-`$7`, in that order).
#[derive(Debug, Clone, Copy)]
pub struct ClaimParams<'a> {
    pub owner: &'a str,
    pub limit: u32,
    pub lease: Duration,
    pub now: DateTime<Utc>,
    pub home_calling_code: Option<u16>,
    pub erased_opt_outs: Option<&'a HmacPads>,
}

/// Begins a claim's transaction, in which [`CLAIM_DUE_ROWS_SQL`] runs with its generic
/// plan (see [`BEGIN_CLAIM_SQL`]).
pub async fn begin_claim(pool: &PgPool) -> anyhow::Result<Transaction<'static, Postgres>> {
    pool.begin_with(BEGIN_CLAIM_SQL)
        .await
        .context("while starting a claim's transaction")
}

/// Starts a claim's transaction and, in the same round trip, makes it run the cached
/// generic plan. Left to choose, Postgres plans the claim afresh on every round (about
/// 0.8 ms of planning, three times what running it costs) as soon as the queue holds
/// many rows that are not due yet, such as a campaign waiting for its calling window: a
/// generic plan cannot know how many rows `next_attempt_at <= $4` selects, so it is
/// estimated dearer than each custom plan. Every part of the statement reads through an
/// index whatever its bound values (the plan tests check the generic plan as well), so
/// the plan made once per connection serves every claim. The setting ends with the
/// transaction.
pub const BEGIN_CLAIM_SQL: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// Runs [`CLAIM_DUE_ROWS_SQL`] in `tx` (begun by [`begin_claim`]), the first step of
/// [`claim_due_rows`]; public so the benchmark's raw limit runs the very same step.
pub async fn run_claim_statement(
    tx: &mut Transaction<'_, Postgres>,
    claim: &ClaimParams<'_>,
) -> anyhow::Result<Vec<ClaimedRow>> {
    sqlx::query_as(CLAIM_DUE_ROWS_SQL)
        .bind(claim.owner)
        .bind(i64::from(claim.limit))
        .bind(claim.lease.as_secs_f64())
        .bind(claim.now)
        .bind(claim.home_calling_code.map(|code| code.to_string()))
        .bind(claim.erased_opt_outs.map(|pads| pads.inner.as_slice()))
        .bind(claim.erased_opt_outs.map(|pads| pads.outer.as_slice()))
        .fetch_all(&mut **tx)
        .await
        .context("while claiming due local_call_queue rows")
}

/// Leases up to `limit` due rows for `lease`, whole batches preferred, in one
/// transaction that also applies the do-not-call list and the per-day cap.
///
/// Due rows are `pending` rows whose `next_attempt_at` has come, and `submitting` rows
/// whose lease expired (their submitter died or stalled). Each row's
/// `attempt_started_at` is set now, in the claim's own committed transaction, so a crash
/// at any later point leaves the evidence that a request may have carried it; the value
/// it had before is returned.
///
/// Batches are taken in the order their oldest due row became due, as many whole
/// batches as fit in `limit` (the first one even when it alone exceeds it), so a batch
/// normally goes out as one request. An advisory lock per batch keeps two concurrent
/// claims from splitting one batch between them.
///
/// Rows whose number is on the do-not-call list come back `suppressed` (see
/// [`CLAIM_DUE_ROWS_SQL`]), and their batches are refreshed in the same transaction, so
/// a batch all of whose rows were suppressed ends even if the submitter dies right after
/// the claim. Rows whose number had its day's calls (`max_attempts_per_day`) come back
/// with `held_until` set, already `pending` again (see [`crate::daily_cap`]).
/// `home_calling_code` is the default region's country calling code, which reads an
/// application's national numbers; `erased_opt_outs`, the erasure key's HMAC blocks, lets
/// the list's erased numbers be recognised.
///
/// Locks are taken in the order every writer of these tables takes them: queue rows, then
/// the numbers' locks, then batch rows.
#[tracing::instrument(name = "claim_due_rows", skip_all, fields(limit = limit, claimed))]
pub async fn claim_due_rows(
    pool: &PgPool,
    owner: &str,
    limit: u32,
    lease: Duration,
    now: DateTime<Utc>,
    home_calling_code: Option<u16>,
    erased_opt_outs: Option<&HmacPads>,
) -> anyhow::Result<Vec<ClaimedRow>> {
    let mut tx = begin_claim(pool).await?;
    let claim = ClaimParams {
        owner,
        limit,
        lease,
        now,
        home_calling_code,
        erased_opt_outs,
    };
    let mut rows = run_claim_statement(&mut tx, &claim).await?;
    crate::daily_cap::hold_rows_over_cap(&mut tx, owner, &mut rows, now).await?;
    let suppressed: BTreeSet<i32> = rows
        .iter()
        .filter(|row| row.suppressed)
        .filter_map(|row| row.batch_id)
        .collect();
    refresh_batches(&mut tx, &suppressed.into_iter().collect::<Vec<_>>()).await?;
    tx.commit()
        .await
        .context("while committing the claim of local_call_queue rows")?;
    tracing::Span::current().record("claimed", rows.len());
    Ok(rows)
}

/// Marks the rows `$1` (ids) that owner `$2` still leases `submitted`, after the API
/// accepted them. Public so the benchmark's raw limit runs the very same statement.
pub const MARK_SUBMITTED_SQL: &str = "UPDATE local_call_queue
    SET queue_status = 'submitted', submitted_at = now(), last_error = NULL,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = CURRENT_TIMESTAMP
  WHERE id = ANY($1) AND lease_owner = $2 AND queue_status = 'submitting'";

/// Refreshes the planner's statistics of `local_call_queue`.
#[tracing::instrument(skip_all)]
pub async fn analyze_queue(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("ANALYZE local_call_queue")
        .execute(pool)
        .await
        .context("while analysing local_call_queue")?;
    Ok(())
}

/// Extends the lease on `ids` before a request that might outlive it. Returns how many
/// are still ours; fewer than asked means another submitter took some over.
#[tracing::instrument(skip_all, fields(rows = ids.len()))]
pub async fn renew_lease(
    pool: &PgPool,
    owner: &str,
    ids: &[i32],
    lease: Duration,
) -> anyhow::Result<u64> {
    let renewed = sqlx::query(
        "UPDATE local_call_queue
            SET lease_expires_at = now() + make_interval(secs => $3)
          WHERE id = ANY($1) AND lease_owner = $2 AND queue_status = 'submitting'",
    )
    .bind(ids)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await
    .context("while renewing the lease on local_call_queue rows")?;
    Ok(renewed.rows_affected())
}

/// Whether rows of `batch_id` other than `own_ids` (this round's) are leased: another
/// submitter, or another round of this one, may have a request for them in flight, so
/// batch-status cannot tell their numbers from ours yet.
#[tracing::instrument(skip_all, fields(batch_id = batch_id))]
pub async fn batch_leased_elsewhere(
    pool: &PgPool,
    batch_id: i32,
    own_ids: &[i32],
) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM local_call_queue
              WHERE batch_id = $1 AND queue_status = 'submitting'
                AND lease_expires_at >= now() AND id <> ALL($2))",
    )
    .bind(batch_id)
    .bind(own_ids)
    .fetch_one(pool)
    .await
    .context("while checking for other leases on the batch")
}

/// The phone numbers of the batch's rows that are `submitted` or `needs_review`.
#[tracing::instrument(skip_all, fields(batch_id = batch_id))]
pub async fn settled_numbers(pool: &PgPool, batch_id: i32) -> anyhow::Result<SettledNumbers> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT phone_number, queue_status FROM local_call_queue
          WHERE batch_id = $1 AND queue_status IN ('submitted', 'needs_review')",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await
    .context("while reading the batch's settled rows")?;
    let mut settled = SettledNumbers::default();
    for (number, status) in rows {
        if status == "submitted" {
            settled.submitted.push(number);
        } else {
            settled.under_review.push(number);
        }
    }
    Ok(settled)
}

/// The system holds these rows: `submitted`, and the batch's `total_calls` grows by as
/// many, in one transaction with the batch's refresh.
#[tracing::instrument(name = "commit_submitted", skip_all, fields(batch_id = batch_id, rows = ids.len()))]
pub async fn record_submitted(
    pool: &PgPool,
    owner: &str,
    batch_id: i32,
    ids: &[i32],
    accountcode: &str,
) -> anyhow::Result<u64> {
    let mut tx = begin(pool).await?;
    let submitted = sqlx::query(MARK_SUBMITTED_SQL)
        .bind(ids)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .context("while marking local_call_queue rows submitted")?
        .rows_affected();
    refresh_batch(&mut tx, batch_id, submitted, accountcode).await?;
    commit(tx).await?;
    Ok(submitted)
}

/// Gives these rows up: `failed` with `error`, and the batch refreshed (it fails when the
/// system accepted none of its rows).
#[tracing::instrument(name = "commit_failed", skip_all, fields(batch_id = ?batch_id, rows = ids.len()))]
pub async fn record_failed(
    pool: &PgPool,
    owner: &str,
    batch_id: Option<i32>,
    ids: &[i32],
    error: &str,
    accountcode: &str,
) -> anyhow::Result<u64> {
    record_final(pool, owner, batch_id, ids, "failed", error, accountcode).await
}

/// These rows' outcome cannot be established: `needs_review` with `reason`, never sent
/// again automatically.
#[tracing::instrument(name = "commit_needs_review", skip_all, fields(batch_id = batch_id, rows = ids.len()))]
pub async fn record_needs_review(
    pool: &PgPool,
    owner: &str,
    batch_id: i32,
    ids: &[i32],
    reason: &str,
    accountcode: &str,
) -> anyhow::Result<u64> {
    record_final(
        pool,
        owner,
        Some(batch_id),
        ids,
        "needs_review",
        reason,
        accountcode,
    )
    .await
}

async fn record_final(
    pool: &PgPool,
    owner: &str,
    batch_id: Option<i32>,
    ids: &[i32],
    status: &str,
    error: &str,
    accountcode: &str,
) -> anyhow::Result<u64> {
    let mut tx = begin(pool).await?;
    let changed = sqlx::query(
        "UPDATE local_call_queue
            SET queue_status = $3, last_error = $4,
                lease_owner = NULL, lease_expires_at = NULL, updated_at = CURRENT_TIMESTAMP
          WHERE id = ANY($1) AND lease_owner = $2 AND queue_status = 'submitting'",
    )
    .bind(ids)
    .bind(owner)
    .bind(status)
    .bind(error)
    .execute(&mut *tx)
    .await
    .with_context(|| format!("while marking local_call_queue rows {status}"))?
    .rows_affected();
    if let Some(batch_id) = batch_id {
        refresh_batch(&mut tx, batch_id, 0, accountcode).await?;
    }
    commit(tx).await?;
    Ok(changed)
}

/// How a failed attempt is recorded.
#[derive(Debug, Clone)]
pub struct AttemptFailure<'a> {
    /// The request certainly had no effect (429, refused connection): the evidence of
    /// the attempt is cleared, and rows out of attempts fail. Otherwise (5xx, timeout,
    /// warning…) the evidence stays, so the next claim reconciles first, and rows out of
    /// attempts are due at once, to be reconciled into their final state.
    pub certainly_not_taken: bool,
    pub retry_in: Duration,
    pub error: &'a str,
    pub max_attempts: u32,
    /// The submitter clock's current instant: the retry is due `retry_in` after it.
    pub now: DateTime<Utc>,
}

/// Rows that were retried and rows that failed for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub retried: u64,
    pub failed: u64,
}

/// Counts one more failed attempt on these rows and schedules the next.
#[tracing::instrument(name = "commit_retry", skip_all, fields(batch_id = batch_id, rows = ids.len()))]
pub async fn record_attempt_failure(
    pool: &PgPool,
    owner: &str,
    batch_id: i32,
    ids: &[i32],
    failure: &AttemptFailure<'_>,
    accountcode: &str,
) -> anyhow::Result<FailureCounts> {
    let mut tx = begin(pool).await?;
    let (failed, retried): (i64, i64) = sqlx::query_as(
        "WITH updated AS (
             UPDATE local_call_queue
                SET retry_count = coalesce(retry_count, 0) + 1,
                    queue_status = CASE WHEN $3 AND coalesce(retry_count, 0) + 1 >= $4
                                        THEN 'failed' ELSE 'pending' END,
                    next_attempt_at = CASE WHEN NOT $3 AND coalesce(retry_count, 0) + 1 >= $4
                                           THEN $7
                                           ELSE $7 + make_interval(secs => $5) END,
                    attempt_started_at = CASE WHEN $3 THEN NULL ELSE attempt_started_at END,
                    last_error = CASE WHEN $3 AND coalesce(retry_count, 0) + 1 >= $4
                                      THEN format('gave up after %s attempts; last error: %s',
                                                  coalesce(retry_count, 0) + 1, $6::text)
                                      ELSE $6 END,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = CURRENT_TIMESTAMP
              WHERE id = ANY($1) AND lease_owner = $2 AND queue_status = 'submitting'
          RETURNING queue_status)
         SELECT count(*) FILTER (WHERE queue_status = 'failed'),
                count(*) FILTER (WHERE queue_status = 'pending')
           FROM updated",
    )
    .bind(ids)
    .bind(owner)
    .bind(failure.certainly_not_taken)
    .bind(i64::from(failure.max_attempts))
    .bind(failure.retry_in.as_secs_f64())
    .bind(failure.error)
    .bind(failure.now)
    .fetch_one(&mut *tx)
    .await
    .context("while scheduling the retry of local_call_queue rows")?;
    if failed > 0 {
        refresh_batch(&mut tx, batch_id, 0, accountcode).await?;
    }
    commit(tx).await?;
    Ok(FailureCounts {
        retried: u64::try_from(retried).unwrap_or_default(),
        failed: u64::try_from(failed).unwrap_or_default(),
    })
}

/// Returns leased rows to `pending` without counting an attempt (shutdown, a paused
/// key, a batch another submitter is busy with), due again `delay` after `now` (the
/// submitter clock's instant).
#[tracing::instrument(name = "release_leases", skip_all, fields(rows = rows.len()))]
pub async fn release(
    pool: &PgPool,
    owner: &str,
    rows: &[Release],
    delay: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i32> = rows.iter().map(|row| row.id).collect();
    let evidence: Vec<Option<DateTime<Utc>>> =
        rows.iter().map(|row| row.attempt_started_at).collect();
    let released = sqlx::query(
        "UPDATE local_call_queue q
            SET queue_status = 'pending', lease_owner = NULL, lease_expires_at = NULL,
                attempt_started_at = r.attempt_started_at,
                next_attempt_at = greatest(q.next_attempt_at, $5 + make_interval(secs => $3)),
                updated_at = CURRENT_TIMESTAMP
           FROM unnest($1::int4[], $4::timestamptz[]) AS r(id, attempt_started_at)
          WHERE q.id = r.id AND q.lease_owner = $2 AND q.queue_status = 'submitting'",
    )
    .bind(&ids)
    .bind(owner)
    .bind(delay.as_secs_f64())
    .bind(&evidence)
    .bind(now)
    .execute(pool)
    .await
    .context("while releasing leased local_call_queue rows")?;
    Ok(released.rows_affected())
}

/// A leased row going back to `pending` untouched because its campaign's rules hold it
/// (not open yet, paused, paced): due at `until`, marked `deferred_by_campaign` so a
/// change of rules or a resume brings it back at once, holding `paced_slot_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferral {
    pub release: Release,
    pub until: DateTime<Utc>,
    pub paced_slot_at: Option<DateTime<Utc>>,
}

/// Returns leased rows to `pending` without counting an attempt, each due at its
/// deferral's `until`.
#[tracing::instrument(name = "defer_by_campaign", skip_all, fields(rows = rows.len()))]
pub async fn defer(pool: &PgPool, owner: &str, rows: &[Deferral]) -> anyhow::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i32> = rows.iter().map(|row| row.release.id).collect();
    let evidence: Vec<Option<DateTime<Utc>>> = rows
        .iter()
        .map(|row| row.release.attempt_started_at)
        .collect();
    let until: Vec<DateTime<Utc>> = rows.iter().map(|row| row.until).collect();
    let slots: Vec<Option<DateTime<Utc>>> = rows.iter().map(|row| row.paced_slot_at).collect();
    let deferred = sqlx::query(
        "UPDATE local_call_queue q
            SET queue_status = 'pending', lease_owner = NULL, lease_expires_at = NULL,
                attempt_started_at = r.attempt_started_at,
                next_attempt_at = r.until, deferred_by_campaign = true,
                paced_slot_at = r.paced_slot_at,
                updated_at = CURRENT_TIMESTAMP
           FROM unnest($1::int4[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
                AS r(id, attempt_started_at, until, paced_slot_at)
          WHERE q.id = r.id AND q.lease_owner = $2 AND q.queue_status = 'submitting'",
    )
    .bind(&ids)
    .bind(owner)
    .bind(&evidence)
    .bind(&until)
    .bind(&slots)
    .execute(pool)
    .await
    .context("while deferring leased local_call_queue rows by their campaign's rules")?;
    Ok(deferred.rows_affected())
}

/// Lets the shared routine decide the status of batches some of whose rows the claim
/// suppressed, in the claim's transaction: a batch whose rows are now all suppressed or
/// cancelled ends.
async fn refresh_batches(tx: &mut PgConnection, batch_ids: &[i32]) -> anyhow::Result<()> {
    if batch_ids.is_empty() {
        return Ok(());
    }
    // One batch after another, in id order: each takes its batch row's lock, and a fixed
    // order keeps two refreshers from waiting on each other.
    sqlx::query("SELECT callbridge_refresh_batch(b) FROM unnest($1::int4[]) AS b ORDER BY b")
        .bind(batch_ids)
        .execute(&mut *tx)
        .await
        .context("while refreshing the batches of suppressed rows")?;
    Ok(())
}

/// Creates the batch's row when missing, adds what the system accepted to `total_calls`,
/// and lets the shared routine decide counts and status, inside the caller's transaction.
async fn refresh_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch_id: i32,
    accepted: u64,
    accountcode: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode) VALUES ($1, $2)
         ON CONFLICT (batch_id) DO NOTHING",
    )
    .bind(batch_id)
    .bind(accountcode)
    .execute(&mut **tx)
    .await
    .context("while creating the call_batches row")?;
    if accepted > 0 {
        sqlx::query(
            "UPDATE call_batches
                SET total_calls = coalesce(total_calls, 0) + $2, updated_at = CURRENT_TIMESTAMP
              WHERE batch_id = $1",
        )
        .bind(batch_id)
        .bind(i32::try_from(accepted).context("while adding to total_calls")?)
        .execute(&mut **tx)
        .await
        .context("while adding to call_batches.total_calls")?;
    }
    sqlx::query("SELECT callbridge_refresh_batch($1)")
        .bind(batch_id)
        .execute(&mut **tx)
        .await
        .context("while refreshing the batch's counts and status")?;
    Ok(())
}

async fn begin(pool: &PgPool) -> anyhow::Result<Transaction<'static, Postgres>> {
    pool.begin().await.context("while starting a transaction")
}

async fn commit(tx: Transaction<'_, Postgres>) -> anyhow::Result<()> {
    tx.commit().await.context("while committing the outcome")
}

/// Row counts per queue status (the finished `submitted` history excluded), for the
/// `local_call_queue_rows` gauge: the statuses of `metrics::DEPTH_STATUSES`, spelled as
/// literals so the count reads only their part of the index on `queue_status`.
#[tracing::instrument(skip_all)]
pub async fn queue_depth(pool: &PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT queue_status, count(*) FROM local_call_queue
          WHERE queue_status IN ('pending', 'submitting', 'failed', 'needs_review',
                                 'cancelled', 'suppressed')
          GROUP BY queue_status",
    )
    .fetch_all(pool)
    .await
    .context("while counting local_call_queue rows by status")
}

/// Seconds the oldest due `pending` row has waited past its `next_attempt_at` (0 when
/// none is due).
#[tracing::instrument(skip_all)]
pub async fn oldest_due_age(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<f64> {
    let age: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM $1 - min(next_attempt_at))::float8
           FROM local_call_queue
          WHERE queue_status = 'pending' AND next_attempt_at <= $1",
    )
    .bind(now)
    .fetch_one(pool)
    .await
    .context("while reading the age of the oldest due row")?;
    Ok(age.unwrap_or(0.0).max(0.0))
}

/// Seconds until the next row is due (on the submitter's clock, from `now`) and until
/// the next lease expires (real seconds); each `None` when nothing waits for it. Zero or
/// negative means it is due now.
#[tracing::instrument(skip_all)]
pub async fn next_due_in(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    sqlx::query_as(
        "SELECT extract(epoch FROM (SELECT min(next_attempt_at) FROM local_call_queue
                                     WHERE queue_status = 'pending') - $1)::float8,
                extract(epoch FROM (SELECT min(lease_expires_at) FROM local_call_queue
                                     WHERE queue_status = 'submitting') - now())::float8",
    )
    .bind(now)
    .fetch_one(pool)
    .await
    .context("while reading when the next row is due")
}
