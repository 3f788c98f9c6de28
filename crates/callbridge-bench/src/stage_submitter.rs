//! Stage 5: `callbridge enqueue` loads a CSV campaign into `local_call_queue` (COPY),
//! then the submitter sends it to the simulator, with 1,000,000 other numbers on the
//! do-not-call list; both rates in rows per second, each beside its raw limit of the same
//! run (1d, 1c). With the queue drained, single rows
//! inserted into the idle queue measure how soon the simulator holds them (5e, 5f).
//! Last, a naive submitter run by the bench (one row claimed, sent and marked at a time)
//! is the contrast (5g, 5h). [`claim_cost`] times the claim itself, with an empty queue
//! and with a campaign of a million rows waiting for its calling window (5i, 5j), and a
//! change of that campaign's rules applied to its million waiting rows (5k).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use callbridge_sim::ground_truth::GroundTruth;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::process::Command;

use crate::campaign;
use crate::figures::{
    CLAIM_CLOSED_WINDOW, CLAIM_EMPTY, CLOSED_WINDOW_RULES_APPLIED, ENQUEUE_RATE, ENQUEUE_RATIO,
    NAIVE_SUBMIT_RATE, SIM_RSS, SUBMIT_LATENCY_MAX, SUBMIT_LATENCY_P50, SUBMITTER_RATE,
    SUBMITTER_RATIO, SUBMITTER_RSS, SUBMITTER_VS_NAIVE,
};
use crate::limits::queue_copy_limit;
use crate::procs::{CpuMeter, Group, Selector};
use crate::services::{Service, ServiceSpec, bin_dir, free_port};
use crate::stats::percentile;
use crate::{Bench, RunEnv, RunLimits, service_env};

/// The simulator's API key in the benchmark.
const SIM_API_KEY: &str = "bench-api-key";
/// How often the bench asks whether rows still wait to be sent (see [`ROWS_WAITING_SQL`]).
const POLL: Duration = Duration::from_millis(20);
/// How often the bench reads the queue's whole progress (see [`PROGRESS_SQL`]).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A submission that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the simulator's ground truth is read while a latency probe waits.
const PROBE_POLL: Duration = Duration::from_millis(1);
/// Before each latency probe, so the submitter has finished its last round and sleeps.
const PROBE_IDLE_GAP: Duration = Duration::from_millis(250);
/// A probe row the simulator has not taken after this long fails the stage (the
/// submitter's fallback poll is 5 s, so even a lost NOTIFY stays well below it).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Batch ids of the latency probes (one batch each) and of the naive submitter's rows,
/// far above the campaign's.
const PROBE_FIRST_BATCH: i32 = 1_000_000;
const NAIVE_FIRST_BATCH: i32 = 2_000_000;

