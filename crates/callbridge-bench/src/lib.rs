//! `make bench`: measures this machine's raw limits (RabbitMQ publish-with-confirm,
//! Postgres batched upsert) and then callbridge's services against them, each figure
//! the median of several runs, into one table (`bench/results/latest.md`, `.json`).
//!
//! Every run gets its own database and RabbitMQ vhost (as the tests do), so runs never
//! see each other's rows or messages. Stages:
//! - [`limits`]: 1a raw publish-with-confirm, 1b raw batched upsert.

pub mod limits;
pub mod machine;
pub mod procs;
pub mod report;
pub mod stats;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use sqlx::PgPool;

use crate::limits::{PublishShape, UpsertShape, batched_upsert_limit, publish_confirm_limit};
use crate::machine::MachineInfo;
use crate::procs::{CpuMeter, Group, affinity_of, pids_named, wait_for_quiet};
use crate::report::{FigureSpec, Report, Samples, Unit};
use crate::workload::callbacks;

/// Signing secret of the synthetic callbacks (the services under test are given it).
pub const CALLBACK_SECRET: &str = "bench-callback-secret";

/// What to run and how big.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "callbridge-bench",
    about = "Benchmarks callbridge on the local services"
)]
pub struct Options {
    /// Runs per figure; each figure reports the median, min and max.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where latest.md and latest.json are written.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// 1a: messages published per run.
    #[arg(long, default_value_t = 30_000)]
    pub publish_messages: usize,
    /// 1a: channels on the one connection.
    #[arg(long, default_value_t = 8)]
    pub publish_channels: usize,
    /// 1a: unconfirmed messages each channel keeps in flight.
    #[arg(long, default_value_t = 512)]
    pub publish_window: usize,
    /// 1b: rows upserted per run.
    #[arg(long, default_value_t = 60_000)]
    pub upsert_rows: usize,
    /// 1b: rows per statement (one statement is one commit).
    #[arg(long, default_value_t = 500)]
    pub upsert_batch: usize,
    /// 1b: statements in flight at once, each on its own connection.
    #[arg(long, default_value_t = 4)]
    pub upsert_connections: usize,
    /// Before each measurement, wait up to this long for the machine to go idle (a
    /// build running alongside would be measured too; the CPU column shows it as `other`).
    #[arg(long, default_value_t = 30)]
    pub quiet_wait_secs: u64,
}

impl Options {
    /// Waits for an idle machine before a measurement (see `quiet_wait_secs`).
    async fn settle(&self, what: &str) {
        let busy = wait_for_quiet(QUIET_CORES, Duration::from_secs(self.quiet_wait_secs)).await;
        if busy >= QUIET_CORES {
            tracing::warn!(
                busy_cores = format!("{busy:.2}"),
                "machine still busy before {what}: the figure includes that load"
            );
        }
    }
}

/// Below this many busy cores the machine counts as idle before a measurement.
const QUIET_CORES: f64 = 0.3;

/// A fresh database (migrated) and vhost for one run; both are dropped with it.
pub struct RunEnv {
    pub db: TestDb,
    pub pool: PgPool,
    pub vhost: TestVhost,
}

impl RunEnv {
    pub async fn new(max_connections: u32) -> anyhow::Result<RunEnv> {
        let db = TestDb::new().await?;
        let pool = callbridge_runtime::db::connect_and_migrate(db.url(), max_connections)
            .await
            .context("while migrating the run's database")?;
        let vhost = TestVhost::try_new().await?;
        Ok(RunEnv { db, pool, vhost })
    }
}

pub const PUBLISH_LIMIT: FigureSpec = FigureSpec {
    id: "1a",
    name: "limit: raw publish-with-confirm (lapin, pipelined, quorum queue)",
    unit: Unit::PerSecond,
};
pub const UPSERT_LIMIT: FigureSpec = FigureSpec {
    id: "1b",
    name: "limit: raw batched upsert into call_logs (rows)",
    unit: Unit::PerSecond,
};

