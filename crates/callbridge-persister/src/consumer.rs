//! Consuming `callbridge.persist`: deliveries gathered into batches (bounded size and
//! linger), up to `concurrency` batches stored at once, each in one transaction, poison
//! messages isolated and dead-lettered, and deliveries acknowledged once settled.
//!
//! Acknowledgement rule: a delivery is acknowledged only once its effect is
//! committed or it is confirmed in `callbridge.dead`. A crash anywhere before the ack
//! redelivers the batch; redelivered events are duplicates and change nothing. With
//! several batches in flight a later batch can commit before an earlier one, so a
//! `multiple` ack up to its last delivery could cover an uncommitted one:
//! [`AckTracker`] acknowledges only the settled prefix of the channel's deliveries.
//!
//! Concurrent batches need nothing more from the database than replicas do: each
//! transaction takes its locks in one global order (see [`crate::store`]), and a lost
//! race (deadlock, serialization failure) is retried.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use backon::BackoffBuilder;
use callbridge_runtime::amqp::{CLOSE_TIMEOUT, Reconnect, close_gracefully, run_reconnecting};
use callbridge_runtime::health::Readiness;
use callbridge_runtime::telemetry::PER_MESSAGE_SPANS;
use callbridge_runtime::telemetry::extract_context;
use callbridge_types::clock::SharedClock;
use callbridge_types::envelope::Envelope;
use callbridge_types::topology::PERSIST_QUEUE;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use opentelemetry::trace::TraceContextExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::dead_letter::DeadLetterPublisher;
use crate::error::StoreError;
use crate::failpoint::{self, Failpoint};
use crate::metrics::{self, DeadLetterReason, EventResult};
use crate::store::{self, IncomingEvent, StoredBatch};

/// Readiness condition: consuming from RabbitMQ.
pub(crate) const BROKER_CONDITION: &str = "broker";
/// Readiness condition: the last batch transaction could reach Postgres.
pub(crate) const DATABASE_CONDITION: &str = "database";

/// How often an idle subscription checks that it is not stalled. RabbitMQ 3.10 can lose
/// a quorum-queue subscription made while the queue elects a new leader (its node just
/// died): the channel stays open and nothing is ever delivered. A subscription that
/// holds nothing, received nothing, and sees messages waiting at two checks in a row is
/// stalled, and the consumer subscribes again on a fresh connection.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// How the consumer batches.
#[derive(Debug, Clone)]
pub(crate) struct BatchSettings {
    /// Unacknowledged deliveries the broker may push to this consumer.
    pub prefetch: u16,
    /// Deliveries per transaction at most.
    pub batch_size: usize,
    /// How long a batch waits for more deliveries after its first one.
    pub linger: Duration,
    /// Batches stored at once, each in its own transaction.
    pub concurrency: usize,
}

pub(crate) struct BatchConsumer {
    pub amqp_url: String,
    pub settings: BatchSettings,
    pub pool: PgPool,
    pub readiness: Readiness,
    /// Woken after each commit so the outbox relay publishes new outcomes at once.
    pub outbox_wakeup: std::sync::Arc<Notify>,
    /// When a redial is due is counted from this clock's now.
    pub clock: SharedClock,
}

/// How settling a batch ended.
enum Settled {
    /// Every delivery (these delivery tags) is committed or dead-lettered, and may be
    /// acknowledged.
    Done(Vec<u64>),
    /// Shutdown was requested while the batch waited for the database: nothing of it is
    /// acknowledged, and the broker redelivers it.
    StoppedWhileRetrying,
}

/// How one store attempt series ended.
enum Attempt {
    Stored(StoredBatch),
    /// The data of some message in the part cannot be stored.
    Refused(anyhow::Error),
    StoppedWhileRetrying,
}

/// One consumed delivery and, when it decoded, the event it carries.
struct Received {
    delivery: Delivery,
    /// Continues the ingress trace (`traceparent`); ends when the delivery is settled.
    span: tracing::Span,
    decoded: Result<IncomingEvent, String>,
}

