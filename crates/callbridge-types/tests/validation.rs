//! Table tests of the callback validation and normalisation rules (`parse_callback`).

use callbridge_types::event::{
    CallbackEvent, EventType, ValidationError, mask_phone, parse_callback, validate_callback,
};
use callbridge_types::status::CallStatus;
use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Value, json};

const DEFAULT_ACCOUNT: &str = "ACC_DEFAULT";

fn validate(payload: &Value) -> Result<CallbackEvent, ValidationError> {
    validate_callback(payload.to_string().as_bytes(), DEFAULT_ACCOUNT)
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micro: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_micro_opt(h, mi, s, micro)
        .unwrap()
}

/// The seed's own example payload, unchanged.
fn seed_payload() -> Value {
    json!({
      "event_type": "call_status_update",
      "accountcode": "YOUR_ACCOUNT_CODE",
      "batch_id": 12345,
      "call_id": "unique_call_id",
      "phone_number": "9876543210",
      "call_status": "completed",
      "disposition": "answered",
      "duration": 120,
      "start_time": "2024-01-01T10:00:00Z",
      "end_time": "2024-01-01T10:02:00Z",
      "recording_url": "https://recordings.example.com/call_123.wav",
      "custom_data": {"customer_id": "CUST001", "campaign_id": "CAMP001"},
      "server_code": "server1",
      "error_message": null
    })
}

fn with(mut payload: Value, field: &str, value: Value) -> Value {
    payload[field] = value;
    payload
}

fn without(mut payload: Value, field: &str) -> Value {
    payload.as_object_mut().unwrap().remove(field);
    payload
}

#[test]
fn seed_example_payload_is_accepted_with_every_field() {
    let event = validate(&seed_payload()).unwrap();
    assert_eq!(
        event,
        CallbackEvent {
            event_type: EventType::CallStatusUpdate,
            accountcode: "YOUR_ACCOUNT_CODE".into(),
            batch_id: Some(12345),
            call_id: "unique_call_id".into(),
            phone_number: "9876543210".into(),
            call_status: Some(CallStatus::Completed),
            disposition: Some("answered".into()),
            duration: Some(120),
            start_time: Some(utc(2024, 1, 1, 10, 0, 0, 0)),
            end_time: Some(utc(2024, 1, 1, 10, 2, 0, 0)),
            recording_url: Some("https://recordings.example.com/call_123.wav".into()),
            custom_data: json!({"customer_id": "CUST001", "campaign_id": "CAMP001"})
                .as_object()
                .cloned(),
            server_code: Some("server1".into()),
            error_message: None,
        }
    );
}

#[test]
fn seed_end_to_end_callback_derives_call_id_status_and_accountcode() {
    // The seed's test_end_to_end_calling_flow sends exactly this.
    let event = validate(&json!({
        "event_type": "call_completed",
        "batch_id": 12345,
        "phone_number": "9876543210",
        "call_status": "completed",
        "duration": 120
    }))
    .unwrap();
    assert_eq!(event.call_id, "12345:9876543210");
    assert_eq!(event.accountcode, DEFAULT_ACCOUNT);
    assert_eq!(event.call_status, Some(CallStatus::Completed));
}

#[test]
fn each_event_type_implies_its_status_when_none_is_given() {
    for (event_type, status) in [
        ("call_started", CallStatus::Started),
        ("call_answered", CallStatus::Answered),
        ("call_completed", CallStatus::Completed),
        ("call_failed", CallStatus::Failed),
        ("call_busy", CallStatus::Busy),
        ("call_no_answer", CallStatus::NoAnswer),
        ("call_timeout", CallStatus::Timeout),
    ] {
        let payload = json!({"event_type": event_type, "batch_id": 1, "phone_number": "1234567"});
        let event = validate(&payload).unwrap();
        assert_eq!(event.call_status, Some(status), "{event_type}");
        assert_eq!(event.event_type.as_str(), event_type);
    }
}

