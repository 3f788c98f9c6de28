//! `callbridge batches` and `callbridge batch <id>`: each batch's local counts and
//! status (`call_batches`, its `local_call_queue` rows) beside what the centralized
//! system says about it (batch-status), as a table or `--json`.

use anyhow::bail;
use callbridge_ops::batches::{self, BatchFilter, LocalBatch};
use callbridge_ops::centralized::RemoteView;
use callbridge_runtime::config::Settings;
use clap::Args;
use serde::Serialize;
use sqlx::PgPool;

use crate::database::DatabaseArgs;
use crate::output::render_table;

#[derive(Debug, Args)]
pub struct BatchesArgs {
    /// Show at most this many batches, the newest (highest batch_id) first kept.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,

    /// Only batches in this status (pending, submitted, in_progress, completed, failed,
    /// cancelled).
    #[arg(long, value_parser = parse_batch_status)]
    pub status: Option<String>,

    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The batch_id.
    pub batch_id: i32,

    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(Debug, Args)]
pub struct ViewArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Do not ask the centralized system (batch-status) for its view.
    #[arg(long)]
    pub local: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn parse_batch_status(raw: &str) -> Result<String, String> {
    callbridge_types::status::BatchStatus::parse(raw)
        .map(|status| status.as_str().to_owned())
        .map_err(|error| error.to_string())
}

#[derive(Debug, Serialize)]
struct BatchView {
    #[serde(flatten)]
    local: LocalBatch,
    /// `null` with `--local` or when the API is not configured.
    centralized: Option<RemoteView>,
}

#[tracing::instrument(skip_all)]
async fn load_batches(
    pool: &PgPool,
    batch_id: Option<i32>,
    status: Option<&str>,
    limit: u32,
) -> anyhow::Result<Vec<LocalBatch>> {
    let filter = BatchFilter {
        batch_id,
        status,
        limit,
        ..BatchFilter::default()
    };
    Ok(batches::load(pool, &filter).await?)
}

pub async fn run_list(args: BatchesArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let pool = connect(&args.view, &settings).await?;
    let batches = load_batches(&pool, None, args.status.as_deref(), args.limit).await?;
    let views = with_remote(batches, &args.view, &settings).await;
    if args.view.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        println!("no batches (enqueue a campaign with `callbridge enqueue <file.csv>`)");
    } else {
        print!("{}", table(&views, !args.view.local));
    }
    Ok(())
}

pub async fn run_one(args: BatchArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let pool = connect(&args.view, &settings).await?;
    let batches = load_batches(&pool, Some(args.batch_id), None, 1).await?;
    if batches.is_empty() {
        bail!("batch {} is not in call_batches", args.batch_id);
    }
    let views = with_remote(batches, &args.view, &settings).await;
    let view = &views[0];
    if args.view.json {
        println!("{}", serde_json::to_string_pretty(view)?);
    } else {
        print!("{}", details(view));
    }
    Ok(())
}

async fn connect(view: &ViewArgs, settings: &Settings) -> anyhow::Result<PgPool> {
    let database = view.database.resolve(settings)?;
    crate::database::connect_pool(&database, 2).await
}

