//! The AMQP message envelope: round trips, the wire format, versions and event ids.

use callbridge_types::envelope::{
    CURRENT_SCHEMA_VERSION, Envelope, EnvelopeError, MAX_WEBHOOK_ID_LEN, event_id_for,
};
use callbridge_types::event::parse_callback;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

const SEED_BODY: &str = r#"{"event_type":"call_status_update","accountcode":"YOUR_ACCOUNT_CODE","batch_id":12345,"call_id":"unique_call_id","phone_number":"9876543210","call_status":"completed","disposition":"answered","duration":120,"start_time":"2024-01-01T10:00:00Z","end_time":"2024-01-01T10:02:00Z","recording_url":"https://recordings.example.com/call_123.wav","custom_data":{"customer_id":"CUST001","campaign_id":"CAMP001"},"server_code":"server1","error_message":null}"#;

/// A v1 envelope as producers of version 1 write it. Never edit it: consumers must go
/// on reading what was once written.
const V1_GOLDEN: &str = include_str!("fixtures/envelope_v1.json");

fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 10, 2, 1).unwrap() + chrono::Duration::nanoseconds(123_456_789)
}

fn seed_envelope() -> Envelope {
    let validated = parse_callback(SEED_BODY.as_bytes(), "ACC").unwrap();
    Envelope::new(
        event_id_for(None, SEED_BODY.as_bytes()),
        received_at(),
        validated.event,
        &validated.payload,
    )
}

#[test]
fn encode_then_decode_gives_the_same_envelope() {
    let envelope = seed_envelope();
    assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
}

#[test]
fn wire_format_has_version_rfc3339_micros_event_and_original_payload() {
    let encoded: Value = serde_json::from_slice(&seed_envelope().encode()).unwrap();
    assert_eq!(encoded["schema_version"], CURRENT_SCHEMA_VERSION);
    assert_eq!(encoded["received_at"], "2024-01-01T10:02:01.123456Z");
    assert_eq!(encoded["event"]["call_status"], "completed");
    assert_eq!(encoded["event"]["start_time"], "2024-01-01T10:00:00");
    let original: Value = serde_json::from_str(SEED_BODY).unwrap();
    assert_eq!(encoded["payload"], original);
}

#[test]
fn received_at_keeps_microseconds() {
    let envelope = seed_envelope();
    assert_eq!(envelope.received_at.timestamp_subsec_nanos(), 123_456_000);
}

#[test]
fn golden_v1_message_still_decodes_and_reencodes_identically() {
    let decoded = Envelope::decode(V1_GOLDEN.as_bytes()).unwrap();
    assert_eq!(decoded, seed_envelope());
    let reencoded: Value = serde_json::from_slice(&decoded.encode()).unwrap();
    let golden: Value = serde_json::from_str(V1_GOLDEN).unwrap();
    assert_eq!(reencoded, golden);
}

#[test]
fn a_status_less_event_round_trips_and_leaves_call_status_out_of_the_wire() {
    let body = r#"{"event_type":"call_parked","call_id":"c-1","phone_number":"9876543210"}"#;
    let validated = parse_callback(body.as_bytes(), "ACC").unwrap();
    assert_eq!(validated.event.call_status, None);
    let envelope = Envelope::new(
        event_id_for(None, body.as_bytes()),
        received_at(),
        validated.event,
        &validated.payload,
    );
    let encoded = envelope.encode();
    let wire: Value = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(wire["schema_version"], 1, "an additive change within v1");
    assert!(wire["event"].get("call_status").is_none(), "{wire}");
    assert_eq!(Envelope::decode(&encoded).unwrap(), envelope);
}

#[test]
fn unknown_versions_are_refused_with_a_typed_error() {
    for version in [0, 2, 99] {
        let mut message: Value = serde_json::from_str(V1_GOLDEN).unwrap();
        message["schema_version"] = json!(version);
        let err = Envelope::decode(message.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::UnsupportedVersion { found } if found == version),
            "{err}"
        );
    }
}

#[test]
fn missing_version_or_broken_body_is_malformed() {
    let mut message: Value = serde_json::from_str(V1_GOLDEN).unwrap();
    message.as_object_mut().unwrap().remove("schema_version");
    for body in [
        message.to_string().into_bytes(),
        b"not json".to_vec(),
        br#"{"schema_version":1,"event_id":"x"}"#.to_vec(),
    ] {
        let err = Envelope::decode(&body).unwrap_err();
        assert!(matches!(err, EnvelopeError::Malformed(_)), "{err}");
    }
}

