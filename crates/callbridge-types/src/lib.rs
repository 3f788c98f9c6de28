//! The shared vocabulary of callbridge: callback events, statuses and their order,
//! validation and normalisation, signatures, the AMQP message envelope and topology
//! names, campaign rules (calling windows) and the clock time-dependent code reads, the
//! centralized calling API's wire contract, the events callbridge writes itself about a
//! call's life. Pure: no I/O.

pub mod campaign;
pub mod centralized_api;
pub mod clock;
pub mod envelope;
pub mod erasure;
pub mod event;
pub mod lifecycle;
pub mod phone;
mod phone_compiled;
pub mod signature;
pub mod status;
pub mod topology;
