//! Writing a campaign into `local_call_queue` and `call_batches` in one transaction:
//! COPY into a temporary table, then set-based INSERTs, so a million rows take seconds.

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use super::input::CampaignRow;

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

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

/// Inserts the campaign's rows that are not in the queue yet, in new batches of at most
/// `batch_size` numbers, in file order. All or nothing.
#[tracing::instrument(skip_all, fields(rows = rows.len(), batch_size))]
pub async fn store_campaign(
    conn: &mut PgConnection,
    campaign: &CampaignIdentity,
    accountcode: &str,
    rows: &[CampaignRow],
    batch_size: u32,
    progress: &dyn Fn(u64),
) -> anyhow::Result<Stored> {
    let mut tx = conn
        .begin()
        .await
        .context("while starting the transaction")?;

    // Session-private staging table, gone at commit: COPY cannot do ON CONFLICT itself.
    sqlx::query(
        "CREATE TEMP TABLE callbridge_enqueue (
             ord BIGINT NOT NULL,
             phone_number VARCHAR(20) NOT NULL,
             custom_data JSONB
         ) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await
    .context("while creating the staging table")?;

    let mut copy = tx
        .copy_in_raw(
            "COPY callbridge_enqueue (ord, phone_number, custom_data) FROM STDIN (FORMAT csv)",
        )
        .await
        .context("while starting COPY")?;
    let mut chunk = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
    for (ord, row) in rows.iter().enumerate() {
        append_copy_line(&mut chunk, ord, row);
        if chunk.len() >= COPY_CHUNK_BYTES {
            copy.send(std::mem::take(&mut chunk))
                .await
                .context("while sending COPY data")?;
            progress(ord as u64 + 1);
        }
    }
    copy.send(chunk).await.context("while sending COPY data")?;
    copy.finish().await.context("while finishing COPY")?;
    progress(rows.len() as u64);
    // A fresh temp table has no statistics; without them the planner joins a million
    // staged rows against the queue as if there were a handful.
    sqlx::query("ANALYZE callbridge_enqueue")
        .execute(&mut *tx)
        .await
        .context("while analysing the staging table")?;

    // One enqueue at a time, from here to commit: the campaign check below and the batch
    // id allocation must not interleave with another enqueue's (a second run of the same
    // campaign would otherwise add empty batches, two campaigns could pick the same ids).
    // An advisory lock, not a table lock: persister and submitter keep writing meanwhile.
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

    let new_rows = rows.len() as u64 - already_enqueued;
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
    let first_batch_id = highest + 1;
    let last_batch_id = highest + batch_count as i64;
    if last_batch_id > i64::from(i32::MAX) {
        bail!(
            "batch ids would pass {} (the API's 32-bit limit): the highest batch id in call_batches is {highest}",
            i32::MAX
        );
    }
    let first_batch_id = first_batch_id as i32;

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

    let enqueued = sqlx::query(
        "INSERT INTO local_call_queue
                (phone_number, batch_id, custom_data, queue_status, retry_count, campaign_key)
         SELECT phone_number,
                $1 + ((row_number() OVER (ORDER BY ord) - 1) / $2)::INTEGER,
                custom_data, 'pending', 0, $3
           FROM callbridge_enqueue
         ON CONFLICT (campaign_key, phone_number) WHERE campaign_key IS NOT NULL DO NOTHING",
    )
    .bind(first_batch_id)
    .bind(i64::from(batch_size))
    .bind(&campaign.key)
    .execute(&mut *tx)
    .await
    .context("while inserting into local_call_queue")?
    .rows_affected();
    if enqueued != new_rows {
        // Impossible while every campaign writer holds the lock above; refuse rather than
        // leave a batch with fewer numbers than planned.
        bail!("expected to enqueue {new_rows} numbers but inserted {enqueued}; nothing was stored");
    }

    let batches: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT batch_id, count(*) FROM local_call_queue
          WHERE batch_id BETWEEN $1 AND $2 AND campaign_key = $3
          GROUP BY batch_id ORDER BY batch_id",
    )
    .bind(first_batch_id)
    .bind(last_batch_id as i32)
    .bind(&campaign.key)
    .fetch_all(&mut *tx)
    .await
    .context("while counting the new batches")?;
    tx.commit().await.context("while committing")?;

    Ok(Stored {
        already_enqueued,
        enqueued,
        batches: batches
            .into_iter()
            .map(|(batch_id, count)| (batch_id, count as u64))
            .collect(),
    })
}

/// One line of COPY's CSV format. The phone number is digits and an optional `+` (see
/// `phone.rs`), so only the JSON needs quoting; an empty unquoted field is NULL.
fn append_copy_line(out: &mut Vec<u8>, ord: usize, row: &CampaignRow) {
    out.extend_from_slice(ord.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(row.phone_number.as_bytes());
    out.push(b',');
    if let Some(json) = &row.custom_data {
        out.push(b'"');
        out.extend_from_slice(json.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    }
    out.push(b'\n');
}
