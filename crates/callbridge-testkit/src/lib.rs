//! Test helpers shared by the callbridge crates' integration tests: a fresh Postgres
//! database per test, a fresh RabbitMQ vhost per test, a TCP proxy that can cut a
//! connection to simulate an outage, and the command-line checks every service binary
//! passes. Dev-only; never a dependency of a binary.

pub mod command_line;
pub mod db;
pub mod proxy;
pub mod vhost;
