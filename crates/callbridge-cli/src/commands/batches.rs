//! `callbridge batches` and `callbridge batch <id>`: each batch's local counts and
//! status (`call_batches`, its `local_call_queue` rows) beside what the centralized
//! system says about it (batch-status), as a table or `--json`.

use anyhow::{Context, bail};
use callbridge_runtime::config::Settings;
use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;

use crate::centralized::{CentralApi, RemoteView};
use crate::database::DatabaseArgs;
use crate::output::render_table;
use callbridge_types::status::QueueStatus;

/// batch-status requests in flight at once while listing.
const REMOTE_CONCURRENCY: usize = 8;

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

/// One batch as stored locally.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LocalBatch {
    pub batch_id: i32,
    pub batch_name: Option<String>,
    pub accountcode: String,
    pub batch_status: Option<String>,
    pub total_calls: Option<i32>,
    pub completed_calls: Option<i32>,
    pub failed_calls: Option<i32>,
    pub created_at: Option<NaiveDateTime>,
    pub updated_at: Option<NaiveDateTime>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Its `local_call_queue` rows, by `queue_status`.
    #[sqlx(flatten)]
    pub queue: QueueCounts,
}

#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct QueueCounts {
    pub rows: i64,
    /// `pending` or `submitting`: not yet held by the centralized system.
    pub waiting: i64,
    pub submitted: i64,
    /// `failed`: given up on (the last error says why).
    pub failed: i64,
    pub needs_review: i64,
    /// `cancelled` with their campaign: never sent.
    pub cancelled: i64,
}

#[derive(Debug, Serialize)]
struct BatchView {
    #[serde(flatten)]
    local: LocalBatch,
    /// `null` with `--local` or when the API is not configured.
    centralized: Option<RemoteView>,
}

/// The newest batches first, with their queue counts. `$4`–`$8`: the queue statuses
/// counted (waiting, submitted, failed, needs_review, cancelled), bound from
/// `QueueStatus`.
const BATCHES_SQL: &str = "
SELECT b.batch_id, b.batch_name, b.accountcode, b.batch_status, b.total_calls,
       b.completed_calls, b.failed_calls, b.created_at, b.updated_at, b.submitted_at,
       b.completed_at, q.rows, q.waiting, q.submitted, q.failed, q.needs_review, q.cancelled
  FROM (SELECT * FROM call_batches
         WHERE ($1::INTEGER IS NULL OR batch_id = $1)
           AND ($2::TEXT IS NULL OR batch_status = $2)
         ORDER BY batch_id DESC
         LIMIT $3) AS b
  CROSS JOIN LATERAL (
        SELECT count(*) AS rows,
               count(*) FILTER (WHERE queue_status = ANY($4)) AS waiting,
               count(*) FILTER (WHERE queue_status = $5) AS submitted,
               count(*) FILTER (WHERE queue_status = $6) AS failed,
               count(*) FILTER (WHERE queue_status = $7) AS needs_review,
               count(*) FILTER (WHERE queue_status = $8) AS cancelled
          FROM local_call_queue
         WHERE local_call_queue.batch_id = b.batch_id) AS q
 ORDER BY b.batch_id";

#[tracing::instrument(skip_all)]
async fn load_batches(
    pool: &PgPool,
    batch_id: Option<i32>,
    status: Option<&str>,
    limit: u32,
) -> anyhow::Result<Vec<LocalBatch>> {
    let waiting: Vec<&str> = QueueStatus::WAITING.iter().map(|s| s.as_str()).collect();
    sqlx::query_as(BATCHES_SQL)
        .bind(batch_id)
        .bind(status)
        .bind(i64::from(limit))
        .bind(waiting)
        .bind(QueueStatus::Submitted.as_str())
        .bind(QueueStatus::Failed.as_str())
        .bind(QueueStatus::NeedsReview.as_str())
        .bind(QueueStatus::Cancelled.as_str())
        .fetch_all(pool)
        .await
        .context("while reading call_batches")
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
            .and_then(|config| CentralApi::new(&config))
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
    futures::stream::iter(batches)
        .map(|local| {
            let api = &api;
            async move {
                let centralized = Some(api.batch_status(local.batch_id).await);
                BatchView { local, centralized }
            }
        })
        .buffered(REMOTE_CONCURRENCY)
        .collect()
        .await
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
