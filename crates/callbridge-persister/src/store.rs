//! One batch of callback events, stored in one transaction of set-based statements.
//!
//! Steps (each one statement over arrays, whatever the batch size):
//! 1. insert the events into `call_events`, `ON CONFLICT (event_id) DO NOTHING RETURNING`:
//!    the returned ids are the new events; a duplicate changes nothing from here on;
//! 2. `pg_advisory_xact_lock` on every call a new event with a status belongs to, in key
//!    order (a status-less event cannot change the fold of its call, see
//!    [`crate::call_log`], so its call is left alone: an existing row stays as it is);
//! 3. read back every stored event of those calls that other transactions committed (this
//!    transaction's own are taken from memory, not read back and parsed again); a call
//!    whose events retention deleted brings its `call_logs` row instead, which stands for
//!    them in the fold;
//! 4. fold each call's events into its `call_logs` row ([`crate::call_log::fold_call`]);
//! 5. upsert those rows;
//! 6. write an outbox row for every call whose deciding event is terminal;
//! 7. settle the queue rows of terminal calls and add the redials their campaigns ask
//!    for ([`crate::redial`]): exactly once, because a row is settled once;
//! 8. create the calls' `call_batches` rows if missing and let `callbridge_refresh_batch`
//!    add each batch's deltas of completed and failed calls (step 5 computes them from
//!    each call's row before and after) and decide its status, in batch id order; a
//!    batch row created here is recounted instead. O(1) per batch, whatever its size.
//!    Last before COMMIT: every transaction touching a batch queues on its row until the
//!    holder commits (a whole campaign is one batch), so the shorter that row is held,
//!    the more batch transactions overlap.
//!
//! Why the result is exact under any number of replicas and any arrival order: a
//! call's row is a pure function of the set of its stored events. Two transactions that
//! add events to one call serialise on the call's advisory lock, and the second one's
//! step 3 is a new statement under READ COMMITTED, taking its snapshot after the lock
//! was granted, i.e. after the first one committed: it folds both transactions' events.
//! Whichever commits last therefore writes the fold of the full set.
//!
//! Why the batch counts stay exact without recounting: each transaction adds to a
//! batch's counts exactly what its own upsert changed, the difference between each
//! written call's committed row (stable: the transaction holds the call's lock) and its
//! new fold. The additions commute, and each is made under the batch row's lock, so after
//! every commit the stored counts equal a recount; a rolled-back transaction adds
//! nothing, and a duplicate writes no row, so it adds nothing either.
//!
//! Why there are no deadlocks between replicas: every kind of lock is taken in one
//! global order, and the kinds in a fixed sequence — event ids (a duplicate insert waits
//! for the inserting transaction) in id order, then call locks in key order, then
//! `call_logs` and outbox rows (both keyed by calls the call locks already cover), then
//! the settled queue rows (keyed by those calls too) and number locks in key order (only
//! for capped redials), then batch rows in id order.
//! A transaction only ever waits for a lock of the kind it is taking now, held by a
//! transaction at the same step or later, so waits cannot form a cycle. (The submitter
//! also locks batch rows; a deadlock with it is detected by Postgres and retried.)

use std::collections::{BTreeMap, BTreeSet, HashSet};

use callbridge_types::envelope::Envelope;
use callbridge_types::event::CallbackEvent;
use callbridge_types::status::{BatchStatus, CallStatus};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::call_log::{CallLog, STORED_ROW_EVENT_ID, StoredEvent, fold_call};

/// The event type the stored row is read back under (it is never written anywhere).
const STORED_ROW_EVENT_TYPE: &str = "callbridge_stored_row";
use crate::error::StoreError;
use crate::failpoint::{self, Failpoint};
use crate::redial;

/// One event to store: the envelope and the trace it arrived in.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub envelope: Envelope,
    /// W3C trace id of the ingress request (`traceparent`), kept in `call_events`.
    pub trace_id: Option<String>,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoredBatch {
    /// `received_at` of each event stored for the first time.
    pub stored: Vec<DateTime<Utc>>,
    /// Events that were already stored (redeliveries, sender retries).
    pub duplicates: usize,
    /// Each outcome this batch decided: the terminal status and the call's duration.
    pub outcomes: Vec<(CallStatus, Option<i32>)>,
    /// Redial rows this batch added to `local_call_queue`, by the outcome each repeats.
    pub redials: BTreeMap<String, usize>,
}

