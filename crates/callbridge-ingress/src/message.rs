//! The AMQP message one accepted callback becomes.

use callbridge_types::envelope::{CURRENT_SCHEMA_VERSION, Envelope, event_id_for};
use callbridge_types::event::CallbackEvent;
use callbridge_types::topology::{
    CALLBACKS_EXCHANGE, CONTENT_TYPE_JSON, SCHEMA_VERSION_HEADER, callback_routing_key,
};
use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::value::RawValue;

/// Header with the receipt time at microsecond precision (RFC 3339), for the
/// persister's end-to-end latency; the AMQP `timestamp` property only holds seconds.
pub const RECEIVED_AT_HEADER: &str = "x-callbridge-received-at";
/// Header with the event type, so a consumer can filter without parsing the body.
pub const EVENT_TYPE_HEADER: &str = "x-callbridge-event-type";

/// AMQP `delivery_mode` 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// A callback ready to publish.
#[derive(Debug, Clone)]
pub struct CallbackMessage {
    pub event_id: String,
    pub routing_key: String,
    /// The encoded [`Envelope`].
    pub body: Vec<u8>,
    received_at: DateTime<Utc>,
    event_type: String,
}

impl CallbackMessage {
    /// The envelope of a validated callback: `raw_body` is the body
    /// [`parse_callback`](callbridge_types::event::parse_callback) accepted and `event`
    /// what it made of it. The event id is the `webhook-id` when the sender gave one, else
    /// the SHA-256 of the raw body, so a re-delivered callback keeps its id and the
    /// persister deduplicates it.
    ///
    /// The envelope's payload is `raw_body` itself, embedded as sent: writing the parsed
    /// tree out again cost a copy of every string and a second formatting pass per
    /// callback, and lost the digits of a number no float holds.
    pub fn new(
        webhook_id: Option<&str>,
        raw_body: &[u8],
        received_at: DateTime<Utc>,
        event: CallbackEvent,
    ) -> Self {
        let event_id = event_id_for(webhook_id, raw_body);
        let routing_key = callback_routing_key(&event.event_type);
        let event_type = event.event_type.as_str().to_owned();
        // parse_callback read these very bytes as one JSON object; the same grammar reads
        // them as a raw value (a borrowed slice of them, surrounding whitespace left out).
        let payload: &RawValue = serde_json::from_slice(raw_body)
            .expect("a body parse_callback accepted is one JSON value");
        let body = Envelope::encode_parts(&event_id, received_at, &event, payload);
        Self {
            event_id,
            routing_key,
            body,
            // Written with microseconds, as in the body.
            received_at,
            event_type,
        }
    }

    pub fn exchange(&self) -> &'static str {
        CALLBACKS_EXCHANGE
    }

    /// Properties and headers (persistent, JSON, event id as `message_id`, received-at
    /// timestamp, schema version), except the trace context, which the publisher
    /// adds inside its own span.
    pub fn properties(&self) -> BasicProperties {
        self.properties_without_headers()
            .with_headers(self.headers())
    }

    /// The headers of [`CallbackMessage::properties`]: the publisher adds the trace
    /// context to them before they go into the properties, so the table is built once.
    pub fn headers(&self) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(
            SCHEMA_VERSION_HEADER.into(),
            AMQPValue::LongUInt(CURRENT_SCHEMA_VERSION),
        );
        headers.insert(
            RECEIVED_AT_HEADER.into(),
            AMQPValue::LongString(
                self.received_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
                    .into(),
            ),
        );
        headers.insert(
            EVENT_TYPE_HEADER.into(),
            AMQPValue::LongString(self.event_type.as_str().into()),
        );
        headers
    }

    /// [`CallbackMessage::properties`] without the headers.
    pub fn properties_without_headers(&self) -> BasicProperties {
        BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE_JSON.into())
            // event_id_for keeps ids within a short string's 255 bytes.
            .with_message_id(self.event_id.as_str().into())
            .with_timestamp(self.received_at.timestamp().max(0) as u64)
    }
}
