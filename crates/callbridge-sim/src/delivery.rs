//! Sending a call's callbacks like a real webhook sender: signed over the exact bytes
//! sent, one event after the other at the simulated times, each retried with exponential
//! backoff and jitter until a 2xx or the attempt limit.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use callbridge_types::signature::{
    WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, X_SIGNATURE_HEADER,
    sign_hex, sign_standard,
};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::calls::{CallbackPayload, PlannedEvent};
use crate::config::Knobs;
use crate::ground_truth::CallState;
use crate::state::SimState;
use crate::store::CallRef;

/// Fast mode's retry backoff: small enough for tests, large enough not to spin.
const FAST_RETRY_BASE: Duration = Duration::from_millis(5);
const FAST_RETRY_MAX: Duration = Duration::from_millis(200);

/// Delivers every event of one call, in order (or reversed, after the call ended, when
/// `reordered`), and marks the call ended when its last event is due.
#[tracing::instrument(skip_all, fields(call_id = %plan.first().map_or("", |e| e.payload.call_id.as_str())))]
pub(crate) async fn deliver_call(
    state: Arc<SimState>,
    call: CallRef,
    plan: Vec<PlannedEvent>,
    reordered: bool,
    cancel: CancellationToken,
) {
    struct Finished<'a>(&'a SimState);
    impl Drop for Finished<'_> {
        fn drop(&mut self) {
            self.0.call_delivery_finished();
        }
    }
    let _finished = Finished(&state);

    let dispatched_at = Instant::now();
    let mut due_after = Duration::ZERO;
    let due: Vec<Duration> = plan
        .iter()
        .map(|event| {
            due_after += event.after;
            due_after
        })
        .collect();
    let last = plan.len().saturating_sub(1);

    if reordered {
        if !sleep_until(
            &cancel,
            dispatched_at + simulated(&state.knobs(), due[last]),
        )
        .await
        {
            return;
        }
        state
            .store()
            .update_call(call, |record| record.state = CallState::Ended);
        for event in plan.iter().rev() {
            if !deliver_event(&state, call, &event.payload, &cancel).await {
                return;
            }
        }
        return;
    }

    for (position, event) in plan.iter().enumerate() {
        if !sleep_until(
            &cancel,
            dispatched_at + simulated(&state.knobs(), due[position]),
        )
        .await
        {
            return;
        }
        if position == last {
            state
                .store()
                .update_call(call, |record| record.state = CallState::Ended);
        }
        if !deliver_event(&state, call, &event.payload, &cancel).await {
            return;
        }
    }
}

/// Real time for a simulated delay under the live knobs.
fn simulated(knobs: &Knobs, delay: Duration) -> Duration {
    if knobs.fast {
        Duration::ZERO
    } else {
        delay.mul_f64(knobs.time_scale)
    }
}

/// Sleeps unless cancelled; `false` when cancelled.
async fn sleep_until(cancel: &CancellationToken, deadline: Instant) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep_until(deadline) => true,
    }
}

/// Sends one callback until acknowledged or given up, then perhaps a byte-identical
/// duplicate. `false` only when cancelled.
async fn deliver_event(
    state: &SimState,
    call: CallRef,
    payload: &CallbackPayload,
    cancel: &CancellationToken,
) -> bool {
    let body = match serde_json::to_vec(payload) {
        Ok(body) => Bytes::from(body),
        Err(error) => {
            tracing::error!(%error, "could not serialise a callback payload");
            return true;
        }
    };
    let target = state.callback_target();
    let signed = Signed {
        x_signature: sign_hex(target.secret.expose().as_bytes(), &body),
        // Stable across retries and duplicates, as Standard Webhooks requires.
        webhook_id: format!("{}.{}", payload.call_id, payload.event_type),
        secret: target.secret.expose().as_bytes().to_vec(),
        body,
    };
    let event = state
        .store()
        .begin_event(call, &payload.event_type, &payload.call_status);

    let outcome = send_with_retries(state, &signed, cancel, |attempt| {
        state.store().update_event(call, event, |record| {
            record.attempts += 1;
            record.last_status = attempt.status;
            record.last_error.clone_from(&attempt.error);
            record.acknowledged |= attempt.acknowledged();
        });
    })
    .await;
    match outcome {
        Delivery::Cancelled => return false,
        Delivery::GaveUp => {
            tracing::warn!(event_type = %payload.event_type, "callback undelivered, giving up");
            state
                .store()
                .update_event(call, event, |record| record.gave_up = true);
            return true;
        }
        Delivery::Acknowledged => {}
    }

    if state.chance(state.knobs().duplicate_rate) {
        let duplicate = send_with_retries(state, &signed, cancel, |attempt| {
            state.store().update_event(call, event, |record| {
                record.duplicates_sent += 1;
                record.duplicates_acknowledged += u32::from(attempt.acknowledged());
            });
        })
        .await;
        if matches!(duplicate, Delivery::Cancelled) {
            return false;
        }
    }
    true
}

/// One callback's bytes and what signs them.
struct Signed {
    body: Bytes,
    x_signature: String,
    webhook_id: String,
    secret: Vec<u8>,
}

enum Delivery {
    Acknowledged,
    GaveUp,
    Cancelled,
}

/// What one HTTP attempt got.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
}

