//! Dead letters: the callbacks the persister (or RabbitMQ's delivery limit) moved to
//! `callbridge.dead`, why, and putting them back. `callbridge dlq …` and the console's
//! dead-letters page both call these.
//!
//! Messages are read with `basic.get` and manual acknowledgement: [`list`] returns every
//! message it looked at to the queue; [`replay`] acknowledges one only after its copy is
//! confirmed on `callbridge.callbacks`, so a crash mid-replay loses nothing (at worst a
//! message is replayed twice, which the persister absorbs by event id).
//!
//! Replay and purge each write one `operator_actions` row. RabbitMQ and Postgres share no
//! transaction, so the row is written right after the effect, on a database connection
//! taken before it: a database that does not answer stops the action before anything
//! changed, and what was replayed is recorded even when a later message fails.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use callbridge_runtime::amqp::{Outgoing, PublishError, publish_confirmed};
use callbridge_types::event::mask_phone;
use callbridge_types::topology::{CALLBACKS_EXCHANGE, DEAD_QUEUE, ERROR_HEADER};
use chrono::{DateTime, Utc};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::OpsError;
use crate::audit::{self, Action, Actor};

/// How long publishing a replayed message and its confirm may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Message ids listed in a replay's `operator_actions` row; beyond this, the count says
/// how many.
const LISTED_MESSAGE_IDS: usize = 1000;
/// Headers RabbitMQ or the persister added when dead-lettering; a replayed message
/// starts clean (its `x-death` history would otherwise count toward nothing useful and
/// confuse the next diagnosis).
const DEAD_LETTER_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    ERROR_HEADER,
];

/// One dead letter, as an operator looks at it. Every text field comes from the message
/// (a callback's data, an error message): whoever shows it escapes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub routing_key: String,
    pub event_type: String,
    /// The callback's `call_id`, when the body reads as a callback or its envelope.
    pub call_id: Option<String>,
    /// The callback's number, masked as in the logs (`***3210`).
    pub phone_number: Option<String>,
    /// The persister's `x-callbridge-error` header.
    pub error: Option<String>,
    /// RabbitMQ's `x-first-death-reason` (`delivery_limit`, `rejected`, …) when the
    /// broker dead-lettered it.
    pub first_death_reason: Option<String>,
    /// When it was first published (the ingress's timestamp property, else the
    /// envelope's `received_at`), RFC 3339.
    pub published_at: Option<String>,
}

impl DeadLetter {
    /// Why it is dead, in one line: the persister's error, else the broker's reason.
    pub fn reason(&self) -> String {
        match (&self.error, &self.first_death_reason) {
            (Some(error), _) => error.clone(),
            (None, Some(reason)) => format!("broker: {reason} (redelivered too often)"),
            (None, None) => "-".into(),
        }
    }
}

/// What [`list`] saw: how many wait in the queue, and the first of them.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub count: u32,
    pub letters: Vec<DeadLetter>,
}

/// Which dead letters [`replay`] puts back.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    /// Only the messages with these message ids; empty: all.
    pub message_ids: Vec<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The message ids replayed (`-` for a message without one), in order.
    pub message_ids: Vec<String>,
    /// Message ids asked for that were not in the queue.
    pub missing: Vec<String>,
    /// The `operator_actions` row.
    pub action_id: i64,
}

/// What [`purge`] did.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Purged {
    pub purged: u32,
    pub action_id: i64,
}

fn broker_error(error: impl Into<anyhow::Error>, what: &'static str) -> OpsError {
    OpsError::Broker(error.into().context(what))
}

/// The dead queue's ready messages; an error that says what to do when it is missing.
pub async fn count(channel: &Channel) -> Result<u32, OpsError> {
    let queue = channel
        .queue_declare(
            DEAD_QUEUE.into(),
            // Passive: only look. Declaring it here with other arguments than the
            // services use would fail, and creating it is the services' job.
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!("queue {DEAD_QUEUE} does not exist on this broker/vhost: start callbridge-persister once (it declares the topology), or check RABBITMQ_URL")
        })
        .map_err(OpsError::Broker)?;
    Ok(queue.message_count())
}

async fn open_channel(connection: &Connection) -> Result<Channel, OpsError> {
    connection
        .create_channel()
        .await
        .map_err(|error| broker_error(error, "while opening a channel"))
}

async fn get_one(channel: &Channel) -> Result<Option<BasicGetMessage>, OpsError> {
    channel
        // Manual ack (no_ack false): nothing leaves the dead queue unless we ack it.
        .basic_get(DEAD_QUEUE.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|error| broker_error(error, "while reading from the dead queue"))
}

