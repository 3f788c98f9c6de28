//! Test helpers shared by the callbridge crates' integration tests: a fresh Postgres
//! database per test, a fresh RabbitMQ vhost per test, and a TCP proxy that can cut a
//! connection to simulate an outage. Dev-only; never a dependency of a binary.

pub mod db;
pub mod proxy;
pub mod vhost;
