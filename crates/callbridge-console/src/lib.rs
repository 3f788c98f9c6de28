//! callbridge-console: the operator console, a server-rendered web page for the people
//! who run campaigns.
//!
//! - [`startup::Application`] builds the server (tests bind port 0);
//! - [`auth`] signs in with the operator's or the viewer's token, keeps the session in a
//!   signed cookie and checks every action's CSRF token and role;
//! - [`pages`] holds one module per page; each action goes through `callbridge-ops`, the
//!   code the `callbridge` CLI runs, and is recorded in `operator_actions`;
//! - [`broker`] holds the one AMQP connection the dead letters are read and replayed on;
//! - [`view`] is the page frame and the shared pieces (progress bars, charts, forms);
//! - [`error::ConsoleError`] is the one mapping from failures to HTTP answers.

pub mod auth;
pub mod broker;
pub mod error;
pub mod pages;
pub mod startup;
pub mod view;

pub use startup::Application;
