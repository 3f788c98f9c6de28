//! `callbridge-chaos`: runs a fault-injection scenario through the real binaries and
//! prints the reconciliation; exits non-zero when anything was lost, doubled or left
//! mismatched. `make chaos` runs the long scenario and writes chaos/results/latest.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use callbridge_chaos::infra::{Replication, ServerChoice};
use callbridge_chaos::{Binaries, Scenario};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Variant {
    /// About a minute and a half on the shared servers (what `make test` runs).
    Short,
    /// Every fault over and over for --duration, with private servers really restarted.
    Long,
}

/// Drives the simulator through the real services while injecting faults, then
/// reconciles the simulator's ground truth with the database.
#[derive(Debug, Parser)]
#[command(name = "callbridge-chaos", version)]
struct Args {
    #[arg(long, value_enum, default_value = "long")]
    variant: Variant,
    /// Seconds of traffic under faults (long variant; cycles of faults repeat).
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Override where Postgres comes from (private needs root).
    #[arg(long, value_enum)]
    database: Option<ServerChoice>,
    /// Override where RabbitMQ comes from (private needs root).
    #[arg(long, value_enum)]
    broker: Option<ServerChoice>,
    /// RabbitMQ nodes: 3 (or more) runs a private cluster on this machine with the
    /// cluster faults (root); 1 is a single node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=7))]
    rabbitmq_nodes: u16,
    /// A private Postgres primary with a standby (sync or async), failed over again and
    /// again; the run reports what a failover lost (root; the long variant).
    #[arg(long, value_enum)]
    postgres_standby: Option<Replication>,
    /// Seed of the simulator's random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the Markdown report here (e.g. chaos/results/latest.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Logs and campaign files of the run go under <work-dir>/<timestamp>.
    #[arg(long, default_value = "target/chaos")]
    work_dir: PathBuf,
    /// Where the callbridge binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        // Dropping the run kills every child process and removes the private servers.
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("callbridge-chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenario; `Ok(false)` when the run found problems.
async fn run(args: Args) -> anyhow::Result<bool> {
    let binaries = match &args.bin_dir {
        Some(dir) => Binaries::in_dir(dir)?,
        None => Binaries::beside_current_exe()?,
    };
    let duration = Duration::from_secs(args.duration);
    let nodes = usize::from(args.rabbitmq_nodes);
    let mut scenario = match (args.variant, nodes) {
        (Variant::Short, 1) => Scenario::short(args.seed),
        (Variant::Long, 1) => Scenario::long(args.seed, duration),
        (Variant::Short, _) => Scenario {
            rabbitmq_nodes: nodes,
            ..Scenario::cluster_short(args.seed)
        },
        (Variant::Long, _) => Scenario::cluster_long(args.seed, duration, nodes),
    };
    if let Some(replication) = args.postgres_standby {
        scenario = Scenario {
            rabbitmq_nodes: scenario.rabbitmq_nodes,
            ..Scenario::standby(args.seed, duration, replication)
        };
    }
    scenario.database = args.database.unwrap_or(scenario.database);
    scenario.broker = args.broker.unwrap_or(scenario.broker);
    let work_dir = args
        .work_dir
        .join(chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string());

    let report = callbridge_chaos::run(&scenario, binaries, &work_dir).await?;
    let markdown = report.to_markdown();
    println!("{markdown}");
    if let Some(out) = &args.out {
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("while creating {}", parent.display()))?;
        }
        std::fs::write(out, &markdown)
            .with_context(|| format!("while writing {}", out.display()))?;
    }
    Ok(report.is_clean())
}
