//! What a row's campaign allows right before the row is sent: its status (only an
//! `active` campaign's rows go out), its start time, its calling window in the row's own
//! time zone (else the campaign's), and its pacing. Rows an application inserted
//! without a campaign are never held.
//!
//! A campaign's rows normally reach the claim only when they may go out: `enqueue`
//! stamps each row with its due time (`callbridge_types::campaign::Schedule`), and
//! `campaign set`, `pause` and `resume` stamp the waiting rows again in the transaction
//! that changes the rules. What is checked here is the safety net for the rows nobody
//! stamped: rows an application inserts with a `campaign_id`, a redial the persister
//! dated under rules changed a moment later, a paused campaign's rows once their day of
//! deferral is up, rows claimed before a pause committed. Such a row that may not go out
//! now is not polled for: it goes back to `pending` due at the instant it may (the
//! window's next opening, the start time, its pacing slot; a day ahead for a paused
//! campaign), marked `deferred_by_campaign`, so the claim, which reads due rows through
//! an index, never sees it before then. The other due rows of the same campaign and
//! zone are deferred with it in one statement, so even a campaign of a million such rows
//! costs passes of 50,000 rows, not a million claims.
//!
//! # Pacing
//!
//! `max_per_minute` N is kept across every replica by a schedule of slots one
//! `interval` apart in `campaign_pacing` (the first free slot, under its row lock): each
//! number sent takes one slot and goes out no earlier than its slot and at most `burst`
//! slots after it. Numbers sent in any span of T seconds then hold slots from a span of
//! T + burst × interval, at most (T + burst × interval) / interval of them. The span that
//! matters is the centralized system's acceptance times, which lag the send by up to the
//! request's latency (allowed: [`PACING_LATENCY`]), so the interval is
//! (60 s + latency) / (N − burst − 1): no 60-second span of acceptance times holds more
//! than N, and a steady campaign runs about 2 % under N per minute. Rows that find no
//! free slot now take the next ones and wait for them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
pub use callbridge_types::campaign::PAUSE_DEFERRAL;
use callbridge_types::campaign::{
    self, CallingWindow, CampaignStatus, Days, Schedule, Tz, parse_time_zone,
};
use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use sqlx::PgPool;

/// How long after a number's send its acceptance may be stamped, at most, for pacing
/// to hold on acceptance times.
pub const PACING_LATENCY: TimeDelta = TimeDelta::seconds(1);
/// The most waiting rows one bulk deferral moves, so one statement stays short; the
/// claim finds the rest on later rounds.
const BULK_DEFERRAL_ROWS: i64 = 50_000;

/// A campaign's rules as the submitter applies them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub id: i32,
    pub name: String,
    /// The version of the campaign's row these rules were read from (its `xmin`): a
    /// change of rules or status committed since makes it another.
    pub version: String,
    /// Status, start time and window: when its rows may go out.
    pub schedule: Schedule,
    pub pacing: Option<Pacing>,
}

/// Slots for `max_per_minute`: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub interval: TimeDelta,
    pub burst: u32,
}

impl Pacing {
    /// The schedule that keeps any 60-second span of acceptance times at or under
    /// `max_per_minute`.
    pub fn for_max_per_minute(max_per_minute: u32) -> Pacing {
        let max = i64::from(max_per_minute.max(1));
        // About one second's worth of slots may be caught up at once (none below 120 a
        // minute, where a single late slot is better skipped).
        let burst = (max / 60).min((max - 2).max(0));
        let span_ms = (TimeDelta::seconds(60) + PACING_LATENCY).num_milliseconds();
        let slots = (max - burst - 1).max(1);
        // Rounded up to the microsecond (Postgres keeps timestamps to the microsecond), and
        // one more, so a span of exactly `slots` intervals holds no extra slot.
        let interval_us = (span_ms * 1000 + slots - 1) / slots + 1;
        Pacing {
            interval: TimeDelta::microseconds(interval_us),
            burst: u32::try_from(burst).unwrap_or(0),
        }
    }

