//! After the run: the simulator's ground truth against what callbridge stored.
//!
//! - every acknowledged callback is in `call_events`, once;
//! - every call whose terminal callback was acknowledged is in `call_logs` with the
//!   simulator's outcome, and no other call is;
//! - each batch's counters equal its `call_logs` rows and the simulator's numbers, and a
//!   batch whose calls all ended is `completed`;
//! - every enqueued number was accepted by the simulator exactly once;
//! - nothing was dead-lettered, nothing is left in `callbridge.persist`, every outcome
//!   in the outbox was published.
//!
//! [`reconcile`] is pure, so its verdicts are tested on hand-made inputs; [`snapshot`]
//! reads the database and the broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use callbridge_sim::{CallState, GroundTruth};
use callbridge_types::status::{BatchCount, CallStatus};
use callbridge_types::topology::{DEAD_QUEUE, PERSIST_QUEUE};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::PgPool;

/// How many examples of each problem the report lists.
const EXAMPLES: usize = 5;

/// What callbridge stored, as the reconciliation needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// `call_events` rows per `(call_id, event_type)`.
    pub events: HashMap<(String, String), u32>,
    /// `call_logs`: call id → (batch id, status).
    pub call_logs: HashMap<String, (Option<i32>, String)>,
    pub batches: BTreeMap<i32, BatchRow>,
    /// `local_call_queue` rows per batch: `(phone_number, queue_status)`.
    pub queue: BTreeMap<i32, Vec<(String, String)>>,
    /// Outbox rows not yet published to `callbridge.outcomes`.
    pub unpublished_outcomes: u64,
    /// Messages in `callbridge.dead`.
    pub dead_lettered: u64,
    /// Messages still in `callbridge.persist` (ready, not yet consumed).
    pub persist_backlog: u64,
}

/// One `call_batches` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchRow {
    pub total_calls: i32,
    pub completed_calls: i32,
    pub failed_calls: i32,
    pub batch_status: String,
}

/// The verdict: every figure of the report's table, and examples of each problem.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciliation {
    pub callbacks_acknowledged: u64,
    pub callbacks_stored: u64,
    /// Acknowledged by the ingress (2xx) but not in `call_events`.
    pub callbacks_lost: u64,
    /// `(call_id, event_type)` pairs with more than one `call_events` row.
    pub events_stored_twice: u64,
    /// Callbacks the simulator stopped retrying without a 2xx.
    pub callbacks_given_up: u64,
    /// Duplicate callbacks the simulator sent (and the ingress acknowledged).
    pub duplicates_sent: u64,
    pub calls: u64,
    pub calls_reordered: u64,
    /// Calls with an acknowledged terminal callback whose `call_logs` row is missing or
    /// has another status; plus `call_logs` rows of calls the simulator never placed.
    pub call_log_mismatches: u64,
    /// Batches whose `call_batches` counters or status disagree with `call_logs` or the
    /// simulator.
    pub counter_mismatches: u64,
    pub batches: u64,
    pub numbers_enqueued: u64,
    pub numbers_accepted: u64,
    /// Numbers the simulator accepted more than once in their batch (a person dialled
    /// twice).
    pub numbers_accepted_twice: u64,
    /// Queue rows not `submitted`, or `submitted` but never accepted by the simulator.
    pub numbers_not_submitted: u64,
    pub dead_lettered: u64,
    pub persist_backlog: u64,
    pub unpublished_outcomes: u64,
    /// A few examples per problem (call ids and batch ids; never phone numbers).
    pub examples: Vec<String>,
}

