//! Callbacks: signed over the exact bytes, every seed field, event order per call,
//! outcomes from the mix, retries with backoff, duplicates, reordering, bounded
//! concurrency, and a ground truth that matches what the receiver acknowledged.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use callbridge_sim::{Outcome, SimConfig, Simulator};
use callbridge_types::event::{SEED_FIELDS, validate_callback};
use callbridge_types::signature::{verify_standard, verify_x_signature};
use common::*;
use serde_json::json;

/// The event sequence a call with `outcome` must produce, in order.
fn expected_events(outcome: Outcome) -> Vec<String> {
    let mut events = vec!["call_started".to_owned()];
    if outcome == Outcome::Completed {
        events.push("call_answered".to_owned());
    }
    events.push(outcome.event_type().as_str().to_owned());
    events
}

#[tokio::test]
async fn every_callback_is_signed_complete_valid_and_in_order_per_call() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(&receiver.url, json!({})).await;
    let batch = numbers(100, 40);
    run_batch(&sim, 100, &batch).await;

    let received = receiver.received();
    for callback in &received {
        verify_x_signature(
            &[CALLBACK_SECRET],
            callback.signature.as_deref(),
            &callback.body,
        )
        .expect("signature over the exact bytes received");
        assert_eq!(callback.content_type.as_deref(), Some("application/json"));
        let body = callback.json();
        let object = body.as_object().unwrap();
        for field in SEED_FIELDS {
            assert!(object.contains_key(field), "{field} missing from {body}");
        }
        assert_eq!(body["accountcode"], "SIM001");
        assert_eq!(body["batch_id"], 100);
        let number = body["phone_number"].as_str().unwrap();
        assert_eq!(
            body["custom_data"],
            json!({"customer_id": format!("C-{number}")})
        );
        // What the ingress will accept, field for field.
        let event = validate_callback(&callback.body, "FALLBACK").expect("a valid callback");
        assert_eq!(
            event.call_status.as_ref().map(|status| status.as_str()),
            Some(body["call_status"].as_str().unwrap())
        );
    }

    let truth = sim.ground_truth(Some(100));
    assert_eq!(truth.calls.len(), 40);
    let by_call = receiver.events_by_call();
    assert_eq!(by_call.len(), 40, "every call reported");
    for call in &truth.calls {
        let outcome = call.outcome.expect("dispatched calls have an outcome");
        assert_eq!(
            by_call[&call.call_id],
            expected_events(outcome),
            "{}",
            call.call_id
        );
        assert!(call.all_acknowledged());
        assert!(call.events.iter().all(|event| event.attempts == 1));
    }
    assert_eq!(truth.totals.callbacks_acknowledged, received.len());
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn terminal_events_carry_the_outcome_fields() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(
        &receiver.url,
        json!({"outcome_mix": {"completed": 1, "failed": 1}}),
    )
    .await;
    run_batch(&sim, 101, &numbers(101, 20)).await;

    let outcomes: BTreeMap<String, Outcome> = sim
        .ground_truth(Some(101))
        .calls
        .iter()
        .map(|call| (call.call_id.clone(), call.outcome.unwrap()))
        .collect();
    for callback in receiver.received() {
        let body = callback.json();
        match body["event_type"].as_str().unwrap() {
            "call_completed" => {
                assert_eq!(outcomes[&callback.call_id()], Outcome::Completed);
                assert_eq!(body["disposition"], "answered");
                assert!(body["duration"].as_u64().unwrap() > 0);
                assert!(body["end_time"].is_string());
                assert!(body["recording_url"].is_string());
            }
            "call_failed" => {
                assert_eq!(outcomes[&callback.call_id()], Outcome::Failed);
                assert!(body["error_message"].is_string());
                assert!(body["end_time"].is_string());
            }
            "call_started" | "call_answered" => {
                assert!(body["end_time"].is_null());
                assert_eq!(body["duration"], 0);
            }
            other => panic!("unexpected event {other}"),
        }
    }
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn outcome_mix_decides_every_outcome() {
    let receiver = Receiver::start().await;
    for outcome in Outcome::ALL {
        let sim = spawn_sim(
            &receiver.url,
            json!({"outcome_mix": {outcome.to_string(): 1}}),
        )
        .await;
        run_batch(&sim, 102, &numbers(102, 5)).await;
        let truth = sim.ground_truth(None);
        assert!(
            truth.calls.iter().all(|call| call.outcome == Some(outcome)),
            "{outcome}"
        );
        assert!(
            truth
                .calls
                .iter()
                .all(|call| call.events.last().unwrap().call_status == outcome.to_string())
        );
        sim.stop().await;
    }
    receiver.stop().await;
}

