//! `callbridge-persister`: loads its settings, starts telemetry and runs the library.

use std::process::ExitCode;

use clap::Parser;

/// Stores callbacks from RabbitMQ in Postgres (health and metrics on PERSISTER_BIND).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Apply pending database migrations before consuming (also
    /// CALLBRIDGE__PERSISTER__MIGRATE_ON_START=true). Off by default, so a migration
    /// job can own the schema.
    #[arg(long)]
    migrate: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line an operator can act on; the cause chain is joined with ": ".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let settings = callbridge_runtime::config::Settings::load()?;
    let mut config = settings.persister()?;
    config.migrate_on_start |= args.migrate;
    let _telemetry =
        callbridge_runtime::telemetry::init_telemetry("callbridge-persister", &settings.telemetry)?;
    let shutdown = callbridge_runtime::shutdown::shutdown_token()?;
    callbridge_persister::run(config, shutdown).await
}
