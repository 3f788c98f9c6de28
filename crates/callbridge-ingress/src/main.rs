//! `callbridge-ingress`: loads the configuration, initialises telemetry and serves until
//! SIGTERM/SIGINT. Everything else lives in the library.

use std::process::ExitCode;

use callbridge_ingress::Application;
use callbridge_runtime::config::Settings;
use callbridge_runtime::shutdown::shutdown_token;
use callbridge_runtime::telemetry::init_telemetry;
use clap::Parser;

/// Receives the centralized system's signed callbacks (`POST /callback` on INGRESS_BIND)
/// and answers 200 once RabbitMQ has confirmed each one. Settings come from the
/// environment (CALLBACK_SECRET_KEY, RABBITMQ_URL, …) and the optional CALLBRIDGE_CONFIG
/// file; there are no other arguments.
#[derive(Debug, Parser)]
#[command(name = "callbridge-ingress", version)]
struct Args {}

#[tokio::main]
async fn main() -> ExitCode {
    // Before any setting is read: `--help` and `--version` answer and exit, and an
    // unknown argument is refused instead of being ignored while the server starts.
    let Args {} = Args::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    let config = match settings.ingress() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let _telemetry = match init_telemetry("callbridge-ingress", &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => return fail(&format!("{error:#}")),
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "callbridge-ingress stopped on an error"
            );
            fail(&format!("{error:#}"))
        }
    }
}

async fn run(config: callbridge_runtime::config::IngressConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_token()?;
    Application::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// One line on stderr naming what is wrong, and a non-zero exit.
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("callbridge-ingress: {error}");
    ExitCode::FAILURE
}
