//! Writing a campaign into `local_call_queue` and `call_batches` in one transaction.
//!
//! The kept rows are COPYed into a temporary staging table while the file is still being
//! read, then moved into the queue by set-based INSERTs. Why not COPY straight into the
//! queue: an unnamed campaign's key is the hash of the whole file, known only at its end,
//! and the numbers an earlier run already enqueued must be left out. The detour is cheap:
//! the staging COPY writes no WAL and keeps one small index, and an INSERT … SELECT into
//! the queue costs Postgres no more than a COPY of the same rows into it would. That
//! insert (heap, WAL and the queue's six indexes) is most of a large enqueue's time.

use std::io::Write as _;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::mpsc;

use super::input::KeptRow;

/// COPY data is handed from the reading thread to the connection in chunks of about this
/// size.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the COPY: what bounds the memory a file of any size needs for its
/// rows while they travel to Postgres.
pub const COPY_CHUNKS_IN_FLIGHT: usize = 4;
/// Staged rows per INSERT into the queue. The insert is the longest step of a large
/// enqueue; in pieces its progress can be shown (and it stays one transaction).
const INSERT_CHUNK_ROWS: u64 = 50_000;
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
    /// `call_batches.batch_name` of the batches it creates (at most 255 characters).
    pub batch_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    /// Numbers an earlier run of the same campaign already enqueued (left as they are).
    pub already_enqueued: u64,
    /// Rows inserted into `local_call_queue`.
    pub enqueued: u64,
    /// The new batches, ascending, each with how many numbers it got.
    pub batches: Vec<(i32, u64)>,
}

/// Kept rows as lines of COPY's text format for the staging table, sent on in chunks.
/// Runs on the thread that reads the file.
pub struct CopyLines {
    chunk: Vec<u8>,
    next_ord: u64,
    chunks: mpsc::Sender<Vec<u8>>,
}

impl CopyLines {
    pub fn new(chunks: mpsc::Sender<Vec<u8>>) -> CopyLines {
        CopyLines {
            chunk: empty_chunk(),
            next_ord: 0,
            chunks,
        }
    }

    /// Appends the next kept row; a full chunk is sent, waiting while the COPY is behind.
    pub fn push(&mut self, row: KeptRow<'_>) -> anyhow::Result<()> {
        append_copy_line(&mut self.chunk, self.next_ord, row);
        self.next_ord += 1;
        if self.chunk.len() >= COPY_CHUNK_BYTES {
            let full = std::mem::replace(&mut self.chunk, empty_chunk());
            self.send(full)?;
        }
        Ok(())
    }

    /// Sends the last, partly filled chunk.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let last = std::mem::take(&mut self.chunk);
        self.send(last)
    }

    fn send(&self, chunk: Vec<u8>) -> anyhow::Result<()> {
        self.chunks
            .blocking_send(chunk)
            // The COPY side failed and reports why; this only stops the reading.
            .map_err(|_| anyhow::anyhow!("the database stopped taking rows"))
    }
}

/// Room for a chunk and the line that fills it.
fn empty_chunk() -> Vec<u8> {
    Vec::with_capacity(COPY_CHUNK_BYTES + 4096)
}

/// One line of COPY's text format: tab-separated, `\N` for NULL, and a backslash starts
/// an escape, so the JSON's backslashes are doubled. Nothing else needs escaping: the
/// number is digits and an optional `+` (see `phone.rs`), and serde_json writes control
/// characters (tab, newline, carriage return) as JSON escapes.
fn append_copy_line(out: &mut Vec<u8>, ord: u64, row: KeptRow<'_>) {
    write!(out, "{ord}\t{}\t", row.phone_number).expect("writing into a Vec cannot fail");
    match row.custom_data {
        Some(json) => {
            for (index, part) in json.split('\\').enumerate() {
                if index > 0 {
                    out.extend_from_slice(b"\\\\");
                }
                out.extend_from_slice(part.as_bytes());
            }
        }
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\n');
}

/// A campaign's kept rows in the staging table, inside the enqueue's open transaction.
/// Dropped without [`StagedCampaign::store`], the transaction rolls back: nothing stays.
pub struct StagedCampaign<'c> {
    tx: Transaction<'c, Postgres>,
    rows: u64,
}