/// Stores `events` in one transaction (see the module docs) and commits it.
#[tracing::instrument(skip_all, fields(batch_size = events.len(), stored, duplicates))]
pub async fn store_batch(
    pool: &PgPool,
    events: &[&IncomingEvent],
    now: DateTime<Utc>,
) -> Result<StoredBatch, StoreError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| StoreError::from_sqlx(e, "while beginning the batch transaction"))?;

    let unique = unique_by_event_id(events);
    let new_ids = insert_events(&mut tx, &unique).await?;
    let new_events: Vec<&IncomingEvent> = unique
        .iter()
        .copied()
        .filter(|event| new_ids.contains(&event.envelope.event_id))
        .collect();
    let mut outcome = StoredBatch {
        stored: new_events.iter().map(|e| e.envelope.received_at).collect(),
        duplicates: events.len() - new_events.len(),
        outcomes: Vec::new(),
        redials: BTreeMap::new(),
    };

    let calls: BTreeSet<&str> = new_events
        .iter()
        .map(|incoming| &incoming.envelope.event)
        .filter(|event| event.call_status.is_some())
        .map(|event| event.call_id.as_str())
        .collect();
    if !calls.is_empty() {
        lock_calls(&mut tx, &calls).await?;
        let logs = load_events(&mut tx, &calls, &new_events)
            .await?
            .values()
            .filter_map(|events| fold_call(events))
            .collect::<Vec<CallLog>>();
        let mut deltas = upsert_call_logs(&mut tx, &logs).await?;
        outcome.outcomes = insert_outcomes(&mut tx, &logs).await?;
        let settled = redial::settle_terminal_calls(&mut tx, &logs, now).await?;
        outcome.redials = settled.redials;
        add_exhausted(&mut deltas, &settled.exhausted);
        refresh_batches(&mut tx, &logs, &deltas).await?;
    }

    failpoint::hit(Failpoint::BeforeCommit);
    tx.commit()
        .await
        .map_err(|e| StoreError::from_sqlx(e, "while committing the batch transaction"))?;

    let span = tracing::Span::current();
    span.record("stored", outcome.stored.len());
    span.record("duplicates", outcome.duplicates);
    Ok(outcome)
}

/// The first occurrence of each event id (a sender's retry can put the same event in
/// one batch twice), in event id order: the order duplicate inserts wait on each other.
fn unique_by_event_id<'a>(events: &[&'a IncomingEvent]) -> Vec<&'a IncomingEvent> {
    let mut by_id: BTreeMap<&str, &IncomingEvent> = BTreeMap::new();
    for event in events {
        by_id
            .entry(event.envelope.event_id.as_str())
            .or_insert(event);
    }
    by_id.into_values().collect()
}

/// Step 1: appends the events to `call_events`; returns the ids that were new.
async fn insert_events(
    tx: &mut PgConnection,
    events: &[&IncomingEvent],
) -> Result<HashSet<String>, StoreError> {
    let mut event_ids = Vec::with_capacity(events.len());
    let mut event_types = Vec::with_capacity(events.len());
    let mut call_ids = Vec::with_capacity(events.len());
    let mut batch_ids = Vec::with_capacity(events.len());
    let mut statuses = Vec::with_capacity(events.len());
    let mut end_times = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    let mut received = Vec::with_capacity(events.len());
    let mut trace_ids = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for incoming in events {
        let envelope = &incoming.envelope;
        let event = &envelope.event;
        event_ids.push(envelope.event_id.as_str());
        event_types.push(event.event_type.as_str());
        call_ids.push(event.call_id.as_str());
        batch_ids.push(event.batch_id);
        statuses.push(event.call_status.as_ref().map(|s| s.as_str()));
        end_times.push(event.end_time);
        // Serialised straight into the statement, without an intermediate `Value`.
        payloads.push(Json(&envelope.payload));
        received.push(envelope.received_at);
        trace_ids.push(incoming.trace_id.as_deref());
        bodies.push(Json(event));
    }
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO call_events
                (event_id, event_type, call_id, batch_id, call_status, end_time, payload,
                 received_at, trace_id, event)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[],
                              $6::timestamp[], $7::jsonb[], $8::timestamptz[], $9::text[],
                              $10::jsonb[])
          ORDER BY 1
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(event_ids)
    .bind(event_types)
    .bind(call_ids)
    .bind(batch_ids)
    .bind(statuses)
    .bind(end_times)
    .bind(payloads)
    .bind(received)
    .bind(trace_ids)
    .bind(bodies)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while inserting into call_events"))?;
    Ok(inserted.into_iter().collect())
}

