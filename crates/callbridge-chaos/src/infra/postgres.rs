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
        let bin = newest_server_bin()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        run_command(
            "chown of the private Postgres directory",
            Command::new("chown").args([OWNER, &dir.to_string_lossy()]),
        )
        .await?;
        let cluster = PrivatePostgres {
            dir,
            bin,
            port: free_port()?,
        };
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
