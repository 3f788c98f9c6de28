//! Writing a campaign into `local_call_queue` and `call_batches` in one transaction, by
//! one COPY straight into the queue.
//!
//! The file has been read once already (checked and hashed), so the campaign key is
//! known; it is read again while the COPY runs, each row getting its batch id here.
//! An earlier version COPYed the rows into a temporary table and moved them with
//! INSERT … SELECT: Postgres then paid a staging COPY (1.7 s per million rows) on top of
//! an insert as dear as this COPY, which on its own runs as fast as a raw COPY of the
//! same rows.
//!
//! Each row is copied in with the instant its campaign's rules let it go as its
//! `next_attempt_at` (the window's next opening in its zone, the start time, a day ahead
//! for a paused campaign; the enqueue's own instant when it may go at once), marked
//! `deferred_by_campaign` when the rules hold it, so the submitter's claim, which reads
//! only due rows, never meets a row its window keeps closed. The instant is the same for
//! every row of one zone, so it is computed once per zone ([`DueTimes`]).
//!
//! Numbers on the do-not-call list when the enqueue runs are stored `suppressed`, in no
//! batch, and reported; the submitter's claim checks the list again right before sending,
//! which is what stops a number listed later.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;

use anyhow::Context;
use callbridge_ops::audit::{self, Action, Actor};
use callbridge_ops::campaign::{EnqueueCampaign, for_enqueue};
use callbridge_ops::copy_text::{COPY_NULL, append_copy_text};
use callbridge_ops::{OpsError, RulesChange};
use callbridge_types::campaign::Schedule;
use callbridge_types::status::{BatchStatus, QueueStatus};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::mpsc;

use callbridge_types::phone::{Region, normalise};

use super::input::KeptRow;

/// COPY data is handed from the reading thread to the connection in chunks of about this
/// size.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the COPY: what bounds the memory a file of any size needs for its
/// rows while they travel to Postgres.
pub const COPY_CHUNKS_IN_FLIGHT: usize = 4;
/// Autovacuum's default rule for stale planner statistics: more rows added than 50 plus
/// 10 % of the rows the statistics count (`autovacuum_analyze_threshold`,
/// `autovacuum_analyze_scale_factor`).
const STALE_AFTER_ROWS: f64 = 50.0;
const STALE_AFTER_SHARE: f64 = 0.1;

/// What a campaign is called in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignIdentity {
    /// `local_call_queue.campaign_key`: one row per number per key.
    pub key: String,
    /// `campaigns.name`, and `call_batches.batch_name` of the batches it creates (at
    /// most 255 characters).
    pub batch_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    /// `campaigns.name`.
    pub campaign: String,
    /// Whether this enqueue created the campaign (else it added to it).
    pub campaign_created: bool,
    /// Numbers an earlier run of the same campaign already enqueued (left as they are).
    pub already_enqueued: u64,
    /// Rows inserted into `local_call_queue` to be sent.
    pub enqueued: u64,
    /// Rows inserted `suppressed` (in no batch): their numbers are on the do-not-call list.
    pub suppressed: u64,
    /// The file lines of the first suppressed rows (at most [`LISTED_SUPPRESSED`]).
    pub suppressed_lines: Vec<u64>,
    /// The new batches, ascending, each with how many numbers it got.
    pub batches: Vec<(i32, u64)>,
}

/// An enqueue's open transaction, holding the enqueue lock. Dropped without
/// [`Enqueue::commit`], it rolls back: nothing stays.
pub struct Enqueue<'c> {
    tx: Transaction<'c, Postgres>,
    /// The campaign in `campaigns`, found or created under the enqueue lock.
    campaign: EnqueueCampaign,
    campaign_name: String,
    /// The batch ids this enqueue may use, ascending, from the allocator it shares with
    /// the persister's redials: enough for every row the file could add.
    batch_ids: Vec<i32>,
    /// The campaign's numbers already in the queue, as E.164 keys.
    enqueued_before: HashSet<u64>,
    /// The do-not-call list, as E.164 keys.
    do_not_call: HashSet<u64>,
    /// The enqueue's instant: rows are due from it on.
    now: DateTime<Utc>,
}

