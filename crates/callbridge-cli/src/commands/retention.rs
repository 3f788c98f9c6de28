//! `callbridge retention run [--dry-run]`: deletes callback events, published outbox rows
//! and finished queue rows past their retention, in small transactions (see
//! `callbridge_ops::retention`), with a progress bar; `call_logs` and `call_batches` stay.

use callbridge_ops::retention::{self, RetentionPolicy, Table};
use callbridge_runtime::config::Settings;
use clap::{Args, Subcommand};

use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, now};
use crate::output::Progress;

#[derive(Debug, Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    pub command: RetentionCommand,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Delete what is past CALLBRIDGE__LIFECYCLE__EVENTS_DAYS / …__QUEUE_DAYS.
    Run {
        /// Count what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        actor: ActorArgs,
    },
}

pub async fn run(args: RetentionArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let lifecycle = settings.lifecycle()?;
    let database = args.database.resolve(&settings)?;
    let pool = crate::database::connect_pool(&database, 2).await?;
    let RetentionCommand::Run { dry_run, actor } = args.command;
    let now = now();
    let policy = RetentionPolicy {
        events_before: now - chrono::TimeDelta::from_std(lifecycle.events_retention)?,
        queue_before: now - chrono::TimeDelta::from_std(lifecycle.queue_retention)?,
        chunk_rows: lifecycle.retention_chunk_rows,
    };
    let planned = retention::preview(&pool, &policy).await?;
    let counts = if dry_run {
        planned
    } else {
        let bar = Progress::count(planned.total(), "deleting");
        let mut done = 0;
        let deleted = retention::run(&pool, now, &actor.actor()?, &policy, |_, rows| {
            done += rows;
            bar.set(done);
        })
        .await?;
        bar.finish();
        deleted
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "dry_run": dry_run,
                "events_before": policy.events_before,
                "queue_before": policy.queue_before,
                "deleted": counts,
            })
        );
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        for table in Table::ALL {
            println!("{verb} {} rows of {}", counts.get(table), table.name());
        }
        println!(
            "(events received before {}, queue rows finished before {}; call_logs and call_batches unchanged)",
            policy.events_before.to_rfc3339(),
            policy.queue_before.to_rfc3339()
        );
    }
    Ok(())
}
