//! Calling a number again: in the transaction that stores a call's terminal outcome, the
//! queue row the call came from is settled, and when its campaign's redial policy asks
//! for another attempt, that attempt is added as a new `local_call_queue` row
//! (`attempt` = n + 1, `redial_of` = the settled row) in a new batch, due no earlier than
//! the policy's interval after now and inside the campaign's calling window.
//!
//! Exactly once, whatever duplicates, orderings, replicas or crashes:
//! - a queue row is settled once (`settled_status` is written only while NULL, under
//!   the row's lock), and only the transaction that settles it decides about a redial;
//! - the unique index on `redial_of` refuses a second redial of one row anyway;
//! - everything happens in the transaction that stores the outcome, so a crash before
//!   commit leaves neither the outcome nor the redial, and the redelivered callback
//!   settles the row then.
//!
//! Not redialled: a call whose campaign is cancelled or whose number is on the
//! do-not-call list (the submitter's claim, which is authoritative, would suppress the
//! redial anyway), an outcome the policy does not
//! name, an attempt past the outcome's retries (the number is then *exhausted*, counted
//! on its batch once). A paused campaign's redial is created all the same and waits
//! with its campaign.
//!
//! The cap on attempts per number per day (`max_attempts_per_day`) counts every
//! campaign's rows of the number (its E.164 form) due that local day (the row's zone,
//! else its campaign's): rows waiting, being sent or sent, each on the day of its
//! `next_attempt_at`, which is when it was due and, for a row that went out, when the
//! submitter's claim took it. A redial that would pass the cap moves to the first opening
//! of the next day with room. Transactions creating redials of one number serialise on
//! the number's lock (`callbridge_lock_numbers`), which the submitter's claim takes too:
//! the claim is what enforces the cap when a row goes out; placing redials on days with
//! room only keeps them from waiting there in vain.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use callbridge_types::campaign::{
    self, CallingWindow, CampaignStatus, Days, RedialPolicy, StoredRedial, Tz, parse_time_zone,
};
use callbridge_types::status::CallStatus;
use chrono::{DateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::call_log::CallLog;
use crate::error::StoreError;

/// How many days ahead a capped redial looks for a day with room.
const CAP_HORIZON_DAYS: u32 = 60;
/// Numbers per redial batch at most: what `callbridge enqueue` puts in one by default.
const REDIALS_PER_BATCH: usize = 500;

/// What settling this transaction's terminal calls did.
#[derive(Debug, Default)]
pub struct Settled {
    /// Per batch, how many of its numbers are exhausted now.
    pub exhausted: BTreeMap<i32, i32>,
    /// Redial rows created, by the outcome of the call each one repeats (`busy`,
    /// `no_answer`…).
    pub redials: BTreeMap<String, usize>,
}

/// A terminal call's queue row, its campaign's rules and whether it is settled.
#[derive(Debug, sqlx::FromRow)]
struct Candidate {
    call_id: String,
    queue_id: i32,
    batch_id: i32,
    phone_number: String,
    phone_e164: Option<String>,
    /// The number is on the do-not-call list.
    do_not_call: bool,
    custom_data: Option<Value>,
    attempt: i32,
    row_zone: Option<String>,
    accountcode: String,
    campaign_id: i32,
    campaign_name: String,
    campaign_status: String,
    start_at: Option<DateTime<Utc>>,
    window_start: Option<NaiveTime>,
    window_end: Option<NaiveTime>,
    window_days: i16,
    campaign_zone: String,
    max_attempts_per_day: Option<i32>,
    redial_busy_retries: i16,
    redial_busy_interval_secs: Option<i32>,
    redial_no_answer_retries: i16,
    redial_no_answer_interval_secs: Option<i32>,
    redial_timeout_retries: i16,
    redial_timeout_interval_secs: Option<i32>,
    redial_failed_retries: i16,
    redial_failed_interval_secs: Option<i32>,
    redial_completed_retries: i16,
    redial_completed_interval_secs: Option<i32>,
}

impl Candidate {
    fn policy(&self) -> RedialPolicy {
        let pair = |retries, interval_secs| StoredRedial {
            retries,
            interval_secs,
        };
        // In REDIAL_OUTCOMES order.
        RedialPolicy::from_stored([
            pair(self.redial_busy_retries, self.redial_busy_interval_secs),
            pair(
                self.redial_no_answer_retries,
                self.redial_no_answer_interval_secs,
            ),
            pair(
                self.redial_timeout_retries,
                self.redial_timeout_interval_secs,
            ),
            pair(self.redial_failed_retries, self.redial_failed_interval_secs),
            pair(
                self.redial_completed_retries,
                self.redial_completed_interval_secs,
            ),
        ])
    }

    /// The zone the window and the daily cap are read in: the row's own, else its
    /// campaign's (UTC when neither is a zone this build knows).
    fn zone(&self) -> Tz {
        self.row_zone
            .as_deref()
            .and_then(|zone| parse_time_zone(zone).ok())
            .or_else(|| parse_time_zone(&self.campaign_zone).ok())
            .unwrap_or(Tz::UTC)
    }

    fn window(&self) -> Option<CallingWindow> {
        match (self.window_start, self.window_end) {
            (Some(start), Some(end)) => Some(CallingWindow::new(
                start,
                end,
                Days::from_bits(self.window_days).unwrap_or(Days::ALL),
            )),
            _ => None,
        }
    }

    /// The first instant at or after `from` at which the campaign may send this row:
    /// after its start time, inside its window. A window on no day never opens; the
    /// row is then due at `from` and the submitter holds it as it holds the others.
    fn first_sendable(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        campaign::first_sendable(self.start_at, self.window().as_ref(), self.zone(), from)
            .unwrap_or(from)
    }
}

/// A redial row to insert.
struct Redial<'a> {
    of: &'a Candidate,
    /// The outcome of the call it repeats.
    outcome: &'a CallStatus,
    due: DateTime<Utc>,
}

