//! The real binaries as child processes: started with exactly the environment the runner
//! gives them, output in a log file each, killed with SIGKILL or stopped with SIGTERM
//! the way an orchestrator would, and killed when the runner ends (also on panic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Where the callbridge binaries are: the directory of a `cargo build` profile.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

/// Every binary a chaos run starts.
pub const REQUIRED_BINARIES: [&str; 5] = [
    "callbridge",
    "callbridge-ingress",
    "callbridge-persister",
    "callbridge-submitter",
    "callbridge-sim",
];

impl Binaries {
    /// The binaries in `dir`; fails naming the first one missing and how to build it.
    pub fn in_dir(dir: impl Into<PathBuf>) -> anyhow::Result<Binaries> {
        let binaries = Binaries { dir: dir.into() };
        for name in REQUIRED_BINARIES {
            let path = binaries.path(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: build the binaries first (cargo build --bins)",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// The binaries built beside the running executable: `target/<profile>/` for the
    /// `callbridge-chaos` binary and for a test (which runs from `target/<profile>/deps/`).
    pub fn beside_current_exe() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("while locating the running executable")?;
        let mut dir = exe
            .parent()
            .context("the running executable has no directory")?
            .to_path_buf();
        if dir.file_name().is_some_and(|name| name == "deps") {
            dir.pop();
        }
        Binaries::in_dir(dir)
    }

    /// The binaries older than a source file they were built from, according to the
    /// dep-info file cargo writes beside each (`<binary>.d`, the files rustc read): a run
    /// with them would test old code. Each entry names the binary and the newer file.
    pub fn stale(&self) -> Vec<String> {
        let mut stale = Vec::new();
        for binary in REQUIRED_BINARIES {
            let path = self.path(binary);
            let (Some(built), Ok(dep_info)) = (
                modified(&path),
                std::fs::read_to_string(path.with_extension("d")),
            ) else {
                continue;
            };
            if let Some(newer) = sources_in_dep_info(&dep_info)
                .into_iter()
                .find(|source| modified(Path::new(source)).is_some_and(|at| at > built))
            {
                stale.push(format!("{binary} is older than {newer}"));
            }
        }
        stale
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// The source paths of a make-style dep-info file (`target: source source …`); a
/// space inside a path is escaped as `\ `.
fn sources_in_dep_info(dep_info: &str) -> Vec<String> {
    let first_rule = dep_info.lines().next().unwrap_or_default();
    let sources = first_rule
        .split_once(": ")
        .map_or("", |(_, sources)| sources);
    sources
        .replace("\\ ", "\u{0}")
        .split_whitespace()
        .map(|source| source.replace('\u{0}', " "))
        .collect()
}

/// A running child process with its log file. Dropping it kills the process.
#[derive(Debug)]
pub struct ServiceProcess {
    label: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary` with `args` and exactly `env` (nothing inherited, so a developer's
    /// own `CLIENT_CALLING_DB_URL` cannot leak in); stdout and stderr go to `log`.
    pub fn spawn(
        label: impl Into<String>,
        binary: &Path,
        args: &[&str],
        env: &BTreeMap<String, String>,
        log: PathBuf,
    ) -> anyhow::Result<ServiceProcess> {
        let label = label.into();
        let file = std::fs::File::create(&log)
            .with_context(|| format!("while creating the log file {}", log.display()))?;
        let stderr = file
            .try_clone()
            .with_context(|| format!("while opening {} twice", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            // A runner that panics or is interrupted must not leave services behind.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("while starting {} ({label})", binary.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("{label} exited before its pid was read"))?;
        tracing::info!(%label, pid, "started");
        Ok(ServiceProcess {
            label,
            child,
            pid,
            log,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGKILL, then reaps it: no chance to finish anything, as when a node dies.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child
            .start_kill()
            .with_context(|| format!("while sending SIGKILL to {}", self.label))?;
        self.child
            .wait()
            .await
            .with_context(|| format!("while reaping {}", self.label))
    }

    /// Sends SIGTERM (what Kubernetes sends before removing a pod); the process is
    /// expected to finish its in-flight work and exit by itself.
    pub async fn terminate(&self) -> anyhow::Result<()> {
        send_signal(self.pid, "TERM").await
    }

    /// Waits up to `timeout` for the process to exit; `None` when it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status
                .map(Some)
                .with_context(|| format!("while waiting for {} to exit", self.label)),
            Err(_) => Ok(None),
        }
    }

    /// The exit status if the process has already exited (it should not have).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its log, for an error message.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

/// The last `lines` lines of a log file (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `kill -<signal> <pid>`: the standard tool, since sending signals directly would need
/// `unsafe` (forbidden in this workspace).
pub async fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .await
        .with_context(|| format!("while running kill -{signal} {pid}"))?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

/// Runs a short command to completion; fails with its output when it does not succeed.
pub async fn run_command(what: &str, command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("while running {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_sources_are_the_first_rules_prerequisites() {
        let dep_info =
            "/t/debug/callbridge: /w/src/main.rs /w/my\\ dir/lib.rs\n\n/w/src/main.rs:\n";
        assert_eq!(
            sources_in_dep_info(dep_info),
            ["/w/src/main.rs", "/w/my dir/lib.rs"]
        );
    }
}