impl Reconciliation {
    /// Every check that failed, one line each; empty when the run is clean.
    pub fn problems(&self) -> Vec<String> {
        let checks = [
            (self.callbacks_lost, "acknowledged callbacks lost"),
            (self.events_stored_twice, "callbacks stored twice"),
            (self.callbacks_given_up, "callbacks the sender gave up on"),
            (self.call_log_mismatches, "call_logs mismatches"),
            (self.counter_mismatches, "call_batches counter mismatches"),
            (self.numbers_accepted_twice, "numbers accepted twice"),
            (
                self.numbers_not_submitted,
                "numbers not submitted exactly once",
            ),
            (self.dead_lettered, "messages dead-lettered"),
            (self.persist_backlog, "messages left in callbridge.persist"),
            (self.unpublished_outcomes, "outcomes never published"),
        ];
        let mut problems: Vec<String> = checks
            .into_iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect();
        if self.callbacks_acknowledged == 0 {
            problems.push("no callback was acknowledged: the run proved nothing".to_owned());
        }
        problems
    }

    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }
}

/// Compares the ground truth with what was stored.
pub fn reconcile(truth: &GroundTruth, stored: &Stored) -> Reconciliation {
    let mut verdict = Reconciliation {
        dead_lettered: stored.dead_lettered,
        persist_backlog: stored.persist_backlog,
        unpublished_outcomes: stored.unpublished_outcomes,
        calls: truth.calls.len() as u64,
        ..Reconciliation::default()
    };
    let mut examples = Examples::default();

    check_callbacks(truth, stored, &mut verdict, &mut examples);
    check_call_logs(truth, stored, &mut verdict, &mut examples);
    check_batches(truth, stored, &mut verdict, &mut examples);
    check_numbers(truth, stored, &mut verdict, &mut examples);

    verdict.examples = examples.lines;
    verdict
}

fn check_callbacks(
    truth: &GroundTruth,
    stored: &Stored,
    verdict: &mut Reconciliation,
    examples: &mut Examples,
) {
    for call in &truth.calls {
        verdict.calls_reordered += u64::from(call.reordered);
        for event in &call.events {
            verdict.duplicates_sent += u64::from(event.duplicates_sent);
            if event.gave_up {
                verdict.callbacks_given_up += 1;
                examples.add(
                    "given up",
                    format!(
                        "{} {} (last: {:?})",
                        call.call_id, event.event_type, event.last_error
                    ),
                );
            }
            if !event.acknowledged {
                continue;
            }
            verdict.callbacks_acknowledged += 1;
            let key = (call.call_id.clone(), event.event_type.clone());
            match stored.events.get(&key).copied().unwrap_or(0) {
                0 => {
                    verdict.callbacks_lost += 1;
                    examples.add("lost", format!("{} {}", call.call_id, event.event_type));
                }
                _ => verdict.callbacks_stored += 1,
            }
        }
    }
    for ((call_id, event_type), rows) in &stored.events {
        if *rows > 1 {
            verdict.events_stored_twice += 1;
            examples.add("stored twice", format!("{call_id} {event_type} ×{rows}"));
        }
    }
}

/// The status a call ends in, if its terminal callback was acknowledged.
fn acknowledged_outcome(call: &callbridge_sim::CallTruth) -> Option<CallStatus> {
    let outcome = call.outcome?.status();
    call.events
        .iter()
        .any(|event| {
            event.acknowledged && CallStatus::parse(&event.call_status) == Some(outcome.clone())
        })
        .then_some(outcome)
}

fn check_call_logs(
    truth: &GroundTruth,
    stored: &Stored,
    verdict: &mut Reconciliation,
    examples: &mut Examples,
) {
    let mut placed = BTreeSet::new();
    for call in &truth.calls {
        placed.insert(call.call_id.as_str());
        let Some(outcome) = acknowledged_outcome(call) else {
            continue;
        };
        match stored.call_logs.get(&call.call_id) {
            Some((_, status)) if status == outcome.as_str() => {}
            Some((_, status)) => {
                verdict.call_log_mismatches += 1;
                examples.add(
                    "call_logs",
                    format!("{} is {status}, the simulator says {outcome}", call.call_id),
                );
            }
            None => {
                verdict.call_log_mismatches += 1;
                examples.add(
                    "call_logs",
                    format!("{} has no row ({outcome})", call.call_id),
                );
            }
        }
    }
    for call_id in stored.call_logs.keys() {
        if !placed.contains(call_id.as_str()) {
            verdict.call_log_mismatches += 1;
            examples.add("call_logs", format!("{call_id} was never placed"));
        }
    }
}

