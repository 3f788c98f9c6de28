//! `callbridge-console`: loads the configuration, initialises telemetry and serves the
//! operator console until SIGTERM/SIGINT. Everything else lives in the library.

use std::process::ExitCode;

use callbridge_console::Application;
use callbridge_runtime::config::{ConsoleConfig, Settings};
use callbridge_runtime::shutdown::shutdown_token;
use callbridge_runtime::telemetry::init_telemetry;
use clap::Parser;

/// The operator console: campaigns, batches, dead letters, rows to review and the
/// services' state in a web page on CONSOLE_BIND (default 0.0.0.0:9103). Sign in with
/// CALLBRIDGE_CONSOLE_TOKEN (operator) or CALLBRIDGE_CONSOLE_VIEWER_TOKEN (read only).
/// Settings come from the environment and the optional CALLBRIDGE_CONFIG file; there are
/// no other arguments.
#[derive(Debug, Parser)]
#[command(name = "callbridge-console", version)]
struct Args {}

#[tokio::main]
async fn main() -> ExitCode {
    // Before any setting is read: `--help` and `--version` answer and exit.
    let Args {} = Args::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    let config = match settings.console() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let _telemetry = match init_telemetry("callbridge-console", &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => return fail(&format!("{error:#}")),
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "callbridge-console stopped on an error"
            );
            fail(&format!("{error:#}"))
        }
    }
}

async fn run(config: ConsoleConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_token()?;
    Application::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// One line on stderr naming what is wrong, and a non-zero exit.
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("callbridge-console: {error}");
    ExitCode::FAILURE
}
