//! The one table every stage adds to, printed and written to `latest.md` / `latest.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::machine::MachineInfo;
use crate::procs::CpuShare;
use crate::stats::Summary;

/// What a figure is: its row id in the table (`1a`), what was measured, and the unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FigureSpec {
    pub id: &'static str,
    pub name: &'static str,
    pub unit: Unit,
}

/// How a figure's values read and are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    PerSecond,
    Milliseconds,
    Ratio,
    Mebibytes,
    /// CPU time per item (callback, event) of one process.
    Microseconds,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::PerSecond => "/s",
            Unit::Milliseconds => "ms",
            Unit::Ratio => "×",
            Unit::Mebibytes => "MiB",
            Unit::Microseconds => "µs",
        }
    }

    /// Rates as whole numbers with thousands separators, the rest with two decimals.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::PerSecond => thousands(value.round() as i64),
            Unit::Milliseconds | Unit::Ratio | Unit::Mebibytes | Unit::Microseconds => {
                format!("{value:.2}")
            }
        }
    }
}

fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0 { format!("-{out}") } else { out }
}

/// A figure's value in each run, and each run's CPU use by process group.
#[derive(Debug, Clone)]
pub struct Samples {
    spec: FigureSpec,
    values: Vec<f64>,
    cpu: Vec<Vec<CpuShare>>,
}

impl Samples {
    pub fn new(spec: FigureSpec) -> Self {
        Samples {
            spec,
            values: Vec::new(),
            cpu: Vec::new(),
        }
    }

    pub fn push(&mut self, value: f64, cpu: &[CpuShare]) {
        self.values.push(value);
        self.cpu.push(cpu.to_vec());
    }

    /// The figure: the runs' median/min/max and each group's median CPU use. `None`
    /// when no run produced a value.
    pub fn finish(self, placement: impl Into<String>, note: impl Into<String>) -> Option<Figure> {
        let summary = Summary::of(&self.values)?;
        let mut by_group: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for run in &self.cpu {
            for share in run {
                by_group
                    .entry(share.label.clone())
                    .or_default()
                    .push(share.cores);
            }
        }
        // Keep the groups in the order the stage listed them.
        let order: Vec<String> = self
            .cpu
            .first()
            .map(|run| run.iter().map(|s| s.label.clone()).collect())
            .unwrap_or_default();
        let cpu = order
            .into_iter()
            .filter_map(|label| {
                let median = Summary::of(by_group.get(&label)?)?.median;
                Some(CpuShare {
                    label,
                    cores: median,
                })
            })
            .collect();
        Some(Figure {
            spec: self.spec,
            summary,
            target: None,
            cpu,
            placement: placement.into(),
            note: note.into(),
        })
    }
}

/// Every figure's samples over the runs, each figure's placement and note, and the
/// ingress concurrency sweep.
#[derive(Debug, Default)]
pub struct Collector {
    samples: BTreeMap<&'static str, Samples>,
    descriptions: BTreeMap<&'static str, (String, String)>,
    sweep: BTreeMap<(String, usize), SweepSamples>,
}

#[derive(Debug, Default)]
struct SweepSamples {
    accepted_per_second: Vec<f64>,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
}

impl Collector {
    /// One run's value of a figure. A NaN (nothing measured, e.g. no request accepted)
    /// is left out, with a warning.
    pub fn record(&mut self, spec: FigureSpec, value: f64, cpu: &[CpuShare]) {
        if value.is_nan() {
            tracing::warn!(figure = spec.id, "no value this run");
            return;
        }
        self.samples
            .entry(spec.id)
            .or_insert_with(|| Samples::new(spec))
            .push(value, cpu);
    }

    /// How a figure was measured and where its processes ran.
    pub fn describe(
        &mut self,
        spec: FigureSpec,
        placement: impl Into<String>,
        note: impl Into<String>,
    ) {
        self.descriptions
            .insert(spec.id, (placement.into(), note.into()));
    }

