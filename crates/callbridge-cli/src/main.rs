//! `callbridge`, the operator CLI: parses arguments and hands them to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = callbridge_cli::Cli::parse();
    match callbridge_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", callbridge_cli::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
