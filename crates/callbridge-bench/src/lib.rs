//! `make bench`: measures this machine's raw limits (RabbitMQ publish-with-confirm,
//! Postgres batched upsert) and then callbridge's services against them, each figure
//! the median of several runs, into one table (`bench/results/latest.md`, `.json`).
//!
//! A run executes every stage once, so each run's ratios (service / limit) compare
//! figures measured minutes apart on the same machine state. Every stage of every run
//! gets its own database and RabbitMQ vhost, as the tests do. The services are the
//! release binaries, started as child processes with environment configuration.
//!
//! Stages: [`limits`] (1; 1c and 1d on the rows of stage 5's [`campaign`]), [`stage_ingress`] (2), [`stage_persister`] (3),
//! [`stage_e2e`] (4), [`stage_submitter`] (5); peak memory (6) is read from each
//! service before it stops; [`stage_dnc`] (7); [`stage_console`] (8).

pub mod campaign;
pub mod figures;
pub mod limits;
pub mod loadgen;
pub mod machine;
pub mod naive_ingress;
pub mod private_postgres;
pub mod procs;
pub mod report;
pub mod services;
pub mod stage_console;
pub mod stage_dnc;
pub mod stage_e2e;
pub mod stage_ingress;
pub mod stage_persister;
pub mod stage_submitter;
pub mod stats;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use clap::ValueEnum;
use sqlx::PgPool;

use crate::figures::{CLAIM_MARK_LIMIT, PUBLISH_LIMIT, QUEUE_COPY_LIMIT, UPSERT_LIMIT};
use crate::limits::{
    ClaimShape, PublishShape, UpsertShape, batched_upsert_limit, claim_mark_limit,
    publish_confirm_limit, queue_copy_limit,
};
use crate::machine::MachineInfo;
use crate::private_postgres::PrivatePostgres;
use crate::procs::{CpuMeter, Group, affinity_of, pids_named, wait_for_quiet};
use crate::report::{Collector, Report};
use crate::services::{online_cpus, pin_this_process};
use crate::workload::callbacks;

/// Signing secret of the synthetic callbacks (the services under test are given it).
pub const CALLBACK_SECRET: &str = "bench-callback-secret";

/// Below this many busy cores the machine counts as idle before a measurement.
const QUIET_CORES: f64 = 0.3;

/// 1c's claim loops at once: the submitter's `CONCURRENT_ROUNDS` (worker.rs).
const CLAIM_ROUNDS: usize = 2;
/// 1c's batches of one claim marked at once: the submitter's `CONCURRENT_BATCHES`.
const CLAIM_BATCHES_IN_FLIGHT: usize = 4;
/// 1c's pool: the submitter's default `database.max_connections`.
const CLAIM_POOL: u32 = 10;