/// Adds batch-status answers unless `--local`; a missing API configuration is said once
/// on stderr, not as an error: the local view is useful on its own.
async fn with_remote(
    batches: Vec<LocalBatch>,
    view: &ViewArgs,
    settings: &Settings,
) -> Vec<BatchView> {
    let api = if view.local {
        None
    } else {
        match settings
            .api()
            .map_err(anyhow::Error::from)
            .and_then(|config| crate::operator::central_api(&config))
        {
            Ok(api) => Some(api),
            Err(error) => {
                eprintln!("centralized view skipped: {}", crate::one_line(&error));
                None
            }
        }
    };
    let Some(api) = api else {
        return batches
            .into_iter()
            .map(|local| BatchView {
                local,
                centralized: None,
            })
            .collect();
    };
    let ids: Vec<i32> = batches.iter().map(|batch| batch.batch_id).collect();
    let views = api.batch_statuses(&ids).await;
    batches
        .into_iter()
        .zip(views)
        .map(|(local, view)| BatchView {
            local,
            centralized: Some(view),
        })
        .collect()
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

fn table(views: &[BatchView], with_remote: bool) -> String {
    let mut header = vec![
        "BATCH",
        "NAME",
        "STATUS",
        "ROWS",
        "WAITING",
        "SUBMITTED",
        "REVIEW",
        "REJECTED",
        "TOTAL",
        "COMPLETED",
        "FAILED",
    ];
    if with_remote {
        header.extend(["CENTRAL", "C.TOTAL", "C.COMPLETED", "C.FAILED"]);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|view| {
            let local = &view.local;
            let name = local.batch_name.clone().unwrap_or_default();
            let mut row = vec![
                local.batch_id.to_string(),
                if name.chars().count() > 40 {
                    format!("{}…", name.chars().take(39).collect::<String>())
                } else {
                    name
                },
                opt(local.batch_status.as_deref()),
                local.queue.rows.to_string(),
                local.queue.waiting.to_string(),
                local.queue.submitted.to_string(),
                local.queue.needs_review.to_string(),
                local.queue.failed.to_string(),
                opt(local.total_calls),
                opt(local.completed_calls),
                opt(local.failed_calls),
            ];
            if with_remote {
                match &view.centralized {
                    Some(RemoteView::Found(remote)) => row.extend([
                        opt(remote.counts.batch_status.as_deref()),
                        opt(remote.counts.total),
                        opt(remote.counts.completed),
                        opt(remote.counts.failed),
                    ]),
                    Some(other) => {
                        row.extend([other.status_cell(), "-".into(), "-".into(), "-".into()])
                    }
                    None => row.extend(["-".into(), "-".into(), "-".into(), "-".into()]),
                }
            }
            row
        })
        .collect();
    render_table(&header, &rows)
}

fn details(view: &BatchView) -> String {
    let local = &view.local;
    let mut lines = vec![
        ("batch_id", local.batch_id.to_string()),
        ("name", opt(local.batch_name.as_deref())),
        ("accountcode", local.accountcode.clone()),
        ("status", opt(local.batch_status.as_deref())),
        ("total_calls", opt(local.total_calls)),
        ("completed_calls", opt(local.completed_calls)),
        ("failed_calls", opt(local.failed_calls)),
        (
            "queue rows",
            format!(
                "{} (waiting {}, submitted {}, needs_review {}, failed {}, cancelled {})",
                local.queue.rows,
                local.queue.waiting,
                local.queue.submitted,
                local.queue.needs_review,
                local.queue.failed,
                local.queue.cancelled
            ),
        ),
        ("created_at", opt(local.created_at)),
        ("submitted_at", opt(local.submitted_at)),
        ("completed_at", opt(local.completed_at)),
    ];
    let remote = match &view.centralized {
        None => "not asked".to_owned(),
        Some(RemoteView::Found(remote)) => format!(
            "{} (total {}, queued {}, dispatched {}, in_progress {}, completed {}, failed {})",
            opt(remote.counts.batch_status.as_deref()),
            opt(remote.counts.total),
            opt(remote.counts.queued),
            opt(remote.counts.dispatched),
            opt(remote.counts.in_progress),
            opt(remote.counts.completed),
            opt(remote.counts.failed)
        ),
        Some(RemoteView::NotFound) => {
            "the centralized system does not know this batch (404)".into()
        }
        Some(RemoteView::KeyRejected { status, message }) => {
            format!("API key refused ({status} {message}): check CENTRALIZED_CALLING_API_KEY")
        }
        Some(RemoteView::Unavailable { message }) => format!("unavailable: {message}"),
    };
    lines.push(("centralized", remote));
    let mut text = String::new();
    for (name, value) in lines {
        text.push_str(&format!("{name:<16} {value}\n"));
    }
    text
}
