//! The submitter's metrics, recorded through the `metrics` facade and served
//! by `callbridge_runtime::health` on `/metrics`. The names are the ones the dashboards
//! and alert rules in `deploy/observability/` query.

use std::collections::BTreeSet;
use std::sync::Mutex;

use callbridge_types::status::QueueStatus;

use crate::api::RetryReason;

/// The seed's counter, per row: `status` is `submitted`, `retried`, `failed` or
/// `needs_review`.
pub const CALL_SUBMISSIONS_TOTAL: &str = "call_submissions_total";
/// Rows scheduled for another attempt, by `reason`.
pub const SUBMITTER_RETRIES_TOTAL: &str = "submitter_retries_total";
/// Reconciliations against batch-status, by `verdict` (`all_held`, `none_held`,
/// `ambiguous`, `unreadable`, `unavailable`).
pub const SUBMITTER_RECONCILIATIONS_TOTAL: &str = "submitter_reconciliations_total";
/// Rows the claim found on the do-not-call list and marked `suppressed` instead of
/// sending them.
pub const NUMBERS_SUPPRESSED_TOTAL: &str = "callbridge_numbers_suppressed_total";
/// Calls given the status `expired`: no terminal callback within the callback deadline.
pub const CALLS_EXPIRED_TOTAL: &str = "callbridge_calls_expired_total";
/// 1 while submission is paused because the API rejects the key.
pub const SUBMITTER_PAUSED: &str = "submitter_paused";
/// Items per insert request.
pub const SUBMITTER_REQUEST_SIZE: &str = "submitter_request_size";
/// Rows of `local_call_queue` by `queue_status`: every status but `submitted` (see
/// [`DEPTH_STATUSES`]).
pub const QUEUE_ROWS: &str = "local_call_queue_rows";
/// How long the oldest due `pending` row has waited.
pub const OLDEST_DUE_SECONDS: &str = "local_call_queue_oldest_due_seconds";

/// Numbers of a campaign the centralized system accepted, by `campaign` (see
/// [`CampaignLabels`]).
pub const CAMPAIGN_NUMBERS_SENT_TOTAL: &str = "campaign_numbers_sent_total";
/// Rows of a campaign still to be sent (`pending` or `submitting`), by `campaign`.
pub const CAMPAIGN_NUMBERS_WAITING: &str = "campaign_numbers_waiting";
/// Distinct campaign names that get a label of their own; the rest are `other`.
pub const MAX_CAMPAIGN_LABELS: usize = 50;
/// The label of campaigns past [`MAX_CAMPAIGN_LABELS`].
pub const OTHER_CAMPAIGNS: &str = "other";

/// The statuses the depth gauge reports, so a status that emptied reads 0, not stale:
/// every queue status but `submitted`, the history of sent rows, which grows with every
/// campaign and which counting every few seconds would read whole (campaign figures and
/// `call_submissions_total` say how many were sent).
pub const DEPTH_STATUSES: [QueueStatus; 6] = [
    QueueStatus::Pending,
    QueueStatus::Submitting,
    QueueStatus::Failed,
    QueueStatus::NeedsReview,
    QueueStatus::Cancelled,
    QueueStatus::Suppressed,
];

pub fn count_rows(status: &'static str, rows: u64) {
    if rows > 0 {
        metrics::counter!(CALL_SUBMISSIONS_TOTAL, "status" => status).increment(rows);
    }
}

pub fn count_retries(reason: RetryReason, rows: u64) {
    if rows > 0 {
        metrics::counter!(SUBMITTER_RETRIES_TOTAL, "reason" => reason.as_str()).increment(rows);
        count_rows("retried", rows);
    }
}

pub fn count_reconciliation(verdict: &'static str) {
    metrics::counter!(SUBMITTER_RECONCILIATIONS_TOTAL, "verdict" => verdict).increment(1);
}

pub fn count_suppressed(rows: u64) {
    metrics::counter!(NUMBERS_SUPPRESSED_TOTAL).increment(rows);
}

pub fn count_expired(calls: u64) {
    metrics::counter!(CALLS_EXPIRED_TOTAL).increment(calls);
}

