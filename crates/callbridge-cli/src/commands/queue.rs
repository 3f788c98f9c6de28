//! `callbridge queue retry|resolve`: the two repairs of `local_call_queue` rows, each
//! recorded in `operator_actions`. `resolve` first shows the centralized system's
//! batch-status for the rows' batches: whether the system holds a number is what decides
//! between `--as submitted` and `--as pending`.

use std::collections::BTreeMap;

use anyhow::bail;
use callbridge_ops::centralized::RemoteView;
use callbridge_ops::queue::{self, ResolveTarget, ReviewRow};
use callbridge_runtime::config::Settings;
use callbridge_types::status::QueueStatus;
use clap::{Args, Subcommand};

use crate::commands::campaign::report;
use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, now};
use crate::output::render_table;

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Send a campaign's failed numbers again, with fresh attempts.
    Retry {
        /// The campaign whose rows to retry.
        #[arg(long)]
        campaign: String,
        /// Which rows: only `failed` is accepted.
        #[arg(long, value_parser = parse_queue_status)]
        status: QueueStatus,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Settle needs_review rows, after the centralized system's batch-status for them.
    Resolve {
        /// Row ids (local_call_queue.id), separated by commas or spaces.
        #[arg(
            value_delimiter = ',',
            required_unless_present = "batch",
            conflicts_with = "batch"
        )]
        ids: Vec<i32>,
        /// Every needs_review row of this batch instead.
        #[arg(long)]
        batch: Option<i32>,
        /// `submitted`: the centralized system holds them. `pending`: it does not, send
        /// them again.
        #[arg(long = "as", value_name = "STATUS", value_parser = parse_queue_status)]
        resolution: QueueStatus,
        /// Decide without asking the centralized system (when its API is unreachable).
        #[arg(long)]
        without_centralized_view: bool,
        #[command(flatten)]
        actor: ActorArgs,
    },
}

fn parse_queue_status(raw: &str) -> Result<QueueStatus, String> {
    QueueStatus::parse(raw.trim()).map_err(|error| {
        let known: Vec<&str> = QueueStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("{error} (one of {})", known.join(", "))
    })
}

pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let database = args.database.resolve(&settings)?;
    let pool = crate::database::connect_pool(&database, 2).await?;
    match args.command {
        QueueCommand::Retry {
            campaign,
            status,
            actor,
        } => {
            let outcome = queue::retry(&pool, now(), &actor.actor()?, &campaign, status).await?;
            if args.json {
                report(&outcome, true)?;
            } else {
                println!(
                    "campaign {campaign}: {} failed numbers are pending again, with fresh attempts (operator action {})",
                    outcome.rows_affected, outcome.action_id
                );
            }
        }
        QueueCommand::Resolve {
            ids,
            batch,
            resolution,
            without_centralized_view,
            actor,
        } => {
            let actor = actor.actor()?;
            let target = match batch {
                Some(batch_id) => ResolveTarget::Batch(batch_id),
                None => ResolveTarget::Ids(ids),
            };
            if !matches!(resolution, QueueStatus::Submitted | QueueStatus::Pending) {
                bail!(
                    "--as {resolution}: queue resolve settles rows as submitted (the centralized system holds them) or pending (it does not: send them again)"
                );
            }
            // Refused here already when a row is not needs_review: nothing is asked of
            // the centralized system for rows that cannot be resolved.
            let rows = queue::rows_to_resolve(&pool, &target).await?;
            let views = if without_centralized_view {
                BTreeMap::new()
            } else {
                centralized_views(&settings, &rows).await?
            };
            if !args.json {
                print!("{}", review(&rows, &views));
            }
            let centralized = (!without_centralized_view)
                .then(|| serde_json::to_value(&views).expect("the views serialise as JSON"));
            let outcome =
                queue::resolve(&pool, now(), &actor, &target, resolution, centralized).await?;
            if args.json {
                report(&outcome, true)?;
            } else {
                println!(
                    "{} needs_review rows resolved as {resolution} (operator action {})",
                    outcome.rows_affected, outcome.action_id
                );
            }
        }
    }
    Ok(())
}

/// batch-status of every batch the rows belong to. The API must be configured: the
/// answer is what the resolution rests on.
async fn centralized_views(
    settings: &Settings,
    rows: &[ReviewRow],
) -> anyhow::Result<BTreeMap<i32, RemoteView>> {
    let api = settings
        .api()
        .map_err(anyhow::Error::from)
        .and_then(|config| crate::operator::central_api(&config))
        .map_err(|error| {
            anyhow::anyhow!(
                "queue resolve shows the centralized system's batch-status first, and {}: configure the API, or decide without it with --without-centralized-view",
                crate::one_line(&error)
            )
        })?;
    let mut batches: Vec<i32> = rows.iter().filter_map(|row| row.batch_id).collect();
    batches.sort_unstable();
    batches.dedup();
    let views = api.batch_statuses(&batches).await;
    Ok(batches.into_iter().zip(views).collect())
}

/// The rows (ids, batch, why they need review; not the phone numbers) and, per batch,
/// what the centralized system says.
fn review(rows: &[ReviewRow], views: &BTreeMap<i32, RemoteView>) -> String {
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.id.to_string(),
                row.batch_id.map_or_else(|| "-".into(), |id| id.to_string()),
                row.campaign.clone().unwrap_or_else(|| "-".into()),
                row.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut text = render_table(&["ROW", "BATCH", "CAMPAIGN", "WHY"], &table_rows);
    for (batch_id, view) in views {
        let said = match view {
            RemoteView::Found(remote) => format!(
                "{} (total {}, numbers held {}, completed {}, failed {})",
                remote.counts.batch_status.as_deref().unwrap_or("?"),
                remote
                    .counts
                    .total
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                remote
                    .numbers_held
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                remote
                    .counts
                    .completed
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                remote
                    .counts
                    .failed
                    .map_or_else(|| "-".into(), |n| n.to_string()),
            ),
            RemoteView::NotFound => "holds no number of this batch (404)".into(),
            RemoteView::KeyRejected { status, message } => {
                format!("API key refused ({status} {message}): check CENTRALIZED_CALLING_API_KEY")
            }
            RemoteView::Unavailable { message } => format!("unavailable: {message}"),
        };
        text.push_str(&format!("batch {batch_id}, centralized system: {said}\n"));
    }
    text
}