/// Step 2: serialises this transaction with every other one touching the same calls,
/// until commit. Keys are taken in ascending order so two transactions cannot each hold
/// a key the other waits for; two call ids sharing a hash only serialise a little more.
async fn lock_calls(tx: &mut PgConnection, calls: &BTreeSet<&str>) -> Result<(), StoreError> {
    let calls: Vec<&str> = calls.iter().copied().collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(key)
           FROM (SELECT DISTINCT hashtextextended(call_id, 0) AS key
                   FROM unnest($1::text[]) AS call_id
                  ORDER BY key) AS keys",
    )
    .bind(calls)
    .execute(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while locking the batch's calls"))?;
    Ok(())
}

/// Step 3: every stored event of `calls`: those other transactions (replicas, earlier
/// batches) committed, read back, and `own`, the events this transaction inserted.
async fn load_events(
    tx: &mut PgConnection,
    calls: &BTreeSet<&str>,
    own: &[&IncomingEvent],
) -> Result<BTreeMap<String, Vec<StoredEvent>>, StoreError> {
    let call_list: Vec<&str> = calls.iter().copied().collect();
    // As text, parsed straight into the event type (no intermediate `Value`). A row this
    // transaction inserted carries its transaction id as `xmin` (no savepoints here).
    // A call whose events retention deleted brings its stored row as an event of its own
    // (see `crate::call_log::STORED_ROW_EVENT_ID`): one more index probe per call, in the
    // same round trip; retention deletes a call's events all at once, so a call with no
    // stored event besides this transaction's has had none or lost all. Spelled as
    // `CallbackEvent` serialises.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_id, event::text FROM call_events
          WHERE call_id = ANY($1::text[]) AND xmin <> pg_current_xact_id()::xid
         UNION ALL
         SELECT $2, jsonb_build_object(
                    'event_type', $3::text, 'accountcode', accountcode, 'batch_id', batch_id,
                    'call_id', call_id, 'phone_number', phone_number, 'call_status', call_status,
                    'disposition', disposition, 'duration', duration,
                    'start_time', start_time, 'end_time', end_time,
                    'recording_url', recording_url, 'custom_data', custom_data,
                    'server_code', server_code, 'error_message', error_message)::text
           FROM call_logs l
          WHERE l.call_id = ANY($1::text[])
            AND NOT EXISTS (SELECT 1 FROM call_events e
                             WHERE e.call_id = l.call_id
                               AND e.xmin <> pg_current_xact_id()::xid)",
    )
    .bind(call_list)
    .bind(STORED_ROW_EVENT_ID)
    .bind(STORED_ROW_EVENT_TYPE)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while reading the calls' stored events"))?;
    let mut by_call: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    for (event_id, body) in rows {
        // Only this crate writes the column, from this type; a row that does not read
        // back makes the calls it belongs to unstorable, not the whole pipeline.
        let event: CallbackEvent = serde_json::from_str(&body).map_err(|e| {
            StoreError::Message(anyhow::Error::new(e).context(format!(
                "while reading back stored event {event_id} from call_events.event"
            )))
        })?;
        by_call
            .entry(event.call_id.clone())
            .or_default()
            .push(StoredEvent { event_id, event });
    }
    for incoming in own {
        let event = &incoming.envelope.event;
        if calls.contains(event.call_id.as_str()) {
            by_call
                .entry(event.call_id.clone())
                .or_default()
                .push(StoredEvent {
                    event_id: incoming.envelope.event_id.clone(),
                    event: event.clone(),
                });
        }
    }
    Ok(by_call)
}

