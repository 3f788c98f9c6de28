//! A run: servers, the pipeline, steady traffic, faults one after the other while the
//! traffic flows, then a drain and the reconciliation.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults::{self, Fault, FaultTiming};
use crate::infra::{Infra, Replication, ServerChoice};
use crate::process::Binaries;
use crate::reconcile::{self, Reconciliation};
use crate::report::Report;
use crate::sim::SimBehaviour;
use crate::system::System;
use crate::traffic::{TrafficShape, start_traffic};

/// Everything a run is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub database: ServerChoice,
    pub broker: ServerChoice,
    /// RabbitMQ nodes: more than one makes a private cluster (whatever `broker` says).
    pub rabbitmq_nodes: usize,
    /// A private Postgres primary with a standby replicating this way (whatever
    /// `database` says).
    pub postgres_standby: Option<Replication>,
    pub behaviour: SimBehaviour,
    pub traffic: TrafficShape,
    /// Traffic before the first fault.
    pub warmup: Duration,
    /// One cycle of faults; cycles repeat until `duration` has passed (at least one).
    pub faults: Vec<Fault>,
    pub duration: Duration,
    /// Quiet time after each fault's recovery.
    pub gap: Duration,
    pub timing: FaultTiming,
    /// How long the pipeline may take, after traffic stops, to settle everything.
    pub drain_timeout: Duration,
}

impl Scenario {
    /// The variant `make test` runs (about a minute): the shared servers with a database
    /// and vhost of their own, so it needs no root and does not load the machine with
    /// another broker. Every fault once; the restarts are connection cuts here.
    pub fn short(seed: u64) -> Scenario {
        Scenario {
            name: "short".into(),
            database: ServerChoice::Shared,
            broker: ServerChoice::Shared,
            rabbitmq_nodes: 1,
            postgres_standby: None,
            behaviour: SimBehaviour {
                seed,
                time_scale: 0.02,
                duplicate_rate: 0.2,
                reorder_rate: 0.2,
            },
            traffic: TrafficShape {
                numbers_per_batch: 5,
                every: Duration::from_secs(1),
            },
            warmup: Duration::from_secs(4),
            faults: vec![
                Fault::KillPersister,
                Fault::KillSubmitterMidRequest,
                Fault::TerminateIngressWithTakeover,
                Fault::CutIngressBroker,
                Fault::RestartBroker,
                Fault::RestartDatabase,
                Fault::KillPersisterRepeatedly,
            ],
            duration: Duration::ZERO,
            gap: Duration::from_secs(2),
            timing: FaultTiming {
                outage: Duration::from_secs(3),
                recovery_timeout: Duration::from_secs(60),
                accepting_within: None,
            },
            drain_timeout: Duration::from_secs(120),
        }
    }

    /// `make chaos`: private Postgres and RabbitMQ really restarted, every fault over and
    /// over for `duration`, the persister also killed before every other fault.
    pub fn long(seed: u64, duration: Duration) -> Scenario {
        let mut faults = Vec::new();
        for fault in Fault::ALL
            .into_iter()
            .filter(|f| *f != Fault::KillPersister)
        {
            faults.push(Fault::KillPersister);
            faults.push(fault);
        }
        Scenario {
            name: "long".into(),
            database: ServerChoice::Private,
            broker: ServerChoice::Private,
            rabbitmq_nodes: 1,
            postgres_standby: None,
            behaviour: SimBehaviour {
                seed,
                time_scale: 0.05,
                duplicate_rate: 0.2,
                reorder_rate: 0.2,
            },
            traffic: TrafficShape {
                numbers_per_batch: 10,
                every: Duration::from_secs(1),
            },
            warmup: Duration::from_secs(10),
            faults,
            duration,
            gap: Duration::from_secs(5),
            timing: FaultTiming {
                outage: Duration::from_secs(10),
                recovery_timeout: Duration::from_secs(120),
                accepting_within: None,
            },
            drain_timeout: Duration::from_secs(300),
        }
    }
}

impl Scenario {
    /// The cluster run in `make test` (about two minutes, root): three private RabbitMQ
    /// nodes clustered on this machine and the shared Postgres; the node leading
    /// `callbridge.persist` is killed once under traffic, and the ingress must accept
    /// callbacks again within 8 s.
    pub fn cluster_short(seed: u64) -> Scenario {
        Scenario {
            name: "cluster-short".into(),
            broker: ServerChoice::Private,
            rabbitmq_nodes: 3,
            faults: vec![Fault::KillPersistLeader],
            timing: FaultTiming {
                outage: Duration::from_secs(3),
                recovery_timeout: Duration::from_secs(60),
                accepting_within: Some(CLUSTER_ACCEPTING_WITHIN),
            },
            ..Scenario::short(seed)
        }
    }

