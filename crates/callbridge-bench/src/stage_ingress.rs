//! Stage 2: the ingress under its own load generator — a closed-loop concurrency sweep
//! for the peak, then an open-loop run at half the peak for latency — and the same for
//! the naive ingress (one confirm at a time) as a contrast.

use std::time::Duration;

use anyhow::Context;
use callbridge_types::topology::PERSIST_QUEUE;
use lapin::options::QueuePurgeOptions;
use lapin::{Channel, Connection};

use crate::figures::{
    INGRESS_CPU, INGRESS_P50, INGRESS_P99, INGRESS_PEAK, INGRESS_RATIO, INGRESS_RSS,
    NAIVE_INGRESS_CPU, NAIVE_INGRESS_P50, NAIVE_INGRESS_P99, NAIVE_INGRESS_PEAK,
    NAIVE_INGRESS_RATIO, NAIVE_INGRESS_RSS,
};
use crate::loadgen::{BodySource, closed_loop, open_loop};
use crate::naive_ingress;
use crate::procs::{CpuMeter, CpuShare, Group, cpu_time, micros_per_item};
use crate::report::FigureSpec;
use crate::services::{Service, ServiceSpec, free_port};
use crate::workload::signed_bodies;
use crate::{Bench, RunEnv, RunLimits, service_env};

/// The two ingresses compared.
#[derive(Debug, Clone, Copy)]
enum Variant {
    Real,
    Naive,
}

struct VariantFigures {
    label: &'static str,
    peak: FigureSpec,
    ratio: FigureSpec,
    p50: FigureSpec,
    p99: FigureSpec,
    rss: FigureSpec,
    cpu_per_callback: FigureSpec,
}

impl Variant {
    fn figures(self) -> VariantFigures {
        match self {
            Variant::Real => VariantFigures {
                label: "ingress",
                peak: INGRESS_PEAK,
                ratio: INGRESS_RATIO,
                p50: INGRESS_P50,
                p99: INGRESS_P99,
                rss: INGRESS_RSS,
                cpu_per_callback: INGRESS_CPU,
            },
            Variant::Naive => VariantFigures {
                label: "naive ingress",
                peak: NAIVE_INGRESS_PEAK,
                ratio: NAIVE_INGRESS_RATIO,
                p50: NAIVE_INGRESS_P50,
                p99: NAIVE_INGRESS_P99,
                rss: NAIVE_INGRESS_RSS,
                cpu_per_callback: NAIVE_INGRESS_CPU,
            },
        }
    }

    fn spec(self, env: &RunEnv, bench: &Bench) -> anyhow::Result<(ServiceSpec, String)> {
        let port = free_port()?;
        let bind = format!("127.0.0.1:{port}");
        let mut vars = service_env(env, &bench.options);
        let (name, binary) = match self {
            Variant::Real => {
                vars.insert("INGRESS_BIND".into(), bind.clone());
                ("ingress", "callbridge-ingress")
            }
            Variant::Naive => {
                vars.insert(naive_ingress::BIND_ENV.into(), bind.clone());
                ("naive-ingress", "callbridge-bench-naive-ingress")
            }
        };
        let spec = ServiceSpec {
            name: format!("{name}-run{}", bench.run),
            binary: binary.into(),
            args: Vec::new(),
            env: vars,
            cpus: bench.service_cpus(),
            ready_url: format!("http://{bind}/readyz"),
        };
        Ok((spec, format!("http://{bind}/callback")))
    }
}

/// Runs the sweep and the half-peak run for both ingresses in a fresh environment.
pub async fn run(bench: &mut Bench, limits: &RunLimits) -> anyhow::Result<()> {
    let env = RunEnv::new(1, bench.options.pg_sslmode.as_deref()).await?;
    let tag = format!("ingress{}", bench.run);
    let bodies = BodySource::new(signed_bodies(
        0..bench.options.ingress_bodies,
        &tag,
        crate::CALLBACK_SECRET.as_bytes(),
    ));
    for variant in [Variant::Real, Variant::Naive] {
        measure(bench, &env, &bodies, variant, limits).await?;
    }
    Ok(())
}