    /// How late a slot may be used.
    pub fn tolerance(&self) -> TimeDelta {
        self.interval * i32::try_from(self.burst).unwrap_or(i32::MAX)
    }
}

/// What a row's campaign says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// It may go out (paced campaigns: when it has a slot).
    Send,
    /// Not before `until`; `whole_campaign`: every zone of the campaign waits alike.
    Defer {
        until: DateTime<Utc>,
        whole_campaign: bool,
    },
    /// Its campaign was cancelled: never sent.
    Cancel,
}

impl Rules {
    /// The first instant at or after `from` at which the campaign's start time and window
    /// let a row of `row_zone` go, whatever its status (`from` for a window on no day,
    /// which never opens: the row is held as the campaign's others are).
    pub fn first_sendable(&self, row_zone: Option<&str>, from: DateTime<Utc>) -> DateTime<Utc> {
        let schedule = &self.schedule;
        campaign::first_sendable(
            schedule.start_at,
            schedule.window.as_ref(),
            schedule.zone_of(row_zone),
            from,
        )
        .unwrap_or(from)
    }

    /// What the campaign says of a row in `row_zone` at `now`.
    pub fn gate(&self, row_zone: Option<&str>, now: DateTime<Utc>) -> Gate {
        let zone = self.schedule.zone_of(row_zone);
        match self.schedule.due_at(zone, now) {
            None => Gate::Cancel,
            Some(at) if at <= now => Gate::Send,
            Some(until) => Gate::Defer {
                until,
                whole_campaign: self.schedule.holds_every_zone_alike(),
            },
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct CampaignRow {
    id: i32,
    name: String,
    version: String,
    status: String,
    start_at: Option<DateTime<Utc>>,
    window_start: Option<NaiveTime>,
    window_end: Option<NaiveTime>,
    window_days: i16,
    time_zone: String,
    max_per_minute: Option<i32>,
}

impl CampaignRow {
    fn into_rules(self) -> Rules {
        let status = CampaignStatus::parse(&self.status).unwrap_or_else(|_| {
            // The table's CHECK allows no other value; hold the rows if one appears.
            tracing::error!(campaign = %self.name, status = %self.status, "unknown campaign status; holding its rows as if paused");
            CampaignStatus::Paused
        });
        let zone = parse_time_zone(&self.time_zone).unwrap_or_else(|_| {
            tracing::error!(campaign = %self.name, time_zone = %self.time_zone, "unknown campaign time zone; using UTC");
            Tz::UTC
        });
        let window = match (self.window_start, self.window_end) {
            (Some(start), Some(end)) => Some(CallingWindow::new(
                start,
                end,
                Days::from_bits(self.window_days).unwrap_or(Days::ALL),
            )),
            _ => None,
        };
        Rules {
            id: self.id,
            name: self.name,
            version: self.version,
            schedule: Schedule {
                status,
                start_at: self.start_at,
                window,
                zone,
            },
            pacing: self
                .max_per_minute
                .and_then(|max| u32::try_from(max).ok())
                .map(Pacing::for_max_per_minute),
        }
    }
}

/// The rules of `ids`, read now (a pause committed a moment ago is seen).
#[tracing::instrument(skip_all, fields(campaigns = ids.len()))]
pub async fn load_rules<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    ids: &[i32],
) -> anyhow::Result<BTreeMap<i32, Rules>> {
    let rows: Vec<CampaignRow> = sqlx::query_as(
        "SELECT id, name, xmin::text AS version, status, start_at, window_start, window_end,
                window_days, time_zone, max_per_minute
           FROM campaigns WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(executor)
    .await
    .context("while reading the rules of the claimed rows' campaigns")?;
    Ok(rows
        .into_iter()
        .map(|row| (row.id, row.into_rules()))
        .collect())
}

/// Defers the campaign's other due `pending` rows (of `zone` unless `whole_campaign`)
/// to `until`, as the claim would one by one, unless the campaign changed since its
/// rules were read (`rules_version`, see [`Rules::version`]): the change dated the rows
/// itself, and rules read before it must not undo that. Returns how many moved.
#[tracing::instrument(skip_all, fields(campaign_id))]
pub async fn defer_waiting(
    pool: &PgPool,
    campaign_id: i32,
    rules_version: &str,
    zone: Option<&str>,
    whole_campaign: bool,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let moved = sqlx::query(
        "UPDATE local_call_queue
            SET next_attempt_at = $4, deferred_by_campaign = true, updated_at = CURRENT_TIMESTAMP
          WHERE id IN (SELECT id FROM local_call_queue
                        WHERE campaign_id = $1 AND queue_status = 'pending'
                          AND next_attempt_at <= $5
                          AND ($3 OR time_zone IS NOT DISTINCT FROM $2)
                          AND (SELECT xmin::text FROM campaigns WHERE id = $1) = $7
                        LIMIT $6
                          -- Rows another submitter, or a change of the campaign's rules,
                          -- is moving are left to it.
                          FOR UPDATE SKIP LOCKED)",
    )
    .bind(campaign_id)
    .bind(zone)
    .bind(whole_campaign)
    .bind(until)
    .bind(now)
    .bind(BULK_DEFERRAL_ROWS)
    .bind(rules_version)
    .execute(pool)
    .await
    .context("while deferring a campaign's waiting rows")?;
    Ok(moved.rows_affected())
}

/// Marks `ids` (leased by `owner`) and every other `pending` row of the cancelled
/// `campaign_ids` `cancelled`, and refreshes their batches (a batch all of whose rows
/// are cancelled ends `cancelled`). Returns how many rows changed.
#[tracing::instrument(skip_all, fields(rows = ids.len()))]
pub async fn cancel(
    pool: &PgPool,
    owner: &str,
    ids: &[i32],
    campaign_ids: &[i32],
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await.context("while starting a transaction")?;
    let batches: Vec<Option<i32>> = sqlx::query_scalar(
        "WITH cancelled AS (
             UPDATE local_call_queue
                SET queue_status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                    updated_at = CURRENT_TIMESTAMP
              WHERE (id = ANY($1) AND lease_owner = $2 AND queue_status = 'submitting')
                 OR (campaign_id = ANY($3) AND queue_status = 'pending')
          RETURNING batch_id)
         SELECT batch_id FROM cancelled",
    )
    .bind(ids)
    .bind(owner)
    .bind(campaign_ids)
    .fetch_all(&mut *tx)
    .await
    .context("while cancelling the rows of a cancelled campaign")?;
    let changed = batches.len() as u64;
    let distinct: BTreeSet<i32> = batches.into_iter().flatten().collect();
    let distinct: Vec<i32> = distinct.into_iter().collect();
    sqlx::query("SELECT callbridge_refresh_batch(batch_id) FROM unnest($1::int4[]) AS b(batch_id)")
        .bind(&distinct)
        .execute(&mut *tx)
        .await
        .context("while refreshing the batches of cancelled rows")?;
    tx.commit()
        .await
        .context("while committing the cancelled rows")?;
    Ok(changed)
}

/// Takes the next `wanted` pacing slots of the campaign: the first free slot, or
/// `now` less the burst tolerance when the schedule fell behind, and one `interval`
/// apart from there. Slots at or before `now` may be used at once.
#[tracing::instrument(skip_all, fields(campaign_id, wanted))]
pub async fn take_slots(
    pool: &PgPool,
    campaign_id: i32,
    wanted: usize,
    pacing: Pacing,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    if wanted == 0 {
        return Ok(Vec::new());
    }
    let earliest = now - pacing.tolerance();
    let wanted_i32 = i32::try_from(wanted).context("while counting pacing slots")?;
    // One statement: the row lock serialises replicas taking slots of one campaign.
    let first: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO campaign_pacing AS p (campaign_id, next_slot_at)
         VALUES ($1, $2 + $3 * make_interval(secs => $4))
         ON CONFLICT (campaign_id) DO UPDATE
            SET next_slot_at = greatest(p.next_slot_at, $2) + $3 * make_interval(secs => $4)
         RETURNING next_slot_at - $3 * make_interval(secs => $4)",
    )
    .bind(campaign_id)
    .bind(earliest)
    .bind(wanted_i32)
    .bind(pacing.interval.as_seconds_f64())
    .fetch_one(pool)
    .await
    .context("while taking pacing slots")?;
    Ok((0..wanted_i32)
        .map(|slot| first + pacing.interval * slot)
        .collect())
}

/// Rows still to be sent (`pending` or `submitting`) per campaign name.
#[tracing::instrument(skip_all)]
pub async fn waiting_by_campaign(pool: &PgPool) -> anyhow::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT c.name, count(*)
           FROM local_call_queue q JOIN campaigns c ON c.id = q.campaign_id
          WHERE q.campaign_id IS NOT NULL AND q.queue_status IN ('pending', 'submitting')
          GROUP BY c.name",
    )
    .fetch_all(pool)
    .await
    .context("while counting each campaign's waiting rows")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn rules() -> Rules {
        Rules {
            id: 1,
            name: "spring".to_owned(),
            version: "1".to_owned(),
            schedule: Schedule {
                status: CampaignStatus::Active,
                start_at: None,
                window: Some(CallingWindow::parse("08:00-21:00", "all").unwrap()),
                zone: parse_time_zone("America/New_York").unwrap(),
            },
            pacing: None,
        }
    }

    #[test]
    fn pacing_keeps_any_minute_of_acceptances_under_the_limit() {
        for max in [1u32, 2, 10, 60, 119, 600, 6000, 100_000] {
            let pacing = Pacing::for_max_per_minute(max);
            // Sends in a minute of acceptances come from a span of 60 s + latency, and
            // use slots from that span widened by the burst tolerance.
            let span = TimeDelta::seconds(60) + PACING_LATENCY + pacing.tolerance();
            let slots_in_span =
                span.num_microseconds().unwrap() / pacing.interval.num_microseconds().unwrap() + 1;
            assert!(
                slots_in_span <= i64::from(max),
                "{max}: {pacing:?} allows {slots_in_span}"
            );
        }
        // 600 a minute: 3,000 numbers take a little over five minutes.
        let pacing = Pacing::for_max_per_minute(600);
        let total = pacing.interval * 2999;
        assert!(
            total > TimeDelta::seconds(300) && total < TimeDelta::seconds(315),
            "{total}"
        );
    }

    #[test]
    fn a_row_waits_for_its_own_zone_window_and_the_start_time() {
        let rules = rules();
        // 20:59:30 in New York (EST) is 07:29:30 the next morning in Kolkata.
        let now = utc("2026-12-05T01:59:30Z");
        assert_eq!(rules.gate(None, now), Gate::Send);
        assert_eq!(
            rules.gate(Some("Asia/Kolkata"), now),
            Gate::Defer {
                until: utc("2026-12-05T02:30:00Z"),
                whole_campaign: false
            }
        );
        let mut later = rules.clone();
        later.schedule.start_at = Some(utc("2026-12-05T15:00:00Z"));
        assert_eq!(
            later.gate(None, now),
            Gate::Defer {
                until: utc("2026-12-05T15:00:00Z"),
                whole_campaign: false
            }
        );
    }

    #[test]
    fn paused_campaigns_wait_and_cancelled_ones_are_cancelled() {
        let now = utc("2026-12-05T01:59:30Z");
        let mut paused = rules();
        paused.schedule.status = CampaignStatus::Paused;
        assert_eq!(
            paused.gate(None, now),
            Gate::Defer {
                until: now + PAUSE_DEFERRAL,
                whole_campaign: true
            }
        );
        let mut cancelled = rules();
        cancelled.schedule.status = CampaignStatus::Cancelled;
        assert_eq!(cancelled.gate(None, now), Gate::Cancel);
    }
}