/// Begins the enqueue's transaction and COPYs every chunk that arrives on `chunks` into
/// the staging table, until the sender is dropped.
#[tracing::instrument(skip_all)]
pub async fn stage_campaign(
    conn: &mut PgConnection,
    mut chunks: mpsc::Receiver<Vec<u8>>,
) -> anyhow::Result<StagedCampaign<'_>> {
    let mut tx = conn
        .begin()
        .await
        .context("while starting the transaction")?;

    // Session-private, gone at commit, and not WAL-logged. `ord` is the row's position in
    // the file among the kept rows; its key lets the INSERTs below read it in ranges.
    sqlx::query(
        "CREATE TEMP TABLE callbridge_enqueue (
             ord BIGINT PRIMARY KEY,
             phone_number VARCHAR(20) NOT NULL,
             custom_data JSONB
         ) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .context("while creating the staging table")?;

    let mut copy = tx
        .copy_in_raw("COPY callbridge_enqueue (ord, phone_number, custom_data) FROM STDIN")
        .await
        .context("while starting COPY")?;
    while let Some(chunk) = chunks.recv().await {
        copy.send(chunk).await.context("while sending COPY data")?;
    }
    let rows = copy.finish().await.context("while finishing COPY")?;
    // A fresh temp table has no statistics; without them the planner joins a million
    // staged rows against the queue as if there were a handful.
    sqlx::query("ANALYZE callbridge_enqueue")
        .execute(&mut *tx)
        .await
        .context("while analysing the staging table")?;
    Ok(StagedCampaign { tx, rows })
}

