//! `callbridge migrate up|down|status`: the only way the schema changes unless a service
//! is started with `--migrate`, so a Kubernetes Job can own it (SPEC §3).

use callbridge_runtime::config::{DatabaseUrl, Settings, normalise_database_url};
use callbridge_runtime::db::{self, DownTarget, MigrationState, MigrationSummary};
use clap::{Args, Subcommand};
use sqlx::PgPool;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Database URL, instead of CLIENT_CALLING_DB_URL / CLIENT_CALLING_ASYNC_DB_URL
    /// (postgres://, or the guide's postgresql+asyncpg:// and postgresql+psycopg:// forms).
    #[arg(long, global = true)]
    pub database_url: Option<String>,

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
    let database = database(args.database_url.as_deref())?;
    match args.action {
        MigrateAction::Up => up(&database).await,
        MigrateAction::Down(down_args) => down(&database, &down_args).await,
        MigrateAction::Status => status(&database).await,
    }
}

/// The database to migrate: `--database-url`, else what the configuration names (either
/// of the guide's two variables, a config file, or the local default).
fn database(flag: Option<&str>) -> anyhow::Result<DatabaseUrl> {
    Ok(match flag {
        Some(raw) => normalise_database_url(raw, "--database-url")?,
        None => {
            let config = Settings::load()?.database()?;
            DatabaseUrl {
                url: config.url.expose().to_owned(),
                identity: config.identity,
            }
        }
    })
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
    db::connect_pool(&database.url, 1).await
}

fn line(migration: &MigrationSummary) -> String {
    format!("{:04} {}", migration.version, migration.description)
}