/// A stage of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    Limits,
    Ingress,
    Persister,
    E2e,
    Submitter,
    /// Stage 5's claim-cost figures alone (5i-5k), which need no service.
    ClaimCost,
    /// Stage 7: `callbridge dnc import` beside a raw COPY (7a-7c).
    Dnc,
    /// Stage 8: the console's campaigns page over 10,000,000 calls (8a-8d).
    Console,
}

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
    /// Stages to run (the ratios need `limits` in the same invocation).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "limits,ingress,persister,e2e,submitter,dnc,console"
    )]
    pub stages: Vec<Stage>,
    /// Where latest.md and latest.json are written.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Where the services' logs and the generated CSV go.
    #[arg(long, default_value = "target/bench-logs")]
    pub logs: PathBuf,
    /// Before each measurement, wait up to this long for the machine to go idle (a
    /// build running alongside would be measured too; the CPU column shows it as `other`).
    #[arg(long, default_value_t = 3)]
    pub quiet_wait_secs: u64,
    /// RUST_LOG of the services (the production default is `info`; e.g.
    /// `info,sqlx::query=debug` logs every statement with its time, for profiling).
    #[arg(long, default_value = "info")]
    pub service_log_filter: String,
    /// Extra environment for every service (`KEY=VALUE`, repeatable), e.g.
    /// `CALLBRIDGE__PERSISTER__BATCH_SIZE=500` to try a setting; the report names them.
    #[arg(long = "service-env", value_parser = parse_key_value)]
    pub service_env: Vec<(String, String)>,
    /// `sslmode` of every database connection (bench and services) on the shared server.
    /// `disable` by default, so the rows compare with earlier results and TLS is priced
    /// apart, in 3e–3g; `prefer` (TLS when the server offers it, as Debian's does) or
    /// `require` measures every stage over TLS.
    #[arg(long, default_value = "disable")]
    pub pg_sslmode: Option<String>,
    /// Skips 3e–3g, the persister on a private Postgres with and without TLS (they start
    /// one with the shared server's `initdb`, which needs that server's binaries here).
    #[arg(long)]
    pub no_tls_rows: bool,
    /// CPUs (taskset list) the ingress and persister are pinned to in stages 2 and 3;
    /// `none` leaves them unpinned.
    #[arg(long, default_value = "1")]
    pub service_cpus: String,
    /// CPUs the load generator (this process) is pinned to while an ingress is measured.
    #[arg(long, default_value = "0")]
    pub loadgen_cpus: String,

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

    /// 2: concurrency levels of the closed-loop sweep.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64, 256])]
    pub ingress_levels: Vec<usize>,
    /// 2: seconds per sweep level.
    #[arg(long, default_value_t = 2.5)]
    pub level_secs: f64,
    /// 2: seconds of the open-loop run at half the peak.
    #[arg(long, default_value_t = 3.0)]
    pub half_peak_secs: f64,
    /// 2: distinct signed bodies prepared (reused in order if a run needs more).
    #[arg(long, default_value_t = 120_000)]
    pub ingress_bodies: usize,

    /// 3: messages preloaded for the batched persister.
    #[arg(long, default_value_t = 20_000)]
    pub persist_messages: usize,
    /// 3: messages preloaded for the one-per-transaction consumer.
    #[arg(long, default_value_t = 1_500)]
    pub one_per_tx_messages: usize,

    /// 4: seconds at each offered rate (1,000/s and 5,000/s).
    #[arg(long, default_value_t = 4.0)]
    pub e2e_secs: f64,

    /// 5 (and 1c, 1d): numbers in the campaign enqueued and submitted.
    #[arg(long, default_value_t = 60_000)]
    pub submit_numbers: usize,
    /// 5e/5f: single rows inserted into the idle queue, one after another.
    #[arg(long, default_value_t = 20)]
    pub submit_latency_samples: usize,
    /// 5g: rows the naive submitter (one row per request) sends.
    #[arg(long, default_value_t = 2_000)]
    pub naive_submit_numbers: usize,
}

impl Options {
    /// Waits for an idle machine before a measurement (see `quiet_wait_secs`).
    pub async fn settle(&self, what: &str) {
        let busy = wait_for_quiet(QUIET_CORES, Duration::from_secs(self.quiet_wait_secs)).await;
        if busy >= QUIET_CORES {
            tracing::warn!(
                busy_cores = format!("{busy:.2}"),
                "machine still busy before {what}: the figure includes that load"
            );
        }
    }
}

/// A fresh database (migrated) and vhost for one stage of one run; both are dropped with it.
pub struct RunEnv {
    pub db: TestDb,
    /// The database's URL as every client here uses it (with `sslmode` when one was given).
    pub db_url: String,
    pub pool: PgPool,
    pub vhost: TestVhost,
}

impl RunEnv {
    /// `sslmode`: appended to the database URL when given (`disable`, `require`, …).
    pub async fn new(max_connections: u32, sslmode: Option<&str>) -> anyhow::Result<RunEnv> {
        RunEnv::with_db(TestDb::new().await?, max_connections, sslmode).await
    }

    /// The same on the server `admin_url` reaches (the private TLS server).
    pub async fn on(
        admin_url: String,
        max_connections: u32,
        sslmode: Option<&str>,
    ) -> anyhow::Result<RunEnv> {
        RunEnv::with_db(TestDb::on(admin_url).await?, max_connections, sslmode).await
    }

    async fn with_db(
        db: TestDb,
        max_connections: u32,
        sslmode: Option<&str>,
    ) -> anyhow::Result<RunEnv> {
        let db_url = match sslmode {
            Some(mode) => format!("{}?sslmode={mode}", db.url()),
            None => db.url().to_owned(),
        };
        let pool = callbridge_runtime::db::connect_and_migrate(&db_url, max_connections)
            .await
            .context("while migrating the run's database")?;
        let vhost = TestVhost::try_new().await?;
        Ok(RunEnv {
            db,
            db_url,
            pool,
            vhost,
        })
    }
}

