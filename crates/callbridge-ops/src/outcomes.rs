//! A campaign's outcomes over time: how many of its calls ended in each counted status
//! (the statuses its batches count: answered, busy, no answer, timeout, failed, expired)
//! per time bucket, the bucket chosen from the campaign's span so that there are at most
//! [`MAX_BUCKETS`].
//!
//! Read through the campaign's batches (`idx_call_batches_campaign`) and each batch's
//! calls (`idx_call_logs_batch_id`): the cost is that of the campaign's own calls, never a
//! scan of `call_logs`.

use chrono::{NaiveDateTime, TimeDelta};
use serde::Serialize;
use sqlx::PgPool;

use crate::{OpsError, db_error};

/// At most this many buckets, however long the campaign ran.
pub const MAX_BUCKETS: i64 = 48;

/// The bucket widths a chart may use, in seconds, shortest first: the first that covers
/// the campaign's span in [`MAX_BUCKETS`] is taken (beyond the last, whole days).
const BUCKET_SECONDS: &[i64] = &[
    10,
    30,
    60,
    5 * 60,
    15 * 60,
    30 * 60,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    7 * 86_400,
];

/// The counted statuses, in the order a chart stacks them.
pub const OUTCOMES: [&str; 6] = [
    "completed",
    "busy",
    "no_answer",
    "timeout",
    "failed",
    "expired",
];

/// One bucket: from `start` (UTC), for the series' bucket width.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub start: NaiveDateTime,
    /// Calls ended in the bucket, by [`OUTCOMES`] position.
    pub counts: [i64; OUTCOMES.len()],
}

/// A campaign's outcomes over time: consecutive buckets, empty ones included, from the
/// one its first call ended in to the one its last ended in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeSeries {
    pub bucket_seconds: i64,
    pub buckets: Vec<Bucket>,
}

/// The narrowest width of [`BUCKET_SECONDS`] that covers `span_seconds` in at most
/// [`MAX_BUCKETS`] buckets (a bucket starts at a multiple of its width, so the span may
/// touch one more bucket than it fills); whole days beyond the list.
pub fn bucket_seconds_for(span_seconds: i64) -> i64 {
    let fits = |width: i64| span_seconds / width + 1 < MAX_BUCKETS;
    BUCKET_SECONDS
        .iter()
        .copied()
        .find(|width| fits(*width))
        .unwrap_or_else(|| {
            let days = span_seconds / 86_400 / (MAX_BUCKETS - 1) + 1;
            days * 86_400
        })
}

/// When a call ended: its `end_time`, else (an expired call, a callback without one) when
/// its row last changed.
const ENDED_SQL: &str = "coalesce(l.end_time, l.updated_at)";

/// The campaign's calls that ended in a counted status.
const CAMPAIGN_CALLS_SQL: &str = "
  FROM call_logs l
 WHERE l.batch_id IN (SELECT batch_id FROM call_batches WHERE campaign_id = $1)
   AND callbridge_call_count_kind(l.call_status) IS NOT NULL";

/// The outcomes over time of campaign `campaign_id`; no bucket when none of its calls has
/// ended yet.
#[tracing::instrument(skip_all, fields(campaign_id))]
pub async fn over_time(pool: &PgPool, campaign_id: i32) -> Result<OutcomeSeries, OpsError> {
    let (first, last): (Option<NaiveDateTime>, Option<NaiveDateTime>) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT min({ENDED_SQL}), max({ENDED_SQL}) {CAMPAIGN_CALLS_SQL}"
        )))
        .bind(campaign_id)
        .fetch_one(pool)
        .await
        .map_err(db_error("while reading when the campaign's calls ended"))?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(OutcomeSeries {
            bucket_seconds: BUCKET_SECONDS[0],
            buckets: Vec::new(),
        });
    };
    let bucket_seconds = bucket_seconds_for((last - first).num_seconds().max(0));
    // date_bin from the epoch: buckets start at round times (whole minutes, hours, days).
    let counted: Vec<(NaiveDateTime, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT date_bin(make_interval(secs => $2), {ENDED_SQL}, TIMESTAMP '1970-01-01') AS bucket,
                l.call_status, count(*)
           {CAMPAIGN_CALLS_SQL}
          GROUP BY 1, 2"
    )))
    .bind(campaign_id)
    .bind(bucket_seconds as f64)
    .fetch_all(pool)
    .await
    .map_err(db_error("while counting the campaign's outcomes over time"))?;
    Ok(OutcomeSeries {
        bucket_seconds,
        buckets: fill(bucket_seconds, &counted),
    })
}

/// Consecutive buckets from the first counted one to the last, each with its counts.
fn fill(bucket_seconds: i64, counted: &[(NaiveDateTime, String, i64)]) -> Vec<Bucket> {
    let (Some(first), Some(last)) = (
        counted.iter().map(|row| row.0).min(),
        counted.iter().map(|row| row.0).max(),
    ) else {
        return Vec::new();
    };
    let width = TimeDelta::seconds(bucket_seconds);
    let buckets = (last - first).num_seconds() / bucket_seconds + 1;
    let mut filled: Vec<Bucket> = (0..buckets)
        .map(|index| Bucket {
            start: first + width * i32::try_from(index).unwrap_or(i32::MAX),
            counts: [0; OUTCOMES.len()],
        })
        .collect();
    for (start, status, count) in counted {
        let index = usize::try_from((*start - first).num_seconds() / bucket_seconds).ok();
        let outcome = OUTCOMES.iter().position(|outcome| outcome == status);
        if let (Some(index), Some(outcome)) = (index, outcome)
            && let Some(bucket) = filled.get_mut(index)
        {
            bucket.counts[outcome] += count;
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_is_the_narrowest_that_keeps_the_chart_within_its_buckets() {
        assert_eq!(bucket_seconds_for(0), 10);
        assert_eq!(bucket_seconds_for(400), 10);
        assert_eq!(bucket_seconds_for(500), 30);
        assert_eq!(bucket_seconds_for(3 * 3600), 5 * 60);
        assert_eq!(bucket_seconds_for(2 * 86_400), 3 * 3600);
        assert_eq!(bucket_seconds_for(60 * 86_400), 7 * 86_400);
        // A year: whole days, still within the limit.
        let year = bucket_seconds_for(365 * 86_400);
        assert_eq!(year % 86_400, 0);
        assert!(365 * 86_400 / year < MAX_BUCKETS, "{year}");
    }

    #[test]
    fn buckets_run_without_gaps_and_count_each_outcome_in_its_place() {
        let at = |minute: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 12, 5)
                .unwrap()
                .and_hms_opt(9, minute, 0)
                .unwrap()
        };
        let counted = vec![
            (at(3), "completed".to_owned(), 4),
            (at(0), "busy".to_owned(), 1),
            (at(3), "expired".to_owned(), 2),
            (at(0), "completed".to_owned(), 3),
            (at(3), "started".to_owned(), 9),
        ];
        let buckets = fill(60, &counted);
        assert_eq!(buckets.len(), 4);
        assert_eq!(buckets[0].start, at(0));
        assert_eq!(buckets[0].counts, [3, 1, 0, 0, 0, 0]);
        assert_eq!(buckets[1].counts, [0; 6]);
        assert_eq!(buckets[3].start, at(3));
        // A status that is not counted (a call still going) is not drawn.
        assert_eq!(buckets[3].counts, [4, 0, 0, 0, 0, 2]);
    }
}
