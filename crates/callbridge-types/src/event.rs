//! Callback events: their types, the validated and normalised event, and the
//! validation rules of `POST /callback` (listed on [`parse_callback`]).

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDateTime, SubsecRound};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::status::{CallStatus, normalise};

/// The `event_type` of a callback: the seed's seven, its example `call_status_update`,
/// and any other name, kept (normalised) rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    CallStarted,
    CallAnswered,
    CallCompleted,
    CallFailed,
    CallBusy,
    CallNoAnswer,
    CallTimeout,
    CallStatusUpdate,
    /// An event type outside the vocabulary, normalised (never empty).
    Other(String),
}

impl EventType {
    /// Every known event type.
    pub const KNOWN: [EventType; 8] = [
        EventType::CallStarted,
        EventType::CallAnswered,
        EventType::CallCompleted,
        EventType::CallFailed,
        EventType::CallBusy,
        EventType::CallNoAnswer,
        EventType::CallTimeout,
        EventType::CallStatusUpdate,
    ];

    /// Normalises `raw` like a status (lower case, spaces and hyphens to `_`) and maps
    /// it onto the vocabulary. `None` when nothing is left.
    pub fn parse(raw: &str) -> Option<EventType> {
        let normalised = normalise(raw);
        let event_type = match normalised.as_str() {
            "" => return None,
            "call_started" => EventType::CallStarted,
            "call_answered" => EventType::CallAnswered,
            "call_completed" => EventType::CallCompleted,
            "call_failed" => EventType::CallFailed,
            "call_busy" => EventType::CallBusy,
            "call_no_answer" => EventType::CallNoAnswer,
            "call_timeout" => EventType::CallTimeout,
            "call_status_update" => EventType::CallStatusUpdate,
            _ => EventType::Other(normalised),
        };
        Some(event_type)
    }

    /// The stored spelling.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::CallStarted => "call_started",
            EventType::CallAnswered => "call_answered",
            EventType::CallCompleted => "call_completed",
            EventType::CallFailed => "call_failed",
            EventType::CallBusy => "call_busy",
            EventType::CallNoAnswer => "call_no_answer",
            EventType::CallTimeout => "call_timeout",
            EventType::CallStatusUpdate => "call_status_update",
            EventType::Other(name) => name,
        }
    }

    /// The call status an event of this type implies when it carries no `call_status`.
    /// `call_status_update` and unknown types imply none.
    pub fn implied_status(&self) -> Option<CallStatus> {
        match self {
            EventType::CallStarted => Some(CallStatus::Started),
            EventType::CallAnswered => Some(CallStatus::Answered),
            EventType::CallCompleted => Some(CallStatus::Completed),
            EventType::CallFailed => Some(CallStatus::Failed),
            EventType::CallBusy => Some(CallStatus::Busy),
            EventType::CallNoAnswer => Some(CallStatus::NoAnswer),
            EventType::CallTimeout => Some(CallStatus::Timeout),
            EventType::CallStatusUpdate | EventType::Other(_) => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        EventType::parse(&raw).ok_or_else(|| serde::de::Error::custom("empty event type"))
    }
}

/// Every field of the seed's callback payload, in the guide's order.
pub const SEED_FIELDS: [&str; 14] = [
    "event_type",
    "accountcode",
    "batch_id",
    "call_id",
    "phone_number",
    "call_status",
    "disposition",
    "duration",
    "start_time",
    "end_time",
    "recording_url",
    "custom_data",
    "server_code",
    "error_message",
];

/// Column sizes of the seed's `call_logs` (and of `call_events.event_type`), in
/// characters, as Postgres counts `VARCHAR(n)`.
pub mod limits {
    pub const CALL_ID_CHARS: usize = 255;
    pub const ACCOUNTCODE_CHARS: usize = 100;
    pub const PHONE_NUMBER_CHARS: usize = 20;
    pub const CALL_STATUS_CHARS: usize = 50;
    pub const DISPOSITION_CHARS: usize = 50;
    pub const SERVER_CODE_CHARS: usize = 100;
    /// `call_events.event_type` is ours; bounded so a sender cannot grow it without limit.
    pub const EVENT_TYPE_CHARS: usize = 100;
    /// Timestamps outside years 1–9999 are refused: no sender means them, and every
    /// `TIMESTAMP` consumer (Postgres, Python's `datetime`) handles this range.
    pub const MIN_YEAR: i32 = 1;
    pub const MAX_YEAR: i32 = 9999;
}

