//! The whole pipeline as it runs in production, one process per binary:
//!
//! ```text
//! sim ──callbacks──▶ ingress ──[proxy]──▶ RabbitMQ ◀──[proxy]── persister ──[proxy]──▶ Postgres
//!  ▲                                                            submitter ──[proxy]──┘
//!  └──────────────────────────── inserts, dispatch ─────────────┘
//! ```
//!
//! Every service reaches the servers through a [`TcpProxy`] the runner controls, so a
//! network cut can be aimed at one link; the runner's own connections go direct. A
//! service's link to a RabbitMQ cluster is one proxy per node ([`BrokerLinks`]), so one
//! node can be cut off while the others stay reachable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use callbridge_testkit::proxy::TcpProxy;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::Command;

use crate::infra::Infra;
use crate::ports::free_port;
use crate::process::{Binaries, ServiceProcess, run_command};
use crate::sim::{ACCOUNT_CODE, API_KEY, CALLBACK_SECRET, SimBehaviour, Simulator};

/// How long a freshly started service may take to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERMed ingress may take to finish in-flight callbacks and exit.
pub const INGRESS_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The submitter's lease: short, so a killed submitter's rows are taken over (and
/// reconciled) within seconds.
const SUBMITTER_LEASE_SECS: u64 = 4;
/// The submitter's request timeout: a lease must outlast the request made under it.
const SUBMITTER_REQUEST_TIMEOUT_MS: u64 = 2_000;

/// One service's link to the broker: a proxy in front of each node, in the nodes'
/// order (one for a single node).
#[derive(Debug)]
pub struct BrokerLinks {
    proxies: Vec<TcpProxy>,
}

impl BrokerLinks {
    async fn start(nodes: &[SocketAddr]) -> anyhow::Result<BrokerLinks> {
        let mut proxies = Vec::with_capacity(nodes.len());
        for node in nodes {
            proxies.push(TcpProxy::try_start(*node).await?);
        }
        Ok(BrokerLinks { proxies })
    }

    /// Cuts the link to every node (see [`TcpProxy::cut`]).
    pub fn cut(&self) {
        self.proxies.iter().for_each(TcpProxy::cut);
    }

    /// Restores the link to every node.
    pub fn restore(&self) {
        self.proxies.iter().for_each(TcpProxy::restore);
    }

    /// The proxy in front of node `index`.
    pub fn node(&self, index: usize) -> &TcpProxy {
        &self.proxies[index]
    }

    /// Where the service connects, node by node.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.proxies.iter().map(TcpProxy::addr).collect()
    }

    /// Connections forwarded to each node right now.
    pub fn live_connections(&self) -> Vec<usize> {
        self.proxies
            .iter()
            .map(TcpProxy::live_connections)
            .collect()
    }
}

/// The three kinds of service the runner starts, stops and kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Ingress,
    Persister,
    Submitter,
}

impl Role {
    pub fn binary(self) -> &'static str {
        match self {
            Role::Ingress => "callbridge-ingress",
            Role::Persister => "callbridge-persister",
            Role::Submitter => "callbridge-submitter",
        }
    }

    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Persister => "persister",
            Role::Submitter => "submitter",
        }
    }

    pub const ALL: [Role; 3] = [Role::Ingress, Role::Persister, Role::Submitter];
}

/// One running service process and the port it serves `/readyz` on.
#[derive(Debug)]
struct Instance {
    process: ServiceProcess,
    port: u16,
}

/// The running pipeline. Fields drop in order: the processes are killed before the
/// servers they use go away.
#[derive(Debug)]
pub struct System {
    ingress: Instance,
    persister: Instance,
    submitter: Instance,
    pub sim: Simulator,
    /// The runner's own connections, through `runner_database_proxy`.
    pub pool: PgPool,
    /// Persister and submitter → Postgres.
    pub database_proxy: TcpProxy,
    /// The runner's (and the traffic's `callbridge enqueue`) → Postgres: never cut, only
    /// moved to a promoted standby, so it stands for a direct connection.
    pub runner_database_proxy: TcpProxy,
    /// Ingress → RabbitMQ: the link the network-cut fault cuts.
    pub ingress_broker_proxy: BrokerLinks,
    /// Persister (consumer and outbox relay) → RabbitMQ.
    pub persister_broker_proxy: BrokerLinks,
    pub infra: Infra,
    binaries: Binaries,
    logs: PathBuf,
    http: reqwest::Client,
    /// The two ports ingress instances alternate between when one takes over.
    ingress_ports: [u16; 2],
    /// Processes started per role, for log file names.
    started: BTreeMap<Role, u32>,
}