#[test]
fn given_status_is_normalised_and_wins_over_the_event_type() {
    for (given, expected) in [
        ("NO ANSWER", CallStatus::NoAnswer),
        ("No-Answer", CallStatus::NoAnswer),
        ("BUSY", CallStatus::Busy),
        ("Congestion", CallStatus::Other("congestion".into())),
    ] {
        let event = validate(&with(seed_payload(), "call_status", json!(given))).unwrap();
        assert_eq!(event.call_status, Some(expected), "{given:?}");
    }
    // A blank status says nothing: the event type decides.
    let blank =
        json!({"event_type": "call_busy", "batch_id": 1, "phone_number": "1", "call_status": " "});
    assert_eq!(
        validate(&blank).unwrap().call_status,
        Some(CallStatus::Busy)
    );
}

#[test]
fn unknown_event_type_is_kept_by_name() {
    let event = validate(&with(
        seed_payload(),
        "event_type",
        json!("Call Transferred"),
    ))
    .unwrap();
    assert_eq!(
        event.event_type,
        EventType::Other("call_transferred".into())
    );
    assert_eq!(event.call_status, Some(CallStatus::Completed));
}

/// An unknown event type is kept, not rejected, and changes `call_logs` only
/// through a status it carries; the seed's `call_status_update` implies no status either.
#[test]
fn events_that_imply_no_status_are_accepted_without_one() {
    // (case, payload): each is accepted with no status.
    let cases = [
        (
            "unknown type, no status",
            without(set("event_type", json!("call_parked")), "call_status"),
        ),
        (
            "unknown type, null status",
            with(
                set("event_type", json!("Call Parked")),
                "call_status",
                Value::Null,
            ),
        ),
        (
            "unknown type, blank status",
            with(
                set("event_type", json!("call_parked")),
                "call_status",
                json!("  "),
            ),
        ),
        ("call_status_update, no status", omit(&["call_status"])),
        (
            "call_status_update, null status",
            set("call_status", Value::Null),
        ),
        (
            "minimal unknown event",
            json!({"event_type": "recording_ready", "call_id": "c-1", "phone_number": "1"}),
        ),
    ];
    for (name, payload) in cases {
        let event = validate(&payload).unwrap_or_else(|err| panic!("{name}: refused: {err}"));
        assert_eq!(event.call_status, None, "{name}");
    }
    // Everything else is validated as usual and kept.
    let event = validate(&without(
        set("event_type", json!("Call Parked")),
        "call_status",
    ))
    .unwrap();
    assert_eq!(event.event_type, EventType::Other("call_parked".into()));
    assert_eq!(event.call_id, "unique_call_id");
    assert_eq!(event.duration, Some(120));
    // A status-less event still needs what identifies its call.
    let err = validate(&json!({"event_type": "call_parked", "phone_number": "1"})).unwrap_err();
    assert_eq!(err.field, "batch_id");
}

#[test]
fn a_status_less_event_serialises_without_call_status_and_reads_back() {
    let event = validate(&omit(&["call_status"])).unwrap();
    let json = serde_json::to_value(&event).unwrap();
    assert!(json.get("call_status").is_none(), "{json}");
    let back: CallbackEvent = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, event);
    // An explicit null reads the same as the field left out.
    let mut with_null = json;
    with_null["call_status"] = Value::Null;
    assert_eq!(
        serde_json::from_value::<CallbackEvent>(with_null).unwrap(),
        event
    );
}

#[test]
fn timestamps_in_rfc3339_and_naive_iso8601_become_utc() {
    for (raw, expected) in [
        ("2024-01-01T10:00:00Z", utc(2024, 1, 1, 10, 0, 0, 0)),
        ("2024-01-01T15:30:00+05:30", utc(2024, 1, 1, 10, 0, 0, 0)),
        ("2024-01-01T05:00:00-05:00", utc(2024, 1, 1, 10, 0, 0, 0)),
        ("2024-01-01T10:00:00", utc(2024, 1, 1, 10, 0, 0, 0)),
        ("2024-01-01 10:00:00", utc(2024, 1, 1, 10, 0, 0, 0)),
        ("2024-01-01T10:00:00.5", utc(2024, 1, 1, 10, 0, 0, 500_000)),
        // TIMESTAMP keeps microseconds; nanoseconds are truncated, not rounded.
        (
            "2024-01-01T10:00:00.123456789Z",
            utc(2024, 1, 1, 10, 0, 0, 123_456),
        ),
        ("  2023-12-31T23:59:59Z ", utc(2023, 12, 31, 23, 59, 59, 0)),
    ] {
        let event = validate(&with(seed_payload(), "start_time", json!(raw))).unwrap();
        assert_eq!(event.start_time, Some(expected), "{raw:?}");
    }
    let blank = validate(&with(seed_payload(), "end_time", json!(""))).unwrap();
    assert_eq!(blank.end_time, None);
}