    /// `make chaos-cluster`: `nodes` private RabbitMQ nodes clustered and a private
    /// Postgres; cycles of the cluster faults (the persist leader killed, a node cut off,
    /// a rolling restart) with a persister kill among them, for `duration`.
    pub fn cluster_long(seed: u64, duration: Duration, nodes: usize) -> Scenario {
        Scenario {
            name: "cluster-long".into(),
            rabbitmq_nodes: nodes,
            faults: vec![
                Fault::KillPersistLeader,
                Fault::CutBrokerNode,
                Fault::KillPersister,
                Fault::RollingBrokerRestart,
            ],
            timing: FaultTiming {
                outage: Duration::from_secs(10),
                recovery_timeout: Duration::from_secs(120),
                accepting_within: Some(CLUSTER_ACCEPTING_WITHIN),
            },
            ..Scenario::long(seed, duration)
        }
    }
}

impl Scenario {
    /// `--postgres-standby`: a private Postgres primary with a standby replicating as
    /// `replication`, failed over again and again (a new standby built after each) with
    /// a persister kill between failovers, on the shared broker, for `duration`. With an
    /// asynchronous standby the reconciliation shows what a failover lost.
    pub fn standby(seed: u64, duration: Duration, replication: Replication) -> Scenario {
        Scenario {
            name: match replication {
                Replication::Sync => "postgres-standby-sync".into(),
                Replication::Async => "postgres-standby-async".into(),
            },
            database: ServerChoice::Private,
            broker: ServerChoice::Shared,
            postgres_standby: Some(replication),
            faults: vec![Fault::FailoverDatabase, Fault::KillPersister],
            ..Scenario::long(seed, duration)
        }
    }
}

/// How soon after losing a RabbitMQ node the ingress must accept callbacks again.
pub const CLUSTER_ACCEPTING_WITHIN: Duration = Duration::from_secs(8);

/// Runs `scenario` with the binaries in `binaries`; logs and campaign files go under
/// `work_dir`. An `Err` means the run could not be carried out; a run that found
/// problems returns a [`Report`] that says so.
pub async fn run(
    scenario: &Scenario,
    binaries: Binaries,
    work_dir: &Path,
) -> anyhow::Result<Report> {
    let started_at = Utc::now();
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("while creating {}", work_dir.display()))?;
    tracing::info!(scenario = %scenario.name, dir = %work_dir.display(), "provisioning servers");
    let infra = Infra::provision(
        scenario.database,
        scenario.broker,
        scenario.rabbitmq_nodes,
        scenario.postgres_standby,
    )
    .await?;
    let servers = [infra.database.describe(), infra.broker.describe()];
    let campaigns = work_dir.join("campaigns");
    std::fs::create_dir_all(&campaigns)
        .with_context(|| format!("while creating {}", campaigns.display()))?;
    let mut system = System::start(
        binaries.clone(),
        infra,
        &scenario.behaviour,
        work_dir.join("logs"),
    )
    .await?;
    tracing::info!("pipeline ready; traffic starts");
    let database_url = system.runner_database_url()?;

    let stop_traffic = CancellationToken::new();
    let traffic = start_traffic(
        &binaries,
        database_url,
        campaigns,
        scenario.traffic,
        stop_traffic.clone(),
    );
    // Stops the traffic loop even when a fault fails and this function returns early.
    let _stop_on_exit = stop_traffic.clone().drop_guard();
    let traffic_started = Instant::now();
    tokio::time::sleep(scenario.warmup).await;
    system.check_alive()?;

    let mut records = Vec::new();
    if scenario.faults.is_empty() {
        tokio::time::sleep(scenario.duration).await;
    }
    'cycles: while !scenario.faults.is_empty() {
        for fault in &scenario.faults {
            let record = faults::inject(
                &mut system,
                *fault,
                scenario.timing,
                traffic_started.elapsed(),
            )
            .await?;
            tracing::info!(
                fault = %record.fault,
                recovered_ms = record.recovered_after.map(|d| d.as_millis() as u64),
                problem = record.problem.as_deref().unwrap_or(""),
                "fault done"
            );
            records.push(record);
            tokio::time::sleep(scenario.gap).await;
            if traffic_started.elapsed() >= scenario.duration
                && records.len() >= scenario.faults.len()
            {
                break 'cycles;
            }
        }
    }
    stop_traffic.cancel();
    let enqueued = traffic.await.context("the traffic loop panicked")?;
    let traffic_time = traffic_started.elapsed();
    tracing::info!(?enqueued, "traffic stopped; draining");

    let drain_started = Instant::now();
    let unsettled = drain(&system, scenario.drain_timeout).await?;
    let drain_time = drain_started.elapsed();
    let reconciliation = reconcile_now(&system).await?;
    Ok(Report {
        scenario: scenario.clone(),
        started_at,
        servers,
        traffic_time,
        enqueued,
        faults: records,
        unsettled,
        drain_time,
        reconciliation,
        logs: system.logs().to_path_buf(),
    })
}

