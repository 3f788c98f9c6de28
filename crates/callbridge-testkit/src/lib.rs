//! Test helpers shared by the callbridge crates' integration tests: a fresh Postgres
//! database per test, a fresh RabbitMQ vhost per test, a TCP proxy that can cut a
//! connection to simulate an outage, the command-line checks every service binary
//! passes, and the workspace's binaries for a test in another package. Dev-only; never
//! a dependency of a binary.

pub mod binary;
pub mod command_line;
pub mod db;
pub mod proxy;
pub mod vhost;
