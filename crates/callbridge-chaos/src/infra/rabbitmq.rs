//! A private RabbitMQ node on its own ports, so a "RabbitMQ restart" never touches the
//! shared broker other tests use. It runs as the `rabbitmq` user with that user's Erlang
//! cookie (so `rabbitmqctl` can reach it), with its own node name, data, logs, config
//! file (the system one pins the listener to 5672) and no plugins. The nodes of a
//! private cluster ([`super::rabbitmq_cluster`]) share a home of their own instead, with
//! a cookie only they know.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::ports::free_port_block;
use crate::process::run_command;

/// The operating-system user RabbitMQ runs as on Debian, and its home (the cookie).
pub(crate) const OWNER: &str = "rabbitmq";
const OWNER_HOME: &str = "/var/lib/rabbitmq";
/// The scripts the `/usr/sbin` wrappers call after switching user (Debian).
const SCRIPTS: &str = "/usr/lib/rabbitmq/bin";
/// Seconds `rabbitmqctl wait` allows a (re)starting node; a loaded 2-core machine needs
/// tens of seconds.
const START_TIMEOUT_SECS: &str = "180";

/// A throwaway RabbitMQ node; killed and deleted when dropped.
#[derive(Debug)]
pub struct PrivateRabbitMq {
    dir: PathBuf,
    node: String,
    port: u16,
    /// `HOME` of the node and of `rabbitmqctl`: where the Erlang cookie is.
    home: PathBuf,
}

impl PrivateRabbitMq {
    /// Creates the node's files under `dir` (which must not exist yet) and starts it.
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub async fn start(dir: PathBuf) -> anyhow::Result<PrivateRabbitMq> {
        let node = PrivateRabbitMq::create(dir, PathBuf::from(OWNER_HOME)).await?;
        node.start_node().await?;
        Ok(node)
    }

