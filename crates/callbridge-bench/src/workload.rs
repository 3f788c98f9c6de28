//! The synthetic traffic every stage uses: distinct, signed callbacks shaped like the
//! integration guide's payload, for calls that start, are answered and complete.
//!
//! Events come in waves of [`WAVE_CALLS`] calls: every call of a wave starts, then every
//! call of the wave is answered, then every one completes (as a dispatched batch does).
//! So any run of up to [`WAVE_CALLS`] consecutive events, aligned to a wave step, names
//! each call once: a batched upsert of such a run never touches a row twice, and two
//! out of three events update a row an earlier one inserted.

use std::ops::Range;

use callbridge_ingress::message::CallbackMessage;
use callbridge_types::event::{CallbackEvent, parse_callback};
use callbridge_types::signature::sign_hex;
use chrono::{Duration, NaiveDate, Utc};
use serde_json::{Value, json};

/// Calls per wave; also the largest batch that never names a call twice.
pub const WAVE_CALLS: usize = 1_000;
/// Account code of every synthetic callback.
pub const ACCOUNTCODE: &str = "BENCH";
/// Calls per `batch_id`, as a campaign of `callbridge enqueue` would group them.
const CALLS_PER_BATCH: usize = 500;

/// Which event of its call a callback is.
const STEPS: [&str; 3] = ["call_started", "call_answered", "call_completed"];

/// One callback as the centralized system would send it, and as the ingress reads it.
#[derive(Debug, Clone)]
pub struct Callback {
    /// The raw JSON body.
    pub body: Vec<u8>,
    /// `X-Signature`: hex HMAC-SHA256 of the body.
    pub signature: String,
    /// The body validated and normalised, as the ingress's checks produce it.
    pub event: CallbackEvent,
}

impl Callback {
    /// The AMQP message the ingress publishes for this callback (its real envelope and
    /// properties, received now).
    pub fn message(&self) -> CallbackMessage {
        CallbackMessage::new(None, &self.body, Utc::now(), self.event.clone())
    }
}

/// `count` distinct callbacks, in wave order (see the module docs), signed with
/// `secret`. `run_tag` goes into every call id, so runs sharing a database or queue
/// never collide.
pub fn callbacks(count: usize, run_tag: &str, secret: &[u8]) -> Vec<Callback> {
    (0..count).map(|i| callback(i, run_tag, secret)).collect()
}

/// The `index`-th callback of the sequence [`callbacks`] makes.
pub fn callback(index: usize, run_tag: &str, secret: &[u8]) -> Callback {
    let body = raw_body(index, run_tag);
    let validated =
        parse_callback(&body, ACCOUNTCODE).expect("the synthetic payload is a valid callback");
    Callback {
        signature: sign_hex(secret, &body),
        body,
        event: validated.event,
    }
}

/// Just what a sender puts on the wire: the body and its `X-Signature`.
#[derive(Debug, Clone)]
pub struct SignedBody {
    pub body: Vec<u8>,
    pub signature: String,
}

/// Callbacks `indexes` of the sequence [`callbacks`] makes, as sent (no validation, so
/// a load generator can prepare many cheaply).
pub fn signed_bodies(indexes: Range<usize>, run_tag: &str, secret: &[u8]) -> Vec<SignedBody> {
    indexes
        .map(|index| {
            let body = raw_body(index, run_tag);
            SignedBody {
                signature: sign_hex(secret, &body),
                body,
            }
        })
        .collect()
}

/// The JSON body of the `index`-th callback.
fn raw_body(index: usize, run_tag: &str) -> Vec<u8> {
    let wave = index / (WAVE_CALLS * STEPS.len());
    let within = index % (WAVE_CALLS * STEPS.len());
    let step = within / WAVE_CALLS;
    let call = wave * WAVE_CALLS + within % WAVE_CALLS;
    serde_json::to_vec(&payload(call, step, run_tag)).expect("a JSON value always serialises")
}

