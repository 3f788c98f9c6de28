//! Which process ran where: CPU time each process group used during a measurement,
//! and peak resident memory, both read from `/proc`.
//!
//! The load generator, RabbitMQ, Postgres and the services share the machine's cores,
//! so a throughput figure means little without knowing who was busy. A figure records
//! each group's CPU use in cores (CPU seconds / wall seconds): a group near the core
//! count is the bottleneck. Whatever else kept the machine busy meanwhile (a build, an
//! editor) is reported as `other`, so a figure measured on a busy machine says so.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How a group's processes are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Exactly this process (all its threads).
    Pid(u32),
    /// Every process whose `comm` is this (e.g. `postgres` for all backends).
    Comm(&'static str),
    /// Children of this process that exited and were waited for (a CLI run to its end,
    /// which a per-pid reading would miss).
    WaitedChildren,
}

/// A named set of processes whose CPU time is summed.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub selector: Selector,
}

impl Group {
    pub fn new(label: impl Into<String>, selector: Selector) -> Self {
        Group {
            label: label.into(),
            selector,
        }
    }

    /// This benchmark process (the load generator / raw client).
    pub fn this_process() -> Self {
        Group::new("bench", Selector::Pid(std::process::id()))
    }

    /// The RabbitMQ node (its Erlang VM).
    pub fn rabbitmq() -> Self {
        Group::new("rabbitmq", Selector::Comm("beam.smp"))
    }

    /// The postmaster and every backend.
    pub fn postgres() -> Self {
        Group::new("postgres", Selector::Comm("postgres"))
    }

    /// The standard groups every stage reports: bench, RabbitMQ, Postgres.
    pub fn standard() -> Vec<Group> {
        vec![Group::this_process(), Group::rabbitmq(), Group::postgres()]
    }
}

/// CPU used by one group over a measurement, in cores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuShare {
    pub label: String,
    pub cores: f64,
}

/// CPU times of every group's processes at the start of a measurement.
#[derive(Debug)]
pub struct CpuMeter {
    groups: Vec<Group>,
    start: Vec<HashMap<u32, u64>>,
    machine_start: u64,
    started_at: Instant,
}

/// Label of the CPU use of every process outside the measured groups.
pub const OTHER: &str = "other";

impl CpuMeter {
    pub fn start(groups: Vec<Group>) -> CpuMeter {
        let start = groups.iter().map(|g| ticks_of(&g.selector)).collect();
        CpuMeter {
            groups,
            start,
            machine_start: machine_busy_ticks().unwrap_or(0),
            started_at: Instant::now(),
        }
    }

    /// Each group's CPU use since [`CpuMeter::start`]. A process that appeared meanwhile
    /// counts from zero; one that exited meanwhile is missed (backends of a pool that
    /// stays open for the whole measurement are not).
    ///
    /// The last share is [`OTHER`]: the machine's busy time not spent in any group.
    pub fn stop(self) -> Vec<CpuShare> {
        let wall = self.started_at.elapsed().as_secs_f64();
        let tick = clock_ticks_per_second();
        let cores = |ticks: u64| {
            if wall > 0.0 {
                ticks as f64 / tick / wall
            } else {
                0.0
            }
        };
        let machine = machine_busy_ticks()
            .unwrap_or(0)
            .saturating_sub(self.machine_start);
        let mut grouped = 0;
        let mut shares: Vec<CpuShare> = self
            .groups
            .iter()
            .zip(&self.start)
            .map(|(group, start)| {
                let used: u64 = ticks_of(&group.selector)
                    .iter()
                    .map(|(pid, now)| now.saturating_sub(*start.get(pid).unwrap_or(&0)))
                    .sum();
                grouped += used;
                CpuShare {
                    label: group.label.clone(),
                    cores: cores(used),
                }
            })
            .collect();
        shares.push(CpuShare {
            label: OTHER.to_owned(),
            cores: cores(machine.saturating_sub(grouped)),
        });
        shares
    }
}

