//! Stage 1: the raw limits of this machine's broker and database, which the services'
//! figures are read against.
//!
//! - 1a: pipelined publish-with-confirm (lapin) of the ingress's real messages into the
//!   quorum queue exactly as `declare_topology` declares it;
//! - 1b: batched upsert (unnest arrays, `ON CONFLICT (call_id) DO UPDATE`) of the rows
//!   those callbacks make, into a migrated database;
//! - 1d: a raw `COPY local_call_queue … FROM STDIN` of the stage-5 campaign's rows;
//! - 1c: the submitter's own claim statement and its mark-submitted UPDATE on those rows,
//!   batch by batch, with no HTTP in between.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use callbridge_ingress::message::CallbackMessage;
use callbridge_runtime::amqp::{connect, declare_topology, open_confirmed_channel};
use callbridge_submitter::store::{ClaimParams, ClaimedRow, begin_claim, run_claim_statement};
use callbridge_types::erasure::HmacPads;
use callbridge_types::event::CallbackEvent;
use callbridge_types::topology::PERSIST_QUEUE;
use futures::{StreamExt, TryStreamExt};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::stats::per_second;

/// The erasure key the bench's services get, and its HMAC blocks as the submitter binds
/// them in its claim.
pub const BENCH_ERASURE_KEY: &str = "callbridge-bench-erasure-key";
pub static ERASURE_PADS: std::sync::LazyLock<HmacPads> =
    std::sync::LazyLock::new(|| HmacPads::new(BENCH_ERASURE_KEY.as_bytes()));

/// How many items took how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub count: usize,
    pub seconds: f64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        per_second(self.count, self.seconds)
    }
}

/// How 1a publishes: channels on one connection, each with a window of unconfirmed
/// messages (the pipelining).
#[derive(Debug, Clone, Copy)]
pub struct PublishShape {
    pub channels: usize,
    pub in_flight_per_channel: usize,
}

/// 1a: publishes every message (persistent, mandatory, confirmed) to the callbacks
/// exchange, which routes them into `callbridge.persist`, and returns the rate from the
/// first publish to the last confirm. Fails on a nack, a returned message, or when the
/// queue does not hold every confirmed message afterwards.
#[tracing::instrument(skip_all, fields(messages = messages.len(), channels = shape.channels))]
pub async fn publish_confirm_limit(
    amqp_url: &str,
    messages: &[CallbackMessage],
    shape: PublishShape,
) -> anyhow::Result<Throughput> {
    let connection = connect(amqp_url, "callbridge-bench-publish-limit").await?;
    let setup = connection
        .create_channel()
        .await
        .context("while opening the topology channel")?;
    declare_topology(&connection).await?;
    let before = queued_messages(&setup).await?;
    let mut channels = Vec::with_capacity(shape.channels);
    for _ in 0..shape.channels.max(1) {
        channels.push(open_confirmed_channel(&connection).await?);
    }
    let per_channel = messages.len().div_ceil(channels.len()).max(1);

    let started = Instant::now();
    futures::future::try_join_all(
        channels
            .iter()
            .zip(messages.chunks(per_channel))
            .map(|(channel, chunk)| publish_pipelined(channel, chunk, shape.in_flight_per_channel)),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();

    let queued = queued_messages(&setup).await? - before;
    ensure!(
        queued == messages.len(),
        "the broker confirmed {} messages but {PERSIST_QUEUE} gained {queued}",
        messages.len()
    );
    close(connection).await;
    Ok(Throughput {
        count: messages.len(),
        seconds,
    })
}

/// Publishes `messages` on one confirm-mode channel keeping at most `window` unconfirmed.
async fn publish_pipelined(
    channel: &Channel,
    messages: &[CallbackMessage],
    window: usize,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);
    for message in messages {
        if pending.len() >= window.max(1)
            && let Some(confirm) = pending.pop_front()
        {
            expect_ack(confirm.await)?;
        }
        let confirm = channel
            .basic_publish(
                message.exchange().into(),
                message.routing_key.as_str().into(),
                // Mandatory, as the ingress publishes: an unroutable message comes back
                // instead of being confirmed and dropped.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties(),
            )
            .await
            .context("while publishing")?;
        pending.push_back(confirm);
    }
    for confirm in pending {
        expect_ack(confirm.await)?;
    }
    Ok(())
}

