//! Building and running the console: its database pool, the HTTP server and its routes.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use callbridge_runtime::config::{ConsoleConfig, NumbersConfig, Secret};
use callbridge_runtime::health::{Readiness, configure_health_routes, install_metrics_recorder};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::centralized::CentralView;
use crate::pages::{
    assets, calls, campaign, campaigns, dead_letters, dnc, login, review, services,
};

/// How often the database is pinged for `/readyz`.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Readiness condition: the database answers.
const DATABASE_CONDITION: &str = "database";

/// What every handler reads.
pub struct AppState {
    pub pool: PgPool,
    /// How often a page refreshes its live part, in milliseconds.
    pub refresh_ms: u64,
    pub amqp_url: Secret,
    /// The dead letters' AMQP connection.
    pub broker: Broker,
    pub management_url: Secret,
    pub services: Vec<(String, url::Url)>,
    /// For the services' readiness and RabbitMQ's management API: short timeouts, so a
    /// page never waits long on a service that does not answer.
    pub http: reqwest::Client,
    /// The centralized system's batch-status, for the campaign page.
    pub central: CentralView,
    /// How the do-not-call page reads numbers.
    pub numbers: NumbersConfig,
}

/// A bound, running console. Build it, read [`Application::port`], then
/// [`Application::run_until_stopped`].
pub struct Application {
    server: Server,
    port: u16,
    readiness: Readiness,
    watcher: JoinHandle<()>,
    stop_watcher: CancellationToken,
}

impl Application {
    /// Connects to the database, binds the listener (port 0 picks a free one) and starts
    /// the HTTP server.
    #[tracing::instrument(name = "console_build", skip_all, fields(bind = %config.bind))]
    pub async fn build(config: ConsoleConfig) -> anyhow::Result<Application> {
        let pool = callbridge_runtime::db::connect_pool(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await?;
        Application::with_pool(config, pool)
    }

    /// As [`Application::build`], on a pool the caller opened (a test's database).
    ///
    /// The pages run on the HTTP server's worker runtimes, so a connection the pool opens
    /// for a page belongs to one of them and dies when the server stops: a caller that
    /// goes on using the pool after [`Application::run_until_stopped`] can draw such a
    /// connection and fail ("a Tokio context was found, but it is being shutdown"). The
    /// benchmark's console stage did; give a console that stops before its caller is
    /// done a pool of its own (or use [`Application::build`]).
    pub fn with_pool(config: ConsoleConfig, pool: PgPool) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("while binding the console to {}", config.bind))?;
        let port = listener
            .local_addr()
            .context("while reading the console's bound address")?
            .port();
        let metrics = install_metrics_recorder();
        let readiness = Readiness::new();
        readiness.set_not_ready(DATABASE_CONDITION, "checking the database");
        let stop_watcher = CancellationToken::new();
        let watcher = tokio::spawn(watch_database(
            pool.clone(),
            readiness.clone(),
            stop_watcher.clone(),
        ));

        let auth = web::Data::new(Authenticator::new(
            &config.operator_token,
            config.viewer_token.as_ref(),
            config.session_ttl,
            config.secure_cookie,
        ));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .user_agent(concat!("callbridge-console/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("while building the console's HTTP client")?;
        let state = web::Data::new(AppState {
            pool,
            refresh_ms: u64::try_from(config.refresh.as_millis()).unwrap_or(u64::MAX),
            amqp_url: config.amqp_url.clone(),
            broker: Broker::new(config.amqp_url.clone()),
            management_url: config.management_url.clone(),
            services: config.services.clone(),
            http,
            central: CentralView::new(config.api.as_ref())?,
            numbers: config.numbers,
        });
        let app_readiness = readiness.clone();
        let server = HttpServer::new(move || {
            let readiness = app_readiness.clone();
            let metrics = metrics.clone();
            App::new()
                .app_data(state.clone())
                .app_data(auth.clone())
                .configure(move |routes| configure_health_routes(routes, readiness, metrics))
                .configure(routes)
        })
        // Signals belong to the service's shutdown token (run_until_stopped).
        .disable_signals()
        .shutdown_timeout(10)
        .listen(listener)
        .context("while starting the console's listener")?
        .run();
        tracing::info!(port, "console listening");
        Ok(Application {
            server,
            port,
            readiness,
            watcher,
            stop_watcher,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The readiness the console reports on `/readyz`.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` fires, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            server,
            watcher,
            stop_watcher,
            ..
        } = self;
        let handle = server.handle();
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!("stopping: no new connections; finishing in-flight requests");
            handle.stop(true).await;
        });
        let served = server.await.context("while serving HTTP");
        stopper.abort();
        stop_watcher.cancel();
        watcher.await.ok();
        tracing::info!("console stopped");
        served
    }
}

/// The console's pages, actions and assets.
fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/").route(web::get().to(root)))
        .service(
            web::resource("/login")
                .route(web::get().to(login::form))
                .route(web::post().to(login::sign_in)),
        )
        .service(web::resource("/logout").route(web::post().to(login::sign_out)))
        .service(web::resource("/campaigns").route(web::get().to(campaigns::page)))
        // A GET guard on the resource itself, so a POST to /campaigns/action passes on to
        // its own resource below, and a campaign named "action" still has its page.
        .service(
            web::resource("/campaigns/{name}")
                .guard(actix_web::guard::Get())
                .route(web::get().to(campaign::page)),
        )
        .service(web::resource("/dnc").route(web::get().to(dnc::page)))
        .service(web::resource("/dnc/add").route(web::post().to(dnc::add)))
        .service(web::resource("/dnc/remove").route(web::post().to(dnc::remove)))
        .service(web::resource("/campaigns/action").route(web::post().to(campaigns::act)))
        .service(web::resource("/review").route(web::get().to(review::page)))
        .service(web::resource("/review/resolve").route(web::post().to(review::resolve)))
        .service(web::resource("/dead-letters").route(web::get().to(dead_letters::page)))
        .service(web::resource("/dead-letters/replay").route(web::post().to(dead_letters::replay)))
        .service(web::resource("/dead-letters/purge").route(web::post().to(dead_letters::purge)))
        .service(web::resource("/services").route(web::get().to(services::page)))
        .service(web::resource("/calls").route(web::get().to(calls::page)))
        .service(web::resource("/assets/console.css").route(web::get().to(assets::css)))
        .service(web::resource("/assets/console.js").route(web::get().to(assets::js)));
}

async fn root(_: crate::auth::Session) -> actix_web::HttpResponse {
    actix_web::HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/campaigns"))
        .finish()
}

/// Keeps the database condition of `/readyz` current.
async fn watch_database(pool: PgPool, readiness: Readiness, stop: CancellationToken) {
    loop {
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => readiness.set_ready(DATABASE_CONDITION),
            Err(error) => {
                readiness.set_not_ready(DATABASE_CONDITION, "the database does not answer");
                tracing::warn!(error = %error, "console: the database does not answer");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DATABASE_CHECK_INTERVAL) => {}
        }
    }
}
