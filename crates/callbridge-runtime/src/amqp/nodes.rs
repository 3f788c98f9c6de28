//! A broker given as the nodes of a cluster: `RABBITMQ_URL` may list several AMQP URLs,
//! comma-separated, and a service connects to the first of them that answers. A
//! reconnect starts with the node after the one whose connection was lost, so a node
//! that still accepts connections but cannot serve (stopping, cut off from the rest of
//! the cluster) is not tried first again and again.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, anyhow};
use lapin::{Connection, ConnectionProperties};

/// How long one node may take to accept a connection and finish the AMQP handshake
/// before the next node is tried. A node that drops packets instead of refusing them
/// would otherwise hold the connect forever; generous, because a loaded node (or a
/// loaded machine running three) can take seconds to answer.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The AMQP URLs of a broker's nodes, in the order they are tried. `Debug` and
/// `Display` show them with their passwords redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerNodes {
    urls: Vec<String>,
}

impl BrokerNodes {
    /// Splits a comma-separated list of AMQP URLs (blanks around the commas ignored).
    /// A comma separates two nodes only where the text after it starts a URL (a scheme
    /// and `://`): a password may hold a literal comma, which then stays part of its URL.
    pub fn parse(list: &str) -> BrokerNodes {
        let mut urls: Vec<String> = Vec::new();
        for piece in list.split(',') {
            let trimmed = piece.trim();
            let starts_url = trimmed.split_once("://").is_some_and(|(scheme, _)| {
                scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            });
            match urls.last_mut() {
                Some(previous) if !starts_url => {
                    previous.push(',');
                    previous.push_str(piece);
                }
                _ => urls.push(trimmed.to_owned()),
            }
        }
        for url in &mut urls {
            // A trailing comma (or blanks) ended up on the last URL.
            *url = url.trim_end_matches([',', ' ', '\t']).trim().to_owned();
        }
        urls.retain(|url| !url.is_empty());
        BrokerNodes { urls }
    }

    /// The nodes' URLs, in order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The node after `index`, wrapping around: where a reconnect starts after the
    /// connection to node `index` was lost.
    pub fn after(&self, index: usize) -> usize {
        if self.urls.is_empty() {
            0
        } else {
            (index + 1) % self.urls.len()
        }
    }

    /// Connects to the first node that answers, trying them in order starting at
    /// `start` (wrapping around), each for at most [`NODE_CONNECT_TIMEOUT`]. Returns the
    /// connection and which node it is to; the error names every node tried and why it
    /// failed.
    pub async fn connect_from(
        &self,
        start: usize,
        connection_name: &str,
    ) -> anyhow::Result<(Connection, usize)> {
        if self.urls.is_empty() {
            return Err(anyhow!("no RabbitMQ URL given"));
        }
        let mut failures = Vec::with_capacity(self.urls.len());
        for offset in 0..self.urls.len() {
            let index = (start + offset) % self.urls.len();
            let url = &self.urls[index];
            match connect_node(url, connection_name).await {
                Ok(connection) => {
                    if !failures.is_empty() {
                        tracing::warn!(
                            node = %super::redact_one_url(url),
                            failed = failures.len(),
                            "connected to RabbitMQ after other nodes failed"
                        );
                    }
                    return Ok((connection, index));
                }
                Err(error) => failures.push(error),
            }
        }
        if failures.len() == 1 {
            return Err(failures.remove(0));
        }
        let reasons: Vec<String> = failures.iter().map(|error| format!("{error:#}")).collect();
        Err(anyhow!(
            "none of the {} RabbitMQ nodes answered: {}",
            self.urls.len(),
            reasons.join("; ")
        ))
    }
}

/// One attempt at one node.
async fn connect_node(url: &str, connection_name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let context = || {
        format!(
            "while connecting to RabbitMQ at {}",
            super::redact_one_url(url)
        )
    };
    match tokio::time::timeout(NODE_CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connected) => connected.with_context(context),
        Err(_) => Err(anyhow!("no answer within {NODE_CONNECT_TIMEOUT:?}")).with_context(context),
    }
}

impl fmt::Display for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted: Vec<String> = self
            .urls
            .iter()
            .map(|url| super::redact_one_url(url))
            .collect();
        f.write_str(&redacted.join(","))
    }
}

impl fmt::Debug for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerNodes({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_splits_at_commas_that_start_a_url() {
        let nodes = BrokerNodes::parse(
            " amqp://u:p@mq-0:5672/%2f , AMQPS://u:p@mq-1:5671/%2f,amqp://u:p@mq-2/%2f,",
        );
        assert_eq!(
            nodes.urls(),
            [
                "amqp://u:p@mq-0:5672/%2f",
                "AMQPS://u:p@mq-1:5671/%2f",
                "amqp://u:p@mq-2/%2f"
            ]
        );
        assert_eq!(
            BrokerNodes::parse("amqp://u:p@mq:5672/%2f").urls(),
            ["amqp://u:p@mq:5672/%2f"]
        );
    }

    #[test]
    fn a_comma_inside_a_password_stays_in_its_url() {
        let nodes = BrokerNodes::parse("amqp://u:a,b@mq-0/%2f,amqp://u:c,d@mq-1/%2f");
        assert_eq!(
            nodes.urls(),
            ["amqp://u:a,b@mq-0/%2f", "amqp://u:c,d@mq-1/%2f"]
        );
    }

    #[test]
    fn after_wraps_around() {
        let nodes = BrokerNodes::parse("amqp://a/%2f,amqp://b/%2f,amqp://c/%2f");
        assert_eq!(
            [0, 1, 2].map(|index| nodes.after(index)),
            [1, 2, 0],
            "the node after the last is the first"
        );
        assert_eq!(BrokerNodes::parse("amqp://a/%2f").after(0), 0);
    }

    #[test]
    fn shown_without_passwords() {
        let nodes = BrokerNodes::parse("amqp://u:s3cret@mq-0/%2f,amqp://u:s3cret@mq-1/%2f");
        let shown = format!("{nodes} {nodes:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("mq-0") && shown.contains("mq-1"), "{shown}");
    }
}