/// Runs every stage and returns the report (not yet written).
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let runs = options.runs.max(1);
    if runs < 3 {
        tracing::warn!(runs, "fewer than 3 runs: medians are not meaningful");
    }
    let machine = {
        let env = RunEnv::new(1).await?;
        let overview = env.vhost.management_get("overview").await?;
        MachineInfo::collect(&env.pool, &overview).await
    };
    let mut figures = Vec::new();
    figures.extend(stage_limits(options, runs).await?);
    Ok(Report {
        machine,
        runs,
        figures,
    })
}

/// Stage 1: 1a and 1b, each run in a fresh environment.
async fn stage_limits(options: &Options, runs: usize) -> anyhow::Result<Vec<report::Figure>> {
    let secret = CALLBACK_SECRET.as_bytes();
    let mut publish = Samples::new(PUBLISH_LIMIT);
    let mut upsert = Samples::new(UPSERT_LIMIT);
    let publish_shape = PublishShape {
        channels: options.publish_channels,
        in_flight_per_channel: options.publish_window,
    };
    let upsert_shape = UpsertShape {
        batch_rows: options.upsert_batch,
        connections: options.upsert_connections,
    };
    let mut message_bytes = 0;
    for run in 1..=runs {
        let env = RunEnv::new(options.upsert_connections as u32).await?;
        let tag = format!("limits{run}");

        let messages: Vec<_> = callbacks(options.publish_messages, &tag, secret)
            .iter()
            .map(|callback| callback.message())
            .collect();
        message_bytes =
            messages.iter().map(|m| m.body.len()).sum::<usize>() / messages.len().max(1);
        options.settle("1a").await;
        let meter = CpuMeter::start(Group::standard());
        let rate = publish_confirm_limit(&env.vhost.amqp_url(), &messages, publish_shape).await?;
        let cpu = meter.stop();
        tracing::info!(
            run,
            per_second = rate.per_second() as u64,
            "1a publish-with-confirm"
        );
        publish.push(rate.per_second(), &cpu);
        drop(messages);

        let events: Vec<_> = callbacks(options.upsert_rows, &tag, secret)
            .into_iter()
            .map(|callback| callback.event)
            .collect();
        options.settle("1b").await;
        let meter = CpuMeter::start(Group::standard());
        let rate = batched_upsert_limit(&env.pool, &events, upsert_shape).await?;
        let cpu = meter.stop();
        tracing::info!(
            run,
            per_second = rate.per_second() as u64,
            "1b batched upsert"
        );
        upsert.push(rate.per_second(), &cpu);
    }
    let placement = unpinned_placement();
    Ok([
        publish.finish(
            placement.clone(),
            format!(
                "{} distinct envelopes (mean body {message_bytes} B, the ingress's own properties) \
                 published persistent and mandatory to `callbridge.callbacks` → quorum queue \
                 `callbridge.persist` as declare_topology declares it; one connection, {} channels \
                 in confirm mode, {} unconfirmed per channel; rate = messages / (first publish → \
                 last confirm); fresh vhost per run.",
                options.publish_messages, options.publish_channels, options.publish_window
            ),
        ),
        upsert.finish(
            placement,
            format!(
                "{} rows (the same callbacks: two of three update a row an earlier one inserted) \
                 upserted with unnest arrays and ON CONFLICT (call_id) DO UPDATE, {} rows per \
                 statement (one commit each), {} statements in flight on their own connections; \
                 fresh migrated database per run.",
                options.upsert_rows, options.upsert_batch, options.upsert_connections
            ),
        ),
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// Where bench, RabbitMQ and Postgres may run when nothing is pinned.
fn unpinned_placement() -> String {
    let first = |comm: &str| pids_named(comm).into_iter().min().and_then(affinity_of);
    format!(
        "unpinned — bench on CPUs {}, RabbitMQ on {}, Postgres on {}",
        affinity_of(std::process::id()).unwrap_or_else(|| "?".into()),
        first("beam.smp").unwrap_or_else(|| "?".into()),
        first("postgres").unwrap_or_else(|| "?".into()),
    )
}
