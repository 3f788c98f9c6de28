//! The RabbitMQ connection (with retry) and the messaging topology, declared
//! idempotently by every service that uses it. Names come from
//! `callbridge_types::topology`; the options each is declared with live here.

use std::time::Duration;

use anyhow::{Context, bail};
use backon::{ExponentialBuilder, Retryable};
use callbridge_types::topology::{
    ALL_CALLBACKS_BINDING, CALLBACKS_EXCHANGE, DEAD_EXCHANGE, DEAD_QUEUE, OUTCOMES_EXCHANGE,
    PERSIST_QUEUE,
};
use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use tokio_util::sync::CancellationToken;

pub mod nodes;
pub mod publish;
pub mod reconnect;

pub use nodes::{BrokerNodes, NODE_CONNECT_TIMEOUT};
pub use publish::{Outgoing, PendingConfirm, PublishError, publish_confirmed, publish_pipelined};
pub use reconnect::{Reconnect, run_reconnecting};

/// Deliveries of one message to persister consumers before RabbitMQ dead-letters it
/// itself. Only a high backstop (at least 50): the persister dead-letters poison messages
/// on its own, and a killed consumer's unacked prefetch counts toward this limit too.
pub const PERSIST_DELIVERY_LIMIT: i64 = 100;

/// Quorum queues on RabbitMQ 4.x drop a message after 20 deliveries unless told
/// otherwise; dead letters are kept until an operator replays or purges them, however
/// often `callbridge dlq list` has looked at them.
pub const DEAD_DELIVERY_LIMIT: i64 = 1_000_000;

/// The longest wait between two connection attempts, jitter included.
pub const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(10);

/// Backoff between connection attempts: quick at first, capped, jittered so replicas do
/// not reconnect in lockstep after a broker restart; unlimited attempts (the caller's
/// cancellation token ends it). backon's jitter adds up to 100 % of the delay, so the
/// delay is capped at half of [`RECONNECT_MAX_WAIT`].
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(RECONNECT_MAX_WAIT / 2)
        .with_jitter()
        .without_max_times()
}

/// `url` (or each URL of a comma-separated list of nodes) with its password replaced by
/// `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let nodes = BrokerNodes::parse(url);
    if nodes.len() > 1 {
        nodes.to_string()
    } else {
        redact_one_url(url)
    }
}

/// One URL with its password replaced by `***`.
fn redact_one_url(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Setting a password only fails for URLs without a host, parsed above.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable AMQP URL>".to_owned(),
    }
}

/// One connection attempt: to the first node of `url` (one AMQP URL, or several
/// comma-separated, the nodes of a cluster) that answers. `connection_name` shows in the
/// management UI (e.g. the service name), so an operator can tell the clients apart.
#[tracing::instrument(skip_all, fields(broker = %redact_url(url), connection_name))]
pub async fn connect(url: &str, connection_name: &str) -> anyhow::Result<Connection> {
    BrokerNodes::parse(url)
        .connect_from(0, connection_name)
        .await
        .map(|(connection, _node)| connection)
}

/// Connects, retrying with [`reconnect_backoff`] and logging each failure, until it
/// succeeds or `cancel` fires (then an error).
#[tracing::instrument(skip_all, fields(broker = %redact_url(url), connection_name))]
pub async fn connect_with_retry(
    url: &str,
    connection_name: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Connection> {
    let attempts = (|| connect(url, connection_name))
        .retry(reconnect_backoff())
        .sleep(tokio::time::sleep)
        .notify(|error, delay| {
            tracing::warn!(
                error = format!("{error:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "RabbitMQ not reachable; retrying"
            );
        });
    tokio::select! {
        connection = attempts => connection,
        () = cancel.cancelled() => bail!(
            "shutdown requested while connecting to RabbitMQ at {}",
            redact_url(url)
        ),
    }
}

/// A channel in publisher-confirm mode: each publish yields a confirm the caller awaits
/// before it reports success (the ingress answers 200 only after the broker confirmed).
pub async fn open_confirmed_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection
        .create_channel()
        .await
        .context("while opening an AMQP channel")?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("while enabling publisher confirms")?;
    Ok(channel)
}

/// How long closing a channel or connection waits for the broker's answer before giving
/// up on it: a stopping service must not hang on a broker that stopped answering.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The reply text the broker logs for a close callbridge asked for.
const CLOSE_REPLY_TEXT: &str = "callbridge client closing";

/// Closes `channel`, waiting at most `timeout` for the broker's `Close-Ok`. Its
/// unacknowledged deliveries return to their queues. A channel that is already closed,
/// or a broker that does not answer in time, is logged, not an error: the caller is on
/// its way out either way.
///
/// Why close explicitly at all: lapin closes a channel by itself when its last handle is
/// dropped, and that close, racing a connection close, can leave the connection close
/// waiting forever for the broker's answer.
#[tracing::instrument(skip_all, fields(channel_id = channel.id()))]
pub async fn close_channel(channel: &Channel, timeout: Duration) {
    let closing = channel.close(200, CLOSE_REPLY_TEXT.into());
    match tokio::time::timeout(timeout, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "channel was already closed"),
        Err(_) => tracing::warn!(
            ?timeout,
            "the broker did not confirm a channel close in time"
        ),
    }
}

