//! The connect → run → back off loop of every task that holds a broker connection (the
//! ingress's publisher, the persister's consumer and outbox relay): connect, run a
//! session on the connection until it ends, and when it ended with an error (or the
//! connection could not be made) wait and start again, until shutdown. Given the nodes
//! of a cluster, it connects to the first that answers and, after losing a connection,
//! starts with the next node.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::Connection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BrokerNodes, CLOSE_TIMEOUT, RECONNECT_MAX_WAIT, close_connection, reconnect_backoff};
use crate::health::Readiness;

/// How a reconnecting task connects and waits.
#[derive(Debug, Clone)]
pub struct Reconnect<'a, B = ExponentialBuilder> {
    /// One AMQP URL, or the nodes of a cluster comma-separated (`RABBITMQ_URL`).
    pub url: &'a str,
    /// Shown in the management UI and in the loop's logs (e.g. the service's name).
    pub connection_name: &'a str,
    /// The readiness condition the connection decides: set not ready (with the reason)
    /// while connecting or after a failure, and when the loop ends. The session itself
    /// sets it ready once it is doing its work.
    pub readiness: Option<(&'a Readiness, &'a str)>,
    /// The waits between attempts: [`reconnect_backoff`] (the services), or a test's own.
    pub backoff: B,
    /// A session that lasted at least this long starts the backoff over: the next
    /// failure waits the shortest time again. One that fails sooner is a crash loop, and
    /// keeps the waits growing.
    pub stable_after: Duration,
}

impl<'a> Reconnect<'a> {
    /// Connecting to `url` as `connection_name`, with [`reconnect_backoff`], and a
    /// session stable after [`RECONNECT_MAX_WAIT`], so a session that keeps failing
    /// reconnects at most about once per longest wait.
    pub fn new(url: &'a str, connection_name: &'a str) -> Self {
        Reconnect {
            url,
            connection_name,
            readiness: None,
            backoff: reconnect_backoff(),
            stable_after: RECONNECT_MAX_WAIT,
        }
    }
}

impl<'a, B> Reconnect<'a, B> {
    /// Reports the connection as `condition` of `readiness`.
    pub fn reporting(self, readiness: &'a Readiness, condition: &'a str) -> Self {
        Reconnect {
            readiness: Some((readiness, condition)),
            ..self
        }
    }

    /// Waits between attempts as `backoff` says (a test's own, say).
    pub fn with_backoff<C>(self, backoff: C) -> Reconnect<'a, C> {
        Reconnect {
            url: self.url,
            connection_name: self.connection_name,
            readiness: self.readiness,
            backoff,
            stable_after: self.stable_after,
        }
    }

    fn set_not_ready(&self, reason: &str) {
        if let Some((readiness, condition)) = self.readiness {
            readiness.set_not_ready(condition, reason);
        }
    }
}

/// Connects and runs `session` on the connection, again and again, until a session
/// returns `Ok` or `shutdown` fires.
///
/// Each attempt tries the nodes of `settings.url` in order until one answers; the first
/// attempt starts with the first node, and after a session failed the next attempt
/// starts with the node after the one that session was connected to (its node may be
/// down or unable to serve, and the others are all as good).
///
/// A session returns `Ok` when it stopped for shutdown, having closed its channels and
/// the connection (or handed them to whoever closes them later, as the ingress's pool);
/// it returns an error when the broker side ended or failed. After an error the loop
/// closes the connection (at most [`CLOSE_TIMEOUT`]) and waits the backoff's next delay
/// before connecting again; a failed connection attempt waits the same way. Shutdown
/// interrupts a connection attempt and a wait, not a running session: the session
/// watches `shutdown` itself, to finish its work in flight first.
#[tracing::instrument(skip_all, fields(connection_name = settings.connection_name))]
pub async fn run_reconnecting<B, S, F>(
    settings: Reconnect<'_, B>,
    shutdown: &CancellationToken,
    mut session: S,
) where
    B: BackoffBuilder + Clone,
    S: FnMut(Arc<Connection>) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    let nodes = BrokerNodes::parse(settings.url);
    let mut first_node = 0;
    let mut delays = settings.backoff.clone().build();
    while !shutdown.is_cancelled() {
        let attempt = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            attempt = nodes.connect_from(first_node, settings.connection_name) => attempt,
        };
        let (error, reason) = match attempt {
            Err(error) => (error, "RabbitMQ is unreachable; retrying"),
            Ok((connection, node)) => {
                if nodes.len() > 1 {
                    let url = super::redact_url(&nodes.urls()[node]);
                    tracing::info!(node = %url, "connected to RabbitMQ node");
                }
                first_node = nodes.after(node);
                let connection = Arc::new(connection);
                let started = Instant::now();
                let ended = session(connection.clone()).await;
                let Err(error) = ended else {
                    break;
                };
                close_connection(&connection, CLOSE_TIMEOUT).await;
                if started.elapsed() >= settings.stable_after {
                    delays = settings.backoff.clone().build();
                }
                (error, "RabbitMQ connection lost; reconnecting")
            }
        };
        settings.set_not_ready(reason);
        let delay = delays.next().unwrap_or(RECONNECT_MAX_WAIT);
        tracing::warn!(
            error = format!("{error:#}"),
            retry_in_ms = delay.as_millis() as u64,
            "{reason}"
        );
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    settings.set_not_ready("shutting down");
}
