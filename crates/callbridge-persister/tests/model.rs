//! Property: whatever the events, duplicates, order and batch boundaries, the stored
//! `call_logs` and `call_batches` equal what a simple model of the rules computes from the
//! set of distinct events; every distinct event is in `call_events`; and every terminal
//! call's deciding event is in the outbox.
//!
//! Some events carry no status (an unknown event type or `call_status_update` without
//! `call_status`): they are kept in `call_events` and change `call_logs`
//! only through a status, so the model leaves them out of the rows entirely.
//!
//! The model is written from the rules as the `call_log` module states them, independently
//! of its code (`call_log::fold_call`).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use callbridge_persister::store::{IncomingEvent, store_batch};
use callbridge_types::envelope::event_id_for;
use chrono::NaiveDateTime;
use common::{CallLogRow, envelope};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::PgPool;

const STATUSES: [&str; 9] = [
    "started",
    "ringing",
    "answered",
    "completed",
    "failed",
    "busy",
    "NO ANSWER",
    "timeout",
    "queued",
];

#[derive(Debug, Clone)]
struct EventSpec {
    call: usize,
    with_batch: bool,
    /// An event type outside the vocabulary instead of `call_status_update`.
    unknown_type: bool,
    /// `None`: the event carries no `call_status` (and its type implies none).
    status: Option<&'static str>,
    disposition: Option<&'static str>,
    duration: Option<i32>,
    end_minute: Option<u32>,
    recording: Option<u8>,
    error: Option<&'static str>,
    with_custom_data: bool,
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        0..4usize,
        any::<bool>(),
        any::<bool>(),
        prop::option::weighted(0.8, prop::sample::select(&STATUSES[..])),
        prop::option::of(prop::sample::select(
            &["answered", "no-answer", "hangup"][..],
        )),
        prop::option::of(0..300i32),
        prop::option::of(0..3u32),
        prop::option::of(0..3u8),
        prop::option::of(prop::sample::select(&["network", "rejected"][..])),
        any::<bool>(),
    )
        .prop_map(
            |(
                call,
                with_batch,
                unknown_type,
                status,
                disposition,
                duration,
                end_minute,
                recording,
                error,
                with_custom_data,
            )| {
                EventSpec {
                    call,
                    with_batch,
                    unknown_type,
                    status,
                    disposition,
                    duration,
                    end_minute,
                    recording,
                    error,
                    with_custom_data,
                }
            },
        )
}

/// Distinct events, each sent one to three times, shuffled, cut into batches.
fn stream() -> impl Strategy<Value = (Vec<(EventSpec, usize)>, Vec<usize>)> {
    (
        prop::collection::vec((event_spec(), 1..=3usize), 1..24),
        prop::collection::vec(1..7usize, 1..40),
    )
}

/// The callback payload of `spec` in test case `case` (ids namespaced per case).
fn payload(case: u32, spec: &EventSpec) -> Value {
    let batch_id = case as i32 * 10 + spec.call as i32 % 2;
    let event_type = if spec.unknown_type {
        "call_transferred"
    } else {
        "call_status_update"
    };
    let mut payload = json!({
        "event_type": event_type,
        "call_id": format!("case{case}-c{}", spec.call),
        "phone_number": "9876543210",
    });
    let fields = payload.as_object_mut().unwrap();
    if let Some(status) = spec.status {
        fields.insert("call_status".into(), json!(status));
    }
    if spec.with_batch {
        fields.insert("batch_id".into(), json!(batch_id));
    }
    if let Some(disposition) = spec.disposition {
        fields.insert("disposition".into(), json!(disposition));
    }
    if let Some(duration) = spec.duration {
        fields.insert("duration".into(), json!(duration));
    }
    if let Some(minute) = spec.end_minute {
        fields.insert(
            "end_time".into(),
            json!(format!("2024-01-01T10:0{minute}:00Z")),
        );
    }
    if let Some(recording) = spec.recording {
        fields.insert(
            "recording_url".into(),
            json!(format!("https://rec.example/{recording}.wav")),
        );
    }
    if let Some(error) = spec.error {
        fields.insert("error_message".into(), json!(error));
    }
    if spec.with_custom_data {
        fields.insert("custom_data".into(), json!({"status_seen": spec.status}));
    }
    payload
}

