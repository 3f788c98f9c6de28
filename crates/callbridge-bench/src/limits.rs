//! Stage 1: the raw limits of this machine's broker and database, which the services'
//! figures are read against.
//!
//! - 1a: pipelined publish-with-confirm (lapin) of the ingress's real messages into the
//!   quorum queue exactly as `declare_topology` declares it;
//! - 1b: batched upsert (unnest arrays, `ON CONFLICT (call_id) DO UPDATE`) of the rows
//!   those callbacks make, into a migrated database.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use callbridge_ingress::message::CallbackMessage;
use callbridge_runtime::amqp::{connect, declare_topology, open_confirmed_channel};
use callbridge_types::event::CallbackEvent;
use callbridge_types::topology::PERSIST_QUEUE;
use futures::{StreamExt, TryStreamExt};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::stats::per_second;

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
    declare_topology(&setup).await?;
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