impl Attempt {
    fn acknowledged(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }
}

/// Sends `signed` until acknowledged, to the callback URL in force at each attempt (a
/// sender reconfigured to a new endpoint retries there, not at the old one).
async fn send_with_retries(
    state: &SimState,
    signed: &Signed,
    cancel: &CancellationToken,
    mut record: impl FnMut(&Attempt),
) -> Delivery {
    let mut attempt_number: u32 = 0;
    loop {
        attempt_number += 1;
        let knobs = state.knobs();
        let url = state.callback_target().url;
        let attempt = tokio::select! {
            () = cancel.cancelled() => return Delivery::Cancelled,
            attempt = send_once(state, &knobs, &url, signed) => attempt,
        };
        record(&attempt);
        if attempt.acknowledged() {
            return Delivery::Acknowledged;
        }
        if attempt_number >= knobs.callback_max_attempts {
            return Delivery::GaveUp;
        }
        let delay = retry_delay(state, &knobs, attempt_number, attempt.retry_after);
        if !sleep_until(cancel, Instant::now() + delay).await {
            return Delivery::Cancelled;
        }
    }
}

#[tracing::instrument(skip_all)]
async fn send_once(
    state: &SimState,
    knobs: &Knobs,
    url: &reqwest::Url,
    signed: &Signed,
) -> Attempt {
    // Bounds open sockets: a 10 000-call dispatch waits here instead of connecting at once.
    let Ok(_permit) = state.send_permits.acquire().await else {
        return Attempt {
            status: None,
            error: Some("sender closed".into()),
            retry_after: None,
        };
    };
    let mut request = state
        .http
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(X_SIGNATURE_HEADER, &signed.x_signature)
        .timeout(Duration::from_millis(knobs.callback_timeout_ms))
        .body(signed.body.clone());
    if knobs.standard_webhooks {
        // The timestamp is the attempt's own, so a retry is not refused as a replay.
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign_standard(&signed.secret, &signed.webhook_id, timestamp, &signed.body);
        request = request
            .header(WEBHOOK_ID_HEADER, &signed.webhook_id)
            .header(WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE_HEADER, signature);
    }
    let sent = request.send().await;
    match sent {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Attempt {
                status: Some(response.status().as_u16()),
                error: None,
                retry_after,
            }
        }
        Err(error) => {
            tracing::debug!(%error, "callback attempt failed");
            Attempt {
                status: None,
                error: Some(describe(&error)),
                retry_after: None,
            }
        }
    }
}

/// Exponential backoff with equal jitter; a receiver's `Retry-After` is honoured (within
/// the cap) except in fast mode.
fn retry_delay(
    state: &SimState,
    knobs: &Knobs,
    attempt_number: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let (base, cap) = if knobs.fast {
        (FAST_RETRY_BASE, FAST_RETRY_MAX)
    } else {
        (
            Duration::from_millis(knobs.callback_retry_base_ms),
            Duration::from_millis(knobs.callback_retry_max_ms),
        )
    };
    let exponent = attempt_number.saturating_sub(1).min(20);
    let backoff = base.saturating_mul(1 << exponent).min(cap);
    let half = backoff / 2;
    let jitter = state.with_rng(|rng| rng.random_range(0..=half.as_millis() as u64));
    let delay = half + Duration::from_millis(jitter);
    match retry_after {
        Some(asked) if !knobs.fast => delay.max(asked.min(cap)),
        _ => delay,
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connection refused or unreachable".into()
    } else {
        "connection error".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    fn state(knobs: serde_json::Value) -> SimState {
        let config = SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap();
        let state = SimState::new(&config).unwrap();
        state.patch_knobs(&knobs).unwrap();
        state
    }

    #[tokio::test]
    async fn backoff_doubles_with_jitter_up_to_the_cap() {
        let state = state(serde_json::json!({
            "fast": false, "callback_retry_base_ms": 1000, "callback_retry_max_ms": 8000
        }));
        let knobs = state.knobs();
        for (attempt, low, high) in [
            (1, 500, 1000),
            (2, 1000, 2000),
            (3, 2000, 4000),
            (9, 4000, 8000),
        ] {
            let delay = retry_delay(&state, &knobs, attempt, None).as_millis();
            assert!(
                (low..=high).contains(&delay),
                "attempt {attempt}: {delay} ms"
            );
        }
    }

    #[tokio::test]
    async fn retry_after_is_honoured_within_the_cap_except_in_fast_mode() {
        let state = state(serde_json::json!({
            "fast": false, "callback_retry_base_ms": 100, "callback_retry_max_ms": 30000
        }));
        let knobs = state.knobs();
        let asked = Some(Duration::from_secs(20));
        assert_eq!(
            retry_delay(&state, &knobs, 1, asked),
            Duration::from_secs(20)
        );
        let beyond_cap = Some(Duration::from_secs(600));
        assert_eq!(
            retry_delay(&state, &knobs, 1, beyond_cap),
            Duration::from_secs(30)
        );

        let fast = Knobs {
            fast: true,
            ..knobs
        };
        assert!(retry_delay(&state, &fast, 1, asked) <= FAST_RETRY_MAX);
        assert!(retry_delay(&state, &fast, 30, None) <= FAST_RETRY_MAX);
    }
}
