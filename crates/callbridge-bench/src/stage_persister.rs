//! Stage 3: the persister drains a preloaded queue into committed rows; the same binary
//! with batching off (one message, one transaction, ack; prefetch 1) is the contrast.
//! The same drain on the bench's private Postgres, without and with TLS, prices TLS.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use callbridge_runtime::config::PersisterSettings;
use sqlx::PgPool;

use crate::figures::{
    ONE_PER_TX_CPU, ONE_PER_TX_DRAIN, PERSISTER_CPU, PERSISTER_DRAIN, PERSISTER_RATIO,
    PERSISTER_RSS, PERSISTER_VS_ONE_PER_TX, PRIVATE_PLAIN_DRAIN, TLS_DRAIN, TLS_RATIO,
};
use crate::limits::{PublishShape, publish_confirm_limit};
use crate::procs::{CpuMeter, CpuShare, Group, Selector, cpu_time, micros_per_item};
use crate::services::{Service, ServiceSpec, free_port};
use crate::workload::callbacks;
use crate::{Bench, RunEnv, RunLimits, service_env};

/// How often the committed row count is read while draining.
const POLL: Duration = Duration::from_millis(10);
/// A drain that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The persister's configuration for a drain.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// The persister's defaults (`PersisterSettings::default()`).
    Batched,
    /// Batch size 1 and prefetch 1: consume one, one transaction, ack.
    OnePerTransaction,
}

/// Which server a drain's database is on.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// The shared one, with `--pg-sslmode`.
    Shared,
    /// The bench's private one, with this `sslmode`.
    Private(&'static str),
}

impl Server {
    /// For call ids and log file names.
    fn label(self) -> String {
        match self {
            Server::Shared => "shared".to_owned(),
            Server::Private(sslmode) => format!("private-{sslmode}"),
        }
    }
}

/// What one drain measured.
struct Drain {
    rate: f64,
    cpu: Vec<CpuShare>,
    peak_rss_mib: Option<f64>,
    /// The persister's CPU time per event drained, in µs.
    micros_per_event: f64,
}

/// Measures the batched persister and the one-per-transaction consumer, each in a fresh
/// environment, and records 3a–3d, 3h, 3i and 6b; then 3e–3g when the private server runs.
pub async fn run(bench: &mut Bench, limits: &RunLimits) -> anyhow::Result<()> {
    let messages = bench.options.persist_messages;
    let batched = drain(bench, Mode::Batched, messages, Server::Shared).await?;
    bench
        .collector
        .record(PERSISTER_DRAIN, batched.rate, &batched.cpu);
    bench
        .collector
        .record(PERSISTER_CPU, batched.micros_per_event, &batched.cpu);
    if let Some(rss) = batched.peak_rss_mib {
        bench.collector.record(PERSISTER_RSS, rss, &[]);
    }
    let batched = batched.rate;
    let single = drain(
        bench,
        Mode::OnePerTransaction,
        bench.options.one_per_tx_messages,
        Server::Shared,
    )
    .await?;
    bench
        .collector
        .record(ONE_PER_TX_DRAIN, single.rate, &single.cpu);
    bench
        .collector
        .record(ONE_PER_TX_CPU, single.micros_per_event, &single.cpu);
    let single = single.rate;
    bench
        .collector
        .record(PERSISTER_RATIO, batched / limits.upsert, &[]);
    bench
        .collector
        .record(PERSISTER_VS_ONE_PER_TX, batched / single, &[]);

    let placement = bench.pinned_placement("persister", false);
    let defaults = PersisterSettings::default();
    bench.collector.describe(
        PERSISTER_DRAIN,
        placement.clone(),
        format!(
            "{} callbacks (started/answered/completed waves; their real envelopes) preloaded into \
             `callbridge.persist`, then the release `callbridge-persister` started with its \
             defaults (batches ≤ {}, linger {} ms, prefetch {}, {} batch transactions in \
             flight); rate = events committed to call_events (max(id) polled every {} ms, rows \
             counted at the first visible one and once max(id) reaches the total) from \
             the first visible row to the last; every call's call_logs row checked afterwards.",
            bench.options.persist_messages,
            defaults.batch_size,
            defaults.batch_linger_ms,
            defaults.prefetch,
            defaults.concurrency,
            POLL.as_millis()
        ),
    );
    bench.collector.describe(
        ONE_PER_TX_DRAIN,
        placement.clone(),
        format!(
            "the same binary and SQL with CALLBRIDGE__PERSISTER__BATCH_SIZE=1, PREFETCH=1 and \
             CONCURRENCY=1 (consume one, one transaction, ack), {} preloaded callbacks.",
            bench.options.one_per_tx_messages
        ),
    );
    bench.collector.describe(
        PERSISTER_RATIO,
        placement.clone(),
        "3a divided by 1b of the same run (the persister also writes call_events, folds each \
         call's events, refreshes batches and the outbox).",
    );
    bench.collector.describe(
        PERSISTER_VS_ONE_PER_TX,
        placement.clone(),
        "3a divided by 3c of the same run.",
    );
    let cpu_note = |drain: &str| {
        format!(
            "the persister's CPU time (utime + stime from /proc/<pid>/stat) from its start to \
             the end of {drain}'s drain, divided by the events drained."
        )
    };
    bench
        .collector
        .describe(PERSISTER_CPU, placement.clone(), cpu_note("3a"));
    bench
        .collector
        .describe(ONE_PER_TX_CPU, placement.clone(), cpu_note("3c"));
    bench.collector.describe(
        PERSISTER_RSS,
        placement.clone(),
        "VmHWM from /proc after draining 3a's queue.",
    );
    if bench.private_postgres.is_some() {
        price_tls(bench, placement).await?;
    }
    Ok(())
}

