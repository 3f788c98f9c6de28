//! `callbridge dnc add|remove|import|list|check`: the do-not-call list. Numbers are
//! normalised to E.164 with the configured default region, exactly as `enqueue`
//! normalises them, so `9876543210` and `+91 98765 43210` are one entry. The actions and
//! their SQL are `callbridge_ops::dnc`'s (the console calls the same); every change is
//! recorded in `operator_actions` with `--actor` (default: the OS user).
//!
//! `import` streams a file of any size: one number a line, or a CSV with a
//! `phone_number` column. The numbers are normalised as they are read, a block of lines
//! at a time on every core; repeats are dropped, numbers already listed are looked up,
//! and the new ones are COPYed into the list, all in one transaction that holds the
//! list's write lock (see `callbridge_ops::dnc::Import`). A line that is no valid number is reported with its line number;
//! the import then stores nothing unless `--skip-invalid` is given.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use callbridge_ops::dnc::{self, DncEntry, WaitingRow};
use callbridge_ops::{ActionOutcome, Actor};
use callbridge_runtime::config::{NumbersConfig, Settings};
use callbridge_types::phone::{E164, RefusedNumber, normalise_all};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, normalise_typed_number, now};
use crate::output::{Progress, count_lines, render_table};

/// The CSV column that holds the numbers (as `enqueue` reads it).
const PHONE_COLUMN: &str = "phone_number";
/// Bad lines listed one per line before the summary; the rest are counted.
const LISTED_PROBLEMS: usize = 20;
/// Bad lines remembered (for the summary and `--json`); the rest are counted.
const KEPT_PROBLEMS: usize = 1000;
/// COPY data is handed from the reading thread to the connection in chunks of about this
/// size, at most this many ahead.
const COPY_CHUNK_BYTES: usize = 1 << 20;
const COPY_CHUNKS_IN_FLIGHT: usize = 4;
/// Lines between two progress updates.
const PROGRESS_EVERY: u64 = 16_384;
/// Lines normalised together, shared out to every core.
const NORMALISE_BLOCK_LINES: usize = 16_384;
/// Waiting rows `dnc check` lists; the rest are counted.
const SHOWN_WAITING: i64 = 50;

