//! A private Postgres primary with a streaming standby, as a replicated production
//! database runs (Patroni, CloudNativePG), and the failover such an operator performs:
//! the primary dies, the standby is promoted, the service address moves to it, and a new
//! standby is built from the new primary.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;

use super::postgres::PrivatePostgres;

/// How the standby replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Replication {
    /// `synchronous_standby_names = '*'`: a commit returns once the standby has it.
    Sync,
    /// Streaming without waiting: a commit may be lost with the primary.
    Async,
}

/// A primary and its standby; both stopped and deleted when dropped.
#[derive(Debug)]
pub struct ReplicatedPostgres {
    primary: PrivatePostgres,
    /// `None` between a failover and the new standby.
    standby: Option<PrivatePostgres>,
    replication: Replication,
    dir: PathBuf,
    /// Clusters created so far: names the next one's directory.
    created: u32,
}

impl ReplicatedPostgres {
    /// A primary under `dir` (which must not exist yet) and a standby of it.
    pub async fn start(dir: PathBuf, replication: Replication) -> anyhow::Result<Self> {
        let primary = PrivatePostgres::start(dir.join("pg1"))
            .await
            .context("while starting the primary")?;
        let mut pair = ReplicatedPostgres {
            primary,
            standby: None,
            replication,
            dir,
            created: 1,
        };
        pair.add_standby().await?;
        Ok(pair)
    }

    pub fn primary(&self) -> &PrivatePostgres {
        &self.primary
    }

    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// Kills the primary (`pg_ctl stop -m immediate`: no shutdown checkpoint, as a lost
    /// machine) and promotes the standby in its place. The old primary's files are
    /// deleted; [`ReplicatedPostgres::add_standby`] builds a new standby.
    pub async fn fail_over(&mut self) -> anyhow::Result<()> {
        let standby = self.standby.take().context("no standby to fail over to")?;
        self.primary
            .stop()
            .await
            .context("while killing the primary")?;
        standby
            .promote()
            .await
            .context("while promoting the standby")?;
        // Dropping the old primary deletes its files.
        drop(std::mem::replace(&mut self.primary, standby));
        Ok(())
    }

    /// Builds a standby of the current primary (a base backup), starts it, and makes it
    /// synchronous or not as the pair was asked to be.
    pub async fn add_standby(&mut self) -> anyhow::Result<()> {
        self.created += 1;
        let dir = self.dir.join(format!("pg{}", self.created));
        let standby = PrivatePostgres::start_standby_of(&self.primary, dir)
            .await
            .context("while building the standby")?;
        // Only once the standby streams: a primary told to wait for a standby that is
        // not there yet would hold every commit.
        self.standby = Some(standby);
        self.primary
            .require_standby(self.replication == Replication::Sync)
            .await
    }
}