impl System {
    /// Migrates the database, starts the simulator and every service, and waits until
    /// all of them are ready.
    #[tracing::instrument(skip_all, fields(logs = %logs.display()))]
    pub async fn start(
        binaries: Binaries,
        infra: Infra,
        behaviour: &SimBehaviour,
        logs: PathBuf,
    ) -> anyhow::Result<System> {
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("while creating {}", logs.display()))?;
        run_command(
            "callbridge migrate up",
            Command::new(binaries.path("callbridge"))
                .args(["migrate", "up", "--database-url", &infra.database.url()])
                .env_clear(),
        )
        .await?;

        let database_proxy = TcpProxy::try_start(infra.database.addr()?).await?;
        let runner_database_proxy = TcpProxy::try_start(infra.database.addr()?).await?;
        let ingress_broker_proxy = BrokerLinks::start(&infra.broker.addrs()).await?;
        let persister_broker_proxy = BrokerLinks::start(&infra.broker.addrs()).await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // Polls during a database outage must fail fast, not wait out the default.
            .acquire_timeout(Duration::from_secs(2))
            .connect(&infra.database.url_via(runner_database_proxy.addr())?)
            .await
            .context("while connecting the runner to the database")?;

        let ingress_ports = [free_port()?, free_port()?];
        let sim = Simulator::spawn(
            &binaries,
            free_port()?,
            &callback_url(ingress_ports[0]),
            behaviour,
            logs.join("sim.log"),
        )
        .await?;

        let mut started = BTreeMap::new();
        let mut spawn = |role: Role, port: u16, env: BTreeMap<String, String>| {
            spawn_instance(&binaries, &logs, &mut started, role, port, env)
        };
        let ingress = spawn(
            Role::Ingress,
            ingress_ports[0],
            ingress_env(&infra, &ingress_broker_proxy, ingress_ports[0]),
        )?;
        let persister_port = free_port()?;
        let persister = spawn(
            Role::Persister,
            persister_port,
            persister_env(
                &infra,
                &database_proxy,
                &persister_broker_proxy,
                persister_port,
            )?,
        )?;
        let submitter_port = free_port()?;
        let submitter = spawn(
            Role::Submitter,
            submitter_port,
            submitter_env(&infra, &database_proxy, &sim, submitter_port)?,
        )?;