/// Begins the enqueue's transaction: takes the enqueue lock, reads which numbers the
/// campaign already holds and where the new batch ids start.
///
/// The campaign is found by name, or created with `rules`; adding to it with other rules
/// than its own, or to a cancelled campaign, is refused (see
/// [`callbridge_ops::campaign::for_enqueue`]).
#[tracing::instrument(skip_all)]
pub async fn begin_enqueue<'c>(
    conn: &'c mut PgConnection,
    campaign: &CampaignIdentity,
    rules: &RulesChange,
    now: DateTime<Utc>,
    default_region: Option<Region>,
    batches_at_most: u64,
) -> anyhow::Result<Enqueue<'c>> {
    let mut tx = conn
        .begin()
        .await
        .context("while starting the transaction")?;

    // One enqueue at a time, from here to commit: the campaign check below and the batch
    // id allocation must not interleave with another enqueue's (a second run of the same
    // campaign would otherwise add empty batches, two campaigns could pick the same ids).
    // An advisory lock, not a table lock: persister and submitter keep writing meanwhile.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('callbridge.enqueue'))")
        .execute(&mut *tx)
        .await
        .context("while waiting for other enqueues to finish")?;

    // The campaign that holds this key's rows already, whatever it was named after (a
    // file enqueued again under another file name is the same campaign); else a new one
    // named `batch_name`.
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT c.name FROM local_call_queue q JOIN campaigns c ON c.id = q.campaign_id
          WHERE q.campaign_key = $1
          LIMIT 1",
    )
    .bind(&campaign.key)
    .fetch_optional(&mut *tx)
    .await
    .context("while looking for the campaign of an earlier run")?;
    let name = existing.unwrap_or_else(|| campaign.batch_name.clone());
    let found = for_enqueue(&mut tx, &name, rules, now)
        .await
        .map_err(|error| match error {
            // The operator's mistake: its own line, not "while enqueuing into …".
            OpsError::Database(error) => error.context("while finding the campaign"),
            refused => anyhow::Error::new(StopEnqueue(refused.to_string())),
        })?;

    // Rows enqueued before numbers were kept in E.164 have only the form sent; a stored
    // number that does not normalise was not put there by enqueue, and no number from
    // the file can equal it.
    let enqueued_before: HashSet<u64> = sqlx::query_scalar::<_, String>(
        "SELECT coalesce(phone_e164, phone_number) FROM local_call_queue WHERE campaign_key = $1",
    )
    .bind(&campaign.key)
    .fetch(&mut *tx)
    .try_filter_map(|stored| async move {
        Ok(normalise(&stored, default_region)
            .ok()
            .map(|normalised| normalised.key()))
    })
    .try_collect()
    .await
    .context("while looking for numbers enqueued by an earlier run")?;
    // The whole list, 8 bytes a number: the file is streamed, so each of its numbers is
    // looked up here as it passes rather than in the database.
    let do_not_call: HashSet<u64> =
        sqlx::query_scalar::<_, String>("SELECT phone_number FROM do_not_call")
            .fetch(&mut *tx)
            .try_filter_map(|listed| async move {
                Ok(normalise(&listed, None).ok().map(|number| number.key()))
            })
            .try_collect()
            .await
            .context("while reading the do-not-call list")?;

    let batch_ids = allocate_batch_ids(&mut tx, batches_at_most).await?;
    Ok(Enqueue {
        tx,
        campaign_name: name,
        campaign: found,
        batch_ids,
        enqueued_before,
        do_not_call,
        now,
    })
}

/// `count` new batch ids, ascending, from `callbridge_allocate_batch_ids` (migration
/// 0012): the one allocator that enqueues and the persister's redials share, so no two of
/// them ever get the same id, however many run at once. Ids a rolled-back or smaller
/// enqueue does not use are never handed out again: the API only needs them unique.
pub async fn allocate_batch_ids(conn: &mut PgConnection, count: u64) -> anyhow::Result<Vec<i32>> {
    let count = i32::try_from(count).context("while counting the batches to allocate")?;
    sqlx::query_scalar("SELECT callbridge_allocate_batch_ids($1)")
        .bind(count)
        .fetch_all(conn)
        .await
        .map_err(|error| {
            // The sequence is INTEGER: it stops rather than wrap past the API's limit.
            if error.to_string().contains("reached maximum value") {
                anyhow::anyhow!(
                    "batch ids would pass {} (the API's 32-bit limit): callbridge_batch_id_seq is used up",
                    i32::MAX
                )
            } else {
                anyhow::Error::new(error).context("while allocating batch ids")
            }
        })
}

