//! The AMQP message body: a schema version, the event id, when the ingress
//! received the callback, the validated and normalised event, and the original payload.
//!
//! Versioning: producers write [`CURRENT_SCHEMA_VERSION`]; [`Envelope::decode`] reads
//! the current version and the one before it, so producers and consumers can be
//! upgraded one at a time. Version 1 is the first, so today there is no previous one to
//! read. When version 2 is introduced: its wire struct becomes `current`, the v1 struct
//! stays as a module with an `upgrade` into [`Envelope`], `decode` dispatches
//! `2 => current`, `1 => v1 + upgrade`, and v1 is dropped one release after every
//! producer writes v2. A message without a version, or with one outside that window
//! (a hypothetical v0, or a v3 from a newer producer), is refused with a typed error
//! rather than guessed at; the persister dead-letters it, and `callbridge dlq replay`
//! brings it back once a consumer that reads it runs.
//!
//! A change that every reader of the version already accepts needs no new version.
//! Version 1 grew one such change: `event.call_status` is left out for a status-less
//! event (a `call_status_update` or unknown event type without `call_status`, accepted
//! because an unknown event is kept, not refused). Every message that has a status is
//! written exactly as before, so old and new consumers read it alike. A consumer built
//! before the change refuses a status-less message as malformed and dead-letters it — only that
//! message, which its own ingress would have refused with 400 — and `callbridge dlq
//! replay` brings it back once the consumers are upgraded. Upgrade persisters before
//! ingresses and nothing is dead-lettered at all.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::event::CallbackEvent;

/// The version producers write.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;
/// The oldest version consumers still read (current − 1 once a previous version exists).
pub const OLDEST_READABLE_SCHEMA_VERSION: u32 = 1;

/// A `webhook-id` longer than this, or holding anything but visible ASCII, is hashed
/// rather than used as is: the event id is the AMQP `message_id`, a short string of at
/// most 255 bytes.
pub const MAX_WEBHOOK_ID_LEN: usize = 200;

/// The event id of a callback: the sender's `webhook-id` when it gave one (so the
/// sender's own retries share it), else the hex SHA-256 of the raw body (so a
/// re-delivered identical callback keeps its id).
///
/// A `webhook-id` unusable as an AMQP `message_id` (see [`MAX_WEBHOOK_ID_LEN`]) becomes
/// `webhook-id-sha256:<hex of its SHA-256>`, still stable across retries.
pub fn event_id_for(webhook_id: Option<&str>, raw_body: &[u8]) -> String {
    match webhook_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) if id.len() <= MAX_WEBHOOK_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        Some(id) => format!(
            "webhook-id-sha256:{}",
            hex::encode(Sha256::digest(id.as_bytes()))
        ),
        None => hex::encode(Sha256::digest(raw_body)),
    }
}

/// One message on `callbridge.callbacks` / `callbridge.persist`.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The version this envelope was written in ([`CURRENT_SCHEMA_VERSION`] for one
    /// made here). [`Envelope::encode`] always writes the current version: a decoded
    /// older envelope is upgraded on read.
    pub schema_version: u32,
    pub event_id: String,
    /// When the ingress received the callback; microsecond precision.
    pub received_at: DateTime<Utc>,
    pub event: CallbackEvent,
    /// The callback's JSON as sent, unknown fields included, kept as JSON text: the
    /// persister only passes it on to Postgres, so reading it never builds a tree of it
    /// (that was a tenth of the persister's CPU, with dropping the tree again).
    pub payload: Box<RawValue>,
}

/// Equal when every field is, the payloads as JSON values (their texts may differ in
/// spacing or key order).
impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        let payload_value = |payload: &RawValue| serde_json::from_str::<Value>(payload.get()).ok();
        self.schema_version == other.schema_version
            && self.event_id == other.event_id
            && self.received_at == other.received_at
            && self.event == other.event
            && payload_value(&self.payload) == payload_value(&other.payload)
    }
}

/// Why a message body is not a readable envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The reason names the shape that was expected and where, never the value found:
    /// it travels in the dead-letter header and in logs, and a value can be a phone
    /// number or anything else a caller sent.
    #[error("envelope is not valid JSON of its version: {0}")]
    Malformed(String),
    #[error(
        "envelope schema version {found} is not readable here (this consumer reads \
         {OLDEST_READABLE_SCHEMA_VERSION} to {CURRENT_SCHEMA_VERSION})"
    )]
    UnsupportedVersion { found: u32 },
}

impl From<serde_json::Error> for EnvelopeError {
    fn from(error: serde_json::Error) -> Self {
        EnvelopeError::Malformed(describe_without_values(&error))
    }
}