/// Closes `connection` (and whatever channels are still open on it), waiting at most
/// `timeout` for the broker's `Close-Ok`; see [`close_channel`] for how failures end.
#[tracing::instrument(skip_all)]
pub async fn close_connection(connection: &Connection, timeout: Duration) {
    let closing = connection.close(200, CLOSE_REPLY_TEXT.into());
    match tokio::time::timeout(timeout, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "connection was already closed"),
        Err(_) => {
            tracing::warn!(
                ?timeout,
                "the broker did not confirm a connection close in time"
            )
        }
    }
}

/// Closes `channels` (all at once), then `connection`, each step waiting at most
/// `timeout`: the way out of a service that owns one connection. Keep every channel
/// handle alive until this returns, so none is closed by a drop meanwhile.
pub async fn close_gracefully<'a>(
    connection: &Connection,
    channels: impl IntoIterator<Item = &'a Channel>,
    timeout: Duration,
) {
    futures::future::join_all(
        channels
            .into_iter()
            .map(|channel| close_channel(channel, timeout)),
    )
    .await;
    close_connection(connection, timeout).await;
}

/// Members a quorum queue is created with: three replicas survive the loss of any one
/// node (a majority of three is two). RabbitMQ places the queue on as many nodes as the
/// cluster has when it has fewer, so the same declaration works on a single node; on a
/// larger cluster the queue stays at three members, as RabbitMQ recommends.
pub const QUORUM_INITIAL_GROUP_SIZE: i64 = 3;

/// The argument that sets [`QUORUM_INITIAL_GROUP_SIZE`].
const INITIAL_GROUP_SIZE_ARGUMENT: &str = "x-quorum-initial-group-size";

/// Arguments of [`PERSIST_QUEUE`]. RabbitMQ refuses to redeclare a queue with different
/// arguments, so changing these needs a migration of the queue (the initial group size
/// alone is tolerated: see [`declare_topology`]).
pub fn persist_queue_arguments() -> FieldTable {
    with_initial_group_size(persist_queue_arguments_before_replication())
}

/// [`persist_queue_arguments`] as queues declared before the initial group size was set
/// have them.
fn persist_queue_arguments_before_replication() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Replicated and durable: an acknowledged callback survives losing a broker node.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(PERSIST_DELIVERY_LIMIT),
    );
    // Messages over the delivery limit (or rejected without requeue) go to the dead queue.
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_EXCHANGE.into()),
    );
    // The default (at-most-once) may lose a dead letter if the dead queue is unavailable.
    arguments.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    // at-least-once dead-lettering is only honoured with reject-publish overflow.
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    arguments
}

/// Arguments of [`DEAD_QUEUE`].
pub fn dead_queue_arguments() -> FieldTable {
    with_initial_group_size(dead_queue_arguments_before_replication())
}

fn dead_queue_arguments_before_replication() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Dead letters are data an operator must see: replicated like the persist queue.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DEAD_DELIVERY_LIMIT),
    );
    arguments
}

fn with_initial_group_size(mut arguments: FieldTable) -> FieldTable {
    arguments.insert(
        INITIAL_GROUP_SIZE_ARGUMENT.into(),
        AMQPValue::LongLongInt(QUORUM_INITIAL_GROUP_SIZE),
    );
    arguments
}

/// Declares the exchanges, queues and bindings. Idempotent: every service calls it
/// at start (and after reconnecting), in any order, any number of times.
///
/// It declares on channels of its own, closed before it returns: a refused declaration
/// closes its channel, and that must never be a channel the caller goes on using.
///
/// A quorum queue that exists from a release that did not set the initial group size
/// (RabbitMQ then refuses the redeclaration) is redeclared with the arguments it has:
/// the group size only matters when a queue is created, and an existing queue gains
/// members with `rabbitmq-queues grow`, not by redeclaring.
#[tracing::instrument(skip_all)]
pub async fn declare_topology(connection: &Connection) -> anyhow::Result<()> {
    let mut channel = connection
        .create_channel()
        .await
        .context("while opening a channel to declare the topology")?;
    let declared = declare_on(connection, &mut channel).await;
    close_channel(&channel, CLOSE_TIMEOUT).await;
    declared
}