impl BatchConsumer {
    /// Consumes until `shutdown`, reconnecting and re-subscribing with backoff whenever
    /// the connection, the channel or the subscription ends.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let settings = Reconnect::new(&self.amqp_url, "callbridge-persister")
            .reporting(&self.readiness, BROKER_CONDITION);
        run_reconnecting(settings, &shutdown, |connection| {
            self.consume(connection, &shutdown)
        })
        .await;
    }

    /// One subscription: returns `Ok` on shutdown, an error when the broker side ended.
    #[tracing::instrument(skip_all)]
    async fn consume(
        &self,
        connection: Arc<Connection>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        callbridge_runtime::amqp::declare_topology(&connection).await?;
        let channel = connection
            .create_channel()
            .await
            .context("while opening the consuming channel")?;
        channel
            // Per consumer, not global: quorum queues refuse a global prefetch.
            .basic_qos(self.settings.prefetch, BasicQosOptions { global: false })
            .await
            .context("while setting the consumer prefetch")?;
        let dead_letters = DeadLetterPublisher::open(&connection).await?;
        let mut deliveries = channel
            .basic_consume(
                PERSIST_QUEUE.into(),
                format!("callbridge-persister-{}", uuid::Uuid::new_v4().simple()).into(),
                // Manual acknowledgement (no_ack false): a message is acked only once
                // its effect is committed; not exclusive, so replicas share the queue.
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("while subscribing to {PERSIST_QUEUE}"))?;
        self.readiness.set_ready(BROKER_CONDITION);
        tracing::info!(queue = PERSIST_QUEUE, "consuming");

        let settings = &self.settings;
        let mut acks = AckTracker::default();
        let mut in_flight = FuturesUnordered::new();
        let mut batch: Vec<Received> = Vec::with_capacity(settings.batch_size);
        let mut linger_until = Instant::now();
        let mut stall_check =
            tokio::time::interval_at(Instant::now() + STALL_CHECK_INTERVAL, STALL_CHECK_INTERVAL);
        let mut delivered_since_check = false;
        let mut idle_checks_with_messages_waiting = 0;
        let mut ended = loop {
            let dispatch_at = if batch.len() >= settings.batch_size {
                Instant::now()
            } else {
                linger_until
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                Some(settled) = in_flight.next() => {
                    if let Err(error) = self.acknowledge(&channel, &mut acks, settled).await {
                        break Err(error);
                    }
                }
                // Deliveries already buffered are taken even after the linger: the linger
                // bounds waiting, not batching (this branch comes before the dispatch).
                next = deliveries.next(), if batch.len() < settings.batch_size => {
                    match receive(next) {
                        Ok(received) => {
                            delivered_since_check = true;
                            if batch.is_empty() {
                                linger_until = Instant::now() + settings.linger;
                            }
                            acks.received(received.delivery.delivery_tag);
                            batch.push(received);
                        }
                        Err(error) => break Err(error),
                    }
                }
                () = tokio::time::sleep_until(dispatch_at),
                    if !batch.is_empty() && in_flight.len() < settings.concurrency =>
                {
                    let full = std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(settings.batch_size),
                    );
                    in_flight.push(self.settle_batch(full, &dead_letters, shutdown));
                }
                _ = stall_check.tick() => {
                    let idle = !std::mem::take(&mut delivered_since_check)
                        && batch.is_empty()
                        && in_flight.is_empty();
                    if !idle {
                        idle_checks_with_messages_waiting = 0;
                        continue;
                    }
                    match messages_waiting(&channel).await {
                        Ok(0) => idle_checks_with_messages_waiting = 0,
                        Ok(waiting) => {
                            idle_checks_with_messages_waiting += 1;
                            if idle_checks_with_messages_waiting >= 2 {
                                break Err(anyhow::anyhow!(
                                    "the subscription to {PERSIST_QUEUE} delivered nothing for \
                                     {:?} while {waiting} messages waited; subscribing again",
                                    STALL_CHECK_INTERVAL * 2
                                ));
                            }
                        }
                        Err(error) => break Err(error),
                    }
                }
            }
        };

        // Stopping (shutdown or a broken subscription): no new batch starts, and every
        // batch in flight finishes, committed and acknowledged or left for redelivery. A
        // gathered batch not started yet is simply not acknowledged.
        while let Some(settled) = in_flight.next().await {
            let acknowledged = self.acknowledge(&channel, &mut acks, settled).await;
            ended = ended.and(acknowledged);
        }
        // Committed after a batch that was not: acknowledged one by one, so that only the
        // uncommitted deliveries come back.
        for tag in acks.take_settled() {
            if ended.is_err() {
                break;
            }
            ended = channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await
                .context("while acknowledging a stored batch");
        }
        // Prefetched deliveries not settled go back to the queue for others.
        close_gracefully(
            &connection,
            [&channel, dead_letters.channel()],
            CLOSE_TIMEOUT,
        )
        .await;
        ended
    }

    /// Acknowledges what a finished batch makes acknowledgeable: every delivery up to the
    /// first one not settled yet, with one `multiple` ack.
    async fn acknowledge(
        &self,
        channel: &Channel,
        acks: &mut AckTracker,
        settled: anyhow::Result<Settled>,
    ) -> anyhow::Result<()> {
        let Settled::Done(tags) = settled? else {
            return Ok(());
        };
        if let Some(up_to) = acks.settle(tags) {
            channel
                .basic_ack(up_to, BasicAckOptions { multiple: true })
                .await
                .context("while acknowledging a stored batch")?;
        }
        self.outbox_wakeup.notify_one();
        Ok(())
    }

    /// Stores what decodes and dead-letters what cannot be stored; returns the delivery
    /// tags that may then be acknowledged.
    #[tracing::instrument(skip_all, fields(batch_size = batch.len()))]
    async fn settle_batch(
        &self,
        batch: Vec<Received>,
        dead_letters: &DeadLetterPublisher,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Settled> {
        metrics::record_batch_size(batch.len());

        let mut storable = Vec::with_capacity(batch.len());
        for received in &batch {
            match &received.decoded {
                Ok(event) => storable.push((received, event)),
                // Undecodable: no database attempt can help, dead-letter it at once.
                Err(reason) => {
                    dead_letters
                        .publish(&received.delivery, reason)
                        .instrument(received.span.clone())
                        .await?;
                    tracing::warn!(
                        parent: &received.span,
                        message_id = received
                            .delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|id| id.as_str()),
                        %reason,
                        "dead-lettered an undecodable message"
                    );
                    // Logged first: whoever sees the count can rely on the log line being written.
                    metrics::record_dead_letter(DeadLetterReason::Undecodable);
                }
            }
        }

        let Some(poison) = self.store_isolating_poison(&storable, shutdown).await else {
            return Ok(Settled::StoppedWhileRetrying);
        };
        for (index, reason) in poison {
            let (received, event) = storable[index];
            dead_letters
                .publish(&received.delivery, &reason)
                .instrument(received.span.clone())
                .await?;
            tracing::warn!(
                parent: &received.span,
                message_id = event.envelope.event_id.as_str(),
                call_id = event.envelope.event.loggable_call_id().as_str(),
                %reason,
                "dead-lettered a message the database refuses"
            );
            // Logged first: whoever sees the count can rely on the log line being written.
            metrics::record_dead_letter(DeadLetterReason::Unstorable);
        }

        failpoint::hit(Failpoint::AfterCommitBeforeAck);
        Ok(Settled::Done(
            batch
                .iter()
                .map(|received| received.delivery.delivery_tag)
                .collect(),
        ))
    }

    /// Stores `items`, splitting the batch in halves whenever a transaction fails
    /// because of some message's data, until each failing message stands alone. Returns
    /// the failing messages (index into `items`) with their reason; every other message
    /// is committed. `None` when shutdown came while waiting for the database.
    async fn store_isolating_poison(
        &self,
        items: &[(&Received, &IncomingEvent)],
        shutdown: &CancellationToken,
    ) -> Option<Vec<(usize, String)>> {
        let mut poison = Vec::new();
        let mut pending: Vec<Range<usize>> = Vec::new();
        if !items.is_empty() {
            pending.push(0..items.len());
        }
        while let Some(range) = pending.pop() {
            let part = &items[range.clone()];
            match self.store_retrying(part, shutdown).await {
                Attempt::Stored(stored) => record_stored(&stored),
                Attempt::StoppedWhileRetrying => return None,
                Attempt::Refused(error) if range.len() == 1 => {
                    poison.push((range.start, format!("{error:#}")));
                }
                Attempt::Refused(_) => {
                    let middle = range.start + range.len() / 2;
                    // Popped last-in first-out: the first half is stored first.
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
        }
        Some(poison)
    }

    /// Stores `part` in one transaction, retrying while the database is unavailable (not
    /// ready meanwhile) or the transaction lost a race.
    async fn store_retrying(
        &self,
        part: &[(&Received, &IncomingEvent)],
        shutdown: &CancellationToken,
    ) -> Attempt {
        let events: Vec<&IncomingEvent> = part.iter().map(|(_, event)| *event).collect();
        // Each event's trace gets the database write as a span; the statements' own spans
        // sit under the first one's.
        let db_spans: Vec<tracing::Span> = part
            .iter()
            .map(|(received, _)| {
                tracing::info_span!(
                    target: PER_MESSAGE_SPANS,
                    parent: &received.span,
                    "db.persist_batch",
                    otel.kind = "client",
                    db.system = "postgresql",
                    batch_size = part.len(),
                )
            })
            .collect();
        let mut backoff = crate::database_backoff().build();
        loop {
            let attempt = store::store_batch(&self.pool, &events, self.clock.now())
                .instrument(db_spans[0].clone())
                .await;
            match attempt {
                Ok(stored) => {
                    self.readiness.set_ready(DATABASE_CONDITION);
                    return Attempt::Stored(stored);
                }
                Err(StoreError::Message(error)) => {
                    // The database answered: it is reachable, whatever the data.
                    self.readiness.set_ready(DATABASE_CONDITION);
                    return Attempt::Refused(error);
                }
                Err(StoreError::Conflict(error)) => {
                    metrics::record_store_retry("conflict");
                    tracing::info!(
                        error = format!("{error:#}"),
                        "batch transaction lost a race; retrying"
                    );
                }
                Err(StoreError::Transient(error)) => {
                    metrics::record_store_retry("unavailable");
                    self.readiness
                        .set_not_ready(DATABASE_CONDITION, "the database is unavailable; retrying");
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "batch transaction failed; retrying the same batch"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return Attempt::StoppedWhileRetrying,
                    }
                }
            }
        }
    }
}

