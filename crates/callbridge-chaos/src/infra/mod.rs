//! The Postgres and RabbitMQ a run uses: private instances the runner may restart, or the
//! shared ones with a fresh database and vhost (as every test gets), where a "restart"
//! can only be simulated by cutting every connection to them.
//!
//! The shared servers are never stopped: other tests run against them meanwhile.

pub mod postgres;
pub mod postgres_standby;
pub mod rabbitmq;
pub mod rabbitmq_cluster;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use clap::ValueEnum;

pub use postgres::PrivatePostgres;
pub use postgres_standby::{ReplicatedPostgres, Replication};
pub use rabbitmq::PrivateRabbitMq;
pub use rabbitmq_cluster::PrivateRabbitCluster;

/// Which kind of server a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerChoice {
    /// A private instance on its own port, really restarted (needs root).
    Private,
    /// The shared server with a database/vhost of its own; restarts become connection cuts.
    Shared,
}

/// The run's database server.
#[derive(Debug)]
pub enum Database {
    Private(PrivatePostgres),
    Shared(TestDb),
    /// A private primary with a standby, failed over by the runner.
    Replicated(ReplicatedPostgres),
}

impl Database {
    /// The database URL, connecting directly (the runner's own connections).
    pub fn url(&self) -> String {
        match self {
            Database::Private(cluster) => cluster.url(),
            Database::Shared(db) => db.url().to_owned(),
            Database::Replicated(pair) => pair.primary().url(),
        }
    }

    /// The same database reached at `addr` (a proxy in front of the server).
    pub fn url_via(&self, addr: SocketAddr) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&self.url()).context("while parsing the database URL")?;
        url.set_ip_host(addr.ip())
            .map_err(|()| anyhow::anyhow!("the database URL cannot take a host"))?;
        url.set_port(Some(addr.port()))
            .map_err(|()| anyhow::anyhow!("the database URL cannot take a port"))?;
        Ok(url.into())
    }

    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        match self {
            Database::Private(cluster) => Ok(cluster.addr()),
            Database::Replicated(pair) => Ok(pair.primary().addr()),
            Database::Shared(db) => {
                let url = url::Url::parse(db.url()).context("while parsing the test DB URL")?;
                let host = url.host_str().unwrap_or("127.0.0.1");
                let port = url.port().unwrap_or(5432);
                std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                    .context("while resolving the test database's host")?
                    .next()
                    .context("the test database's host resolves to nothing")
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Database::Private(_) => "private Postgres (restarted with pg_ctl -m immediate)".into(),
            Database::Shared(_) => {
                "shared Postgres, own database (restart simulated by cutting connections)".into()
            }
            Database::Replicated(pair) => format!(
                "private Postgres primary with a {} standby (failed over: primary killed \
                 with pg_ctl -m immediate, standby promoted, proxies moved, new standby \
                 built); synchronous_commit at its default (on)",
                match pair.replication() {
                    Replication::Sync => "synchronous",
                    Replication::Async => "asynchronous",
                }
            ),
        }
    }
}

/// The run's message broker.
#[derive(Debug)]
pub enum Broker {
    Private(PrivateRabbitMq),
    Shared(TestVhost),
    /// Private nodes clustered together.
    Cluster(PrivateRabbitCluster),
}

impl Broker {
    /// The AMQP URL (every node's, comma-separated, for a cluster), connecting directly
    /// (the runner's own connections).
    pub fn amqp_url(&self) -> String {
        self.amqp_url_via(&self.addrs())
    }

    /// The same broker (and vhost) reached at `addrs` (proxies in front of its nodes, in
    /// the nodes' order): the services' `RABBITMQ_URL`.
    pub fn amqp_url_via(&self, addrs: &[SocketAddr]) -> String {
        let urls: Vec<String> = addrs
            .iter()
            .map(|addr| match self {
                Broker::Private(_) | Broker::Cluster(_) => PrivateRabbitMq::amqp_url_via(*addr),
                Broker::Shared(vhost) => vhost.amqp_url_via(*addr),
            })
            .collect();
        urls.join(",")
    }

    /// The AMQP address of each node.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Broker::Private(node) => vec![node.addr()],
            Broker::Shared(vhost) => vec![vhost.amqp_socket_addr()],
            Broker::Cluster(cluster) => cluster.nodes().iter().map(PrivateRabbitMq::addr).collect(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Broker::Private(_) => {
                "private RabbitMQ node (restarted with rabbitmqctl stop/start)".into()
            }
            Broker::Shared(_) => {
                "shared RabbitMQ, own vhost (restart simulated by cutting connections)".into()
            }
            Broker::Cluster(cluster) => format!(
                "private RabbitMQ cluster of {} nodes (quorum queues with 3 members; \
                 every service given every node)",
                cluster.len()
            ),
        }
    }
}

/// Both servers and the scratch directory of the private ones. Fields drop in order:
/// the servers stop before their directory goes.
#[derive(Debug)]
pub struct Infra {
    pub database: Database,
    pub broker: Broker,
    _scratch: Option<ScratchDir>,
}

impl Infra {
    /// Provisions the servers a run asked for: a private broker of `rabbitmq_nodes`
    /// clustered nodes when that is more than one. Private instances live under a fresh
    /// directory in the system temp dir (their users must be able to reach it).
    pub async fn provision(
        database: ServerChoice,
        broker: ServerChoice,
        rabbitmq_nodes: usize,
        standby: Option<Replication>,
    ) -> anyhow::Result<Infra> {
        let private_broker = broker == ServerChoice::Private || rabbitmq_nodes > 1;
        let scratch = (database == ServerChoice::Private || standby.is_some() || private_broker)
            .then(ScratchDir::create)
            .transpose()?;
        let scratch_path = |name: &str| -> PathBuf {
            scratch
                .as_ref()
                .map(|dir| dir.path().join(name))
                .unwrap_or_default()
        };
        let database = match database {
            _ if standby.is_some() => Database::Replicated(
                ReplicatedPostgres::start(
                    scratch_path("postgres"),
                    standby.unwrap_or(Replication::Sync),
                )
                .await
                .context("while starting the private Postgres primary and standby")?,
            ),
            ServerChoice::Private => Database::Private(
                PrivatePostgres::start(scratch_path("postgres"))
                    .await
                    .context("while starting the private Postgres")?,
            ),
            ServerChoice::Shared => Database::Shared(
                TestDb::new()
                    .await
                    .context("while creating a database on the shared Postgres")?,
            ),
        };
        let broker = match broker {
            _ if rabbitmq_nodes > 1 => Broker::Cluster(
                PrivateRabbitCluster::start(scratch_path("rabbitmq"), rabbitmq_nodes)
                    .await
                    .context("while starting the private RabbitMQ cluster")?,
            ),
            ServerChoice::Private => Broker::Private(
                PrivateRabbitMq::start(scratch_path("rabbitmq"))
                    .await
                    .context("while starting the private RabbitMQ node")?,
            ),
            ServerChoice::Shared => Broker::Shared(
                TestVhost::try_new()
                    .await
                    .context("while creating a vhost on the shared RabbitMQ")?,
            ),
        };
        Ok(Infra {
            database,
            broker,
            _scratch: scratch,
        })
    }
}

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!(
            "callbridge-chaos-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("while creating {}", path.display()))?;
        // The postgres and rabbitmq users must be able to reach their subdirectories.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("while opening {} to other users", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
