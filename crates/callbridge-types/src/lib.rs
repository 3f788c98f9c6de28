//! The shared vocabulary of callbridge: callback events, statuses and their order,
//! validation and normalisation, signatures, the AMQP message envelope and topology
//! names, campaign rules (calling windows) and the clock time-dependent code reads.
//! Pure: no I/O.

pub mod campaign;
pub mod clock;
pub mod envelope;
pub mod event;
pub mod signature;
pub mod status;
pub mod topology;