/// 3e–3g: 3a's drain twice on the private server, plain then TLS, so the ratio compares
/// runs that differ only in TLS (same server, settings and moment).
async fn price_tls(bench: &mut Bench, placement: String) -> anyhow::Result<()> {
    let messages = bench.options.persist_messages;
    let plain = drain(bench, Mode::Batched, messages, Server::Private("disable")).await?;
    let tls = drain(bench, Mode::Batched, messages, Server::Private("require")).await?;
    let collector = &mut bench.collector;
    collector.record(PRIVATE_PLAIN_DRAIN, plain.rate, &plain.cpu);
    collector.record(TLS_DRAIN, tls.rate, &tls.cpu);
    collector.record(TLS_RATIO, tls.rate / plain.rate, &[]);
    collector.describe(
        TLS_DRAIN,
        placement.clone(),
        format!(
            "3a's drain ({messages} preloaded callbacks, the persister's defaults) with every \
             connection (persister and bench) using sslmode=require, on a Postgres cluster the \
             bench starts for itself (the shared server's major version and the settings its \
             configuration file sets; ssl=on with a self-signed certificate made by rcgen; \
             loopback)."
        ),
    );
    collector.describe(
        PRIVATE_PLAIN_DRAIN,
        placement.clone(),
        "3e on the same private cluster with sslmode=disable, run just before it.",
    );
    collector.describe(TLS_RATIO, placement, "3e divided by 3f of the same run.");
    Ok(())
}

