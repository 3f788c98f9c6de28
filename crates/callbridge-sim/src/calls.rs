//! Placing a call: which events it produces, when, and with what payload.

use std::time::Duration;

use callbridge_types::event::EventType;
use callbridge_types::status::CallStatus;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;

use crate::config::Outcome;
use crate::ground_truth::CallTruth;

/// The callback body: the seed's payload with every field present (`null` where the event
/// has no value), in the seed's field order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallbackPayload {
    pub event_type: String,
    pub accountcode: String,
    pub batch_id: i32,
    pub call_id: String,
    pub phone_number: String,
    pub call_status: String,
    pub disposition: Option<String>,
    pub duration: u32,
    pub start_time: String,
    pub end_time: Option<String>,
    pub recording_url: Option<String>,
    pub custom_data: Option<serde_json::Value>,
    pub server_code: String,
    pub error_message: Option<String>,
}

/// One callback of a call and how long after the previous one (or after the dispatch, for
/// the first) it happens, in simulated time.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub after: Duration,
    pub payload: CallbackPayload,
}

/// Who places the calls: the identity callbacks carry.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub accountcode: String,
    pub server_code: String,
}

const FAILURE_REASONS: [&str; 3] = [
    "Network congestion (cause 34)",
    "Channel unavailable (cause 44)",
    "Number unobtainable (cause 1)",
];

impl Dialer {
    /// The events of `call` ending in `outcome`, with realistic timing: 0.5–3 s to set up,
    /// 3–20 s of ringing then 15–240 s of talk when answered, 1–5 s to a busy signal,
    /// 25–45 s of ringing before no answer, up to 3 s to a failure, 60 s to a timeout.
    pub fn plan(
        &self,
        call: &CallTruth,
        outcome: Outcome,
        dispatched_at: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Vec<PlannedEvent> {
        let setup = millis(rng.random_range(500..=3_000));
        let start_time = dispatched_at + setup;
        let started = self.payload(
            call,
            EventType::CallStarted,
            CallStatus::Started,
            start_time,
        );
        let mut events = vec![PlannedEvent {
            after: as_std(setup),
            payload: started,
        }];

        let (terminal_after, terminal) = match outcome {
            Outcome::Completed => {
                let ringing = seconds(rng.random_range(3..=20));
                let mut answered = self.payload(
                    call,
                    EventType::CallAnswered,
                    CallStatus::Answered,
                    start_time,
                );
                answered.disposition = Some("answered".into());
                events.push(PlannedEvent {
                    after: as_std(ringing),
                    payload: answered,
                });

                let talk = seconds(rng.random_range(15..=240));
                let end_time = start_time + ringing + talk;
                let mut completed = self.ended(call, outcome, start_time, end_time);
                completed.disposition = Some("answered".into());
                completed.duration = whole_seconds(end_time - start_time);
                completed.recording_url = Some(format!(
                    "https://recordings.sim.callbridge.invalid/{}.wav",
                    call.call_id
                ));
                (talk, completed)
            }
            Outcome::Busy => {
                let until = seconds(rng.random_range(1..=5));
                (
                    until,
                    self.ended(call, outcome, start_time, start_time + until),
                )
            }
            Outcome::NoAnswer => {
                let until = seconds(rng.random_range(25..=45));
                (
                    until,
                    self.ended(call, outcome, start_time, start_time + until),
                )
            }
            Outcome::Failed => {
                let until = millis(rng.random_range(0..=3_000));
                let mut failed = self.ended(call, outcome, start_time, start_time + until);
                let reason = FAILURE_REASONS[rng.random_range(0..FAILURE_REASONS.len())];
                failed.error_message = Some(reason.into());
                (until, failed)
            }
            Outcome::Timeout => {
                let until = seconds(60);
                let mut timed_out = self.ended(call, outcome, start_time, start_time + until);
                timed_out.error_message = Some("No answer supervision within 60 s".into());
                (until, timed_out)
            }
        };
        events.push(PlannedEvent {
            after: as_std(terminal_after),
            payload: terminal,
        });
        events
    }

    fn payload(
        &self,
        call: &CallTruth,
        event_type: EventType,
        status: CallStatus,
        start_time: DateTime<Utc>,
    ) -> CallbackPayload {
        CallbackPayload {
            event_type: event_type.as_str().to_owned(),
            accountcode: self.accountcode.clone(),
            batch_id: call.batch_id,
            call_id: call.call_id.clone(),
            phone_number: call.phone_number.clone(),
            call_status: status.as_str().to_owned(),
            disposition: None,
            duration: 0,
            start_time: timestamp(start_time),
            end_time: None,
            recording_url: None,
            custom_data: call.custom_data.clone(),
            server_code: self.server_code.clone(),
            error_message: None,
        }
    }

    /// The terminal event of `outcome`; its disposition is the outcome itself unless the
    /// caller overrides it.
    fn ended(
        &self,
        call: &CallTruth,
        outcome: Outcome,
        start_time: DateTime<Utc>,
        end_time: DateTime<Utc>,
    ) -> CallbackPayload {
        let mut payload = self.payload(call, outcome.event_type(), outcome.status(), start_time);
        payload.disposition = Some(outcome.status().as_str().to_owned());
        payload.end_time = Some(timestamp(end_time));
        payload
    }
}

/// RFC 3339 in UTC with a `Z`, whole seconds, as in the seed's example payload.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn seconds(count: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(count)
}