/// Step 5: writes the folded rows; returns, for every batch whose counts may have changed
/// (the written rows' batches now, and before, should a call's batch id have changed),
/// how much its `completed_calls` and `failed_calls` change.
///
/// The deltas compare each written call's row before the upsert with the fold: the row
/// read here is the committed one, since every writer of a call holds its lock (step 2)
/// and this statement's snapshot is taken after the lock was granted.
/// `callbridge_call_count_kind` (migration 0007) classifies a status as the batch
/// routine does.
///
/// A row that already holds the fold is left alone, `updated_at` included. `duration`
/// takes the column's default, 0, when no event carries one.
async fn upsert_call_logs(
    tx: &mut PgConnection,
    logs: &[CallLog],
) -> Result<Vec<BatchDelta>, StoreError> {
    let mut columns = CallLogColumns::default();
    for log in logs {
        columns.push(log);
    }
    let deltas: Vec<BatchDelta> = sqlx::query_as(
        "WITH previous AS (
             SELECT call_id, batch_id, call_status, duration
               FROM call_logs WHERE call_id = ANY($1::text[])
         ), folded AS (
             SELECT *
               FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
                           $6::text[], $7::int4[], $8::timestamp[], $9::timestamp[],
                           $10::text[], $11::text[], $12::text[], $13::jsonb[])
                    AS folded(call_id, accountcode, batch_id, phone_number, call_status,
                              disposition, duration, start_time, end_time, recording_url,
                              server_code, error_message, custom_data)
         ), written AS (
             INSERT INTO call_logs AS current
                    (call_id, accountcode, batch_id, phone_number, call_status, disposition,
                     duration, start_time, end_time, recording_url, server_code,
                     error_message, custom_data)
             SELECT call_id, accountcode, batch_id, phone_number, call_status, disposition,
                    coalesce(duration, 0), start_time, end_time, recording_url, server_code,
                    error_message, custom_data
               FROM folded
              ORDER BY call_id
             ON CONFLICT (call_id) DO UPDATE
                SET accountcode = EXCLUDED.accountcode,
                    batch_id = EXCLUDED.batch_id,
                    phone_number = EXCLUDED.phone_number,
                    call_status = EXCLUDED.call_status,
                    disposition = EXCLUDED.disposition,
                    duration = EXCLUDED.duration,
                    start_time = EXCLUDED.start_time,
                    end_time = EXCLUDED.end_time,
                    recording_url = EXCLUDED.recording_url,
                    server_code = EXCLUDED.server_code,
                    error_message = EXCLUDED.error_message,
                    custom_data = EXCLUDED.custom_data,
                    updated_at = CURRENT_TIMESTAMP
              WHERE (current.accountcode, current.batch_id, current.phone_number,
                     current.call_status, current.disposition, current.duration,
                     current.start_time, current.end_time, current.recording_url,
                     current.server_code, current.error_message, current.custom_data)
                    IS DISTINCT FROM
                    (EXCLUDED.accountcode, EXCLUDED.batch_id, EXCLUDED.phone_number,
                     EXCLUDED.call_status, EXCLUDED.disposition, EXCLUDED.duration,
                     EXCLUDED.start_time, EXCLUDED.end_time, EXCLUDED.recording_url,
                     EXCLUDED.server_code, EXCLUDED.error_message, EXCLUDED.custom_data)
             RETURNING call_id
         ), changes AS (
             SELECT batch_id, callbridge_call_count_kind(call_status) AS kind, -1 AS sign,
                    coalesce(duration, 0) AS duration
               FROM previous
              WHERE call_id IN (SELECT call_id FROM written)
             UNION ALL
             SELECT batch_id, callbridge_call_count_kind(call_status), 1, coalesce(duration, 0)
               FROM folded
              WHERE call_id IN (SELECT call_id FROM written)
         )
         SELECT batch_id,
                coalesce(sum(sign) FILTER (WHERE kind = 'completed'), 0)::int4 AS completed,
                coalesce(sum(sign) FILTER (WHERE kind = 'failed'), 0)::int4 AS failed,
                coalesce(sum(sign * duration::int8) FILTER (WHERE kind = 'completed'), 0)::int8
                    AS answered_seconds,
                0::int4 AS exhausted
           FROM changes
          WHERE batch_id IS NOT NULL
          GROUP BY batch_id",
    )
    .bind(columns.call_ids)
    .bind(columns.accountcodes)
    .bind(columns.batch_ids)
    .bind(columns.phone_numbers)
    .bind(columns.statuses)
    .bind(columns.dispositions)
    .bind(columns.durations)
    .bind(columns.start_times)
    .bind(columns.end_times)
    .bind(columns.recording_urls)
    .bind(columns.server_codes)
    .bind(columns.error_messages)
    .bind(columns.custom_data)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while upserting call_logs"))?;
    Ok(deltas)
}

/// How one transaction changes a batch's counts (see [`upsert_call_logs`]) and the
/// aggregates the campaign figures are summed from: the seconds of its answered
/// (`completed`) calls and its numbers whose redials are used up.
#[derive(Debug, sqlx::FromRow)]
struct BatchDelta {
    batch_id: i32,
    completed: i32,
    failed: i32,
    answered_seconds: i64,
    exhausted: i32,
}

