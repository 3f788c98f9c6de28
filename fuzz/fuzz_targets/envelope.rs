//! The AMQP message envelope: decoding arbitrary message bodies, the
//! encode → decode round trip for every callback the ingress accepts, and event ids
//! made from arbitrary `webhook-id` headers.
#![no_main]

use callbridge_fuzz::assert_storable;
use callbridge_types::envelope::{Envelope, MAX_WEBHOOK_ID_LEN, event_id_for};
use callbridge_types::event::parse_callback;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

/// An AMQP `message_id` is a short string: at most 255 bytes.
const MESSAGE_ID_BYTES: usize = 255;

fuzz_target!(|bytes: &[u8]| {
    decoded_envelopes_reach_a_fixed_point(bytes);
    accepted_callbacks_round_trip_exactly(bytes);
    event_ids_are_usable_message_ids(bytes);
});

/// Whatever a consumer manages to decode, re-encoding it is lossless from then on:
/// the persister's dead-letter and replay paths re-publish what they decoded.
fn decoded_envelopes_reach_a_fixed_point(bytes: &[u8]) {
    let Ok(decoded) = Envelope::decode(bytes) else {
        return;
    };
    let once = Envelope::decode(&decoded.encode()).expect("an encoded envelope decodes");
    let twice = Envelope::decode(&once.encode()).expect("an encoded envelope decodes");
    assert_eq!(once, twice, "encode → decode is not stable");
    assert_eq!(once.event_id, decoded.event_id);
    assert_eq!(once.event, decoded.event);
    // The payload travels as JSON text: passed on verbatim, never rewritten.
    assert_eq!(once.payload.get(), decoded.payload.get());
}

/// The message the ingress would publish for these bytes decodes to itself.
fn accepted_callbacks_round_trip_exactly(bytes: &[u8]) {
    let Ok(validated) = parse_callback(bytes, "ACME") else {
        return;
    };
    // A fixed, nanosecond-precise receipt time: `Envelope::new` must reduce it to what
    // the wire keeps.
    let received_at = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).unwrap();
    let envelope = Envelope::new(
        event_id_for(None, bytes),
        received_at,
        validated.event,
        &validated.payload,
    );
    let decoded = Envelope::decode(&envelope.encode()).expect("the ingress's message decodes");
    assert_eq!(decoded, envelope);
    assert_storable(&decoded.event);
}

fn event_ids_are_usable_message_ids(bytes: &[u8]) {
    let webhook_id = String::from_utf8_lossy(bytes);
    let id = event_id_for(Some(&webhook_id), bytes);
    assert!(!id.is_empty());
    assert!(
        id.len() <= MESSAGE_ID_BYTES,
        "event id of {} bytes",
        id.len()
    );
    assert!(
        id.bytes().all(|byte| byte.is_ascii_graphic()),
        "event id holds a byte an AMQP short string should not carry"
    );
    let trimmed = webhook_id.trim();
    if !trimmed.is_empty() {
        assert_eq!(
            id,
            event_id_for(Some(&webhook_id), b"another body"),
            "a webhook-id wins over the body"
        );
    }
    if !trimmed.is_empty()
        && trimmed.len() <= MAX_WEBHOOK_ID_LEN
        && trimmed.bytes().all(|byte| byte.is_ascii_graphic())
    {
        assert_eq!(id, trimmed, "a usable webhook-id is the event id as sent");
    }
    let from_body = event_id_for(None, bytes);
    assert_eq!(from_body.len(), 64);
    assert_eq!(
        from_body,
        event_id_for(Some("  "), bytes),
        "a blank webhook-id is absent"
    );
}
