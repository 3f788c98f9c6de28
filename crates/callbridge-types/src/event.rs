//! Callback events: their types, the validated and normalised event, and the
//! validation rules of SPEC §4.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