/// Settles the queue rows of this transaction's terminal calls and adds the redials
/// their campaigns' policies ask for (see the module docs). Runs after the calls' rows
/// and outcomes are written and before the batch rows are locked: queue rows before
/// batch rows, the order the submitter and the operator's actions take them in.
pub async fn settle_terminal_calls(
    tx: &mut PgConnection,
    logs: &[CallLog],
    now: DateTime<Utc>,
) -> Result<Settled, StoreError> {
    let terminal: Vec<&CallLog> = logs
        .iter()
        .filter(|log| log.is_terminal() && log.batch_id.is_some())
        .collect();
    let mut settled = Settled::default();
    if terminal.is_empty() {
        return Ok(settled);
    }
    let statuses: HashMap<&str, &CallStatus> = terminal
        .iter()
        .map(|log| (log.call_id.as_str(), &log.call_status))
        .collect();
    let candidates = settle_rows(tx, &terminal).await?;

    let mut redials = Vec::new();
    for candidate in &candidates {
        let Some(status) = statuses.get(candidate.call_id.as_str()) else {
            continue;
        };
        let campaign_status =
            CampaignStatus::parse(&candidate.campaign_status).unwrap_or(CampaignStatus::Paused);
        // Whoever opted out is not called again; a cancelled campaign calls no one.
        if campaign_status == CampaignStatus::Cancelled || candidate.do_not_call {
            continue;
        }
        let attempt = u32::try_from(candidate.attempt).unwrap_or(1);
        match candidate.policy().next_attempt_after(status, attempt) {
            Some(interval) => redials.push(Redial {
                of: candidate,
                outcome: status,
                due: candidate.first_sendable(now + interval),
            }),
            None if **status != CallStatus::Completed => {
                *settled.exhausted.entry(candidate.batch_id).or_insert(0) += 1;
            }
            None => {}
        }
    }
    if redials.is_empty() {
        return Ok(settled);
    }
    apply_daily_caps(tx, &mut redials).await?;
    settled.redials = insert_redials(tx, &redials).await?;
    Ok(settled)
}

