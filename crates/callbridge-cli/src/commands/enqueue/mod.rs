//! `callbridge enqueue <file.csv>`: a campaign of phone numbers into `local_call_queue`,
//! split into new `call_batches` of at most `--batch-size` numbers (SPEC §8), in one
//! transaction.
//!
//! Campaign identity: `--campaign <name>` names it; without it the campaign *is* the
//! file's normalised content (SHA-256 of its numbers and custom data), so enqueuing the
//! same file twice, even renamed, adds nothing, while an edited file is a new campaign.
//! Name a campaign to grow it: a second run with more numbers adds only the new ones,
//! in new batches (a batch already sent is never appended to).

mod input;
mod phone;
mod store;

use std::path::PathBuf;

use anyhow::{Context, bail};
use callbridge_runtime::config::Settings;
use clap::Args;
use sqlx::Connection;

use crate::database::DatabaseArgs;
use crate::output::{Progress, count_lines};
pub use input::{CampaignFile, read_campaign};
pub use phone::{PhoneError, normalise_phone};
use store::{CampaignIdentity, store_campaign};

/// SPEC §8: 500 numbers per batch by default (inside the API's 100–500 recommendation).
pub const DEFAULT_BATCH_SIZE: u32 = 500;
/// The API refuses more than 1000 items per insert (SPEC §7).
pub const MAX_BATCH_SIZE: u32 = 1000;
/// `call_batches.batch_name` is `VARCHAR(255)`.
const BATCH_NAME_CHARS: usize = 255;
/// Problems listed one per line before the summary; the rest are counted.
const LISTED_PROBLEMS: usize = 20;

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// CSV file with a `phone_number` column; every other column goes into custom_data.
    pub file: PathBuf,

    /// Campaign name: enqueuing the same campaign again adds only numbers it does not
    /// hold yet. Default: the file's content (the same file twice adds nothing).
    #[arg(long)]
    pub campaign: Option<String>,

    /// Numbers per batch (one insert request each).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_SIZE)))]
    pub batch_size: u32,

    /// Enqueue the valid numbers even when some are invalid (they are still listed).
    #[arg(long)]
    pub skip_invalid: bool,

    /// Account code of the new batches, instead of CENTRALIZED_CALLING_ACCOUNT_CODE.
    #[arg(long)]
    pub accountcode: Option<String>,

    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    campaign: &'a str,
    rows_read: u64,
    invalid: usize,
    duplicates: usize,
    already_enqueued: u64,
    enqueued: u64,
    batches: Vec<BatchReport>,
}

#[derive(Debug, serde::Serialize)]
struct BatchReport {
    batch_id: i32,
    numbers: u64,
}