/// Every field of the guide's payload: what a real sender fills in at each step.
fn payload(call: usize, step: usize, run_tag: &str) -> Value {
    let started = NaiveDate::from_ymd_opt(2024, 1, 1)
        .and_then(|d| d.and_hms_opt(10, 0, 0))
        .expect("a valid date")
        + Duration::seconds((call % 86_400) as i64);
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (status, disposition, duration, end_time, recording_url) = match step {
        0 => ("started", "dialing", 0, Value::Null, Value::Null),
        1 => ("answered", "answered", 0, Value::Null, Value::Null),
        _ => (
            "completed",
            "answered",
            120,
            Value::String(fmt(started + Duration::seconds(120))),
            Value::String(format!(
                "https://recordings.example.com/{run_tag}/call_{call}.wav"
            )),
        ),
    };
    json!({
        "event_type": STEPS[step],
        "accountcode": ACCOUNTCODE,
        "batch_id": 1 + call / CALLS_PER_BATCH,
        "call_id": format!("bench-{run_tag}-{call}"),
        "phone_number": format!("98{:08}", call % 100_000_000),
        "call_status": status,
        "disposition": disposition,
        "duration": duration,
        "start_time": fmt(started),
        "end_time": end_time,
        "recording_url": recording_url,
        "custom_data": {"customer_id": format!("CUST{call:06}"), "campaign_id": "CAMP001"},
        "server_code": "server1",
        "error_message": null
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use callbridge_types::signature::verify_x_signature;
    use callbridge_types::status::CallStatus;

    use super::*;

    #[test]
    fn callbacks_are_distinct_signed_and_valid() {
        let all = callbacks(3 * WAVE_CALLS + 10, "t", b"secret");
        let bodies: HashSet<&[u8]> = all.iter().map(|c| c.body.as_slice()).collect();
        assert_eq!(bodies.len(), all.len(), "every body is distinct");
        for callback in &all {
            verify_x_signature(&[b"secret"], Some(&callback.signature), &callback.body).unwrap();
        }
    }

    #[test]
    fn a_wave_starts_answers_then_completes_each_of_its_calls_once() {
        let all = callbacks(2 * 3 * WAVE_CALLS, "t", b"s");
        for chunk in all.chunks(WAVE_CALLS) {
            let ids: HashSet<&str> = chunk.iter().map(|c| c.event.call_id.as_str()).collect();
            assert_eq!(
                ids.len(),
                WAVE_CALLS,
                "no call twice within an aligned batch"
            );
        }
        let first_call: Vec<&Callback> = all
            .iter()
            .filter(|c| c.event.call_id == "bench-t-0")
            .collect();
        let statuses: Vec<Option<&CallStatus>> = first_call
            .iter()
            .map(|c| c.event.call_status.as_ref())
            .collect();
        assert_eq!(
            statuses,
            [
                Some(&CallStatus::Started),
                Some(&CallStatus::Answered),
                Some(&CallStatus::Completed)
            ]
        );
        assert_eq!(first_call[2].event.duration, Some(120));
        // The second wave holds the next thousand calls.
        assert_eq!(
            all[3 * WAVE_CALLS].event.call_id,
            format!("bench-t-{WAVE_CALLS}")
        );
    }

    #[test]
    fn signed_bodies_are_the_same_callbacks_without_validation() {
        let bodies = signed_bodies(5..8, "t", b"s");
        let full = callbacks(8, "t", b"s");
        for (signed, callback) in bodies.iter().zip(&full[5..]) {
            assert_eq!(signed.body, callback.body);
            assert_eq!(signed.signature, callback.signature);
        }
    }

    #[test]
    fn the_message_is_the_envelope_the_ingress_publishes() {
        let callback = callback(0, "t", b"s");
        let message = callback.message();
        let envelope = callbridge_types::envelope::Envelope::decode(&message.body).unwrap();
        assert_eq!(envelope.event, callback.event);
        assert_eq!(message.routing_key, "callback.call_started");
    }
}
