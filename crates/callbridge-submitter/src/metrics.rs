//! The submitter's metrics, recorded through the `metrics` facade and served
//! by `callbridge_runtime::health` on `/metrics`. The names are the ones the dashboards
//! and alert rules in `deploy/observability/` query.

use crate::api::RetryReason;

/// The seed's counter, per row: `status` is `submitted`, `retried`, `failed` or
/// `needs_review`.
pub const CALL_SUBMISSIONS_TOTAL: &str = "call_submissions_total";
/// Rows scheduled for another attempt, by `reason`.
pub const SUBMITTER_RETRIES_TOTAL: &str = "submitter_retries_total";
/// Reconciliations against batch-status, by `verdict` (`all_held`, `none_held`,
/// `ambiguous`, `unreadable`, `unavailable`).
pub const SUBMITTER_RECONCILIATIONS_TOTAL: &str = "submitter_reconciliations_total";
/// 1 while submission is paused because the API rejects the key.
pub const SUBMITTER_PAUSED: &str = "submitter_paused";
/// Items per insert request.
pub const SUBMITTER_REQUEST_SIZE: &str = "submitter_request_size";
/// Rows of `local_call_queue` by `queue_status` (the finished `submitted` rows excluded).
pub const QUEUE_ROWS: &str = "local_call_queue_rows";
/// How long the oldest due `pending` row has waited.
pub const OLDEST_DUE_SECONDS: &str = "local_call_queue_oldest_due_seconds";

/// The statuses the depth gauge reports, so a status that emptied reads 0, not stale.
const DEPTH_STATUSES: [&str; 4] = ["pending", "submitting", "failed", "needs_review"];

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
            .find(|(counted, _)| counted == status)
            .map_or(0, |(_, rows)| *rows);
        metrics::gauge!(QUEUE_ROWS, "queue_status" => status).set(rows as f64);
    }
}

pub fn set_oldest_due(seconds: f64) {
    metrics::gauge!(OLDEST_DUE_SECONDS).set(seconds);
}
