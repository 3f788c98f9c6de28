//! The database every binary but the ingress connects to.

use serde::Deserialize;

use super::{ConfigError, DatabaseIdentity, Secret, Settings, at_least, normalise_database_url};

/// The database the seed's guide creates, on the local default server.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/client_calling_db";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `CLIENT_CALLING_DB_URL`.
    pub url: Option<Secret>,
    /// `CLIENT_CALLING_ASYNC_DB_URL`.
    pub async_url: Option<Secret>,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            async_url: None,
            max_connections: 10,
        }
    }
}

/// The database a binary connects to.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// A `postgres://` URL (may hold a password).
    pub url: Secret,
    /// `user@host:port/database`, for messages.
    pub identity: DatabaseIdentity,
    pub max_connections: u32,
}

impl Settings {
    /// The database URL: `CLIENT_CALLING_DB_URL` or `CLIENT_CALLING_ASYNC_DB_URL` (either
    /// is enough; both must then name the same database), else the local default.
    pub fn database(&self) -> Result<DatabaseConfig, ConfigError> {
        let sync = self
            .database
            .url
            .as_ref()
            .map(|url| normalise_database_url(url.expose(), "CLIENT_CALLING_DB_URL"))
            .transpose()?;
        let asynchronous = self
            .database
            .async_url
            .as_ref()
            .map(|url| normalise_database_url(url.expose(), "CLIENT_CALLING_ASYNC_DB_URL"))
            .transpose()?;
        let chosen = match (sync, asynchronous) {
            (Some(sync), Some(asynchronous)) if sync.identity != asynchronous.identity => {
                return Err(ConfigError::invalid(
                    "CLIENT_CALLING_DB_URL and CLIENT_CALLING_ASYNC_DB_URL",
                    format!(
                        "name different databases ({} and {}); set one, or make them agree",
                        sync.identity, asynchronous.identity
                    ),
                ));
            }
            (Some(url), _) | (None, Some(url)) => url,
            (None, None) => normalise_database_url(DEFAULT_DATABASE_URL, "CLIENT_CALLING_DB_URL")?,
        };
        at_least(
            self.database.max_connections.into(),
            1,
            "database.max_connections",
        )?;
        Ok(DatabaseConfig {
            url: Secret::from(chosen.url),
            identity: chosen.identity,
            max_connections: self.database.max_connections,
        })
    }
}
