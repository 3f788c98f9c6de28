//! The persister: its batches and their transactions.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{
    ConfigError, DatabaseConfig, Secret, Settings, at_least, bind_address, de, setting_name,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersisterSettings {
    pub bind: String,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger_ms: u64,
    #[serde(deserialize_with = "de::strict_bool")]
    pub migrate_on_start: bool,
    /// Batch transactions in flight at once: while one waits for Postgres, the next is
    /// already on its way. Each holds a pooled connection.
    pub concurrency: usize,
}

impl Default for PersisterSettings {
    fn default() -> Self {
        PersisterSettings {
            bind: "0.0.0.0:9101".to_owned(),
            // Room for every batch in flight and the next one gathering.
            prefetch: 1_000,
            batch_size: 200,
            // Short: under load batches fill while every slot is busy, so the linger only
            // matters when traffic is light, where it is added to every event's latency.
            batch_linger_ms: 5,
            migrate_on_start: false,
            concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PersisterConfig {
    pub bind: SocketAddr,
    pub database: DatabaseConfig,
    pub amqp_url: Secret,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub migrate_on_start: bool,
    pub concurrency: usize,
}

impl Settings {
    /// The persister: database, broker and batching.
    pub fn persister(&self) -> Result<PersisterConfig, ConfigError> {
        let persister = &self.persister;
        at_least(persister.prefetch.into(), 1, "persister.prefetch")?;
        at_least(persister.batch_size as u64, 1, "persister.batch_size")?;
        at_least(persister.concurrency as u64, 1, "persister.concurrency")?;
        let database = self.database()?;
        // The outbox relay and the active-batches gauge share the pool with the batches.
        if persister.concurrency as u64 >= u64::from(database.max_connections) {
            return Err(ConfigError::invalid(
                setting_name("persister.concurrency"),
                format!(
                    "must be below {} ({}), got {}: each batch in flight holds a database \
                     connection, and the outbox relay needs one more",
                    setting_name("database.max_connections"),
                    database.max_connections,
                    persister.concurrency
                ),
            ));
        }
        Ok(PersisterConfig {
            bind: bind_address(&persister.bind, "persister.bind")?,
            database,
            amqp_url: self.amqp_url()?,
            prefetch: persister.prefetch,
            batch_size: persister.batch_size,
            batch_linger: Duration::from_millis(persister.batch_linger_ms),
            migrate_on_start: persister.migrate_on_start,
            concurrency: persister.concurrency,
        })
    }
}