/// An enqueue the operator must change before running it again (the message says how).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StopEnqueue(pub String);

impl Enqueue<'_> {
    /// Turns the rows of the second reading into COPY lines (see [`QueueLines`]); the
    /// campaign's earlier numbers move to it.
    pub fn queue_lines(
        &mut self,
        campaign: &CampaignIdentity,
        batch_size: u32,
        chunks: mpsc::Sender<Vec<u8>>,
    ) -> QueueLines {
        let mut campaign_key = Vec::new();
        append_copy_text(&mut campaign_key, &campaign.key);
        write!(campaign_key, "\t{}", self.campaign.id).expect("writing into a Vec cannot fail");
        QueueLines {
            chunk: empty_chunk(),
            chunks,
            enqueued_before: std::mem::take(&mut self.enqueued_before),
            do_not_call: std::mem::take(&mut self.do_not_call),
            campaign_key,
            batch_ids: self.batch_ids.clone(),
            batch_size: u64::from(batch_size),
            due: DueTimes::new(self.campaign.rules.schedule(self.campaign.status), self.now),
            counts: QueueCounts::default(),
        }
    }

    /// COPYs every chunk that arrives on `chunks` into `local_call_queue`, until the
    /// sender is dropped. Returns the rows copied.
    #[tracing::instrument(skip_all)]
    pub async fn copy(&mut self, mut chunks: mpsc::Receiver<Vec<u8>>) -> anyhow::Result<u64> {
        let mut copy = self
            .tx
            .copy_in_raw(
                "COPY local_call_queue
                     (phone_number, phone_e164, batch_id, custom_data, queue_status,
                      retry_count, campaign_key, campaign_id, time_zone, next_attempt_at,
                      deferred_by_campaign)
                 FROM STDIN",
            )
            .await
            .context("while starting COPY")?;
        while let Some(chunk) = chunks.recv().await {
            copy.send(chunk).await.context("while sending COPY data")?;
        }
        copy.finish().await.context("while finishing COPY")
    }

    /// Creates the batches the copied rows went to, records the enqueue in
    /// `operator_actions` and commits.
    #[tracing::instrument(skip_all, fields(enqueued = counts.enqueued))]
    pub async fn commit(
        mut self,
        campaign: &CampaignIdentity,
        accountcode: &str,
        batch_size: u32,
        counts: QueueCounts,
        (now, actor): (DateTime<Utc>, &Actor),
    ) -> anyhow::Result<Stored> {
        let batches = batch_sizes(&self.batch_ids, counts.enqueued, batch_size)?;
        let batch_ids: Vec<i32> = batches.iter().map(|batch| batch.0).collect();
        // A row an application adds with one of these ids before we commit makes this
        // INSERT fail (unique batch_id), and the whole enqueue with it: nothing is shared.
        sqlx::query(
            "INSERT INTO call_batches
                    (batch_id, accountcode, batch_name, total_calls, completed_calls, failed_calls,
                     batch_status, campaign_id)
             SELECT batch_id, $2, $3, 0, 0, 0, $4, $5
               FROM unnest($1::int4[]) AS batch_id",
        )
        .bind(&batch_ids)
        .bind(accountcode)
        .bind(&campaign.batch_name)
        .bind(BatchStatus::Pending.as_str())
        .bind(self.campaign.id)
        .execute(&mut *self.tx)
        .await
        .context("while creating the batches")?;
        audit::record(
            &mut self.tx,
            now,
            actor,
            &Action {
                action: "campaign.enqueue",
                campaign_id: Some(self.campaign.id),
                target: serde_json::json!({
                    "campaign": self.campaign_name,
                    "batches": batch_ids,
                }),
                rows_affected: i64::try_from(counts.enqueued).unwrap_or(i64::MAX),
                detail: Some(serde_json::json!({
                    "created": self.campaign.created,
                    "already_enqueued": counts.already_enqueued,
                    "suppressed": counts.suppressed,
                    "rules": self.campaign.rules.view(),
                })),
            },
        )
        .await
        .context("while recording the enqueue")?;
        self.tx.commit().await.context("while committing")?;
        Ok(Stored {
            campaign: self.campaign_name,
            campaign_created: self.campaign.created,
            already_enqueued: counts.already_enqueued,
            enqueued: counts.enqueued,
            suppressed: counts.suppressed,
            suppressed_lines: counts.suppressed_lines,
            batches,
        })
    }
}

