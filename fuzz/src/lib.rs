//! Invariants the fuzz targets share. A broken invariant panics, which libFuzzer
//! reports as a crash with the input that caused it.

use callbridge_types::event::{CallbackEvent, EventType, limits};
use callbridge_types::status::CallStatus;
use chrono::{Datelike, NaiveDateTime, Timelike};
use serde_json::Value;

/// Everything the persister needs to store `event` without a database error: the
/// `call_logs` column widths (counted in characters, as `VARCHAR(n)` counts), no NUL
/// anywhere (Postgres refuses U+0000 in `text` and `jsonb`), non-negative durations,
/// timestamps inside the years `TIMESTAMP` consumers handle and at its microsecond
/// precision, and the normalised vocabularies as fixed points of their own parsers. (An
/// event without a status is kept in `call_events` only; its other fields still fit.)
pub fn assert_storable(event: &CallbackEvent) {
    assert_column(
        "event_type",
        event.event_type.as_str(),
        limits::EVENT_TYPE_CHARS,
    );
    assert_column("accountcode", &event.accountcode, limits::ACCOUNTCODE_CHARS);
    assert_column("call_id", &event.call_id, limits::CALL_ID_CHARS);
    assert_column(
        "phone_number",
        &event.phone_number,
        limits::PHONE_NUMBER_CHARS,
    );
    match &event.call_status {
        Some(status) => {
            assert_column("call_status", status.as_str(), limits::CALL_STATUS_CHARS);
            assert_eq!(
                CallStatus::parse(status.as_str()).as_ref(),
                Some(status),
                "call_status is a fixed point of its normalisation"
            );
        }
        // Only an event whose type implies no status may come without one.
        None => assert_eq!(event.event_type.implied_status(), None),
    }
    for (field, value, max_chars) in [
        ("disposition", &event.disposition, limits::DISPOSITION_CHARS),
        ("server_code", &event.server_code, limits::SERVER_CODE_CHARS),
        ("recording_url", &event.recording_url, usize::MAX),
        ("error_message", &event.error_message, usize::MAX),
    ] {
        if let Some(value) = value {
            assert_text(field, value, max_chars);
        }
    }
    for (field, value) in [
        ("accountcode", &event.accountcode),
        ("call_id", &event.call_id),
        ("phone_number", &event.phone_number),
    ] {
        assert_eq!(value.trim(), value, "{field} is stored trimmed");
        assert!(!value.is_empty(), "{field} is never blank");
    }
    if let Some(duration) = event.duration {
        assert!(duration >= 0, "duration {duration} is negative");
    }
    for (field, at) in [
        ("start_time", event.start_time),
        ("end_time", event.end_time),
    ] {
        if let Some(at) = at {
            assert_timestamp(field, at);
        }
    }
    if let Some(custom_data) = &event.custom_data {
        for (key, value) in custom_data {
            assert!(!key.contains('\0'), "custom_data key holds NUL");
            assert_json_without_nul(value);
        }
    }
    assert_eq!(
        EventType::parse(event.event_type.as_str()).as_ref(),
        Some(&event.event_type),
        "event_type is a fixed point of its normalisation"
    );
}

fn assert_column(field: &str, value: &str, max_chars: usize) {
    assert!(!value.is_empty(), "{field} is empty");
    assert_text(field, value, max_chars);
}

fn assert_text(field: &str, value: &str, max_chars: usize) {
    let chars = value.chars().count();
    assert!(
        chars <= max_chars,
        "{field} has {chars} characters, its column holds {max_chars}"
    );
    assert!(!value.contains('\0'), "{field} holds NUL");
}

fn assert_timestamp(field: &str, at: NaiveDateTime) {
    assert!(
        (limits::MIN_YEAR..=limits::MAX_YEAR).contains(&at.year()),
        "{field} year {} outside {}..={}",
        at.year(),
        limits::MIN_YEAR,
        limits::MAX_YEAR
    );
    assert_eq!(
        at.nanosecond() % 1_000,
        0,
        "{field} is finer than the microseconds TIMESTAMP keeps"
    );
}

/// No string or key anywhere in `value` holds NUL.
pub fn assert_json_without_nul(value: &Value) {
    match value {
        Value::String(text) => assert!(!text.contains('\0'), "a JSON string holds NUL"),
        Value::Array(items) => items.iter().for_each(assert_json_without_nul),
        Value::Object(map) => {
            for (key, item) in map {
                assert!(!key.contains('\0'), "a JSON key holds NUL");
                assert_json_without_nul(item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