fn expect_ack(confirmation: lapin::Result<Confirmation>) -> anyhow::Result<()> {
    match confirmation.context("while waiting for a publisher confirm")? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => bail!("the broker returned a message as unroutable"),
        Confirmation::Nack(_) => bail!("the broker nacked a message"),
        Confirmation::NotRequested => bail!("the channel is not in confirm mode"),
    }
}

/// Messages ready in `callbridge.persist`.
pub async fn queued_messages(channel: &Channel) -> anyhow::Result<usize> {
    let queue = channel
        .queue_declare(
            PERSIST_QUEUE.into(),
            // Passive: only asks for the counts, never (re)declares.
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("while reading the depth of {PERSIST_QUEUE}"))?;
    Ok(queue.message_count() as usize)
}

async fn close(connection: Connection) {
    // Best effort: the vhost is deleted after the run anyway.
    let _ = connection.close(200, "benchmark done".into()).await;
}

/// How 1b writes: rows per statement (one statement is one transaction, one commit)
/// and statements in flight at once, each on its own connection. With more than one
/// connection, two batches touching one call may commit in either order: the limit
/// measures what Postgres sustains, not the persister's ordering rules.
#[derive(Debug, Clone, Copy)]
pub struct UpsertShape {
    pub batch_rows: usize,
    pub connections: usize,
}

/// One row per event, upserted as the rows arrive: a new call inserts, a later event
/// of it updates status and the fields it carries. Callers pass events in which no
/// batch names a call twice (see [`crate::workload`]).
const UPSERT_CALL_LOGS: &str = r#"
INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status, disposition,
                       duration, start_time, end_time, recording_url, server_code,
                       error_message, custom_data)
SELECT call_id, accountcode, batch_id, phone_number, call_status, disposition,
       coalesce(duration, 0), start_time, end_time, recording_url, server_code,
       error_message, custom_data
  FROM unnest($1::varchar[], $2::varchar[], $3::int[], $4::varchar[], $5::varchar[],
              $6::varchar[], $7::int[], $8::timestamp[], $9::timestamp[], $10::text[],
              $11::varchar[], $12::text[], $13::jsonb[])
       AS r(call_id, accountcode, batch_id, phone_number, call_status, disposition, duration,
            start_time, end_time, recording_url, server_code, error_message, custom_data)
ON CONFLICT (call_id) DO UPDATE SET
    call_status   = EXCLUDED.call_status,
    disposition   = coalesce(EXCLUDED.disposition, call_logs.disposition),
    duration      = coalesce(EXCLUDED.duration, call_logs.duration),
    start_time    = coalesce(EXCLUDED.start_time, call_logs.start_time),
    end_time      = coalesce(EXCLUDED.end_time, call_logs.end_time),
    recording_url = coalesce(EXCLUDED.recording_url, call_logs.recording_url),
    server_code   = coalesce(EXCLUDED.server_code, call_logs.server_code),
    error_message = coalesce(EXCLUDED.error_message, call_logs.error_message),
    custom_data   = coalesce(EXCLUDED.custom_data, call_logs.custom_data),
    updated_at    = CURRENT_TIMESTAMP
"#;

/// 1b: upserts one `call_logs` row per event in batches and returns rows per second
/// from the first statement to the last commit.
#[tracing::instrument(skip_all, fields(rows = events.len(), batch_rows = shape.batch_rows))]
pub async fn batched_upsert_limit(
    pool: &PgPool,
    events: &[CallbackEvent],
    shape: UpsertShape,
) -> anyhow::Result<Throughput> {
    let started = Instant::now();
    futures::stream::iter(events.chunks(shape.batch_rows.max(1)))
        .map(|batch| upsert_batch(pool, batch))
        .buffer_unordered(shape.connections.max(1))
        .try_collect::<()>()
        .await?;
    Ok(Throughput {
        count: events.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn upsert_batch(pool: &PgPool, batch: &[CallbackEvent]) -> anyhow::Result<()> {
    let column = |f: fn(&CallbackEvent) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
    sqlx::query(UPSERT_CALL_LOGS)
        .bind(column(|e| Some(e.call_id.clone())))
        .bind(column(|e| Some(e.accountcode.clone())))
        .bind(batch.iter().map(|e| e.batch_id).collect::<Vec<_>>())
        .bind(column(|e| Some(e.phone_number.clone())))
        .bind(column(|e| {
            e.call_status.as_ref().map(|s| s.as_str().to_owned())
        }))
        .bind(column(|e| e.disposition.clone()))
        .bind(batch.iter().map(|e| e.duration).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.start_time).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.end_time).collect::<Vec<_>>())
        .bind(column(|e| e.recording_url.clone()))
        .bind(column(|e| e.server_code.clone()))
        .bind(column(|e| e.error_message.clone()))
        .bind(
            batch
                .iter()
                .map(|e| e.custom_data.clone().map(Json))
                .collect::<Vec<_>>(),
        )
        .execute(pool)
        .await
        .context("while upserting a batch into call_logs")?;
    Ok(())
}

/// 1d: COPYs `lines` (COPY text format for `columns`) into `local_call_queue` in chunks
/// of about 1 MiB on one connection, as `callbridge enqueue` sends them, and returns rows
/// per second from the COPY statement to its end. Fails unless `rows` rows were copied.
#[tracing::instrument(skip_all, fields(rows = rows))]
pub async fn queue_copy_limit(
    pool: &PgPool,
    columns: &str,
    lines: &[u8],
    rows: usize,
) -> anyhow::Result<Throughput> {
    const CHUNK_BYTES: usize = 1 << 20;
    let mut conn = pool
        .acquire()
        .await
        .context("while taking a connection for COPY")?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!("COPY local_call_queue ({columns}) FROM STDIN"))
        .await
        .context("while starting COPY")?;
    for chunk in chunks_at_lines(lines, CHUNK_BYTES) {
        copy.send(chunk).await.context("while sending COPY data")?;
    }
    let copied = copy.finish().await.context("while finishing COPY")?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(copied == rows as u64, "COPY stored {copied} of {rows} rows");
    Ok(Throughput {
        count: rows,
        seconds,
    })
}