/// Which deliveries of one channel may be acknowledged: those settled (committed or
/// dead-lettered) with no unsettled delivery before them. Delivery tags grow with every
/// delivery on a channel, and a `multiple` ack settles every outstanding one up to its
/// tag, so an ack may never reach past the first delivery still in a batch in flight.
#[derive(Debug, Default)]
struct AckTracker {
    /// Received and not settled yet: in a batch being gathered or stored.
    unsettled: BTreeSet<u64>,
    /// Settled but not acknowledged yet, because an unsettled delivery comes before.
    settled: BTreeSet<u64>,
}

impl AckTracker {
    fn received(&mut self, tag: u64) {
        self.unsettled.insert(tag);
    }

    /// Records `tags` as settled; returns the tag to acknowledge with `multiple` (every
    /// settled delivery before the first unsettled one), if that covers any new one.
    fn settle(&mut self, tags: impl IntoIterator<Item = u64>) -> Option<u64> {
        for tag in tags {
            self.unsettled.remove(&tag);
            self.settled.insert(tag);
        }
        let up_to = match self.unsettled.first() {
            Some(first_unsettled) => self.settled.range(..first_unsettled).next_back(),
            None => self.settled.last(),
        }
        .copied()?;
        self.settled = self.settled.split_off(&(up_to + 1));
        Some(up_to)
    }

