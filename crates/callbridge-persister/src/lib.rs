//! callbridge-persister: consumes validated callbacks from `callbridge.persist` and
//! stores them in Postgres.
//!
//! - [`Persister`] is the application: health server, database pool, the batch
//!   consumer and the outbox relay; tests build it on port 0 with their own database
//!   and vhost.
//! - [`store`] is the batch transaction and [`call_log`] the pure fold that decides a
//!   call's row from its events — where exactness under replicas and reordering is
//!   argued.
//! - The consumer (batching, concurrent batch transactions, poison isolation,
//!   acknowledgement) and the outbox relay (outcomes to `callbridge.outcomes`) run as two
//!   tasks with their own connections.
//! - [`failpoint`] is a test hook that aborts the process at an exact point.

pub mod call_log;
mod consumer;
mod dead_letter;
pub mod error;
pub mod failpoint;
pub mod metrics;
mod outbox;
pub mod redial;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::BackoffBuilder;
use callbridge_runtime::config::PersisterConfig;
use callbridge_runtime::health::{HealthServer, Readiness, install_metrics_recorder};
use callbridge_types::clock::{SharedClock, SystemClock};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::consumer::{BROKER_CONDITION, BatchConsumer, BatchSettings, DATABASE_CONDITION};
use crate::outbox::OutboxRelay;

/// How often `active_batches` is recounted.
const ACTIVE_BATCHES_INTERVAL: Duration = Duration::from_secs(15);

/// The persister service: built (health server bound) by [`Persister::build`], then run
/// by [`Persister::run_until_stopped`].
pub struct Persister {
    config: PersisterConfig,
    readiness: Readiness,
    health: HealthServer,
    clock: SharedClock,
}

impl Persister {
    /// Binds the health/readiness/metrics server (`PERSISTER_BIND`; port 0 picks a free
    /// one), and applies pending migrations first when `migrate_on_start` is set (then
    /// the database must be reachable now). Not ready until the database and the broker
    /// are reached.
    pub async fn build(config: PersisterConfig) -> anyhow::Result<Persister> {
        if config.migrate_on_start {
            // Here rather than in `run_until_stopped`: sqlx's migrator future is not
            // `Send` for every lifetime, so it cannot live inside a spawned task.
            let pool = callbridge_runtime::db::connect_pool(
                config.database.url.expose(),
                config.database.max_connections,
            )
            .await?;
            callbridge_runtime::db::migrate_up(&pool).await?;
            pool.close().await;
        }
        let metrics_handle = install_metrics_recorder();
        metrics::describe();
        let readiness = Readiness::new();
        readiness.set_not_ready(DATABASE_CONDITION, "connecting to Postgres");
        readiness.set_not_ready(BROKER_CONDITION, "connecting to RabbitMQ");
        let health = HealthServer::start(config.bind, readiness.clone(), metrics_handle).await?;
        Ok(Persister {
            config,
            readiness,
            health,
            clock: SystemClock::shared(),
        })
    }

    /// Reads the time from `clock` instead of the system clock: when a redial is due
    /// (the policy's interval after the terminal outcome is stored) follows it.
    pub fn with_clock(mut self, clock: SharedClock) -> Persister {
        self.clock = clock;
        self
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn health_addr(&self) -> SocketAddr {
        self.health.addr()
    }

    /// Runs until `shutdown` fires, then finishes the batches in flight (or leaves them
    /// unacknowledged, to be redelivered, if they are waiting for the database) and stops.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Persister {
            config,
            readiness,
            health,
            clock,
        } = self;
        let Some(pool) = connect_database(&config, &readiness, &shutdown).await? else {
            return health.stop().await;
        };
        readiness.set_ready(DATABASE_CONDITION);

        let amqp_url = config.amqp_url.expose().to_owned();
        let outbox_wakeup = Arc::new(Notify::new());
        let consumer = BatchConsumer {
            amqp_url: amqp_url.clone(),
            settings: BatchSettings {
                prefetch: config.prefetch,
                batch_size: config.batch_size,
                linger: config.batch_linger,
                concurrency: config.concurrency,
            },
            pool: pool.clone(),
            readiness: readiness.clone(),
            outbox_wakeup: outbox_wakeup.clone(),
            clock,
        };
        let relay = OutboxRelay {
            amqp_url,
            pool: pool.clone(),
            wakeup: outbox_wakeup,
        };
        tokio::join!(
            consumer.run(shutdown.clone()),
            relay.run(shutdown.clone()),
            report_active_batches(pool.clone(), shutdown.clone()),
        );
        pool.close().await;
        tracing::info!("persister stopped");
        health.stop().await
    }
}

/// Builds and runs a persister until `shutdown` (what `main` does).
pub async fn run(config: PersisterConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    Persister::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// Backoff while the database is unavailable: quick first retries for a blip, capped so
/// recovery is noticed within seconds, jittered so replicas do not retry in lockstep.
pub(crate) fn database_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// Opens the pool, retrying with backoff while Postgres is unreachable (not ready
/// meanwhile). `None` when shutdown came first.
async fn connect_database(
    config: &PersisterConfig,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<PgPool>> {
    let mut backoff = database_backoff().build();
    loop {
        match callbridge_runtime::db::connect_pool(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await
        {
            Ok(pool) => return Ok(Some(pool)),
            Err(error) => {
                readiness.set_not_ready(DATABASE_CONDITION, "the database is unreachable");
                let delay = backoff.next().context("while waiting for the database")?;
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot reach the database; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
            }
        }
    }
}

/// Keeps the `active_batches` gauge current.
async fn report_active_batches(pool: PgPool, shutdown: CancellationToken) {
    loop {
        match store::count_active_batches(&pool).await {
            Ok(count) => metrics::set_active_batches(count),
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "active_batches not updated")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ACTIVE_BATCHES_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