/// `bytes` cut after a newline once each piece reaches `size`, as enqueue's reader cuts
/// its chunks (COPY accepts any cut, but this keeps the messages alike).
fn chunks_at_lines(bytes: &[u8], size: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let end = match rest
            .get(size..)
            .and_then(|tail| tail.iter().position(|&b| b == b'\n'))
        {
            Some(newline) => size + newline + 1,
            None => rest.len(),
        };
        let (chunk, tail) = rest.split_at(end);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// How 1c claims and marks, mirroring the submitter: claim loops running at once (its
/// rounds), the rows each claim asks for, batches of one claim marked at once, the lease.
#[derive(Debug, Clone, Copy)]
pub struct ClaimShape {
    pub rounds: usize,
    pub claim_limit: u32,
    pub batches_in_flight: usize,
    pub lease: Duration,
}

/// 1c: claims due rows with the submitter's own claim step (`run_claim_statement`, in a
/// transaction, bound as `claim_due_rows` binds it) and marks each claimed batch submitted with its
/// `MARK_SUBMITTED_SQL` (what `record_submitted` runs, without its call_batches refresh), until a
/// claim finds nothing, in `shape.rounds` loops at once. Returns rows per second from the
/// first claim to the last mark's commit. Fails unless exactly `expected` rows were
/// claimed once each and all are `submitted` afterwards.
#[tracing::instrument(skip_all, fields(expected = expected, rounds = shape.rounds))]
pub async fn claim_mark_limit(
    pool: &PgPool,
    expected: usize,
    shape: ClaimShape,
) -> anyhow::Result<Throughput> {
    let started = Instant::now();
    let marked = futures::future::try_join_all(
        (0..shape.rounds.max(1)).map(|round| claim_and_mark(pool, round, shape)),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let marked: usize = marked.into_iter().sum();
    ensure!(
        marked == expected,
        "the claims marked {marked} rows submitted, expected {expected}"
    );
    let submitted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM local_call_queue WHERE queue_status = 'submitted'",
    )
    .fetch_one(pool)
    .await
    .context("while counting submitted rows")?;
    ensure!(
        submitted as usize == expected,
        "{submitted} rows are submitted after the claims, expected {expected}"
    );
    Ok(Throughput {
        count: expected,
        seconds,
    })
}

/// One claim loop: claim, mark the claim's batches (`batches_in_flight` at once), again
/// until a claim returns nothing. Returns the rows marked.
async fn claim_and_mark(pool: &PgPool, round: usize, shape: ClaimShape) -> anyhow::Result<usize> {
    let owner = format!("callbridge-bench-claim-{round}");
    let mut marked = 0;
    loop {
        // The claim step exactly as the submitter runs it, in a transaction of its own,
        // with the default region's calling code it binds (IN's) and a key's HMAC blocks.
        let mut tx = begin_claim(pool).await?;
        let rows = run_claim_statement(
            &mut tx,
            &ClaimParams {
                owner: &owner,
                limit: shape.claim_limit,
                lease: shape.lease,
                now: chrono::Utc::now(),
                home_calling_code: Some(91),
                erased_opt_outs: Some(&ERASURE_PADS),
            },
        )
        .await?;
        tx.commit().await.context("while committing a claim")?;
        if rows.is_empty() {
            return Ok(marked);
        }
        let batches = group_by_batch(&rows)?;
        let counts: Vec<u64> = futures::stream::iter(batches.into_values())
            .map(|ids| {
                let owner = &owner;
                async move {
                    sqlx::query(callbridge_submitter::store::MARK_SUBMITTED_SQL)
                        .bind(&ids)
                        .bind(owner)
                        .execute(pool)
                        .await
                        .context("while marking local_call_queue rows submitted")
                        .map(|done| done.rows_affected())
                }
            })
            .buffer_unordered(shape.batches_in_flight.max(1))
            .try_collect()
            .await?;
        let batch_marked: u64 = counts.into_iter().sum();
        ensure!(
            batch_marked as usize == rows.len(),
            "claimed {} rows but marked {batch_marked}",
            rows.len()
        );
        marked += rows.len();
    }
}

/// The claimed rows' ids by batch, as the submitter groups them before sending.
fn group_by_batch(rows: &[ClaimedRow]) -> anyhow::Result<BTreeMap<i32, Vec<i32>>> {
    let mut batches: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for row in rows {
        let Some(batch_id) = row.batch_id else {
            bail!("claimed row {} has no batch_id", row.id);
        };
        batches.entry(batch_id).or_default().push(row.id);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_chunks_end_at_line_ends_and_keep_every_byte() {
        let text = b"aaaa\nbb\ncccccc\nd\n";
        let chunks = chunks_at_lines(text, 3);
        assert_eq!(chunks, [&b"aaaa\n"[..], b"bb\ncccccc\n", b"d\n"]);
        assert_eq!(chunks.concat(), text);
        assert_eq!(chunks_at_lines(text, 1 << 20), [&text[..]]);
        assert!(chunks_at_lines(b"", 3).is_empty());
    }

    fn claimed(id: i32, batch_id: Option<i32>) -> ClaimedRow {
        ClaimedRow {
            id,
            batch_id,
            phone_number: "9700000000".into(),
            custom_data: None,
            retry_count: 0,
            last_error: None,
            previous_attempt_started_at: None,
            campaign_id: None,
            time_zone: None,
            paced_slot_at: None,
            suppressed: false,
            phone_e164: None,
            max_attempts_per_day: None,
            held_until: None,
        }
    }

    /// 1d then 1c on a real database: every row copied, then claimed and marked once.
    /// (How fast is the benchmark's business, not the test's.)
    #[tokio::test]
    async fn copy_then_claim_and_mark_submits_every_row_exactly_once() {
        let env = crate::RunEnv::new(4, None).await.unwrap();
        let rows = 1_250;
        let lines = crate::campaign::copy_lines(rows, 1, "t");
        let copied = queue_copy_limit(&env.pool, crate::campaign::QUEUE_COPY_COLUMNS, &lines, rows)
            .await
            .unwrap();
        assert_eq!(copied.count, rows);
        let shape = ClaimShape {
            rounds: 2,
            claim_limit: 500,
            batches_in_flight: 4,
            lease: Duration::from_secs(120),
        };

        let drained = claim_mark_limit(&env.pool, rows, shape).await.unwrap();

        assert_eq!(drained.count, rows);
        let (submitted, distinct, leased, stamped): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE queue_status = 'submitted'),
                    count(DISTINCT phone_number),
                    count(*) FILTER (WHERE lease_owner IS NOT NULL),
                    count(*) FILTER (WHERE submitted_at IS NOT NULL AND attempt_started_at IS NOT NULL)
               FROM local_call_queue",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(
            (submitted, distinct, leased, stamped),
            (1_250, 1_250, 0, 1_250)
        );
        assert!(
            claim_mark_limit(&env.pool, rows, shape).await.is_err(),
            "an empty queue is not a drained one"
        );
    }

    #[test]
    fn claimed_rows_are_marked_batch_by_batch() {
        let batches = group_by_batch(&[
            claimed(1, Some(7)),
            claimed(2, Some(8)),
            claimed(3, Some(7)),
        ])
        .unwrap();
        assert_eq!(batches, BTreeMap::from([(7, vec![1, 3]), (8, vec![2])]));
        assert!(group_by_batch(&[claimed(4, None)]).is_err());
    }
}