pub fn set_paused(paused: bool) {
    metrics::gauge!(SUBMITTER_PAUSED).set(if paused { 1.0 } else { 0.0 });
}

pub fn record_request_size(items: usize) {
    metrics::histogram!(SUBMITTER_REQUEST_SIZE).record(items as f64);
}

pub fn set_queue_depth(counts: &[(String, i64)]) {
    for status in DEPTH_STATUSES {
        let rows = counts
            .iter()
            .find(|(counted, _)| counted == status.as_str())
            .map_or(0, |(_, rows)| *rows);
        metrics::gauge!(QUEUE_ROWS, "queue_status" => status.as_str()).set(rows as f64);
    }
}

pub fn set_oldest_due(seconds: f64) {
    metrics::gauge!(OLDEST_DUE_SECONDS).set(seconds);
}

/// Campaign names are chosen by operators, so each becomes a label only while fewer than
/// [`MAX_CAMPAIGN_LABELS`] have: a process never exports more series than that per
/// metric, however many campaigns it serves. Later ones are counted as `other`.
#[derive(Debug, Default)]
pub struct CampaignLabels {
    admitted: Mutex<BTreeSet<String>>,
    /// Labels the waiting gauge reported last time, so one that emptied reads 0.
    waiting_reported: Mutex<BTreeSet<String>>,
}

impl CampaignLabels {
    /// The label of campaign `name`.
    pub fn label(&self, name: &str) -> String {
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if admitted.contains(name) {
            return name.to_owned();
        }
        if admitted.len() < MAX_CAMPAIGN_LABELS && name != OTHER_CAMPAIGNS {
            admitted.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER_CAMPAIGNS.to_owned()
    }

    /// Counts `numbers` of campaign `name` accepted.
    pub fn count_sent(&self, name: &str, numbers: u64) {
        if numbers > 0 {
            metrics::counter!(CAMPAIGN_NUMBERS_SENT_TOTAL, "campaign" => self.label(name))
                .increment(numbers);
        }
    }

    /// Sets the waiting gauge from (campaign name, rows) counts.
    pub fn set_waiting(&self, counts: &[(String, i64)]) {
        let mut by_label: std::collections::BTreeMap<String, i64> = Default::default();
        for (name, rows) in counts {
            *by_label.entry(self.label(name)).or_default() += rows;
        }
        let mut reported = self
            .waiting_reported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for label in reported.iter() {
            if !by_label.contains_key(label) {
                metrics::gauge!(CAMPAIGN_NUMBERS_WAITING, "campaign" => label.clone()).set(0.0);
            }
        }
        for (label, rows) in &by_label {
            metrics::gauge!(CAMPAIGN_NUMBERS_WAITING, "campaign" => label.clone())
                .set(*rows as f64);
        }
        *reported = by_label.into_keys().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_gauge_covers_every_queue_status_but_the_sent_history() {
        let mut expected: Vec<QueueStatus> = QueueStatus::ALL
            .iter()
            .copied()
            .filter(|status| *status != QueueStatus::Submitted)
            .collect();
        let mut covered = DEPTH_STATUSES.to_vec();
        expected.sort_by_key(|status| status.as_str());
        covered.sort_by_key(|status| status.as_str());
        assert_eq!(covered, expected);
    }

    #[test]
    fn campaign_labels_stop_growing_at_the_cap_and_the_rest_are_other() {
        let labels = CampaignLabels::default();
        for n in 0..MAX_CAMPAIGN_LABELS {
            assert_eq!(labels.label(&format!("c{n}")), format!("c{n}"));
        }
        assert_eq!(labels.label("one-too-many"), OTHER_CAMPAIGNS);
        // Admitted names keep their label.
        assert_eq!(labels.label("c0"), "c0");
        assert_eq!(labels.label("c0"), "c0");
        let distinct: BTreeSet<String> =
            (0..1000).map(|n| labels.label(&format!("x{n}"))).collect();
        assert_eq!(distinct.len(), 1, "{distinct:?}");
    }
}