impl StagedCampaign<'_> {
    /// Rows staged: the file's kept rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Inserts the staged rows the campaign does not hold yet into new batches of at most
    /// `batch_size` numbers, in file order, and commits. `progress` is told how many
    /// staged rows have been dealt with.
    #[tracing::instrument(skip_all, fields(rows = self.rows, batch_size))]
    pub async fn store(
        self,
        campaign: &CampaignIdentity,
        accountcode: &str,
        batch_size: u32,
        progress: &dyn Fn(u64),
    ) -> anyhow::Result<Stored> {
        let StagedCampaign { mut tx, rows } = self;

        // One enqueue at a time, from here to commit: the campaign check below and the
        // batch id allocation must not interleave with another enqueue's (a second run of
        // the same campaign would otherwise add empty batches, two campaigns could pick the
        // same ids). An advisory lock, not a table lock: persister and submitter keep
        // writing meanwhile.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('callbridge.enqueue'))")
            .execute(&mut *tx)
            .await
            .context("while waiting for other enqueues to finish")?;

        let already_enqueued = sqlx::query(
            "DELETE FROM callbridge_enqueue e
              USING local_call_queue q
              WHERE q.campaign_key = $1 AND q.phone_number = e.phone_number",
        )
        .bind(&campaign.key)
        .execute(&mut *tx)
        .await
        .context("while looking for numbers enqueued by an earlier run")?
        .rows_affected();

        let new_rows = rows - already_enqueued;
        if new_rows == 0 {
            tx.commit().await.context("while committing")?;
            return Ok(Stored {
                already_enqueued,
                enqueued: 0,
                batches: Vec::new(),
            });
        }

        let batch_count = new_rows.div_ceil(u64::from(batch_size));
        let highest: i64 =
            sqlx::query_scalar("SELECT coalesce(max(batch_id), 0)::BIGINT FROM call_batches")
                .fetch_one(&mut *tx)
                .await
                .context("while reading the highest batch id")?;
        if highest + batch_count as i64 > i64::from(i32::MAX) {
            bail!(
                "batch ids would pass {} (the API's 32-bit limit): the highest batch id in call_batches is {highest}",
                i32::MAX
            );
        }
        let first_batch_id = (highest + 1) as i32;

        // A row another writer adds with one of these ids before we commit makes this INSERT
        // fail (unique batch_id), and the whole enqueue with it: nothing is ever shared.
        sqlx::query(
            "INSERT INTO call_batches
                    (batch_id, accountcode, batch_name, total_calls, completed_calls, failed_calls, batch_status)
             SELECT $1 + n, $2, $3, 0, 0, 0, 'pending'
               FROM generate_series(0, $4 - 1) AS n",
        )
        .bind(first_batch_id)
        .bind(accountcode)
        .bind(&campaign.batch_name)
        .bind(batch_count as i32)
        .execute(&mut *tx)
        .await
        .context("while creating the batches")?;

        // Positions count the rows actually inserted, in file order, so batches are full
        // even where the DELETE above left gaps in `ord`. No ON CONFLICT: under the lock
        // the DELETE removed every number the campaign holds, and ON CONFLICT's
        // speculative insertion costs Postgres half as much again (measured on a million rows). A row a writer that
        // bypasses the lock added meanwhile fails the unique index, and the whole enqueue.
        let mut position: u64 = 0;
        let mut start: u64 = 0;
        while start < rows {
            let end = start + INSERT_CHUNK_ROWS;
            position += sqlx::query(
                "INSERT INTO local_call_queue
                        (phone_number, batch_id, custom_data, queue_status, retry_count, campaign_key)
                 SELECT phone_number,
                        $1 + (($2 + row_number() OVER (ORDER BY ord) - 1) / $3)::INTEGER,
                        custom_data, 'pending', 0, $4
                   FROM callbridge_enqueue
                  WHERE ord >= $5 AND ord < $6",
            )
            .bind(first_batch_id)
            .bind(position as i64)
            .bind(i64::from(batch_size))
            .bind(&campaign.key)
            .bind(start as i64)
            .bind(end as i64)
            .execute(&mut *tx)
            .await
            .context("while inserting into local_call_queue")?
            .rows_affected();
            progress(end.min(rows));
            start = end;
        }
        tx.commit().await.context("while committing")?;

        Ok(Stored {
            already_enqueued,
            enqueued: position,
            batches: batch_sizes(first_batch_id, position, batch_size),
        })
    }
}

/// The batches `rows` consecutive positions fill from `first_batch_id` on: full ones, and
/// the remainder in the last.
fn batch_sizes(first_batch_id: i32, rows: u64, batch_size: u32) -> Vec<(i32, u64)> {
    let size = u64::from(batch_size);
    (0..rows.div_ceil(size))
        .map(|index| (first_batch_id + index as i32, size.min(rows - index * size)))
        .collect()
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

    #[test]
    fn batches_are_full_but_the_last() {
        assert_eq!(
            batch_sizes(101, 1201, 500),
            [(101, 500), (102, 500), (103, 201)]
        );
        assert_eq!(batch_sizes(7, 1000, 1000), [(7, 1000)]);
        assert_eq!(batch_sizes(7, 0, 500), []);
    }

    #[test]
    fn copy_lines_escape_backslashes_and_write_null() {
        let mut out = Vec::new();
        append_copy_line(
            &mut out,
            0,
            KeptRow {
                line: 2,
                phone_number: "+447700900123",
                custom_data: Some(r#"{"a\\b":"x\"\n"}"#),
            },
        );
        append_copy_line(
            &mut out,
            1,
            KeptRow {
                line: 3,
                phone_number: "9876543210",
                custom_data: None,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0\t+447700900123\t{\"a\\\\\\\\b\":\"x\\\\\"\\\\n\"}\n1\t9876543210\t\\N\n"
        );
    }
}
