//! The schema migrations in `migrations/` (embedded at build time), applied and reverted
//! with sqlx's migrator, and their status.

use std::collections::BTreeMap;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};

/// Every migration in the repository's top-level `migrations/` directory.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// sqlx's bookkeeping table (its default name).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The session setting the down migrations check before destroying rows (see
/// `callbridge_refuse_destructive_down` in the first migration).
const ALLOW_DESTRUCTIVE_DOWN: &str = "callbridge.allow_destructive_down";

/// One migration, as reported after applying or reverting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSummary {
    pub version: i64,
    pub description: String,
}

/// How far `migrate down` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownTarget {
    /// Revert the most recently applied `n` migrations.
    Steps(u32),
    /// Revert every applied migration.
    All,
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    Applied {
        installed_on: DateTime<Utc>,
    },
    /// Not applied yet.
    Pending,
    /// Applied, but the file changed since: `migrate` refuses to run until it is restored.
    Modified {
        installed_on: DateTime<Utc>,
    },
    /// A previous run failed half-way (only possible for a migration without a transaction).
    Failed,
    /// Applied by a newer callbridge that knows a migration this binary does not.
    Unknown {
        installed_on: DateTime<Utc>,
    },
}

/// A row of `callbridge migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub state: MigrationState,
}

#[derive(sqlx::FromRow)]
struct AppliedRow {
    version: i64,
    description: String,
    installed_on: DateTime<Utc>,
    success: bool,
    checksum: Vec<u8>,
}

/// Applies every pending migration, in order, each in its own transaction. Returns the
/// ones this call applied (none when the schema is current). Safe to run from several
/// processes at once: sqlx serialises them with an advisory lock.
#[tracing::instrument(skip_all)]
pub async fn migrate_up(pool: &PgPool) -> anyhow::Result<Vec<MigrationSummary>> {
    let mut conn = dedicated_connection(pool).await?;
    let before = applied_versions(&mut conn).await?;
    let outcome = MIGRATOR.run(&mut conn).await;
    let applied = changed_since(&mut conn, &before).await;
    conn.close().await.ok();
    match outcome {
        Ok(()) => {
            let applied = applied?;
            for migration in &applied {
                tracing::info!(version = migration.version, description = %migration.description, "applied migration");
            }
            Ok(applied)
        }
        Err(err) => Err(err).context(format!(
            "while applying migrations{}",
            done_before_failure("applied", applied.ok())
        )),
    }
}

/// Reverts applied migrations, newest first, each in its own transaction. A down step
/// that would destroy rows refuses unless `force` is set. Returns the ones reverted.
#[tracing::instrument(skip_all, fields(?target, force))]
pub async fn migrate_down(
    pool: &PgPool,
    target: DownTarget,
    force: bool,
) -> anyhow::Result<Vec<MigrationSummary>> {
    let mut conn = dedicated_connection(pool).await?;
    if force {
        // Session-level, on a connection that never returns to the pool.
        sqlx::query("SELECT set_config($1, 'on', false)")
            .bind(ALLOW_DESTRUCTIVE_DOWN)
            .execute(&mut conn)
            .await
            .context("while allowing destructive down migrations (--force)")?;
    }
    let before = applied_versions(&mut conn).await?;
    let newest_first: Vec<i64> = before.keys().rev().copied().collect();
    let keep_up_to = match target {
        DownTarget::All => 0,
        DownTarget::Steps(steps) => usize::try_from(steps)
            .ok()
            .and_then(|steps| newest_first.get(steps))
            .copied()
            .unwrap_or(0),
    };
    let outcome = MIGRATOR.undo(&mut conn, keep_up_to).await;
    let reverted = changed_since(&mut conn, &before).await;
    conn.close().await.ok();
    match outcome {
        Ok(()) => {
            let reverted = reverted?;
            for migration in &reverted {
                tracing::info!(version = migration.version, description = %migration.description, "reverted migration");
            }
            Ok(reverted)
        }
        Err(err) => Err(err).context(format!(
            "while reverting migrations{}",
            done_before_failure("reverted", reverted.ok())
        )),
    }
}