#[test]
fn integers_accept_numbers_numeric_strings_and_integral_floats() {
    for (raw, expected) in [
        (json!(120), 120),
        (json!("120"), 120),
        (json!(" 120 "), 120),
        (json!(120.0), 120),
        (json!(0), 0),
        (json!(2_147_483_647_i64), i32::MAX),
    ] {
        let event = validate(&with(seed_payload(), "duration", raw.clone())).unwrap();
        assert_eq!(event.duration, Some(expected), "{raw}");
    }
    let event = validate(&with(seed_payload(), "batch_id", json!(-2_147_483_648_i64))).unwrap();
    assert_eq!(event.batch_id, Some(i32::MIN));
}

#[test]
fn null_is_the_same_as_absent() {
    let mut payload = seed_payload();
    for field in [
        "disposition",
        "duration",
        "start_time",
        "end_time",
        "recording_url",
        "custom_data",
        "server_code",
        "error_message",
    ] {
        payload[field] = Value::Null;
    }
    let from_nulls = validate(&payload).unwrap();
    let mut absent = seed_payload();
    for field in payload.as_object().unwrap().clone().keys() {
        if payload[field].is_null() {
            absent = without(absent, field);
        }
    }
    assert_eq!(from_nulls, validate(&absent).unwrap());
    assert_eq!(from_nulls.duration, None);
    // A null accountcode or call_id takes the default / derived value.
    let event = validate(&with(
        with(seed_payload(), "accountcode", Value::Null),
        "call_id",
        Value::Null,
    ))
    .unwrap();
    assert_eq!(
        (event.accountcode.as_str(), event.call_id.as_str()),
        (DEFAULT_ACCOUNT, "12345:9876543210")
    );
}

#[test]
fn identifiers_are_trimmed_and_free_text_is_kept() {
    let payload = with(
        with(seed_payload(), "phone_number", json!("  9876543210 ")),
        "error_message",
        json!("  spaces kept  "),
    );
    let event = validate(&payload).unwrap();
    assert_eq!(event.phone_number, "9876543210");
    assert_eq!(event.error_message.as_deref(), Some("  spaces kept  "));
}

#[test]
fn lengths_are_counted_in_characters_not_bytes() {
    // 20 four-byte characters fit VARCHAR(20); 21 do not.
    let twenty = "📞".repeat(20);
    let event = validate(&with(seed_payload(), "phone_number", json!(twenty))).unwrap();
    assert_eq!(event.phone_number.chars().count(), 20);
    let err = validate(&with(
        seed_payload(),
        "phone_number",
        json!("📞".repeat(21)),
    ))
    .unwrap_err();
    assert_eq!(err.to_string(), "phone_number: longer than 20 characters");
}

#[test]
fn bodies_that_are_not_json_objects_are_refused() {
    for (name, body) in [
        ("not JSON", &b"event_type=call_started"[..]),
        ("empty body", b""),
        ("array", b"[1,2]"),
        ("string", b"\"call_started\""),
        (
            "number out of range",
            b"{\"event_type\":\"x\",\"duration\":1e400}",
        ),
    ] {
        let err = validate_callback(body, DEFAULT_ACCOUNT).expect_err(name);
        assert_eq!(err.field, "body", "{name}: {err}");
    }
}

/// The seed payload with `field` set to `value`.
fn set(field: &str, value: Value) -> Value {
    with(seed_payload(), field, value)
}

/// The seed payload without `fields`.
fn omit(fields: &[&str]) -> Value {
    fields
        .iter()
        .fold(seed_payload(), |payload, field| without(payload, field))
}