pub async fn run(bench: &mut Bench, limits: &RunLimits) -> anyhow::Result<()> {
    let numbers = bench.options.submit_numbers;
    let env = RunEnv::new(2, bench.options.pg_sslmode.as_deref()).await?;
    let csv = bench.log_dir.join(format!("campaign-run{}.csv", bench.run));
    campaign::write_csv(&csv, numbers)?;

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
    bench
        .collector
        .record(ENQUEUE_RATIO, enqueue_rate / limits.queue_copy, &[]);

    // The submitter is measured against a do-not-call list of a million numbers (none of
    // the campaign's): its claim looks each row up in it.
    crate::stage_dnc::fill_list(&env.pool).await?;

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
    bench
        .collector
        .record(SUBMITTER_RATIO, rate / limits.claim_mark, &[]);
    if let Some(rss) = sim.peak_rss_mib() {
        bench.collector.record(SIM_RSS, rss, &[]);
    }

    // 5e/5f: the queue is idle now (every row submitted); single rows inserted into it.
    let http = reqwest::Client::new();
    let sim_url = format!("http://{sim_bind}");
    // The simulator forgets the campaign (and its calls still running), so each probe's
    // ground-truth read stays small and the simulator idle.
    http.post(format!("{sim_url}/admin/reset"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("while resetting the simulator")?;
    let samples = bench.options.submit_latency_samples;
    bench.options.settle("submit latency").await;
    let meter = CpuMeter::start(vec![
        Group::this_process(),
        Group::new("submitter", Selector::Pid(submitter.pid())),
        Group::new("sim", Selector::Pid(sim.pid())),
        Group::postgres(),
    ]);
    let latencies = probe_latencies(&env.pool, &http, &sim_url, samples).await?;
    let cpu = meter.stop();
    let (p50, max) = latency_summary(&latencies);
    let each_ms: Vec<u64> = latencies.iter().map(|d| d.as_millis() as u64).collect();
    tracing::info!(p50_ms = p50, max_ms = max, ?each_ms, "submit latency");
    bench.collector.record(SUBMIT_LATENCY_P50, p50, &cpu);
    bench.collector.record(SUBMIT_LATENCY_MAX, max, &cpu);

    if let Some(rss) = submitter.peak_rss_mib() {
        bench.collector.record(SUBMITTER_RSS, rss, &[]);
    }
    submitter.stop().await?;

    // 5g/5h: the naive contrast, with the submitter stopped, against the same simulator.
    let naive_rows = bench.options.naive_submit_numbers;
    let lines = campaign::copy_lines(naive_rows, NAIVE_FIRST_BATCH, "bench-naive");
    queue_copy_limit(&env.pool, campaign::QUEUE_COPY_COLUMNS, &lines, naive_rows)
        .await
        .context("while loading the naive submitter's rows")?;
    bench.options.settle("naive submitter").await;
    let meter = CpuMeter::start(vec![
        Group::this_process(),
        Group::new("sim", Selector::Pid(sim.pid())),
        Group::postgres(),
    ]);
    let naive = naive_submit(&env.pool, &http, &sim_url, naive_rows).await?;
    let cpu = meter.stop();
    let naive_rate = crate::stats::per_second(naive_rows, naive.as_secs_f64());
    tracing::info!(per_second = naive_rate as u64, "naive submitter");
    bench.collector.record(NAIVE_SUBMIT_RATE, naive_rate, &cpu);
    bench
        .collector
        .record(SUBMITTER_VS_NAIVE, rate / naive_rate, &[]);
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
        SUBMITTER_RATIO,
        placement,
        "5a divided by 1c of the same run (1c: the same claim statement and mark UPDATE on \
         the same number of rows, without HTTP, the simulator or the call_batches refresh).",
    );
    bench.collector.describe(
        ENQUEUE_RATIO,
        placement,
        "5b divided by 1d of the same run (1d: the COPY alone, of the same rows).",
    );
    let latency_note = format!(
        "after 5a (every row submitted, the submitter idle; the simulator reset to forget the \
         campaign), {samples} times: wait {} ms, INSERT one row (phone_number, batch_id of a \
         new batch) as an application would, then read the simulator's GET \
         /admin/ground-truth?batch_id= every {} ms until it lists the number accepted; \
         latency = INSERT sent → first read that lists it (resolution: one read plus the {} ms sleep).",
        PROBE_IDLE_GAP.as_millis(),
        PROBE_POLL.as_millis(),
        PROBE_POLL.as_millis()
    );
    bench.collector.describe(
        SUBMIT_LATENCY_P50,
        placement,
        format!("{latency_note} p50 (nearest rank) of the {samples} probes."),
    );
    bench.collector.describe(
        SUBMIT_LATENCY_MAX,
        placement,
        format!("{latency_note} The slowest of the {samples} probes."),
    );
    bench.collector.describe(
        NAIVE_SUBMIT_RATE,
        placement,
        format!(
            "{naive_rows} rows COPYed into the same database after the submitter stopped; the \
             bench then, one row at a time on one connection: claims the oldest due row \
             (UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING), sends \
             it alone in one insertdataincallqueue request (reqwest, keep-alive) to the same \
             simulator, marks it submitted; no dispatch-calls; rate = rows / (first claim → \
             last mark)."
        ),
    );
    bench.collector.describe(
        SUBMITTER_VS_NAIVE,
        placement,
        "5a divided by 5g of the same run.",
    );
    bench.collector.describe(
        SUBMITTER_RSS,
        placement,
        "VmHWM from /proc after submitting the campaign and the latency probes.",
    );
    bench.collector.describe(
        SIM_RSS,
        placement,
        "VmHWM of the simulator after taking the campaign (it keeps every call in memory).",
    );
    Ok(())
}

/// Whether any row still waits to be sent, read through the two partial indexes the
/// claim reads (pending by due time, submitting by lease expiry): a probe of a few index
/// pages, however many rows the queue holds.
const ROWS_WAITING_SQL: &str = "
SELECT EXISTS (SELECT 1 FROM local_call_queue WHERE queue_status = 'pending'
                ORDER BY next_attempt_at LIMIT 1)
    OR EXISTS (SELECT 1 FROM local_call_queue WHERE queue_status = 'submitting'
                ORDER BY lease_expires_at LIMIT 1)";

/// The queue's progress: rows submitted, rows that ended `failed` or `needs_review`, the
/// first claim and the last submission. A scan of the whole queue.
const PROGRESS_SQL: &str = "
SELECT count(*) FILTER (WHERE queue_status = 'submitted'),
       count(*) FILTER (WHERE queue_status IN ('failed', 'needs_review')),
       min(attempt_started_at), max(submitted_at)
  FROM local_call_queue";

/// Polls until no row waits and every row is `submitted`; returns the span from the first
/// claim to the last submission, as the database recorded them.
///
/// The watching must not take from what it watches: the submitter is bound by Postgres,
/// which shares the machine's two cores with the bench. So the frequent poll is
/// [`ROWS_WAITING_SQL`], and the scan of [`PROGRESS_SQL`] runs once per
/// [`PROGRESS_INTERVAL`] (to notice a stall or a failed row) and once at the end. The
/// scan takes about 10 ms on the 60,000 rows of the campaign, the probe 0.2-0.5 ms: scanned
/// every [`POLL`], as the bench first did, the watching took a third of a
/// core from Postgres, and 5a read 19,100/s where the submitter alone reached 21,700/s.
/// The span comes from the rows' own times, so the poll's interval does not enter the
/// figure.
async fn wait_until_submitted(pool: &PgPool, numbers: usize) -> anyhow::Result<Duration> {
    let mut last_progress = (0_i64, Instant::now());
    let mut next_progress_read = Instant::now() + PROGRESS_INTERVAL;
    loop {
        let waiting: bool = sqlx::query_scalar(ROWS_WAITING_SQL)
            .fetch_one(pool)
            .await
            .context("while asking whether rows still wait")?;
        let now = Instant::now();
        if waiting && now < next_progress_read {
            tokio::time::sleep(POLL).await;
            continue;
        }
        next_progress_read = now + PROGRESS_INTERVAL;
        let (submitted, stuck, first_claim, last_submit): (
            i64,
            i64,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(PROGRESS_SQL)
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
        if !waiting {
            bail!("no row waits, yet only {submitted} of {numbers} rows are submitted");
        }
        if submitted > last_progress.0 {
            last_progress = (submitted, now);
        } else if now - last_progress.1 > STALL_TIMEOUT {
            bail!("submission stalled at {submitted} of {numbers} rows for {STALL_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The p50 (nearest rank) and the maximum of `latencies` in milliseconds; NaN for none.
fn latency_summary(latencies: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    (
        percentile(&ms, 0.5).unwrap_or(f64::NAN),
        ms.last().copied().unwrap_or(f64::NAN),
    )
}

/// Inserts `samples` single rows into the idle queue, each after [`PROBE_IDLE_GAP`] and
/// in a batch of its own, and returns for each the time from the INSERT being sent to
/// the first ground-truth read that lists the number accepted.
async fn probe_latencies(
    pool: &PgPool,
    http: &reqwest::Client,
    sim_url: &str,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        tokio::time::sleep(PROBE_IDLE_GAP).await;
        let batch_id = PROBE_FIRST_BATCH + i as i32;
        let phone = format!("96{i:08}");
        let started = Instant::now();
        sqlx::query("INSERT INTO local_call_queue (phone_number, batch_id) VALUES ($1, $2)")
            .bind(&phone)
            .bind(batch_id)
            .execute(pool)
            .await
            .context("while inserting a latency probe row")?;
        loop {
            let truth = ground_truth(http, sim_url, batch_id).await?;
            if truth.accepted_count(batch_id, &phone) > 0 {
                latencies.push(started.elapsed());
                break;
            }
            if started.elapsed() > PROBE_TIMEOUT {
                bail!(
                    "the simulator did not hold probe row {i} (batch {batch_id}) {PROBE_TIMEOUT:?} \
                     after its insert: see the submitter's log"
                );
            }
            tokio::time::sleep(PROBE_POLL).await;
        }
    }
    Ok(latencies)
}

/// The simulator's ground truth about one batch.
async fn ground_truth(
    http: &reqwest::Client,
    sim_url: &str,
    batch_id: i32,
) -> anyhow::Result<GroundTruth> {
    http.get(format!("{sim_url}/admin/ground-truth?batch_id={batch_id}"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("while reading the simulator's ground truth")?
        .json()
        .await
        .context("while decoding the simulator's ground truth")
}

/// The naive submitter's claim: the oldest due row alone, leased to the bench.
const NAIVE_CLAIM: &str = "UPDATE local_call_queue
    SET queue_status = 'submitting', lease_owner = $1,
        lease_expires_at = now() + make_interval(secs => 120),
        attempt_started_at = now(), updated_at = CURRENT_TIMESTAMP
  WHERE id = (SELECT id FROM local_call_queue
               WHERE queue_status = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at, id
               LIMIT 1
                 FOR UPDATE SKIP LOCKED)
RETURNING id, batch_id, phone_number, custom_data";

const NAIVE_OWNER: &str = "callbridge-bench-naive";

/// The body of an insert request carrying one row.
fn single_insert_body(batch_id: i32, phone_number: &str, custom_data: Option<&Value>) -> Value {
    let mut item = serde_json::json!({ "phone_number": phone_number });
    if let Some(custom_data) = custom_data {
        item["custom_data"] = custom_data.clone();
    }
    serde_json::json!({ "batch_id": batch_id, "data": [item] })
}

/// Submits every due row one at a time (claim it, send it alone, mark it) and returns the
/// time from the first claim to the last mark. Fails unless exactly `expected` rows went
/// out, each answered 2xx with status `success`.
async fn naive_submit(
    pool: &PgPool,
    http: &reqwest::Client,
    sim_url: &str,
    expected: usize,
) -> anyhow::Result<Duration> {
    let url = format!("{sim_url}/{}", callbridge_sim::INSERT_PATH);
    let mut conn = pool
        .acquire()
        .await
        .context("while taking the naive submitter's connection")?;
    let started = Instant::now();
    let mut sent = 0;
    while let Some((id, batch_id, phone, custom_data)) =
        sqlx::query_as::<_, (i32, Option<i32>, String, Option<Value>)>(NAIVE_CLAIM)
            .bind(NAIVE_OWNER)
            .fetch_optional(&mut *conn)
            .await
            .context("while claiming one row")?
    {
        let Some(batch_id) = batch_id else {
            bail!("naive row {id} has no batch_id");
        };
        let answer: Value = http
            .post(&url)
            .header("X-API-KEY", SIM_API_KEY)
            .json(&single_insert_body(batch_id, &phone, custom_data.as_ref()))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("while sending one row")?
            .json()
            .await
            .context("while reading the insert answer")?;
        ensure!(
            answer["status"] == "success",
            "the simulator did not take row {id}: {answer}"
        );
        let marked = sqlx::query(callbridge_submitter::store::MARK_SUBMITTED_SQL)
            .bind([id])
            .bind(NAIVE_OWNER)
            .execute(&mut *conn)
            .await
            .context("while marking one row submitted")?
            .rows_affected();
        ensure!(marked == 1, "row {id} was not marked submitted");
        sent += 1;
    }
    let elapsed = started.elapsed();
    ensure!(
        sent == expected,
        "the naive submitter sent {sent} rows, expected {expected}"
    );
    Ok(elapsed)
}

/// Rows of the closed-window campaign of [`claim_cost`].
const CLOSED_WINDOW_ROWS: i64 = 1_000_000;
/// Claims timed per figure.
const CLAIM_ROUNDS: u32 = 200;

/// 5i-5k: the submitter's claim statement, as its rounds run it, on an empty queue (5i)
/// and on a queue holding a campaign of 1,000,000 rows enqueued by `callbridge enqueue`
/// with a calling window that is closed (5j): enqueue dates each row at its window's
/// opening, and the claim reads only due rows through an index, so 5j should equal 5i.
/// 5k: `callbridge campaign set` moving that window, which dates the million waiting
/// rows again in its transaction, once.
pub async fn claim_cost(bench: &mut Bench) -> anyhow::Result<()> {
    let env = RunEnv::new(2, bench.options.pg_sslmode.as_deref()).await?;
    let pool = &env.pool;
    let empty = time_claims(pool).await?;

    let now = Utc::now();
    // A window of one hour that opens twelve hours from now: closed for every row. Then
    // one that opens thirteen hours from now: every row's due time changes.
    let opens = now + chrono::TimeDelta::hours(12);
    let reopens = now + chrono::TimeDelta::hours(13);
    let hours = |from: DateTime<Utc>| {
        let start = from.time();
        let end = start.overflowing_add_signed(chrono::TimeDelta::hours(1)).0;
        format!("{}-{}", start.format("%H:%M"), end.format("%H:%M"))
    };
    let csv = bench
        .log_dir
        .join(format!("closed-window-run{}.csv", bench.run));
    campaign::write_csv(&csv, CLOSED_WINDOW_ROWS as usize)?;
    let cli_env = service_env(&env, &bench.options);
    let enqueuing = Instant::now();
    run_cli(
        &cli_env,
        &[
            "enqueue",
            &csv.to_string_lossy(),
            "--campaign",
            CLOSED_WINDOW_CAMPAIGN,
            "--window",
            &hours(opens),
            "--time-zone",
            "UTC",
            "--json",
        ],
    )
    .await?;
    let enqueue_ms = enqueuing.elapsed().as_secs_f64() * 1000.0;
    let _ = std::fs::remove_file(&csv);
    ensure_none_due(pool, CLOSED_WINDOW_ROWS).await?;
    let waiting = time_claims(pool).await?;

    let setting = Instant::now();
    run_cli(
        &cli_env,
        &[
            "campaign",
            "set",
            CLOSED_WINDOW_CAMPAIGN,
            "--window",
            &hours(reopens),
            "--json",
        ],
    )
    .await?;
    let set_ms = setting.elapsed().as_secs_f64() * 1000.0;
    ensure_none_due(pool, CLOSED_WINDOW_ROWS).await?;
    // Right after the change, before autovacuum: the due index also holds the old entries
    // (all in the future, so the claim's scan of due rows does not reach them).
    let waiting_after_set = time_claims(pool).await?;

    bench.collector.record(CLAIM_EMPTY, empty, &[]);
    bench.collector.record(CLAIM_CLOSED_WINDOW, waiting, &[]);
    bench
        .collector
        .record(CLOSED_WINDOW_RULES_APPLIED, set_ms, &[]);
    let placement = "unpinned — the bench and Postgres share every CPU; no service runs";
    let claims = format!(
        "the mean of {CLAIM_ROUNDS} claims one after another, each `claim_due_rows` as the \
         submitter runs it (its transaction, generic plan, up to 1000 rows, the default \
         region's code and the erasure key's blocks bound), none finding a row due"
    );
    bench.collector.describe(
        CLAIM_EMPTY,
        placement,
        format!("{claims}; in a fresh migrated database, the queue empty."),
    );
    bench.collector.describe(
        CLAIM_CLOSED_WINDOW,
        placement,
        format!(
            "{claims}; after the release `callbridge enqueue` put {CLOSED_WINDOW_ROWS} rows \
             in one campaign whose one-hour window opens 12 hours later (every row dated at \
             that opening and checked not due). The claim reads due rows through an index, \
             so this should not exceed 5i."
        ),
    );
    bench.collector.describe(
        CLOSED_WINDOW_RULES_APPLIED,
        placement,
        format!(
            "wall time of the release `callbridge campaign set --window` moving 5j's \
             campaign's window an hour later, which dates its {CLOSED_WINDOW_ROWS} waiting \
             rows again in the command's one transaction."
        ),
    );
    tracing::info!(
        empty_ms = empty,
        closed_window_ms = waiting,
        closed_window_after_set_ms = waiting_after_set,
        enqueue_ms,
        set_ms,
        "claim cost per round"
    );
    Ok(())
}

/// The campaign of [`claim_cost`].
const CLOSED_WINDOW_CAMPAIGN: &str = "bench-closed-window";

/// Runs the `callbridge` CLI with `args`; fails with its error output unless it succeeds.
async fn run_cli(
    env: &std::collections::BTreeMap<String, String>,
    args: &[&str],
) -> anyhow::Result<()> {
    let output = Command::new(bin_dir()?.join("callbridge"))
        .args(args)
        .envs(env)
        .output()
        .await
        .with_context(|| format!("while running callbridge {}", args[0]))?;
    ensure!(
        output.status.success(),
        "callbridge {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Fails unless `rows` rows wait and none of them is due now.
async fn ensure_none_due(pool: &PgPool, rows: i64) -> anyhow::Result<()> {
    let (waiting, due): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE next_attempt_at <= now())
           FROM local_call_queue WHERE queue_status = 'pending'",
    )
    .fetch_one(pool)
    .await
    .context("while counting the closed-window campaign's rows")?;
    ensure!(
        waiting == rows && due == 0,
        "{waiting} rows wait, {due} of them due: expected {rows}, none due"
    );
    Ok(())
}

/// Mean milliseconds of one claim that finds nothing due, over [`CLAIM_ROUNDS`].
async fn time_claims(pool: &PgPool) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..CLAIM_ROUNDS {
        let claimed = callbridge_submitter::store::claim_due_rows(
            pool,
            "bench-claim-cost",
            1000,
            Duration::from_secs(120),
            Utc::now(),
            Some(91),
            Some(&crate::limits::ERASURE_PADS),
        )
        .await?;
        ensure!(claimed.is_empty(), "{} rows were due", claimed.len());
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(CLAIM_ROUNDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_is_the_nearest_rank_median_and_the_slowest() {
        let ms = |v: u64| Duration::from_millis(v);
        let (p50, max) = latency_summary(&[ms(30), ms(10), ms(90), ms(20)]);
        assert_eq!((p50, max), (20.0, 90.0));
        let (p50, max) = latency_summary(&[]);
        assert!(p50.is_nan() && max.is_nan());
    }

    /// A fresh run environment whose queue holds `rows` pending rows of campaign `key`,
    /// in batches from [`NAIVE_FIRST_BATCH`] on, as the raw COPY limit loads them.
    async fn queued(rows: usize, key: &str) -> RunEnv {
        let env = RunEnv::new(2, None).await.unwrap();
        let lines = campaign::copy_lines(rows, NAIVE_FIRST_BATCH, key);
        queue_copy_limit(&env.pool, campaign::QUEUE_COPY_COLUMNS, &lines, rows)
            .await
            .unwrap();
        env
    }

    /// The naive contrast sends every row once, alone, and the ground-truth read the
    /// latency probes use sees each number accepted.
    #[tokio::test]
    async fn the_naive_submitter_sends_each_row_once_in_a_request_of_its_own() {
        let sim = callbridge_sim::Simulator::spawn(
            callbridge_sim::SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap(),
        )
        .await
        .unwrap();
        sim.set_api_key(SIM_API_KEY);
        let rows = 30;
        let env = queued(rows, "t").await;
        let http = reqwest::Client::new();

        naive_submit(&env.pool, &http, &sim.base_url(), rows)
            .await
            .unwrap();

        let truth = ground_truth(&http, &sim.base_url(), NAIVE_FIRST_BATCH)
            .await
            .unwrap();
        let batch = &truth.batches[&NAIVE_FIRST_BATCH];
        assert_eq!(batch.accepted.len(), rows);
        assert!(batch.accepted.values().all(|&times| times == 1));
        assert_eq!(batch.inserts, rows as u32, "one request per row");
        assert_eq!(truth.accepted_count(NAIVE_FIRST_BATCH, "9700000029"), 1);
        let submitted: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM local_call_queue WHERE queue_status = 'submitted'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(submitted, rows as i64);
        sim.stop().await;
    }

    /// The cheap probe sees a pending row and a leased one as waiting, and nothing once
    /// all are sent; the watcher then returns the span the rows' own times give, and
    /// refuses to call a queue done when rows are missing or one ended `failed`.
    #[tokio::test]
    async fn the_watcher_sees_waiting_rows_and_measures_the_span_from_the_rows() {
        let rows = 3;
        let env = queued(rows, "w").await;
        let waiting = || async {
            sqlx::query_scalar::<_, bool>(ROWS_WAITING_SQL)
                .fetch_one(&env.pool)
                .await
                .unwrap()
        };
        let pool = &env.pool;
        let exec = |sql: &'static str| async move {
            sqlx::query(sql).execute(pool).await.unwrap();
        };
        assert!(waiting().await, "pending rows wait");

        exec(
            "UPDATE local_call_queue SET queue_status = 'submitting',
                    lease_expires_at = now() + interval '30 seconds',
                    attempt_started_at = now()",
        )
        .await;
        assert!(waiting().await, "leased rows wait");

        exec(
            "UPDATE local_call_queue SET queue_status = 'submitted', lease_expires_at = NULL,
                    attempt_started_at = timestamptz '2026-01-01 10:00:00+00',
                    submitted_at = timestamptz '2026-01-01 10:00:02+00'",
        )
        .await;
        assert!(!waiting().await, "nothing waits once all are submitted");
        let span = wait_until_submitted(&env.pool, rows).await.unwrap();
        assert_eq!(span, Duration::from_secs(2), "the span is the rows' own");

        let missing = wait_until_submitted(&env.pool, rows + 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(missing.contains("only 3 of 4"), "{missing}");

        exec(
            "UPDATE local_call_queue SET queue_status = 'failed'
              WHERE id = (SELECT min(id) FROM local_call_queue)",
        )
        .await;
        let failed = wait_until_submitted(&env.pool, rows)
            .await
            .unwrap_err()
            .to_string();
        assert!(failed.contains("1 rows ended failed"), "{failed}");
    }

    #[test]
    fn a_naive_request_carries_one_row_as_the_api_reads_it() {
        let custom = serde_json::json!({ "segment": "gold" });
        assert_eq!(
            single_insert_body(7, "9700000001", Some(&custom)),
            serde_json::json!({
                "batch_id": 7,
                "data": [{ "phone_number": "9700000001", "custom_data": { "segment": "gold" } }]
            })
        );
        assert_eq!(
            single_insert_body(7, "9700000001", None),
            serde_json::json!({ "batch_id": 7, "data": [{ "phone_number": "9700000001" }] })
        );
    }
}
