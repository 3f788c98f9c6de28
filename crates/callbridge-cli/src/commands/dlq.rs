//! `callbridge dlq list | replay | purge`: the callbacks the persister (or RabbitMQ's
//! delivery limit) moved to `callbridge.dead`, why, and putting them back.
//!
//! Messages are read with `basic.get` and manual acknowledgement: `list` returns every
//! message it looked at to the queue; `replay` acknowledges one only after its copy is
//! confirmed on `callbridge.callbacks`, so a crash mid-replay loses nothing (at worst a
//! message is replayed twice, which the persister absorbs by event id).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use callbridge_runtime::amqp::{Outgoing, PublishError, publish_confirmed};
use callbridge_runtime::config::Settings;
use callbridge_types::topology::{CALLBACKS_EXCHANGE, DEAD_QUEUE, ERROR_HEADER};
use clap::{Args, Subcommand};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;

use crate::output::render_table;

/// How long publishing a replayed message and its confirm may take.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers RabbitMQ or the persister added when dead-lettering; a replayed message
/// starts clean (its `x-death` history would otherwise count toward nothing useful and
/// confuse the next diagnosis).
const DEAD_LETTER_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
    ERROR_HEADER,
];

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// RabbitMQ URL, instead of RABBITMQ_URL.
    #[arg(long, global = true)]
    pub amqp_url: Option<String>,

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
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// One dead letter, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub routing_key: String,
    pub event_type: String,
    /// The persister's `x-callbridge-error` header.
    pub error: Option<String>,
    /// RabbitMQ's `x-first-death-reason` (`delivery_limit`, `rejected`, …) when the
    /// broker dead-lettered it.
    pub first_death_reason: Option<String>,
    /// When it was first published (the ingress's timestamp property).
    pub published_at: Option<String>,
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let url = match args.amqp_url.clone() {
        Some(url) => url,
        None => Settings::load()?.amqp_url()?.expose().to_owned(),
    };
    let connection = callbridge_runtime::amqp::connect(&url, "callbridge-cli").await?;
    let result = match args.action {
        DlqAction::List(list) => run_list(&connection, &list).await,
        DlqAction::Replay(replay) => run_replay(&connection, &replay).await,
        DlqAction::Purge(purge) => run_purge(&connection, &purge).await,
    };
    connection.close(200, "bye".into()).await.ok();
    result
}

/// The dead queue's ready messages; an error that says what to do when it is missing.
async fn dead_letter_count(channel: &Channel) -> anyhow::Result<u32> {
    let queue = channel
        .queue_declare(
            DEAD_QUEUE.into(),
            // Passive: only look. Declaring it here with other arguments than the
            // services use would fail, and creating it is the services' job.
            QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!("queue {DEAD_QUEUE} does not exist on this broker/vhost: start callbridge-persister once (it declares the topology), or check RABBITMQ_URL")
        })?;
    Ok(queue.message_count())
}

async fn get_one(channel: &Channel) -> anyhow::Result<Option<BasicGetMessage>> {
    channel
        // Manual ack (no_ack false): nothing leaves the dead queue unless we ack it.
        .basic_get(DEAD_QUEUE.into(), BasicGetOptions { no_ack: false })
        .await
        .with_context(|| format!("while reading from {DEAD_QUEUE}"))
}

#[tracing::instrument(skip_all)]
async fn run_list(connection: &Connection, args: &ListArgs) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("while opening a channel")?;
    let count = dead_letter_count(&channel).await?;
    let mut letters = Vec::new();
    let mut last_tag = None;
    while letters.len() < args.limit as usize && letters.len() < count as usize {
        let Some(message) = get_one(&channel).await? else {
            break;
        };
        last_tag = Some(message.delivery.delivery_tag);
        letters.push(describe(&message));
    }
    if let Some(tag) = last_tag {
        // Every message looked at goes back, unchanged (the dead queue's delivery limit is
        // set high enough that looking never drops one).
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .context("while returning the messages to the dead queue")?;
    }
    channel.close(200, "bye".into()).await.ok();

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
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|letter| {
            vec![
                letter.message_id.clone().unwrap_or_else(|| "-".into()),
                letter.event_type.clone(),
                letter.published_at.clone().unwrap_or_else(|| "-".into()),
                reason(letter),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["MESSAGE ID", "EVENT", "PUBLISHED", "REASON"], &rows)
    );
    if (count as usize) > letters.len() {
        println!("… {} more (--limit)", count as usize - letters.len());
    }
    Ok(())
}

fn reason(letter: &DeadLetter) -> String {
    match (&letter.error, &letter.first_death_reason) {
        (Some(error), _) => error.clone(),
        (None, Some(reason)) => format!("broker: {reason} (redelivered too often)"),
        (None, None) => "-".into(),
    }
}

fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

