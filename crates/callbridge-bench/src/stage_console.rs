//! Stage 8: the operator console's campaigns page over a long history. A fresh database
//! holds 1,000 campaigns whose 20,000 batches hold 10,000,000 `call_logs` rows (their
//! aggregates as the persister leaves them) and 20,000 waiting queue rows; then a console,
//! in this process, is asked for `/campaigns` by a signed-in client, one request after
//! another (8a p99, 8b p50), beside the naive way to the same figures — one query that
//! scans `call_logs` (8c) — and one campaign's page with its outcome chart (8d).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use callbridge_runtime::config::Settings;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::figures::{
    CONSOLE_CAMPAIGN_PAGE_P99, CONSOLE_CAMPAIGNS_P50, CONSOLE_CAMPAIGNS_P99, CONSOLE_NAIVE_SCAN,
};
use crate::procs::{CpuMeter, Group};
use crate::stats::percentile;
use crate::{Bench, RunEnv};

/// Campaigns on the page.
pub const CAMPAIGNS: i64 = 1_000;
/// `call_logs` rows under them.
pub const CALLS: i64 = 10_000_000;
/// Calls per batch, as `callbridge enqueue` batches them by default.
const CALLS_PER_BATCH: i64 = 500;
/// Waiting queue rows per campaign (their counts are index range counts).
const WAITING_PER_CAMPAIGN: i64 = 20;
/// Requests timed per run, after [`WARM_UP`] untimed ones.
const REQUESTS: usize = 200;
const WARM_UP: usize = 5;
/// Runs of the naive scan per run of the stage (each one takes seconds).
const NAIVE_RUNS: usize = 3;

const TOKEN: &str = "bench-console-operator-token";

/// Fills the run's database; returns the seconds it took.
async fn fill(pool: &PgPool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let batches = CALLS / CALLS_PER_BATCH;
    let per_campaign = batches / CAMPAIGNS;
    sqlx::query(
        "INSERT INTO campaigns (name)
         SELECT 'bench campaign ' || lpad(n::text, 4, '0') FROM generate_series(1, $1) AS n",
    )
    .bind(CAMPAIGNS)
    .execute(pool)
    .await
    .context("while creating the campaigns")?;
    sqlx::query(
        "INSERT INTO call_batches (batch_id, accountcode, campaign_id, batch_name, created_at)
         SELECT b, 'BENCH', first.id + (b - 1) / $2, 'bench batch ' || b,
                TIMESTAMP '2026-11-01' + b * INTERVAL '1 minute'
           FROM generate_series(1, $1) AS b,
                (SELECT min(id) AS id FROM campaigns) AS first",
    )
    .bind(batches)
    .bind(per_campaign)
    .execute(pool)
    .await
    .context("while creating the batches")?;
    // One statement, every key ascending with n (call_id, phone_number, batch_id,
    // created_at), so each index grows at its end: the insert runs at COPY-like speed.
    // Half the calls answered (30-329 s), the rest busy, no answer, failed or timeout.
    tracing::info!(rows = CALLS, "console: generating call_logs");
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status,
                                disposition, duration, start_time, end_time, created_at, updated_at)
         SELECT 'bench-' || lpad(n::text, 9, '0'), 'BENCH', (n - 1) / $2 + 1,
                '9' || lpad(n::text, 9, '0'), status, status,
                CASE WHEN status = 'completed' THEN 30 + n % 300 ELSE 0 END,
                at, at + INTERVAL '40 seconds', at, at + INTERVAL '40 seconds'
           FROM generate_series(1, $1) AS n,
                LATERAL (SELECT CASE n % 10 WHEN 6 THEN 'busy' WHEN 7 THEN 'no_answer'
                                            WHEN 8 THEN 'failed' WHEN 9 THEN 'timeout'
                                            ELSE 'completed' END AS status,
                                TIMESTAMP '2026-11-01' + n * INTERVAL '250 milliseconds' AS at) AS call",
    )
    .bind(CALLS)
    .bind(CALLS_PER_BATCH)
    .execute(pool)
    .await
    .context("while generating call_logs")?;
    // The aggregates the persister keeps, as it would have left them.
    sqlx::query(
        "UPDATE call_batches b
            SET total_calls = a.total, completed_calls = a.completed, failed_calls = a.failed,
                answered_seconds = a.answered, batch_status = 'completed',
                submitted_at = b.created_at, completed_at = b.created_at + INTERVAL '2 hours'
           FROM (SELECT batch_id, count(*) AS total,
                        count(*) FILTER (WHERE call_status = 'completed') AS completed,
                        count(*) FILTER (WHERE call_status <> 'completed') AS failed,
                        coalesce(sum(duration) FILTER (WHERE call_status = 'completed'), 0) AS answered
                   FROM call_logs GROUP BY batch_id) AS a
          WHERE b.batch_id = a.batch_id",
    )
    .execute(pool)
    .await
    .context("while setting the batches' aggregates")?;
    // Work still to do: waiting rows in each campaign's newest batch.
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, campaign_id, queue_status)
         SELECT '8' || lpad((c.id * 1000 + w)::text, 9, '0'),
                (SELECT max(batch_id) FROM call_batches WHERE campaign_id = c.id), c.id,
                CASE WHEN w % 10 = 0 THEN 'failed' ELSE 'pending' END
           FROM campaigns c, generate_series(1, $1) AS w",
    )
    .bind(WAITING_PER_CAMPAIGN)
    .execute(pool)
    .await
    .context("while adding waiting queue rows")?;
    // VACUUM runs outside a transaction: the simple protocol, one statement.
    sqlx::raw_sql("VACUUM ANALYZE call_logs, call_batches, local_call_queue, campaigns")
        .execute(pool)
        .await
        .context("while analysing the generated tables")?;
    Ok(started.elapsed().as_secs_f64())
}

