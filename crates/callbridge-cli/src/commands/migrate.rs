//! `callbridge migrate up|down|status`: the only way the schema changes unless a service
//! is started with `--migrate`, so a Kubernetes Job can own it.

use callbridge_runtime::config::{DatabaseUrl, Settings};
use callbridge_runtime::db::{self, DownTarget, MigrationState, MigrationSummary};
use clap::{Args, Subcommand};
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
    Status,
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
        MigrateAction::Status => status(&database).await,
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

async fn status(database: &DatabaseUrl) -> anyhow::Result<()> {
    let pool = connect(database).await?;
    for migration in db::migration_status(&pool).await? {
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

fn line(migration: &MigrationSummary) -> String {
    format!("{:04} {}", migration.version, migration.description)
}
