//! What callbridge itself writes about a call's life after it was submitted: the event
//! that marks a call `expired` when its callback deadline passed.

use crate::event::{CallbackEvent, EventType};
use crate::status::CallStatus;

/// `call_events.event_type` of the event the callback deadline writes. Not a type any
/// sender uses: the event is callbridge's own, kept beside the callbacks it stands in for.
pub const EXPIRY_EVENT_TYPE: &str = "callbridge_call_expired";

/// The event id of a call's expiry: one per call, so a deadline sweep repeated by another
/// replica (or after a crash) adds nothing.
pub fn expiry_event_id(call_id: &str) -> String {
    format!("callbridge:expired:{call_id}")
}

/// The event that gives a call the status `expired`.
///
/// It carries the call's identity as its row holds it (account code, batch, number) and
/// nothing else: a call's row takes each field from the highest-ranked event carrying it,
/// so an expiry that carried, say, an error message would keep it on the row after a late
/// terminal callback replaced the status. With identity only, the row after the expiry is
/// the row before with `call_status` = `expired`.
pub fn expiry_event(
    call_id: &str,
    accountcode: &str,
    batch_id: Option<i32>,
    phone_number: &str,
) -> CallbackEvent {
    CallbackEvent {
        event_type: EventType::Other(EXPIRY_EVENT_TYPE.to_owned()),
        accountcode: accountcode.to_owned(),
        batch_id,
        call_id: call_id.to_owned(),
        phone_number: phone_number.to_owned(),
        call_status: Some(CallStatus::Expired),
        disposition: None,
        duration: None,
        start_time: None,
        end_time: None,
        recording_url: None,
        custom_data: None,
        server_code: None,
        error_message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_event_carries_identity_and_the_expired_status_only() {
        let event = expiry_event("c1", "ACME", Some(7), "9876543210");
        assert_eq!(event.call_status, Some(CallStatus::Expired));
        assert_eq!(event.event_type.as_str(), EXPIRY_EVENT_TYPE);
        assert_eq!(
            EventType::parse(EXPIRY_EVENT_TYPE),
            Some(event.event_type.clone())
        );
        let body = serde_json::to_value(&event).unwrap();
        let back: CallbackEvent = serde_json::from_value(body).unwrap();
        assert_eq!(back, event);
        assert_eq!(expiry_event_id("c1"), "callbridge:expired:c1");
    }
}