/// Suppressed lines an enqueue lists; beyond, they are counted.
pub const LISTED_SUPPRESSED: usize = 1000;

/// What [`QueueLines`] did with the rows it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Rows written for the COPY, to be sent.
    pub enqueued: u64,
    /// Rows left out because the campaign holds their number already.
    pub already_enqueued: u64,
    /// Rows written `suppressed`: their number is on the do-not-call list.
    pub suppressed: u64,
    /// The first [`LISTED_SUPPRESSED`] of their lines.
    pub suppressed_lines: Vec<u64>,
}

/// Kept rows as lines of COPY's text format for `local_call_queue`, sent on in chunks:
/// numbers the campaign holds already are left out, the others fill batches of
/// `batch_size` in file order. Runs on the thread that reads the file.
pub struct QueueLines {
    chunk: Vec<u8>,
    chunks: mpsc::Sender<Vec<u8>>,
    enqueued_before: HashSet<u64>,
    do_not_call: HashSet<u64>,
    /// The campaign key, escaped for COPY once for all rows, and the campaign id after
    /// it (the two columns that are the same on every row).
    campaign_key: Vec<u8>,
    batch_ids: Vec<i32>,
    batch_size: u64,
    due: DueTimes,
    counts: QueueCounts,
}

impl QueueLines {
    /// Appends the next kept row; a full chunk is sent, waiting while the COPY is behind.
    pub fn push(&mut self, row: KeptRow<'_>) -> anyhow::Result<()> {
        let key = row.phone_e164.key();
        if self.enqueued_before.contains(&key) {
            self.counts.already_enqueued += 1;
            return Ok(());
        }
        let out = &mut self.chunk;
        // Digits and a leading `+` (see `callbridge_types::phone`): nothing to escape.
        write!(out, "{}\t{}\t", row.phone_number, row.phone_e164)
            .expect("writing into a Vec cannot fail");
        let status = if self.do_not_call.contains(&key) {
            // In no batch: it takes no batch's room and never holds a batch open.
            self.counts.suppressed += 1;
            if self.counts.suppressed_lines.len() < LISTED_SUPPRESSED {
                self.counts.suppressed_lines.push(row.line);
            }
            out.extend_from_slice(COPY_NULL);
            QueueStatus::Suppressed
        } else {
            let batch_id = nth_batch_id(&self.batch_ids, self.counts.enqueued / self.batch_size)?;
            self.counts.enqueued += 1;
            write!(out, "{batch_id}").expect("writing into a Vec cannot fail");
            QueueStatus::Pending
        };
        out.push(b'\t');
        match row.custom_data {
            Some(json) => append_copy_text(out, json),
            None => out.extend_from_slice(COPY_NULL),
        }
        out.push(b'\t');
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b"\t0\t");
        out.extend_from_slice(&self.campaign_key);
        out.push(b'\t');
        match row.time_zone {
            // An IANA name (letters, digits, '/', '_', '-', '+'): nothing to escape.
            Some(zone) => out.extend_from_slice(zone.as_bytes()),
            None => out.extend_from_slice(COPY_NULL),
        }
        out.push(b'\t');
        out.extend_from_slice(self.due.fields(row.time_zone));
        out.push(b'\n');
        if self.chunk.len() >= COPY_CHUNK_BYTES {
            let full = std::mem::replace(&mut self.chunk, empty_chunk());
            self.send(full)?;
        }
        Ok(())
    }

    /// Sends the last, partly filled chunk.
    pub fn finish(mut self) -> anyhow::Result<QueueCounts> {
        let last = std::mem::take(&mut self.chunk);
        self.send(last)?;
        Ok(self.counts)
    }

    fn send(&self, chunk: Vec<u8>) -> anyhow::Result<()> {
        self.chunks
            .blocking_send(chunk)
            // The COPY side failed and reports why; this only stops the reading.
            .map_err(|_| anyhow::anyhow!("the database stopped taking rows"))
    }
}

