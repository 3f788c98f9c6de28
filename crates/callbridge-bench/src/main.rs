//! `callbridge-bench`: see the library docs. `make bench` runs it from the repository root.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,callbridge_runtime=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = callbridge_bench::Options::parse();
    let report = callbridge_bench::run(options.clone()).await?;
    report.write(&options.out)?;
    println!("{}", report.table());
    println!(
        "written to {}/latest.md and latest.json",
        options.out.display()
    );
    Ok(())
}