/// The same call figures the campaigns page shows, the naive way: every campaign's calls
/// counted from `call_logs` in one statement.
const NAIVE_SQL: &str = "
SELECT b.campaign_id, count(*) AS attempts,
       count(*) FILTER (WHERE l.call_status = 'completed') AS reached,
       count(*) FILTER (WHERE callbridge_call_count_kind(l.call_status) = 'failed') AS not_reached,
       coalesce(sum(l.duration) FILTER (WHERE l.call_status = 'completed'), 0) AS answered_seconds
  FROM call_logs l
  JOIN call_batches b ON b.batch_id = l.batch_id
 WHERE b.campaign_id IS NOT NULL
 GROUP BY b.campaign_id";

/// A signed-in client of the console at `base`: the session cookie it was given.
async fn sign_in(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .context("while signing in to the console")?;
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("callbridge_console_session="))
        .map(|value| value.split(';').next().unwrap_or_default().to_owned())
        .context("the console set no session cookie")
}

/// `REQUESTS` sequential GETs of `path` (after `WARM_UP`), each checked 200 and
/// `check`ed; their latencies in milliseconds, sorted.
async fn time_page(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    check: impl Fn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(REQUESTS);
    for index in 0..WARM_UP + REQUESTS {
        let started = Instant::now();
        let response = http
            .get(url)
            .header(COOKIE, cookie)
            .send()
            .await
            .with_context(|| format!("while asking for {url}"))?;
        let status = response.status();
        let body = response.text().await.context("while reading the page")?;
        let elapsed = started.elapsed();
        ensure!(status.is_success(), "{url} answered {status}");
        if index == 0 {
            check(&body)?;
        }
        if index >= WARM_UP {
            latencies.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let env = RunEnv::new(6, bench.options.pg_sslmode.as_deref()).await?;
    let filled = fill(&env.pool).await?;
    tracing::info!(
        seconds = format!("{filled:.1}"),
        "console: history generated"
    );

    let settings = Settings::load_from([
        ("CLIENT_CALLING_DB_URL", env.db_url.as_str()),
        ("CALLBRIDGE_CONSOLE_TOKEN", TOKEN),
        ("CONSOLE_BIND", "127.0.0.1:0"),
        ("CALLBRIDGE__CONSOLE__SECURE_COOKIE", "false"),
    ])
    .context("while configuring the console")?;
    // Built with a pool of its own, not the run's: see `Application::with_pool` for why a
    // pool the console served from is no use once it stops.
    let console = callbridge_console::Application::build(settings.console()?).await?;
    let base = format!("http://127.0.0.1:{}", console.port());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(console.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?;
    let cookie = sign_in(&http, &base).await?;

    bench.options.settle("console campaigns page").await;
    let meter = CpuMeter::start(vec![Group::this_process(), Group::postgres()]);
    let campaigns = time_page(&http, &format!("{base}/campaigns"), &cookie, |body| {
        let rows = body.matches("<tr data-campaign=").count();
        ensure!(
            rows == CAMPAIGNS as usize,
            "the page shows {rows} campaigns"
        );
        Ok(())
    })
    .await?;
    let cpu = meter.stop();
    let p50 = percentile(&campaigns, 0.50).unwrap_or(f64::NAN);
    let p99 = percentile(&campaigns, 0.99).unwrap_or(f64::NAN);
    tracing::info!(
        p50 = format!("{p50:.1}"),
        p99 = format!("{p99:.1}"),
        "console: GET /campaigns"
    );
    bench.collector.record(CONSOLE_CAMPAIGNS_P99, p99, &cpu);
    bench.collector.record(CONSOLE_CAMPAIGNS_P50, p50, &cpu);

    let one = format!("{base}/campaigns/bench%20campaign%200500");
    let pages = time_page(&http, &one, &cookie, |body| {
        ensure!(body.contains("<svg class=\"chart\""), "no outcome chart");
        Ok(())
    })
    .await?;
    let page_p99 = percentile(&pages, 0.99).unwrap_or(f64::NAN);
    tracing::info!(
        p99 = format!("{page_p99:.1}"),
        "console: GET /campaigns/{{name}}"
    );
    bench
        .collector
        .record(CONSOLE_CAMPAIGN_PAGE_P99, page_p99, &[]);
    shutdown.cancel();
    served.await.ok();

    bench.options.settle("naive campaign figures").await;
    let mut naive = Vec::with_capacity(NAIVE_RUNS);
    for _ in 0..NAIVE_RUNS {
        let started = Instant::now();
        let rows = sqlx::query(NAIVE_SQL)
            .fetch_all(&env.pool)
            .await
            .context("while counting the campaigns' calls from call_logs")?;
        naive.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            rows.len() == CAMPAIGNS as usize,
            "the scan found {} campaigns",
            rows.len()
        );
    }
    naive.sort_by(f64::total_cmp);
    let naive_ms = percentile(&naive, 0.50).unwrap_or(f64::NAN);
    tracing::info!(
        ms = format!("{naive_ms:.0}"),
        "console: naive scan of call_logs"
    );
    bench.collector.record(CONSOLE_NAIVE_SCAN, naive_ms, &[]);

    let placement = "console in the bench's process (unpinned); Postgres unpinned".to_owned();
    let history = format!(
        "a fresh database of {CAMPAIGNS} campaigns, {} batches of {CALLS_PER_BATCH} calls and \
         {CALLS} call_logs rows (half answered) with the batches' aggregates as the persister \
         keeps them, plus {WAITING_PER_CAMPAIGN} waiting queue rows per campaign; VACUUM \
         ANALYZEd (generated in {filled:.0} s)",
        CALLS / CALLS_PER_BATCH
    );
    bench.collector.describe(
        CONSOLE_CAMPAIGNS_P99,
        placement.clone(),
        format!(
            "{history}; GET /campaigns with an operator's session, {REQUESTS} requests one \
             after another after {WARM_UP} untimed, each the whole page ({CAMPAIGNS} rows) \
             read; latency = request sent → body read."
        ),
    );
    bench
        .collector
        .describe(CONSOLE_CAMPAIGNS_P50, placement.clone(), "8a's requests.");
    bench.collector.describe(
        CONSOLE_NAIVE_SCAN,
        placement.clone(),
        format!(
            "8a's database: attempts, answered, not answered and answered seconds of every \
             campaign counted from call_logs joined to call_batches in one query (what the \
             page would cost without the maintained aggregates); median of {NAIVE_RUNS}."
        ),
    );
    bench.collector.describe(
        CONSOLE_CAMPAIGN_PAGE_P99,
        placement,
        format!(
            "8a's database: GET of one campaign's page ({} batches, {} calls, its outcome \
             chart read from those calls through the batch index); {REQUESTS} requests as in 8a.",
            CALLS / CALLS_PER_BATCH / CAMPAIGNS,
            CALLS / CAMPAIGNS
        ),
    );
    Ok(())
}
