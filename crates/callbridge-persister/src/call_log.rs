//! A call's `call_logs` row as a pure function of the set of its stored events.
//!
//! Why a fold over the whole set rather than an update from the previous row: the row
//! does not record which event each field came from, so "each field from the
//! highest-ranked event that carries one" cannot be applied incrementally in every
//! arrival order. Folding the set makes the result independent of arrival order, of
//! duplicates (the set has no duplicates: `call_events.event_id` is unique) and of how
//! many persister replicas took part.
//!
//! The order between events is `callbridge_types::status::precedence_key` (the only
//! place the status order lives), then the event id, so that two events of equal
//! standing that disagree about a field still give one answer whatever their order.
//!
//! An event without a status (an unknown event type or `call_status_update` that
//! carries no `call_status`) takes no part in the fold: it is kept in
//! `call_events` but lets it change `call_logs` only through a status, and it has none.
//! So a call whose only events are status-less has no `call_logs` row at all
//! (`call_logs.call_status` is `NOT NULL`); its first event with a status creates it.
//!
//! When `callbridge retention run` has deleted a call's events (it deletes all of a
//! call's events or none, and only once its row counts in its batch), its stored row
//! takes part as one more event ([`STORED_ROW_EVENT_ID`]): the row stands for the events
//! it was folded from, so a late event folded with it gives the row the full history
//! would (exactly, but for which of two events of equal standing fills a field). It stands
//! below every event of equal standing (its id sorts first), and a fold it decides
//! publishes no outcome: its outcome was published when it was written. Once a late event
//! is stored the call has events again and the row no longer takes part, so a second late
//! event folds with the first only (a callback arriving twice after its call's retention
//! may lose a field the deleted events carried). While a call has
//! stored events its row takes no part: a field the row took from a lower event could
//! otherwise shadow a higher event arriving later.

use std::cmp::Ordering;

use callbridge_types::event::CallbackEvent;
use callbridge_types::status::{CallStatus, precedence_key};
use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::{Map, Value};

/// The event id the call's stored `call_logs` row takes part in the fold under (see the
/// module docs): no event has an empty id.
pub const STORED_ROW_EVENT_ID: &str = "";

/// One event of a call as stored in `call_events`, or its stored row
/// ([`STORED_ROW_EVENT_ID`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event_id: String,
    pub event: CallbackEvent,
}

impl StoredEvent {
    /// Whether this is the call's stored row rather than an event.
    pub fn is_stored_row(&self) -> bool {
        self.event_id == STORED_ROW_EVENT_ID
    }
}

/// The `call_logs` columns callbridge writes, as the fold of a call's events decides them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallLog {
    pub call_id: String,
    pub accountcode: String,
    pub batch_id: Option<i32>,
    pub phone_number: String,
    pub call_status: CallStatus,
    pub disposition: Option<String>,
    /// `None` when no event carries one; stored as the column's default, 0.
    pub duration: Option<i32>,
    pub start_time: Option<NaiveDateTime>,
    pub end_time: Option<NaiveDateTime>,
    pub recording_url: Option<String>,
    pub server_code: Option<String>,
    pub error_message: Option<String>,
    pub custom_data: Option<Map<String, Value>>,
    /// The event whose status the call holds; for a terminal call, the outcome's id.
    #[serde(skip)]
    pub winning_event_id: String,
}

/// An event that carries a status, with that status: what the fold ranks.
#[derive(Clone, Copy)]
struct Ranked<'a> {
    stored: &'a StoredEvent,
    status: &'a CallStatus,
}

impl Ranked<'_> {
    /// The highest-standing event first: by status precedence, then by event id.
    fn by_standing_descending(a: &Self, b: &Self) -> Ordering {
        let key = |ranked: &Self| precedence_key(ranked.status, ranked.stored.event.end_time);
        key(b)
            .cmp(&key(a))
            .then_with(|| b.stored.event_id.cmp(&a.stored.event_id))
    }
}