/// The environment every service gets: the seed's variables pointed at this run's
/// database and vhost; JSON logs filtered by `--service-log-filter`.
pub fn service_env(env: &RunEnv, options: &Options) -> BTreeMap<String, String> {
    [
        ("CLIENT_CALLING_DB_URL", env.db_url.clone()),
        ("RABBITMQ_URL", env.vhost.amqp_url()),
        ("CALLBACK_SECRET_KEY", CALLBACK_SECRET.to_owned()),
        (
            "CENTRALIZED_CALLING_ACCOUNT_CODE",
            workload::ACCOUNTCODE.to_owned(),
        ),
        ("CALLBRIDGE__TELEMETRY__LOG_FORMAT", "json".to_owned()),
        // Set, as in a deployment that erases numbers: the submitter's claim then also
        // looks for the stand-ins of erased opt-outs, and the figures include that cost.
        (
            "CALLBRIDGE__LIFECYCLE__ERASURE_KEY",
            limits::BENCH_ERASURE_KEY.to_owned(),
        ),
        ("RUST_LOG", options.service_log_filter.clone()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .chain(options.service_env.iter().cloned())
    .collect()
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))
}

/// This run's raw limits, which its ratios divide by.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub publish: f64,
    pub upsert: f64,
    /// 1c: claim-and-mark of local_call_queue rows.
    pub claim_mark: f64,
    /// 1d: COPY into local_call_queue.
    pub queue_copy: f64,
}

impl RunLimits {
    /// No limits measured (the `limits` stage not selected): every ratio is NaN and
    /// left out of the table.
    pub fn unmeasured() -> RunLimits {
        RunLimits {
            publish: f64::NAN,
            upsert: f64::NAN,
            claim_mark: f64::NAN,
            queue_copy: f64::NAN,
        }
    }
}

/// What the stages share: options, the run number, where logs go, the collected samples.
pub struct Bench {
    pub options: Options,
    pub run: usize,
    pub log_dir: PathBuf,
    pub collector: Collector,
    /// The server of 3e–3g, started once for every run.
    pub private_postgres: Option<PrivatePostgres>,
}

impl Bench {
    /// The CPU list services are pinned to, `None` when unpinned.
    pub fn service_cpus(&self) -> Option<String> {
        (self.options.service_cpus != "none").then(|| self.options.service_cpus.clone())
    }

    pub async fn pin_load_generator(&self) -> anyhow::Result<()> {
        if self.service_cpus().is_some() {
            pin_this_process(Some(&self.options.loadgen_cpus)).await?;
        }
        Ok(())
    }

    pub async fn unpin_load_generator(&self) -> anyhow::Result<()> {
        pin_this_process(None).await
    }

    /// Placement text of a stage that pins `service`; `load_generator` says whether this
    /// process was pinned too (it is while it generates load).
    pub fn pinned_placement(&self, service: &str, load_generator: bool) -> String {
        match self.service_cpus() {
            Some(cpus) if load_generator => format!(
                "{service} pinned to CPU {cpus} (taskset), load generator to CPU {}; RabbitMQ and \
                 Postgres unpinned on {}",
                self.options.loadgen_cpus,
                online_cpus()
            ),
            Some(cpus) => format!(
                "{service} pinned to CPU {cpus} (taskset); the bench (only polling), RabbitMQ and \
                 Postgres unpinned on {}",
                online_cpus()
            ),
            None => unpinned_placement(),
        }
    }
}