    /// The settled deliveries a `multiple` ack cannot reach (an unsettled one comes
    /// before them), to acknowledge one by one when consuming stops.
    fn take_settled(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.settled)
    }
}

fn record_stored(stored: &StoredBatch) {
    let committed_at = chrono::Utc::now();
    metrics::count_events(EventResult::Stored, stored.stored.len());
    metrics::count_events(EventResult::Duplicate, stored.duplicates);
    for received_at in &stored.stored {
        metrics::record_end_to_end(*received_at, committed_at);
    }
    for (status, duration) in &stored.outcomes {
        metrics::record_outcome(status, *duration);
    }
    for (outcome, created) in &stored.redials {
        metrics::count_redials(outcome, *created);
    }
}

/// Turns what the consumer stream yielded into a delivery, or the reason the
/// subscription ended.
fn receive(next: Option<lapin::Result<Delivery>>) -> anyhow::Result<Received> {
    let delivery = match next {
        Some(Ok(delivery)) => delivery,
        Some(Err(error)) => return Err(error).context("while receiving from the persist queue"),
        None => bail!("the broker cancelled the subscription to {PERSIST_QUEUE}"),
    };
    let parent = delivery
        .properties
        .headers()
        .as_ref()
        .map(extract_context)
        .unwrap_or_default();
    let trace_id = {
        let span_context = parent.span().span_context().clone();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    };
    let span = tracing::info_span!(
        target: PER_MESSAGE_SPANS,
        "persist_event",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.source.name = PERSIST_QUEUE,
        messaging.message.id = tracing::field::Empty,
        call_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
    );
    // An invalid parent (no traceparent) leaves the span as the root of a new trace.
    let _ = span.set_parent(parent);
    let decoded = match Envelope::decode(&delivery.data) {
        Ok(envelope) => {
            span.record("messaging.message.id", envelope.event_id.as_str());
            span.record("call_id", envelope.event.loggable_call_id().as_str());
            span.record("event_type", envelope.event.event_type.as_str());
            Ok(IncomingEvent { envelope, trace_id })
        }
        Err(error) => Err(format!("undecodable envelope: {error}")),
    };
    Ok(Received {
        delivery,
        span,
        decoded,
    })
}