fn check_batches(
    truth: &GroundTruth,
    stored: &Stored,
    verdict: &mut Reconciliation,
    examples: &mut Examples,
) {
    /// What one batch should look like, from the simulator and from `call_logs`.
    #[derive(Default)]
    struct Expected {
        accepted: i64,
        completed_by_sim: i64,
        failed_by_sim: i64,
        calls: usize,
        calls_settled: usize,
        completed_in_logs: i64,
        failed_in_logs: i64,
    }
    let mut expected: BTreeMap<i32, Expected> = BTreeMap::new();
    for (batch_id, batch) in &truth.batches {
        expected.entry(*batch_id).or_default().accepted =
            batch.accepted.values().map(|count| i64::from(*count)).sum();
    }
    for call in &truth.calls {
        let batch = expected.entry(call.batch_id).or_default();
        batch.calls += 1;
        if let Some(outcome) = acknowledged_outcome(call) {
            match outcome.counts_as_completed() {
                true => batch.completed_by_sim += 1,
                false => batch.failed_by_sim += 1,
            }
            if call.state == CallState::Ended {
                batch.calls_settled += 1;
            }
        }
    }
    for (batch_id, status) in stored.call_logs.values() {
        let (Some(batch_id), Some(status)) = (batch_id, CallStatus::parse(status)) else {
            continue;
        };
        let batch = expected.entry(*batch_id).or_default();
        match status.batch_count() {
            Some(BatchCount::Completed) => batch.completed_in_logs += 1,
            Some(BatchCount::Failed) => batch.failed_in_logs += 1,
            None => {}
        }
    }
    for batch_id in stored.batches.keys() {
        expected.entry(*batch_id).or_default();
    }

    for (batch_id, want) in &expected {
        verdict.batches += 1;
        let row = stored.batches.get(batch_id).cloned().unwrap_or_default();
        let mut wrong = Vec::new();
        if i64::from(row.total_calls) != want.accepted {
            wrong.push(format!(
                "total_calls {} ≠ {} accepted",
                row.total_calls, want.accepted
            ));
        }
        let completed = i64::from(row.completed_calls);
        if completed != want.completed_in_logs || completed != want.completed_by_sim {
            wrong.push(format!(
                "completed_calls {completed} (call_logs {}, simulator {})",
                want.completed_in_logs, want.completed_by_sim
            ));
        }
        let failed = i64::from(row.failed_calls);
        if failed != want.failed_in_logs || failed != want.failed_by_sim {
            wrong.push(format!(
                "failed_calls {failed} (call_logs {}, simulator {})",
                want.failed_in_logs, want.failed_by_sim
            ));
        }
        let all_ended = want.accepted > 0 && want.calls_settled as i64 == want.accepted;
        if all_ended && row.batch_status != "completed" {
            wrong.push(format!(
                "status {} although every call ended",
                row.batch_status
            ));
        }
        if !wrong.is_empty() {
            verdict.counter_mismatches += 1;
            examples.add("batch", format!("batch {batch_id}: {}", wrong.join(", ")));
        }
    }
}

fn check_numbers(
    truth: &GroundTruth,
    stored: &Stored,
    verdict: &mut Reconciliation,
    examples: &mut Examples,
) {
    for (batch_id, batch) in &truth.batches {
        for count in batch.accepted.values() {
            verdict.numbers_accepted += u64::from(*count);
            if *count > 1 {
                verdict.numbers_accepted_twice += 1;
                examples.add(
                    "accepted twice",
                    format!("a number of batch {batch_id} ×{count}"),
                );
            }
        }
    }
    for (batch_id, rows) in &stored.queue {
        for (phone_number, status) in rows {
            verdict.numbers_enqueued += 1;
            let accepted = truth.accepted_count(*batch_id, phone_number);
            if status != "submitted" || accepted == 0 {
                verdict.numbers_not_submitted += 1;
                examples.add(
                    "not submitted",
                    format!("a number of batch {batch_id}: {status}, accepted {accepted}×"),
                );
            }
        }
    }
}