/// Adds the numbers [`redial::settle_terminal_calls`] found exhausted to their batches'
/// deltas (a batch only they touch gets a delta of its own, so its row is locked in
/// order with the others).
fn add_exhausted(deltas: &mut Vec<BatchDelta>, exhausted: &BTreeMap<i32, i32>) {
    for (batch_id, count) in exhausted {
        match deltas.iter_mut().find(|delta| delta.batch_id == *batch_id) {
            Some(delta) => delta.exhausted += count,
            None => deltas.push(BatchDelta {
                batch_id: *batch_id,
                completed: 0,
                failed: 0,
                answered_seconds: 0,
                exhausted: *count,
            }),
        }
    }
}

/// `call_logs` columns as arrays, for one `unnest`, borrowing every string and the
/// custom data from the folded rows: sqlx encodes `&str` slices as `text[]` and
/// `Json<&Map>` as `jsonb[]`, so nothing is copied on the way to the statement.
#[derive(Default)]
struct CallLogColumns<'a> {
    call_ids: Vec<&'a str>,
    accountcodes: Vec<&'a str>,
    batch_ids: Vec<Option<i32>>,
    phone_numbers: Vec<&'a str>,
    statuses: Vec<&'a str>,
    dispositions: Vec<Option<&'a str>>,
    durations: Vec<Option<i32>>,
    start_times: Vec<Option<chrono::NaiveDateTime>>,
    end_times: Vec<Option<chrono::NaiveDateTime>>,
    recording_urls: Vec<Option<&'a str>>,
    server_codes: Vec<Option<&'a str>>,
    error_messages: Vec<Option<&'a str>>,
    custom_data: Vec<Option<Json<&'a Map<String, Value>>>>,
}

impl<'a> CallLogColumns<'a> {
    fn push(&mut self, log: &'a CallLog) {
        self.call_ids.push(&log.call_id);
        self.accountcodes.push(&log.accountcode);
        self.batch_ids.push(log.batch_id);
        self.phone_numbers.push(&log.phone_number);
        self.statuses.push(log.call_status.as_str());
        self.dispositions.push(log.disposition.as_deref());
        self.durations.push(log.duration);
        self.start_times.push(log.start_time);
        self.end_times.push(log.end_time);
        self.recording_urls.push(log.recording_url.as_deref());
        self.server_codes.push(log.server_code.as_deref());
        self.error_messages.push(log.error_message.as_deref());
        self.custom_data.push(log.custom_data.as_ref().map(Json));
    }
}

/// Step 6: one outbox row per terminal call, keyed by its deciding event: a redelivery
/// adds nothing, and a later terminal event that takes over adds a new outcome. Returns
/// the outcomes written now.
async fn insert_outcomes(
    tx: &mut PgConnection,
    logs: &[CallLog],
) -> Result<Vec<(CallStatus, Option<i32>)>, StoreError> {
    let terminal: Vec<&CallLog> = logs
        .iter()
        .filter(|log| log.is_terminal() && log.decided_by_event())
        .collect();
    if terminal.is_empty() {
        return Ok(Vec::new());
    }
    let event_ids: Vec<&str> = terminal
        .iter()
        .map(|l| l.winning_event_id.as_str())
        .collect();
    let call_ids: Vec<&str> = terminal.iter().map(|l| l.call_id.as_str()).collect();
    let batch_ids: Vec<Option<i32>> = terminal.iter().map(|l| l.batch_id).collect();
    let statuses: Vec<&str> = terminal.iter().map(|l| l.call_status.as_str()).collect();
    let payloads: Vec<Value> = terminal.iter().map(|l| l.outcome_payload()).collect();
    let written: Vec<(String, Option<i32>)> = sqlx::query_as(
        "INSERT INTO call_outcome_outbox (event_id, call_id, batch_id, call_status, payload)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::jsonb[])
          ORDER BY 1
         ON CONFLICT (event_id) DO NOTHING
         RETURNING call_status, (payload ->> 'duration')::int4",
    )
    .bind(event_ids)
    .bind(call_ids)
    .bind(batch_ids)
    .bind(statuses)
    .bind(payloads)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while writing the outcome outbox"))?;
    Ok(written
        .into_iter()
        .filter_map(|(status, duration)| Some((CallStatus::parse(&status)?, duration)))
        .collect())
}