        let mut system = System {
            binaries,
            logs,
            infra,
            database_proxy,
            runner_database_proxy,
            ingress_broker_proxy,
            persister_broker_proxy,
            sim,
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .context("while building the readiness HTTP client")?,
            ingress_ports,
            ingress,
            persister,
            submitter,
            started,
        };
        if !system.wait_ready(&Role::ALL, START_TIMEOUT).await? {
            bail!(
                "the services did not become ready:\n{}",
                system.not_ready_report().await
            );
        }
        Ok(system)
    }

    /// Whether `role`'s current instance answers 200 on `/readyz`.
    pub async fn is_ready(&self, role: Role) -> bool {
        let port = self.instance(role).port;
        match self
            .http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    /// Waits until every role in `roles` is ready; `false` after `timeout`. Fails when a
    /// service exited on its own.
    pub async fn wait_ready(&mut self, roles: &[Role], timeout: Duration) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let mut all = true;
            for role in roles {
                all &= self.is_ready(*role).await;
            }
            if all {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails, with the log's tail, if a service exited without being told to.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for role in Role::ALL {
            let instance = self.instance_mut(role);
            if let Some(status) = instance.process.exited() {
                bail!(
                    "{} exited on its own ({status}); log {}:\n{}",
                    instance.process.label(),
                    instance.process.log().display(),
                    instance.process.log_tail(30)
                );
            }
        }
        let sim = self.sim.process_mut();
        if let Some(status) = sim.exited() {
            bail!(
                "callbridge-sim exited on its own ({status}):\n{}",
                sim.log_tail(30)
            );
        }
        Ok(())
    }

    /// Which services are not ready and the tail of their logs.
    pub async fn not_ready_report(&self) -> String {
        let mut report = String::new();
        for role in Role::ALL {
            if !self.is_ready(role).await {
                let process = &self.instance(role).process;
                report.push_str(&format!(
                    "{} not ready; log {}:\n{}\n",
                    process.label(),
                    process.log().display(),
                    process.log_tail(15)
                ));
            }
        }
        report
    }

    /// SIGKILLs `role`'s instance and starts a replacement at once (as a Deployment
    /// would); returns the killed process's pid.
    #[tracing::instrument(skip_all, fields(role = role.name()))]
    pub async fn kill_and_replace(&mut self, role: Role) -> anyhow::Result<u32> {
        let port = self.instance(role).port;
        let env = self.env_for(role, port)?;
        let log = self.next_log(role);
        let label = format!("{}#{}", role.binary(), self.started[&role]);
        let killed = &mut self.instance_mut(role).process;
        let pid = killed.pid();
        // The replacement binds the same port, so the old process must be gone first.
        killed.kill().await?;
        let replacement =
            ServiceProcess::spawn(label, &self.binaries.path(role.binary()), &[], &env, log)?;
        self.instance_mut(role).process = replacement;
        Ok(pid)
    }

    /// Starts a second ingress on the other port, waits until it is ready, then SIGTERMs
    /// the current one and points the simulator's callbacks at the new one (the
    /// load balancer's move). Returns the old instance, still shutting down.
    #[tracing::instrument(skip_all)]
    pub async fn start_ingress_takeover(&mut self) -> anyhow::Result<ServiceProcess> {
        let old_port = self.ingress.port;
        let new_port = if old_port == self.ingress_ports[0] {
            self.ingress_ports[1]
        } else {
            self.ingress_ports[0]
        };
        let env = self.env_for(Role::Ingress, new_port)?;
        let log = self.next_log(Role::Ingress);
        let process = ServiceProcess::spawn(
            format!(
                "{}#{}",
                Role::Ingress.binary(),
                self.started[&Role::Ingress]
            ),
            &self.binaries.path(Role::Ingress.binary()),
            &[],
            &env,
            log,
        )?;
        let old = std::mem::replace(
            &mut self.ingress,
            Instance {
                process,
                port: new_port,
            },
        );
        if !self.wait_ready(&[Role::Ingress], START_TIMEOUT).await? {
            bail!(
                "the second ingress did not become ready:\n{}",
                self.not_ready_report().await
            );
        }
        old.process.terminate().await?;
        self.sim.redirect_callbacks(&callback_url(new_port)).await?;
        Ok(old.process)
    }

    /// The database URL for the runner's own tools (`callbridge enqueue`): it follows a
    /// failover.
    pub fn runner_database_url(&self) -> anyhow::Result<String> {
        self.infra
            .database
            .url_via(self.runner_database_proxy.addr())
    }

    /// Callbacks the current ingress has answered 200 so far (its `callbacks_total`
    /// metric); `None` when it cannot be asked.
    pub async fn ingress_accepted(&self) -> Option<u64> {
        let port = self.instance(Role::Ingress).port;
        let response = self
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .ok()?;
        let text = response.text().await.ok()?;
        Some(accepted_in_metrics(&text))
    }

    /// Whether a callback the ingress received after `since` has been stored: the whole
    /// path (sender → ingress → broker → persister → database) works again. `false`
    /// while the database cannot be asked.
    pub async fn stored_callback_received_after(&self, since: DateTime<Utc>) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM call_events WHERE received_at > $1)",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(false)
    }

    /// Whether every queue row whose insert request started at or before `at` has
    /// settled (left `submitting`): a killed submitter's request has been reconciled.
    pub async fn submissions_started_before_settled(&self, at: DateTime<Utc>) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM local_call_queue
                                 WHERE queue_status = 'submitting' AND attempt_started_at <= $1)",
        )
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .unwrap_or(false)
    }

    pub fn logs(&self) -> &Path {
        &self.logs
    }

    fn instance(&self, role: Role) -> &Instance {
        match role {
            Role::Ingress => &self.ingress,
            Role::Persister => &self.persister,
            Role::Submitter => &self.submitter,
        }
    }

    fn instance_mut(&mut self, role: Role) -> &mut Instance {
        match role {
            Role::Ingress => &mut self.ingress,
            Role::Persister => &mut self.persister,
            Role::Submitter => &mut self.submitter,
        }
    }

    fn env_for(&self, role: Role, port: u16) -> anyhow::Result<BTreeMap<String, String>> {
        match role {
            Role::Ingress => Ok(ingress_env(&self.infra, &self.ingress_broker_proxy, port)),
            Role::Persister => persister_env(
                &self.infra,
                &self.database_proxy,
                &self.persister_broker_proxy,
                port,
            ),
            Role::Submitter => submitter_env(&self.infra, &self.database_proxy, &self.sim, port),
        }
    }

    /// The log file of `role`'s next process (and counts it as started).
    fn next_log(&mut self, role: Role) -> PathBuf {
        next_log(&self.logs, &mut self.started, role)
    }
}

