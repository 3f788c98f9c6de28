//! AMQP names (callbacks, the persist and dead-letter queues, outcomes), declared once.
//! The options each is declared with live in `callbridge-runtime::amqp::declare_topology`.

use crate::event::EventType;
use crate::status::CallStatus;

/// Topic exchange the ingress publishes validated callbacks to.
pub const CALLBACKS_EXCHANGE: &str = "callbridge.callbacks";
/// Quorum queue the persister consumes; bound to [`CALLBACKS_EXCHANGE`] with
/// [`ALL_CALLBACKS_BINDING`].
pub const PERSIST_QUEUE: &str = "callbridge.persist";
/// Binding pattern that routes every callback to [`PERSIST_QUEUE`].
pub const ALL_CALLBACKS_BINDING: &str = "callback.#";
/// Exchange poison messages are moved to.
pub const DEAD_EXCHANGE: &str = "callbridge.dead";
/// Queue holding poison messages for `callbridge dlq list|replay|purge`.
pub const DEAD_QUEUE: &str = "callbridge.dead";
/// Topic exchange terminal call outcomes are published to (the seed's business hooks).
pub const OUTCOMES_EXCHANGE: &str = "callbridge.outcomes";

/// Header carrying why the persister dead-lettered a message.
pub const ERROR_HEADER: &str = "x-callbridge-error";
/// Header carrying the envelope's schema version, so a consumer can route or refuse a
/// message without parsing its body.
pub const SCHEMA_VERSION_HEADER: &str = "x-callbridge-schema-version";
/// Content type of every message callbridge publishes.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The word a free-form name contributes to a topic routing key.
///
/// Topic routing keys are dot-separated words matched by `*`/`#`, and an AMQP short
/// string is at most 255 bytes, so only a name made of `[a-z0-9_]` (at most 100 bytes)
/// is used as is; anything else becomes `other`, keeping bindings like `callback.*`
/// meaningful. The full name is still in the message body.
fn routing_word(name: &str) -> &str {
    let is_plain = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if is_plain { name } else { "other" }
}

/// `callback.<event_type>`.
pub fn callback_routing_key(event_type: &EventType) -> String {
    format!("callback.{}", routing_word(event_type.as_str()))
}

/// `outcome.<status>`.
pub fn outcome_routing_key(status: &CallStatus) -> String {
    format!("outcome.{}", routing_word(status.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_name_the_event_type_and_status() {
        assert_eq!(
            callback_routing_key(&EventType::CallNoAnswer),
            "callback.call_no_answer"
        );
        assert_eq!(
            callback_routing_key(&EventType::Other("call_transferred".into())),
            "callback.call_transferred"
        );
        assert_eq!(
            outcome_routing_key(&CallStatus::Completed),
            "outcome.completed"
        );
        assert_eq!(
            outcome_routing_key(&CallStatus::NoAnswer),
            "outcome.no_answer"
        );
    }

    #[test]
    fn names_that_would_break_topic_matching_route_as_other() {
        for odd in ["a.b", "x#", "ünïcode", "*", &"a".repeat(101)] {
            assert_eq!(
                callback_routing_key(&EventType::Other(odd.to_owned())),
                "callback.other"
            );
        }
        assert_eq!(
            outcome_routing_key(&CallStatus::Other("a.b".into())),
            "outcome.other"
        );
    }
}