/// Runs every selected stage `runs` times and returns the report (not yet written).
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let runs = options.runs.max(1);
    if runs < 3 {
        tracing::warn!(runs, "fewer than 3 runs: medians are not meaningful");
    }
    let (machine, private_postgres) = {
        let env = RunEnv::new(1, options.pg_sslmode.as_deref()).await?;
        let overview = env.vhost.management_get("overview").await?;
        let private_postgres = if options.stages.contains(&Stage::Persister) && !options.no_tls_rows
        {
            Some(PrivatePostgres::start(&env.pool).await?)
        } else {
            None
        };
        (
            MachineInfo::collect(&env.pool, &overview).await,
            private_postgres,
        )
    };
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let log_dir = options.logs.join(stamp);
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("while creating {}", log_dir.display()))?;
    let mut bench = Bench {
        log_dir,
        options,
        run: 0,
        collector: Collector::default(),
        private_postgres,
    };
    let has = |bench: &Bench, stage| bench.options.stages.contains(&stage);
    for run in 1..=runs {
        bench.run = run;
        tracing::info!(run, of = runs, "run");
        let limits = if has(&bench, Stage::Limits) {
            stage_limits(&mut bench).await?
        } else {
            RunLimits::unmeasured()
        };
        if has(&bench, Stage::Ingress) {
            stage_ingress::run(&mut bench, &limits).await?;
        }
        if has(&bench, Stage::Persister) {
            stage_persister::run(&mut bench, &limits).await?;
        }
        if has(&bench, Stage::E2e) {
            stage_e2e::run(&mut bench).await?;
        }
        if has(&bench, Stage::Submitter) {
            stage_submitter::run(&mut bench, &limits).await?;
        }
        if has(&bench, Stage::Submitter) || has(&bench, Stage::ClaimCost) {
            stage_submitter::claim_cost(&mut bench).await?;
        }
        if has(&bench, Stage::Dnc) {
            stage_dnc::run(&mut bench).await?;
        }
        if has(&bench, Stage::Console) {
            stage_console::run(&mut bench).await?;
        }
    }
    let (figures, sweep) = bench.collector.finish(figures::ALL);
    let mut report = Report {
        machine,
        runs,
        figures,
        sweep,
    };
    figures::apply_targets(&mut report);
    Ok(report)
}

/// Stage 1: 1a and 1b in a fresh environment, then 1d and 1c in another.
async fn stage_limits(bench: &mut Bench) -> anyhow::Result<RunLimits> {
    let options = &bench.options;
    let secret = CALLBACK_SECRET.as_bytes();
    let env = RunEnv::new(
        options.upsert_connections as u32,
        options.pg_sslmode.as_deref(),
    )
    .await?;
    let tag = format!("limits{}", bench.run);

    let messages: Vec<_> = callbacks(options.publish_messages, &tag, secret)
        .iter()
        .map(|callback| callback.message())
        .collect();
    let message_bytes =
        messages.iter().map(|m| m.body.len()).sum::<usize>() / messages.len().max(1);
    options.settle("1a").await;
    let meter = CpuMeter::start(Group::standard());
    let publish = publish_confirm_limit(
        &env.vhost.amqp_url(),
        &messages,
        PublishShape {
            channels: options.publish_channels,
            in_flight_per_channel: options.publish_window,
        },
    )
    .await?;
    let cpu = meter.stop();
    tracing::info!(
        per_second = publish.per_second() as u64,
        "1a publish-with-confirm"
    );
    bench
        .collector
        .record(PUBLISH_LIMIT, publish.per_second(), &cpu);
    drop(messages);

    let events: Vec<_> = callbacks(options.upsert_rows, &tag, secret)
        .into_iter()
        .map(|callback| callback.event)
        .collect();
    options.settle("1b").await;
    let meter = CpuMeter::start(Group::standard());
    let upsert = batched_upsert_limit(
        &env.pool,
        &events,
        UpsertShape {
            batch_rows: options.upsert_batch,
            connections: options.upsert_connections,
        },
    )
    .await?;
    let cpu = meter.stop();
    tracing::info!(per_second = upsert.per_second() as u64, "1b batched upsert");
    bench
        .collector
        .record(UPSERT_LIMIT, upsert.per_second(), &cpu);

    let placement = unpinned_placement();
    bench.collector.describe(
        PUBLISH_LIMIT,
        placement.clone(),
        format!(
            "{} distinct envelopes (mean body {message_bytes} B, the ingress's own properties) \
             published persistent and mandatory to `callbridge.callbacks` → quorum queue \
             `callbridge.persist` as declare_topology declares it; one connection, {} channels \
             in confirm mode, {} unconfirmed per channel; rate = messages / (first publish → \
             last confirm); fresh vhost per run.",
            options.publish_messages, options.publish_channels, options.publish_window
        ),
    );
    bench.collector.describe(
        UPSERT_LIMIT,
        placement,
        format!(
            "{} rows (the same callbacks: two of three update a row an earlier one inserted) \
             upserted with unnest arrays and ON CONFLICT (call_id) DO UPDATE, {} rows per \
             statement (one commit each), {} statements in flight on their own connections; \
             fresh migrated database per run.",
            options.upsert_rows, options.upsert_batch, options.upsert_connections
        ),
    );
    drop(env);
    let (queue_copy, claim_mark) = queue_limits(bench).await?;
    Ok(RunLimits {
        publish: publish.per_second(),
        upsert: upsert.per_second(),
        claim_mark,
        queue_copy,
    })
}