async fn declare_on(connection: &Connection, channel: &mut Channel) -> anyhow::Result<()> {
    // Durable everywhere: the topology outlives broker restarts, not just the messages.
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };

    let exchanges = [
        // Topic: routing key `callback.<event_type>` lets other consumers bind to a subset.
        (CALLBACKS_EXCHANGE, ExchangeKind::Topic),
        // Fanout: broker dead-lettering keeps the message's original routing key and the
        // persister publishes with its own, and both must reach the dead queue.
        (DEAD_EXCHANGE, ExchangeKind::Fanout),
        // Topic: `outcome.<status>`; the client's applications bind their own queues.
        (OUTCOMES_EXCHANGE, ExchangeKind::Topic),
    ];
    for (name, kind) in exchanges {
        channel
            .exchange_declare(name.into(), kind, durable_exchange, FieldTable::default())
            .await
            .with_context(|| format!("while declaring exchange {name}"))?;
    }

    // The dead queue first, so the persist queue's dead-letter target exists.
    declare_quorum_queue(
        connection,
        channel,
        DEAD_QUEUE,
        dead_queue_arguments_before_replication(),
    )
    .await?;
    channel
        .queue_bind(
            DEAD_QUEUE.into(),
            DEAD_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("while binding queue {DEAD_QUEUE} to {DEAD_EXCHANGE}"))?;

    declare_quorum_queue(
        connection,
        channel,
        PERSIST_QUEUE,
        persist_queue_arguments_before_replication(),
    )
    .await?;
    channel
        .queue_bind(
            PERSIST_QUEUE.into(),
            CALLBACKS_EXCHANGE.into(),
            ALL_CALLBACKS_BINDING.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("while binding queue {PERSIST_QUEUE} to {CALLBACKS_EXCHANGE}"))?;
    Ok(())
}

/// Declares quorum queue `name` with `arguments` plus the initial group size, or, when
/// it exists without one, with `arguments` alone on a fresh channel (the refusal closed
/// the first; `channel` is replaced).
async fn declare_quorum_queue(
    connection: &Connection,
    channel: &mut Channel,
    name: &str,
    arguments: FieldTable,
) -> anyhow::Result<()> {
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let context = || {
        format!(
            "while declaring queue {name} (a PRECONDITION_FAILED here means it exists with other arguments)"
        )
    };
    let error = match channel
        .queue_declare(
            name.into(),
            durable_queue,
            with_initial_group_size(arguments.clone()),
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    if !refused_for_initial_group_size(&error) {
        return Err(error).with_context(context);
    }
    tracing::warn!(
        queue = name,
        "the queue exists without an initial group size (declared by an older release); \
         keeping it as it is: check its members with `rabbitmq-queues quorum_status` and add \
         some with `rabbitmq-queues grow` if it has fewer than {QUORUM_INITIAL_GROUP_SIZE}"
    );
    close_channel(channel, CLOSE_TIMEOUT).await;
    *channel = connection
        .create_channel()
        .await
        .context("while opening a channel to declare the topology")?;
    channel
        .queue_declare(name.into(), durable_queue, arguments)
        .await
        .with_context(context)?;
    Ok(())
}

/// Whether the broker refused a queue declaration because the queue exists with another
/// initial group size (none, when an older release declared it).
fn refused_for_initial_group_size(error: &lapin::Error) -> bool {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(refusal) => {
            refusal
                .get_message()
                .as_str()
                .contains(INITIAL_GROUP_SIZE_ARGUMENT)
                && refusal.get_id() == 406
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn reconnect_waits_never_exceed_the_cap_with_jitter() {
        let longest = reconnect_backoff().build().take(200).max().unwrap();
        assert!(
            longest <= RECONNECT_MAX_WAIT,
            "a reconnect wait of {longest:?} exceeds {RECONNECT_MAX_WAIT:?}"
        );
        assert!(
            longest > RECONNECT_MAX_WAIT / 4,
            "the backoff never grows: {longest:?}"
        );
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@mq.internal:5672/%2f"),
            "amqp://guest:***@mq.internal:5672/%2f"
        );
        assert_eq!(redact_url("amqp://mq:5672/%2f"), "amqp://mq:5672/%2f");
        assert_eq!(redact_url("not a url"), "<unparsable AMQP URL>");
    }
}
