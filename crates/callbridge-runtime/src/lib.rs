//! What every callbridge service does the same way: configuration, telemetry, the AMQP
//! connection and topology, the database pool and migrations, the small
//! health/readiness/metrics server, and shutdown on SIGTERM/SIGINT.

pub mod amqp;
pub mod config;
pub mod db;
pub mod errors;
pub mod health;
pub mod shutdown;
pub mod telemetry;
