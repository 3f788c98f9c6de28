//! `callbridge migrate up|down|status`: the only way the schema changes unless a service
//! is started with `--migrate`, so a Kubernetes Job can own it (SPEC §3).

use callbridge_runtime::db::{self, DownTarget, MigrationState, MigrationSummary};
use clap::{Args, Subcommand};
use sqlx::PgPool;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Database URL (postgres://, or the guide's postgresql+asyncpg:// / postgresql+psycopg://).
    #[arg(
        long,
        env = "CLIENT_CALLING_DB_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/client_calling_db",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

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
    let url = args.database_url.as_str();
    match args.action {
        MigrateAction::Up => up(url).await,
        MigrateAction::Down(down_args) => down(url, &down_args).await,
        MigrateAction::Status => status(url).await,
    }
}

async fn up(url: &str) -> anyhow::Result<()> {
    let target = db::describe(&db::connect_options(url)?);
    if db::ensure_database_exists(url).await? {
        println!("created database {target}");
    }
    let pool = connect(url).await?;
    let applied = db::migrate_up(&pool).await?;
    for migration in &applied {
        println!("applied  {}", line(migration));
    }
    if applied.is_empty() {
        println!("{target} is up to date");
    }
    Ok(())
}

async fn down(url: &str, args: &DownArgs) -> anyhow::Result<()> {
    let target = if args.all {
        DownTarget::All
    } else {
        DownTarget::Steps(args.steps)
    };
    let pool = connect(url).await?;
    let reverted = db::migrate_down(&pool, target, args.force).await?;
    for migration in &reverted {
        println!("reverted {}", line(migration));
    }
    if reverted.is_empty() {
        println!("nothing to revert");
    }
    Ok(())
}

async fn status(url: &str) -> anyhow::Result<()> {
    let pool = connect(url).await?;
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

async fn connect(url: &str) -> anyhow::Result<PgPool> {
    // One connection is all a migration run uses.
    db::connect_pool(url, 1).await
}

fn line(migration: &MigrationSummary) -> String {
    format!("{:04} {}", migration.version, migration.description)
}