/// Marks the queue rows of `terminal` calls settled with their status, and returns
/// those this transaction settled (a row settled before is left out: its decision was
/// made then) with their campaigns' rules. Rows without a campaign are left alone.
///
/// A call's row is found by the batch id and number the callback carries, among the
/// rows the centralized system took (submitted); the oldest such row when an
/// application queued one number twice in a batch.
async fn settle_rows(
    tx: &mut PgConnection,
    terminal: &[&CallLog],
) -> Result<Vec<Candidate>, StoreError> {
    let call_ids: Vec<&str> = terminal.iter().map(|log| log.call_id.as_str()).collect();
    let batch_ids: Vec<Option<i32>> = terminal.iter().map(|log| log.batch_id).collect();
    let phones: Vec<&str> = terminal
        .iter()
        .map(|log| log.phone_number.as_str())
        .collect();
    let statuses: Vec<&str> = terminal
        .iter()
        .map(|log| log.call_status.as_str())
        .collect();
    sqlx::query_as(
        "WITH calls AS (
             SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[])
                    AS calls(call_id, batch_id, phone_number, call_status)
         ), found AS (
             SELECT calls.call_id, calls.call_status, row.id
               FROM calls
               JOIN LATERAL (SELECT q.id FROM local_call_queue q
                              WHERE q.batch_id = calls.batch_id
                                AND q.phone_number = calls.phone_number
                                AND q.campaign_id IS NOT NULL
                              ORDER BY q.id LIMIT 1) AS row ON true
         ), settled AS (
             UPDATE local_call_queue q
                SET settled_status = found.call_status
               FROM found
              WHERE q.id = found.id AND q.settled_status IS NULL
             RETURNING q.id, q.batch_id, q.phone_number, q.phone_e164, q.custom_data,
                       q.attempt, q.time_zone, q.campaign_id
         )
         SELECT DISTINCT ON (s.id)
                found.call_id, s.id AS queue_id, s.batch_id, s.phone_number, s.phone_e164,
                -- A row without its E.164 form (an application's) is looked up when its
                -- number is written in E.164; the submitter's claim checks every row again.
                EXISTS (SELECT 1 FROM do_not_call d
                         WHERE d.phone_number = coalesce(s.phone_e164,
                                   CASE WHEN s.phone_number LIKE '+%' THEN s.phone_number END))
                    AS do_not_call,
                s.custom_data,
                s.attempt, s.time_zone AS row_zone, b.accountcode, c.id AS campaign_id,
                c.name AS campaign_name, c.status AS campaign_status, c.start_at,
                c.window_start, c.window_end, c.window_days, c.time_zone AS campaign_zone,
                c.max_attempts_per_day, c.redial_busy_retries, c.redial_busy_interval_secs,
                c.redial_no_answer_retries, c.redial_no_answer_interval_secs,
                c.redial_timeout_retries, c.redial_timeout_interval_secs,
                c.redial_failed_retries, c.redial_failed_interval_secs,
                c.redial_completed_retries, c.redial_completed_interval_secs
           FROM settled s
           JOIN found ON found.id = s.id
           JOIN campaigns c ON c.id = s.campaign_id
           JOIN call_batches b ON b.batch_id = s.batch_id
          ORDER BY s.id, found.call_id",
    )
    .bind(call_ids)
    .bind(batch_ids)
    .bind(phones)
    .bind(statuses)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while settling the calls' queue rows"))
}