/// Examples of problems, at most [`EXAMPLES`] per kind.
#[derive(Default)]
struct Examples {
    per_kind: HashMap<&'static str, usize>,
    lines: Vec<String>,
}

impl Examples {
    fn add(&mut self, kind: &'static str, line: String) {
        let count = self.per_kind.entry(kind).or_insert(0);
        *count += 1;
        if *count <= EXAMPLES {
            self.lines.push(format!("{kind}: {line}"));
        }
    }
}

/// Reads what callbridge stored: the tables from `pool`, the queue depths from the broker
/// at `amqp_url` (both direct, not through the proxies).
#[tracing::instrument(skip_all)]
pub async fn snapshot(pool: &PgPool, amqp_url: &str) -> anyhow::Result<Stored> {
    let mut stored = Stored::default();
    let events: Vec<(Option<String>, String, i64)> = sqlx::query_as(
        "SELECT call_id, event_type, count(*) FROM call_events GROUP BY call_id, event_type",
    )
    .fetch_all(pool)
    .await
    .context("while reading call_events")?;
    for (call_id, event_type, rows) in events {
        stored
            .events
            .insert((call_id.unwrap_or_default(), event_type), rows as u32);
    }
    let logs: Vec<(String, Option<i32>, String)> =
        sqlx::query_as("SELECT call_id, batch_id, call_status FROM call_logs")
            .fetch_all(pool)
            .await
            .context("while reading call_logs")?;
    stored.call_logs = logs
        .into_iter()
        .map(|(call_id, batch_id, status)| (call_id, (batch_id, status)))
        .collect();
    #[derive(sqlx::FromRow)]
    struct BatchRecord {
        batch_id: i32,
        #[sqlx(flatten)]
        row: BatchRow,
    }
    let batches: Vec<BatchRecord> = sqlx::query_as(
        "SELECT batch_id, coalesce(total_calls, 0) AS total_calls,
                coalesce(completed_calls, 0) AS completed_calls,
                coalesce(failed_calls, 0) AS failed_calls,
                coalesce(batch_status, '') AS batch_status
           FROM call_batches",
    )
    .fetch_all(pool)
    .await
    .context("while reading call_batches")?;
    stored.batches = batches
        .into_iter()
        .map(|record| (record.batch_id, record.row))
        .collect();
    let queue: Vec<(Option<i32>, String, Option<String>)> =
        sqlx::query_as("SELECT batch_id, phone_number, queue_status FROM local_call_queue")
            .fetch_all(pool)
            .await
            .context("while reading local_call_queue")?;
    for (batch_id, phone_number, status) in queue {
        stored
            .queue
            .entry(batch_id.unwrap_or_default())
            .or_default()
            .push((phone_number, status.unwrap_or_default()));
    }
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM call_outcome_outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await
            .context("while reading call_outcome_outbox")?;
    stored.unpublished_outcomes = unpublished as u64;

    let (dead, backlog) = queue_depths(amqp_url).await?;
    stored.dead_lettered = dead;
    stored.persist_backlog = backlog;
    Ok(stored)
}

/// Messages in `callbridge.dead` and ready in `callbridge.persist`.
async fn queue_depths(amqp_url: &str) -> anyhow::Result<(u64, u64)> {
    let connection = callbridge_runtime::amqp::connect(amqp_url, "callbridge-chaos")
        .await
        .context("while connecting to RabbitMQ to count the queues")?;
    let channel = connection
        .create_channel()
        .await
        .context("while opening a channel to count the queues")?;
    let mut depths = [0u64; 2];
    for (depth, queue) in depths.iter_mut().zip([DEAD_QUEUE, PERSIST_QUEUE]) {
        let declared = channel
            .queue_declare(
                queue.into(),
                // Passive: only look; the services own the queues and their arguments.
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("while counting the messages in {queue}"))?;
        *depth = u64::from(declared.message_count());
    }
    connection.close(200, "counted".into()).await.ok();
    Ok((depths[0], depths[1]))
}

