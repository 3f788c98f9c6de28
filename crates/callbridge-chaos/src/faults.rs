//! The faults a run injects while traffic flows, and how recovery from each is measured.
//!
//! Recovery is measured from the moment the fault is over (the server is back, the link
//! restored, the replacement process started) until the pipeline works end to end again:
//! the affected services report ready and a callback the ingress received after that
//! moment is in `call_events`. For the submitter it is until the request it was killed
//! in the middle of has been reconciled.
//!
//! The RabbitMQ cluster's faults (the persist queue's leader killed, a node cut off) are
//! not healed before recovery is measured: the cluster must go on without the node, so
//! recovery counts from the fault itself, and the node comes back only afterwards. For
//! them the report also gives how soon the ingress accepted a callback again.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use callbridge_types::topology::PERSIST_QUEUE;

use crate::infra::{Broker, Database, PrivateRabbitCluster};
use crate::system::{INGRESS_SHUTDOWN_TIMEOUT, Role, System};

/// How often [`Fault::KillPersisterRepeatedly`] kills the persister.
pub const CRASH_LOOP_KILLS: u32 = 5;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the persister, replaced at once; its unacknowledged deliveries come
    /// back (and count toward `x-delivery-limit`).
    KillPersister,
    /// A crash loop: the persister killed [`CRASH_LOOP_KILLS`] times, each time about a
    /// second after its replacement became ready and took deliveries. Good messages are
    /// redelivered every time and must still not reach `x-delivery-limit`.
    KillPersisterRepeatedly,
    /// SIGKILL of the submitter while an insert request is in flight (held by the
    /// simulator), then a replacement: the request's outcome must be reconciled, never
    /// resent blindly.
    KillSubmitterMidRequest,
    /// SIGTERM of the ingress while a second instance takes over its traffic.
    TerminateIngressWithTakeover,
    /// The network between ingress and broker cut for the outage time.
    CutIngressBroker,
    /// RabbitMQ stopped for the outage time, then started again.
    RestartBroker,
    /// Postgres stopped (immediate: a crash) for the outage time, then started again.
    RestartDatabase,
    /// SIGKILL of the RabbitMQ node leading `callbridge.persist` (a cluster only); it is
    /// started again once the pipeline works without it.
    KillPersistLeader,
    /// The node most service connections use cut off from every service (their proxies
    /// to it cut; the nodes still see each other) for at least the outage time; a
    /// cluster only.
    CutBrokerNode,
    /// Every node of the cluster stopped and started again in turn, each only once no
    /// quorum queue would lose its majority without it.
    RollingBrokerRestart,
    /// The Postgres primary killed (`pg_ctl stop -m immediate`), the standby promoted and
    /// the services' proxy moved to it; a new standby is built once the pipeline works.
    FailoverDatabase,
}

impl Fault {
    /// The faults only a RabbitMQ cluster can take.
    pub const CLUSTER: [Fault; 3] = [
        Fault::KillPersistLeader,
        Fault::CutBrokerNode,
        Fault::RollingBrokerRestart,
    ];

    /// One of each (of a single-node run), in the order a run cycles through them.
    pub const ALL: [Fault; 7] = [
        Fault::KillPersister,
        Fault::KillPersisterRepeatedly,
        Fault::KillSubmitterMidRequest,
        Fault::TerminateIngressWithTakeover,
        Fault::CutIngressBroker,
        Fault::RestartBroker,
        Fault::RestartDatabase,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::KillPersister => "SIGKILL persister",
            Fault::KillPersisterRepeatedly => "SIGKILL persister ×5 (crash loop)",
            Fault::KillSubmitterMidRequest => "SIGKILL submitter mid-request",
            Fault::TerminateIngressWithTakeover => "SIGTERM ingress, second takes over",
            Fault::CutIngressBroker => "network cut ingress ↔ RabbitMQ",
            Fault::RestartBroker => "RabbitMQ restart",
            Fault::RestartDatabase => "Postgres restart",
            Fault::KillPersistLeader => "SIGKILL RabbitMQ node leading callbridge.persist",
            Fault::CutBrokerNode => "one RabbitMQ node cut off from the services",
            Fault::RollingBrokerRestart => "rolling restart of every RabbitMQ node",
            Fault::FailoverDatabase => "Postgres primary killed, standby promoted",
        })
    }
}

