//! The run's result as a Markdown table (printed, and written to
//! `chaos/results/latest.md` by `make chaos`), and its verdict.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::faults::FaultRecord;
use crate::reconcile::Reconciliation;
use crate::scenario::Scenario;
use crate::traffic::Enqueued;

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    pub started_at: DateTime<Utc>,
    /// How the database and the broker were provided.
    pub servers: [String; 2],
    pub traffic_time: Duration,
    pub enqueued: Enqueued,
    pub faults: Vec<FaultRecord>,
    /// What was still waiting when the drain timeout passed; `None` when everything
    /// settled in time.
    pub unsettled: Option<String>,
    pub drain_time: Duration,
    pub reconciliation: Reconciliation,
    pub logs: PathBuf,
}

impl Report {
    /// Every reason the run failed; empty when it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.reconciliation.problems();
        if let Some(waiting) = &self.unsettled {
            problems.push(format!(
                "the pipeline did not settle within {} s after traffic stopped ({waiting})",
                self.scenario.drain_timeout.as_secs()
            ));
        }
        for (index, record) in self.faults.iter().enumerate() {
            if let Some(problem) = &record.problem {
                problems.push(format!("fault {} ({}): {problem}", index + 1, record.fault));
            }
        }
        problems
    }

    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }

    /// The report as Markdown: a summary, the reconciliation table, the faults table.
    pub fn to_markdown(&self) -> String {
        let r = &self.reconciliation;
        let s = &self.scenario;
        let mut out = String::new();
        let problems = self.problems();
        let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "# callbridge chaos run ({}): {verdict}\n", s.name);
        let _ = writeln!(
            out,
            "- started {} UTC; traffic for {} s, then {} s to drain",
            self.started_at.format("%Y-%m-%d %H:%M:%S"),
            self.traffic_time.as_secs(),
            self.drain_time.as_secs()
        );
        let _ = writeln!(
            out,
            "- traffic: {} numbers every {} ms ({:.1}/s) via `callbridge enqueue`; simulator seed {}, \
             time scale {}, {} % duplicate and {} % reordered callbacks",
            s.traffic.numbers_per_batch,
            s.traffic.every.as_millis(),
            s.traffic.numbers_per_second(),
            s.behaviour.seed,
            s.behaviour.time_scale,
            (s.behaviour.duplicate_rate * 100.0).round(),
            (s.behaviour.reorder_rate * 100.0).round(),
        );
        let _ = writeln!(out, "- Postgres: {}", self.servers[0]);
        let _ = writeln!(out, "- RabbitMQ: {}", self.servers[1]);
        let _ = writeln!(
            out,
            "- faults: {} injected, outage {} s each, {} s apart\n",
            self.faults.len(),
            s.timing.outage.as_secs(),
            s.gap.as_secs()
        );

        let _ = writeln!(out, "| figure | value | must be |");
        let _ = writeln!(out, "|---|---:|---:|");
        let rows: [(&str, u64, Option<u64>); 20] = [
            ("numbers enqueued", r.numbers_enqueued, None),
            (
                "numbers accepted by the centralized system",
                r.numbers_accepted,
                None,
            ),
            ("numbers accepted twice", r.numbers_accepted_twice, Some(0)),
            (
                "numbers not submitted exactly once",
                r.numbers_not_submitted,
                Some(0),
            ),
            ("calls placed", r.calls, None),
            ("calls with reordered callbacks", r.calls_reordered, None),
            (
                "callbacks acknowledged (2xx)",
                r.callbacks_acknowledged,
                None,
            ),
            ("duplicate callbacks sent", r.duplicates_sent, None),
            ("callbacks stored (call_events)", r.callbacks_stored, None),
            ("callbacks lost", r.callbacks_lost, Some(0)),
            ("callbacks stored twice", r.events_stored_twice, Some(0)),
            (
                "callbacks the sender gave up on",
                r.callbacks_given_up,
                Some(0),
            ),
            ("call_logs mismatches", r.call_log_mismatches, Some(0)),
            ("batches", r.batches, None),
            (
                "counter mismatches (call_batches)",
                r.counter_mismatches,
                Some(0),
            ),
            ("messages dead-lettered", r.dead_lettered, Some(0)),
            (
                "messages left in callbridge.persist",
                r.persist_backlog,
                Some(0),
            ),
            ("outcomes not published", r.unpublished_outcomes, Some(0)),
            (
                "enqueue attempts retried (database down)",
                self.enqueued.failed_attempts,
                None,
            ),
            ("faults injected", self.faults.len() as u64, None),
        ];
        for (figure, value, must) in rows {
            let must = must.map(|m| m.to_string()).unwrap_or_default();
            let _ = writeln!(out, "| {figure} | {value} | {must} |");
        }

        let _ = writeln!(
            out,
            "\n| # | at (s) | fault | outage (s) | recovered after (s) | note |"
        );
        let _ = writeln!(out, "|---:|---:|---|---:|---:|---|");
        for (index, record) in self.faults.iter().enumerate() {
            let recovered = match record.recovered_after {
                Some(after) => format!("{:.1}", after.as_secs_f64()),
                None => "—".to_owned(),
            };
            let note = match &record.problem {
                Some(problem) => format!("**{problem}**; {}", record.note),
                None => record.note.clone(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {recovered} | {note} |",
                index + 1,
                record.at.as_secs(),
                record.fault,
                record.outage.as_secs_f64(),
            );
        }
        let _ = writeln!(out, "\n{}", recovery_summary(&self.faults));

        if !problems.is_empty() {
            let _ = writeln!(out, "\n## Problems\n");
            for problem in &problems {
                let _ = writeln!(out, "- {problem}");
            }
            for example in &r.examples {
                let _ = writeln!(out, "  - {example}");
            }
            let _ = writeln!(out, "\nService logs: `{}`", self.logs.display());
            // The logs may not outlive the run (a CI clone is deleted): the last warnings
            // and errors of each service travel with the report.
            out.push_str(&warnings_in_logs(&self.logs, LOG_LINES_ON_FAILURE));
        }
        out
    }
}

