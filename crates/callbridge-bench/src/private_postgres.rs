//! A Postgres cluster of the bench's own, for the persister's TLS rows (3e–3g): `ssl=on`
//! with a self-signed certificate made here, on a free loopback port, so the shared
//! server is never reconfigured and the rows do not depend on how it was set up.
//!
//! It runs the shared server's major version with the settings the shared server's
//! configuration file sets (autovacuum, memory, WAL…), so the only difference between
//! its plain and TLS rows is TLS. Stopped and deleted when dropped.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use sqlx::PgPool;
use tokio::process::Command;

use crate::services::free_port;

/// Settings of the shared server that name that cluster, its files or its listener,
/// which the private cluster sets for itself.
const OWN_SETTINGS: &[&str] = &[
    "cluster_name",
    "data_directory",
    "external_pid_file",
    "hba_file",
    "ident_file",
    "listen_addresses",
    "port",
    "unix_socket_directories",
];

/// The user Debian's packages run Postgres as; `initdb` refuses to run as root.
const SERVER_USER: &str = "postgres";

/// A running private cluster.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    bindir: PathBuf,
    /// `Some` when the bench runs as root and the server runs as [`SERVER_USER`].
    run_as: Option<&'static str>,
    port: u16,
}

impl PrivatePostgres {
    /// Creates and starts a cluster like the server `shared` is connected to.
    pub async fn start(shared: &PgPool) -> anyhow::Result<PrivatePostgres> {
        let version: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(shared)
            .await
            .context("while reading the shared server's version")?;
        let major = version.parse::<u32>().unwrap_or(0) / 10_000;
        let bindir = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
        if !bindir.join("initdb").is_file() {
            bail!(
                "the TLS rows need Postgres {major}'s initdb in {} (or pass --no-tls-rows)",
                bindir.display()
            );
        }
        let mirrored: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings \
             WHERE source = 'configuration file' AND name <> ALL($1) AND name NOT LIKE 'ssl%'",
        )
        .bind(OWN_SETTINGS)
        .fetch_all(shared)
        .await
        .context("while reading the shared server's settings")?;

        let dir = std::env::temp_dir().join(format!("callbridge-bench-pg-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("while removing the leftover {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        let server = PrivatePostgres {
            run_as: running_as_root().then_some(SERVER_USER),
            dir,
            bindir,
            port: free_port()?,
        };
        server.write_certificate()?;
        if let Some(user) = server.run_as {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:{user}"))
                .arg(&server.dir))
            .await?;
        }
        run(server.command("initdb").arg("-D").arg(server.data()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))
        .await?;
        server.configure(&mirrored)?;
        run(server
            .command("pg_ctl")
            .arg("-D")
            .arg(server.data())
            .arg("-l")
            .arg(server.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]))
        .await?;
        tracing::info!(port = server.port, dir = %server.dir.display(), "private Postgres with TLS started");
        Ok(server)
    }

    /// The maintenance database, over TCP, with no `sslmode` (the caller adds one).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A Postgres program, run as the server's user when the bench is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// A certificate for 127.0.0.1 signed by itself: clients here use `sslmode=require`,
    /// which encrypts without verifying, as a deployment's remote server would cost.
    fn write_certificate(&self) -> anyhow::Result<()> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .context("while making the private server's certificate")?;
        std::fs::write(self.dir.join("server.crt"), certified.cert.pem())
            .context("while writing server.crt")?;
        let key = self.dir.join("server.key");
        std::fs::write(&key, certified.signing_key.serialize_pem())
            .context("while writing server.key")?;
        // Postgres refuses a key file others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .context("while restricting server.key")?;
        Ok(())
    }

    fn configure(&self, mirrored: &[(String, String)]) -> anyhow::Result<()> {
        let dir = self.dir.display();
        let mut conf = format!(
            "\n# callbridge-bench: a private TLS server\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{dir}'\nssl = on\nssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n# as the shared server's configuration file sets\n",
            self.port
        );
        for (name, setting) in mirrored {
            conf.push_str(&format!("{name} = '{}'\n", setting.replace('\'', "''")));
        }
        let path = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path)
            .with_context(|| format!("while reading {}", path.display()))?;
        text.push_str(&conf);
        std::fs::write(&path, text).with_context(|| format!("while writing {}", path.display()))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = std::process::Command::new(match self.run_as {
            Some(_) => PathBuf::from("runuser"),
            None => self.bindir.join("pg_ctl"),
        });
        if let Some(user) = self.run_as {
            stop.args(["-u", user, "--"])
                .arg(self.bindir.join("pg_ctl"));
        }
        let stopped = stop
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !stopped.is_ok_and(|status| status.success()) {
            tracing::warn!(dir = %self.dir.display(), "could not stop the private Postgres");
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|proc| proc.uid() == 0)
}

/// Runs a setup command; its output is shown only when it fails.
async fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("while running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
