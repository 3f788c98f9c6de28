//! The cap on calls to one number per day (`campaigns.max_attempts_per_day`), enforced by
//! the claim: a claimed row of a capped campaign whose number already had that many
//! calls in the row's local day (its own zone, else its campaign's; the day the
//! persister's redials are placed by) is not sent but goes back to `pending`, due at the
//! campaign's first opening of the next local day, marked `deferred_by_campaign`. It is
//! not polled for meanwhile.
//!
//! A number is its E.164 form (`phone_e164`). Its calls of a day are its rows, of every
//! campaign, that went out that day: `submitting`, `submitted` or `needs_review`, each on
//! the day of its `next_attempt_at`, which the claim sets to the instant it takes a row.
//!
//! Exactly the cap, whatever replicas claim rows of one number at once: this runs in the
//! claim's transaction, after the claim statement and before commit, under the number's
//! lock (`callbridge_lock_numbers`, which the persister takes before placing a redial
//! too), and counts in a statement that starts once the lock is held, so it sees every
//! row another claim let through. The rows this claim lets through are committed, and
//! counted by the next one, when the lock is released. Rows without a cap (an
//! application's, or a campaign without `max_attempts_per_day`) are counted but never
//! wait for the lock: one sent at the very instant a capped row of its number is checked
//! may be missed by that check.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use callbridge_types::campaign;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::campaign::load_rules;
use crate::store::ClaimedRow;

/// How many calls each number had on its day: `$1` the numbers (E.164), `$2` and `$3`
/// the first instants of their days and of the days after, `$4` the ids of rows left out
/// (the claim's capped rows, whose fate is being decided). One count per number, in
/// order, each a range of the index on (phone_e164, next_attempt_at). Public so a test can
/// check its plan.
pub const CALLS_OF_THE_DAY_SQL: &str = "
SELECT (SELECT count(*) FROM local_call_queue q
         WHERE q.phone_e164 = d.number
           AND q.queue_status IN ('submitting', 'submitted', 'needs_review')
           AND q.next_attempt_at >= d.day_start AND q.next_attempt_at < d.day_end
           AND q.id <> ALL($4))
  FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
       WITH ORDINALITY AS d(number, day_start, day_end, position)
 ORDER BY d.position";

/// A number's local day: (E.164, first instant, first instant of the next day).
type NumberDay = (String, DateTime<Utc>, DateTime<Utc>);

