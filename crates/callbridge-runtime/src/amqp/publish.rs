//! Publishing with publisher confirms, and what a confirm means: the one place that
//! decides whether the broker took responsibility for a message.
//!
//! A service that reports success (the ingress's 200, acknowledging a dead-lettered
//! original, marking an outcome published, removing a replayed dead letter) does so only
//! after [`publish_confirmed`] returned `Ok`; every error means "not stored, keep the
//! original and retry".

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};

/// Why a message is not known to be stored. Every variant means "not stored, retry".
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker returned the message as unroutable")]
    Unroutable,
    #[error("no broker confirm within {0:?}")]
    ConfirmTimeout(Duration),
    /// A channel without `confirm_select` never confirms: claiming success would be a
    /// guess, so this is a bug in the caller's channel set-up, reported as a failure.
    #[error("the channel is not in confirm mode")]
    NotConfirmMode,
    #[error("the channel failed while publishing")]
    Channel(#[source] lapin::Error),
}

/// One message to publish on a confirm-mode channel.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
    /// Mandatory: a message no queue is bound for comes back and is an error
    /// ([`PublishError::Unroutable`]) instead of being dropped silently. For messages
    /// that must reach a queue (callbacks, dead letters); not for outcomes, which nobody
    /// may have subscribed to.
    pub mandatory: bool,
}

/// Publishes `message` on `channel` (in confirm mode) and waits for the broker's
/// confirm; `timeout` bounds the whole, handing the frames over included. `Ok` means the
/// broker has taken responsibility for the message.
pub async fn publish_confirmed(
    channel: &Channel,
    message: Outgoing<'_>,
    timeout: Duration,
) -> Result<(), PublishError> {
    let confirmed = async { publish_pipelined(channel, message).await?.wait().await };
    tokio::time::timeout(timeout, confirmed)
        .await
        .unwrap_or(Err(PublishError::ConfirmTimeout(timeout)))
}

/// The first half of [`publish_confirmed`], for a caller that pipelines: hands the
/// message to the channel and returns its confirm, to be awaited with
/// [`PendingConfirm::confirmed`] after the next messages are handed over.
pub async fn publish_pipelined(
    channel: &Channel,
    message: Outgoing<'_>,
) -> Result<PendingConfirm, PublishError> {
    let confirm = channel
        .basic_publish(
            message.exchange.into(),
            message.routing_key.into(),
            BasicPublishOptions {
                mandatory: message.mandatory,
                ..BasicPublishOptions::default()
            },
            message.body,
            message.properties,
        )
        .await
        .map_err(PublishError::Channel)?;
    Ok(PendingConfirm(confirm))
}

/// A published message's confirm, not yet received.
#[derive(Debug)]
#[must_use = "a publish is only known stored once its confirm is awaited"]
pub struct PendingConfirm(PublisherConfirm);

impl PendingConfirm {
    /// Waits at most `timeout` for the confirm and says what it means.
    pub async fn confirmed(self, timeout: Duration) -> Result<(), PublishError> {
        tokio::time::timeout(timeout, self.wait())
            .await
            .unwrap_or(Err(PublishError::ConfirmTimeout(timeout)))
    }

    async fn wait(self) -> Result<(), PublishError> {
        interpret(self.0.await.map_err(PublishError::Channel)?)
    }
}

/// What the broker's answer to a publish means.
fn interpret(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        // An ack carrying the returned message is the broker's answer to an unroutable
        // mandatory publish: it was acknowledged because nothing was stored.
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::NotConfirmMode),
    }
}
