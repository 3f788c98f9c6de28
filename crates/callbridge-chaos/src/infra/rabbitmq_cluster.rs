//! A private RabbitMQ cluster of several nodes on one machine: each node a
//! [`PrivateRabbitMq`] with its own name, ports, data and logs, all sharing a home with
//! an Erlang cookie of their own (so nothing but the runner's tools can talk to them, and
//! they cannot join the shared broker by mistake), clustered with `join_cluster`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use super::rabbitmq::{OWNER, PrivateRabbitMq};
use crate::process::run_command;

/// The nodes of a throwaway cluster; every node is killed and deleted when dropped.
#[derive(Debug)]
pub struct PrivateRabbitCluster {
    nodes: Vec<PrivateRabbitMq>,
}

impl PrivateRabbitCluster {
    /// Creates `size` nodes under `dir` (which must not exist yet), starts them, and
    /// joins every other node to the first.
    #[tracing::instrument(skip_all, fields(dir = %dir.display(), size))]
    pub async fn start(dir: PathBuf, size: usize) -> anyhow::Result<PrivateRabbitCluster> {
        if size < 2 {
            bail!("a cluster needs at least two nodes, not {size}");
        }
        let home = dir.join("home");
        std::fs::create_dir_all(&home)
            .with_context(|| format!("while creating {}", home.display()))?;
        let cookie = home.join(".erlang.cookie");
        std::fs::write(
            &cookie,
            uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        )
        .context("while writing the cluster's Erlang cookie")?;
        // Erlang refuses a cookie file others can read.
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .context("while restricting the Erlang cookie")?;
        run_command(
            "chown of the cluster's home",
            Command::new("chown").args(["-R", OWNER, &dir.to_string_lossy()]),
        )
        .await?;
        let mut nodes = Vec::with_capacity(size);
        for index in 0..size {
            nodes.push(
                PrivateRabbitMq::create(dir.join(format!("node{index}")), home.clone()).await?,
            );
        }
        let cluster = PrivateRabbitCluster { nodes };
        // Started together: each node's boot takes seconds of a loaded machine.
        let started =
            futures::future::join_all(cluster.nodes.iter().map(|node| node.start_node())).await;
        for (node, started) in cluster.nodes.iter().zip(started) {
            started.with_context(|| format!("while starting node {}", node.node_name()))?;
        }
        let first = cluster.nodes[0].node_name().to_owned();
        for node in &cluster.nodes[1..] {
            node.rabbitmqctl(&["stop_app"]).await?;
            node.rabbitmqctl(&["join_cluster", &first]).await?;
            node.rabbitmqctl(&["start_app"]).await?;
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[PrivateRabbitMq] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Which node leads quorum queue `queue` (of the default vhost), asking the nodes in
    /// turn, skipping `except` (a node known to be down) and any that does not answer.
    pub async fn queue_leader(&self, queue: &str, except: Option<usize>) -> anyhow::Result<usize> {
        let mut failures = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if Some(index) == except {
                continue;
            }
            let listed = node
                .rabbitmqctl(&[
                    "list_queues",
                    "-p",
                    "/",
                    "name",
                    "leader",
                    "--formatter",
                    "json",
                ])
                .await;
            let leader = listed.and_then(|json| leader_in_listing(&json, queue));
            match leader {
                Ok(leader) => {
                    return self
                        .nodes
                        .iter()
                        .position(|node| node.node_name() == leader)
                        .with_context(|| {
                            format!("{queue} is led by {leader}, not a node of this cluster")
                        });
                }
                Err(error) => failures.push(format!("{}: {error:#}", node.node_name())),
            }
        }
        bail!(
            "no node named the leader of {queue}: {}",
            failures.join("; ")
        )
    }

    /// Waits (at most `timeout`) until no quorum queue would lose its majority if one
    /// more node went down: what a rolling restart waits for between nodes.
    pub async fn await_online_quorum_plus_one(
        &self,
        ask: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.nodes[ask]
            .tool(
                "rabbitmq-upgrade",
                &[
                    "await_online_quorum_plus_one",
                    "--timeout",
                    &timeout.as_secs().to_string(),
                ],
            )
            .await
            .map(drop)
    }
}

/// The leader of `queue` in the JSON `rabbitmqctl list_queues name leader --formatter
/// json` prints.
fn leader_in_listing(json: &str, queue: &str) -> anyhow::Result<String> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim())
        .with_context(|| format!("unreadable list_queues output: {json}"))?;
    rows.iter()
        .find(|row| row["name"] == queue)
        .and_then(|row| row["leader"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("{queue} is not listed with a leader: {json}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_read_from_the_listing() {
        let json = r#"[{"name":"callbridge.dead","leader":"chaos-1@localhost"},
                       {"name":"callbridge.persist","leader":"chaos-3@localhost"}]"#;
        assert_eq!(
            leader_in_listing(json, "callbridge.persist").unwrap(),
            "chaos-3@localhost"
        );
        assert!(leader_in_listing(json, "other").is_err());
        assert!(leader_in_listing("Timeout", "callbridge.persist").is_err());
    }
}