fn millis(count: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(count)
}

fn as_std(delta: chrono::TimeDelta) -> Duration {
    delta.to_std().unwrap_or_default()
}

fn whole_seconds(delta: chrono::TimeDelta) -> u32 {
    u32::try_from(delta.num_seconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::ground_truth::CallState;

    fn call() -> CallTruth {
        CallTruth {
            call_id: "sim-7-0-t".into(),
            batch_id: 7,
            phone_number: "9876543210".into(),
            custom_data: Some(serde_json::json!({"customer_id": "CUST001"})),
            accepted_at: chrono::Utc::now(),
            state: CallState::InProgress,
            outcome: Some(Outcome::Completed),
            reordered: false,
            events: Vec::new(),
        }
    }

    fn dialer() -> Dialer {
        Dialer {
            accountcode: "ACC".into(),
            server_code: "sim1".into(),
        }
    }

    #[test]
    fn answered_call_starts_answers_then_completes_with_a_duration() {
        let mut rng = StdRng::seed_from_u64(1);
        let events = dialer().plan(&call(), Outcome::Completed, Utc::now(), &mut rng);
        let types: Vec<&str> = events
            .iter()
            .map(|e| e.payload.event_type.as_str())
            .collect();
        assert_eq!(types, ["call_started", "call_answered", "call_completed"]);

        let completed = &events[2].payload;
        assert_eq!(completed.call_status, "completed");
        assert_eq!(completed.disposition.as_deref(), Some("answered"));
        assert!(completed.duration > 0);
        assert!(completed.recording_url.is_some());
        let start = DateTime::parse_from_rfc3339(&completed.start_time).unwrap();
        let end = DateTime::parse_from_rfc3339(completed.end_time.as_deref().unwrap()).unwrap();
        assert_eq!((end - start).num_seconds(), i64::from(completed.duration));
    }

    #[test]
    fn unanswered_outcomes_are_one_terminal_event_after_started() {
        let mut rng = StdRng::seed_from_u64(2);
        for outcome in [
            Outcome::Busy,
            Outcome::NoAnswer,
            Outcome::Failed,
            Outcome::Timeout,
        ] {
            let events = dialer().plan(&call(), outcome, Utc::now(), &mut rng);
            assert_eq!(events.len(), 2, "{outcome}");
            assert_eq!(events[0].payload.event_type, "call_started");
            assert_eq!(events[1].payload.event_type, outcome.event_type().as_str());
            assert_eq!(events[1].payload.call_status, outcome.status().as_str());
            assert_eq!(events[1].payload.duration, 0);
            assert!(events[1].payload.end_time.is_some());
        }
    }

    #[test]
    fn payload_serialises_every_seed_field() {
        let mut rng = StdRng::seed_from_u64(3);
        let events = dialer().plan(&call(), Outcome::Busy, Utc::now(), &mut rng);
        let body = serde_json::to_value(&events[0].payload).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = callbridge_types::event::SEED_FIELDS.to_vec();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys_sorted, expected);
    }
}