#[tokio::test]
async fn undelivered_callback_is_retried_with_identical_bytes_until_acknowledged() {
    let receiver = Receiver::start().await;
    receiver.script([
        Scripted::Status(503),
        Scripted::Status(500),
        Scripted::Status(404),
    ]);
    let sim = spawn_sim(&receiver.url, json!({"outcome_mix": {"busy": 1}})).await;
    run_batch(&sim, 103, &numbers(103, 1)).await;

    let received = receiver.received();
    // Three refusals of call_started, its acknowledged retry, then call_busy.
    assert_eq!(received.len(), 5);
    for retry in &received[1..4] {
        assert_eq!(retry.body, received[0].body);
        assert_eq!(retry.signature, received[0].signature);
    }
    let call = &sim.ground_truth(None).calls[0];
    assert_eq!(call.events[0].attempts, 4);
    assert!(call.events[0].acknowledged);
    assert_eq!(call.events[0].last_status, Some(200));
    assert_eq!(call.events[1].attempts, 1);
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_callback_that_times_out_is_retried() {
    let receiver = Receiver::start().await;
    receiver.script([Scripted::SlowOk(Duration::from_secs(2))]);
    let sim = spawn_sim(
        &receiver.url,
        json!({"outcome_mix": {"busy": 1}, "callback_timeout_ms": 200}),
    )
    .await;
    run_batch(&sim, 104, &numbers(104, 1)).await;

    let call = &sim.ground_truth(None).calls[0];
    assert_eq!(call.events[0].attempts, 2);
    assert!(call.events[0].acknowledged);
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn sender_gives_up_after_max_attempts_and_the_ground_truth_says_so() {
    let receiver = Receiver::start().await;
    receiver.script([Scripted::Status(500); 3]);
    let sim = spawn_sim(
        &receiver.url,
        json!({"outcome_mix": {"busy": 1}, "callback_max_attempts": 3}),
    )
    .await;
    run_batch(&sim, 105, &numbers(105, 1)).await;

    let call = &sim.ground_truth(None).calls[0];
    let started = &call.events[0];
    assert_eq!(
        (started.attempts, started.acknowledged, started.gave_up),
        (3, false, true)
    );
    assert_eq!(started.last_status, Some(500));
    // The call goes on: its outcome is still reported.
    assert!(call.events[1].acknowledged);
    assert_eq!(sim.ground_truth(None).totals.callbacks_given_up, 1);
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn duplicate_rate_resends_each_acknowledged_callback_byte_for_byte() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(&receiver.url, json!({"duplicate_rate": 1.0})).await;
    run_batch(&sim, 106, &numbers(106, 5)).await;

    let received = receiver.received();
    let truth = sim.ground_truth(None);
    let distinct: usize = truth.calls.iter().map(|call| call.events.len()).sum();
    assert_eq!(received.len(), 2 * distinct);
    let mut copies: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for callback in &received {
        *copies.entry(callback.body.to_vec()).or_default() += 1;
    }
    assert!(copies.values().all(|count| *count == 2));
    assert_eq!(truth.totals.duplicates_sent as usize, distinct);
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn reorder_rate_sends_each_calls_events_in_reverse() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(&receiver.url, json!({"reorder_rate": 1.0})).await;
    run_batch(&sim, 107, &numbers(107, 10)).await;

    let by_call = receiver.events_by_call();
    for call in sim.ground_truth(None).calls {
        assert!(call.reordered);
        let mut expected = expected_events(call.outcome.unwrap());
        expected.reverse();
        assert_eq!(by_call[&call.call_id], expected);
    }
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn concurrent_callback_requests_stay_within_the_configured_bound() {
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    let mut config = SimConfig::for_tests(&receiver.url).unwrap();
    config.callback_concurrency = 3;
    let sim = Simulator::spawn(config).await.unwrap();
    run_batch(&sim, 108, &numbers(108, 30)).await;

    assert!(receiver.received().len() >= 60);
    assert!(
        receiver.max_in_flight() <= 3,
        "saw {}",
        receiver.max_in_flight()
    );
    assert!(receiver.max_in_flight() >= 2, "requests did overlap");
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn real_time_mode_follows_the_plan_scaled_down() {
    let receiver = Receiver::start().await;
    // 1/1000 of real time: a 60 s timeout becomes 60 ms; no fast mode.
    let sim = spawn_sim(&receiver.url, json!({"fast": false, "time_scale": 0.001})).await;
    run_batch(&sim, 109, &numbers(109, 10)).await;

    let by_call = receiver.events_by_call();
    for call in sim.ground_truth(None).calls {
        assert_eq!(
            by_call[&call.call_id],
            expected_events(call.outcome.unwrap())
        );
    }
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn callback_target_and_secret_can_change_at_runtime() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let sim = spawn_sim(&first.url, json!({"outcome_mix": {"busy": 1}})).await;
    let changed = client()
        .put(format!("{}/admin/callback", sim.base_url()))
        .json(&json!({"url": second.url, "secret": "rotated-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    run_batch(&sim, 110, &numbers(110, 2)).await;

    assert!(first.received().is_empty());
    let received = second.received();
    assert_eq!(received.len(), 4);
    for callback in received {
        verify_x_signature(
            &["rotated-secret"],
            callback.signature.as_deref(),
            &callback.body,
        )
        .unwrap();
    }
    sim.stop().await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_retry_goes_to_the_callback_url_in_force_at_that_attempt() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    // The first endpoint refuses call_started (and every retry), then goes away for good.
    first.script((0..10_000).map(|_| Scripted::Status(503)));
    let sim = spawn_sim(
        &first.url,
        json!({"outcome_mix": {"busy": 1}, "callback_max_attempts": 1000}),
    )
    .await;
    assert_eq!(insert(&sim, 111, &numbers(111, 1)).await.status(), 201);
    assert_eq!(dispatch(&sim, "").await.status(), 200);
    eventually("the first endpoint refused call_started", || {
        !first.received().is_empty()
    })
    .await;
    first.stop().await;
    sim.set_callback(Some(second.url.parse().unwrap()), None);

    assert!(sim.wait_idle(Duration::from_secs(30)).await);
    let call = &sim.ground_truth(None).calls[0];
    assert!(
        call.events
            .iter()
            .all(|event| event.acknowledged && !event.gave_up),
        "{call:?}"
    );
    assert_eq!(
        second
            .received()
            .iter()
            .map(Received::event_type)
            .collect::<Vec<_>>(),
        ["call_started", "call_busy"],
        "the retried call_started went to the new endpoint"
    );
    sim.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn wait_idle_endpoint_reports_when_deliveries_are_done() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(&receiver.url, json!({})).await;
    assert_eq!(insert(&sim, 111, &numbers(111, 3)).await.status(), 201);
    assert_eq!(dispatch(&sim, "").await.status(), 200);
    let idle: serde_json::Value = client()
        .get(format!(
            "{}/admin/wait-idle?timeout_ms=30000",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(idle, json!({"idle": true, "pending_calls": 0}));
    assert!(
        sim.ground_truth(None)
            .calls
            .iter()
            .all(|call| call.all_acknowledged())
    );
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn reset_stops_deliveries_of_calls_still_in_progress() {
    let receiver = Receiver::start().await;
    // Real time: a timed-out call takes over a minute before its last event.
    let sim = spawn_sim(
        &receiver.url,
        json!({"fast": false, "time_scale": 1.0, "outcome_mix": {"timeout": 1}}),
    )
    .await;
    assert_eq!(insert(&sim, 112, &numbers(112, 3)).await.status(), 201);
    assert_eq!(dispatch(&sim, "").await.status(), 200);
    assert_eq!(sim.ground_truth(None).pending_calls, 3);

    sim.reset();
    assert!(
        sim.wait_idle(Duration::from_secs(20)).await,
        "cancelled deliveries finish long before the calls would have"
    );
    let truth = sim.ground_truth(None);
    assert!(truth.calls.is_empty());
    assert!(
        receiver
            .received()
            .iter()
            .all(|callback| callback.event_type() == "call_started")
    );
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn standard_webhooks_signatures_verify_and_keep_their_id_across_retries() {
    let receiver = Receiver::start().await;
    receiver.script([Scripted::Status(503)]);
    let sim = spawn_sim(
        &receiver.url,
        json!({"standard_webhooks": true, "outcome_mix": {"busy": 1}}),
    )
    .await;
    run_batch(&sim, 113, &numbers(113, 2)).await;

    let received = receiver.received();
    assert_eq!(
        received.len(),
        5,
        "four callbacks, the first one retried once"
    );
    let now = chrono::Utc::now().timestamp();
    for callback in &received {
        verify_standard(
            &[CALLBACK_SECRET],
            callback.webhook_id.as_deref(),
            callback.webhook_timestamp.as_deref(),
            callback.webhook_signature.as_deref(),
            &callback.body,
            now,
        )
        .expect("a valid Standard Webhooks signature");
        verify_x_signature(
            &[CALLBACK_SECRET],
            callback.signature.as_deref(),
            &callback.body,
        )
        .expect("X-Signature is still sent");
    }
    let retry = received[1..]
        .iter()
        .find(|callback| callback.body == received[0].body)
        .expect("the refused callback was retried");
    assert_eq!(
        retry.webhook_id, received[0].webhook_id,
        "a retry keeps its id"
    );
    let mut ids: Vec<_> = received.iter().map(|c| c.webhook_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each event has its own id");
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn put_admin_script_gives_the_nth_call_of_a_number_the_nth_outcome_then_the_mix() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(&receiver.url, json!({"outcome_mix": {"completed": 1}})).await;
    let scripted = numbers(103, 1).remove(0);
    let other = numbers(104, 1).remove(0);
    let admin = |path: &str| format!("{}/admin/{path}", sim.base_url());

    let refused = client()
        .put(admin("script"))
        .json(&json!({&scripted: ["busy", "engaged"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let error = json_of(refused).await["error"].as_str().unwrap().to_owned();
    assert!(error.contains("engaged"), "{error}");

    let set = client()
        .put(admin("script"))
        .json(&json!({&scripted: ["busy", "no_answer", "busy"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    assert_eq!(
        json_of(set).await,
        json!({&scripted: ["busy", "no_answer", "busy"]})
    );

    // Four calls of the scripted number (one per batch), each batch with an unscripted one.
    for batch in 1..=4 {
        run_batch(&sim, batch, &[scripted.clone(), other.clone()]).await;
    }
    let truth = sim.ground_truth(None);
    let outcomes_of = |number: &str| -> Vec<Outcome> {
        truth
            .calls
            .iter()
            .filter(|call| call.phone_number == number)
            .map(|call| call.outcome.unwrap())
            .collect()
    };
    assert_eq!(
        outcomes_of(&scripted),
        [
            Outcome::Busy,
            Outcome::NoAnswer,
            Outcome::Busy,
            Outcome::Completed
        ]
    );
    assert_eq!(outcomes_of(&other), [Outcome::Completed; 4]);
    // The callbacks say so too: the terminal event of each scripted call.
    let terminal: Vec<String> = truth
        .calls
        .iter()
        .filter(|call| call.phone_number == scripted)
        .map(|call| call.events.last().unwrap().call_status.clone())
        .collect();
    assert_eq!(terminal, ["busy", "no_answer", "busy", "completed"]);

    let left = client().get(admin("script")).send().await.unwrap();
    assert_eq!(json_of(left).await, json!({}));
    sim.stop().await;
    receiver.stop().await;
}