/// Every migration this binary knows, plus any the database has that it does not, with
/// their state, in version order.
#[tracing::instrument(skip_all)]
pub async fn migration_status(pool: &PgPool) -> anyhow::Result<Vec<MigrationStatus>> {
    let mut conn = pool
        .acquire()
        .await
        .context("while connecting to read the migration status")?;
    let mut applied: BTreeMap<i64, AppliedRow> = applied_rows(&mut conn)
        .await?
        .into_iter()
        .map(|row| (row.version, row))
        .collect();

    let mut statuses: Vec<MigrationStatus> = MIGRATOR
        .iter()
        .filter(|migration| migration.migration_type.is_up_migration())
        .map(|migration| {
            let state = match applied.remove(&migration.version) {
                None => MigrationState::Pending,
                Some(row) if !row.success => MigrationState::Failed,
                Some(row) if row.checksum != *migration.checksum => MigrationState::Modified {
                    installed_on: row.installed_on,
                },
                Some(row) => MigrationState::Applied {
                    installed_on: row.installed_on,
                },
            };
            MigrationStatus {
                version: migration.version,
                description: migration.description.to_string(),
                state,
            }
        })
        .collect();
    statuses.extend(applied.into_values().map(|row| MigrationStatus {
        version: row.version,
        description: row.description,
        state: if row.success {
            MigrationState::Unknown {
                installed_on: row.installed_on,
            }
        } else {
            MigrationState::Failed
        },
    }));
    statuses.sort_by_key(|status| status.version);
    Ok(statuses)
}

/// A connection taken out of the pool for good. When a step fails, sqlx's migrator leaves
/// its session advisory lock held (and `--force` leaves its session setting on); closing
/// this connection afterwards releases both instead of handing them to the next user.
async fn dedicated_connection(pool: &PgPool) -> anyhow::Result<PgConnection> {
    let conn = pool
        .acquire()
        .await
        .context("while connecting to run migrations")?;
    Ok(conn.detach())
}

async fn applied_rows(conn: &mut PgConnection) -> anyhow::Result<Vec<AppliedRow>> {
    let table_exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *conn)
        .await
        .context("while looking for the migrations table")?;
    if !table_exists {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT version, description, installed_on, success, checksum \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .context("while reading the applied migrations")
}

/// Version → description of every successfully applied migration.
async fn applied_versions(conn: &mut PgConnection) -> anyhow::Result<BTreeMap<i64, String>> {
    Ok(applied_rows(conn)
        .await?
        .into_iter()
        .filter(|row| row.success)
        .map(|row| (row.version, row.description))
        .collect())
}

/// The migrations applied or reverted since `before` was read: ascending when applied,
/// newest first when reverted (the order in which they ran).
async fn changed_since(
    conn: &mut PgConnection,
    before: &BTreeMap<i64, String>,
) -> anyhow::Result<Vec<MigrationSummary>> {
    let after = applied_versions(conn).await?;
    let applied = after
        .iter()
        .filter(|(version, _)| !before.contains_key(version));
    let reverted = before
        .iter()
        .rev()
        .filter(|(version, _)| !after.contains_key(version));
    Ok(applied
        .chain(reverted)
        .map(|(version, description)| MigrationSummary {
            version: *version,
            description: description.clone(),
        })
        .collect())
}

/// ` (applied before the failure: 1, 2)`, or nothing when there is nothing to say.
fn done_before_failure(verb: &str, done: Option<Vec<MigrationSummary>>) -> String {
    match done {
        Some(done) if !done.is_empty() => {
            let versions: Vec<String> = done.iter().map(|m| m.version.to_string()).collect();
            format!(" ({verb} before the failure: {})", versions.join(", "))
        }
        _ => String::new(),
    }
}
