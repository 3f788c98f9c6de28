//! Keeps the publisher connected: connects with backoff, declares the topology, installs
//! a channel pool, watches the connection and reports readiness as it goes.
//!
//! While the broker is unreachable the publisher has no pool (every publish answers
//! 503 at once) and readiness is false; once the broker is back a fresh pool is
//! installed and 200s resume without a restart.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::{Connection, Event};
use tokio_util::sync::CancellationToken;

use callbridge_runtime::amqp;
use callbridge_runtime::config::Secret;
use callbridge_runtime::health::Readiness;

use crate::publisher::{ChannelPool, Publisher};

/// How often the supervisor looks at the connection even without an event, in case
/// a failure reached lapin's state without an event being emitted.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The readiness condition the supervisor owns.
pub const BROKER_CONDITION: &str = "broker";

/// Where the publisher connects and how many channels it opens.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: Secret,
    /// Number of confirm-mode channels in the pool.
    pub pool_size: usize,
}

/// Runs until `shutdown` is cancelled. The caller registers [`BROKER_CONDITION`] as not
/// ready before spawning it. On return the last pool stays installed, so
/// in-flight requests can finish their confirm waits; [`close`] ends the connection.
#[tracing::instrument(name = "publisher_supervisor", skip_all)]
pub async fn supervise(
    publisher: Publisher,
    broker: BrokerSettings,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let settings = amqp::Reconnect::new(broker.url.expose(), "callbridge-ingress")
        .reporting(&readiness, BROKER_CONDITION);
    amqp::run_reconnecting(settings, &shutdown, |connection| {
        publish_on(connection, &publisher, &broker, &readiness, &shutdown)
    })
    .await;
}

/// One connection's life: declares the topology (idempotent), installs a pool on the
/// connection and keeps its channels repaired. `Ok` on shutdown, the pool left
/// installed; an error once the connection is lost, the pool removed.
async fn publish_on(
    connection: Arc<Connection>,
    publisher: &Publisher,
    broker: &BrokerSettings,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut pool = Arc::new(open_pool(connection, broker.pool_size).await?);
    let mut events = pool.connection().events_listener().boxed();
    publisher.install(Some(pool.clone()));
    readiness.set_ready(BROKER_CONDITION);
    tracing::info!("publisher connected to the broker");

    let mut health_check = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    let lost = loop {
        let needs_repair = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            event = events.next() => match event {
                Some(Event::ConnectionBlocked(reason)) => {
                    // Publishes would wait until the confirm timeout: say so early.
                    tracing::warn!(%reason, "broker blocked the connection");
                    readiness.set_not_ready(BROKER_CONDITION, "RabbitMQ blocked the connection");
                    false
                }
                Some(Event::ConnectionUnblocked) => {
                    tracing::info!("broker unblocked the connection");
                    readiness.set_ready(BROKER_CONDITION);
                    false
                }
                Some(Event::Error(error)) => {
                    tracing::warn!(%error, "broker connection or channel error");
                    true
                }
                Some(_) => false,
                None => true,
            },
            () = publisher.broken_channel_reported() => true,
            _ = health_check.tick() => !pool.connection().status().connected()
                || !pool.all_channels_open(),
        };
        if !needs_repair {
            continue;
        }
        if !pool.connection().status().connected() {
            break anyhow::anyhow!("the publisher's connection to RabbitMQ was lost");
        }
        match pool.repaired().await {
            Ok(repaired) => {
                pool = Arc::new(repaired);
                publisher.install(Some(pool.clone()));
            }
            Err(error) => break error.context("while repairing the channel pool"),
        }
    };
    publisher.install(None);
    Err(lost)
}

/// Closes the installed pool (its channels, then its connection) after the HTTP server
/// has drained; bounded, so SIGTERM ends the process even with a silent broker.
#[tracing::instrument(skip_all)]
pub async fn close(publisher: &Publisher) {
    if let Some(pool) = publisher.install(None) {
        pool.close(amqp::CLOSE_TIMEOUT).await;
    }
}

/// Declares the topology (idempotent), then opens the pool.
#[tracing::instrument(skip_all, fields(pool_size = pool_size))]
async fn open_pool(connection: Arc<Connection>, pool_size: usize) -> anyhow::Result<ChannelPool> {
    amqp::declare_topology(&connection).await?;
    ChannelPool::open(connection, pool_size).await
}
