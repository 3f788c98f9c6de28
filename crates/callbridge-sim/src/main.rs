//! `callbridge-sim`: the Centralized Calling System simulator. Configuration comes from
//! `SIM_*` environment variables or flags (`callbridge-sim --help`).

use std::process::ExitCode;

use callbridge_runtime::config::Settings;
use callbridge_runtime::shutdown::shutdown_token;
use callbridge_runtime::telemetry::init_telemetry;
use callbridge_sim::{SimConfig, Simulator};
use clap::Parser;
use clap::error::ErrorKind;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match SimConfig::try_parse() {
        Ok(config) => config,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("callbridge-sim: {}", one_line(&error.render().to_string()));
            return ExitCode::from(2);
        }
    };
    if let Err(problem) = config.validate() {
        eprintln!("callbridge-sim: {problem}");
        return ExitCode::from(2);
    }
    // Logs and traces are set up like every callbridge binary (RUST_LOG, OTEL_*).
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("callbridge-sim: {error}");
            return ExitCode::from(2);
        }
    };
    match run(config, &settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callbridge-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: SimConfig, settings: &Settings) -> anyhow::Result<()> {
    let _telemetry = init_telemetry("callbridge-sim", &settings.telemetry)?;
    let shutdown = shutdown_token()?;
    let mut sim = Simulator::spawn(config).await?;
    let ended = tokio::select! {
        result = sim.wait() => Some(result),
        () = shutdown.cancelled() => None,
    };
    match ended {
        Some(result) => result,
        None => {
            sim.stop().await;
            tracing::info!("callbridge-sim stopped");
            Ok(())
        }
    }
}

/// clap's message without its usage footer, on one line: it names the variable to fix.
fn one_line(message: &str) -> String {
    message
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
