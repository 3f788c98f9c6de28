//! `callbridge-chaos`: fault-injection runs proving that nothing is lost or doubled.
//!
//! A run starts the real binaries as child processes (simulator, ingress, persister,
//! submitter; the CLI enqueues and migrates), drives steady traffic through them — the
//! simulator sending duplicate and reordered callbacks — and, while it flows, injects
//! faults one after the other: SIGKILL of the persister (repeatedly) and of the submitter
//! mid-request, SIGTERM of the ingress with a second instance taking over, a cut network
//! between ingress and broker, a RabbitMQ restart and a Postgres restart. Afterwards it
//! reconciles the simulator's ground truth with the database ([`reconcile`]) and reports
//! the figures and each fault's time to recover ([`report`]).
//!
//! - [`scenario::Scenario::short`] runs inside `make test` (tests/short_run.rs) on the
//!   shared servers; [`scenario::Scenario::long`] is `make chaos`, on a private Postgres
//!   and a private RabbitMQ node that are really restarted.
//! - The shared Postgres and RabbitMQ are never stopped: other tests use them.

pub mod faults;
pub mod infra;
pub mod ports;
pub mod process;
pub mod reconcile;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod system;
pub mod traffic;

pub use process::Binaries;
pub use report::Report;
pub use scenario::{Scenario, run};