/// Messages ready (not held by any consumer) in the persist queue.
async fn messages_waiting(channel: &Channel) -> anyhow::Result<u32> {
    let declared = channel
        .queue_declare(
            PERSIST_QUEUE.into(),
            // Passive: only look.
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("while counting the messages waiting in {PERSIST_QUEUE}"))?;
    Ok(declared.message_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker_with(tags: std::ops::RangeInclusive<u64>) -> AckTracker {
        let mut acks = AckTracker::default();
        tags.for_each(|tag| acks.received(tag));
        acks
    }

    #[test]
    fn a_later_batch_is_not_acknowledged_while_an_earlier_one_is_in_flight() {
        let mut acks = tracker_with(1..=9);
        // Batches [1, 2, 3], [4, 5, 6] and [7, 8, 9]: the last two commit first.
        assert_eq!(acks.settle([7, 8, 9]), None);
        assert_eq!(acks.settle([4, 5, 6]), None);
        assert_eq!(acks.settle([1, 2, 3]), Some(9));
        assert_eq!(acks.take_settled(), BTreeSet::new());
    }

    #[test]
    fn the_settled_prefix_is_acknowledged_up_to_the_first_unsettled_delivery() {
        let mut acks = tracker_with(1..=9);
        assert_eq!(acks.settle([1, 2, 3]), Some(3));
        assert_eq!(acks.settle([7, 8, 9]), None);
        // 10 and 11 arrive (a batch being gathered) while 4–6 are stored.
        acks.received(10);
        acks.received(11);
        assert_eq!(acks.settle([4, 5, 6]), Some(9));
        assert_eq!(acks.settle([10, 11]), Some(11));
    }

    #[test]
    fn what_settled_after_an_unsettled_delivery_is_left_to_acknowledge_alone() {
        let mut acks = tracker_with(1..=6);
        // [1, 2] stopped while retrying (never settles), [3, 4] committed.
        assert_eq!(acks.settle([3, 4]), None);
        assert_eq!(acks.take_settled(), BTreeSet::from([3, 4]));
        // 5 and 6 were being gathered: neither settled nor acknowledged.
        assert_eq!(acks.take_settled(), BTreeSet::new());
    }
}