/// How many dead letters wait, and the first `limit` of them. Every message looked at goes
/// back to the queue unchanged (the dead queue's delivery limit is set high enough that
/// looking never drops one).
#[tracing::instrument(skip_all)]
pub async fn list(connection: &Connection, limit: usize) -> Result<Listing, OpsError> {
    let channel = open_channel(connection).await?;
    let count = count(&channel).await?;
    let mut letters = Vec::new();
    let mut last_tag = None;
    while letters.len() < limit && letters.len() < count as usize {
        let Some(message) = get_one(&channel).await? else {
            break;
        };
        last_tag = Some(message.delivery.delivery_tag);
        letters.push(describe(&message));
    }
    if let Some(tag) = last_tag {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .map_err(|error| {
                broker_error(error, "while returning the messages to the dead queue")
            })?;
    }
    channel.close(200, "bye".into()).await.ok();
    Ok(Listing { count, letters })
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// The call id, masked number and receipt time a body carries, read loosely: a dead
/// letter may be an envelope of a newer version, a bare callback, or not JSON at all.
fn callback_fields(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (None, None, None);
    };
    let event = value.get("event").unwrap_or(&value);
    let text = |from: &Value, key: &str| from.get(key).and_then(Value::as_str).map(str::to_owned);
    (
        text(event, "call_id"),
        text(event, "phone_number").map(|number| mask_phone(&number)),
        text(&value, "received_at"),
    )
}

fn describe(message: &BasicGetMessage) -> DeadLetter {
    let delivery = &message.delivery;
    let properties = &delivery.properties;
    let routing_key = delivery.routing_key.as_str().to_owned();
    let (call_id, phone_number, received_at) = callback_fields(&delivery.data);
    DeadLetter {
        message_id: properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        event_type: routing_key
            .strip_prefix("callback.")
            .unwrap_or(&routing_key)
            .to_owned(),
        routing_key,
        call_id,
        phone_number,
        error: header_text(properties, ERROR_HEADER),
        first_death_reason: header_text(properties, "x-first-death-reason"),
        published_at: properties
            .timestamp()
            .and_then(|seconds| {
                DateTime::from_timestamp(seconds as i64, 0).map(|at| at.to_rfc3339())
            })
            .or(received_at),
    }
}

/// The message's properties without the dead-lettering headers.
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let headers = properties.headers().clone().unwrap_or_default();
    let kept: FieldTable = headers
        .inner()
        .iter()
        .filter(|(name, _)| !DEAD_LETTER_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect::<BTreeMap<_, _>>()
        .into();
    properties.clone().with_headers(kept)
}

/// Publishes the selected dead letters to `callbridge.callbacks` again (original routing
/// key and properties, without the dead-lettering headers), removing each from the dead
/// queue once its copy is confirmed, and records the replay by `actor` at `now`.
///
/// Only what is in the queue when it starts is looked at: a replayed message that fails
/// again comes back to the dead queue and is not picked up again by the same replay.
#[tracing::instrument(skip_all, fields(actor = %actor.name))]
pub async fn replay(
    connection: &Connection,
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    selection: &ReplaySelection,
) -> Result<Replayed, OpsError> {
    let mut audit_connection = pool.acquire().await.map_err(crate::db_error(
        "while connecting to the database to record the replay",
    ))?;
    let channel = callbridge_runtime::amqp::open_confirmed_channel(connection)
        .await
        .map_err(OpsError::Broker)?;
    let mut replayed = Vec::new();
    let outcome = replay_on(&channel, selection, &mut replayed).await;
    channel.close(200, "bye".into()).await.ok();

    let missing: Vec<String> = selection
        .message_ids
        .iter()
        .filter(|id| !replayed.contains(id))
        .cloned()
        .collect();
    let listed = &replayed[..replayed.len().min(LISTED_MESSAGE_IDS)];
    let action = Action {
        action: "dlq.replay",
        campaign_id: None,
        target: json!({
            "queue": DEAD_QUEUE,
            "message_ids": if selection.message_ids.is_empty() {
                json!("all")
            } else {
                json!(selection.message_ids)
            },
            "limit": selection.limit,
        }),
        rows_affected: i64::try_from(replayed.len()).unwrap_or(i64::MAX),
        detail: Some(json!({
            "replayed": listed,
            "missing": missing,
            "error": outcome.as_ref().err().map(|error| format!("{error:#}")),
        })),
    };
    let action_id = audit::record(&mut audit_connection, now, actor, &action).await?;
    outcome.map_err(|error| match error {
        OpsError::Broker(error) => {
            OpsError::Broker(error.context(format!("replayed {} before failing", replayed.len())))
        }
        other => other,
    })?;
    Ok(Replayed {
        message_ids: replayed,
        missing,
        action_id,
    })
}