#[derive(Debug, Args)]
pub struct DncArgs {
    #[command(subcommand)]
    pub command: DncCommand,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum DncCommand {
    /// Put numbers on the list: they are never sent again, even rows enqueued before.
    Add {
        #[arg(required = true, value_name = "NUMBER")]
        numbers: Vec<String>,
        /// Why (e.g. "opt-out by phone 2026-12-04"), kept with each entry.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Take numbers off the list.
    Remove {
        #[arg(required = true, value_name = "NUMBER")]
        numbers: Vec<String>,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Add every number of a file: one a line, or a CSV with a phone_number column.
    Import {
        file: PathBuf,
        /// Why, kept with each new entry.
        #[arg(long)]
        reason: Option<String>,
        /// Import the valid numbers even when some lines are not numbers (they are still
        /// listed).
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// The newest entries and how many there are.
    List {
        /// Entries shown, newest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Whether a number is on the list, since when, and its rows still waiting to be sent.
    Check { number: String },
}

pub async fn run(args: DncArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let numbers = settings.numbers()?;
    let database = args.database.resolve(&settings)?;
    match args.command {
        DncCommand::Add {
            numbers: raw,
            reason,
            actor,
        } => {
            let listed = normalise_arguments(&raw, numbers)?;
            let pool = crate::database::connect_pool(&database, 1).await?;
            let outcome =
                dnc::add(&pool, now(), &actor.actor()?, &listed, reason.as_deref()).await?;
            report_change(&outcome, "added", args.json)
        }
        DncCommand::Remove {
            numbers: raw,
            actor,
        } => {
            let listed = normalise_arguments(&raw, numbers)?;
            let pool = crate::database::connect_pool(&database, 1).await?;
            let outcome = dnc::remove(&pool, now(), &actor.actor()?, &listed).await?;
            report_change(&outcome, "removed", args.json)
        }
        DncCommand::Import {
            file,
            reason,
            skip_invalid,
            actor,
        } => {
            let actor = actor.actor()?;
            // One connection writes (the import's transaction), one looks up what is
            // listed while the writer COPYs (see `dnc::Import`).
            let mut writer = crate::database::connect_one(&database).await?;
            let mut lookup = crate::database::connect_one(&database).await?;
            let report = import(
                (&mut writer, &mut lookup),
                &file,
                numbers,
                &actor,
                reason.as_deref(),
                skip_invalid,
            )
            .await
            .map_err(|error| {
                if error.is::<StopImport>() {
                    error
                } else {
                    error.context(format!("while importing into {}", database.identity))
                }
            })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_import(&report);
            }
            Ok(())
        }
        DncCommand::List { limit } => {
            let pool = crate::database::connect_pool(&database, 1).await?;
            let (entries, total) = dnc::list(&pool, limit.max(0)).await?;
            if args.json {
                #[derive(Serialize)]
                struct Listed<'a> {
                    total: i64,
                    entries: &'a [DncEntry],
                }
                let listed = Listed {
                    total,
                    entries: &entries,
                };
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else if entries.is_empty() {
                println!("the do-not-call list is empty");
            } else {
                print!("{}", table(&entries));
                if total > entries.len() as i64 {
                    println!("… {} of {total} shown (--limit)", entries.len());
                }
            }
            Ok(())
        }
        DncCommand::Check { number } => {
            let e164 = normalise_typed_number(&number, numbers)?;
            let pool = crate::database::connect_pool(&database, 1).await?;
            let entry = dnc::check(&pool, &e164).await?;
            let (waiting, waiting_total) = dnc::waiting_rows(&pool, &e164, SHOWN_WAITING).await?;
            if args.json {
                #[derive(Serialize)]
                struct Checked<'a> {
                    phone_number: &'a str,
                    listed: bool,
                    entry: Option<&'a DncEntry>,
                    /// Its rows still waiting to be sent (the first SHOWN_WAITING).
                    waiting: &'a [WaitingRow],
                    waiting_total: i64,
                }
                let checked = Checked {
                    phone_number: e164.as_str(),
                    listed: entry.is_some(),
                    entry: entry.as_ref(),
                    waiting: &waiting,
                    waiting_total,
                };
                println!("{}", serde_json::to_string_pretty(&checked)?);
            } else {
                match &entry {
                    Some(entry) => println!(
                        "{} is on the do-not-call list since {} ({}{})",
                        entry.phone_number,
                        entry.added_at.to_rfc3339(),
                        entry.source,
                        entry
                            .reason
                            .as_deref()
                            .map(|reason| format!(": {reason}"))
                            .unwrap_or_default()
                    ),
                    None => println!("{} is not on the do-not-call list", e164.as_str()),
                }
                print_waiting(&waiting, waiting_total, entry.is_some());
            }
            Ok(())
        }
    }
}

/// The number's waiting rows, and what becomes of them when they are due.
fn print_waiting(waiting: &[WaitingRow], total: i64, listed: bool) {
    if total == 0 {
        println!("no row of it waits to be sent");
        return;
    }
    let fate = if listed {
        "each will be suppressed, never sent, when it is due"
    } else {
        "each will be sent when it is due"
    };
    println!(
        "{total} row{} of it wait{}: {fate}",
        if total == 1 { "" } else { "s" },
        if total == 1 { "s" } else { "" }
    );
    let rows: Vec<Vec<String>> = waiting
        .iter()
        .map(|row| {
            vec![
                row.id.to_string(),
                row.campaign.clone().unwrap_or_else(|| "-".to_owned()),
                row.batch_id
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                row.attempt.to_string(),
                row.due_at.to_rfc3339(),
                if row.deferred_by_campaign {
                    "campaign rules".to_owned()
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(
            &["ROW", "CAMPAIGN", "BATCH", "ATTEMPT", "DUE", "DEFERRED BY"],
            &rows
        )
    );
    if total > waiting.len() as i64 {
        println!("… {} of {total} shown", waiting.len());
    }
}

/// Every argument normalised, or one error listing each that is not a number (the
/// operator typed them: they may be repeated).
fn normalise_arguments(raw: &[String], numbers: NumbersConfig) -> anyhow::Result<Vec<E164>> {
    let mut valid = Vec::with_capacity(raw.len());
    let mut refused = Vec::new();
    for number in raw {
        match normalise_typed_number(number, numbers) {
            Ok(e164) => valid.push(e164),
            Err(error) => refused.push(error.to_string()),
        }
    }
    if !refused.is_empty() {
        bail!("{}; nothing was changed", refused.join("; "));
    }
    Ok(valid)
}

fn report_change(outcome: &ActionOutcome, verb: &str, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome)?);
    } else {
        let untouched = outcome
            .detail
            .get("already_listed")
            .or_else(|| outcome.detail.get("not_listed"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let why = if verb == "added" {
            "already listed"
        } else {
            "not listed"
        };
        println!(
            "{verb} {} ({untouched} {why}); recorded as operator action {}",
            outcome.rows_affected, outcome.action_id
        );
    }
    Ok(())
}

fn table(entries: &[DncEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                entry.phone_number.clone(),
                entry.added_at.to_rfc3339(),
                entry.source.clone(),
                entry.reason.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    render_table(&["NUMBER", "ADDED", "SOURCE", "REASON"], &rows)
}

/// An import the operator must change before running again (the message says how).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StopImport(String);

/// A line of the file that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadLine {
    pub line: u64,
    pub problem: String,
}

/// What an import read and did.
#[derive(Debug, Serialize)]
struct ImportReport {
    file: String,
    /// Lines holding a number (blank lines and a CSV header not counted).
    lines_read: u64,
    invalid: u64,
    /// The first invalid lines, with why.
    invalid_lines: Vec<BadLine>,
    /// Repeats of a number earlier in the file.
    duplicates: u64,
    added: u64,
    already_listed: u64,
    action_id: i64,
}

/// What the reading thread found.
#[derive(Debug, Default)]
struct Scan {
    lines_read: u64,
    invalid: u64,
    invalid_lines: Vec<BadLine>,
    duplicates: u64,
    copied: u64,
}

impl Scan {
    fn refuse(&mut self, line: u64, problem: String) {
        self.invalid += 1;
        if self.invalid_lines.len() < KEPT_PROBLEMS {
            self.invalid_lines.push(BadLine { line, problem });
        }
    }
}

async fn import(
    (writer, lookup): (&mut sqlx::PgConnection, &mut sqlx::PgConnection),
    path: &Path,
    numbers: NumbersConfig,
    actor: &Actor,
    reason: Option<&str>,
    skip_invalid: bool,
) -> anyhow::Result<ImportReport> {
    let file = File::open(path).with_context(|| format!("while opening {}", path.display()))?;
    let size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let source = format!(
        "import {}",
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let into = dnc::ImportInto {
        source: &source,
        reason,
        now: now(),
    };
    let mut import = dnc::begin_import(writer, lookup, into).await?;
    let (chunks, received) = tokio::sync::mpsc::channel(COPY_CHUNKS_IN_FLIGHT);
    let reading = Progress::bytes(size, "importing");
    let progress = reading.clone();
    let display = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || {
        read_numbers(
            file,
            &display,
            numbers,
            &|bytes| progress.set(bytes),
            chunks,
        )
    });
    let (copied, read) = tokio::join!(import.copy(received), read);
    // A failed COPY stops the reading too; its own error is the one that explains.
    let copied = copied?;
    let scan = read.context("while reading the file")??;
    reading.finish();
    for bad in scan.invalid_lines.iter().take(LISTED_PROBLEMS) {
        eprintln!("line {}: {}", bad.line, bad.problem);
    }
    if scan.invalid as usize > LISTED_PROBLEMS {
        eprintln!(
            "… and {} more invalid",
            scan.invalid as usize - LISTED_PROBLEMS
        );
    }
    if scan.invalid > 0 && !skip_invalid {
        let lines: Vec<u64> = scan.invalid_lines.iter().map(|bad| bad.line).collect();
        import.abandon().await?;
        return Err(StopImport(format!(
            "{} invalid line{} ({}); nothing was imported: fix them, or rerun with --skip-invalid",
            scan.invalid,
            if scan.invalid == 1 { "" } else { "s" },
            count_lines(&lines, 10)
        ))
        .into());
    }
    let detail = serde_json::json!({
        "lines_read": scan.lines_read,
        "invalid": scan.invalid,
        "invalid_lines": scan.invalid_lines.iter().map(|bad| bad.line).collect::<Vec<_>>(),
        "duplicates": scan.duplicates,
    });
    debug_assert_eq!(copied, scan.copied, "every number read was offered");
    let outcome = import.finish(actor, detail).await?;
    Ok(ImportReport {
        file: path.display().to_string(),
        lines_read: scan.lines_read,
        invalid: scan.invalid,
        invalid_lines: scan.invalid_lines,
        duplicates: scan.duplicates,
        added: outcome.added,
        already_listed: outcome.already_listed,
        action_id: outcome.action.action_id,
    })
}

/// Reads the file (one number a line, or a CSV whose header names `phone_number`),
/// normalising each number and sending each new one as a COPY line. Runs on a blocking
/// thread.
fn read_numbers(
    file: File,
    display: &str,
    numbers: NumbersConfig,
    progress: &dyn Fn(u64),
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> anyhow::Result<Scan> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut sink = CopySink::new(chunks);
    let mut scan = Scan::default();
    let first = reader
        .fill_buf()
        .with_context(|| format!("while reading {display}"))?;
    let first_line = first
        .split(|byte| *byte == b'\n')
        .next()
        .unwrap_or_default();
    let header = String::from_utf8_lossy(first_line);
    let header = header.trim_start_matches('\u{feff}');
    let is_csv = header.split(',').any(|name| {
        name.trim()
            .trim_matches('"')
            .eq_ignore_ascii_case(PHONE_COLUMN)
    });
    if is_csv {
        read_csv(reader, display, numbers, progress, &mut sink, &mut scan)?;
    } else {
        read_lines(reader, display, numbers, progress, &mut sink, &mut scan)?;
    }
    sink.flush(numbers, &mut scan)?;
    Ok(scan)
}

/// Where the reading thread puts each number: lines gather into blocks, each block is
/// normalised on every core (`normalise_all`), and its distinct numbers become COPY lines,
/// in the file's order.
struct CopySink {
    /// Lines read and not normalised yet: (line number, text).
    block: Vec<(u64, String)>,
    chunk: Vec<u8>,
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// Numbers already sent, as E.164 keys: 8 bytes a number.
    seen: HashSet<u64>,
}

impl CopySink {
    fn new(chunks: tokio::sync::mpsc::Sender<Vec<u8>>) -> CopySink {
        CopySink {
            block: Vec::with_capacity(NORMALISE_BLOCK_LINES),
            chunk: Vec::with_capacity(COPY_CHUNK_BYTES + 64),
            chunks,
            seen: HashSet::new(),
        }
    }

    fn take(
        &mut self,
        raw: &str,
        line: u64,
        numbers: NumbersConfig,
        scan: &mut Scan,
    ) -> anyhow::Result<()> {
        self.block.push((line, raw.to_owned()));
        if self.block.len() >= NORMALISE_BLOCK_LINES {
            self.normalise_block(numbers, scan)?;
        }
        Ok(())
    }

    fn normalise_block(&mut self, numbers: NumbersConfig, scan: &mut Scan) -> anyhow::Result<()> {
        let block = std::mem::take(&mut self.block);
        let texts: Vec<&str> = block.iter().map(|(_, raw)| raw.as_str()).collect();
        let normalised = normalise_all(&texts, numbers.default_region);
        for ((line, _), number) in block.iter().zip(normalised) {
            scan.lines_read += 1;
            match number {
                Err(RefusedNumber::Empty) => {
                    // A blank cell in a CSV row, like a blank line: no number, skipped.
                    scan.lines_read -= 1;
                }
                Err(problem) => scan.refuse(*line, format!("invalid phone_number: {problem}")),
                Ok(e164) if !self.seen.insert(e164.key()) => scan.duplicates += 1,
                Ok(e164) => {
                    // Digits and a leading `+`: nothing to escape for COPY.
                    self.chunk.extend_from_slice(e164.as_str().as_bytes());
                    self.chunk.push(b'\n');
                    scan.copied += 1;
                    if self.chunk.len() >= COPY_CHUNK_BYTES {
                        self.send_chunk()?;
                    }
                }
            }
        }
        self.block = block;
        self.block.clear();
        Ok(())
    }

    /// Normalises what is left and sends the last COPY lines.
    fn flush(&mut self, numbers: NumbersConfig, scan: &mut Scan) -> anyhow::Result<()> {
        self.normalise_block(numbers, scan)?;
        self.send_chunk()
    }

    fn send_chunk(&mut self) -> anyhow::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(COPY_CHUNK_BYTES + 64));
        self.chunks
            .blocking_send(full)
            // The COPY side failed and reports why; this only stops the reading.
            .map_err(|_| anyhow::anyhow!("the database stopped taking rows"))
    }
}

fn read_lines(
    mut reader: impl BufRead,
    display: &str,
    numbers: NumbersConfig,
    progress: &dyn Fn(u64),
    sink: &mut CopySink,
    scan: &mut Scan,
) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut number = 0_u64;
    let mut bytes = 0_u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("while reading line {} of {display}", number + 1))?;
        if read == 0 {
            break;
        }
        number += 1;
        bytes += read as u64;
        if number.is_multiple_of(PROGRESS_EVERY) {
            progress(bytes);
        }
        let text = line.trim_start_matches('\u{feff}');
        sink.take(text, number, numbers, scan)?;
    }
    progress(bytes);
    Ok(())
}