/// Warning and error lines quoted per service log when a run fails.
const LOG_LINES_ON_FAILURE: usize = 12;

/// The last `per_log` WARN/ERROR lines of each log in `dir`, as Markdown code blocks.
fn warnings_in_logs(dir: &Path, per_log: usize) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| Some(entry.ok()?.path()))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let warnings: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#)
            })
            .collect();
        if warnings.is_empty() {
            continue;
        }
        let name = log.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            out,
            "\n`{name}`: last of {} warnings and errors\n```",
            warnings.len()
        );
        for line in &warnings[warnings.len().saturating_sub(per_log)..] {
            let _ = writeln!(out, "{}", line.chars().take(400).collect::<String>());
        }
        out.push_str("```\n");
    }
    out
}

/// One line per kind of fault: how often, and the median and worst recovery.
fn recovery_summary(records: &[FaultRecord]) -> String {
    let mut kinds = Vec::new();
    for record in records {
        if !kinds.contains(&record.fault) {
            kinds.push(record.fault);
        }
    }
    let mut lines = vec![
        "| fault | times | recovery median (s) | recovery max (s) |".to_owned(),
        "|---|---:|---:|---:|".to_owned(),
    ];
    for fault in kinds {
        let of_kind: Vec<&FaultRecord> = records.iter().filter(|r| r.fault == fault).collect();
        let mut times: Vec<f64> = of_kind
            .iter()
            .filter_map(|record| record.recovered_after.map(|d| d.as_secs_f64()))
            .collect();
        times.sort_by(f64::total_cmp);
        let (median, max) = match times.as_slice() {
            [] => ("—".to_owned(), "—".to_owned()),
            all => {
                let middle = all.len() / 2;
                let median = match all.len() % 2 {
                    0 => (all[middle - 1] + all[middle]) / 2.0,
                    _ => all[middle],
                };
                (format!("{median:.1}"), format!("{:.1}", all[all.len() - 1]))
            }
        };
        lines.push(format!(
            "| {fault} | {} | {median} | {max} |",
            of_kind.len()
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    fn record(fault: Fault, recovered_secs: Option<f64>) -> FaultRecord {
        FaultRecord {
            fault,
            at: Duration::from_secs(10),
            outage: Duration::ZERO,
            recovered_after: recovered_secs.map(Duration::from_secs_f64),
            accepting_after: None,
            note: "done".into(),
            problem: recovered_secs
                .is_none()
                .then(|| "not recovered within 60 s".to_owned()),
        }
    }

    fn report(faults: Vec<FaultRecord>) -> Report {
        Report {
            scenario: Scenario::short(1),
            started_at: Utc::now(),
            servers: ["pg".into(), "mq".into()],
            traffic_time: Duration::from_secs(40),
            enqueued: Enqueued::default(),
            faults,
            unsettled: None,
            drain_time: Duration::from_secs(5),
            reconciliation: Reconciliation {
                callbacks_acknowledged: 10,
                callbacks_stored: 10,
                ..Reconciliation::default()
            },
            logs: PathBuf::from("/tmp/logs"),
        }
    }

    #[test]
    fn recovery_summary_gives_median_and_worst_per_kind_of_fault() {
        let summary = recovery_summary(&[
            record(Fault::KillPersister, Some(1.0)),
            record(Fault::CutIngressBroker, Some(2.0)),
            record(Fault::KillPersister, Some(3.0)),
        ]);
        assert!(
            summary.contains("| SIGKILL persister | 2 | 2.0 | 3.0 |"),
            "{summary}"
        );
        assert!(summary.contains("| network cut ingress ↔ RabbitMQ | 1 | 2.0 | 2.0 |"));
    }

    #[test]
    fn a_fault_that_did_not_recover_fails_the_run() {
        let clean = report(vec![record(Fault::KillPersister, Some(0.5))]);
        assert!(clean.is_clean(), "{:?}", clean.problems());
        assert!(clean.to_markdown().contains("): PASS"));

        let failed = report(vec![record(Fault::RestartBroker, None)]);
        assert_eq!(
            failed.problems(),
            ["fault 1 (RabbitMQ restart): not recovered within 60 s"]
        );
        let markdown = failed.to_markdown();
        assert!(
            markdown.contains("): FAIL") && markdown.contains("/tmp/logs"),
            "{markdown}"
        );
    }

    #[test]
    fn an_undrained_pipeline_fails_the_run() {
        let mut undrained = report(Vec::new());
        undrained.unsettled = Some("3 pending".to_owned());
        assert!(!undrained.is_clean());
        assert!(
            undrained.to_markdown().contains("(3 pending)"),
            "the report says what was still waiting"
        );
    }

    #[test]
    fn a_failed_report_quotes_the_last_warnings_of_each_log() {
        let dir =
            std::env::temp_dir().join(format!("chaos-logs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut lines = vec![r#"{"level":"INFO","message":"started"}"#.to_owned()];
        lines.extend((0..20).map(|n| format!(r#"{{"level":"WARN","message":"retry {n}"}}"#)));
        lines.push(r#"{"level":"ERROR","message":"gave up"}"#.to_owned());
        std::fs::write(dir.join("callbridge-persister-1.log"), lines.join("\n")).unwrap();
        std::fs::write(dir.join("sim.log"), r#"{"level":"INFO","message":"quiet"}"#).unwrap();

        let quoted = warnings_in_logs(&dir, 3);
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(
            quoted.contains("`callbridge-persister-1.log`: last of 21 warnings and errors"),
            "{quoted}"
        );
        assert!(
            quoted.contains("retry 18")
                && quoted.contains("retry 19")
                && quoted.contains("gave up"),
            "{quoted}"
        );
        assert!(
            !quoted.contains("retry 17") && !quoted.contains("started"),
            "{quoted}"
        );
        assert!(
            !quoted.contains("sim.log"),
            "a log without warnings is not quoted: {quoted}"
        );
    }
}