async fn measure(
    bench: &mut Bench,
    env: &RunEnv,
    bodies: &std::sync::Arc<BodySource>,
    variant: Variant,
    limits: &RunLimits,
) -> anyhow::Result<()> {
    let figures = variant.figures();
    let (spec, url) = variant.spec(env, bench)?;
    let service = Service::start(&spec, &bench.log_dir).await?;
    let groups = || {
        vec![
            Group::this_process(),
            Group::new(figures.label, crate::procs::Selector::Pid(service.pid())),
            Group::rabbitmq(),
            Group::postgres(),
        ]
    };
    let purger = Purger::connect(env).await?;
    let client = crate::loadgen::client(&url)?;
    bench.pin_load_generator().await?;
    bench.options.settle(figures.label).await;

    // Warm-up: connections opened, the channel pool and caches hot.
    closed_loop(&client, bodies, 8, Duration::from_millis(500)).await;
    purger.purge().await?;

    let level_time = Duration::from_secs_f64(bench.options.level_secs);
    let mut peak: Option<(f64, usize, Vec<CpuShare>, f64)> = None;
    for &concurrency in &bench.options.ingress_levels {
        let meter = CpuMeter::start(groups());
        let cpu_before = cpu_time(service.pid());
        let result = closed_loop(&client, bodies, concurrency, level_time).await;
        let cpu_used = cpu_before
            .zip(cpu_time(service.pid()))
            .map(|(before, after)| after.saturating_sub(before));
        let cpu = meter.stop();
        let micros_per_callback =
            cpu_used.map_or(f64::NAN, |used| micros_per_item(used, result.accepted));
        purger.purge().await?;
        let rate = result.accepted_per_second();
        tracing::info!(
            variant = figures.label,
            concurrency,
            per_second = rate as u64,
            p50_ms = format!("{:.2}", result.p50_ms()),
            p99_ms = format!("{:.2}", result.p99_ms()),
            cpu_us_per_callback = format!("{micros_per_callback:.1}"),
            refused = result.refused,
            "sweep level"
        );
        bench.collector.record_sweep(
            figures.label,
            concurrency,
            rate,
            result.p50_ms(),
            result.p99_ms(),
        );
        if peak.as_ref().is_none_or(|(best, ..)| rate > *best) {
            peak = Some((rate, concurrency, cpu, micros_per_callback));
        }
    }
    let (peak_rate, peak_concurrency, peak_cpu, peak_micros) =
        peak.context("no sweep levels configured")?;
    bench.collector.record(figures.peak, peak_rate, &peak_cpu);
    bench
        .collector
        .record(figures.cpu_per_callback, peak_micros, &peak_cpu);
    bench
        .collector
        .record(figures.ratio, peak_rate / limits.publish, &peak_cpu);

    let half = peak_rate / 2.0;
    let meter = CpuMeter::start(groups());
    let result = open_loop(
        &client,
        bodies,
        half,
        Duration::from_secs_f64(bench.options.half_peak_secs),
    )
    .await;
    let cpu = meter.stop();
    purger.purge().await?;
    tracing::info!(
        variant = figures.label,
        offered_per_second = half as u64,
        p50_ms = format!("{:.2}", result.p50_ms()),
        p99_ms = format!("{:.2}", result.p99_ms()),
        refused = result.refused,
        "half peak"
    );
    bench.collector.record(figures.p50, result.p50_ms(), &cpu);
    bench.collector.record(figures.p99, result.p99_ms(), &cpu);
    if let Some(rss) = service.peak_rss_mib() {
        bench.collector.record(figures.rss, rss, &[]);
    }
    service.stop().await?;
    bench.unpin_load_generator().await?;

    let placement = bench.pinned_placement(figures.label, true);
    let levels = bench
        .options
        .ingress_levels
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let how = match variant {
        Variant::Real => "the release `callbridge-ingress` binary (defaults: 4 publisher channels)",
        Variant::Naive => {
            "`callbridge-bench-naive-ingress`: the same checks and message, one channel, each \
             request publishes and awaits its confirm under the channel's lock"
        }
    };
    bench.collector.describe(
        figures.peak,
        placement.clone(),
        format!(
            "{how}; closed loop of keep-alive HTTP/1.1 workers posting distinct signed callbacks \
             (`X-Signature`), concurrency {levels}, {}s per level, queue purged between levels; \
             the best level's accepted (200) per second (last peak at concurrency \
             {peak_concurrency}).",
            bench.options.level_secs
        ),
    );
    bench.collector.describe(
        figures.ratio,
        placement.clone(),
        format!("{} divided by 1a of the same run.", figures.peak.id),
    );
    let latency_note = format!(
        "open loop: requests started at half the run's peak rate for {}s regardless of answers \
         (no coordinated omission); latency = send → full answer at the load generator.",
        bench.options.half_peak_secs
    );
    bench
        .collector
        .describe(figures.p50, placement.clone(), latency_note.clone());
    bench
        .collector
        .describe(figures.p99, placement.clone(), latency_note);
    bench.collector.describe(
        figures.cpu_per_callback,
        placement.clone(),
        format!(
            "the {label}'s CPU time (utime + stime from /proc/<pid>/stat, read before and after) \
             during the sweep level of {} divided by the callbacks it accepted in that level.",
            figures.peak.id,
            label = figures.label
        ),
    );
    bench.collector.describe(
        figures.rss,
        placement,
        "VmHWM from /proc after the sweep and the half-peak run.",
    );
    Ok(())
}

/// A connection to the run's vhost that empties `callbridge.persist` between levels,
/// so every level publishes into a queue as short as 1a's.
struct Purger {
    _connection: Connection,
    channel: Channel,
}

impl Purger {
    async fn connect(env: &RunEnv) -> anyhow::Result<Purger> {
        let connection =
            callbridge_runtime::amqp::connect(&env.vhost.amqp_url(), "callbridge-bench-purge")
                .await?;
        let channel = connection
            .create_channel()
            .await
            .context("while opening the purge channel")?;
        Ok(Purger {
            _connection: connection,
            channel,
        })
    }

    async fn purge(&self) -> anyhow::Result<()> {
        self.channel
            .queue_purge(PERSIST_QUEUE.into(), QueuePurgeOptions::default())
            .await
            .with_context(|| format!("while purging {PERSIST_QUEUE}"))?;
        Ok(())
    }
}
