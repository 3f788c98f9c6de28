//! One module per `callbridge` subcommand.

pub mod migrate;
