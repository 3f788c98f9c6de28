//! The services under test as child processes: the release binaries next to this one,
//! configured through the environment as a deployment would configure them, optionally
//! pinned to CPUs with `taskset`, their peak memory read before they are stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::procs::peak_rss_mib;

/// How long a service may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the binaries are: the directory of the running benchmark binary, so `make bench`
/// measures the release builds it just made.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("while locating the benchmark binary")?;
    Ok(exe
        .parent()
        .context("the benchmark binary has no directory")?
        .to_path_buf())
}

/// A free loopback port (bound and released at once; the services take an address).
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("while finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Short name for logs and the report (`ingress`).
    pub name: String,
    pub binary: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `taskset -c` CPU list, e.g. `1`; `None` runs unpinned.
    pub cpus: Option<String>,
    /// Polled until it answers 2xx.
    pub ready_url: String,
}

/// A running service. Killed if dropped without [`Service::stop`].
#[derive(Debug)]
pub struct Service {
    pub name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Service {
    /// Starts the binary from [`bin_dir`] with its log in `log_dir`, and waits until it is ready.
    pub async fn start(spec: &ServiceSpec, log_dir: &Path) -> anyhow::Result<Service> {
        Service::spawn(spec, log_dir)?
            .wait_ready(&spec.ready_url)
            .await
    }

    /// Starts the binary without waiting (a caller that measures from the very start).
    #[tracing::instrument(skip_all, fields(service = %spec.name))]
    pub fn spawn(spec: &ServiceSpec, log_dir: &Path) -> anyhow::Result<Service> {
        let binary = bin_dir()?.join(&spec.binary);
        if !binary.exists() {
            bail!(
                "{} is missing: build the release binaries first (`make bench` does)",
                binary.display()
            );
        }
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("while creating {}", log_dir.display()))?;
        let log = log_dir.join(format!("{}.log", spec.name));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("while creating {}", log.display()))?;
        let mut command = match &spec.cpus {
            // taskset execs the binary, so the child's pid is the service's own.
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("while sharing the log file")?)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("while starting {}", binary.display()))?;
        let pid = child.id().context("the service exited at once")?;
        Ok(Service {
            name: spec.name.clone(),
            child,
            pid,
            log,
        })
    }

    /// Polls `url` until it answers 2xx; fails with the log's tail if the service exits
    /// or is not ready within 30 s.
    pub async fn wait_ready(mut self, url: &str) -> anyhow::Result<Service> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("while checking the service")?
            {
                bail!(
                    "{} exited ({status}) before it was ready; its log {} ends:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            if let Ok(response) = client.get(url).send().await
                && response.status().is_success()
            {
                return Ok(self);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready at {url} within {READY_TIMEOUT:?}; its log {} ends:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Peak resident memory so far (`VmHWM`), MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        peak_rss_mib(self.pid)
    }

    /// SIGTERM (the graceful path), then a kill if it does not exit in time.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("while waiting for {} to exit", self.name))?;
            }
            Err(_) => {
                tracing::warn!(service = %self.name, "did not exit after SIGTERM; killing it");
                self.child.kill().await.ok();
            }
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Pins this process (every thread) to `cpus` (`taskset` list), or back to all CPUs
/// with `None`. Used to keep the load generator off the CPU a service is pinned to.
pub async fn pin_this_process(cpus: Option<&str>) -> anyhow::Result<()> {
    let all = online_cpus();
    let list = cpus.unwrap_or(&all);
    let status = Command::new("taskset")
        .args(["-a", "-cp", list, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .await
        .context("while running taskset")?;
    if !status.success() {
        bail!("taskset -a -cp {list} failed ({status})");
    }
    Ok(())
}

/// Every online CPU as a `taskset` list (`0-1`); unlike `available_parallelism`, not
/// narrowed by this process's own pinning.
pub fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|list| list.trim().to_owned())
        .unwrap_or_else(|_| "0".to_owned())
}