/// Waits until the machine is nearly idle (busy below `idle_cores` over one second),
/// at most `max_wait`; returns the busy cores of the last second. Benchmarks started
/// while a build runs measure the build as much as the code.
pub async fn wait_for_quiet(idle_cores: f64, max_wait: std::time::Duration) -> f64 {
    let deadline = Instant::now() + max_wait;
    loop {
        let start = machine_busy_ticks().unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let busy = machine_busy_ticks().unwrap_or(0).saturating_sub(start) as f64
            / clock_ticks_per_second();
        if busy < idle_cores || Instant::now() >= deadline {
            return busy;
        }
    }
}

/// Busy time of all CPUs (clock ticks) from the first line of `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    busy_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// user + nice + system + irq + softirq + steal of the `cpu` line (guest time is
/// already inside user; idle and iowait are not busy).
fn busy_ticks(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// utime + stime (clock ticks) of every process the selector matches.
fn ticks_of(selector: &Selector) -> HashMap<u32, u64> {
    let pids: Vec<u32> = match selector {
        Selector::Pid(pid) => vec![*pid],
        Selector::Comm(comm) => pids_named(comm),
        Selector::WaitedChildren => {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            return children_cpu_ticks(&stat)
                .map(|ticks| HashMap::from([(0, ticks)]))
                .unwrap_or_default();
        }
    };
    pids.into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, cpu_ticks(&stat)?))
        })
        .collect()
}

/// CPU time (user + system) one process has used so far, from `/proc/<pid>/stat`;
/// `None` once it has exited. Read before and after a stage, it gives the stage's CPU
/// per item, which a busy machine distorts far less than a throughput.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Duration::from_secs_f64(
        cpu_ticks(&stat)? as f64 / clock_ticks_per_second(),
    ))
}

/// Microseconds of `cpu` per item; NaN (left out of the table) without items.
pub fn micros_per_item(cpu: Duration, items: usize) -> f64 {
    if items == 0 {
        return f64::NAN;
    }
    cpu.as_secs_f64() * 1e6 / items as f64
}

/// Every pid whose `comm` equals `comm`.
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim_end() == comm)
        })
        .collect()
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the command name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// cutime + cstime (waited-for children) from a `/proc/<pid>/stat` line.
fn children_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// `getconf CLK_TCK` (100 on every Linux this runs on; asked once anyway).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Peak resident set size (`VmHWM`) of a process in MiB, while it still runs.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The CPUs a process may run on, as `taskset` prints them (e.g. `0-1`).
pub fn affinity_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(|list| list.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_fields_after_a_command_name_with_spaces() {
        let stat = "1234 (tokio (worker) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 15 5 20 0 8 0 1000 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(children_cpu_ticks(stat), Some(20));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 700 3 2 1 40 0\ncpu0 50 2 25 4500 350 1 1 0 20 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(busy_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn cpu_per_item_is_in_microseconds_and_undefined_without_items() {
        assert_eq!(micros_per_item(Duration::from_millis(150), 3_000), 50.0);
        assert!(micros_per_item(Duration::from_secs(1), 0).is_nan());
    }

    #[test]
    fn peak_rss_is_read_from_vm_hwm() {
        let status = "Name:\tcallbridge-ingress\nVmPeak:\t  300000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(20480));
    }

    #[test]
    fn this_process_is_measured_and_its_peak_rss_read() {
        let meter = CpuMeter::start(vec![Group::this_process()]);
        // Spin for a few clock ticks so the share is positive; its size is not asserted.
        let spin_until = Instant::now() + std::time::Duration::from_millis(200);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let shares = meter.stop();
        let labels: Vec<&str> = shares.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["bench", OTHER]);
        assert!(shares[0].cores > 0.0, "the busy loop used CPU: {shares:?}");
        assert!(
            cpu_time(std::process::id()).is_some_and(|used| used > Duration::ZERO),
            "the busy loop's CPU time is read"
        );
        assert!(peak_rss_mib(std::process::id()).is_some_and(|mib| mib > 0.0));
        assert!(affinity_of(std::process::id()).is_some());
    }
}
