//! callbridge-ingress: receives signed callbacks over HTTP (`POST /callback`) and
//! publishes each one, confirmed, to RabbitMQ before answering 200.
//!
//! - [`startup::Application`] builds the server (tests bind port 0);
//! - [`routes::callback`] holds the checks: size, signature, then JSON and schema;
//! - [`publisher`] and [`supervisor`] own the confirm-mode channel pool and keep it
//!   connected;
//! - [`error::CallbackError`] is the one mapping from failures to HTTP answers.

pub mod error;
pub mod message;
pub mod metrics;
pub mod publisher;
pub mod routes;
pub mod startup;
pub mod supervisor;
pub mod tls;

pub use startup::Application;