/// Preloads `messages` callbacks, starts the persister and measures its drain.
async fn drain(
    bench: &mut Bench,
    mode: Mode,
    messages: usize,
    server: Server,
) -> anyhow::Result<Drain> {
    let env = match (server, &bench.private_postgres) {
        (Server::Shared, _) => RunEnv::new(2, bench.options.pg_sslmode.as_deref()).await?,
        (Server::Private(sslmode), Some(private)) => {
            RunEnv::on(private.admin_url(), 2, Some(sslmode)).await?
        }
        (Server::Private(_), None) => bail!("the private Postgres is not running"),
    };
    let tag = format!("persist{}{mode:?}{}", bench.run, server.label());
    let envelopes: Vec<_> = callbacks(messages, &tag, crate::CALLBACK_SECRET.as_bytes())
        .iter()
        .map(|callback| callback.message())
        .collect();
    publish_confirm_limit(
        &env.vhost.amqp_url(),
        &envelopes,
        PublishShape {
            channels: bench.options.publish_channels,
            in_flight_per_channel: bench.options.publish_window,
        },
    )
    .await
    .context("while preloading the persist queue")?;
    drop(envelopes);

    let bind = format!("127.0.0.1:{}", free_port()?);
    let mut vars = service_env(&env, &bench.options);
    vars.insert("PERSISTER_BIND".into(), bind.clone());
    if let Mode::OnePerTransaction = mode {
        vars.insert("CALLBRIDGE__PERSISTER__BATCH_SIZE".into(), "1".into());
        vars.insert("CALLBRIDGE__PERSISTER__PREFETCH".into(), "1".into());
        vars.insert("CALLBRIDGE__PERSISTER__CONCURRENCY".into(), "1".into());
    }
    let spec = ServiceSpec {
        name: format!("persister-{mode:?}-{}-run{}", server.label(), bench.run),
        binary: "callbridge-persister".into(),
        args: Vec::new(),
        env: vars,
        cpus: bench.service_cpus(),
        ready_url: format!("http://{bind}/readyz"),
    };
    bench.options.settle("persister").await;
    let service = Service::spawn(&spec, &bench.log_dir)?;
    let meter = CpuMeter::start(vec![
        Group::this_process(),
        Group::new("persister", Selector::Pid(service.pid())),
        Group::rabbitmq(),
        Group::postgres(),
    ]);
    let service = service.wait_ready(&spec.ready_url).await?;
    let drained = wait_for_rows(&env.pool, messages).await?;
    // From its start, so connecting and declaring count too: a few milliseconds against
    // the drain's seconds.
    let micros_per_event =
        cpu_time(service.pid()).map_or(f64::NAN, |used| micros_per_item(used, messages));
    let cpu = meter.stop();
    let rate = drained.per_second();
    tracing::info!(
        mode = ?mode,
        server = ?server,
        per_second = rate as u64,
        cpu_us_per_event = format!("{micros_per_event:.1}"),
        "persister drain"
    );

    let calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM call_logs WHERE call_status = 'completed'")
            .fetch_one(&env.pool)
            .await
            .context("while checking call_logs after the drain")?;
    let expected_completed = (messages / 3000) * 1000 + (messages % 3000).saturating_sub(2000);
    if calls as usize != expected_completed {
        bail!(
            "after the drain {calls} calls are completed in call_logs, expected {expected_completed}"
        );
    }
    let peak_rss_mib = service.peak_rss_mib();
    service.stop().await?;
    Ok(Drain {
        rate,
        cpu,
        peak_rss_mib,
        micros_per_event,
    })
}

/// When the first rows became visible and when all `expected` were.
#[derive(Debug)]
struct Drained {
    first_count: usize,
    first_seen: Instant,
    expected: usize,
    done: Instant,
}

impl Drained {
    fn per_second(&self) -> f64 {
        crate::stats::per_second(
            self.expected - self.first_count,
            (self.done - self.first_seen).as_secs_f64(),
        )
    }
}

/// Polls `call_events` until it holds `expected` rows.
///
/// A `count(*)` scans the whole table: every 10 ms over tens of thousands of rows it took
/// a third of a core from the Postgres it measures. So each poll reads only `max(id)` (one
/// index probe), and the rows are counted only when they can have changed the answer:
/// at the first visible row, and once `max(id)` reached `expected`. Ids come from the
/// table's sequence in a fresh database, so `count(*) <= max(id)` always (a rolled-back
/// insert burns ids, and a transaction can commit after one holding higher ids: both only
/// make `max(id)` run ahead, and the count then decides).
async fn wait_for_rows(pool: &PgPool, expected: usize) -> anyhow::Result<Drained> {
    let count_rows = || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM call_events")
            .fetch_one(pool)
            .await
            .context("while counting call_events")?;
        anyhow::Ok(count as usize)
    };
    let mut first: Option<(usize, Instant)> = None;
    let mut last_progress = (0, Instant::now());
    loop {
        let highest: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM call_events")
            .fetch_one(pool)
            .await
            .context("while reading the highest call_events id")?;
        let highest = highest.unwrap_or(0) as usize;
        let now = Instant::now();
        if highest > 0 && first.is_none() {
            first = Some((count_rows().await?, now));
        }
        if highest >= expected && count_rows().await? >= expected {
            let (first_count, first_seen) = first.unwrap_or((0, now));
            // A drain seen complete at its first poll has no measurable duration.
            if first_count >= expected {
                bail!("all {expected} rows were committed before the first poll: preload more");
            }
            return Ok(Drained {
                first_count,
                first_seen,
                expected,
                done: now,
            });
        }
        if highest > last_progress.0 {
            last_progress = (highest, now);
        } else if now - last_progress.1 > STALL_TIMEOUT {
            bail!(
                "the drain stalled at call_events id {highest} of {expected} rows for \
                 {STALL_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
