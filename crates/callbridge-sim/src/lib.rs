//! `callbridge-sim` plays the Centralized Calling System for tests, demos and benchmarks:
//! its three API endpoints with `X-API-KEY` auth and the documented limits,
//! signed callbacks for every placed call, fault injection on both sides, and a ground
//! truth of everything it accepted and sent.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use callbridge_sim::{SimConfig, Simulator};
//! let sim = Simulator::spawn(SimConfig::for_tests("http://127.0.0.1:8080/callback")?).await?;
//! println!("centralized API at {}", sim.base_url());
//! sim.patch_knobs(&serde_json::json!({"error_rate": 1.0, "fault_budget": 2}))?;
//! // … run the submitter against sim.base_url() …
//! sim.wait_idle(std::time::Duration::from_secs(30)).await;
//! let truth = sim.ground_truth(None);
//! # let _ = truth; Ok(()) }
//! ```
//!
//! What no public guide documents (batch-status and dispatch answers, a repeated
//! `batch_id`) is defined in `ASSUMPTIONS.md` beside this crate.

mod admin;
mod api;
mod calls;
pub mod config;
mod delivery;
pub mod ground_truth;
mod state;
mod store;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use anyhow::Context;

pub use crate::calls::CallbackPayload;
pub use crate::config::{
    AcceptThenFailMode, BatchStatusLayout, Endpoint, InvalidKnobs, Knobs, MAX_ITEMS_PER_INSERT,
    Outcome, OutcomeMix, ResponseLayout, SimConfig,
};
pub use crate::ground_truth::{
    BatchTruth, CallState, CallTruth, EventTruth, GroundTruth, RequestTruth, Totals,
};
use crate::state::SimState;
pub use callbridge_runtime::config::Secret;
pub use callbridge_types::centralized_api::{DISPATCH_PATH, INSERT_PATH};

/// Insert bodies of 1000 items with custom data are far above actix's 256 KiB default.
const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A running simulator. Dropping it leaves the server running until the runtime ends;
/// call [`Simulator::stop`] to stop it.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    server: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Simulator {
    /// Binds `config.bind` (port 0 picks a free port) and starts serving on the current
    /// tokio runtime.
    #[tracing::instrument(skip_all, fields(bind = %config.bind))]
    pub async fn spawn(config: SimConfig) -> anyhow::Result<Simulator> {
        config.validate().map_err(anyhow::Error::msg)?;
        let state = Arc::new(SimState::new(&config).context("while building the simulator")?);
        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("while binding SIM_BIND {}", config.bind))?;
        let addr = listener
            .local_addr()
            .context("while reading the bound address")?;

        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_REQUEST_BODY_BYTES))
                .configure(api::configure)
                .configure(admin::configure)
        })
        .workers(2)
        // The binary handles SIGTERM itself and stops through `stop`.
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)
        .context("while starting the HTTP server")?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(%addr, "callbridge-sim listening");
        Ok(Simulator {
            addr,
            state,
            server: handle,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: what `CENTRALIZED_CALLING_BASE_URL` should be set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    /// Changes the knobs a JSON object names, as `PUT /admin/knobs` does.
    pub fn patch_knobs(&self, patch: &serde_json::Value) -> Result<Knobs, InvalidKnobs> {
        self.state.patch_knobs(patch)
    }

    pub fn set_api_key(&self, key: &str) {
        self.state.set_api_key(Secret::new(key));
    }

    /// Points callbacks somewhere else and/or signs them with another secret.
    pub fn set_callback(&self, url: Option<reqwest::Url>, secret: Option<&str>) {
        self.state.set_callback(url, secret.map(Secret::new));
    }

    /// From now on API requests (within `fault_endpoints`) wait until [`Simulator::release`].
    pub fn hold(&self) {
        self.state.hold();
    }

    pub fn release(&self) {
        self.state.release();
    }

    /// API requests waiting on the hold right now.
    pub fn held_now(&self) -> usize {
        self.state.held_now()
    }

    /// Scripts outcomes per number, as `PUT /admin/script` does: the nth call placed to a
    /// number named here ends in the nth outcome listed for it, then in the outcome mix.
    /// Replaces any earlier script.
    pub fn set_script(&self, script: std::collections::BTreeMap<String, Vec<Outcome>>) {
        self.state.set_script(script);
    }

    /// Everything accepted and sent, optionally for one batch only.
    pub fn ground_truth(&self, batch_id: Option<i32>) -> GroundTruth {
        self.state.ground_truth(batch_id)
    }

    /// Waits until every dispatched call's callbacks are acknowledged or given up;
    /// `false` when `timeout` passed first.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.state.wait_idle(timeout).await
    }

    /// Forgets everything and restores the start-up knobs, key and callback target.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Waits until the server stops (it stops only through [`Simulator::stop`] or a
    /// fatal error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("while waiting for the HTTP server")?
            .context("while serving HTTP")
    }

    /// Stops accepting, lets in-flight requests finish, stops callback deliveries.
    pub async fn stop(self) {
        self.state.release();
        self.server.stop(true).await;
        self.state.cancel_deliveries();
    }
}