/// Moves each redial of a capped campaign to the first day (from its due time on) on
/// which its number has had fewer calls than the cap, counting every campaign's rows
/// and the redials this transaction places. A number is its E.164 form (`phone_e164`,
/// which enqueue writes and redials copy); a row without one is not counted or capped.
///
/// This places redials where they will fit; the submitter's claim is what enforces the
/// cap when a row goes out, under the same per-number locks.
async fn apply_daily_caps(
    tx: &mut PgConnection,
    redials: &mut [Redial<'_>],
) -> Result<(), StoreError> {
    let capped: BTreeSet<&str> = redials
        .iter()
        .filter(|redial| redial.of.max_attempts_per_day.is_some())
        .filter_map(|redial| redial.of.phone_e164.as_deref())
        .collect();
    if capped.is_empty() {
        return Ok(());
    }
    // The numbers' locks, held to commit: whoever counts a number's day next (another
    // replica's redials, a submitter's claim) sees this transaction's redials.
    let numbers: Vec<&str> = capped.iter().copied().collect();
    sqlx::query("SELECT callbridge_lock_numbers($1)")
        .bind(&numbers)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_sqlx(e, "while locking the redialled numbers"))?;

    let mut placed: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for redial in redials.iter_mut() {
        let (Some(cap), Some(number)) = (redial.of.max_attempts_per_day, &redial.of.phone_e164)
        else {
            continue;
        };
        let cap = i64::from(cap);
        let zone = redial.of.zone();
        for _ in 0..CAP_HORIZON_DAYS {
            let (day_start, day_end) = campaign::local_day(zone, redial.due);
            let stored: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM local_call_queue
                  WHERE phone_e164 = $1
                    AND queue_status IN ('pending', 'submitting', 'submitted', 'needs_review')
                    AND next_attempt_at >= $2 AND next_attempt_at < $3",
            )
            .bind(number)
            .bind(day_start)
            .bind(day_end)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::from_sqlx(e, "while counting a number's calls of a day"))?;
            let here = placed.get(number).map_or(0, |dues| {
                dues.iter()
                    .filter(|due| **due >= day_start && **due < day_end)
                    .count()
            });
            if stored + i64::try_from(here).unwrap_or(i64::MAX) < cap {
                break;
            }
            redial.due = redial.of.first_sendable(day_end);
        }
        placed.entry(number.clone()).or_default().push(redial.due);
    }
    Ok(())
}