pub async fn run(args: EnqueueArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let accountcode = match args
        .accountcode
        .clone()
        .or_else(|| settings.api.account_code.clone())
    {
        Some(code) if !code.trim().is_empty() => code.trim().to_owned(),
        _ => bail!(
            "Missing required centralized calling configuration: CENTRALIZED_CALLING_ACCOUNT_CODE (or --accountcode): call_batches.accountcode needs it"
        ),
    };
    if accountcode.chars().count() > callbridge_types::event::limits::ACCOUNTCODE_CHARS {
        bail!(
            "the account code is longer than {} characters (call_batches.accountcode)",
            callbridge_types::event::limits::ACCOUNTCODE_CHARS
        );
    }
    let database = args.database.resolve(&settings)?;

    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("while opening {}", args.file.display()))?
        .len();
    let reading = Progress::bytes(size, "reading");
    let path = args.file.clone();
    let campaign_file = {
        let reading = reading.clone();
        tokio::task::spawn_blocking(move || read_campaign(&path, &|bytes| reading.set(bytes)))
            .await
            .context("while reading the CSV")??
    };
    reading.finish();

    let identity = identity(&args, &campaign_file)?;
    report_problems(&campaign_file);
    if !campaign_file.invalid.is_empty() && !args.skip_invalid {
        let lines: Vec<u64> = campaign_file.invalid.iter().map(|row| row.line).collect();
        bail!(
            "{} invalid phone number{} ({}); nothing was enqueued: fix them, or rerun with --skip-invalid",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            count_lines(&lines, 10)
        );
    }

    let mut conn = crate::database::connect_one(&database).await?;
    let writing = Progress::count(campaign_file.rows.len() as u64, "copying");
    let stored = store_campaign(
        &mut conn,
        &identity,
        &accountcode,
        &campaign_file.rows,
        args.batch_size,
        &|rows| writing.set(rows),
    )
    .await
    .with_context(|| format!("while enqueuing into {}", database.identity))?;
    writing.finish();
    conn.close().await.ok();

    let report = Report {
        campaign: &identity.batch_name,
        rows_read: campaign_file.records,
        invalid: campaign_file.invalid.len(),
        duplicates: campaign_file.duplicates.len(),
        already_enqueued: stored.already_enqueued,
        enqueued: stored.enqueued,
        batches: stored
            .batches
            .iter()
            .map(|&(batch_id, numbers)| BatchReport { batch_id, numbers })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn identity(args: &EnqueueArgs, file: &CampaignFile) -> anyhow::Result<CampaignIdentity> {
    match args.campaign.as_deref().map(str::trim) {
        Some("") => bail!("--campaign must not be empty"),
        Some(name) if name.chars().count() > BATCH_NAME_CHARS => {
            bail!(
                "--campaign is longer than {BATCH_NAME_CHARS} characters (call_batches.batch_name)"
            )
        }
        Some(name) => Ok(CampaignIdentity {
            key: format!("campaign:{name}"),
            batch_name: name.to_owned(),
        }),
        None => {
            let short = &file.content_sha256[..12];
            let file_name = args
                .file
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let suffix = format!(" (sha256:{short})");
            let room = BATCH_NAME_CHARS - suffix.chars().count();
            Ok(CampaignIdentity {
                key: format!("sha256:{}", file.content_sha256),
                batch_name: format!(
                    "{}{suffix}",
                    file_name.chars().take(room).collect::<String>()
                ),
            })
        }
    }
}

/// Lists invalid and repeated numbers on stderr by line; the numbers themselves are not
/// repeated (the operator has the file, and logs should not collect phone numbers).
fn report_problems(file: &CampaignFile) {
    for row in file.invalid.iter().take(LISTED_PROBLEMS) {
        eprintln!("line {}: invalid phone_number: {}", row.line, row.problem);
    }
    if file.invalid.len() > LISTED_PROBLEMS {
        eprintln!(
            "… and {} more invalid",
            file.invalid.len() - LISTED_PROBLEMS
        );
    }
    for row in file.duplicates.iter().take(LISTED_PROBLEMS) {
        eprintln!(
            "line {}: duplicate of line {}, dropped",
            row.line, row.first_line
        );
    }
    if file.duplicates.len() > LISTED_PROBLEMS {
        eprintln!(
            "… and {} more duplicates",
            file.duplicates.len() - LISTED_PROBLEMS
        );
    }
}

fn print_report(report: &Report<'_>) {
    println!("campaign          {}", report.campaign);
    println!("rows read         {}", report.rows_read);
    if report.invalid > 0 {
        println!("invalid, skipped  {}", report.invalid);
    }
    println!("duplicates        {} (dropped)", report.duplicates);
    println!(
        "already enqueued  {} (by an earlier run)",
        report.already_enqueued
    );
    let batches = match report.batches.as_slice() {
        [] => {
            println!("enqueued          0 (nothing new)");
            return;
        }
        // One enqueue allocates consecutive ids: a long list reads better as a range.
        [first, .., last] if report.batches.len() > 10 => {
            format!("ids {} to {}", first.batch_id, last.batch_id)
        }
        batches => batches
            .iter()
            .map(|batch| format!("{} ({})", batch.batch_id, batch.numbers))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let n = report.batches.len();
    println!(
        "enqueued          {} in {n} batch{}: {batches}",
        report.enqueued,
        if n == 1 { "" } else { "es" }
    );
}
