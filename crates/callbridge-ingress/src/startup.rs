//! Building and running the ingress: the HTTP server, the publisher and its supervisor.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context;
use callbridge_runtime::config::IngressConfig;
use callbridge_runtime::health::{Readiness, configure_health_routes, install_metrics_recorder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::publisher::Publisher;
use crate::routes::callback::{CallbackState, receive_callback};
use crate::routes::tracing::trace_request;
use crate::supervisor::{self, BrokerSettings};

/// A bound, running ingress. Build it, read [`Application::port`], then
/// [`Application::run_until_stopped`].
pub struct Application {
    server: Server,
    port: u16,
    publisher: Publisher,
    readiness: Readiness,
    supervisor: JoinHandle<()>,
    stop_supervisor: CancellationToken,
}

impl Application {
    /// Binds the listener (port 0 picks a free one), starts the publisher's supervisor and
    /// the HTTP server. The broker need not be up: until it is, callbacks get 503 and
    /// `/readyz` says why.
    #[tracing::instrument(name = "ingress_build", skip_all, fields(bind = %config.bind, tls = config.tls.is_some()))]
    pub async fn build(config: IngressConfig) -> anyhow::Result<Application> {
        if !config.verification_enabled {
            tracing::warn!(
                "CALLBACK_VERIFICATION_ENABLED=false: callback signatures are NOT checked; \
                 anyone who can reach POST /callback can write call results. \
                 Use this only for local testing."
            );
        }
        // Everything that can fail at start comes before the supervisor is spawned.
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("while binding the ingress to {}", config.bind))?;
        let port = listener
            .local_addr()
            .context("while reading the ingress's bound address")?
            .port();

        let metrics = install_metrics_recorder();
        let readiness = Readiness::new();
        // Not ready until the supervisor has a pool: set here, before it is spawned, so
        // no probe can see the empty (ready) condition set in between.
        readiness.set_not_ready(supervisor::BROKER_CONDITION, "connecting to RabbitMQ");
        let publisher = Publisher::new(config.confirm_timeout);
        let stop_supervisor = CancellationToken::new();
        let supervisor = tokio::spawn(supervisor::supervise(
            publisher.clone(),
            BrokerSettings {
                url: config.amqp_url.clone(),
                pool_size: config.publisher_channels,
            },
            readiness.clone(),
            stop_supervisor.clone(),
        ));

        let state = web::Data::new(CallbackState {
            secrets: config.verification_enabled.then(|| {
                config
                    .secrets
                    .iter()
                    .map(|secret| secret.expose().as_bytes().to_vec())
                    .collect()
            }),
            default_accountcode: config.default_accountcode.clone().unwrap_or_default(),
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.body_timeout,
            retry_after_secs: u32::try_from(config.retry_after.as_secs()).unwrap_or(u32::MAX),
            publisher: publisher.clone(),
        });
        let app_readiness = readiness.clone();
        let server = HttpServer::new(move || {
            let readiness = app_readiness.clone();
            let metrics = metrics.clone();
            App::new()
                .app_data(state.clone())
                .configure(move |routes| configure_health_routes(routes, readiness, metrics))
                .service(
                    web::resource("/callback")
                        .wrap(from_fn(trace_request))
                        .route(web::post().to(receive_callback)),
                )
        })
        // Slow clients: a request head must arrive within the header timeout (actix answers
        // 408), a body within the body timeout (the handler answers 408: actix has no
        // deadline of its own for a body), and an idle keep-alive connection is closed.
        .client_request_timeout(config.header_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(config.keep_alive)
        // Signals belong to the service's shutdown token (run_until_stopped).
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs());
        let server = match tls {
            Some(tls) => server
                .listen_rustls_0_23(listener, tls)
                .context("while starting the TLS listener")?,
            None => server
                .listen(listener)
                .context("while starting the listener")?,
        }
        .run();
        tracing::info!(port, "ingress listening");

        Ok(Application {
            server,
            port,
            publisher,
            readiness,
            supervisor,
            stop_supervisor,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The readiness the ingress reports on `/readyz`.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` fires, then stops accepting, lets in-flight requests
    /// finish (their confirm waits included, bounded by the shutdown timeout) and
    /// closes the broker connection.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            server,
            publisher,
            supervisor,
            stop_supervisor,
            ..
        } = self;
        let handle = server.handle();
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!("stopping: no new connections; finishing in-flight callbacks");
            handle.stop(true).await;
        });
        let served = server.await.context("while serving HTTP");
        stopper.abort();
        stop_supervisor.cancel();
        if let Err(error) = supervisor.await {
            tracing::warn!(%error, "publisher supervisor ended abnormally");
        }
        supervisor::close(&publisher).await;
        tracing::info!("ingress stopped");
        served
    }
}
