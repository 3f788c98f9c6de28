//! One module per `callbridge` subcommand.

pub mod batches;
pub mod campaign;
pub mod dlq;
pub mod dnc;
pub mod doctor;
pub mod doctor_batch_status;
pub mod encrypt_key;
pub mod enqueue;
pub mod erase;
pub mod migrate;
pub mod queue;
pub mod retention;
pub mod sign;