fn describe(message: &BasicGetMessage) -> DeadLetter {
    let delivery = &message.delivery;
    let properties = &delivery.properties;
    let routing_key = delivery.routing_key.as_str().to_owned();
    DeadLetter {
        message_id: properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        event_type: routing_key
            .strip_prefix("callback.")
            .unwrap_or(&routing_key)
            .to_owned(),
        routing_key,
        error: header_text(properties, ERROR_HEADER),
        first_death_reason: header_text(properties, "x-first-death-reason"),
        published_at: properties.timestamp().and_then(|seconds| {
            chrono::DateTime::from_timestamp(seconds as i64, 0).map(|at| at.to_rfc3339())
        }),
    }
}

/// The message's properties without the dead-lettering headers.
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let kept: FieldTable = headers
        .inner()
        .iter()
        .filter(|(name, _)| !DEAD_LETTER_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    headers = kept;
    properties.clone().with_headers(headers)
}

#[tracing::instrument(skip_all)]
async fn run_replay(connection: &Connection, args: &ReplayArgs) -> anyhow::Result<()> {
    let channel = callbridge_runtime::amqp::open_confirmed_channel(connection).await?;
    // Only what is there now: a replayed message that fails again comes back to the
    // dead queue, and must not be picked up again by this same run.
    let count = dead_letter_count(&channel).await?;
    let limit = args.limit.map_or(usize::MAX, |limit| limit as usize);
    let mut replayed = 0usize;
    let mut skipped_tags = Vec::new();
    for _ in 0..count {
        if replayed >= limit {
            break;
        }
        let Some(message) = get_one(&channel).await? else {
            break;
        };
        let delivery = &message.delivery;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        let wanted = args.message_ids.is_empty()
            || message_id
                .as_ref()
                .is_some_and(|id| args.message_ids.contains(id));
        if !wanted {
            skipped_tags.push(delivery.delivery_tag);
            continue;
        }
        if let Err(error) = republish(&channel, &message).await {
            delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
                .ok();
            return Err(error.context(format!(
                "replayed {replayed} before failing on message {}",
                message_id.as_deref().unwrap_or("-")
            )));
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .context("while removing a replayed message from the dead queue")?;
        replayed += 1;
    }
    for tag in skipped_tags {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await
            .context("while returning a skipped message to the dead queue")?;
    }
    channel.close(200, "bye".into()).await.ok();
    println!(
        "replayed {replayed} dead-lettered callback{} to {CALLBACKS_EXCHANGE}",
        if replayed == 1 { "" } else { "s" }
    );
    let missing = args.message_ids.len().saturating_sub(replayed);
    if !args.message_ids.is_empty() && missing > 0 {
        bail!("{missing} of the given message ids are not in {DEAD_QUEUE}");
    }
    Ok(())
}

async fn republish(channel: &Channel, message: &BasicGetMessage) -> anyhow::Result<()> {
    let delivery = &message.delivery;
    let copy = Outgoing {
        exchange: CALLBACKS_EXCHANGE,
        routing_key: delivery.routing_key.as_str(),
        body: &delivery.data,
        properties: replay_properties(&delivery.properties),
        // Mandatory: with no queue bound the copy comes back, and the dead letter stays,
        // instead of both being gone.
        mandatory: true,
    };
    match publish_confirmed(channel, copy, CONFIRM_TIMEOUT).await {
        Ok(()) => Ok(()),
        Err(PublishError::Unroutable) => bail!(
            "{CALLBACKS_EXCHANGE} routed the replayed callback nowhere: is the persist queue bound? (start callbridge-persister once)"
        ),
        Err(error) => Err(error).context("while publishing a replayed callback"),
    }
}

#[tracing::instrument(skip_all)]
async fn run_purge(connection: &Connection, args: &PurgeArgs) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("while opening a channel")?;
    let count = dead_letter_count(&channel).await?;
    if count == 0 {
        println!("{DEAD_QUEUE} is empty: nothing to purge");
        return Ok(());
    }
    if !args.yes {
        eprint!(
            "Delete {count} dead-lettered callback{} from {DEAD_QUEUE}? They cannot be replayed afterwards. [y/N] ",
            if count == 1 { "" } else { "s" }
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("while reading the answer")?;
        if !std::io::stdin().is_terminal() {
            // A piped answer is not echoed: end the prompt's line ourselves.
            eprintln!();
        }
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("purge cancelled; nothing was deleted");
        }
    }
    let purged = channel
        .queue_purge(DEAD_QUEUE.into(), QueuePurgeOptions::default())
        .await
        .with_context(|| format!("while purging {DEAD_QUEUE}"))?;
    channel.close(200, "bye".into()).await.ok();
    println!(
        "purged {purged} dead-lettered callback{}",
        if purged == 1 { "" } else { "s" }
    );
    Ok(())
}
