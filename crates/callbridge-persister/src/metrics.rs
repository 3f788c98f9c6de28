//! The persister's metrics, named once. Recorded through the `metrics` facade
//! and served on `/metrics` by `callbridge_runtime::health`.

use std::time::Duration;

use callbridge_types::status::CallStatus;
use chrono::{DateTime, Utc};

/// Histogram `{status}`: duration of each call whose terminal outcome a batch decided
/// (the seed's `call_duration_seconds`).
pub const CALL_DURATION_SECONDS: &str = "call_duration_seconds";
/// Gauge: batches whose status is not final yet (the seed's `active_batches`).
pub const ACTIVE_BATCHES: &str = "active_batches";
/// Histogram: from the ingress receiving a callback to the persister committing it.
pub const CALLBACK_END_TO_END_SECONDS: &str = "callback_end_to_end_seconds";
/// Counter `{result}`: consumed events by what became of them ([`EventResult`]).
pub const EVENTS_TOTAL: &str = "persister_events_total";
/// Histogram: deliveries per batch transaction.
pub const BATCH_SIZE: &str = "persister_batch_size";
/// Counter `{reason}`: messages the persister moved to `callbridge.dead`.
pub const DEAD_LETTERS_TOTAL: &str = "persister_dead_letters_total";
/// Counter `{reason}`: batch transactions retried (`unavailable`, `conflict`).
pub const STORE_RETRIES_TOTAL: &str = "persister_store_retries_total";
/// Counter `{status}`: outcome messages confirmed by `callbridge.outcomes`.
pub const OUTCOMES_PUBLISHED_TOTAL: &str = "persister_outcomes_published_total";
/// Counter `{outcome}`: redial rows added to `local_call_queue`, by the outcome of the
/// call each repeats (`busy`, `no_answer`, `timeout`, `failed`, `completed`: the outcomes
/// a redial policy names, so the label set is closed). Counted after commit.
pub const REDIALS_CREATED_TOTAL: &str = "callbridge_redials_created_total";

/// What became of one consumed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    Stored,
    Duplicate,
    DeadLettered,
}

impl EventResult {
    fn label(self) -> &'static str {
        match self {
            EventResult::Stored => "stored",
            EventResult::Duplicate => "duplicate",
            EventResult::DeadLettered => "dead_lettered",
        }
    }
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The body is not an envelope this version reads.
    Undecodable,
    /// The database refuses its data.
    Unstorable,
}

impl DeadLetterReason {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::Unstorable => "unstorable",
        }
    }
}

/// Registers descriptions, so `/metrics` explains each series.
pub fn describe() {
    metrics::describe_histogram!(
        CALL_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Duration of calls whose terminal outcome was stored, by status"
    );
    metrics::describe_gauge!(ACTIVE_BATCHES, "Batches not completed or failed yet");
    metrics::describe_histogram!(
        CALLBACK_END_TO_END_SECONDS,
        metrics::Unit::Seconds,
        "Time from the ingress receiving a callback to its commit"
    );
    metrics::describe_counter!(EVENTS_TOTAL, "Consumed callback events by result");
    metrics::describe_histogram!(BATCH_SIZE, "Deliveries per batch transaction");
    metrics::describe_counter!(DEAD_LETTERS_TOTAL, "Messages moved to callbridge.dead");
    metrics::describe_counter!(STORE_RETRIES_TOTAL, "Batch transactions retried, by reason");
    metrics::describe_counter!(
        OUTCOMES_PUBLISHED_TOTAL,
        "Call outcomes published to callbridge.outcomes"
    );
    metrics::describe_counter!(
        REDIALS_CREATED_TOTAL,
        "Redial rows added to local_call_queue, by the outcome of the call they repeat"
    );
}

pub fn count_events(result: EventResult, count: usize) {
    metrics::counter!(EVENTS_TOTAL, "result" => result.label()).increment(count as u64);
}

pub fn record_dead_letter(reason: DeadLetterReason) {
    metrics::counter!(DEAD_LETTERS_TOTAL, "reason" => reason.label()).increment(1);
    count_events(EventResult::DeadLettered, 1);
}

pub fn record_batch_size(size: usize) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
}

pub fn record_end_to_end(received_at: DateTime<Utc>, committed_at: DateTime<Utc>) {
    let elapsed = (committed_at - received_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    metrics::histogram!(CALLBACK_END_TO_END_SECONDS).record(elapsed);
}

pub fn record_outcome(status: &CallStatus, duration_seconds: Option<i32>) {
    if let Some(seconds) = duration_seconds {
        metrics::histogram!(CALL_DURATION_SECONDS, "status" => status.as_str().to_owned())
            .record(f64::from(seconds));
    }
}

pub fn record_store_retry(reason: &'static str) {
    metrics::counter!(STORE_RETRIES_TOTAL, "reason" => reason).increment(1);
}

pub fn count_redials(outcome: &str, created: usize) {
    if created > 0 {
        metrics::counter!(REDIALS_CREATED_TOTAL, "outcome" => outcome.to_owned())
            .increment(created as u64);
    }
}

pub fn record_outcome_published(status: &str) {
    metrics::counter!(OUTCOMES_PUBLISHED_TOTAL, "status" => status.to_owned()).increment(1);
}

pub fn set_active_batches(count: i64) {
    metrics::gauge!(ACTIVE_BATCHES).set(count as f64);
}
