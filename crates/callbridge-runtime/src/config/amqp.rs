//! The broker the ingress publishes to and the persister consumes from.

use serde::Deserialize;

use super::{ConfigError, Secret, Settings, setting_name};
use crate::amqp::BrokerNodes;

pub const DEFAULT_RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `RABBITMQ_URL`.
    pub url: Secret,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: Secret::from(DEFAULT_RABBITMQ_URL),
        }
    }
}

impl Settings {
    /// `RABBITMQ_URL`: one AMQP URL, or the nodes of a cluster as several comma-separated,
    /// each checked to be an AMQP URL.
    pub fn amqp_url(&self) -> Result<Secret, ConfigError> {
        let raw = self.amqp.url.expose().trim();
        let setting = setting_name("amqp.url");
        let nodes = BrokerNodes::parse(raw);
        let is_amqp = |node: &String| matches!(url::Url::parse(node), Ok(url) if matches!(url.scheme(), "amqp" | "amqps") && url.has_host());
        if !nodes.is_empty() && nodes.urls().iter().all(is_amqp) {
            Ok(Secret::from(raw))
        } else {
            // The URL is not quoted: it may hold a password.
            Err(ConfigError::invalid(
                setting,
                "must be an amqp:// or amqps:// URL such as amqp://user:pass@host:5672/%2f, \
                 or several (the nodes of a cluster) separated by commas",
            ))
        }
    }
}
