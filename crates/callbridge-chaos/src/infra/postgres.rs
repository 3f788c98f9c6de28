//! A private Postgres cluster on its own port, so a "Postgres restart" never touches the
//! shared server other tests use. `initdb` refuses to run as root, so every cluster
//! command runs as the `postgres` user (`runuser`), which needs the runner to be root.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::ports::free_port;
use crate::process::run_command;

/// The database the services use inside the private cluster (the seed's name).
const DATABASE: &str = "client_calling_db";
/// The operating-system user that owns the cluster.
const OWNER: &str = "postgres";

/// A throwaway Postgres cluster; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// Holds the data directory, the socket and the server log.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster under `dir` (which must not exist yet) with trust authentication
    /// on loopback, and starts it.
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub async fn start(dir: PathBuf) -> anyhow::Result<PrivatePostgres> {
        let cluster = PrivatePostgres::prepare(dir).await?;
        run_command(
            "initdb (as the postgres user; the runner must be root)",
            cluster
                .as_owner("initdb")
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(cluster.data_dir()),
        )
        .await?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// A standby of `primary` under `dir` (which must not exist yet): a base backup with
    /// the replication settings written (`pg_basebackup -R`), started, streaming.
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub async fn start_standby_of(
        primary: &PrivatePostgres,
        dir: PathBuf,
    ) -> anyhow::Result<PrivatePostgres> {
        let standby = PrivatePostgres::prepare(dir).await?;
        run_command(
            "pg_basebackup -R (as the postgres user)",
            standby
                .as_owner("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                // A fast checkpoint: the default spreads it over minutes.
                .args(["-U", "postgres", "-X", "stream", "-R", "--no-sync"])
                .args(["--checkpoint=fast", "-D"])
                .arg(standby.data_dir()),
        )
        .await?;
        standby.start_server().await?;
        Ok(standby)
    }

    /// Promotes this standby to a primary (what Patroni or CloudNativePG does when the
    /// primary is gone), waiting until it accepts writes.
    #[tracing::instrument(skip_all, fields(port = self.port))]
    pub async fn promote(&self) -> anyhow::Result<()> {
        run_command(
            "pg_ctl promote",
            self.as_owner("pg_ctl")
                .args(["promote", "-w", "-t", "120", "-D"])
                .arg(self.data_dir()),
        )
        .await
        .map(drop)
    }

    /// Makes every standby synchronous (`synchronous_standby_names = '*'`: a commit
    /// returns once a standby has flushed it) or none (asynchronous streaming), and waits
    /// until a standby streams in that mode.
    #[tracing::instrument(skip_all, fields(port = self.port, synchronous))]
    pub async fn require_standby(&self, synchronous: bool) -> anyhow::Result<()> {
        use sqlx::Connection;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut connection = sqlx::PgConnection::connect(&admin)
            .await
            .context("while connecting to the primary")?;
        let names = if synchronous { "'*'" } else { "''" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER SYSTEM SET synchronous_standby_names = {names}"
        )))
        .execute(&mut connection)
        .await
        .context("while setting synchronous_standby_names")?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut connection)
            .await
            .context("while reloading the primary's configuration")?;
        let wanted = if synchronous { "sync" } else { "async" };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let streaming: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_replication
                                 WHERE state = 'streaming' AND sync_state = $1)",
            )
            .bind(wanted)
            .fetch_one(&mut connection)
            .await
            .context("while reading pg_stat_replication")?;
            if streaming {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no standby streaming as {wanted} within 120 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// `postgres://` URL of the services' database (created by `callbridge migrate up`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Stops the server the hard way (`-m immediate`: no checkpoint, every connection
    /// cut, recovery from the WAL at the next start), as a crash or a node loss would.
    #[tracing::instrument(skip_all, fields(port = self.port))]
    pub async fn stop(&self) -> anyhow::Result<()> {
        run_command(
            "pg_ctl stop",
            self.as_owner("pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(self.data_dir()),
        )
        .await
        .map(drop)
    }

    /// Starts the server again on the same port and data.
    #[tracing::instrument(skip_all, fields(port = self.port))]
    pub async fn start_server(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        run_command(
            "pg_ctl start",
            self.as_owner("pg_ctl")
                .args(["start", "-w", "-t", "120", "-D"])
                .arg(self.data_dir())
                .args(["-l"])
                .arg(self.dir.join("server.log"))
                .args(["-o", &options]),
        )
        .await
        .map(drop)
    }

    /// A cluster's directory (created, owned by the postgres user) and port, before
    /// `initdb` or a base backup fills it.
    async fn prepare(dir: PathBuf) -> anyhow::Result<PrivatePostgres> {
        let bin = newest_server_bin()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        run_command(
            "chown of the private Postgres directory",
            Command::new("chown").args([OWNER, &dir.to_string_lossy()]),
        )
        .await?;
        Ok(PrivatePostgres {
            dir,
            bin,
            port: free_port()?,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_owner(&self, tool: &str) -> Command {
        let mut command = Command::new("runuser");
        command.args(["-u", OWNER, "--"]).arg(self.bin.join(tool));
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Drop cannot await; these are short and the run is over.
        let stopped = std::process::Command::new("runuser")
            .args(["-u", OWNER, "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data_dir())
            .output();
        if let Err(error) = stopped {
            eprintln!("could not stop the private Postgres: {error}");
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

/// `bin` of the newest Postgres installed under `/usr/lib/postgresql/<version>/` (Debian).
fn newest_server_bin() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .with_context(|| {
            format!(
                "while listing {} (is PostgreSQL installed?)",
                root.display()
            )
        })?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some((name.parse::<u32>().ok()?, name))
        })
        .max();
    let Some((_, version)) = newest else {
        bail!("no PostgreSQL server under {}", root.display());
    };
    let bin = root.join(version).join("bin");
    if !bin.join("initdb").is_file() {
        bail!("{} has no initdb", bin.display());
    }
    Ok(bin)
}