/// The reconciliation of everything so far.
async fn reconcile_now(system: &System) -> anyhow::Result<Reconciliation> {
    let truth = system.sim.ground_truth().await?;
    let stored = reconcile::snapshot(&system.pool, &system.infra.broker.amqp_url()).await?;
    Ok(reconcile::reconcile(&truth, &stored))
}

/// Waits until everything enqueued is submitted, every callback delivered and stored and
/// every outcome published. `None` when it all settled; otherwise what was still waiting
/// when `timeout` passed (the reconciliation then shows what is missing).
async fn drain(system: &System, timeout: Duration) -> anyhow::Result<Option<String>> {
    let deadline = Instant::now() + timeout;
    let mut queue_waiting = String::new();
    while Instant::now() < deadline {
        queue_waiting = waiting_queue_rows(&system.pool).await;
        if queue_waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !queue_waiting.is_empty() {
        return Ok(Some(format!(
            "local_call_queue rows still waiting: {queue_waiting}"
        )));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !system.sim.wait_idle(left).await? {
        return Ok(Some(format!(
            "the simulator still had calls to place or callbacks to deliver ({} calls)",
            system.sim.pending_calls().await?
        )));
    }
    let mut verdict = reconcile_now(system).await?;
    loop {
        let waiting = [
            (
                "callbacks acknowledged but not stored",
                verdict.callbacks_lost,
            ),
            ("outcomes not published", verdict.unpublished_outcomes),
            (
                "messages left in callbridge.persist",
                verdict.persist_backlog,
            ),
            (
                "numbers not submitted exactly once",
                verdict.numbers_not_submitted,
            ),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(what, count)| format!("{what}: {count}"))
        .collect::<Vec<_>>();
        if waiting.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(format!(
                "still waiting at the deadline: {}",
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        verdict = reconcile_now(system).await?;
    }
}

/// Queue rows of one status that have not gone through the submitter yet.
#[derive(sqlx::FromRow)]
struct WaitingRows {
    queue_status: String,
    rows: i64,
    most_retries: Option<i32>,
    earliest_due_in_secs: Option<f64>,
    earliest_lease_end_in_secs: Option<f64>,
}

/// Queue rows not yet through the submitter, by status, with the oldest row's state: empty
/// when none wait. A database error counts as waiting (and says so).
async fn waiting_queue_rows(pool: &sqlx::PgPool) -> String {
    let waiting: Result<Vec<WaitingRows>, sqlx::Error> = sqlx::query_as(
        "SELECT queue_status, count(*) AS rows, max(retry_count) AS most_retries, \
                extract(epoch FROM min(next_attempt_at) - now())::float8 AS earliest_due_in_secs, \
                extract(epoch FROM min(lease_expires_at) - now())::float8 \
                    AS earliest_lease_end_in_secs \
         FROM local_call_queue WHERE queue_status IN ('pending', 'submitting') \
         GROUP BY queue_status ORDER BY queue_status",
    )
    .fetch_all(pool)
    .await;
    match waiting {
        Ok(waiting) => waiting
            .iter()
            .map(|group| {
                format!(
                    "{} {} (retries up to {}, earliest due in {:.1} s, \
                     earliest lease ends in {:.1} s)",
                    group.rows,
                    group.queue_status,
                    group.most_retries.unwrap_or(0),
                    group.earliest_due_in_secs.unwrap_or(0.0),
                    group.earliest_lease_end_in_secs.unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(error) => format!("unknown ({error})"),
    }
}
