//! Database pool, database creation and the schema migrations (`migrations/`, each
//! reversible; the services apply them only when told to).
//!
//! URLs may be in any form the configuration accepts (`postgres://…`, or the guide's
//! SQLAlchemy `postgresql+asyncpg://…`); messages name the database by its
//! [`DatabaseIdentity`], never by the URL, which may hold a password.
//!
//! The `sslmode` is the URL's (or `PGSSLMODE`'s); without one, libpq's `prefer`: TLS
//! whenever the server offers it, on this host too. (sqlx 0.9.0 left `TCP_NODELAY` off,
//! so a TLS statement larger than one 16 KiB record stalled ~40 ms and a server on this
//! host was reached without TLS to avoid it; 0.9.1 sets it again, and the bench's 3e–3g
//! show TLS costing the persister less than 10 %.)

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
    Ok((options.options([NO_JIT]), normalised.identity))
}

/// Every callbridge statement is short OLTP work over indexes, yet a plan over a large
/// or freshly changed table can be costed above `jit_above_cost`; Postgres then spends
/// 40 ms compiling it before running it in under one (measured on the submitter's claim
/// right after a 60,000-row campaign was submitted). Every connection turns JIT off.
const NO_JIT: (&str, &str) = ("jit", "off");

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

#[cfg(test)]
mod tests {
    use super::*;

    use sqlx::postgres::PgSslMode;

    fn sslmode(url: &str) -> PgSslMode {
        parse_url(url).expect("a valid URL").0.get_ssl_mode()
    }

    #[test]
    fn without_a_chosen_sslmode_tls_is_preferred_on_this_host_too() {
        // Who runs the tests with `PGSSLMODE` set has chosen a mode for every URL.
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        for url in [
            "postgres://postgres@127.0.0.1:5432/client_calling_db",
            "postgresql+asyncpg://user:pass@localhost/calls",
            "postgres://user@[::1]:5432/calls",
            "postgres://user@db.example/calls",
            "postgres://user@10.0.0.5/calls",
        ] {
            assert!(matches!(sslmode(url), PgSslMode::Prefer), "{url}");
        }
    }

    #[test]
    fn a_chosen_sslmode_is_honoured() {
        assert!(matches!(
            sslmode("postgres://user@127.0.0.1/calls?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            sslmode("postgres://user@localhost/calls?sslmode=disable"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            sslmode("postgresql+psycopg://user@[::1]/calls?ssl-mode=verify-full"),
            PgSslMode::VerifyFull
        ));
    }

    /// Whether the current connection to the server uses TLS, as the server sees it.
    async fn uses_tls(url: &str) -> bool {
        let (options, _) = parse_url(url).unwrap();
        let mut conn = options.connect().await.expect("the test server answers");
        let tls: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.ok();
        tls
    }

    #[tokio::test]
    async fn the_local_test_server_is_reached_over_tls_when_it_offers_it() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        let admin_url = std::env::var(callbridge_testkit::db::ADMIN_URL_ENV)
            .unwrap_or_else(|_| callbridge_testkit::db::DEFAULT_ADMIN_URL.to_owned());
        if admin_url.contains("sslmode") {
            return;
        }
        let (options, _) = parse_url(&admin_url).unwrap();
        let mut conn = options.connect().await.unwrap();
        let server_tls: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        // Debian's Postgres has TLS on: a loopback URL without sslmode then uses it.
        assert_eq!(uses_tls(&admin_url).await, server_tls == "on");
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        assert!(!uses_tls(&format!("{admin_url}{separator}sslmode=disable")).await);
    }
}
