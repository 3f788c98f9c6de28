//! `callbridge dlq list | replay | purge`: the callbacks the persister (or RabbitMQ's
//! delivery limit) moved to `callbridge.dead`, why, and putting them back. The actions are
//! `callbridge_ops::dead_letters`'s (the console calls the same); this module parses,
//! connects, asks and prints. Replay and purge are recorded in `operator_actions` with
//! `--actor` (default: the OS user).

use anyhow::{Context, bail};
use callbridge_ops::dead_letters::{self, DeadLetter, ReplaySelection};
use callbridge_runtime::config::Settings;
use callbridge_types::topology::{CALLBACKS_EXCHANGE, DEAD_QUEUE};
use clap::{Args, Subcommand};
use lapin::Connection;

use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, confirm, now};
use crate::output::render_table;

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// RabbitMQ URL, instead of RABBITMQ_URL.
    #[arg(long, global = true)]
    pub amqp_url: Option<String>,

    /// The database replay and purge are recorded in (operator_actions).
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show the dead-lettered callbacks and why each was dead-lettered.
    List(ListArgs),
    /// Publish dead-lettered callbacks to callbridge.callbacks again (original routing
    /// key and properties), then remove them from the dead queue.
    Replay(ReplayArgs),
    /// Delete every dead-lettered callback (asks first).
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Replay only the message with this message_id (repeatable); default: all.
    #[arg(long = "message-id", value_name = "ID")]
    pub message_ids: Vec<String>,
    /// Replay at most this many.
    #[arg(long)]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub actor: ActorArgs,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub actor: ActorArgs,
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let url = match args.amqp_url.clone() {
        Some(url) => url,
        None => settings.amqp_url()?.expose().to_owned(),
    };
    let connection = callbridge_runtime::amqp::connect(&url, "callbridge-cli").await?;
    let result = match args.action {
        DlqAction::List(list) => run_list(&connection, &list).await,
        DlqAction::Replay(replay) => {
            run_replay(&connection, &args.database, &settings, &replay).await
        }
        DlqAction::Purge(purge) => run_purge(&connection, &args.database, &settings, &purge).await,
    };
    connection.close(200, "bye".into()).await.ok();
    result
}

async fn run_list(connection: &Connection, args: &ListArgs) -> anyhow::Result<()> {
    let listing = dead_letters::list(connection, args.limit as usize).await?;
    let count = listing.count;
    let letters = listing.letters;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
        return Ok(());
    }
    println!(
        "{count} dead-lettered callback{} in {DEAD_QUEUE}",
        if count == 1 { "" } else { "s" }
    );
    if letters.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = letters.iter().map(row).collect();
    print!(
        "{}",
        render_table(
            &[
                "MESSAGE ID",
                "EVENT",
                "PUBLISHED",
                "REASON",
                "CALL ID",
                "NUMBER"
            ],
            &rows
        )
    );
    if (count as usize) > letters.len() {
        println!("… {} more (--limit)", count as usize - letters.len());
    }
    Ok(())
}

fn row(letter: &DeadLetter) -> Vec<String> {
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    vec![
        or_dash(&letter.message_id),
        letter.event_type.clone(),
        or_dash(&letter.published_at),
        letter.reason(),
        or_dash(&letter.call_id),
        or_dash(&letter.phone_number),
    ]
}

async fn run_replay(
    connection: &Connection,
    database: &DatabaseArgs,
    settings: &Settings,
    args: &ReplayArgs,
) -> anyhow::Result<()> {
    let actor = args.actor.actor()?;
    let pool = crate::database::connect_pool(&database.resolve(settings)?, 1).await?;
    let selection = ReplaySelection {
        message_ids: args.message_ids.clone(),
        limit: args.limit.map(|limit| limit as usize),
    };
    let replayed = dead_letters::replay(connection, &pool, now(), &actor, &selection).await?;
    let count = replayed.message_ids.len();
    println!(
        "replayed {count} dead-lettered callback{} to {CALLBACKS_EXCHANGE}",
        if count == 1 { "" } else { "s" }
    );
    if !replayed.missing.is_empty() {
        bail!(
            "{} of the given message ids are not in {DEAD_QUEUE}",
            replayed.missing.len()
        );
    }
    Ok(())
}

async fn run_purge(
    connection: &Connection,
    database: &DatabaseArgs,
    settings: &Settings,
    args: &PurgeArgs,
) -> anyhow::Result<()> {
    let actor = args.actor.actor()?;
    let pool = crate::database::connect_pool(&database.resolve(settings)?, 1).await?;
    let channel = connection
        .create_channel()
        .await
        .context("while opening a channel")?;
    let count = dead_letters::count(&channel).await?;
    channel.close(200, "bye".into()).await.ok();
    if count == 0 {
        println!("{DEAD_QUEUE} is empty: nothing to purge");
        return Ok(());
    }
    if !args.yes
        && !confirm(&format!(
            "Delete {count} dead-lettered callback{} from {DEAD_QUEUE}? They cannot be replayed afterwards.",
            if count == 1 { "" } else { "s" }
        ))?
    {
        bail!("purge cancelled; nothing was deleted");
    }
    let purged = dead_letters::purge(connection, &pool, now(), &actor)
        .await?
        .purged;
    println!(
        "purged {purged} dead-lettered callback{}",
        if purged == 1 { "" } else { "s" }
    );
    Ok(())
}
