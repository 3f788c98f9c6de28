//! When a campaign's waiting rows may go out, written onto the rows themselves.
//!
//! The submitter's claim reads only due rows (`next_attempt_at` has come) through an
//! index. So a row that its campaign's rules hold (outside its window, before the start
//! time, paused) must carry the instant it may go as its `next_attempt_at`; otherwise the
//! claim meets it, judges it and puts it off, which for a million rows of a closed window
//! is a minute or more of deferral passes. `enqueue` stamps each row as it is copied in;
//! [`apply_rules`] stamps the waiting rows again whenever the rules change (`campaign
//! set`), or the status does (`pause`, `resume`), in the transaction of that change, so
//! once the change is visible no row of the campaign still carries a time the old rules
//! gave it. The rule itself is `callbridge_types::campaign::Schedule::due_at`.

use std::collections::BTreeMap;

use callbridge_types::campaign::Schedule;
use callbridge_types::status::QueueStatus;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::{OpsError, db_error};

/// What [`apply_rules`] did to the campaign's waiting rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// `pending` rows the rules were applied to.
    pub pending: i64,
    /// Rows whose due time, hold or pacing slot changed.
    pub changed: i64,
    /// Of those, rows the old rules (or a pacing slot) held that are due now.
    pub due_now: i64,
}

/// Sets each `pending` row of the campaign due when `schedule` lets it go, judged at
/// `now`, in the caller's transaction:
///
/// - a row held by the campaign's rules (`deferred_by_campaign`) is due at the instant
///   the new rules give its zone: `now` when it may go now, else the start time or its
///   zone's next window opening (a day ahead while paused), and stays marked held;
/// - a row waiting for a retry backoff keeps the later of its backoff and that instant
///   (held when the rules' instant is the later);
/// - a row already due that the rules let go now is left as it is, in its place in the
///   claim's order;
/// - every pacing slot a row holds is given up, and the campaign's schedule of slots
///   restarts from `now` at the latest, so a new `--max-per-minute` applies from the
///   change on: no row waits for a slot booked at the old rate (a long stall when the
///   rate rises), and none goes out on one (a burst above the new rate when it falls).
///   Each row takes a slot at the new rate when it is sent.
///
/// The rows' zones are few (the campaign's, and those a CSV named), so the instants are
/// computed here once per zone and written by one UPDATE per distinct instant, reading
/// the campaign's rows through `idx_local_queue_campaign_status`. Rows whose time and
/// hold do not change are not written. Rows a submitter holds (`submitting`) are left
/// to it: it checks the rules again right before sending. Rows inserted after this
/// transaction by others (an application's, a redial) are stamped by their writer or
/// met by the claim's own check.
pub async fn apply_rules(
    conn: &mut PgConnection,
    campaign_id: i32,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<Applied, OpsError> {
    let pending = QueueStatus::Pending.as_str();
    let zones: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT time_zone, count(*) FROM local_call_queue
          WHERE campaign_id = $1 AND queue_status = $2
          GROUP BY time_zone",
    )
    .bind(campaign_id)
    .bind(pending)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error(
        "while reading the zones of the campaign's waiting rows",
    ))?;

    let mut applied = Applied {
        pending: zones.iter().map(|(_, rows)| rows).sum(),
        ..Applied::default()
    };
    // Due instant → the zones whose rows are due then ('' for rows without a zone).
    let mut by_due: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    for (zone, _) in &zones {
        // A cancelled campaign has no waiting rows to stamp: cancel turns them cancelled.
        let Some(due) = schedule.due_at(schedule.zone_of(zone.as_deref()), now) else {
            continue;
        };
        by_due
            .entry(due.max(now))
            .or_default()
            .push(zone.clone().unwrap_or_default());
    }
    for (due, zones) in by_due {
        let (changed, due_now): (i64, i64) = sqlx::query_as(
            "WITH changed AS (
                 UPDATE local_call_queue
                    SET next_attempt_at = CASE
                            WHEN deferred_by_campaign OR ($3 > $4 AND next_attempt_at < $3)
                            THEN $3 ELSE next_attempt_at END,
                        deferred_by_campaign =
                            $3 > $4 AND (deferred_by_campaign OR next_attempt_at < $3),
                        paced_slot_at = NULL,
                        updated_at = CURRENT_TIMESTAMP
                  WHERE campaign_id = $1 AND queue_status = $5
                    AND coalesce(time_zone, '') = ANY($2)
                    -- Only rows that change: a held row whose time or hold moves, a row
                    -- the rules now hold, a row with a pacing slot.
                    AND (paced_slot_at IS NOT NULL
                         OR (deferred_by_campaign AND (next_attempt_at <> $3 OR $3 <= $4))
                         OR (NOT deferred_by_campaign AND $3 > $4 AND next_attempt_at < $3))
                 RETURNING deferred_by_campaign)
             SELECT count(*), count(*) FILTER (WHERE NOT deferred_by_campaign) FROM changed",
        )
        .bind(campaign_id)
        .bind(&zones)
        .bind(due)
        .bind(now)
        .bind(pending)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error(
            "while setting when the campaign's waiting rows are due",
        ))?;
        applied.changed += changed;
        applied.due_now += due_now;
    }

    // Slots at or before `now` were used by rows sent (or being sent); the later ones
    // were given up above and are handed out again from here, at the current rate.
    sqlx::query(
        "UPDATE campaign_pacing SET next_slot_at = least(next_slot_at, $2)
          WHERE campaign_id = $1",
    )
    .bind(campaign_id)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error("while restarting the campaign's pacing schedule"))?;
    Ok(applied)
}
