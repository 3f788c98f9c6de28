//! A fresh, empty Postgres database per test, dropped when the test ends.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let db = callbridge_testkit::db::TestDb::new().await?;
//! let pool = sqlx::PgPool::connect(db.url()).await?;
//! # Ok(()) }
//! ```
//!
//! The database is empty: run the migrations yourself (`callbridge_runtime::db::connect_and_migrate`),
//! because the testkit must not depend on the code it tests.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};

/// Environment variable naming the admin connection used to create and drop test databases.
pub const ADMIN_URL_ENV: &str = "CALLBRIDGE_TEST_PG";
/// Used when [`ADMIN_URL_ENV`] is unset: the local Postgres with trust authentication.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Every test database name starts with this, so leftovers can be found and swept.
pub const NAME_PREFIX: &str = "cbtest_";
/// A test database older than this is a leftover of a killed test run and is swept.
const STALE_AFTER: Duration = Duration::from_secs(6 * 60 * 60);

/// A database created for one test. Dropped (with `WITH (FORCE)`, so open pools do not
/// block it) when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates `cbtest_<uuid>` on the admin server ([`ADMIN_URL_ENV`], default
    /// [`DEFAULT_ADMIN_URL`]) and first sweeps test databases left behind by killed runs.
    pub async fn new() -> anyhow::Result<Self> {
        let admin_url =
            std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        Self::on(admin_url).await
    }

    /// Creates `cbtest_<uuid>` on the server `admin_url` reaches (a server of its own,
    /// such as the bench's private TLS cluster), sweeping leftovers there first.
    pub async fn on(admin_url: String) -> anyhow::Result<Self> {
        // A v7 UUID carries its creation time, which is what lets `sweep_stale` judge age.
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::now_v7().simple());
        let mut admin = connect_admin(&admin_url).await?;
        sweep_stale(&mut admin).await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .with_context(|| format!("while creating test database {name} via {ADMIN_URL_ENV}"))?;
        admin.close().await.ok();

        let mut url = url::Url::parse(&admin_url)
            .with_context(|| format!("while parsing {ADMIN_URL_ENV} as a URL"))?;
        url.set_path(&name);
        Ok(Self {
            name,
            url: url.into(),
            admin_url,
        })
    }

    /// `postgres://…/cbtest_<uuid>`: connect here.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin connection URL this database was created through.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await, and the test's own runtime may be shutting down: drop the
        // database from a separate thread with its own small runtime, and wait for it so the
        // database is gone when the test returns.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_database(&admin_url, &name))
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("TestDb: could not drop {}: {err:#}", self.name),
            Err(_) => eprintln!("TestDb: the thread dropping {} panicked", self.name),
        }
    }
}

async fn connect_admin(admin_url: &str) -> anyhow::Result<PgConnection> {
    PgConnectOptions::from_str(admin_url)
        .with_context(|| format!("while parsing {ADMIN_URL_ENV}"))?
        // Test setup noise (CREATE/DROP DATABASE) is not worth a log line per statement.
        .disable_statement_logging()
        .connect()
        .await
        .with_context(|| format!("while connecting to the test Postgres ({ADMIN_URL_ENV})"))
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = connect_admin(admin_url).await?;
    // FORCE terminates the test's still-open pool connections instead of waiting for them.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .with_context(|| format!("while dropping test database {name}"))?;
    admin.close().await.ok();
    Ok(())
}

/// Drops test databases whose v7 UUID says they are older than [`STALE_AFTER`]: leftovers
/// of test processes that were killed before their `Drop` ran. Best effort: a failure here
/// must not fail the test that happened to trigger the sweep.
async fn sweep_stale(admin: &mut PgConnection) {
    let names: Vec<String> =
        match sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'cbtest\\_%'")
            .fetch_all(&mut *admin)
            .await
        {
            Ok(names) => names,
            Err(_) => return,
        };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    for name in names {
        let Some(created) = creation_time(&name) else {
            continue;
        };
        if now.saturating_sub(created) > STALE_AFTER {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            sqlx::raw_sql(AssertSqlSafe(drop))
                .execute(&mut *admin)
                .await
                .ok();
        }
    }
}

/// The creation time encoded in a test database's name, if it is one of ours.
fn creation_time(name: &str) -> Option<Duration> {
    let uuid = uuid::Uuid::parse_str(name.strip_prefix(NAME_PREFIX)?).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_time_is_read_back_from_a_fresh_name() {
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::now_v7().simple());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let created = creation_time(&name).unwrap();
        assert!(now.saturating_sub(created) < STALE_AFTER);
    }

    #[test]
    fn foreign_names_have_no_creation_time() {
        assert_eq!(creation_time("client_calling_db"), None);
        assert_eq!(creation_time("cbtest_not-a-uuid"), None);
    }

    #[tokio::test]
    async fn database_exists_while_held_and_is_gone_after_drop() {
        let db = TestDb::new().await.unwrap();
        let name = db.name().to_owned();
        let admin_url = db.admin_url().to_owned();
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(current, name);

        // The open connection must not keep the database alive.
        drop(db);
        let mut admin = connect_admin(&admin_url).await.unwrap();
        let still_there: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert!(!still_there, "{name} survived its TestDb");
    }
}