/// Holds back the claimed `rows` (leased by `owner`) whose number's calls of the day are
/// used up, inside the claim's transaction: each such row is `pending` again, due at its
/// campaign's first opening of the next day, and has `held_until` set. Rows of the claim
/// are let through in id order. Returns how many were held.
pub(crate) async fn hold_rows_over_cap(
    tx: &mut PgConnection,
    owner: &str,
    rows: &mut [ClaimedRow],
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut capped: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| {
            !row.suppressed
                && row.batch_id.is_some()
                && row.phone_e164.is_some()
                && row.max_attempts_per_day.is_some()
        })
        .map(|(index, _)| index)
        .collect();
    if capped.is_empty() {
        return Ok(0);
    }
    capped.sort_by_key(|index| rows[*index].id);

    let campaign_ids: BTreeSet<i32> = capped
        .iter()
        .filter_map(|index| rows[*index].campaign_id)
        .collect();
    let campaign_ids: Vec<i32> = campaign_ids.into_iter().collect();
    let rules = load_rules(&mut *tx, &campaign_ids).await?;

    let numbers: BTreeSet<&str> = capped
        .iter()
        .filter_map(|index| rows[*index].phone_e164.as_deref())
        .collect();
    sqlx::query("SELECT callbridge_lock_numbers($1)")
        .bind(numbers.into_iter().collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .context("while locking the claimed rows' numbers")?;

    // Each capped row's number and local day: today, in its zone.
    let mut days: Vec<Option<NumberDay>> = vec![None; rows.len()];
    for index in &capped {
        let row = &rows[*index];
        let (Some(rules), Some(number)) = (
            row.campaign_id.and_then(|id| rules.get(&id)),
            row.phone_e164.as_ref(),
        ) else {
            continue;
        };
        let (start, end) =
            campaign::local_day(rules.schedule.zone_of(row.time_zone.as_deref()), now);
        days[*index] = Some((number.clone(), start, end));
    }
    let mut used = calls_of_the_day(
        tx,
        days.iter().flatten().cloned().collect(),
        capped.iter().map(|index| rows[*index].id).collect(),
    )
    .await?;

    let mut held = Vec::new();
    for index in &capped {
        let Some(day) = &days[*index] else {
            continue;
        };
        let row = &rows[*index];
        let cap = i64::from(row.max_attempts_per_day.unwrap_or(i32::MAX));
        let calls = used.entry(day.clone()).or_insert(0);
        if *calls < cap {
            *calls += 1;
            continue;
        }
        let Some(rules) = row.campaign_id.and_then(|id| rules.get(&id)) else {
            continue;
        };
        let until = rules.first_sendable(row.time_zone.as_deref(), day.2);
        held.push((*index, until));
    }
    if held.is_empty() {
        return Ok(0);
    }

    let ids: Vec<i32> = held.iter().map(|(index, _)| rows[*index].id).collect();
    let evidence: Vec<Option<DateTime<Utc>>> = held
        .iter()
        .map(|(index, _)| rows[*index].previous_attempt_started_at)
        .collect();
    let until: Vec<DateTime<Utc>> = held.iter().map(|(_, until)| *until).collect();
    // As a deferral by the campaign's rules: nothing was sent, the evidence of an earlier
    // attempt is kept, and a resume or a change of rules looks at the row again at once.
    let returned = sqlx::query(
        "UPDATE local_call_queue q
            SET queue_status = 'pending', lease_owner = NULL, lease_expires_at = NULL,
                attempt_started_at = r.attempt_started_at, next_attempt_at = r.until,
                deferred_by_campaign = true, updated_at = CURRENT_TIMESTAMP
           FROM unnest($1::int4[], $3::timestamptz[], $4::timestamptz[])
                AS r(id, attempt_started_at, until)
          WHERE q.id = r.id AND q.lease_owner = $2 AND q.queue_status = 'submitting'",
    )
    .bind(&ids)
    .bind(owner)
    .bind(&evidence)
    .bind(&until)
    .execute(&mut *tx)
    .await
    .context("while holding rows over their number's daily cap")?
    .rows_affected();
    for (index, until) in &held {
        rows[*index].held_until = Some(*until);
    }
    tracing::info!(
        rows = returned,
        "rows wait for the next day: their numbers had max_attempts_per_day calls today"
    );
    Ok(returned)
}

/// How many calls each number had on its day, leaving out the rows `deciding` (see
/// [`CALLS_OF_THE_DAY_SQL`]).
async fn calls_of_the_day(
    tx: &mut PgConnection,
    days: Vec<NumberDay>,
    deciding: Vec<i32>,
) -> anyhow::Result<BTreeMap<NumberDay, i64>> {
    let days: BTreeSet<NumberDay> = days.into_iter().collect();
    let days: Vec<NumberDay> = days.into_iter().collect();
    let numbers: Vec<&str> = days.iter().map(|day| day.0.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = days.iter().map(|day| day.1).collect();
    let ends: Vec<DateTime<Utc>> = days.iter().map(|day| day.2).collect();
    // A statement of its own, after the lock: its snapshot holds every call another claim
    // committed before releasing the number.
    let counts: Vec<i64> = sqlx::query_scalar(CALLS_OF_THE_DAY_SQL)
        .bind(&numbers)
        .bind(&starts)
        .bind(&ends)
        .bind(&deciding)
        .fetch_all(&mut *tx)
        .await
        .context("while counting the claimed numbers' calls of the day")?;
    Ok(days.into_iter().zip(counts).collect())
}