    /// One run's result at one concurrency of the sweep.
    pub fn record_sweep(
        &mut self,
        variant: &str,
        concurrency: usize,
        accepted_per_second: f64,
        p50_ms: f64,
        p99_ms: f64,
    ) {
        let entry = self
            .sweep
            .entry((variant.to_owned(), concurrency))
            .or_default();
        entry.accepted_per_second.push(accepted_per_second);
        entry
            .p50_ms
            .extend([p50_ms].into_iter().filter(|v| !v.is_nan()));
        entry
            .p99_ms
            .extend([p99_ms].into_iter().filter(|v| !v.is_nan()));
    }

    /// The figures in `order` that were measured, and the sweep.
    pub fn finish(mut self, order: &[FigureSpec]) -> (Vec<Figure>, Vec<SweepRow>) {
        let figures = order
            .iter()
            .filter_map(|spec| {
                let samples = self.samples.remove(spec.id)?;
                let (placement, note) = self.descriptions.remove(spec.id).unwrap_or_default();
                samples.finish(placement, note)
            })
            .collect();
        let sweep = self
            .sweep
            .into_iter()
            .filter_map(|((variant, concurrency), samples)| {
                Some(SweepRow {
                    variant,
                    concurrency,
                    accepted_per_second: Summary::of(&samples.accepted_per_second)?,
                    p50_ms: Summary::of(&samples.p50_ms),
                    p99_ms: Summary::of(&samples.p99_ms),
                })
            })
            .collect();
        (figures, sweep)
    }
}

/// One concurrency level of the ingress sweep, over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub variant: String,
    pub concurrency: usize,
    pub accepted_per_second: Summary,
    pub p50_ms: Option<Summary>,
    pub p99_ms: Option<Summary>,
}

/// A target the table is read against, and whether the figure met it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// E.g. `≥ 70 % of 1a`.
    pub text: String,
    /// `None` when the figure it is compared with was not measured.
    pub met: Option<bool>,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    #[serde(flatten)]
    pub spec: FigureSpec,
    #[serde(flatten)]
    pub summary: Summary,
    pub target: Option<Target>,
    /// Median CPU use of each process group over the runs, in cores.
    pub cpu: Vec<CpuShare>,
    /// Which process ran on which CPUs (pinning), e.g. `all unpinned on 0-1`.
    pub placement: String,
    /// How it was measured (sizes, batch, window), in a few words.
    pub note: String,
}

/// The whole benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: MachineInfo,
    /// Runs per figure (each figure is the median of these).
    pub runs: usize,
    pub figures: Vec<Figure>,
    /// The ingress concurrency sweep behind 2a and 2e.
    pub sweep: Vec<SweepRow>,
}

