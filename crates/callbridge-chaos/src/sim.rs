//! The simulator as a child process, and its admin API: the knobs, the hold used to
//! catch the submitter mid-request, the callback target (moved when a second ingress
//! takes over) and the ground truth the run is reconciled against.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use callbridge_sim::GroundTruth;
use serde_json::{Value, json};

use crate::process::{Binaries, ServiceProcess};

/// What the simulator and the submitter agree on, as a registration would set them.
pub const API_KEY: &str = "chaos-api-key";
pub const CALLBACK_SECRET: &str = "chaos-callback-secret";
/// The simulator's default account code: the key's account, sent with dispatch-calls.
pub const ACCOUNT_CODE: &str = "SIM001";

/// How the simulated centralized system behaves during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimBehaviour {
    pub seed: u64,
    /// Multiplies realistic call timing (ringing, talk time): 0.02 turns a 4-minute call
    /// into about 5 seconds.
    pub time_scale: f64,
    /// Share of acknowledged callbacks sent again, byte for byte.
    pub duplicate_rate: f64,
    /// Share of calls whose events arrive in reverse order.
    pub reorder_rate: f64,
}

/// A running `callbridge-sim` and a client for its admin API.
#[derive(Debug)]
pub struct Simulator {
    process: ServiceProcess,
    base_url: String,
    http: reqwest::Client,
}

impl Simulator {
    /// Starts the simulator on `port`, sending callbacks to `callback_url`, and waits
    /// until it answers.
    #[tracing::instrument(skip_all, fields(port))]
    pub async fn spawn(
        binaries: &Binaries,
        port: u16,
        callback_url: &str,
        behaviour: &SimBehaviour,
        log: PathBuf,
    ) -> anyhow::Result<Simulator> {
        let env: BTreeMap<String, String> = [
            ("SIM_BIND", format!("127.0.0.1:{port}")),
            ("SIM_API_KEY", API_KEY.to_owned()),
            ("SIM_CALLBACK_URL", callback_url.to_owned()),
            ("SIM_CALLBACK_SECRET", CALLBACK_SECRET.to_owned()),
            ("SIM_SEED", behaviour.seed.to_string()),
            ("SIM_TIME_SCALE", behaviour.time_scale.to_string()),
            ("SIM_DUPLICATE_RATE", behaviour.duplicate_rate.to_string()),
            ("SIM_REORDER_RATE", behaviour.reorder_rate.to_string()),
            // A real webhook sender retries for hours; no outage of a run comes close to
            // this budget, so a callback the sender gave up on is a finding, not noise.
            ("SIM_CALLBACK_MAX_ATTEMPTS", "100000".to_owned()),
            ("SIM_CALLBACK_RETRY_BASE_MS", "100".to_owned()),
            ("SIM_CALLBACK_RETRY_MAX_MS", "2000".to_owned()),
            // Longer than the ingress's confirm timeout, so a slow confirm is answered.
            ("SIM_CALLBACK_TIMEOUT_MS", "15000".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let mut process =
            ServiceProcess::spawn("sim", &binaries.path("callbridge-sim"), &[], &env, log)?;
        let base_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("while building the admin HTTP client")?;
        for _ in 0..600 {
            if http.get(format!("{base_url}/healthz")).send().await.is_ok() {
                return Ok(Simulator {
                    process,
                    base_url,
                    http,
                });
            }
            if let Some(status) = process.exited() {
                bail!(
                    "callbridge-sim exited at once ({status}):\n{}",
                    process.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "callbridge-sim did not answer on port {port}:\n{}",
            process.log_tail(20)
        )
    }

    /// The simulator's process (to notice it dying).
    pub fn process_mut(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }

    /// `CENTRALIZED_CALLING_BASE_URL` for the submitter.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Everything the simulator accepted and sent.
    #[tracing::instrument(skip_all)]
    pub async fn ground_truth(&self) -> anyhow::Result<GroundTruth> {
        self.get_json("/admin/ground-truth").await
    }

    /// API requests waiting on the hold right now (a cheap ground-truth query: one batch
    /// id that cannot exist).
    pub async fn held_now(&self) -> anyhow::Result<usize> {
        let truth: GroundTruth = self.get_json("/admin/ground-truth?batch_id=-1").await?;
        Ok(truth.held_now)
    }

    /// From now on insert requests wait until [`Simulator::release`]; batch-status and
    /// dispatch go through, so only a submitter caught mid-insert is held.
    pub async fn hold_inserts(&self) -> anyhow::Result<()> {
        self.put_knobs(json!({"fault_endpoints": ["insert"]}))
            .await?;
        self.post("/admin/hold").await
    }

    /// Lets held requests proceed and restores hold and faults to every endpoint.
    pub async fn release(&self) -> anyhow::Result<()> {
        self.post("/admin/release").await?;
        self.put_knobs(json!({"fault_endpoints": ["insert", "batch_status", "dispatch"]}))
            .await
    }

    /// Sends every callback from now on (retries included) to `url`.
    pub async fn redirect_callbacks(&self, url: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .put(self.url("/admin/callback"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .context("while moving the simulator's callback URL")?;
        check(response, "PUT /admin/callback").await.map(drop)
    }

    /// Waits until every dispatched call's callbacks are acknowledged or given up;
    /// `false` when `timeout` passed first.
    /// Calls the simulator still has to place or report on.
    pub async fn pending_calls(&self) -> anyhow::Result<u64> {
        let answer: Value = self.get_json("/admin/wait-idle?timeout_ms=0").await?;
        Ok(answer["pending_calls"].as_u64().unwrap_or(0))
    }

    pub async fn wait_idle(&self, timeout: Duration) -> anyhow::Result<bool> {
        // One request waits at most a slice, well inside the admin client's 60 s timeout;
        // a long wait is several requests.
        const SLICE: Duration = Duration::from_secs(20);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer: Value = self
                .get_json(&format!(
                    "/admin/wait-idle?timeout_ms={}",
                    left.min(SLICE).as_millis()
                ))
                .await?;
            if answer["idle"].as_bool().unwrap_or(false) {
                return Ok(true);
            }
            if left <= SLICE {
                return Ok(false);
            }
        }
    }

    async fn put_knobs(&self, patch: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .put(self.url("/admin/knobs"))
            .json(&patch)
            .send()
            .await
            .context("while changing the simulator's knobs")?;
        check(response, "PUT /admin/knobs").await.map(drop)
    }

    async fn post(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .post(self.url(path))
            .send()
            .await
            .with_context(|| format!("while requesting POST {path}"))?;
        check(response, path).await.map(drop)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .with_context(|| format!("while requesting GET {path}"))?;
        let body = check(response, path).await?;
        serde_json::from_str(&body).with_context(|| format!("while reading GET {path}"))
    }
}

async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<String> {
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("while reading the answer to {what}"))?;
    if !status.is_success() {
        bail!("{what} answered {status}: {body}");
    }
    Ok(body)
}