#[test]
fn invalid_fields_are_refused_naming_the_field() {
    let long = |n: usize| json!("x".repeat(n));
    // One row per rule: (case, payload, field named, words of the reason).
    #[rustfmt::skip]
    let cases = [
        ("event_type missing", omit(&["event_type"]), "event_type", "missing"),
        ("event_type null", set("event_type", Value::Null), "event_type", "missing"),
        ("event_type number", set("event_type", json!(3)), "event_type", "must be a string"),
        ("event_type blank", set("event_type", json!(" - ")), "event_type", "must not be empty"),
        ("event_type too long", set("event_type", long(101)), "event_type", "longer than 100"),
        ("phone missing", omit(&["phone_number"]), "phone_number", "missing"),
        ("phone blank", set("phone_number", json!(" ")), "phone_number", "missing"),
        ("phone number", set("phone_number", json!(98_765_i64)), "phone_number", "a string"),
        ("phone too long", set("phone_number", long(21)), "phone_number", "longer than 20"),
        ("no call_id, no batch_id", omit(&["call_id", "batch_id"]), "batch_id", "derive call_id"),
        ("call_id too long", set("call_id", long(256)), "call_id", "longer than 255"),
        ("call_id number", set("call_id", json!(7)), "call_id", "must be a string"),
        ("batch_id too big", set("batch_id", json!(2_147_483_648_i64)), "batch_id", "out of range"),
        ("batch_id too small", set("batch_id", json!(-2_147_483_649_i64)), "batch_id", "range"),
        ("batch_id u64", set("batch_id", json!(u64::MAX)), "batch_id", "out of range"),
        ("batch_id huge float", set("batch_id", json!(1e20)), "batch_id", "out of range"),
        ("batch_id fraction", set("batch_id", json!(1.5)), "batch_id", "must be an integer"),
        ("batch_id word", set("batch_id", json!("twelve")), "batch_id", "must be an integer"),
        ("batch_id bool", set("batch_id", json!(true)), "batch_id", "must be an integer"),
        ("accountcode too long", set("accountcode", long(101)), "accountcode", "longer than 100"),
        ("accountcode object", set("accountcode", json!({})), "accountcode", "must be a string"),
        ("status too long", set("call_status", long(51)), "call_status", "longer than 50"),
        ("status number", set("call_status", json!(1)), "call_status", "must be a string"),
        ("disposition too long", set("disposition", long(51)), "disposition", "longer than 50"),
        ("server_code too long", set("server_code", long(101)), "server_code", "longer than 100"),
        ("recording_url number", set("recording_url", json!(1)), "recording_url", "be a string"),
        ("error_message array", set("error_message", json!(["x"])), "error_message", "be a string"),
        ("duration negative", set("duration", json!(-1)), "duration", "between 0 and"),
        ("duration too big", set("duration", json!(2_147_483_648_i64)), "duration", "between 0"),
        ("duration 12.5 string", set("duration", json!("12.5")), "duration", "be an integer"),
        ("start_time garbage", set("start_time", json!("yesterday")), "start_time", "RFC 3339"),
        ("start_time date only", set("start_time", json!("2024-01-01")), "start_time", "RFC 3339"),
        ("start_time epoch", set("start_time", json!(1_700_000_000)), "start_time", "be a string"),
        ("end_time year 0", set("end_time", json!("0000-01-01T00:00:00")), "end_time", "years"),
        ("end_time year -1", set("end_time", json!("-0001-01-01T00:00:00")), "end_time", "years"),
        ("end_time 30 Feb", set("end_time", json!("2024-02-30T00:00:00Z")), "end_time", "RFC 3339"),
        ("custom_data array", set("custom_data", json!([1])), "custom_data", "a JSON object"),
        ("custom_data string", set("custom_data", json!("{}")), "custom_data", "a JSON object"),
    ];
    for (name, payload, field, reason) in cases {
        let err = validate(&payload).expect_err(name);
        assert_eq!(err.field, field, "{name}: {err}");
        assert!(err.reason.contains(reason), "{name}: {err}");
        assert!(
            err.to_string().starts_with(&format!("{field}: ")),
            "{name}: {err}"
        );
    }
}