impl Report {
    pub fn figure(&self, id: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.spec.id == id)
    }

    pub fn figure_mut(&mut self, id: &str) -> Option<&mut Figure> {
        self.figures.iter_mut().find(|f| f.spec.id == id)
    }

    /// The Markdown document: machine, the table, then how each figure was measured.
    pub fn to_markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# callbridge benchmark\n");
        let _ = writeln!(
            out,
            "Measured {} on {} × {} ({} MiB RAM, Linux {}), commit `{}`.  ",
            m.measured_at, m.cores, m.cpu_model, m.memory_total_mib, m.kernel, m.commit
        );
        let _ = writeln!(
            out,
            "{}; PostgreSQL {}; RabbitMQ {} (Erlang {}). Release build.  ",
            m.rustc, m.postgres, m.rabbitmq, m.erlang
        );
        let _ = writeln!(
            out,
            "Each figure is the median of {} runs, with min and max. The load generator, broker, \
             database and services share the same {} cores: the CPU column is each process \
             group's median use in cores during the runs; `other` is everything outside the \
             benchmark (a build running alongside, say), so a row with `other` well above 0 was \
             measured on a busy machine and understates what the code can do.\n",
            self.runs, m.cores
        );
        out.push_str(&self.table());
        if !self.sweep.is_empty() {
            let _ = writeln!(
                out,
                "\n## Ingress concurrency sweep (closed loop; median of the runs, min–max)\n"
            );
            out.push_str(&self.sweep_table());
        }
        let _ = writeln!(out, "\n## How each figure was measured\n");
        for figure in &self.figures {
            let _ = writeln!(
                out,
                "- **{} {}** — {} Placement: {}.",
                figure.spec.id, figure.spec.name, figure.note, figure.placement
            );
        }
        out
    }

    /// The table alone (also what the harness prints).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| # | figure | median | min | max | unit | target | CPU (cores) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---|---|---|");
        for figure in &self.figures {
            let unit = figure.spec.unit;
            let target = match &figure.target {
                None => String::new(),
                Some(Target {
                    text,
                    met: Some(true),
                }) => format!("{text} ✅"),
                Some(Target {
                    text,
                    met: Some(false),
                }) => format!("{text} ❌"),
                Some(Target { text, met: None }) => format!("{text} (not measured)"),
            };
            let cpu = figure
                .cpu
                .iter()
                .map(|share| format!("{} {:.2}", share.label, share.cores))
                .collect::<Vec<_>>()
                .join(", ");
            let measured = figure.summary.runs.len();
            let name = if measured < self.runs {
                format!("{} ({measured} of {} runs)", figure.spec.name, self.runs)
            } else {
                figure.spec.name.to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                figure.spec.id,
                name,
                unit.format(figure.summary.median),
                unit.format(figure.summary.min),
                unit.format(figure.summary.max),
                unit.label(),
                target,
                cpu
            );
        }
        out
    }

    /// The sweep: one line per variant and concurrency.
    pub fn sweep_table(&self) -> String {
        let ms = |summary: &Option<Summary>| match summary {
            Some(s) => format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
            None => "–".to_owned(),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| variant | concurrency | accepted /s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|"
        );
        for row in &self.sweep {
            let rate = &row.accepted_per_second;
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}–{}) | {} | {} |",
                row.variant,
                row.concurrency,
                Unit::PerSecond.format(rate.median),
                Unit::PerSecond.format(rate.min),
                Unit::PerSecond.format(rate.max),
                ms(&row.p50_ms),
                ms(&row.p99_ms)
            );
        }
        out
    }

    /// Writes `latest.md` and `latest.json` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        let md = dir.join("latest.md");
        std::fs::write(&md, self.to_markdown())
            .with_context(|| format!("while writing {}", md.display()))?;
        let json = dir.join("latest.json");
        let body = serde_json::to_vec_pretty(self).context("while encoding the report")?;
        std::fs::write(&json, body).with_context(|| format!("while writing {}", json.display()))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn machine() -> MachineInfo {
        MachineInfo {
            cores: 2,
            cpu_model: "Test CPU".into(),
            memory_total_mib: 1024,
            kernel: "6.1".into(),
            rustc: "rustc 1.95.0".into(),
            postgres: "15.20".into(),
            rabbitmq: "3.10.8".into(),
            erlang: "25".into(),
            commit: "abc1234".into(),
            measured_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    const RATE: FigureSpec = FigureSpec {
        id: "1a",
        name: "raw publish-with-confirm",
        unit: Unit::PerSecond,
    };

    fn share(label: &str, cores: f64) -> CpuShare {
        CpuShare {
            label: label.into(),
            cores,
        }
    }

    #[test]
    fn a_figure_summarises_its_runs_and_each_groups_median_cpu() {
        let mut samples = Samples::new(RATE);
        samples.push(12_000.0, &[share("bench", 0.2), share("rabbitmq", 1.0)]);
        samples.push(10_000.0, &[share("bench", 0.4), share("rabbitmq", 1.4)]);
        samples.push(11_000.0, &[share("bench", 0.3), share("rabbitmq", 1.2)]);
        let figure = samples.finish("unpinned", "20,000 messages.").unwrap();
        assert_eq!(figure.summary.median, 11_000.0);
        assert_eq!(
            (figure.summary.min, figure.summary.max),
            (10_000.0, 12_000.0)
        );
        assert_eq!(
            figure.cpu,
            vec![share("bench", 0.3), share("rabbitmq", 1.2)]
        );
    }

    #[test]
    fn a_figure_without_runs_is_left_out() {
        assert!(Samples::new(RATE).finish("", "").is_none());
    }

    #[test]
    fn the_table_shows_median_min_max_target_and_cpu() {
        let mut samples = Samples::new(RATE);
        for value in [12_345.4, 9_000.0, 15_000.0] {
            samples.push(value, &[share("rabbitmq", 1.5)]);
        }
        let mut figure = samples.finish("unpinned", "").unwrap();
        figure.target = Some(Target {
            text: "≥ 10,000 /s".into(),
            met: Some(true),
        });
        let report = Report {
            machine: machine(),
            runs: 3,
            figures: vec![figure],
            sweep: Vec::new(),
        };
        let table = report.table();
        assert!(
            table.contains(
                "| 1a | raw publish-with-confirm | 12,345 | 9,000 | 15,000 | /s | ≥ 10,000 /s ✅ | rabbitmq 1.50 |"
            ),
            "{table}"
        );
        let markdown = report.to_markdown();
        assert!(markdown.contains("2 × Test CPU"));
        assert!(markdown.contains("RabbitMQ 3.10.8"));
    }

    #[test]
    fn a_figure_measured_in_fewer_runs_says_so() {
        let mut samples = Samples::new(RATE);
        samples.push(1.0, &[]);
        samples.push(2.0, &[]);
        let report = Report {
            machine: machine(),
            runs: 3,
            figures: vec![samples.finish("", "").unwrap()],
            sweep: Vec::new(),
        };
        assert!(
            report
                .table()
                .contains("| raw publish-with-confirm (2 of 3 runs) |")
        );
    }

    #[test]
    fn the_report_is_written_as_markdown_and_json() {
        let mut samples = Samples::new(RATE);
        samples.push(1.0, &[]);
        let report = Report {
            machine: machine(),
            runs: 1,
            figures: vec![samples.finish("unpinned", "").unwrap()],
            sweep: Vec::new(),
        };
        let dir = std::env::temp_dir().join(format!("cbbench-{}", std::process::id()));
        report.write(&dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("latest.json")).unwrap()).unwrap();
        assert_eq!(json["machine"]["cores"], 2);
        assert_eq!(json["figures"][0]["id"], "1a");
        assert_eq!(json["figures"][0]["median"], 1.0);
        assert_eq!(json["figures"][0]["unit"], "per_second");
        assert!(
            std::fs::read_to_string(dir.join("latest.md"))
                .unwrap()
                .contains("| 1a |")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_collector_keeps_the_table_order_and_skips_missing_values() {
        const P99: FigureSpec = FigureSpec {
            id: "2d",
            name: "p99",
            unit: Unit::Milliseconds,
        };
        let mut collector = Collector::default();
        collector.record(P99, 5.0, &[]);
        collector.record(P99, f64::NAN, &[]);
        collector.record(RATE, 10.0, &[]);
        collector.describe(RATE, "pinned", "how");
        collector.record_sweep("ingress", 4, 100.0, 1.0, 2.0);
        collector.record_sweep("ingress", 4, 300.0, 3.0, f64::NAN);
        let (figures, sweep) = collector.finish(&[RATE, P99]);
        let ids: Vec<&str> = figures.iter().map(|f| f.spec.id).collect();
        assert_eq!(ids, ["1a", "2d"]);
        assert_eq!(figures[0].placement, "pinned");
        assert_eq!(
            figures[1].summary.runs,
            vec![5.0],
            "the NaN run is left out"
        );
        assert_eq!(sweep.len(), 1);
        assert_eq!(sweep[0].accepted_per_second.median, 200.0);
        assert_eq!(sweep[0].p99_ms.as_ref().unwrap().runs, vec![2.0]);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1_000), "-1,000");
    }
}
