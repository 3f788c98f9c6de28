//! Moving a poison message to `callbridge.dead`: published with confirms,
//! with the error as a header, before the original is acknowledged.

use std::time::Duration;

use anyhow::Context;
use callbridge_runtime::amqp::{Outgoing, publish_confirmed};
use callbridge_types::topology::{DEAD_EXCHANGE, ERROR_HEADER};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, LongString};
use lapin::{Channel, Connection};

/// How long a dead letter's publish and confirm may take before the broker counts as
/// unavailable.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A confirm-mode channel used only for dead letters, shared by the consumer's batches in
/// flight (each publish awaits its own confirm, matched by delivery tag; the outbox relay
/// publishes on a channel of its own).
pub(crate) struct DeadLetterPublisher {
    channel: Channel,
}

impl DeadLetterPublisher {
    pub(crate) async fn open(connection: &Connection) -> anyhow::Result<Self> {
        let channel = callbridge_runtime::amqp::open_confirmed_channel(connection)
            .await
            .context("while opening the dead-letter channel")?;
        Ok(Self { channel })
    }

    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes `delivery` (body and properties unchanged) to the dead exchange with
    /// `reason` in the error header, and waits for the broker's confirm. An error means
    /// the message is not safely dead-lettered and must not be acknowledged.
    #[tracing::instrument(skip_all, fields(message_id))]
    pub(crate) async fn publish(&self, delivery: &Delivery, reason: &str) -> anyhow::Result<()> {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        tracing::Span::current().record("message_id", message_id.as_deref());
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ERROR_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.to_owned())),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let message = Outgoing {
            exchange: DEAD_EXCHANGE,
            // The original routing key, as the broker's own dead-lettering keeps it.
            routing_key: delivery.routing_key.as_str(),
            body: &delivery.data,
            properties,
            // Mandatory: if the dead queue is missing the message comes back, and the
            // original stays unacknowledged instead of being lost.
            mandatory: true,
        };
        publish_confirmed(&self.channel, message, CONFIRM_TIMEOUT)
            .await
            .context("while publishing a dead letter")
    }
}