#[test]
fn a_malformed_envelope_is_described_without_the_values_it_holds() {
    // A phone number where a number or an object belongs: the reason (which goes into
    // the dead-letter header and the logs) must not repeat it.
    let phone = "9876543210";
    let golden: Value = serde_json::from_str(V1_GOLDEN).unwrap();
    let mut wrong_types = Vec::new();
    for (path, value) in [
        ("/schema_version", json!(phone)),
        ("/event_id", json!(9_876_543_210_u64)),
        ("/received_at", json!(phone)),
        ("/event", json!(phone)),
        ("/event/batch_id", json!(phone)),
        ("/event/phone_number", json!({ "number": phone })),
        ("/event/duration", json!(phone)),
        ("/event/start_time", json!(phone)),
    ] {
        let mut message = golden.clone();
        *message
            .pointer_mut(path)
            .unwrap_or_else(|| panic!("{path} in the golden envelope")) = value;
        wrong_types.push((path, message.to_string()));
    }
    wrong_types.push((
        "truncated",
        format!("{{\"schema_version\":1,\"event_id\":\"{phone}"),
    ));
    wrong_types.push((
        "syntax",
        format!("{{\"schema_version\":1,\"event_id\":{phone}x}}"),
    ));

    for (case, body) in wrong_types {
        let err = Envelope::decode(body.as_bytes()).unwrap_err();
        let reason = err.to_string();
        assert!(
            matches!(err, EnvelopeError::Malformed(_)),
            "{case}: {reason}"
        );
        assert!(
            !reason.contains(phone),
            "{case}: the reason repeats the value: {reason}"
        );
        assert!(reason.contains(" at line 1 column "), "{case}: {reason}");
    }

    // What was expected and a missing field's name are kept: they come from our types.
    let mut message = golden.clone();
    message.as_object_mut().unwrap().remove("event_id");
    let reason = Envelope::decode(message.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(reason.contains("missing field `event_id`"), "{reason}");
}

#[test]
fn event_id_is_the_webhook_id_when_given() {
    assert_eq!(
        event_id_for(Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"), b"{}"),
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    );
    assert_eq!(event_id_for(Some(" msg_1 "), b"{}"), "msg_1");
}

#[test]
fn event_id_without_webhook_id_is_the_sha256_of_the_raw_body() {
    // printf '{}' | sha256sum
    let expected = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    assert_eq!(event_id_for(None, b"{}"), expected);
    assert_eq!(event_id_for(Some("  "), b"{}"), expected);
    assert_ne!(
        event_id_for(None, b"{} "),
        expected,
        "the raw bytes, not the parsed JSON"
    );
}

#[test]
fn unusable_webhook_ids_are_hashed_stably() {
    let long = "m".repeat(MAX_WEBHOOK_ID_LEN + 1);
    for id in [long.as_str(), "id with spaces", "ünicode"] {
        let event_id = event_id_for(Some(id), b"{}");
        assert!(event_id.starts_with("webhook-id-sha256:"), "{event_id}");
        assert!(event_id.len() <= 255);
        assert_eq!(
            event_id,
            event_id_for(Some(id), b"other body"),
            "depends on the id only"
        );
    }
    let longest = "m".repeat(MAX_WEBHOOK_ID_LEN);
    assert_eq!(event_id_for(Some(&longest), b"{}"), longest);
}

#[test]
fn encoding_the_parts_gives_the_body_of_the_envelope_they_make() {
    let validated = parse_callback(SEED_BODY.as_bytes(), "ACC").unwrap();
    let event_id = event_id_for(None, SEED_BODY.as_bytes());
    let from_parts = Envelope::encode_parts(
        &event_id,
        received_at(),
        &validated.event,
        &serde_json::value::to_raw_value(&validated.payload).unwrap(),
    );
    assert_eq!(from_parts, seed_envelope().encode());
    assert_eq!(Envelope::decode(&from_parts).unwrap(), seed_envelope());
}

/// The ingress embeds the body as sent: its bytes are the envelope's payload, byte for
/// byte (spacing, key order, a number no float holds), and the body still decodes into
/// the envelope the parsed payload makes.
#[test]
fn encoding_the_parts_embeds_the_raw_body_byte_for_byte() {
    let raw = r#"{ "event_type":"call_completed", "batch_id":12,"call_id":"raw-1",
        "phone_number":"9876543210","call_status":"completed","cost":123456789012345678901234567890 }"#;
    let validated = parse_callback(raw.as_bytes(), "ACC").unwrap();
    let payload: &serde_json::value::RawValue = serde_json::from_slice(raw.as_bytes()).unwrap();
    let body = Envelope::encode_parts("raw-1-event", received_at(), &validated.event, payload);
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(text.contains(&format!(r#""payload":{raw}"#)), "{text}");
    let decoded = Envelope::decode(&body).unwrap();
    assert_eq!(decoded.payload.get(), raw);
    assert_eq!(decoded.event, validated.event);
    assert_eq!(decoded.event_id, "raw-1-event");
}