/// The `next_attempt_at` and `deferred_by_campaign` fields of each zone's rows, as COPY
/// text: when the campaign's schedule lets a row of that zone go, judged at the
/// enqueue's instant. Computed at a zone's first row and kept (a file names few zones).
struct DueTimes {
    schedule: Schedule,
    now: DateTime<Utc>,
    /// Rows without a zone of their own (the campaign's).
    default: Vec<u8>,
    by_zone: HashMap<String, Vec<u8>>,
}

impl DueTimes {
    fn new(schedule: Schedule, now: DateTime<Utc>) -> DueTimes {
        DueTimes {
            default: due_fields(&schedule, None, now),
            schedule,
            now,
            by_zone: HashMap::new(),
        }
    }

    fn fields(&mut self, zone: Option<&str>) -> &[u8] {
        let Some(zone) = zone else {
            return &self.default;
        };
        if !self.by_zone.contains_key(zone) {
            let fields = due_fields(&self.schedule, Some(zone), self.now);
            self.by_zone.insert(zone.to_owned(), fields);
        }
        &self.by_zone[zone]
    }
}

/// `next_attempt_at\tdeferred_by_campaign` of a row in `zone`: the instant the schedule
/// gives it, held (`t`) when that is after `now`.
fn due_fields(schedule: &Schedule, zone: Option<&str>, now: DateTime<Utc>) -> Vec<u8> {
    // A new campaign is never cancelled (a cancelled one takes no rows): due at once.
    let due = schedule
        .due_at(schedule.zone_of(zone), now)
        .unwrap_or(now)
        .max(now);
    let held = if due > now { 't' } else { 'f' };
    format!("{}\t{held}", due.format("%Y-%m-%d %H:%M:%S%.6f+00")).into_bytes()
}

/// Room for a chunk and the line that fills it.
fn empty_chunk() -> Vec<u8> {
    Vec::with_capacity(COPY_CHUNK_BYTES + 4096)
}

/// The batches `rows` consecutive positions fill from the first of `batch_ids` on: full
/// ones, and the remainder in the last.
fn batch_sizes(batch_ids: &[i32], rows: u64, batch_size: u32) -> anyhow::Result<Vec<(i32, u64)>> {
    let size = u64::from(batch_size);
    (0..rows.div_ceil(size))
        .map(|index| {
            let batch_id = nth_batch_id(batch_ids, index)?;
            Ok((batch_id, size.min(rows - index * size)))
        })
        .collect()
}

/// The id of the campaign's `index`-th new batch (from 0).
fn nth_batch_id(batch_ids: &[i32], index: u64) -> anyhow::Result<i32> {
    usize::try_from(index)
        .ok()
        .and_then(|index| batch_ids.get(index))
        .copied()
        // The ids were allocated for every row the file holds: only a file that grew
        // between the two readings gets here, and that enqueue is refused anyway.
        .ok_or_else(|| anyhow::anyhow!("the file holds more rows than when it was checked"))
}

/// The tables an enqueue adds to, and how to analyse each (statements are static text).
const ANALYSED_TABLES: [(&str, &str); 2] = [
    ("local_call_queue", "ANALYZE local_call_queue"),
    ("call_batches", "ANALYZE call_batches"),
];

