//! Liveness, readiness and Prometheus metrics over HTTP: `GET /healthz`, `GET /readyz`,
//! `GET /metrics`. The persister and submitter run [`HealthServer`] on their own port;
//! the ingress mounts the same routes on its public App with [`configure_health_routes`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

/// Bucket bounds (seconds) for every histogram: request handling in milliseconds up to
/// call durations of many minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Bucket bounds for histograms of counts (names ending in `_size`, e.g. a batch size).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// How often histogram samples are folded into buckets when nobody scrapes, so memory
/// stays bounded.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's global `metrics` recorder (once;
/// later calls return the same handle). Histograms render as Prometheus histograms:
/// time buckets by default, count buckets for names ending in `_size`.
pub fn install_metrics_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(|builder| {
                    builder
                        .set_buckets_for_metric(Matcher::Suffix("_size".to_owned()), SIZE_BUCKETS)
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("no other global metrics recorder is installed in a callbridge binary");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("while starting the metrics upkeep thread");
            handle
        })
        .clone()
}

/// Whether the service can do its work, as a set of named conditions ("broker",
/// "database", "api_key", …) that must all hold. Clones share state.
///
/// A service registers each condition as not ready when it starts
/// (`set_not_ready("broker", "connecting")`) and flips it as connections come and go.
/// With no condition registered the service is ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<String, Condition>>>,
}

#[derive(Debug, Clone)]
struct Condition {
    ready: bool,
    reason: String,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Sets condition `name`; `reason` is shown by `/readyz` while not ready, so it must
    /// not hold secrets.
    pub fn set(&self, name: &str, ready: bool, reason: impl Into<String>) {
        self.lock().insert(
            name.to_owned(),
            Condition {
                ready,
                reason: reason.into(),
            },
        );
    }

    pub fn set_ready(&self, name: &str) {
        self.set(name, true, "");
    }

    pub fn set_not_ready(&self, name: &str, reason: impl Into<String>) {
        self.set(name, false, reason);
    }

    pub fn is_ready(&self) -> bool {
        self.lock().values().all(|condition| condition.ready)
    }

    /// The conditions that do not hold, with their reasons.
    pub fn not_ready(&self) -> BTreeMap<String, String> {
        self.lock()
            .iter()
            .filter(|(_, condition)| !condition.ready)
            .map(|(name, condition)| (name.clone(), condition.reason.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Condition>> {
        // Every write leaves the map consistent, so a panicked writer does not matter.
        self.conditions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Mounts `/healthz`, `/readyz` and `/metrics` on an actix `App`.
///
/// Each is a resource with one GET route, so another method answers 405 with
/// `Allow: GET` (`ServiceConfig::route` would make the method part of the path's match,
/// and any other method a 404).
pub fn configure_health_routes(
    config: &mut web::ServiceConfig,
    readiness: Readiness,
    metrics: PrometheusHandle,
) {
    config
        .app_data(web::Data::new(readiness))
        .app_data(web::Data::new(metrics))
        .service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)))
        .service(web::resource("/metrics").route(web::get().to(render_metrics)));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let not_ready = readiness.not_ready();
    if not_ready.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "reasons": not_ready}))
    }
}

async fn render_metrics(metrics: web::Data<PrometheusHandle>) -> HttpResponse {
    metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type(ContentType(
            "text/plain; version=0.0.4; charset=utf-8"
                .parse()
                .expect("a valid media type"),
        ))
        .body(metrics.render())
}

/// The health/readiness/metrics server of a worker (persister, submitter).
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HealthServer {
    /// Binds `bind` (port 0 picks a free port; see [`HealthServer::addr`]) and serves in
    /// the background until [`HealthServer::stop`].
    #[tracing::instrument(skip_all, fields(%bind))]
    pub async fn start(
        bind: SocketAddr,
        readiness: Readiness,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<HealthServer> {
        let server = actix_web::HttpServer::new(move || {
            let readiness = readiness.clone();
            let metrics = metrics.clone();
            actix_web::App::new()
                .configure(move |config| configure_health_routes(config, readiness, metrics))
        })
        // Probes and scrapes are tiny; one worker is plenty and keeps threads down.
        .workers(1)
        // Signals belong to the service's shutdown token, not to this side server.
        .disable_signals()
        .shutdown_timeout(5)
        .bind(bind)
        .with_context(|| format!("while binding the health server to {bind}"))?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .context("while reading the health server's address")?;
        let server = server.run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(%addr, "health, readiness and metrics served");
        Ok(HealthServer { addr, handle, task })
    }

    /// The bound address (useful after binding port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.handle.stop(true).await;
        self.task
            .await
            .context("while waiting for the health server to stop")?
            .context("while running the health server")
    }
}
