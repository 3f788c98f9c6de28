//! Building and running the submitter service: database pool, health server, the
//! NOTIFY listener and the submission loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callbridge_runtime::config::SubmitterConfig;
use callbridge_runtime::db;
use callbridge_runtime::health::{HealthServer, Readiness, install_metrics_recorder};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::worker::{DATABASE_CONDITION, Submitter};

/// The channel the `local_call_queue_notify` trigger (migration 0003) notifies on
/// every statement that inserts queue rows.
pub const QUEUE_CHANNEL: &str = "callbridge_queue";
/// Wait before listening again after the listener's connection failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// A built submitter: health server bound, database reachable (and migrated when
/// asked). Read [`Application::health_addr`], then [`Application::run_until_stopped`].
pub struct Application {
    submitter: Submitter,
    pool: PgPool,
    health: HealthServer,
}

impl Application {
    /// Serves `/healthz`, `/readyz` and `/metrics` on `config.bind` (port 0 picks a free
    /// port), connects to the database, and runs the migrations when
    /// `config.migrate_on_start` (or `--migrate`) asks for it.
    #[tracing::instrument(name = "submitter_build", skip_all, fields(bind = %config.bind, database = %config.database.identity))]
    pub async fn build(config: &SubmitterConfig) -> anyhow::Result<Application> {
        let readiness = Readiness::new();
        readiness.set_not_ready(DATABASE_CONDITION, "connecting to the database");
        let health =
            HealthServer::start(config.bind, readiness.clone(), install_metrics_recorder()).await?;
        let pool = db::connect_pool(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await?;
        if config.migrate_on_start {
            let applied = db::migrate_up(&pool).await?;
            tracing::info!(applied = applied.len(), "migrations applied at start");
        }
        if config.lifecycle.erasure_key.is_none() {
            refuse_erased_opt_outs_without_a_key(&pool).await?;
        }
        readiness.set_ready(DATABASE_CONDITION);
        let submitter = Submitter::new(pool.clone(), config, readiness)?;
        tracing::info!(owner = submitter.owner(), "submitter ready");
        Ok(Application {
            submitter,
            pool,
            health,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn health_addr(&self) -> SocketAddr {
        self.health.addr()
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Submits until `shutdown` fires; then the request in flight finishes and is
    /// recorded, leases not used are released, and the health server stops.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(wake_on_new_rows(
            self.pool.clone(),
            Arc::clone(&wake),
            shutdown.clone(),
        ));
        self.submitter.run(&wake, &shutdown).await;
        listener.abort();
        let _ = listener.await;
        self.pool.close().await;
        self.health.stop().await
    }
}

/// LISTENs on [`QUEUE_CHANNEL`] and wakes the loop on every notification. The loop also
/// polls, so a notification lost while the connection was down only delays.
async fn wake_on_new_rows(pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                // Rows inserted while nobody listened are found by this wake-up.
                wake.notify_one();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        received = listener.try_recv() => match received {
                            Ok(Some(_)) => wake.notify_one(),
                            // The connection dropped and was re-established.
                            Ok(None) => wake.notify_one(),
                            Err(error) => {
                                tracing::warn!(%error, "the queue listener failed; polling until it is back");
                                break;
                            }
                        },
                    }
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "could not LISTEN for new queue rows; polling until it works"
                );
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

async fn listen(pool: &PgPool) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .context("while connecting the queue listener")?;
    listener
        .listen(QUEUE_CHANNEL)
        .await
        .with_context(|| format!("while listening on {QUEUE_CHANNEL}"))?;
    Ok(listener)
}

/// An erased number on the do-not-call list is kept as its stand-in, which only the
/// erasure key can match again: without the key the submitter would call such a person,
/// so it does not start. (A database not migrated yet holds no such entry; the claim
/// reports the missing schema itself.)
async fn refuse_erased_opt_outs_without_a_key(pool: &PgPool) -> anyhow::Result<()> {
    let erased: Result<bool, sqlx::Error> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM do_not_call WHERE phone_number LIKE 'erased:%')",
    )
    .fetch_one(pool)
    .await;
    if let Ok(true) = erased {
        anyhow::bail!(
            "do_not_call holds opt-outs of erased numbers, which only the erasure key recognises: set CALLBRIDGE__LIFECYCLE__ERASURE_KEY to the key `callbridge erase` used"
        );
    }
    Ok(())
}
