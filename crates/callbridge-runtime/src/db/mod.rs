//! Database pool, database creation and the schema migrations (SPEC §3).
//!
//! URLs may be in any form the configuration accepts (`postgres://…`, or the guide's
//! SQLAlchemy `postgresql+asyncpg://…`); messages name the database by its
//! [`DatabaseIdentity`], never by the URL, which may hold a password.

mod batch;
mod migrate;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::{DatabaseIdentity, normalise_database_url};

pub use batch::refresh_batch;
pub use migrate::{
    DownTarget, MIGRATOR, MigrationState, MigrationStatus, MigrationSummary, migrate_down,
    migrate_up, migration_status,
};

/// How long a caller waits for a pooled connection before the query fails; long enough to
/// ride out a brief spike, short enough that an outage surfaces as an error to retry.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLSTATE `3D000`: the database named in the URL does not exist.
const INVALID_CATALOG_NAME: &str = "3D000";
/// SQLSTATE `42P04`: CREATE DATABASE lost a race with another creator.
const DUPLICATE_DATABASE: &str = "42P04";

/// Connection options for `url`, and the database's identity for messages.
fn parse_url(url: &str) -> anyhow::Result<(PgConnectOptions, DatabaseIdentity)> {
    let normalised = normalise_database_url(url, "the database URL")?;
    let options = PgConnectOptions::from_str(&normalised.url)
        .with_context(|| format!("while reading the URL of {}", normalised.identity))?;
    Ok((options, normalised.identity))
}

/// Opens a pool of at most `max_connections` after checking that the database answers.
///
/// The check is one direct connection, so a wrong password or a refused connection fails
/// at once with its real cause instead of a pool timeout; retrying is the caller's call.
#[tracing::instrument(skip_all, fields(max_connections))]
pub async fn connect_pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let (options, target) = parse_url(url)?;
    let probe = options
        .connect()
        .await
        .with_context(|| format!("while connecting to the database {target}"))?;
    probe.close().await.ok();
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// Opens a pool and applies every pending migration: for `--migrate`, and for tests, which
/// each start from an empty `callbridge_testkit::db::TestDb`.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = connect_pool(url, max_connections).await?;
    migrate_up(&pool).await?;
    Ok(pool)
}

/// Creates the database the URL names unless it exists. Returns whether it created it.
///
/// Connects to the database itself first, so a user without access to the `postgres`
/// maintenance database can still run against a database that exists. Safe to race: a
/// concurrent creator winning is not an error.
#[tracing::instrument(skip_all, fields(database))]
pub async fn ensure_database_exists(url: &str) -> anyhow::Result<bool> {
    let (options, target) = parse_url(url)?;
    let options = options.disable_statement_logging();
    let database = target.database.clone();
    tracing::Span::current().record("database", database.as_str());

    match options.connect().await {
        Ok(conn) => {
            conn.close().await.ok();
            return Ok(false);
        }
        Err(err) if has_sqlstate(&err, INVALID_CATALOG_NAME) => {}
        Err(err) => {
            return Err(err).with_context(|| format!("while connecting to the database {target}"));
        }
    }

    // Same server and credentials, maintenance database `postgres` (as `createdb` does).
    let mut admin: PgConnection = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| {
            format!("while connecting to the maintenance database postgres to create {target}")
        })?;
    let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
    let created = match sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut admin)
        .await
    {
        Ok(_) => true,
        // Lost a race with another creator: `duplicate_database`, or a unique violation on
        // pg_database when both got past the catalog check at the same time.
        Err(err)
            if has_sqlstate(&err, DUPLICATE_DATABASE)
                || database_exists(&mut admin, &database).await =>
        {
            false
        }
        Err(err) => {
            return Err(err).with_context(|| format!("while creating the database {target}"));
        }
    };
    admin.close().await.ok();
    if created {
        tracing::info!(database = %database, "created the database");
    }
    Ok(created)
}

async fn database_exists(admin: &mut PgConnection, database: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(admin)
        .await
        .unwrap_or(false)
}

fn has_sqlstate(err: &sqlx::Error, code: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(code))
}