/// Inserts the redials in new batches, one batch per campaign and due instant (at most
/// [`REDIALS_PER_BATCH`] numbers), so a batch goes out in one request; returns how many
/// rows were added, by the outcome they repeat. A row some other transaction redialled
/// already is skipped by the unique index on `redial_of`, and a batch left without rows
/// is not created.
async fn insert_redials(
    tx: &mut PgConnection,
    redials: &[Redial<'_>],
) -> Result<BTreeMap<String, usize>, StoreError> {
    let mut groups: BTreeMap<(i32, DateTime<Utc>), Vec<&Redial<'_>>> = BTreeMap::new();
    for redial in redials {
        groups
            .entry((redial.of.campaign_id, redial.due))
            .or_default()
            .push(redial);
    }
    let chunks: Vec<&[&Redial<'_>]> = groups
        .values()
        .flat_map(|group| group.chunks(REDIALS_PER_BATCH))
        .collect();
    let batch_ids: Vec<i32> = sqlx::query_scalar("SELECT callbridge_allocate_batch_ids($1)")
        .bind(i32::try_from(chunks.len()).unwrap_or(i32::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| StoreError::from_sqlx(e, "while allocating batch ids for redials"))?;

    let mut rows = RedialColumns::default();
    let mut batches: BTreeMap<i32, (&str, i32, &str)> = BTreeMap::new();
    for (chunk, batch_id) in chunks.iter().zip(&batch_ids) {
        for redial in chunk.iter() {
            let of = redial.of;
            rows.phone_numbers.push(of.phone_number.as_str());
            rows.phone_e164s.push(of.phone_e164.as_deref());
            rows.batch_ids.push(*batch_id);
            rows.custom_data.push(of.custom_data.clone());
            rows.campaign_ids.push(of.campaign_id);
            rows.time_zones.push(of.row_zone.as_deref());
            rows.dues.push(redial.due);
            rows.attempts.push(of.attempt.saturating_add(1));
            rows.redial_of.push(of.queue_id);
            batches.insert(
                *batch_id,
                (
                    of.accountcode.as_str(),
                    of.campaign_id,
                    of.campaign_name.as_str(),
                ),
            );
        }
    }
    let used: Vec<(i32, i32)> = sqlx::query_as(
        "INSERT INTO local_call_queue
                (phone_number, batch_id, custom_data, queue_status, retry_count, campaign_id,
                 time_zone, next_attempt_at, attempt, redial_of, phone_e164)
         SELECT phone_number, batch_id, custom_data, 'pending', 0, campaign_id, time_zone,
                due, attempt, redial_of, phone_e164
           FROM unnest($1::text[], $2::int4[], $3::jsonb[], $4::int4[], $5::text[],
                       $6::timestamptz[], $7::int4[], $8::int4[], $9::text[])
                AS r(phone_number, batch_id, custom_data, campaign_id, time_zone, due,
                     attempt, redial_of, phone_e164)
          ORDER BY redial_of
         ON CONFLICT (redial_of) WHERE redial_of IS NOT NULL DO NOTHING
         RETURNING batch_id, redial_of",
    )
    .bind(&rows.phone_numbers)
    .bind(&rows.batch_ids)
    .bind(&rows.custom_data)
    .bind(&rows.campaign_ids)
    .bind(&rows.time_zones)
    .bind(&rows.dues)
    .bind(&rows.attempts)
    .bind(&rows.redial_of)
    .bind(&rows.phone_e164s)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while adding redials to local_call_queue"))?;

    let used_batches: BTreeSet<i32> = used.iter().map(|(batch_id, _)| *batch_id).collect();
    let outcomes: HashMap<i32, &str> = redials
        .iter()
        .map(|redial| (redial.of.queue_id, redial.outcome.as_str()))
        .collect();
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    for (_, redial_of) in &used {
        if let Some(outcome) = outcomes.get(redial_of) {
            *created.entry((*outcome).to_owned()).or_default() += 1;
        }
    }
    let mut ids = Vec::new();
    let mut accountcodes = Vec::new();
    let mut campaign_ids = Vec::new();
    let mut names = Vec::new();
    for batch_id in &used_batches {
        let (accountcode, campaign_id, name) = batches[batch_id];
        ids.push(*batch_id);
        accountcodes.push(accountcode);
        campaign_ids.push(campaign_id);
        // call_batches.batch_name is VARCHAR(255).
        names.push(
            format!("{name} (redial)")
                .chars()
                .take(255)
                .collect::<String>(),
        );
    }
    sqlx::query(
        "INSERT INTO call_batches
                (batch_id, accountcode, batch_name, total_calls, completed_calls, failed_calls,
                 batch_status, campaign_id)
         SELECT batch_id, accountcode, batch_name, 0, 0, 0, 'pending', campaign_id
           FROM unnest($1::int4[], $2::text[], $3::text[], $4::int4[])
                AS b(batch_id, accountcode, batch_name, campaign_id)",
    )
    .bind(&ids)
    .bind(&accountcodes)
    .bind(&names)
    .bind(&campaign_ids)
    .execute(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while creating the redials' batches"))?;
    Ok(created)
}

/// `local_call_queue` columns of the redial rows, as arrays for one `unnest`.
#[derive(Default)]
struct RedialColumns<'a> {
    phone_numbers: Vec<&'a str>,
    phone_e164s: Vec<Option<&'a str>>,
    batch_ids: Vec<i32>,
    custom_data: Vec<Option<Value>>,
    campaign_ids: Vec<i32>,
    time_zones: Vec<Option<&'a str>>,
    dues: Vec<DateTime<Utc>>,
    attempts: Vec<i32>,
    redial_of: Vec<i32>,
}