/// What happened when a fault was injected.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRecord {
    pub fault: Fault,
    /// Seconds since traffic started.
    pub at: Duration,
    /// How long the fault lasted (0 for a kill: the replacement starts at once).
    pub outage: Duration,
    /// From the end of the fault until the pipeline worked again; `None` when it did not
    /// recover within the run's recovery timeout.
    pub recovered_after: Option<Duration>,
    /// For the cluster faults, from the fault until the ingress answered 200 to a
    /// callback again; `None` when not measured or it never did.
    pub accepting_after: Option<Duration>,
    /// How it was done.
    pub note: String,
    /// What went wrong: not injected, not recovered, an ingress that did not drain.
    pub problem: Option<String>,
}

/// Timing of the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTiming {
    /// How long a cut link or a stopped server stays down.
    pub outage: Duration,
    /// How long the pipeline may take to work again before the fault counts as
    /// unrecovered.
    pub recovery_timeout: Duration,
    /// For the cluster faults: the ingress must accept callbacks again this soon after
    /// the fault, or the run fails.
    pub accepting_within: Option<Duration>,
}

/// Injects `fault` into the running system and measures recovery.
#[tracing::instrument(skip_all, fields(%fault))]
pub async fn inject(
    system: &mut System,
    fault: Fault,
    timing: FaultTiming,
    at: Duration,
) -> anyhow::Result<FaultRecord> {
    let mut record = FaultRecord {
        fault,
        at,
        outage: Duration::ZERO,
        recovered_after: None,
        accepting_after: None,
        note: String::new(),
        problem: None,
    };
    tracing::info!(%fault, at_secs = at.as_secs(), "injecting");
    // An ingress told to stop, finishing its in-flight callbacks while recovery is timed.
    let mut draining = None;
    // The broker node to bring back once recovery without it is measured.
    let mut afterwards = None;
    // Callbacks the ingress had accepted when a cluster fault began.
    let mut accepted_before = None;
    let healed = match fault {
        Fault::KillPersister => {
            let pid = system.kill_and_replace(Role::Persister).await?;
            record.note = format!("pid {pid} killed, replacement started at once");
            Healed::now()
        }
        Fault::KillPersisterRepeatedly => {
            for kill in 1..CRASH_LOOP_KILLS {
                system.kill_and_replace(Role::Persister).await?;
                if !system
                    .wait_ready(&[Role::Persister], timing.recovery_timeout)
                    .await?
                {
                    record.problem = Some(format!(
                        "replacement {kill} not ready within {} s",
                        timing.recovery_timeout.as_secs()
                    ));
                    return Ok(record);
                }
                // Long enough to be handed deliveries (and maybe commit some) before dying.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            system.kill_and_replace(Role::Persister).await?;
            record.note = format!(
                "killed {CRASH_LOOP_KILLS} times, each about 1 s after its replacement was ready"
            );
            Healed::now()
        }
        Fault::KillSubmitterMidRequest => match kill_submitter_mid_request(system).await? {
            Some(healed) => {
                record.note = "killed with an insert held in flight; released after".into();
                healed
            }
            None => {
                record.problem =
                    Some("not injected: no insert request came within 30 s to kill it in".into());
                return Ok(record);
            }
        },
        Fault::TerminateIngressWithTakeover => {
            draining = Some(system.start_ingress_takeover().await?);
            record.note = "second instance ready, then SIGTERM and callbacks moved to it".into();
            Healed::now()
        }
        Fault::CutIngressBroker => {
            let started = Instant::now();
            system.ingress_broker_proxy.cut();
            tokio::time::sleep(timing.outage).await;
            system.ingress_broker_proxy.restore();
            record.outage = started.elapsed();
            record.note = "every ingress connection to the broker cut, new ones refused".into();
            Healed::now()
        }
        Fault::RestartBroker => {
            let started = Instant::now();
            record.note = restart_broker(system, timing.outage).await?;
            record.outage = started.elapsed();
            Healed::now()
        }
        Fault::RestartDatabase => {
            let started = Instant::now();
            record.note = restart_database(system, timing.outage).await?;
            record.outage = started.elapsed();
            Healed::now()
        }
        Fault::FailoverDatabase => {
            let started = Instant::now();
            let Database::Replicated(pair) = &mut system.infra.database else {
                record.problem = Some("not injected: needs a Postgres standby".into());
                return Ok(record);
            };
            pair.fail_over().await?;
            let promoted = pair.primary().addr();
            // The operator's switch: the service address now reaches the new primary.
            for proxy in [&system.database_proxy, &system.runner_database_proxy] {
                proxy.retarget(promoted);
                proxy.cut();
                proxy.restore();
            }
            record.outage = started.elapsed();
            record.note = format!(
                "pg_ctl stop -m immediate, pg_ctl promote, proxies moved to :{}",
                promoted.port()
            );
            afterwards = Some(Afterwards::AddStandby);
            Healed::now()
        }
        Fault::KillPersistLeader | Fault::CutBrokerNode | Fault::RollingBrokerRestart => {
            let Broker::Cluster(cluster) = &system.infra.broker else {
                record.problem = Some("not injected: needs a RabbitMQ cluster".into());
                return Ok(record);
            };
            // Counted right before the fault strikes (finding the leader takes seconds).
            let (note, healed, after, before) = match fault {
                Fault::KillPersistLeader => {
                    let leader = cluster.queue_leader(PERSIST_QUEUE, None).await?;
                    let before = system.ingress_accepted().await;
                    let (note, healed, after) = kill_persist_leader(cluster, leader).await?;
                    (note, healed, after, before)
                }
                Fault::CutBrokerNode => {
                    let before = system.ingress_accepted().await;
                    let (note, healed, after) = cut_busiest_node(system)?;
                    (note, healed, after, before)
                }
                _ => {
                    let before = system.ingress_accepted().await;
                    let (note, healed, after) =
                        rolling_restart(cluster, timing.recovery_timeout).await?;
                    (note, healed, after, before)
                }
            };
            record.note = note;
            afterwards = after;
            accepted_before = before;
            healed
        }
    };
    let recovery = wait_recovered(
        system,
        fault,
        &healed,
        accepted_before,
        timing.recovery_timeout,
    )
    .await;
    record.recovered_after = recovery.working;
    record.accepting_after = recovery.accepting;
    if let (Some(within), Some(_)) = (timing.accepting_within, accepted_before) {
        match recovery.accepting {
            Some(after) if after <= within => {}
            Some(after) => {
                record.problem = Some(format!(
                    "the ingress accepted callbacks again only after {:.1} s (limit {} s)",
                    after.as_secs_f64(),
                    within.as_secs()
                ));
            }
            None => {
                record.problem = Some("the ingress never accepted a callback again".into());
            }
        }
    }
    let ready: Vec<String> = recovery
        .ready
        .iter()
        .map(|(role, after)| match after {
            Some(after) => format!("{} ready after {:.1} s", role.name(), after.as_secs_f64()),
            None => format!("{} never ready", role.name()),
        })
        .collect();
    record.note = format!("{}; {}", record.note, ready.join(", "));
    if let Some(after) = record.accepting_after {
        record.note = format!(
            "{}; ingress accepting after {:.1} s",
            record.note,
            after.as_secs_f64()
        );
    }
    if let Some(afterwards) = afterwards {
        let started = Instant::now();
        let back = bring_back(system, afterwards, timing).await?;
        match afterwards {
            Afterwards::StartNode { down_since, .. }
            | Afterwards::RestoreNode { down_since, .. } => record.outage = down_since.elapsed(),
            Afterwards::AddStandby => {}
        }
        record.note = format!(
            "{}; {back} ({:.1} s)",
            record.note,
            started.elapsed().as_secs_f64()
        );
    }
    if record.recovered_after.is_none() {
        record.problem = Some(format!(
            "not recovered within {} s",
            timing.recovery_timeout.as_secs()
        ));
        tracing::error!(%fault, "not recovered:\n{}", system.not_ready_report().await);
    }
    if let Some(mut old) = draining {
        let exit = old
            .wait_exit(INGRESS_SHUTDOWN_TIMEOUT + Duration::from_secs(5))
            .await?;
        match exit {
            Some(status) if status.success() => {
                record.note.push_str("; the old one drained and exited 0");
            }
            Some(status) => {
                record.problem = Some(format!("the old ingress exited with {status}"));
            }
            None => {
                old.kill().await.ok();
                record.problem = Some("the old ingress did not exit after SIGTERM".into());
            }
        }
    }
    system.check_alive()?;
    Ok(record)
}

/// The moment a fault ended, on both clocks: the monotonic one for durations, the wall
/// clock to compare with `call_events.received_at`.
struct Healed {
    instant: Instant,
    wall: DateTime<Utc>,
}

impl Healed {
    fn now() -> Healed {
        Healed {
            instant: Instant::now(),
            wall: Utc::now(),
        }
    }
}

/// Holds inserts at the simulator, waits for the submitter's next one, kills the
/// submitter while the request is in flight, lets the request complete, and starts a
/// replacement. `None` when no insert came.
async fn kill_submitter_mid_request(system: &mut System) -> anyhow::Result<Option<Healed>> {
    system.sim.hold_inserts().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut caught = false;
    while Instant::now() < deadline {
        if system.sim.held_now().await? > 0 {
            caught = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !caught {
        system.sim.release().await?;
        return Ok(None);
    }
    let healed = Healed::now();
    system.kill_and_replace(Role::Submitter).await?;
    // The held request now takes effect at the simulator with nobody to hear the answer:
    // exactly the case the replacement must reconcile instead of resending.
    system.sim.release().await?;
    Ok(Some(healed))
}

async fn restart_broker(system: &mut System, outage: Duration) -> anyhow::Result<String> {
    match &system.infra.broker {
        Broker::Private(node) => {
            node.stop().await.context("while stopping RabbitMQ")?;
            tokio::time::sleep(outage).await;
            node.start_node()
                .await
                .context("while starting RabbitMQ again")?;
            Ok("rabbitmqctl stop, then rabbitmq-server".into())
        }
        Broker::Cluster(cluster) => {
            for node in cluster.nodes() {
                node.stop()
                    .await
                    .context("while stopping a RabbitMQ node")?;
            }
            tokio::time::sleep(outage).await;
            // Together: a node restarted alone waits for the peers that stopped after it.
            let started =
                futures::future::join_all(cluster.nodes().iter().map(|node| node.start_node()))
                    .await;
            for started in started {
                started.context("while starting a RabbitMQ node again")?;
            }
            Ok("every node stopped with rabbitmqctl stop, then all started together".into())
        }
        Broker::Shared(_) => {
            // The shared broker serves other tests: every connection of ours is cut
            // instead, which is what the services see of a restart.
            system.ingress_broker_proxy.cut();
            system.persister_broker_proxy.cut();
            tokio::time::sleep(outage).await;
            system.ingress_broker_proxy.restore();
            system.persister_broker_proxy.restore();
            Ok("shared broker: every connection cut, new ones refused".into())
        }
    }
}

async fn restart_database(system: &mut System, outage: Duration) -> anyhow::Result<String> {
    match &system.infra.database {
        Database::Private(cluster) => {
            cluster.stop().await.context("while stopping Postgres")?;
            tokio::time::sleep(outage).await;
            cluster
                .start_server()
                .await
                .context("while starting Postgres again")?;
            Ok("pg_ctl stop -m immediate, then pg_ctl start".into())
        }
        Database::Replicated(_) => {
            anyhow::bail!("a replicated database is failed over, not restarted")
        }
        Database::Shared(_) => {
            system.database_proxy.cut();
            tokio::time::sleep(outage).await;
            system.database_proxy.restore();
            Ok("shared Postgres: every service connection cut, new ones refused".into())
        }
    }
}

/// When the pipeline worked again after a fault, when each affected service first
/// reported ready, and (cluster faults) when the ingress accepted a callback again.
struct Recovery {
    working: Option<Duration>,
    ready: Vec<(Role, Option<Duration>)>,
    accepting: Option<Duration>,
}

/// Waits until the pipeline works again after `fault` (see the module doc).
async fn wait_recovered(
    system: &System,
    fault: Fault,
    healed: &Healed,
    accepted_before: Option<u64>,
    timeout: Duration,
) -> Recovery {
    let roles: &[Role] = match fault {
        Fault::KillPersister | Fault::KillPersisterRepeatedly => &[Role::Persister],
        Fault::KillSubmitterMidRequest => &[Role::Submitter],
        Fault::TerminateIngressWithTakeover | Fault::CutIngressBroker => &[Role::Ingress],
        Fault::RestartBroker => &[Role::Ingress, Role::Persister],
        Fault::RestartDatabase | Fault::FailoverDatabase => &[Role::Persister, Role::Submitter],
        Fault::KillPersistLeader | Fault::CutBrokerNode | Fault::RollingBrokerRestart => {
            &[Role::Ingress, Role::Persister]
        }
    };
    let mut accepting = None;
    let mut ready: Vec<(Role, Option<Duration>)> = roles.iter().map(|role| (*role, None)).collect();
    let deadline = healed.instant + timeout;
    loop {
        if let (None, Some(before)) = (accepting, accepted_before)
            && system
                .ingress_accepted()
                .await
                .is_some_and(|now| now > before)
        {
            accepting = Some(healed.instant.elapsed());
        }
        let mut all_ready = true;
        for (role, since) in &mut ready {
            if system.is_ready(*role).await {
                since.get_or_insert_with(|| healed.instant.elapsed());
            } else {
                all_ready = false;
            }
        }
        let working = match fault {
            Fault::KillSubmitterMidRequest => {
                system.submissions_started_before_settled(healed.wall).await
            }
            _ => system.stored_callback_received_after(healed.wall).await,
        };
        if all_ready && working {
            // A callback received after the fault is stored, so the ingress accepted
            // one: the last poll may just have come before its answer.
            if let (None, Some(_)) = (accepting, accepted_before) {
                accepting = Some(healed.instant.elapsed());
            }
            return Recovery {
                working: Some(healed.instant.elapsed()),
                ready,
                accepting,
            };
        }
        if Instant::now() >= deadline {
            return Recovery {
                working: None,
                ready,
                accepting,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What brings a broker node back after a cluster fault, once recovery without it was
/// measured.
#[derive(Debug, Clone, Copy)]
enum Afterwards {
    /// Start the killed node again.
    StartNode { node: usize, down_since: Instant },
    /// Restore the services' links to the node, no sooner than the outage time after
    /// they were cut.
    RestoreNode { node: usize, down_since: Instant },
    /// Build a new standby of the promoted primary.
    AddStandby,
}

/// SIGKILLs node `leader`, the one leading `callbridge.persist`.
async fn kill_persist_leader(
    cluster: &PrivateRabbitCluster,
    leader: usize,
) -> anyhow::Result<(String, Healed, Option<Afterwards>)> {
    let node = &cluster.nodes()[leader];
    let pid = node
        .kill()
        .await?
        .with_context(|| format!("the leader {} was not running", node.node_name()))?;
    let healed = Healed::now();
    let down_since = healed.instant;
    Ok((
        format!(
            "{} (pid {pid}) led {PERSIST_QUEUE}; SIGKILL",
            node.node_name()
        ),
        healed,
        Some(Afterwards::StartNode {
            node: leader,
            down_since,
        }),
    ))
}

/// Cuts every service's link to the node most of their connections use.
fn cut_busiest_node(system: &System) -> anyhow::Result<(String, Healed, Option<Afterwards>)> {
    let ingress = system.ingress_broker_proxy.live_connections();
    let persister = system.persister_broker_proxy.live_connections();
    let busiest = (0..ingress.len())
        .max_by_key(|node| ingress[*node] + persister[*node])
        .context("the broker has no nodes")?;
    system.ingress_broker_proxy.node(busiest).cut();
    system.persister_broker_proxy.node(busiest).cut();
    let healed = Healed::now();
    let down_since = healed.instant;
    Ok((
        format!(
            "node {} cut off (it held {} ingress and {} persister connections)",
            busiest + 1,
            ingress[busiest],
            persister[busiest]
        ),
        healed,
        Some(Afterwards::RestoreNode {
            node: busiest,
            down_since,
        }),
    ))
}

/// Stops and starts every node in turn, each once the others can carry every quorum
/// queue without it.
async fn rolling_restart(
    cluster: &PrivateRabbitCluster,
    timeout: Duration,
) -> anyhow::Result<(String, Healed, Option<Afterwards>)> {
    let started = Instant::now();
    let mut steps = Vec::new();
    for (index, node) in cluster.nodes().iter().enumerate() {
        let waited = Instant::now();
        cluster.await_online_quorum_plus_one(index, timeout).await?;
        let stopping = Instant::now();
        node.stop().await.context("while stopping a node")?;
        node.start_node()
            .await
            .context("while starting a node again")?;
        steps.push(format!(
            "{} {:.0} s (+{:.0} s waiting for quorum + 1)",
            node.node_name(),
            stopping.elapsed().as_secs_f64(),
            (stopping - waited).as_secs_f64()
        ));
    }
    Ok((
        format!(
            "rabbitmqctl stop / rabbitmq-server node by node in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            steps.join(", ")
        ),
        Healed::now(),
        None,
    ))
}

/// Brings the node of a cluster fault back and waits until the cluster could lose a
/// node again; says how.
async fn bring_back(
    system: &mut System,
    afterwards: Afterwards,
    timing: FaultTiming,
) -> anyhow::Result<String> {
    if let (Afterwards::AddStandby, Database::Replicated(pair)) =
        (afterwards, &mut system.infra.database)
    {
        pair.add_standby().await?;
        return Ok("new standby built and streaming".into());
    }
    let Broker::Cluster(cluster) = &system.infra.broker else {
        return Ok(String::new());
    };
    let node = match afterwards {
        Afterwards::StartNode { node, .. } => {
            cluster.nodes()[node]
                .start_node()
                .await
                .context("while starting the killed node again")?;
            node
        }
        Afterwards::RestoreNode { node, down_since } => {
            let left = timing.outage.saturating_sub(down_since.elapsed());
            tokio::time::sleep(left).await;
            system.ingress_broker_proxy.node(node).restore();
            system.persister_broker_proxy.node(node).restore();
            node
        }
        Afterwards::AddStandby => return Ok(String::new()),
    };
    cluster
        .await_online_quorum_plus_one(node, timing.recovery_timeout)
        .await?;
    Ok(match afterwards {
        Afterwards::StartNode { .. } => "node started again and back in its queues",
        Afterwards::RestoreNode { .. } | Afterwards::AddStandby => "links restored",
    }
    .to_owned())
}