/// Step 8: creates the batches' rows if missing (a callback can arrive for a batch this
/// database never submitted) and lets the shared routine apply each batch's deltas and
/// decide its status. Batch rows are locked (by the routine) in ascending id order.
///
/// A row this transaction creates is recounted instead (the deltas' `NULL`): it starts
/// at zero, while `call_logs` may already hold rows of that batch that no batch row
/// counted (written before the row existed by something other than the persister).
///
/// `callbridge_refresh_batch` is the routine `callbridge_runtime::db::refresh_batch`
/// wraps for one batch; here one statement calls it for every touched batch, so a
/// transaction spanning many batches still costs one round trip.
async fn refresh_batches(
    tx: &mut PgConnection,
    logs: &[CallLog],
    touched: &[BatchDelta],
) -> Result<(), StoreError> {
    if touched.is_empty() {
        return Ok(());
    }
    // A new batch row takes the account code of its lowest call id, so replicas agree.
    let mut accountcodes: BTreeMap<i32, (&str, &str)> = BTreeMap::new();
    for log in logs {
        if let Some(batch_id) = log.batch_id {
            let candidate = (log.call_id.as_str(), log.accountcode.as_str());
            accountcodes
                .entry(batch_id)
                .and_modify(|held| *held = (*held).min(candidate))
                .or_insert(candidate);
        }
    }
    let (new_ids, new_accountcodes): (Vec<i32>, Vec<&str>) = accountcodes
        .iter()
        .map(|(batch_id, (_, accountcode))| (*batch_id, *accountcode))
        .unzip();
    let created: HashSet<i32> = sqlx::query_scalar(
        "INSERT INTO call_batches (batch_id, accountcode)
         SELECT * FROM unnest($1::int4[], $2::text[]) ORDER BY 1
         ON CONFLICT (batch_id) DO NOTHING
         RETURNING batch_id",
    )
    .bind(new_ids)
    .bind(new_accountcodes)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while creating missing call_batches rows"))?
    .into_iter()
    .collect();

    let mut batch_ids = Vec::with_capacity(touched.len());
    let mut completed = Vec::with_capacity(touched.len());
    let mut failed = Vec::with_capacity(touched.len());
    let mut answered_seconds = Vec::with_capacity(touched.len());
    let mut exhausted = Vec::with_capacity(touched.len());
    for delta in touched {
        let recount = created.contains(&delta.batch_id);
        batch_ids.push(delta.batch_id);
        completed.push((!recount).then_some(delta.completed));
        failed.push((!recount).then_some(delta.failed));
        answered_seconds.push((!recount).then_some(delta.answered_seconds));
        exhausted.push(delta.exhausted);
    }
    sqlx::query(
        "SELECT callbridge_refresh_batch(batch_id, completed, failed)
           FROM (SELECT * FROM unnest($1::int4[], $2::int4[], $3::int4[])
                   AS delta(batch_id, completed, failed)
                  ORDER BY batch_id) AS ordered",
    )
    .bind(&batch_ids)
    .bind(completed)
    .bind(failed)
    .execute(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while refreshing call_batches"))?;
    // The routine above holds each row's lock now: the figures' aggregates change under
    // it, added like the counts (a created row is recounted, as its counts are).
    sqlx::query(
        "UPDATE call_batches b
            SET answered_seconds = coalesce(
                    b.answered_seconds + d.answered_seconds,
                    (SELECT coalesce(sum(coalesce(l.duration, 0)), 0)::int8
                       FROM call_logs l
                      WHERE l.batch_id = b.batch_id AND l.call_status = 'completed')),
                exhausted_calls = b.exhausted_calls + d.exhausted
           FROM unnest($1::int4[], $2::int8[], $3::int4[])
                AS d(batch_id, answered_seconds, exhausted)
          WHERE b.batch_id = d.batch_id
            AND (d.answered_seconds IS DISTINCT FROM 0 OR d.exhausted <> 0)",
    )
    .bind(&batch_ids)
    .bind(answered_seconds)
    .bind(exhausted)
    .execute(&mut *tx)
    .await
    .map_err(|e| StoreError::from_sqlx(e, "while adding to the batches' figures"))?;
    Ok(())
}

/// Number of batches whose status is not final yet (the seed's `active_batches`).
#[tracing::instrument(skip_all)]
pub async fn count_active_batches(pool: &PgPool) -> anyhow::Result<i64> {
    use anyhow::Context;
    let final_statuses: Vec<&str> = BatchStatus::ALL
        .iter()
        .filter(|status| status.is_final())
        .map(|status| status.as_str())
        .collect();
    sqlx::query_scalar(
        "SELECT count(*) FROM call_batches
          WHERE batch_status IS NULL OR batch_status <> ALL($1::text[])",
    )
    .bind(final_statuses)
    .fetch_one(pool)
    .await
    .context("while counting active batches")
}