#[cfg(test)]
mod tests {
    use callbridge_sim::{BatchTruth, CallTruth, EventTruth, Outcome};

    use super::*;

    fn event(event_type: &str, call_status: &str) -> EventTruth {
        EventTruth {
            event_type: event_type.into(),
            call_status: call_status.into(),
            attempts: 1,
            acknowledged: true,
            ..EventTruth::default()
        }
    }

    fn call(call_id: &str, number: &str, outcome: Outcome, events: Vec<EventTruth>) -> CallTruth {
        CallTruth {
            call_id: call_id.into(),
            batch_id: 1,
            phone_number: number.into(),
            custom_data: None,
            accepted_at: chrono::Utc::now(),
            state: CallState::Ended,
            outcome: Some(outcome),
            reordered: false,
            events,
        }
    }

    /// Batch 1: two numbers, one call completed (3 callbacks), one busy (2 callbacks).
    fn truth() -> GroundTruth {
        let mut truth = GroundTruth::default();
        truth.batches.insert(
            1,
            BatchTruth {
                accountcode: "SIM001".into(),
                inserts: 1,
                accepted: [
                    ("+15550000001".to_owned(), 1),
                    ("+15550000002".to_owned(), 1),
                ]
                .into(),
                calls: 2,
            },
        );
        truth.calls = vec![
            call(
                "c1",
                "+15550000001",
                Outcome::Completed,
                vec![
                    event("call_started", "started"),
                    event("call_answered", "answered"),
                    event("call_completed", "completed"),
                ],
            ),
            call(
                "c2",
                "+15550000002",
                Outcome::Busy,
                vec![event("call_started", "started"), event("call_busy", "busy")],
            ),
        ];
        truth
    }

    /// What a correct pipeline stores for [`truth`].
    fn stored() -> Stored {
        let events = [
            ("c1", "call_started"),
            ("c1", "call_answered"),
            ("c1", "call_completed"),
            ("c2", "call_started"),
            ("c2", "call_busy"),
        ];
        Stored {
            events: events
                .into_iter()
                .map(|(call, event)| ((call.to_owned(), event.to_owned()), 1))
                .collect(),
            call_logs: [
                ("c1".to_owned(), (Some(1), "completed".to_owned())),
                ("c2".to_owned(), (Some(1), "busy".to_owned())),
            ]
            .into(),
            batches: [(
                1,
                BatchRow {
                    total_calls: 2,
                    completed_calls: 1,
                    failed_calls: 1,
                    batch_status: "completed".into(),
                },
            )]
            .into(),
            queue: [(
                1,
                vec![
                    ("+15550000001".to_owned(), "submitted".to_owned()),
                    ("+15550000002".to_owned(), "submitted".to_owned()),
                ],
            )]
            .into(),
            ..Stored::default()
        }
    }

    #[test]
    fn a_faithful_store_reconciles_clean_with_every_figure_counted() {
        let verdict = reconcile(&truth(), &stored());
        assert!(verdict.is_clean(), "{:?}", verdict.problems());
        assert_eq!(verdict.callbacks_acknowledged, 5);
        assert_eq!(verdict.callbacks_stored, 5);
        assert_eq!((verdict.calls, verdict.batches), (2, 1));
        assert_eq!((verdict.numbers_enqueued, verdict.numbers_accepted), (2, 2));
    }

    #[test]
    fn an_acknowledged_callback_missing_from_call_events_is_lost() {
        let mut stored = stored();
        stored
            .events
            .remove(&("c2".to_owned(), "call_started".to_owned()));
        let verdict = reconcile(&truth(), &stored);
        assert_eq!(verdict.callbacks_lost, 1);
        assert!(
            verdict
                .examples
                .iter()
                .any(|e| e.contains("c2 call_started"))
        );
        assert!(!verdict.is_clean());
    }