/// A callback after validation and normalisation: every field of the seed's payload,
/// typed as the `call_logs` columns store it, and guaranteed to fit them.
///
/// `Debug` shows the phone number; log [`CallbackEvent::masked_phone`] instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackEvent {
    pub event_type: EventType,
    /// Given, or the configured account code.
    pub accountcode: String,
    pub batch_id: Option<i32>,
    /// Given, or `"<batch_id>:<phone_number>"`.
    pub call_id: String,
    pub phone_number: String,
    /// Given (normalised), or implied by `event_type`. `None` only for a
    /// `call_status_update` or an unknown event type that carries none: such an event is
    /// kept in `call_events` but changes no `call_logs` row. Left out of the
    /// JSON when `None`, so every event with a status serialises as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_status: Option<CallStatus>,
    pub disposition: Option<String>,
    pub duration: Option<i32>,
    /// UTC, microsecond precision (what `TIMESTAMP` keeps).
    pub start_time: Option<NaiveDateTime>,
    /// UTC, microsecond precision (what `TIMESTAMP` keeps).
    pub end_time: Option<NaiveDateTime>,
    pub recording_url: Option<String>,
    pub custom_data: Option<Map<String, Value>>,
    pub server_code: Option<String>,
    pub error_message: Option<String>,
}

impl CallbackEvent {
    /// The phone number with all but its last four characters hidden, for logs.
    pub fn masked_phone(&self) -> String {
        mask_phone(&self.phone_number)
    }

    /// The call id as it may appear in logs and traces: a derived id
    /// (`<batch_id>:<phone_number>`) embeds the phone number, so that part is masked.
    pub fn loggable_call_id(&self) -> String {
        match self.batch_id {
            Some(batch_id) if self.call_id == derived_call_id(batch_id, &self.phone_number) => {
                derived_call_id(batch_id, &self.masked_phone())
            }
            _ => self.call_id.clone(),
        }
    }
}

/// `"<batch_id>:<phone_number>"`, the id of a call whose callback carries none.
pub fn derived_call_id(batch_id: i32, phone_number: &str) -> String {
    format!("{batch_id}:{phone_number}")
}

/// `***3210` for `9876543210`; a number of four characters or fewer is hidden whole.
pub fn mask_phone(phone_number: &str) -> String {
    let chars: Vec<char> = phone_number.chars().collect();
    if chars.len() <= 4 {
        return "****".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("***{tail}")
}

/// Why a callback was refused: the field (a top-level payload key, or `body`) and what
/// is wrong with it. Display (`phone_number: longer than 20 characters`) is the
/// ingress's 400 `detail`; it never repeats the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A validated callback together with the payload it came from, for the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCallback {
    pub event: CallbackEvent,
    /// The parsed body as sent (free of NUL characters, so storable as JSONB).
    pub payload: Value,
}

/// Validates and normalises a raw callback body; see [`parse_callback`] for the rules.
pub fn validate_callback(
    body: &[u8],
    default_accountcode: &str,
) -> Result<CallbackEvent, ValidationError> {
    parse_callback(body, default_accountcode).map(|validated| validated.event)
}