#[test]
fn nul_anywhere_is_refused() {
    let cases = [
        (r#""phone_number":"98765\u0000""#, "phone_number"),
        (r#""error_message":"a\u0000b""#, "error_message"),
        (r#""custom_data":{"k":"\u0000"}"#, "custom_data"),
        (r#""custom_data":{"k\u0000":"v"}"#, "custom_data"),
        (
            r#""custom_data":{"deep":[[{"x":["\u0000"]}]]}"#,
            "custom_data",
        ),
        (r#""unknown_extra":"\u0000""#, "unknown_extra"),
        // A key that is not a plain name is the sender's text: not repeated back.
        (r#""<img src=x onerror=alert(1)>":"\u0000""#, "body"),
        (r#""a b":["\u0000"]"#, "body"),
        (r#""k\u0000":1"#, "body"),
    ];
    for (fragment, field) in cases {
        let body = format!(
            r#"{{"event_type":"call_started","batch_id":1,"phone_number":"1",{fragment}}}"#
        );
        let err = validate_callback(body.as_bytes(), DEFAULT_ACCOUNT).expect_err(fragment);
        assert_eq!(err.field, field, "{fragment}");
        assert!(err.reason.contains("NUL"), "{fragment}: {err}");
        assert!(!err.to_string().contains('\0'));
    }
    // A raw NUL byte is not even JSON.
    let raw = b"{\"event_type\":\"call_started\0\"}";
    assert_eq!(
        validate_callback(raw, DEFAULT_ACCOUNT).unwrap_err().field,
        "body"
    );
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let head = r#"{"event_type":"call_started","batch_id":1,"phone_number":"1","custom_data":"#;
    let body = format!(r#"{head}{{"x":{arrays}}}}}"#);
    let err = validate_callback(body.as_bytes(), DEFAULT_ACCOUNT).unwrap_err();
    assert_eq!(err.field, "body");
    assert!(err.reason.contains("recursion limit"), "{err}");
    let unclosed = "[".repeat(depth);
    assert_eq!(
        validate_callback(unclosed.as_bytes(), DEFAULT_ACCOUNT)
            .unwrap_err()
            .field,
        "body"
    );
}

#[test]
fn missing_accountcode_without_a_configured_default_is_refused() {
    let payload = without(seed_payload(), "accountcode");
    let err = validate_callback(payload.to_string().as_bytes(), " ").unwrap_err();
    assert_eq!(err.field, "accountcode");
    let too_long_default = "A".repeat(101);
    let err = validate_callback(payload.to_string().as_bytes(), &too_long_default).unwrap_err();
    assert_eq!(err.to_string(), "accountcode: longer than 100 characters");
}

#[test]
fn errors_never_echo_the_phone_number() {
    let payload = with(
        seed_payload(),
        "phone_number",
        json!("987654321098765432101"),
    );
    let err = validate(&payload).unwrap_err();
    assert!(!err.to_string().contains("98765"), "{err}");
}

#[test]
fn parse_callback_keeps_the_payload_as_sent() {
    let mut payload = seed_payload();
    payload["extra_field"] = json!({"kept": true});
    let validated = parse_callback(payload.to_string().as_bytes(), DEFAULT_ACCOUNT).unwrap();
    assert_eq!(validated.payload, payload);
    assert_eq!(validated.event, validate(&payload).unwrap());
}

#[test]
fn masked_phone_shows_only_the_last_four_characters() {
    let event = validate(&seed_payload()).unwrap();
    assert_eq!(event.masked_phone(), "***3210");
    assert_eq!(mask_phone("1234"), "****");
    assert_eq!(mask_phone("+4915112345678"), "***5678");
    assert_eq!(event.loggable_call_id(), "unique_call_id");
    let derived = validate(&without(seed_payload(), "call_id")).unwrap();
    assert_eq!(derived.loggable_call_id(), "12345:***3210");
}

#[test]
fn event_serialises_and_deserialises_unchanged() {
    let event = validate(&with(
        seed_payload(),
        "start_time",
        json!("2024-01-01T10:00:00.123456Z"),
    ))
    .unwrap();
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["call_status"], "completed");
    assert_eq!(json["event_type"], "call_status_update");
    assert_eq!(json["start_time"], "2024-01-01T10:00:00.123456");
    let back: CallbackEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}