/// The sum of the `callbacks_total` series with `outcome="accepted"` in a Prometheus
/// text exposition.
fn accepted_in_metrics(text: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.starts_with("callbacks_total{") && line.contains(r#"outcome="accepted""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn next_log(logs: &Path, started: &mut BTreeMap<Role, u32>, role: Role) -> PathBuf {
    let count = started.entry(role).or_insert(0);
    *count += 1;
    logs.join(format!("{}-{}.log", role.binary(), count))
}

fn spawn_instance(
    binaries: &Binaries,
    logs: &Path,
    started: &mut BTreeMap<Role, u32>,
    role: Role,
    port: u16,
    env: BTreeMap<String, String>,
) -> anyhow::Result<Instance> {
    let log = next_log(logs, started, role);
    let process = ServiceProcess::spawn(
        format!("{}#{}", role.binary(), started[&role]),
        &binaries.path(role.binary()),
        &[],
        &env,
        log,
    )?;
    Ok(Instance { process, port })
}

fn callback_url(ingress_port: u16) -> String {
    format!("http://127.0.0.1:{ingress_port}/callback")
}

/// Settings every service gets.
fn common_env() -> BTreeMap<String, String> {
    [
        ("RUST_LOG", "info,sqlx=warn,lapin=warn"),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

fn ingress_env(infra: &Infra, broker: &BrokerLinks, port: u16) -> BTreeMap<String, String> {
    let mut env = common_env();
    env.extend(
        [
            ("INGRESS_BIND", format!("127.0.0.1:{port}")),
            ("RABBITMQ_URL", infra.broker.amqp_url_via(&broker.addrs())),
            ("CALLBACK_SECRET_KEY", CALLBACK_SECRET.to_owned()),
            // The sender retries a 503 after this; a second keeps the catch-up brisk.
            ("CALLBRIDGE__INGRESS__RETRY_AFTER_SECS", "1".to_owned()),
            (
                "CALLBRIDGE__INGRESS__SHUTDOWN_TIMEOUT_SECS",
                INGRESS_SHUTDOWN_TIMEOUT.as_secs().to_string(),
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    env
}

fn persister_env(
    infra: &Infra,
    database: &TcpProxy,
    broker: &BrokerLinks,
    port: u16,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = common_env();
    env.extend(
        [
            ("PERSISTER_BIND", format!("127.0.0.1:{port}")),
            (
                "CLIENT_CALLING_DB_URL",
                infra.database.url_via(database.addr())?,
            ),
            ("RABBITMQ_URL", infra.broker.amqp_url_via(&broker.addrs())),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    Ok(env)
}

fn submitter_env(
    infra: &Infra,
    database: &TcpProxy,
    sim: &Simulator,
    port: u16,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = common_env();
    env.extend(
        [
            ("SUBMITTER_BIND", format!("127.0.0.1:{port}")),
            (
                "CLIENT_CALLING_DB_URL",
                infra.database.url_via(database.addr())?,
            ),
            ("CENTRALIZED_CALLING_BASE_URL", sim.base_url().to_owned()),
            ("CENTRALIZED_CALLING_API_KEY", API_KEY.to_owned()),
            (
                "CALLBRIDGE__SUBMITTER__LEASE_SECS",
                SUBMITTER_LEASE_SECS.to_string(),
            ),
            ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", "500".to_owned()),
            ("CALLBRIDGE__SUBMITTER__BACKOFF_BASE_MS", "200".to_owned()),
            ("CALLBRIDGE__SUBMITTER__BACKOFF_MAX_MS", "2000".to_owned()),
            // Outages are expected here; a row must not be given up during one.
            ("CALLBRIDGE__SUBMITTER__MAX_ATTEMPTS", "1000".to_owned()),
            // The simulator answers 404 only for a batch it never stored: a resend is safe.
            (
                "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NOT_FOUND",
                "none".to_owned(),
            ),
            (
                "CALLBRIDGE__API__REQUEST_TIMEOUT_MS",
                SUBMITTER_REQUEST_TIMEOUT_MS.to_string(),
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    );
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_callbacks_are_summed_over_event_types() {
        let text = "# TYPE callbacks_total counter\n\
            callbacks_total{event_type=\"call_started\",outcome=\"accepted\"} 12\n\
            callbacks_total{event_type=\"call_completed\",outcome=\"accepted\"} 30\n\
            callbacks_total{event_type=\"call_completed\",outcome=\"unavailable\"} 7\n\
            callback_processing_time_seconds_count 49\n";
        assert_eq!(accepted_in_metrics(text), 42);
    }
}