/// Validates and normalises a raw callback body, keeping the parsed payload.
///
/// Rules, in the order they are checked (the first failure is reported):
/// - the body is JSON (nesting deeper than serde_json's limit of 128 is an error, not a
///   stack overflow) and an object; no string or key anywhere holds a NUL character;
/// - `event_type`: a non-empty string, normalised like a status, at most 100 characters;
/// - `phone_number`: a non-empty string (trimmed), at most 20 characters;
/// - `batch_id`: an integer fitting `INTEGER`; `call_id`: at most 255 characters,
///   derived as `"<batch_id>:<phone_number>"` when absent or blank (then `batch_id` is
///   required);
/// - `accountcode`: at most 100 characters; absent or blank takes `default_accountcode`,
///   and is an error when that is blank too;
/// - `call_status`: normalised (lower case, spaces and hyphens to `_`), at most 50
///   characters; absent or blank takes the status `event_type` implies. A
///   `call_status_update` or unknown event type implies none, so without one it has no
///   status (`None`): it is still accepted (kept in `call_events`, not
///   rejected) and changes `call_logs` only through a status it carries;
/// - `disposition` ≤ 50 and `server_code` ≤ 100 characters, `recording_url` and
///   `error_message` any length: strings, kept as sent;
/// - `duration`: an integer, 0 to `i32::MAX`;
/// - `start_time`/`end_time`: RFC 3339 (converted to UTC) or naive ISO 8601
///   (`2024-01-01T10:00:00`, `T` or space, optional fraction; taken as UTC), years
///   1–9999, truncated to microseconds; a blank string counts as absent;
/// - `custom_data`: a JSON object or null (the column is JSONB and every consumer reads
///   it as key/value data, so arrays and scalars are refused).
///
/// Integers may be JSON numbers or strings holding one (`"12345"`), since loosely
/// typed senders often quote them; a number with a fraction (`12.5`) is refused, an
/// integral one (`120.0`) accepted. `null` always means the same as an absent field.
/// Unknown fields are allowed and stay in the payload.
pub fn parse_callback(
    body: &[u8],
    default_accountcode: &str,
) -> Result<ValidatedCallback, ValidationError> {
    let payload: Value = serde_json::from_slice(body)
        .map_err(|err| ValidationError::new("body", format!("not valid JSON ({err})")))?;
    let Value::Object(object) = &payload else {
        return Err(ValidationError::new("body", "must be a JSON object"));
    };
    reject_nul(object)?;
    let fields = Fields(object);

    let event_type = fields
        .string("event_type", Some(limits::EVENT_TYPE_CHARS))?
        .ok_or_else(|| ValidationError::new("event_type", "missing"))?;
    let event_type = EventType::parse(&event_type)
        .ok_or_else(|| ValidationError::new("event_type", "must not be empty"))?;
    check_length("event_type", event_type.as_str(), limits::EVENT_TYPE_CHARS)?;

    let phone_number = fields
        .trimmed_string("phone_number", limits::PHONE_NUMBER_CHARS)?
        .ok_or_else(|| ValidationError::new("phone_number", "missing or blank"))?;

    let batch_id = fields.integer("batch_id", i64::from(i32::MIN))?;
    let call_id = match fields.trimmed_string("call_id", limits::CALL_ID_CHARS)? {
        Some(call_id) => call_id,
        None => {
            let batch_id = batch_id.ok_or_else(|| {
                ValidationError::new("batch_id", "missing, and needed to derive call_id")
            })?;
            derived_call_id(batch_id, &phone_number)
        }
    };

    let accountcode = match fields.trimmed_string("accountcode", limits::ACCOUNTCODE_CHARS)? {
        Some(accountcode) => accountcode,
        None => {
            let default = default_accountcode.trim();
            if default.is_empty() {
                return Err(ValidationError::new(
                    "accountcode",
                    "missing, and no default account code is configured",
                ));
            }
            check_length("accountcode", default, limits::ACCOUNTCODE_CHARS)?;
            default.to_owned()
        }
    };

    let given_status = fields
        .string("call_status", None)?
        .and_then(|raw| CallStatus::parse(&raw));
    let call_status = match given_status {
        Some(status) => {
            check_length("call_status", status.as_str(), limits::CALL_STATUS_CHARS)?;
            Some(status)
        }
        None => event_type.implied_status(),
    };

    let event = CallbackEvent {
        disposition: fields.string("disposition", Some(limits::DISPOSITION_CHARS))?,
        duration: fields.integer("duration", 0)?,
        start_time: fields.timestamp("start_time")?,
        end_time: fields.timestamp("end_time")?,
        recording_url: fields.string("recording_url", None)?,
        server_code: fields.string("server_code", Some(limits::SERVER_CODE_CHARS))?,
        error_message: fields.string("error_message", None)?,
        custom_data: fields.object("custom_data")?,
        event_type,
        accountcode,
        batch_id,
        call_id,
        phone_number,
        call_status,
    };
    Ok(ValidatedCallback { event, payload })
}

