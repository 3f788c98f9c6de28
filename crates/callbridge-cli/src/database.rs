//! Which database a command works on, and connecting to it.

use callbridge_runtime::config::{DatabaseUrl, Settings, normalise_database_url};
use callbridge_runtime::db;
use clap::Args;
use sqlx::{ConnectOptions, PgConnection, PgPool};

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database URL, instead of CLIENT_CALLING_DB_URL / CLIENT_CALLING_ASYNC_DB_URL
    /// (postgres://, or the guide's postgresql+asyncpg:// and postgresql+psycopg:// forms).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// `--database-url`, else what the configuration names (either of the guide's two
    /// variables, a config file, or the local default).
    pub fn resolve(&self, settings: &Settings) -> anyhow::Result<DatabaseUrl> {
        Ok(match self.database_url.as_deref() {
            Some(raw) => normalise_database_url(raw, "--database-url")?,
            None => {
                let config = settings.database()?;
                DatabaseUrl {
                    url: config.url.expose().to_owned(),
                    identity: config.identity,
                }
            }
        })
    }
}

/// A small pool (after a first connection proves the database answers, with its real
/// error otherwise).
pub async fn connect_pool(database: &DatabaseUrl, max_connections: u32) -> anyhow::Result<PgPool> {
    db::connect_pool(&database.url, max_connections).await
}

/// One connection, for a command that runs one transaction.
pub async fn connect_one(database: &DatabaseUrl) -> anyhow::Result<PgConnection> {
    use anyhow::Context;
    let options: sqlx::postgres::PgConnectOptions = database
        .url
        .parse()
        .with_context(|| format!("while reading the URL of {}", database.identity))?;
    options
        // An operator's command is not worth a log line per statement.
        .disable_statement_logging()
        .connect()
        .await
        .with_context(|| format!("while connecting to the database {}", database.identity))
}