/// ANALYZEs `local_call_queue` and `call_batches` when what this enqueue added made
/// their planner statistics stale. Autovacuum would, too, but only on its next round (up
/// to `autovacuum_naptime`, a minute, later), while submitters claim the new rows at
/// once, planned by statistics that count a handful of pending rows where there are now
/// thousands: after a 60,000-row enqueue a 1000-row claim took 112 ms, after ANALYZE
/// 39–55 ms. Run after the commit, because ANALYZE samples committed rows, and outside
/// the enqueue's lock; its SHARE UPDATE EXCLUSIVE lock lets everyone keep writing.
/// Returns the tables analysed.
#[tracing::instrument(skip_all, fields(enqueued = stored.enqueued))]
pub async fn refresh_planner_statistics(
    conn: &mut PgConnection,
    stored: &Stored,
) -> anyhow::Result<Vec<&'static str>> {
    let added = [stored.enqueued, stored.batches.len() as u64];
    let mut analysed = Vec::new();
    for ((table, analyze), added) in ANALYSED_TABLES.into_iter().zip(added) {
        // Never analysed: -1 (0 before Postgres 14).
        let counted: f32 =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = $1::regclass")
                .bind(table)
                .fetch_one(&mut *conn)
                .await
                .with_context(|| format!("while reading the statistics of {table}"))?;
        if added as f64 > STALE_AFTER_ROWS + STALE_AFTER_SHARE * f64::from(counted.max(0.0)) {
            sqlx::query(analyze)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("while analysing {table}"))?;
            analysed.push(table);
        }
    }
    Ok(analysed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge_types::campaign::{CallingWindow, CampaignStatus, parse_time_zone};

    #[test]
    fn batches_are_full_but_the_last_and_take_the_allocated_ids_in_order() {
        // Ids with a gap: another enqueue or a redial took 102 meanwhile.
        let ids = [101, 103, 104];
        assert_eq!(
            batch_sizes(&ids, 1201, 500).unwrap(),
            [(101, 500), (103, 500), (104, 201)]
        );
        assert_eq!(batch_sizes(&[7], 1000, 1000).unwrap(), [(7, 1000)]);
        assert_eq!(batch_sizes(&[7], 0, 500).unwrap(), []);
        assert_eq!(batch_sizes(&[], 0, 500).unwrap(), []);
        assert!(batch_sizes(&ids, 1501, 500).is_err());
    }

    #[test]
    fn queue_lines_escape_text_fill_batches_and_leave_out_earlier_and_listed_numbers() {
        let india = Some(Region::parse("IN").unwrap());
        let e164 = |raw: &str| normalise(raw, india).unwrap();
        let (sender, mut receiver) = mpsc::channel(1);
        let campaign_key = "campaign:tab\there\\";
        let mut key = Vec::new();
        append_copy_text(&mut key, campaign_key);
        key.extend_from_slice(b"\t7");
        let mut lines = QueueLines {
            chunk: empty_chunk(),
            chunks: sender,
            enqueued_before: HashSet::from([e164("9876543211").key()]),
            do_not_call: HashSet::from([e164("+91 98765 43213").key()]),
            campaign_key: key,
            batch_ids: vec![41, 42],
            batch_size: 2,
            // 20:59:30 in New York, inside the window; 07:29:30 in Kolkata, where it opens
            // at 08:00 (02:30Z).
            due: DueTimes::new(
                Schedule {
                    status: CampaignStatus::Active,
                    start_at: None,
                    window: Some(CallingWindow::parse("08:00-21:00", "all").unwrap()),
                    zone: parse_time_zone("America/New_York").unwrap(),
                },
                "2026-12-05T01:59:30.25Z".parse().unwrap(),
            ),
            counts: QueueCounts::default(),
        };
        let rows = [
            ("+447700000500", Some(r#"{"a\\b":"x\"\n"}"#), None),
            ("9876543211", None, None),
            ("9876543213", None, None),
            ("9876543210", None, Some("Asia/Kolkata")),
            ("9876543212", Some("{}"), None),
        ];
        for (line, (phone_number, custom_data, time_zone)) in rows.into_iter().enumerate() {
            let number = e164(phone_number);
            lines
                .push(KeptRow {
                    line: line as u64 + 2,
                    phone_number,
                    phone_e164: &number,
                    custom_data,
                    time_zone,
                })
                .unwrap();
        }

        let counts = lines.finish().unwrap();

        assert_eq!(
            counts,
            QueueCounts {
                enqueued: 3,
                already_enqueued: 1,
                suppressed: 1,
                suppressed_lines: vec![4],
            }
        );
        let copied = String::from_utf8(receiver.blocking_recv().unwrap()).unwrap();
        assert_eq!(
            copied,
            concat!(
                "+447700000500\t+447700000500\t41\t{\"a\\\\\\\\b\":\"x\\\\\"\\\\n\"}\tpending\t0\tcampaign:tab\\there\\\\\t7\t\\N\t2026-12-05 01:59:30.250000+00\tf\n",
                "9876543213\t+919876543213\t\\N\t\\N\tsuppressed\t0\tcampaign:tab\\there\\\\\t7\t\\N\t2026-12-05 01:59:30.250000+00\tf\n",
                "9876543210\t+919876543210\t41\t\\N\tpending\t0\tcampaign:tab\\there\\\\\t7\tAsia/Kolkata\t2026-12-05 02:30:00.000000+00\tt\n",
                "9876543212\t+919876543212\t42\t{}\tpending\t0\tcampaign:tab\\there\\\\\t7\t\\N\t2026-12-05 01:59:30.250000+00\tf\n",
            )
        );
    }
}