/// Postgres refuses U+0000 in `text` and `jsonb`, so it may not appear in any key or
/// string, however deep (the depth is bounded by serde_json's recursion limit).
fn reject_nul(object: &Map<String, Value>) -> Result<(), ValidationError> {
    fn holds_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(holds_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    if object.keys().any(|key| key.contains('\0')) {
        return Err(ValidationError::new(
            "body",
            "a field name contains a NUL character",
        ));
    }
    match object.iter().find(|(_, value)| holds_nul(value)) {
        Some((field, _)) => Err(ValidationError::new(
            nameable_field(field),
            "contains a NUL character",
        )),
        None => Ok(()),
    }
}

/// A field name fit to appear in an error answer: a plain identifier of a sensible length
/// (every field of the payload is one), else `body`. Any other key is a sender's free text
/// and is not repeated back.
fn nameable_field(key: &str) -> &str {
    const LONGEST_NAME: usize = 64;
    let plain = !key.is_empty()
        && key.len() <= LONGEST_NAME
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain { key } else { "body" }
}

fn check_length(field: &str, value: &str, max_chars: usize) -> Result<(), ValidationError> {
    if value.chars().count() > max_chars {
        return Err(ValidationError::new(
            field,
            format!("longer than {max_chars} characters"),
        ));
    }
    Ok(())
}

/// Typed access to the payload's top-level fields; `null` reads as absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|value| !value.is_null())
    }

    fn string(
        &self,
        field: &str,
        max_chars: Option<usize>,
    ) -> Result<Option<String>, ValidationError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if let Some(max_chars) = max_chars {
                    check_length(field, s, max_chars)?;
                }
                Ok(Some(s.clone()))
            }
            Some(_) => Err(ValidationError::new(field, "must be a string")),
        }
    }

    /// An identifier: trimmed, and blank counts as absent.
    fn trimmed_string(
        &self,
        field: &str,
        max_chars: usize,
    ) -> Result<Option<String>, ValidationError> {
        let Some(raw) = self.string(field, None)? else {
            return Ok(None);
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        check_length(field, trimmed, max_chars)?;
        Ok(Some(trimmed.to_owned()))
    }

    fn integer(&self, field: &str, min: i64) -> Result<Option<i32>, ValidationError> {
        let number = match self.get(field) {
            None => return Ok(None),
            Some(Value::Number(number)) => number.clone(),
            Some(Value::String(s)) => serde_json::from_str::<Number>(s.trim())
                .map_err(|_| ValidationError::new(field, "must be an integer"))?,
            Some(_) => return Err(ValidationError::new(field, "must be an integer")),
        };
        let out_of_range = || {
            let reason = if min == 0 {
                "must be between 0 and 2147483647".to_owned()
            } else {
                "out of range for INTEGER".to_owned()
            };
            ValidationError::new(field, reason)
        };
        let whole: i64 = if let Some(i) = number.as_i64() {
            i
        } else if number.is_u64() {
            return Err(out_of_range());
        } else {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float.fract() != 0.0 {
                return Err(ValidationError::new(field, "must be an integer"));
            }
            if !(i64::from(i32::MIN) as f64..=i64::from(i32::MAX) as f64).contains(&float) {
                return Err(out_of_range());
            }
            // In range and integral, so the cast is exact.
            float as i64
        };
        if whole < min {
            return Err(out_of_range());
        }
        i32::try_from(whole).map(Some).map_err(|_| out_of_range())
    }

    fn timestamp(&self, field: &str) -> Result<Option<NaiveDateTime>, ValidationError> {
        let Some(raw) = self.string(field, None)? else {
            return Ok(None);
        };
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        parse_timestamp(raw).map(Some).ok_or_else(|| {
            ValidationError::new(
                field,
                "must be an RFC 3339 or ISO 8601 timestamp between years 1 and 9999",
            )
        })
    }

    fn object(&self, field: &str) -> Result<Option<Map<String, Value>>, ValidationError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(_) => Err(ValidationError::new(field, "must be a JSON object or null")),
        }
    }
}

/// RFC 3339 (any offset, converted to UTC) or naive ISO 8601 (taken as UTC), truncated
/// to microseconds; `None` when neither or outside years 1–9999.
pub fn parse_timestamp(raw: &str) -> Option<NaiveDateTime> {
    let parsed = DateTime::parse_from_rfc3339(raw)
        .map(|at| at.naive_utc())
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    if !(limits::MIN_YEAR..=limits::MAX_YEAR).contains(&parsed.year()) {
        return None;
    }
    Some(parsed.trunc_subsecs(6))
}
