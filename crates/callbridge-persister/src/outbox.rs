//! The outbox relay: publishes committed call outcomes (`call_outcome_outbox`) to the
//! `callbridge.outcomes` topic exchange, confirmed, then marks them published.
//!
//! A crash between the batch commit and the publish loses nothing (the row waits), and a
//! crash between the publish and marking it sends it again: delivery is at least once,
//! and subscribers deduplicate on `message_id`, the deciding event's id.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::BackoffBuilder;
use callbridge_runtime::amqp::{
    self, CLOSE_TIMEOUT, Outgoing, Reconnect, close_gracefully, run_reconnecting,
};
use callbridge_types::status::CallStatus;
use callbridge_types::topology::{CONTENT_TYPE_JSON, OUTCOMES_EXCHANGE, outcome_routing_key};
use lapin::{BasicProperties, Channel, Connection};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::failpoint::{self, Failpoint};
use crate::metrics;

/// Rows claimed and published per round.
const CLAIM_LIMIT: i64 = 200;
/// How long the relay sleeps when nothing wakes it: outcomes committed by another
/// replica (whose relay may have died) are picked up within this.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a confirm may take before the broker counts as unavailable.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

pub(crate) struct OutboxRelay {
    pub amqp_url: String,
    pub pool: PgPool,
    pub wakeup: Arc<Notify>,
}

/// Where a publishing round failed, which decides what to repair.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0:#}")]
    Broker(anyhow::Error),
    #[error("database: {0:#}")]
    Database(anyhow::Error),
}

#[derive(sqlx::FromRow)]
struct PendingOutcome {
    id: i64,
    event_id: String,
    call_status: String,
    /// The outcome's JSON, as Postgres writes the `jsonb` out: the message body as is.
    payload: String,
}

impl OutboxRelay {
    /// Publishes outcomes until `shutdown`, reconnecting to the broker with backoff.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let settings = Reconnect::new(&self.amqp_url, "callbridge-persister-outbox");
        run_reconnecting(settings, &shutdown, |connection| {
            self.relay(connection, &shutdown)
        })
        .await;
    }

    /// Publishes on one connection until shutdown (`Ok`) or a broker failure (`Err`).
    async fn relay(
        &self,
        connection: Arc<Connection>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        callbridge_runtime::amqp::declare_topology(&connection).await?;
        let channel = callbridge_runtime::amqp::open_confirmed_channel(&connection).await?;
        let mut database_backoff = crate::database_backoff().build();
        loop {
            let idle_wait = match self.publish_pending(&channel).await {
                // A full round: there may be more.
                Ok(published) if published as i64 == CLAIM_LIMIT => Duration::ZERO,
                Ok(_) => POLL_INTERVAL,
                Err(RelayError::Broker(error)) => return Err(error),
                Err(RelayError::Database(error)) => {
                    let delay = database_backoff.next().unwrap_or(POLL_INTERVAL);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "outbox relay cannot reach the database; retrying"
                    );
                    delay
                }
            };
            if idle_wait.is_zero() && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                // Shutdown first: a relay with more to publish still stops promptly.
                biased;
                () = shutdown.cancelled() => {
                    close_gracefully(&connection, [&channel], CLOSE_TIMEOUT).await;
                    return Ok(());
                }
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(idle_wait) => {}
            }
        }
    }

    /// Claims unpublished rows, publishes them confirmed and marks them, in one
    /// transaction. Returns how many were published.
    #[tracing::instrument(skip_all, fields(published))]
    async fn publish_pending(&self, channel: &Channel) -> Result<usize, RelayError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("while beginning the outbox transaction")
            .map_err(RelayError::Database)?;
        // FOR UPDATE SKIP LOCKED: replicas claim disjoint rows rather than publishing the
        // same ones or queueing behind each other; the lock lasts until marked published.
        let rows: Vec<PendingOutcome> = sqlx::query_as(
            "SELECT id, event_id, call_status, payload::text AS payload
               FROM call_outcome_outbox
              WHERE published_at IS NULL
              ORDER BY id
              LIMIT $1
                FOR UPDATE SKIP LOCKED",
        )
        .bind(CLAIM_LIMIT)
        .fetch_all(&mut *tx)
        .await
        .context("while claiming unpublished outcomes")
        .map_err(RelayError::Database)?;
        if rows.is_empty() {
            return Ok(0);
        }
        failpoint::hit(Failpoint::AfterCommitBeforeOutboxPublish);

        publish_outcomes(channel, &rows)
            .await
            .map_err(RelayError::Broker)?;

        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        sqlx::query("UPDATE call_outcome_outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *tx)
            .await
            .context("while marking outcomes published")
            .map_err(RelayError::Database)?;
        tx.commit()
            .await
            .context("while committing published outcomes")
            .map_err(RelayError::Database)?;
        for row in &rows {
            metrics::record_outcome_published(&row.call_status);
        }
        tracing::Span::current().record("published", rows.len());
        Ok(rows.len())
    }
}

/// Publishes every row (pipelined: all frames first, then every confirm).
async fn publish_outcomes(channel: &Channel, rows: &[PendingOutcome]) -> anyhow::Result<()> {
    let mut confirms = Vec::with_capacity(rows.len());
    for row in rows {
        let status = CallStatus::parse(&row.call_status)
            .unwrap_or_else(|| CallStatus::Other(row.call_status.clone()));
        let message = Outgoing {
            exchange: OUTCOMES_EXCHANGE,
            routing_key: &outcome_routing_key(&status),
            body: row.payload.as_bytes(),
            properties: BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .with_content_type(CONTENT_TYPE_JSON.into())
                .with_message_id(row.event_id.as_str().into())
                .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64),
            // Not mandatory: an outcome nobody subscribed to is simply not wanted.
            mandatory: false,
        };
        let confirm = amqp::publish_pipelined(channel, message)
            .await
            .context("while publishing an outcome")?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        confirm
            .confirmed(CONFIRM_TIMEOUT)
            .await
            .context("while waiting for an outcome's confirm")?;
    }
    Ok(())
}
