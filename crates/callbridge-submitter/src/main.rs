//! `callbridge-submitter`: drains `local_call_queue` into the centralized calling API.
//! Configuration comes from the environment; `--migrate` applies the schema
//! migrations first.

use std::process::ExitCode;

use callbridge_runtime::config::Settings;
use callbridge_runtime::shutdown::shutdown_token;
use callbridge_runtime::telemetry::init_telemetry;
use callbridge_submitter::Application;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "callbridge-submitter", version, about)]
struct Args {
    /// Apply pending database migrations before starting (same as
    /// CALLBRIDGE__SUBMITTER__MIGRATE_ON_START=true).
    #[arg(long)]
    migrate: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    let mut config = match settings.submitter() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    config.migrate_on_start |= args.migrate;
    let _telemetry = match init_telemetry("callbridge-submitter", &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => return fail(&format!("{error:#}")),
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "callbridge-submitter stopped");
            fail(&format!("{error:#}"))
        }
    }
}

async fn run(config: callbridge_runtime::config::SubmitterConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_token()?;
    let app = Application::build(&config).await?;
    app.run_until_stopped(shutdown).await
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("callbridge-submitter: {error}");
    ExitCode::FAILURE
}
