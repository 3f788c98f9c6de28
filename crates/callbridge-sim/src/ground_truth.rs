//! What the simulator knows happened, as `GET /admin/ground-truth` reports it: every number
//! accepted per batch and how often, every API request and how it was answered, every call
//! with its outcome and every callback it sent with whether it got a 2xx.
//!
//! Tests compare this with what callbridge stored ("accepted exactly once", "every
//! acknowledged callback stored, with the right outcome").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Endpoint, Outcome};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Keyed by `batch_id`.
    pub batches: BTreeMap<i32, BatchTruth>,
    pub calls: Vec<CallTruth>,
    /// Every API request in arrival order (after any hold).
    pub requests: Vec<RequestTruth>,
    pub totals: Totals,
    /// API requests blocked by `POST /admin/hold` right now.
    pub held_now: usize,
    /// Dispatched calls whose callbacks are not all finished (acknowledged or given up).
    pub pending_calls: usize,
}

impl GroundTruth {
    /// How many times `phone_number` was accepted under `batch_id` (0 when never).
    pub fn accepted_count(&self, batch_id: i32, phone_number: &str) -> u32 {
        self.batches
            .get(&batch_id)
            .and_then(|batch| batch.accepted.get(phone_number))
            .copied()
            .unwrap_or(0)
    }

    pub fn calls_of_batch(&self, batch_id: i32) -> impl Iterator<Item = &CallTruth> {
        self.calls
            .iter()
            .filter(move |call| call.batch_id == batch_id)
    }

    pub fn requests_to(&self, endpoint: Endpoint) -> impl Iterator<Item = &RequestTruth> {
        self.requests
            .iter()
            .filter(move |request| request.endpoint == endpoint)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchTruth {
    pub accountcode: String,
    /// Insert requests that stored at least one item of this batch (2 or more means the
    /// `batch_id` was repeated and appended to).
    pub inserts: u32,
    /// Each accepted phone number and how many times it was accepted in this batch.
    pub accepted: BTreeMap<String, u32>,
    /// Calls held for this batch (one per accepted item).
    pub calls: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Accepted, waiting for a dispatch.
    Queued,
    /// Dispatched; its last event is not yet due.
    InProgress,
    /// Its last event was due: the call is over (its callbacks may still be retrying).
    Ended,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallTruth {
    pub call_id: String,
    pub batch_id: i32,
    pub phone_number: String,
    pub custom_data: Option<serde_json::Value>,
    /// When the insert request that stored it was handled: the acceptance time pacing
    /// is judged by.
    pub accepted_at: chrono::DateTime<chrono::Utc>,
    pub state: CallState,
    /// Drawn at dispatch from the outcome mix; `None` while queued.
    pub outcome: Option<Outcome>,
    /// Its events were sent in reverse order.
    pub reordered: bool,
    /// Every callback of the call in the order it was sent; empty while queued.
    pub events: Vec<EventTruth>,
}

impl CallTruth {
    pub fn all_acknowledged(&self) -> bool {
        !self.events.is_empty() && self.events.iter().all(|event| event.acknowledged)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTruth {
    pub event_type: String,
    pub call_status: String,
    /// HTTP requests made for this callback, not counting duplicates.
    pub attempts: u32,
    /// Some attempt got a 2xx.
    pub acknowledged: bool,
    /// Every attempt failed and the sender stopped retrying.
    pub gave_up: bool,
    /// Status of the last attempt; `None` when it got no HTTP answer.
    pub last_status: Option<u16>,
    /// Transport error of the last attempt (timeout, refused, reset).
    pub last_error: Option<String>,
    /// Identical copies sent after the callback was acknowledged (duplicate knob).
    pub duplicates_sent: u32,
    pub duplicates_acknowledged: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTruth {
    pub endpoint: Endpoint,
    /// HTTP status answered; `None` when the connection was dropped without an answer.
    pub status: Option<u16>,
    /// The fault injected, if any: `rate_limit`, `error`, `accept_then_fail`,
    /// `partial_accept`, `invalid_api_key`.
    pub fault: Option<String>,
    /// The request waited for `POST /admin/release` before it was handled.
    pub held: bool,
    pub batch_id: Option<i32>,
    /// Items in an insert request's body.
    pub items_sent: usize,
    /// Items an insert stored (also when its answer was a fault).
    pub items_stored: usize,
    /// Calls a dispatch placed (also when its answer was a fault).
    pub calls_dispatched: usize,
}

impl RequestTruth {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            status: None,
            fault: None,
            held: false,
            batch_id: None,
            items_sent: 0,
            items_stored: 0,
            calls_dispatched: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub accepted_items: usize,
    pub calls_queued: usize,
    pub calls_in_progress: usize,
    pub calls_ended: usize,
    /// Distinct callbacks the sender has started delivering.
    pub callbacks_sent: usize,
    pub callbacks_acknowledged: usize,
    pub callbacks_given_up: usize,
    /// HTTP requests for callbacks, retries included, duplicates excluded.
    pub delivery_attempts: u64,
    pub duplicates_sent: u64,
}
