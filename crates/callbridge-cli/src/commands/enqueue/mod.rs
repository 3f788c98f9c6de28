//! `callbridge enqueue <file.csv>`: a campaign of phone numbers into `local_call_queue`,
//! split into new `call_batches` of at most `--batch-size` numbers, in one
//! transaction.
//!
//! Campaign identity: `--campaign <name>` names it; without it the campaign *is* the
//! file's normalised content (SHA-256 of its numbers and custom data), so enqueuing the
//! same file twice, even renamed, adds nothing, while an edited file is a new campaign
//! (named after the file and its hash). Name a campaign to grow it: a second run with more
//! numbers adds only the new ones, in new batches (a batch already sent is never appended
//! to). The first run creates the campaign in `campaigns` with the rule options given
//! (start time, calling window, time zone, pacing); later runs add to it under its own
//! rules, which `callbridge campaign set` changes.
//!
//! Numbers are normalised to E.164 with `CALLBRIDGE__NUMBERS__DEFAULT_REGION` and stored
//! in the form `CALLBRIDGE__NUMBERS__SEND_FORM` names (`phone_number`, what the API is
//! sent) beside their E.164 form (`phone_e164`, what the do-not-call list is checked
//! against). Numbers already on the list are stored `suppressed` and reported.
//!
//! The file is read twice, streaming: first to check it (nothing touches the database
//! when a number is invalid) and to hash it, then while its rows are COPYed into the
//! queue (see `store.rs`). Only each distinct number (as one integer, to spot repeats)
//! and the problem lines stay in memory: a million-row file peaks at about 90 MB.

mod input;
mod store;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use callbridge_runtime::config::{DatabaseIdentity, NumbersConfig, Settings};
use clap::Args;
use sqlx::{Connection, PgConnection};

use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, RuleArgs};
use crate::output::{Progress, count_lines};
pub use input::{CampaignFile, RowProblem, read_campaign};
use input::{CampaignReader, CampaignScan};
pub use store::StopEnqueue;
use store::{
    COPY_CHUNKS_IN_FLIGHT, CampaignIdentity, Stored, begin_enqueue, refresh_planner_statistics,
};

/// 500 numbers per batch by default (inside the API's 100–500 recommendation).
pub const DEFAULT_BATCH_SIZE: u32 = 500;
/// The API refuses more than 1000 items per insert, so no batch needs
/// repeated inserts under one `batch_id`.
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
    pub rules: RuleArgs,

    #[command(flatten)]
    pub actor: ActorArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, serde::Serialize)]
struct Report<'a> {
    campaign: &'a str,
    campaign_created: bool,
    rows_read: u64,
    invalid: usize,
    duplicates: usize,
    already_enqueued: u64,
    enqueued: u64,
    /// On the do-not-call list: stored `suppressed`, never sent.
    suppressed: u64,
    /// Their lines (the first ones).
    suppressed_lines: Vec<u64>,
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
    let numbers = settings.numbers()?;
    let rules = args.rules.change()?;
    let actor = args.actor.actor()?;
    let database = args.database.resolve(&settings)?;

    let size = regular_file_size(&args.file)?;
    let checked = check_campaign(&args.file, size, numbers).await?;

    let identity = identity(&args, &checked)?;
    report_problems(&checked);
    if !checked.invalid.is_empty() && !args.skip_invalid {
        let lines: Vec<u64> = checked.invalid.iter().map(|row| row.line).collect();
        let what = if checked.invalid.iter().all(|row| row.problem.is_phone()) {
            "phone number"
        } else {
            "row"
        };
        bail!(
            "{} invalid {what}{} ({}); nothing was enqueued: fix them, or rerun with --skip-invalid",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            count_lines(&lines, 10)
        );
    }

    let mut conn = crate::database::connect_one(&database).await?;
    let stored = copy_campaign(
        &mut conn,
        &database.identity,
        &args,
        &Campaign {
            identity: &identity,
            accountcode: &accountcode,
            checked: &checked,
            size,
            rules: &rules,
            actor: &actor,
            numbers,
        },
    )
    .await?;

    // The enqueue is committed: stale statistics only slow the submitter down, so a
    // failure here (say, a role that does not own the tables) is a warning.
    if let Err(err) = refresh_planner_statistics(&mut conn, &stored).await {
        eprintln!(
            "warning: the rows are enqueued, but {}; the submitter's claims may be slow until autovacuum analyses the tables",
            crate::one_line(&err)
        );
    }
    conn.close().await.ok();

    let report = Report {
        campaign: &stored.campaign,
        campaign_created: stored.campaign_created,
        rows_read: checked.records,
        invalid: checked.invalid.len(),
        duplicates: checked.duplicates.len(),
        already_enqueued: stored.already_enqueued,
        enqueued: stored.enqueued,
        suppressed: stored.suppressed,
        suppressed_lines: stored.suppressed_lines.clone(),
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

/// The file's size, for the progress bars. A pipe is refused: it cannot be read twice.
fn regular_file_size(path: &Path) -> anyhow::Result<u64> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("while opening {}", path.display()))?;
    if !metadata.is_file() {
        bail!(
            "{} is not a regular file: enqueue reads it twice (to check it, then to copy it); save it to a file first",
            path.display()
        );
    }
    Ok(metadata.len())
}