fn read_csv(
    reader: impl Read,
    display: &str,
    numbers: NumbersConfig,
    progress: &dyn Fn(u64),
    sink: &mut CopySink,
    scan: &mut Scan,
) -> anyhow::Result<()> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let column = csv
        .headers()
        .with_context(|| format!("while reading the header of {display}"))?
        .iter()
        .position(|name| {
            name.trim_start_matches('\u{feff}')
                .trim()
                .eq_ignore_ascii_case(PHONE_COLUMN)
        })
        .context("the CSV's header names no phone_number column")?;
    let mut record = csv::StringRecord::new();
    loop {
        let more = csv
            .read_record(&mut record)
            .with_context(|| format!("while reading {display}"))?;
        if !more {
            break;
        }
        let (index, byte, line) = record
            .position()
            .map_or((0, 0, 0), |at| (at.record(), at.byte(), at.line()));
        if index.is_multiple_of(PROGRESS_EVERY) {
            progress(byte);
        }
        sink.take(record.get(column).unwrap_or_default(), line, numbers, scan)?;
    }
    progress(csv.position().byte());
    Ok(())
}

fn print_import(report: &ImportReport) {
    println!("file              {}", report.file);
    println!("numbers read      {}", report.lines_read);
    if report.invalid > 0 {
        println!("invalid, skipped  {}", report.invalid);
    }
    println!("duplicates        {} (in the file)", report.duplicates);
    println!("already listed    {}", report.already_listed);
    println!(
        "added             {} (recorded as operator action {})",
        report.added, report.action_id
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge_types::phone::{Region, SendForm};

    fn scan(text: &str) -> (Scan, String) {
        let path = std::env::temp_dir().join(format!(
            "callbridge-dnc-{}-{:?}.txt",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).unwrap();
        let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
        let numbers = NumbersConfig {
            default_region: Some(Region::parse("IN").unwrap()),
            send_form: SendForm::National,
        };
        let scan =
            read_numbers(File::open(&path).unwrap(), "test", numbers, &|_| {}, sender).unwrap();
        std::fs::remove_file(&path).ok();
        let mut copied = String::new();
        while let Ok(chunk) = receiver.try_recv() {
            copied.push_str(&String::from_utf8(chunk).unwrap());
        }
        (scan, copied)
    }

    #[test]
    fn one_number_a_line_with_bad_lines_and_repeats_reported() {
        let (scan, copied) =
            scan("9876543210\n\n+91 98765 43211\nnot a number\n098765 43210\n12\n");
        assert_eq!(copied, "+919876543210\n+919876543211\n");
        assert_eq!(scan.lines_read, 5);
        assert_eq!(scan.duplicates, 1);
        let lines: Vec<u64> = scan.invalid_lines.iter().map(|bad| bad.line).collect();
        assert_eq!(lines, [4, 6]);
        assert!(!scan.invalid_lines[0].problem.contains("not a number"));
    }

    #[test]
    fn a_csv_is_read_by_its_phone_number_column() {
        let (scan, copied) =
            scan("\u{feff}name,Phone_Number\nA,9876543210\nB,\"+44 20 7183 8750\"\nC,x\nD,\n");
        assert_eq!(copied, "+919876543210\n+442071838750\n");
        assert_eq!(scan.lines_read, 3);
        assert_eq!(
            scan.invalid_lines,
            [BadLine {
                line: 4,
                problem: "invalid phone_number: a character other than digits, spaces, '-', '.', '(', ')' and a leading '+'".into()
            }]
        );
    }
}
