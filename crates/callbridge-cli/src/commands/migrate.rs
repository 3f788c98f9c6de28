//! `callbridge migrate up|down|status`: the only way the schema changes unless a service
//! is started with `--migrate`, so a Kubernetes Job can own it.

use callbridge_runtime::config::{DatabaseUrl, Settings};
use callbridge_runtime::db::{self, DownTarget, MigrationState, MigrationStatus, MigrationSummary};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::PgPool;

use crate::database::DatabaseArgs;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(subcommand)]
    pub action: MigrateAction,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Create the database if missing, then apply every pending migration.
    Up,
    /// Revert the newest migration (or --steps N, or --all).
    Down(DownArgs),
    /// List every migration and whether it is applied.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print a JSON array, one object per migration (`version`, `description`, `state`:
    /// applied, pending, modified, failed or unknown, and `installed_on` when applied).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// How many of the newest applied migrations to revert.
    #[arg(long, default_value_t = 1, conflicts_with = "all")]
    pub steps: u32,
    /// Revert every applied migration.
    #[arg(long)]
    pub all: bool,
    /// Also drop tables and columns that hold rows (their data is lost).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    // --database-url alone is enough: the rest of the configuration is not loaded then.
    let database = match &args.database.database_url {
        Some(_) => args.database.resolve(&Settings::default())?,
        None => args.database.resolve(&Settings::load()?)?,
    };
    match args.action {
        MigrateAction::Up => up(&database).await,
        MigrateAction::Down(down_args) => down(&database, &down_args).await,
        MigrateAction::Status(status_args) => status(&database, &status_args).await,
    }
}

async fn up(database: &DatabaseUrl) -> anyhow::Result<()> {
    if db::ensure_database_exists(&database.url).await? {
        println!("created database {}", database.identity);
    }
    let pool = connect(database).await?;
    let applied = db::migrate_up(&pool).await?;
    for migration in &applied {
        println!("applied  {}", line(migration));
    }
    if applied.is_empty() {
        println!("{} is up to date", database.identity);
    }
    Ok(())
}

async fn down(database: &DatabaseUrl, args: &DownArgs) -> anyhow::Result<()> {
    let target = if args.all {
        DownTarget::All
    } else {
        DownTarget::Steps(args.steps)
    };
    let pool = connect(database).await?;
    let reverted = db::migrate_down(&pool, target, args.force).await?;
    for migration in &reverted {
        println!("reverted {}", line(migration));
    }
    if reverted.is_empty() {
        println!("nothing to revert");
    }
    Ok(())
}

async fn status(database: &DatabaseUrl, args: &StatusArgs) -> anyhow::Result<()> {
    let pool = connect(database).await?;
    let migrations = db::migration_status(&pool).await?;
    if args.json {
        let rows: Vec<StatusRow> = migrations.iter().map(StatusRow::from).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for migration in migrations {
        let state = match migration.state {
            MigrationState::Applied { installed_on } => format!("applied {installed_on}"),
            MigrationState::Pending => "pending".to_owned(),
            MigrationState::Modified { installed_on } => {
                format!("MODIFIED since it was applied {installed_on}: restore the file")
            }
            MigrationState::Failed => "FAILED part-way: repair by hand".to_owned(),
            MigrationState::Unknown { installed_on } => {
                format!("applied {installed_on} by a newer callbridge")
            }
        };
        println!(
            "{:04} {:<32} {state}",
            migration.version, migration.description
        );
    }
    Ok(())
}

async fn connect(database: &DatabaseUrl) -> anyhow::Result<PgPool> {
    // One connection is all a migration run uses.
    crate::database::connect_pool(database, 1).await
}

/// One migration in `migrate status --json`: the state as one word a script can match,
/// and when it was applied (absent when it is pending or failed).
#[derive(Debug, Serialize)]
struct StatusRow<'a> {
    version: i64,
    description: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    installed_on: Option<DateTime<Utc>>,
}

impl<'a> From<&'a MigrationStatus> for StatusRow<'a> {
    fn from(migration: &'a MigrationStatus) -> StatusRow<'a> {
        let (state, installed_on) = match migration.state {
            MigrationState::Applied { installed_on } => ("applied", Some(installed_on)),
            MigrationState::Pending => ("pending", None),
            MigrationState::Modified { installed_on } => ("modified", Some(installed_on)),
            MigrationState::Failed => ("failed", None),
            MigrationState::Unknown { installed_on } => ("unknown", Some(installed_on)),
        };
        StatusRow {
            version: migration.version,
            description: &migration.description,
            state,
            installed_on,
        }
    }
}

fn line(migration: &MigrationSummary) -> String {
    format!("{:04} {}", migration.version, migration.description)
}