/// The replay itself; `replayed` collects the message ids as their copies are confirmed,
/// so the caller records them whatever happens after.
async fn replay_on(
    channel: &Channel,
    selection: &ReplaySelection,
    replayed: &mut Vec<String>,
) -> Result<(), OpsError> {
    let message_id = |message: &BasicGetMessage| {
        message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
    };
    move_each(
        channel,
        selection.limit.unwrap_or(usize::MAX),
        |message| {
            let wanted = selection.message_ids.is_empty()
                || message_id(message).is_some_and(|id| selection.message_ids.contains(&id));
            wanted.then(|| Replacement {
                exchange: CALLBACKS_EXCHANGE,
                routing_key: message.delivery.routing_key.as_str().to_owned(),
                body: None,
                properties: replay_properties(&message.delivery.properties),
            })
        },
        |message| replayed.push(message_id(message).unwrap_or_else(|| "-".to_owned())),
        |error| match error {
            PublishError::Unroutable => OpsError::Broker(anyhow::anyhow!(
                "{CALLBACKS_EXCHANGE} routed the replayed callback nowhere: is the persist queue bound? (start callbridge-persister once)"
            )),
            error => broker_error(error, "while publishing a replayed callback"),
        },
        // The copy is out; the original stays and is replayed again next time, which the
        // persister absorbs by event id.
        "while removing a replayed message from the dead queue",
    )
    .await
}

/// What [`move_each`] publishes in place of a dead letter.
pub(crate) struct Replacement {
    pub exchange: &'static str,
    pub routing_key: String,
    /// `None`: the message's own body.
    pub body: Option<Vec<u8>>,
    pub properties: BasicProperties,
}

/// Walks the dead letters waiting when it starts, moving at most `limit`: a message
/// `decide` gives a [`Replacement`] for is published as that (confirmed, mandatory: with
/// no queue bound it comes back instead of being lost), and only then acknowledged, and
/// `moved` is told; every other message goes back to the dead queue unchanged. So a crash
/// or an error at any point loses nothing: at worst a message exists twice. Stops at the
/// first error (`publish_failed` words a failed publish, `ack_failed` a failed
/// acknowledgement), after giving back what it kept.
pub(crate) async fn move_each(
    channel: &Channel,
    limit: usize,
    mut decide: impl FnMut(&BasicGetMessage) -> Option<Replacement>,
    mut moved: impl FnMut(&BasicGetMessage),
    publish_failed: impl Fn(PublishError) -> OpsError,
    ack_failed: &'static str,
) -> Result<(), OpsError> {
    let waiting = count(channel).await?;
    let mut kept = Vec::new();
    let mut done = 0;
    let mut result = Ok(());
    for _ in 0..waiting {
        if done >= limit {
            break;
        }
        let message = match get_one(channel).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(error) => {
                result = Err(error);
                break;
            }
        };
        let delivery = &message.delivery;
        let Some(replacement) = decide(&message) else {
            kept.push(delivery.delivery_tag);
            continue;
        };
        let copy = Outgoing {
            exchange: replacement.exchange,
            routing_key: &replacement.routing_key,
            body: replacement.body.as_deref().unwrap_or(&delivery.data),
            properties: replacement.properties,
            mandatory: true,
        };
        if let Err(error) = publish_confirmed(channel, copy, CONFIRM_TIMEOUT).await {
            delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
                .ok();
            result = Err(publish_failed(error));
            break;
        }
        if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
            result = Err(broker_error(error, ack_failed));
            break;
        }
        moved(&message);
        done += 1;
    }
    for tag in kept {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await
            .map_err(|error| {
                broker_error(error, "while returning a dead letter to the dead queue")
            })?;
    }
    result
}

/// Deletes every dead letter (they cannot be replayed afterwards) and records it by
/// `actor` at `now`. Whoever calls it has asked the operator first.
#[tracing::instrument(skip_all, fields(actor = %actor.name))]
pub async fn purge(
    connection: &Connection,
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Purged, OpsError> {
    let mut audit_connection = pool.acquire().await.map_err(crate::db_error(
        "while connecting to the database to record the purge",
    ))?;
    let channel = open_channel(connection).await?;
    // Checks the queue exists, with the error that says what to do when it does not.
    count(&channel).await?;
    let purged = channel
        .queue_purge(DEAD_QUEUE.into(), QueuePurgeOptions::default())
        .await
        .map_err(|error| broker_error(error, "while purging the dead queue"))?;
    channel.close(200, "bye".into()).await.ok();
    let action = Action {
        action: "dlq.purge",
        campaign_id: None,
        target: json!({ "queue": DEAD_QUEUE }),
        rows_affected: i64::from(purged),
        detail: None,
    };
    let action_id = audit::record(&mut audit_connection, now, actor, &action).await?;
    Ok(Purged { purged, action_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_gives_its_call_id_and_masked_number_however_it_is_wrapped() {
        let envelope = br#"{"schema_version":9,"event_id":"e","received_at":"2026-01-01T00:00:00Z",
                           "event":{"call_id":"c-1","phone_number":"9876543210"}}"#;
        assert_eq!(
            callback_fields(envelope),
            (
                Some("c-1".into()),
                Some("***3210".into()),
                Some("2026-01-01T00:00:00Z".into())
            )
        );
        let bare = br#"{"call_id":"c-2","phone_number":"+15550100"}"#;
        assert_eq!(
            callback_fields(bare),
            (Some("c-2".into()), Some("***0100".into()), None)
        );
        assert_eq!(callback_fields(b"\xff not json"), (None, None, None));
    }
}