/// A stored event as the model sees it: its id and its normalised payload fields.
#[derive(Debug, Clone)]
struct ModelEvent {
    event_id: String,
    fields: CallLogRow,
}

/// Status order: unknown < started = ringing < answered < terminal.
fn rank(status: &str) -> u8 {
    match status {
        "started" | "ringing" => 1,
        "answered" => 2,
        "completed" | "failed" | "busy" | "no_answer" | "timeout" => 3,
        _ => 0,
    }
}

/// Ties between terminals: completed > failed > busy > no_answer > timeout; ringing can
/// only follow started, so it stands above it.
fn tie_break(status: &str) -> u8 {
    ["timeout", "no_answer", "busy", "failed", "completed"]
        .iter()
        .position(|s| *s == status)
        .map(|p| p as u8 + 1)
        .unwrap_or(u8::from(status == "ringing"))
}

/// Higher is stronger: rank, then (terminals only) the later end_time, then the tie
/// break, then the event id (any fixed order works for events of equal standing).
fn standing(event: &ModelEvent) -> (u8, Option<NaiveDateTime>, u8, String) {
    let status = event.fields.call_status.as_str();
    let end_time = if rank(status) == 3 {
        event.fields.end_time
    } else {
        None
    };
    (
        rank(status),
        end_time,
        tie_break(status),
        event.event_id.clone(),
    )
}

fn model_row(events: &[ModelEvent]) -> (CallLogRow, String) {
    let mut ranked = events.to_vec();
    ranked.sort_by_key(|event| std::cmp::Reverse(standing(event)));
    let top = &ranked[0];
    macro_rules! first {
        ($field:ident) => {
            ranked.iter().find_map(|e| e.fields.$field.clone())
        };
    }
    let row = CallLogRow {
        call_id: top.fields.call_id.clone(),
        accountcode: top.fields.accountcode.clone(),
        batch_id: first!(batch_id),
        phone_number: top.fields.phone_number.clone(),
        call_status: top.fields.call_status.clone(),
        disposition: first!(disposition),
        duration: Some(first!(duration).unwrap_or(0)),
        start_time: first!(start_time),
        end_time: first!(end_time),
        recording_url: first!(recording_url),
        server_code: first!(server_code),
        error_message: first!(error_message),
        custom_data: first!(custom_data),
    };
    (row, top.event_id.clone())
}