/// serde_json's message without the offending value: `invalid type: string "98765…",
/// expected u32 at line 1 column 40` becomes `wrong type or value (expected u32) at line 1
/// column 40`. What serde says it expected, and a missing field's name, come from this
/// crate's own types, so they are kept.
fn describe_without_values(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let position = format!("at line {} column {}", error.line(), error.column());
    let message = error.to_string();
    let message = message
        .strip_suffix(&format!(" {position}"))
        .unwrap_or(&message);
    let what = match error.classify() {
        Category::Io => "unreadable".to_owned(),
        Category::Eof => "truncated".to_owned(),
        Category::Syntax => "not JSON".to_owned(),
        Category::Data if message.starts_with("missing field ") => message.to_owned(),
        Category::Data => match message.rsplit_once(", expected ") {
            Some((_, expected)) => format!("wrong type or value (expected {expected})"),
            None => "wrong type or value".to_owned(),
        },
    };
    format!("{what} {position}")
}

impl Envelope {
    /// A current-version envelope; `received_at` is truncated to microseconds, the
    /// precision the wire format and Postgres keep.
    pub fn new(
        event_id: String,
        received_at: DateTime<Utc>,
        event: CallbackEvent,
        payload: &Value,
    ) -> Self {
        Envelope {
            schema_version: CURRENT_SCHEMA_VERSION,
            event_id,
            received_at: received_at.trunc_subsecs(6),
            event,
            // A `Value` has string keys and finite numbers only: it always serialises.
            payload: serde_json::value::to_raw_value(payload)
                .expect("a JSON value always serialises"),
        }
    }

    /// The JSON message body, in the current version.
    pub fn encode(&self) -> Vec<u8> {
        encode_current(
            &self.event_id,
            self.received_at,
            &self.event,
            &*self.payload,
        )
    }

    /// The message body [`Envelope::new`] followed by [`Envelope::encode`] would give,
    /// written straight from the parts: what the ingress publishes. The payload is the
    /// callback's body as sent (borrowed, e.g. `serde_json::from_slice::<&RawValue>` of
    /// the bytes the validation read), embedded byte for byte: nothing is copied into an
    /// envelope first, and no parsed tree is written out again.
    pub fn encode_parts(
        event_id: &str,
        received_at: DateTime<Utc>,
        event: &CallbackEvent,
        payload: &RawValue,
    ) -> Vec<u8> {
        encode_current(event_id, received_at, event, payload)
    }

    /// Reads a message body of any readable version (see the module docs).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        // Nearly every message is of the current version: read it in one pass, and probe
        // the version first only when that fails (a second pass over the body otherwise).
        if let Ok(envelope) = current::decode(bytes)
            && envelope.schema_version == CURRENT_SCHEMA_VERSION
        {
            return Ok(envelope);
        }
        #[derive(Deserialize)]
        struct VersionProbe {
            schema_version: u32,
        }
        let probe: VersionProbe = serde_json::from_slice(bytes)?;
        match probe.schema_version {
            CURRENT_SCHEMA_VERSION => current::decode(bytes),
            found => Err(EnvelopeError::UnsupportedVersion { found }),
        }
    }
}

/// Writes a current-version body; `received_at` with microseconds (RFC 3339 output
/// truncates what is finer, as [`Envelope::new`] does).
fn encode_current<P: Serialize + ?Sized>(
    event_id: &str,
    received_at: DateTime<Utc>,
    event: &CallbackEvent,
    payload: &P,
) -> Vec<u8> {
    let wire = current::Wire {
        schema_version: CURRENT_SCHEMA_VERSION,
        event_id,
        received_at: received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        event,
        payload,
    };
    // Serialising plain data with string keys into memory cannot fail.
    serde_json::to_vec(&wire).expect("an envelope always serialises")
}

/// The wire layout of version 1 (the current version).
mod current {
    use super::*;

    #[derive(Serialize)]
    pub(super) struct Wire<'a, P: ?Sized> {
        pub schema_version: u32,
        pub event_id: &'a str,
        /// RFC 3339, UTC, microseconds: `2024-01-01T10:00:00.123456Z`.
        pub received_at: String,
        pub event: &'a CallbackEvent,
        /// The payload as JSON text ([`RawValue`]).
        pub payload: &'a P,
    }

    #[derive(Deserialize)]
    struct OwnedWire {
        schema_version: u32,
        event_id: String,
        received_at: DateTime<Utc>,
        event: CallbackEvent,
        payload: Box<RawValue>,
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let wire: OwnedWire = serde_json::from_slice(bytes)?;
        Ok(Envelope {
            schema_version: wire.schema_version,
            event_id: wire.event_id,
            received_at: wire.received_at,
            event: wire.event,
            payload: wire.payload,
        })
    }
}