    /// Creates the node's files under `dir` (which must not exist yet), to run with
    /// `home` (holding the Erlang cookie), without starting it.
    pub(crate) async fn create(dir: PathBuf, home: PathBuf) -> anyhow::Result<PrivateRabbitMq> {
        if !Path::new(SCRIPTS).join("rabbitmq-server").is_file() {
            bail!("{SCRIPTS}/rabbitmq-server is missing: install rabbitmq-server (Debian)");
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        // AMQP on `port`, Erlang distribution on `port + 1`: the default distribution
        // port (AMQP + 20000) could collide with anything.
        let port = free_port_block(2)?;
        let node = format!("chaos-{port}@localhost");
        let files = [
            ("enabled_plugins", "[].\n".to_owned()),
            (
                "rabbitmq.conf",
                format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
            ),
            // Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
            (
                "rabbitmq-env.conf",
                "ERL_EPMD_ADDRESS=127.0.0.1\n".to_owned(),
            ),
        ];
        for (name, text) in files {
            std::fs::write(dir.join(name), text)
                .with_context(|| format!("while writing {name} for the private RabbitMQ"))?;
        }
        run_command(
            "chown of the private RabbitMQ directory",
            Command::new("chown").args(["-R", OWNER, &dir.to_string_lossy()]),
        )
        .await?;
        Ok(PrivateRabbitMq {
            dir,
            node,
            port,
            home,
        })
    }

    /// The Erlang node name (`chaos-<port>@localhost`).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// `amqp://` URL of the default vhost reached at `addr` (the node itself, or a proxy
    /// in front of it).
    pub fn amqp_url_via(addr: SocketAddr) -> String {
        format!("amqp://guest:guest@{addr}/%2f")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Stops the node the way an operator or a rolling upgrade does (`rabbitmqctl stop`:
    /// connections closed, queues flushed), and waits until its OS process is gone.
    #[tracing::instrument(skip_all, fields(node = %self.node))]
    pub async fn stop(&self) -> anyhow::Result<()> {
        run_command(
            "rabbitmqctl stop",
            self.ctl()
                .args(["stop"])
                .arg(self.pid_file())
                .args(["--timeout", START_TIMEOUT_SECS]),
        )
        .await
        .map(drop)
    }

    /// Starts the node (again) and waits until it accepts connections.
    #[tracing::instrument(skip_all, fields(node = %self.node))]
    pub async fn start_node(&self) -> anyhow::Result<()> {
        run_command(
            "rabbitmq-server -detached (as the rabbitmq user; the runner must be root)",
            self.as_owner("rabbitmq-server").arg("-detached"),
        )
        .await?;
        run_command(
            "rabbitmqctl wait",
            self.ctl()
                .arg("wait")
                .arg(self.pid_file())
                .args(["--timeout", START_TIMEOUT_SECS]),
        )
        .await
        .map(drop)
    }

    /// SIGKILLs the node's VM, as a crashed machine or an OOM kill would end it, and waits
    /// until the process is gone. Returns its pid; `None` when it was not running.
    #[tracing::instrument(skip_all, fields(node = %self.node))]
    pub async fn kill(&self) -> anyhow::Result<Option<u32>> {
        let Some(pid) = self.running_pid() else {
            return Ok(None);
        };
        crate::process::send_signal(pid, "KILL").await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "node {} (pid {pid}) still runs 30 s after SIGKILL",
                    self.node
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(Some(pid))
    }

    /// `rabbitmqctl` with `args`, run against this node; its standard output.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let what = format!("rabbitmqctl -n {} {}", self.node, args.join(" "));
        run_command(&what, self.ctl().args(args)).await
    }

    /// A RabbitMQ command-line tool (`rabbitmq-queues`, `rabbitmq-upgrade`, …) with
    /// `args`, run against this node; its standard output.
    pub async fn tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let what = format!("{tool} -n {} {}", self.node, args.join(" "));
        let mut command = self.as_owner(tool);
        command.args(["-n", &self.node]).args(args);
        run_command(&what, &mut command).await
    }

    /// The pid in the node's pid file, if that process is still this node's VM (a stale
    /// pid file must never get an unrelated process killed).
    fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let environment = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let ours = String::from_utf8_lossy(&environment)
            .split('\0')
            .any(|variable| variable == format!("RABBITMQ_NODENAME={}", self.node));
        ours.then_some(pid)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    fn ctl(&self) -> Command {
        let mut command = self.as_owner("rabbitmqctl");
        command.args(["-n", &self.node]);
        command
    }

    /// A RabbitMQ script run as its user with this node's environment.
    fn as_owner(&self, script: &str) -> Command {
        let dir = &self.dir;
        let mut command = Command::new("runuser");
        command
            .args(["-u", OWNER, "--", "env"])
            .arg(format!("HOME={}", self.home.display()))
            .arg("RABBITMQ_USE_LONGNAME=false")
            .arg(format!("RABBITMQ_NODENAME={}", self.node))
            .arg(format!("RABBITMQ_NODE_PORT={}", self.port))
            .arg(format!("RABBITMQ_DIST_PORT={}", self.port + 1))
            .arg(format!("RABBITMQ_PID_FILE={}", self.pid_file().display()))
            .arg(format!(
                "RABBITMQ_MNESIA_BASE={}",
                dir.join("mnesia").display()
            ))
            .arg(format!("RABBITMQ_LOG_BASE={}", dir.join("log").display()))
            .arg(format!(
                "RABBITMQ_ENABLED_PLUGINS_FILE={}",
                dir.join("enabled_plugins").display()
            ))
            .arg(format!(
                "RABBITMQ_CONFIG_FILE={}",
                dir.join("rabbitmq.conf").display()
            ))
            .arg(format!(
                "RABBITMQ_CONF_ENV_FILE={}",
                dir.join("rabbitmq-env.conf").display()
            ))
            .arg(Path::new(SCRIPTS).join(script))
            // The scripts start from the user's home, as the Debian wrappers do.
            .current_dir(&self.home);
        command
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        // The node is throwaway: SIGKILL its VM (by the pid it wrote) instead of a
        // graceful stop that would hold the runner's exit for seconds.
        if let Some(pid) = self.running_pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}
