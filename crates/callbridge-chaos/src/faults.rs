//! The faults a run injects while traffic flows, and how recovery from each is measured.
//!
//! Recovery is measured from the moment the fault is over (the server is back, the link
//! restored, the replacement process started) until the pipeline works end to end again:
//! the affected services report ready and a callback the ingress received after that
//! moment is in `call_events`. For the submitter it is until the request it was killed
//! in the middle of has been reconciled.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::infra::{Broker, Database};
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
}

impl Fault {
    /// One of each, in the order a run cycles through them.
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
        note: String::new(),
        problem: None,
    };
    tracing::info!(%fault, at_secs = at.as_secs(), "injecting");
    // An ingress told to stop, finishing its in-flight callbacks while recovery is timed.
    let mut draining = None;
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
    };
    let recovery = wait_recovered(system, fault, &healed, timing.recovery_timeout).await;
    record.recovered_after = recovery.working;
    let ready: Vec<String> = recovery
        .ready
        .iter()
        .map(|(role, after)| match after {
            Some(after) => format!("{} ready after {:.1} s", role.name(), after.as_secs_f64()),
            None => format!("{} never ready", role.name()),
        })
        .collect();
    record.note = format!("{}; {}", record.note, ready.join(", "));
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
        Database::Shared(_) => {
            system.database_proxy.cut();
            tokio::time::sleep(outage).await;
            system.database_proxy.restore();
            Ok("shared Postgres: every service connection cut, new ones refused".into())
        }
    }
}

/// When the pipeline worked again after a fault, and when each affected service first
/// reported ready.
struct Recovery {
    working: Option<Duration>,
    ready: Vec<(Role, Option<Duration>)>,
}

/// Waits until the pipeline works again after `fault` (see the module doc).
async fn wait_recovered(
    system: &System,
    fault: Fault,
    healed: &Healed,
    timeout: Duration,
) -> Recovery {
    let roles: &[Role] = match fault {
        Fault::KillPersister | Fault::KillPersisterRepeatedly => &[Role::Persister],
        Fault::KillSubmitterMidRequest => &[Role::Submitter],
        Fault::TerminateIngressWithTakeover | Fault::CutIngressBroker => &[Role::Ingress],
        Fault::RestartBroker => &[Role::Ingress, Role::Persister],
        Fault::RestartDatabase => &[Role::Persister, Role::Submitter],
    };
    let mut ready: Vec<(Role, Option<Duration>)> = roles.iter().map(|role| (*role, None)).collect();
    let deadline = healed.instant + timeout;
    loop {
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
            return Recovery {
                working: Some(healed.instant.elapsed()),
                ready,
            };
        }
        if Instant::now() >= deadline {
            return Recovery {
                working: None,
                ready,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