async fn check_case(
    pool: &PgPool,
    case: u32,
    sends: Vec<(EventSpec, usize)>,
    cuts: Vec<usize>,
    shuffle_seed: u64,
) -> Result<(), TestCaseError> {
    // The stream: every send of every event, shuffled.
    let mut stream = Vec::new();
    for (spec, times) in &sends {
        let payload = payload(case, spec);
        let event_id = event_id_for(None, payload.to_string().as_bytes());
        let incoming = IncomingEvent {
            envelope: envelope(&event_id, payload),
            trace_id: None,
        };
        stream.extend(std::iter::repeat_n(incoming, *times));
    }
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        stream.shuffle(&mut rand::rngs::StdRng::seed_from_u64(shuffle_seed));
    }
    let mut rest = &stream[..];
    let mut cuts = cuts.into_iter().cycle();
    while !rest.is_empty() {
        let size = cuts.next().unwrap_or(1).min(rest.len());
        let (batch, tail) = rest.split_at(size);
        let refs: Vec<&IncomingEvent> = batch.iter().collect();
        store_batch(pool, &refs, chrono::Utc::now())
            .await
            .map_err(|e| TestCaseError::fail(format!("store_batch failed: {e}")))?;
        rest = tail;
    }

    // The model, from the distinct events.
    let mut by_call: BTreeMap<String, Vec<ModelEvent>> = BTreeMap::new();
    // Every distinct event, with its status if it carries one.
    let mut distinct: BTreeMap<String, Option<String>> = BTreeMap::new();
    for incoming in &stream {
        let envelope = &incoming.envelope;
        let event = &envelope.event;
        let status = event.call_status.as_ref().map(|s| s.as_str().to_owned());
        if distinct
            .insert(envelope.event_id.clone(), status.clone())
            .is_some()
        {
            continue;
        }
        // An event without a status changes no call_logs row.
        let Some(call_status) = status else {
            continue;
        };
        by_call
            .entry(event.call_id.clone())
            .or_default()
            .push(ModelEvent {
                event_id: envelope.event_id.clone(),
                fields: CallLogRow {
                    call_id: event.call_id.clone(),
                    accountcode: event.accountcode.clone(),
                    batch_id: event.batch_id,
                    phone_number: event.phone_number.clone(),
                    call_status,
                    disposition: event.disposition.clone(),
                    duration: event.duration,
                    start_time: event.start_time,
                    end_time: event.end_time,
                    recording_url: event.recording_url.clone(),
                    server_code: event.server_code.clone(),
                    error_message: event.error_message.clone(),
                    custom_data: event.custom_data.clone().map(Value::Object),
                },
            });
    }
    let model: BTreeMap<String, (CallLogRow, String)> = by_call
        .iter()
        .map(|(call, events)| (call.clone(), model_row(events)))
        .collect();

    // call_events: every distinct event once, status-less ones with a NULL status.
    let stored_events: BTreeMap<String, Option<String>> =
        sqlx::query_as("SELECT event_id, call_status FROM call_events WHERE call_id LIKE $1")
            .bind(format!("case{case}-%"))
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    prop_assert_eq!(stored_events, distinct);

    // call_logs
    let stored: Vec<CallLogRow> = sqlx::query_as(
        "SELECT call_id, accountcode, batch_id, phone_number, call_status, disposition,
                duration, start_time, end_time, recording_url, server_code, error_message,
                custom_data
           FROM call_logs WHERE call_id LIKE $1 ORDER BY call_id",
    )
    .bind(format!("case{case}-%"))
    .fetch_all(pool)
    .await
    .unwrap();
    let expected: Vec<CallLogRow> = model.values().map(|(row, _)| row.clone()).collect();
    prop_assert_eq!(stored, expected);

    // call_batches: counts of the calls' final statuses.
    let mut expected_batches: BTreeMap<i32, (i32, i32)> = BTreeMap::new();
    for (row, _) in model.values() {
        if let Some(batch_id) = row.batch_id {
            let counts = expected_batches.entry(batch_id).or_default();
            match rank(&row.call_status) {
                3 if row.call_status == "completed" => counts.0 += 1,
                3 => counts.1 += 1,
                _ => {}
            }
        }
    }
    let stored_batches: BTreeMap<i32, (i32, i32)> = sqlx::query_as::<_, (i32, i32, i32)>(
        "SELECT batch_id, completed_calls, failed_calls FROM call_batches
          WHERE batch_id BETWEEN $1 AND $1 + 9",
    )
    .bind(case as i32 * 10)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(batch, completed, failed)| (batch, (completed, failed)))
    .collect();
    prop_assert_eq!(stored_batches, expected_batches);

    // The outbox holds each terminal call's deciding event, and only terminal events.
    let outbox: BTreeSet<(String, String)> =
        sqlx::query_as("SELECT call_id, event_id FROM call_outcome_outbox WHERE call_id LIKE $1")
            .bind(format!("case{case}-%"))
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (call, (row, deciding)) in &model {
        if rank(&row.call_status) == 3 {
            prop_assert!(outbox.contains(&(call.clone(), deciding.clone())), "{call}");
        }
    }
    for (call, event_id) in &outbox {
        let terminal = by_call[call]
            .iter()
            .any(|e| &e.event_id == event_id && rank(&e.fields.call_status) == 3);
        prop_assert!(
            terminal,
            "outbox row {event_id} of {call} is not a terminal event"
        );
    }
    Ok(())
}

#[test]
fn stored_rows_equal_a_model_of_spec_6_for_any_stream() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_db, pool) = runtime.block_on(async {
        let db = callbridge_testkit::db::TestDb::new().await.unwrap();
        let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 4)
            .await
            .unwrap();
        (db, pool)
    });
    let case = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(stream(), any::<u64>()), |((sends, cuts), seed)| {
            case.set(case.get() + 1);
            runtime.block_on(check_case(&pool, case.get(), sends, cuts, seed))
        })
        .unwrap();
}