/// 1d and 1c: a fresh migrated database filled with stage 5's campaign by a raw COPY
/// (1d), analysed as `callbridge enqueue` leaves it, then drained by the submitter's
/// claim statement and mark-submitted UPDATE without HTTP (1c). Returns both rates.
async fn queue_limits(bench: &mut Bench) -> anyhow::Result<(f64, f64)> {
    let options = &bench.options;
    let rows = options.submit_numbers;
    let env = RunEnv::new(CLAIM_POOL, options.pg_sslmode.as_deref()).await?;
    let lines = campaign::copy_lines(rows, 1, &format!("bench-limits{}", bench.run));
    options.settle("1d").await;
    let meter = CpuMeter::start(Group::standard());
    let copy = queue_copy_limit(&env.pool, campaign::QUEUE_COPY_COLUMNS, &lines, rows).await?;
    let cpu = meter.stop();
    tracing::info!(
        per_second = copy.per_second() as u64,
        "1d COPY into the queue"
    );
    bench
        .collector
        .record(QUEUE_COPY_LIMIT, copy.per_second(), &cpu);
    drop(lines);
    // As `callbridge enqueue` does after a large COPY: the claim is planned with
    // statistics that count the new rows.
    sqlx::query("ANALYZE local_call_queue")
        .execute(&env.pool)
        .await
        .context("while analysing local_call_queue")?;

    let defaults = callbridge_runtime::config::SubmitterSettings::default();
    let shape = ClaimShape {
        rounds: CLAIM_ROUNDS,
        claim_limit: defaults.batch_claim_limit,
        batches_in_flight: CLAIM_BATCHES_IN_FLIGHT,
        lease: Duration::from_secs(defaults.lease_secs),
    };
    options.settle("1c").await;
    let meter = CpuMeter::start(Group::standard());
    let claim = claim_mark_limit(&env.pool, rows, shape).await?;
    let cpu = meter.stop();
    tracing::info!(per_second = claim.per_second() as u64, "1c claim and mark");
    bench
        .collector
        .record(CLAIM_MARK_LIMIT, claim.per_second(), &cpu);

    let placement = unpinned_placement();
    bench.collector.describe(
        QUEUE_COPY_LIMIT,
        placement.clone(),
        format!(
            "the {rows} rows stage 5's CSV becomes (phone_number, batch_id in batches of {}, \
             custom_data JSON, pending, 0, campaign_key), as COPY text lines prepared in memory \
             and sent by the bench (sqlx copy_in_raw, ~1 MiB chunks, one connection) to \
             `COPY local_call_queue (…) FROM STDIN` in a fresh migrated database; rate = rows / \
             (COPY statement → its end), in autocommit (no file reading, validation, batches \
             or ANALYZE, which 5b's wall time includes).",
            campaign::BATCH_SIZE
        ),
    );
    bench.collector.describe(
        CLAIM_MARK_LIMIT,
        placement,
        format!(
            "1d's {rows} rows, ANALYZEd as enqueue leaves them, drained by the bench with the \
             submitter's own claim step (callbridge_submitter::store::run_claim_statement: its \
             claim statement with a generic plan, in a transaction of its own; up to {} rows \
             per claim, lease {} s) and, per claimed batch, the UPDATE … SET queue_status \
             = 'submitted' it commits after a 2xx (without its call_batches \
             refresh); {} claim loops at once, {} batch updates of a claim at once (the \
             submitter's rounds and batches in flight), pool of {}; rate = rows / (first \
             claim → last update's commit); every row checked submitted afterwards.",
            shape.claim_limit,
            defaults.lease_secs,
            shape.rounds,
            shape.batches_in_flight,
            CLAIM_POOL
        ),
    );
    Ok((copy.per_second(), claim.per_second()))
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