    #[test]
    fn an_unacknowledged_callback_may_be_missing() {
        let mut truth = truth();
        truth.calls[1].events[0].acknowledged = false;
        let mut stored = stored();
        stored
            .events
            .remove(&("c2".to_owned(), "call_started".to_owned()));
        let verdict = reconcile(&truth, &stored);
        assert_eq!(verdict.callbacks_lost, 0);
        assert!(verdict.is_clean(), "{:?}", verdict.problems());
    }

    #[test]
    fn a_callback_stored_twice_is_reported() {
        let mut stored = stored();
        stored
            .events
            .insert(("c1".to_owned(), "call_completed".to_owned()), 2);
        assert_eq!(reconcile(&truth(), &stored).events_stored_twice, 1);
    }

    #[test]
    fn a_call_log_with_another_outcome_is_a_mismatch_and_so_are_its_counters() {
        let mut stored = stored();
        stored
            .call_logs
            .insert("c2".to_owned(), (Some(1), "no_answer".to_owned()));
        let verdict = reconcile(&truth(), &stored);
        assert_eq!(verdict.call_log_mismatches, 1);
        // no_answer still counts as failed: the counters agree, only the row is wrong.
        assert_eq!(verdict.counter_mismatches, 0);

        stored.call_logs.remove("c1");
        let verdict = reconcile(&truth(), &stored);
        assert_eq!(verdict.call_log_mismatches, 2);
        assert_eq!(verdict.counter_mismatches, 1);
    }

    #[test]
    fn counters_that_disagree_with_the_simulator_or_call_logs_are_mismatches() {
        for change in [
            |row: &mut BatchRow| row.completed_calls = 2,
            |row: &mut BatchRow| row.failed_calls = 0,
            |row: &mut BatchRow| row.total_calls = 3,
            |row: &mut BatchRow| row.batch_status = "in_progress".into(),
        ] {
            let mut stored = stored();
            change(stored.batches.get_mut(&1).unwrap());
            let verdict = reconcile(&truth(), &stored);
            assert_eq!(verdict.counter_mismatches, 1, "{:?}", stored.batches);
        }
    }

    #[test]
    fn a_number_accepted_twice_is_reported_without_naming_it() {
        let mut truth = truth();
        truth
            .batches
            .get_mut(&1)
            .unwrap()
            .accepted
            .insert("+15550000002".to_owned(), 2);
        let verdict = reconcile(&truth, &stored());
        assert_eq!(verdict.numbers_accepted_twice, 1);
        assert!(verdict.examples.iter().all(|e| !e.contains("+1555")));
    }

    #[test]
    fn a_queue_row_not_submitted_or_never_accepted_is_reported() {
        let mut stored = stored();
        stored.queue.get_mut(&1).unwrap()[0].1 = "needs_review".into();
        assert_eq!(reconcile(&truth(), &stored).numbers_not_submitted, 1);

        let mut stored = self::stored();
        stored
            .queue
            .get_mut(&1)
            .unwrap()
            .push(("+15550000003".to_owned(), "submitted".to_owned()));
        assert_eq!(reconcile(&truth(), &stored).numbers_not_submitted, 1);
    }

    #[test]
    fn dead_letters_backlog_unpublished_outcomes_and_given_up_callbacks_fail_the_run() {
        let mut truth = truth();
        truth.calls[0].events[0].gave_up = true;
        truth.calls[0].events[0].acknowledged = false;
        let stored = Stored {
            dead_lettered: 1,
            persist_backlog: 2,
            unpublished_outcomes: 3,
            ..stored()
        };
        let problems = reconcile(&truth, &stored).problems().join("; ");
        for expected in [
            "1 messages dead-lettered",
            "2 messages left in callbridge.persist",
            "3 outcomes never published",
            "1 callbacks the sender gave up on",
        ] {
            assert!(problems.contains(expected), "{problems}");
        }
    }

    #[test]
    fn a_run_without_acknowledged_callbacks_proves_nothing() {
        let verdict = reconcile(&GroundTruth::default(), &Stored::default());
        assert!(!verdict.is_clean());
    }
}
