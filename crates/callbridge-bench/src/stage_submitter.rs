//! Stage 5: `callbridge enqueue` loads a CSV campaign into `local_call_queue` (COPY),
//! then the submitter sends it to the simulator; both rates in rows per second.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::process::Command;

use crate::figures::{ENQUEUE_RATE, SIM_RSS, SUBMITTER_RATE, SUBMITTER_RSS};
use crate::procs::{CpuMeter, Group, Selector};
use crate::services::{Service, ServiceSpec, bin_dir, free_port};
use crate::{Bench, RunEnv, service_env};

/// The simulator's API key in the benchmark.
const SIM_API_KEY: &str = "bench-api-key";
/// How often submission progress is read.
const POLL: Duration = Duration::from_millis(20);
/// A submission that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let numbers = bench.options.submit_numbers;
    let env = RunEnv::new(2, bench.options.pg_sslmode.as_deref()).await?;
    let csv = bench.log_dir.join(format!("campaign-run{}.csv", bench.run));
    write_campaign(&csv, numbers)?;

    // The simulator plays the centralized system. Its calls run at 1/100 of real speed
    // and callbacks go to a closed port once, so placing calls costs it (and the
    // machine) next to nothing while the submitter is measured.
    let sim_bind = format!("127.0.0.1:{}", free_port()?);
    let mut sim_env = service_env(&env, &bench.options);
    for (key, value) in [
        ("SIM_BIND", sim_bind.clone()),
        ("SIM_API_KEY", SIM_API_KEY.into()),
        (
            "SIM_CALLBACK_URL",
            format!("http://127.0.0.1:{}/callback", free_port()?),
        ),
        ("SIM_CALLBACK_SECRET", crate::CALLBACK_SECRET.into()),
        ("SIM_ACCOUNT_CODE", crate::workload::ACCOUNTCODE.into()),
        ("SIM_TIME_SCALE", "100".into()),
        ("SIM_CALLBACK_MAX_ATTEMPTS", "1".into()),
    ] {
        sim_env.insert(key.into(), value);
    }
    let sim = Service::start(
        &ServiceSpec {
            name: format!("sim-run{}", bench.run),
            binary: "callbridge-sim".into(),
            args: Vec::new(),
            env: sim_env,
            cpus: None,
            ready_url: format!("http://{sim_bind}/healthz"),
        },
        &bench.log_dir,
    )
    .await?;

    bench.options.settle("enqueue").await;
    let meter = CpuMeter::start(vec![
        Group::new("cli", Selector::WaitedChildren),
        Group::postgres(),
    ]);
    let started = Instant::now();
    let output = Command::new(bin_dir()?.join("callbridge"))
        .arg("enqueue")
        .arg(&csv)
        .args(["--campaign", &format!("bench-run{}", bench.run), "--json"])
        .envs(service_env(&env, &bench.options))
        .output()
        .await
        .context("while running callbridge enqueue")?;
    let enqueue_seconds = started.elapsed().as_secs_f64();
    let enqueue_cpu = meter.stop();
    if !output.status.success() {
        bail!(
            "callbridge enqueue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("while reading enqueue's JSON report")?;
    if report["enqueued"].as_u64() != Some(numbers as u64) {
        bail!(
            "callbridge enqueue stored {} of {numbers} rows",
            report["enqueued"]
        );
    }
    let enqueue_rate = crate::stats::per_second(numbers, enqueue_seconds);
    tracing::info!(per_second = enqueue_rate as u64, "enqueue");
    bench
        .collector
        .record(ENQUEUE_RATE, enqueue_rate, &enqueue_cpu);

    let submitter_bind = format!("127.0.0.1:{}", free_port()?);
    let mut submitter_env = service_env(&env, &bench.options);
    submitter_env.insert("SUBMITTER_BIND".into(), submitter_bind.clone());
    submitter_env.insert(
        "CENTRALIZED_CALLING_BASE_URL".into(),
        format!("http://{sim_bind}"),
    );
    submitter_env.insert("CENTRALIZED_CALLING_API_KEY".into(), SIM_API_KEY.into());
    let spec = ServiceSpec {
        name: format!("submitter-run{}", bench.run),
        binary: "callbridge-submitter".into(),
        args: Vec::new(),
        env: submitter_env,
        cpus: None,
        ready_url: format!("http://{submitter_bind}/readyz"),
    };
    bench.options.settle("submitter").await;
    let submitter = Service::spawn(&spec, &bench.log_dir)?;
    let meter = CpuMeter::start(vec![
        Group::new("submitter", Selector::Pid(submitter.pid())),
        Group::new("sim", Selector::Pid(sim.pid())),
        Group::postgres(),
    ]);
    let submitter = submitter.wait_ready(&spec.ready_url).await?;
    let span = wait_until_submitted(&env.pool, numbers).await?;
    let cpu = meter.stop();
    let rate = crate::stats::per_second(numbers, span.as_secs_f64());
    tracing::info!(per_second = rate as u64, "submitter");
    bench.collector.record(SUBMITTER_RATE, rate, &cpu);
    if let Some(rss) = submitter.peak_rss_mib() {
        bench.collector.record(SUBMITTER_RSS, rss, &[]);
    }
    if let Some(rss) = sim.peak_rss_mib() {
        bench.collector.record(SIM_RSS, rss, &[]);
    }
    submitter.stop().await?;
    sim.stop().await?;

    let placement = "unpinned — every process shares every CPU";
    bench.collector.describe(
        ENQUEUE_RATE,
        placement,
        format!(
            "the release `callbridge enqueue` on a {numbers}-row CSV (phone_number, customer_id, \
             segment), batches of 500; wall time of the whole command (start, read, validate, \
             COPY, commit)."
        ),
    );
    bench.collector.describe(
        SUBMITTER_RATE,
        placement,
        format!(
            "{numbers} enqueued rows, then the release `callbridge-submitter` (defaults) started \
             against `callbridge-sim` (no added latency); rate = rows / (first claim's \
             attempt_started_at → last row's submitted_at), each batch one insert request plus \
             dispatch-calls."
        ),
    );
    bench.collector.describe(
        SUBMITTER_RSS,
        placement,
        "VmHWM from /proc after submitting the campaign.",
    );
    bench.collector.describe(
        SIM_RSS,
        placement,
        "VmHWM of the simulator after taking the campaign (it keeps every call in memory).",
    );
    Ok(())
}

/// A campaign of `numbers` distinct valid phone numbers.
fn write_campaign(path: &std::path::Path, numbers: usize) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("while creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "phone_number,customer_id,segment")?;
    for i in 0..numbers {
        writeln!(out, "97{:08},CUST{i:07},gold", i % 100_000_000)?;
    }
    out.flush()
        .with_context(|| format!("while writing {}", path.display()))
}

/// Polls until every row is `submitted`; returns the span from the first claim to the
/// last submission, as the database recorded them.
async fn wait_until_submitted(pool: &PgPool, numbers: usize) -> anyhow::Result<Duration> {
    let mut last_progress = (0_i64, Instant::now());
    loop {
        let (submitted, stuck, first_claim, last_submit): (
            i64,
            i64,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE queue_status = 'submitted'),
                    count(*) FILTER (WHERE queue_status IN ('failed', 'needs_review')),
                    min(attempt_started_at), max(submitted_at)
               FROM local_call_queue",
        )
        .fetch_one(pool)
        .await
        .context("while reading submission progress")?;
        if stuck > 0 {
            bail!("{stuck} rows ended failed or needs_review: see the submitter's log");
        }
        if submitted as usize >= numbers {
            let (Some(first), Some(last)) = (first_claim, last_submit) else {
                bail!("submitted rows without claim or submission times");
            };
            return (last - first)
                .to_std()
                .context("the last submission precedes the first claim");
        }
        let now = Instant::now();
        if submitted > last_progress.0 {
            last_progress = (submitted, now);
        } else if now - last_progress.1 > STALL_TIMEOUT {
            bail!("submission stalled at {submitted} of {numbers} rows for {STALL_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