/// Folds every stored event of one call into its row; `None` when none of them carries
/// a status (see the module docs).
///
/// The status (and the outcome's event id) comes from the highest-standing event; every
/// other field from the highest-standing event that carries it, so a lower event fills a
/// field the higher ones leave out but never overrides one, and no event blanks a field.
pub fn fold_call(events: &[StoredEvent]) -> Option<CallLog> {
    let mut ranked: Vec<Ranked<'_>> = events
        .iter()
        .filter_map(|stored| {
            let status = stored.event.call_status.as_ref()?;
            Some(Ranked { stored, status })
        })
        .collect();
    ranked.sort_by(Ranked::by_standing_descending);
    let winner = *ranked.first()?;

    fn first<T: Clone>(
        ranked: &[Ranked<'_>],
        field: impl Fn(&CallbackEvent) -> Option<&T>,
    ) -> Option<T> {
        ranked
            .iter()
            .find_map(|ranked| field(&ranked.stored.event))
            .cloned()
    }

    let winning_event = &winner.stored.event;
    Some(CallLog {
        call_id: winning_event.call_id.clone(),
        accountcode: winning_event.accountcode.clone(),
        batch_id: first(&ranked, |e| e.batch_id.as_ref()),
        phone_number: winning_event.phone_number.clone(),
        call_status: winner.status.clone(),
        disposition: first(&ranked, |e| e.disposition.as_ref()),
        duration: first(&ranked, |e| e.duration.as_ref()),
        start_time: first(&ranked, |e| e.start_time.as_ref()),
        end_time: first(&ranked, |e| e.end_time.as_ref()),
        recording_url: first(&ranked, |e| e.recording_url.as_ref()),
        server_code: first(&ranked, |e| e.server_code.as_ref()),
        error_message: first(&ranked, |e| e.error_message.as_ref()),
        custom_data: first(&ranked, |e| e.custom_data.as_ref()),
        winning_event_id: winner.stored.event_id.clone(),
    })
}

impl CallLog {
    /// Whether the call is over, so its outcome goes to the outbox.
    pub fn is_terminal(&self) -> bool {
        self.call_status.is_terminal()
    }

    /// Whether an event decided the row (rather than the stored row, whose outcome was
    /// published when it was written).
    pub fn decided_by_event(&self) -> bool {
        self.winning_event_id != STORED_ROW_EVENT_ID
    }

    /// The body of the outcome message subscribers receive: the call's row and the id of
    /// the event that decided it (also the message's `message_id`).
    pub fn outcome_payload(&self) -> Value {
        let mut body = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut body {
            fields.insert(
                "event_id".to_owned(),
                Value::String(self.winning_event_id.clone()),
            );
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge_types::event::validate_callback;
    use serde_json::json;

    fn stored(event_id: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            event_id: event_id.to_owned(),
            event: validate_callback(payload.to_string().as_bytes(), "ACME").unwrap(),
        }
    }

    fn started() -> StoredEvent {
        stored(
            "e-started",
            json!({"event_type": "call_started", "call_id": "c1", "batch_id": 7,
                   "phone_number": "9876543210", "duration": 0,
                   "start_time": "2024-01-01T10:00:00Z", "disposition": "dialing",
                   "custom_data": {"customer_id": "CUST001"}}),
        )
    }

    fn answered() -> StoredEvent {
        stored(
            "e-answered",
            json!({"event_type": "call_answered", "call_id": "c1", "batch_id": 7,
                   "phone_number": "9876543210", "disposition": "answered"}),
        )
    }

    fn completed_at(event_id: &str, end_time: &str) -> StoredEvent {
        stored(
            event_id,
            json!({"event_type": "call_completed", "call_id": "c1", "batch_id": 7,
                   "phone_number": "9876543210", "duration": 120, "end_time": end_time,
                   "recording_url": "https://rec.example/1.wav"}),
        )
    }

    fn failed_at(event_id: &str, end_time: &str) -> StoredEvent {
        stored(
            event_id,
            json!({"event_type": "call_failed", "call_id": "c1", "batch_id": 7,
                   "phone_number": "9876543210", "end_time": end_time,
                   "error_message": "network"}),
        )
    }

    fn permutations(items: &[StoredEvent]) -> Vec<Vec<StoredEvent>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut all = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let head = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, head.clone());
                all.push(tail);
            }
        }
        all
    }

    #[test]
    fn no_events_fold_to_no_row() {
        assert_eq!(fold_call(&[]), None);
    }

    #[test]
    fn each_field_comes_from_the_highest_ranked_event_that_carries_it() {
        let row = fold_call(&[
            started(),
            answered(),
            completed_at("e-done", "2024-01-01T10:02:00Z"),
        ])
        .unwrap();
        assert_eq!(row.call_status, CallStatus::Completed);
        assert_eq!(row.winning_event_id, "e-done");
        // duration 120 from the terminal event replaces the 0 of call_started.
        assert_eq!(row.duration, Some(120));
        // disposition: answered outranks started; completed carries none.
        assert_eq!(row.disposition.as_deref(), Some("answered"));
        // Only call_started carries these: no later event blanks them.
        assert!(row.start_time.is_some());
        assert_eq!(row.custom_data.unwrap()["customer_id"], "CUST001");
        assert_eq!(
            row.recording_url.as_deref(),
            Some("https://rec.example/1.wav")
        );
    }

    #[test]
    fn every_arrival_order_folds_to_the_same_row() {
        let events = [
            started(),
            answered(),
            completed_at("e-done", "2024-01-01T10:02:00Z"),
            failed_at("e-failed", "2024-01-01T10:05:00Z"),
        ];
        let expected = fold_call(&events).unwrap();
        for order in permutations(&events) {
            assert_eq!(fold_call(&order).unwrap(), expected);
        }
    }

    #[test]
    fn the_terminal_event_with_the_later_end_time_wins() {
        let row = fold_call(&[
            completed_at("e-done", "2024-01-01T10:02:00Z"),
            failed_at("e-failed", "2024-01-01T10:05:00Z"),
        ])
        .unwrap();
        assert_eq!(row.call_status, CallStatus::Failed);
        assert_eq!(row.winning_event_id, "e-failed");
        assert_eq!(row.error_message.as_deref(), Some("network"));
        // The losing terminal still fills what the winner leaves out.
        assert_eq!(row.duration, Some(120));
    }

    #[test]
    fn equal_end_times_fall_back_to_terminal_precedence() {
        let row = fold_call(&[
            failed_at("e-failed", "2024-01-01T10:02:00Z"),
            completed_at("e-done", "2024-01-01T10:02:00Z"),
        ])
        .unwrap();
        assert_eq!(row.call_status, CallStatus::Completed);
    }

    #[test]
    fn equal_standing_is_settled_by_event_id_whatever_the_order() {
        let a = stored(
            "a",
            json!({"event_type": "call_answered", "call_id": "c1", "phone_number": "1",
                   "disposition": "first"}),
        );
        let b = stored(
            "b",
            json!({"event_type": "call_answered", "call_id": "c1", "phone_number": "1",
                   "disposition": "second"}),
        );
        let forward = fold_call(&[a.clone(), b.clone()]).unwrap();
        let backward = fold_call(&[b, a]).unwrap();
        assert_eq!(forward, backward);
        assert_eq!(forward.disposition.as_deref(), Some("second"));
    }

    #[test]
    fn an_unknown_status_never_lowers_a_known_one() {
        let unknown = stored(
            "z-unknown",
            json!({"event_type": "call_status_update", "call_status": "queued",
                   "call_id": "c1", "phone_number": "9876543210"}),
        );
        let row = fold_call(&[answered(), unknown]).unwrap();
        assert_eq!(row.call_status, CallStatus::Answered);
    }

    fn status_less(event_id: &str) -> StoredEvent {
        let event = stored(
            event_id,
            json!({"event_type": "call_parked", "call_id": "c1", "batch_id": 99,
                   "phone_number": "9876543210", "duration": 999,
                   "disposition": "parked", "error_message": "on hold",
                   "end_time": "2024-01-01T11:00:00Z"}),
        );
        assert_eq!(event.event.call_status, None);
        event
    }

    #[test]
    fn a_call_with_only_status_less_events_has_no_row() {
        assert_eq!(fold_call(&[status_less("a"), status_less("b")]), None);
    }

    #[test]
    fn status_less_events_change_no_field_of_the_row() {
        let events = [started(), answered()];
        let without = fold_call(&events).unwrap();
        for order in permutations(&[started(), status_less("z"), answered()]) {
            // Its batch id, duration, disposition, error and end time are all ignored,
            // though the row leaves error and end time empty.
            assert_eq!(fold_call(&order).unwrap(), without);
        }
    }

    /// The stored row as `store::load_events` reads it back.
    fn row_as_event(row: &CallLog) -> StoredEvent {
        let mut event = row_event(row);
        event.event_type =
            callbridge_types::event::EventType::Other("callbridge_stored_row".into());
        StoredEvent {
            event_id: STORED_ROW_EVENT_ID.to_owned(),
            event,
        }
    }

    fn row_event(row: &CallLog) -> CallbackEvent {
        CallbackEvent {
            event_type: callbridge_types::event::EventType::CallStatusUpdate,
            accountcode: row.accountcode.clone(),
            batch_id: row.batch_id,
            call_id: row.call_id.clone(),
            phone_number: row.phone_number.clone(),
            call_status: Some(row.call_status.clone()),
            disposition: row.disposition.clone(),
            duration: row.duration,
            start_time: row.start_time,
            end_time: row.end_time,
            recording_url: row.recording_url.clone(),
            custom_data: row.custom_data.clone(),
            server_code: row.server_code.clone(),
            error_message: row.error_message.clone(),
        }
    }

    #[test]
    fn the_stored_row_stands_for_deleted_events() {
        let all = [
            started(),
            answered(),
            completed_at("e-done", "2024-01-01T10:02:00Z"),
        ];
        let row = fold_call(&all[..2]).unwrap();
        // call_started and call_answered deleted by retention; the late terminal arrives.
        let pruned = fold_call(&[row_as_event(&row), all[2].clone()]).unwrap();
        assert_eq!(pruned, fold_call(&all).unwrap());

        // A late, lower event keeps the row as it was, and publishes nothing again.
        let done = fold_call(&all).unwrap();
        let late = fold_call(&[row_as_event(&done), started()]).unwrap();
        assert_eq!(late.call_status, CallStatus::Completed);
        assert_eq!(late.duration, Some(120));
        assert!(!late.decided_by_event());
    }

    #[test]
    fn the_outcome_payload_carries_the_row_and_the_deciding_event_id() {
        let row = fold_call(&[started(), completed_at("e-done", "2024-01-01T10:02:00Z")]).unwrap();
        let payload = row.outcome_payload();
        assert_eq!(payload["event_id"], "e-done");
        assert_eq!(payload["call_status"], "completed");
        assert_eq!(payload["call_id"], "c1");
        assert_eq!(payload["duration"], 120);
    }
}