/// The first reading: every line checked, the kept rows hashed, nothing stored.
async fn check_campaign(
    path: &Path,
    size: u64,
    numbers: NumbersConfig,
) -> anyhow::Result<CampaignScan> {
    let reader = CampaignReader::open(path, numbers)?;
    let checking = Progress::bytes(size, "checking");
    let progress = checking.clone();
    let checked = tokio::task::spawn_blocking(move || {
        reader.read(&|bytes| progress.set(bytes), &mut |_| Ok(()))
    })
    .await
    .context("while reading the CSV")??;
    checking.finish();
    Ok(checked)
}

/// What [`copy_campaign`] stores.
struct Campaign<'a> {
    identity: &'a CampaignIdentity,
    accountcode: &'a str,
    /// What the first reading found.
    checked: &'a CampaignScan,
    size: u64,
    /// The rules of a campaign this enqueue creates (or restates).
    rules: &'a callbridge_ops::RulesChange,
    actor: &'a callbridge_ops::Actor,
    numbers: NumbersConfig,
}

/// The second reading, inside the enqueue's transaction: each kept row is COPYed into the
/// queue as it is read (a blocking thread reads, this task copies). Commits only if the
/// file read the same as when it was checked.
async fn copy_campaign(
    conn: &mut PgConnection,
    database: &DatabaseIdentity,
    args: &EnqueueArgs,
    campaign: &Campaign<'_>,
) -> anyhow::Result<Stored> {
    let in_database = || format!("while enqueuing into {database}");
    let now = crate::operator::now();
    // Every row the first reading found could be new: ids for as many batches as they fill.
    let batches_at_most = campaign
        .checked
        .records
        .div_ceil(u64::from(args.batch_size));
    let mut enqueue = begin_enqueue(
        conn,
        campaign.identity,
        campaign.rules,
        now,
        campaign.numbers.default_region,
        batches_at_most,
    )
    .await
    .map_err(|error| {
        if error.is::<StopEnqueue>() {
            error
        } else {
            error.context(in_database())
        }
    })?;
    let (chunks, received) = tokio::sync::mpsc::channel(COPY_CHUNKS_IN_FLIGHT);
    let mut lines = enqueue.queue_lines(campaign.identity, args.batch_size, chunks);
    let reader = CampaignReader::open(&args.file, campaign.numbers)?;
    let copying = Progress::bytes(campaign.size, "copying");
    let progress = copying.clone();
    let read = tokio::task::spawn_blocking(move || {
        let scan = reader.read(&|bytes| progress.set(bytes), &mut |row| lines.push(row))?;
        anyhow::Ok((scan, lines.finish()?))
    });
    let (copied, read) = tokio::join!(enqueue.copy(received), read);
    // A failed COPY stops the reading too; its own error is the one that explains.
    copied.with_context(in_database)?;
    let (reread, counts) = read.context("while reading the CSV")??;
    copying.finish();
    if !reread.reads_like(campaign.checked) {
        // `enqueue` is dropped: its transaction rolls back.
        bail!(
            "{} changed while it was being enqueued; nothing was enqueued: run again once it is complete",
            args.file.display()
        );
    }
    enqueue
        .commit(
            campaign.identity,
            campaign.accountcode,
            args.batch_size,
            counts,
            (now, campaign.actor),
        )
        .await
        .with_context(in_database)
}

fn identity(args: &EnqueueArgs, file: &CampaignScan) -> anyhow::Result<CampaignIdentity> {
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
fn report_problems(file: &CampaignScan) {
    for row in file.invalid.iter().take(LISTED_PROBLEMS) {
        eprintln!("line {}: {}", row.line, row.problem);
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
    println!(
        "campaign          {}{}",
        report.campaign,
        if report.campaign_created {
            " (created)"
        } else {
            ""
        }
    );
    println!("rows read         {}", report.rows_read);
    if report.invalid > 0 {
        println!("invalid, skipped  {}", report.invalid);
    }
    println!("duplicates        {} (dropped)", report.duplicates);
    println!(
        "already enqueued  {} (by an earlier run)",
        report.already_enqueued
    );
    if report.suppressed > 0 {
        println!(
            "suppressed        {} (on the do-not-call list, never sent: {})",
            report.suppressed,
            count_lines(&report.suppressed_lines, 10)
        );
    }
    let batches = match report.batches.as_slice() {
        [] => {
            println!("enqueued          0 (nothing new)");
            return;
        }
        // One enqueue's ids ascend (consecutive unless redials took some meanwhile): a long
        // list reads better as a range.
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
