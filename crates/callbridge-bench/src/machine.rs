//! What the figures were measured on: cores, memory, kernel and the versions of every
//! component, so a reader can compare results across machines.

use std::process::Command;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;

/// The machine and the software versions a report was made with.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// Logical CPUs this process may run on.
    pub cores: usize,
    pub cpu_model: String,
    pub memory_total_mib: u64,
    pub kernel: String,
    pub rustc: String,
    pub postgres: String,
    pub rabbitmq: String,
    pub erlang: String,
    /// `git describe` of the measured tree, `-dirty` when it had local changes.
    pub commit: String,
    /// When the report was made (RFC 3339, UTC).
    pub measured_at: String,
}

impl MachineInfo {
    /// Collects everything; a piece that cannot be read becomes `"unknown"` rather than
    /// failing the benchmark it only describes.
    pub async fn collect(pool: &PgPool, rabbitmq_overview: &serde_json::Value) -> MachineInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let postgres: Option<String> = sqlx::query_scalar("SHOW server_version")
            .fetch_one(pool)
            .await
            .ok();
        let text = |value: &serde_json::Value| value.as_str().unwrap_or("unknown").to_owned();
        MachineInfo {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            memory_total_mib: mem_total_kib(&meminfo).unwrap_or(0) / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            rustc: command_line("rustc", &["--version"]).unwrap_or_else(|_| "unknown".into()),
            postgres: postgres.unwrap_or_else(|| "unknown".into()),
            rabbitmq: text(&rabbitmq_overview["rabbitmq_version"]),
            erlang: text(&rabbitmq_overview["erlang_version"]),
            commit: command_line("git", &["describe", "--always", "--dirty"])
                .unwrap_or_else(|_| "unknown".into()),
            measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// The first line a command prints, trimmed.
fn command_line(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("while running {program}"))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// `model name` of the first CPU in `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

/// `MemTotal` in KiB from `/proc/meminfo`.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cpu_model_and_total_memory() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        let meminfo = "MemTotal:       24684544 kB\nMemFree:        15580000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(24_684_544));
        assert_eq!(mem_total_kib(""), None);
    }
}
