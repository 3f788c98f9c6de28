//! `callbridge-sim`: the Centralized Calling System simulator. Configuration comes from
//! `SIM_*` environment variables or flags (`callbridge-sim --help`).

use std::process::ExitCode;

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
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("callbridge-sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: SimConfig) -> anyhow::Result<()> {
    let mut sim = Simulator::spawn(config).await?;
    let ended = tokio::select! {
        result = sim.wait() => Some(result),
        () = terminate() => None,
    };
    match ended {
        Some(result) => result,
        None => {
            sim.stop().await;
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes, docker) or SIGINT (Ctrl-C).
async fn terminate() {
    let sigterm = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
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
