//! The simulator's API: the answers the seed's client reads, the documented limits, the
//! defined-here behaviour (batch-status, dispatch, repeated batch_id) and every API knob.

mod common;

use std::time::{Duration, Instant};

use callbridge_sim::{Endpoint, SimConfig, Simulator};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn insert_answers_201_success_and_the_ground_truth_holds_each_number_once() {
    let sim = spawn_api_only(json!({})).await;
    let batch = numbers(1, 3);

    let response = insert(&sim, 12345, &batch).await;
    assert_eq!(response.status(), 201);
    let body = json_of(response).await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["batch_id"], 12345);
    assert_eq!(body["inserted_count"], 3);
    assert!(body["message"].is_string());

    let truth = sim.ground_truth(None);
    assert_eq!(truth.batches[&12345].inserts, 1);
    for number in &batch {
        assert_eq!(truth.accepted_count(12345, number), 1);
    }
    let call = &truth.calls[0];
    assert_eq!(
        call.custom_data,
        Some(json!({"customer_id": format!("C-{}", batch[0])}))
    );
    sim.stop().await;
}

#[tokio::test]
async fn insert_status_and_layout_knobs_change_the_success_answer() {
    let sim =
        spawn_api_only(json!({"insert_success_status": 200, "response_layout": "nested"})).await;

    let response = insert(&sim, 7, &numbers(7, 2)).await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"], json!({"batch_id": 7, "inserted_count": 2}));
    assert!(body.get("batch_id").is_none());
    sim.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401_and_stores_nothing() {
    let sim = spawn_api_only(json!({})).await;
    let body = insert_body(1, &numbers(1, 1));

    let wrong = insert_with_key(&sim, "not-the-key", &body).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        json_of(wrong).await,
        json!({"message": "Invalid API key", "status": "error"})
    );
    let missing = client()
        .post(format!(
            "{}/{}",
            sim.base_url(),
            callbridge_sim::INSERT_PATH
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    for path in [
        "/api/v1/queues/batch-status/1".to_owned(),
        format!("/{}", callbridge_sim::DISPATCH_PATH),
    ] {
        let request = if path.contains("batch-status") {
            client().get(format!("{}{path}", sim.base_url()))
        } else {
            client().post(format!("{}{path}", sim.base_url()))
        };
        let response = request.header("X-API-KEY", "nope").send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }

    let truth = sim.ground_truth(None);
    assert!(truth.batches.is_empty());
    assert!(
        truth
            .requests
            .iter()
            .all(|r| r.fault.as_deref() == Some("invalid_api_key"))
    );
    sim.stop().await;
}

#[tokio::test]
async fn reject_all_keys_refuses_the_right_key_until_turned_off_and_the_key_can_change() {
    let sim = spawn_api_only(json!({"reject_all_keys": true})).await;
    let batch = numbers(2, 1);
    assert_eq!(insert(&sim, 2, &batch).await.status(), 401);

    sim.patch_knobs(&json!({"reject_all_keys": false})).unwrap();
    assert_eq!(insert(&sim, 2, &batch).await.status(), 201);

    // A rotated key: the old one stops working, the new one works.
    let admin = client()
        .put(format!("{}/admin/api-key", sim.base_url()))
        .json(&json!({"api_key": "rotated-key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 204);
    assert_eq!(insert(&sim, 3, &batch).await.status(), 401);
    let body = insert_body(3, &batch);
    assert_eq!(
        insert_with_key(&sim, "rotated-key", &body)
            .await
            .unwrap()
            .status(),
        201
    );
    sim.stop().await;
}

#[tokio::test]
async fn more_than_1000_items_is_the_documented_400_and_1000_are_accepted() {
    let sim = spawn_api_only(json!({})).await;

    let response = insert(&sim, 10, &numbers(10, 1001)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_of(response).await,
        json!({"message": "Queue data exceeds max batch size 1000", "status": "error"})
    );
    assert!(sim.ground_truth(None).batches.is_empty());

    let response = insert(&sim, 11, &numbers(11, 1000)).await;
    assert_eq!(response.status(), 201);
    assert_eq!(json_of(response).await["inserted_count"], 1000);
    sim.stop().await;
}

#[tokio::test]
async fn invalid_body_is_400_with_a_detail_naming_the_field() {
    let sim = spawn_api_only(json!({})).await;
    let cases = [
        (json!({"data": [{"phone_number": "1"}]}), "batch_id"),
        (
            json!({"batch_id": "x", "data": [{"phone_number": "1"}]}),
            "batch_id",
        ),
        (json!({"batch_id": 1}), "data"),
        (
            json!({"batch_id": 1, "data": [{"custom_data": {}}]}),
            "data.0.phone_number",
        ),
    ];
    for (body, field) in cases {
        let response = insert_with_key(&sim, API_KEY, &body).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let answer = json_of(response).await;
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.starts_with(field), "{detail} should name {field}");
    }
    assert!(sim.ground_truth(None).batches.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn repeated_batch_id_is_appended_and_counted_per_number() {
    let sim = spawn_api_only(json!({})).await;
    let first = vec!["5550001".to_owned(), "5550002".to_owned()];
    let second = vec!["5550002".to_owned(), "5550003".to_owned()];
    assert_eq!(insert(&sim, 77, &first).await.status(), 201);
    let response = insert(&sim, 77, &second).await;
    assert_eq!(response.status(), 201);
    assert_eq!(json_of(response).await["inserted_count"], 2);

    let truth = sim.ground_truth(Some(77));
    assert_eq!(truth.batches[&77].inserts, 2);
    assert_eq!(truth.accepted_count(77, "5550001"), 1);
    assert_eq!(truth.accepted_count(77, "5550002"), 2);
    assert_eq!(truth.accepted_count(77, "5550003"), 1);

    let status = json_of(batch_status(&sim, 77).await).await;
    assert_eq!(status["total"], 4);
    assert_eq!(
        status["phone_numbers"],
        json!(["5550001", "5550002", "5550002", "5550003"])
    );
    sim.stop().await;
}

#[tokio::test]
async fn batch_status_reports_held_numbers_and_progress_and_404_for_unknown_batches() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(
        &receiver.url,
        json!({"outcome_mix": {"completed": 1, "busy": 1}}),
    )
    .await;

    let unknown = batch_status(&sim, 404).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        json_of(unknown).await,
        json!({"message": "Batch not found", "status": "error"})
    );

    let batch = numbers(5, 6);
    assert_eq!(insert(&sim, 5, &batch).await.status(), 201);
    let queued = json_of(batch_status(&sim, 5).await).await;
    assert_eq!(queued["status"], "success");
    assert_eq!(queued["batch_status"], "queued");
    assert_eq!(
        (queued["total"].as_u64(), queued["queued"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(queued["dispatched"], 0);
    assert_eq!(queued["phone_numbers"], json!(batch));

    assert_eq!(dispatch(&sim, "").await.status(), 200);
    assert!(sim.wait_idle(Duration::from_secs(30)).await);
    let done = json_of(batch_status(&sim, 5).await).await;
    assert_eq!(done["batch_status"], "completed");
    assert_eq!(done["queued"], 0);
    assert_eq!(done["dispatched"], 6);
    let truth = sim.ground_truth(Some(5));
    let completed = truth
        .calls
        .iter()
        .filter(|call| call.outcome == Some(callbridge_sim::Outcome::Completed))
        .count();
    assert_eq!(done["completed"].as_u64(), Some(completed as u64));
    assert_eq!(done["failed"].as_u64(), Some((6 - completed) as u64));
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn dispatch_places_only_queued_calls_and_checks_the_accountcode() {
    let sim = spawn_api_only(json!({"callback_max_attempts": 1})).await;
    assert_eq!(insert(&sim, 1, &numbers(1, 2)).await.status(), 201);
    assert_eq!(insert(&sim, 2, &numbers(2, 1)).await.status(), 201);

    let foreign = dispatch(&sim, "?accountcode=SOMEONE_ELSE").await;
    assert_eq!(foreign.status(), 403);
    assert_eq!(json_of(foreign).await["status"], "error");

    let first = dispatch(&sim, "?accountcode=SIM001").await;
    assert_eq!(first.status(), 200);
    let body = json_of(first).await;
    assert_eq!(body["status"], "success");
    assert_eq!(body["dispatched"], 3);
    assert_eq!(body["batch_ids"], json!([1, 2]));

    let again = json_of(dispatch(&sim, "").await).await;
    assert_eq!(
        again["dispatched"], 0,
        "a dispatched call is never placed twice"
    );
    sim.stop().await;
}

#[tokio::test]
async fn error_rate_answers_500_without_storing() {
    let sim = spawn_api_only(json!({"error_rate": 1.0})).await;
    let response = insert(&sim, 9, &numbers(9, 2)).await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        json_of(response).await,
        json!({"message": "Internal error", "status": "error"})
    );
    let truth = sim.ground_truth(None);
    assert!(truth.batches.is_empty());
    assert_eq!(truth.requests[0].fault.as_deref(), Some("error"));
    assert_eq!(truth.requests[0].status, Some(500));
    sim.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_or_without_when_null() {
    let sim = spawn_api_only(json!({"rate_limit_rate": 1.0, "retry_after_secs": 7})).await;
    let response = insert(&sim, 9, &numbers(9, 1)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(json_of(response).await["status"], "error");

    sim.patch_knobs(&json!({"retry_after_secs": null})).unwrap();
    let response = insert(&sim, 9, &numbers(9, 1)).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());
    assert!(sim.ground_truth(None).batches.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn fault_budget_fails_exactly_that_many_requests_then_works() {
    let sim = spawn_api_only(json!({"error_rate": 1.0, "fault_budget": 2})).await;
    let batch = numbers(3, 1);
    assert_eq!(insert(&sim, 3, &batch).await.status(), 500);
    assert_eq!(insert(&sim, 3, &batch).await.status(), 500);
    assert_eq!(insert(&sim, 3, &batch).await.status(), 201);
    assert_eq!(sim.knobs().fault_budget, Some(0));
    assert_eq!(sim.ground_truth(None).accepted_count(3, &batch[0]), 1);
    sim.stop().await;
}

#[tokio::test]
async fn fault_endpoints_limit_faults_to_the_named_endpoints() {
    let sim = spawn_api_only(json!({"error_rate": 1.0, "fault_endpoints": ["insert"]})).await;
    assert_eq!(insert(&sim, 4, &numbers(4, 1)).await.status(), 500);
    assert_eq!(
        batch_status(&sim, 4).await.status(),
        404,
        "batch-status is not faulted"
    );
    assert_eq!(
        dispatch(&sim, "").await.status(),
        200,
        "dispatch is not faulted"
    );
    sim.stop().await;
}

#[tokio::test]
async fn accept_then_fail_stores_the_batch_and_still_answers_500() {
    let sim = spawn_api_only(json!({"accept_then_fail_rate": 1.0})).await;
    let batch = numbers(20, 3);
    let response = insert(&sim, 20, &batch).await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        json_of(response).await,
        json!({"message": "Internal error", "status": "error"})
    );

    let truth = sim.ground_truth(Some(20));
    for number in &batch {
        assert_eq!(
            truth.accepted_count(20, number),
            1,
            "accepted despite the 500"
        );
    }
    let request = &truth.requests[0];
    assert_eq!(request.fault.as_deref(), Some("accept_then_fail"));
    assert_eq!((request.items_sent, request.items_stored), (3, 3));
    assert_eq!(json_of(batch_status(&sim, 20).await).await["total"], 3);
    sim.stop().await;
}

#[tokio::test]
async fn accept_then_fail_drop_connection_stores_and_closes_without_an_answer() {
    let sim = spawn_api_only(
        json!({"accept_then_fail_rate": 1.0, "accept_then_fail_mode": "drop_connection"}),
    )
    .await;
    let batch = numbers(21, 2);
    let outcome = insert_with_key(&sim, API_KEY, &insert_body(21, &batch)).await;
    let error = outcome.expect_err("the connection is dropped, no status arrives");
    assert!(!error.is_status());

    let truth = sim.ground_truth(Some(21));
    assert_eq!(truth.accepted_count(21, &batch[0]), 1);
    assert_eq!(truth.requests[0].status, None);
    assert_eq!(truth.requests[0].fault.as_deref(), Some("accept_then_fail"));
    sim.stop().await;
}

#[tokio::test]
async fn accept_then_fail_hang_stores_and_outlasts_the_client_timeout() {
    let sim = spawn_api_only(json!({
        "accept_then_fail_rate": 1.0, "accept_then_fail_mode": "hang", "hang_ms": 1_000
    }))
    .await;
    let batch = numbers(22, 1);
    let outcome = client()
        .post(format!(
            "{}/{}",
            sim.base_url(),
            callbridge_sim::INSERT_PATH
        ))
        .header("X-API-KEY", API_KEY)
        .timeout(Duration::from_millis(200))
        .json(&insert_body(22, &batch))
        .send()
        .await;
    assert!(outcome.expect_err("the answer never comes").is_timeout());
    assert_eq!(sim.ground_truth(Some(22)).accepted_count(22, &batch[0]), 1);
    sim.stop().await;
}

#[tokio::test]
async fn accept_then_fail_on_dispatch_places_the_calls_anyway() {
    let receiver = Receiver::start().await;
    let sim = spawn_sim(&receiver.url, json!({})).await;
    assert_eq!(insert(&sim, 23, &numbers(23, 2)).await.status(), 201);
    sim.patch_knobs(&json!({"accept_then_fail_rate": 1.0}))
        .unwrap();

    assert_eq!(dispatch(&sim, "").await.status(), 500);
    assert!(sim.wait_idle(Duration::from_secs(30)).await);
    let truth = sim.ground_truth(Some(23));
    assert!(truth.calls.iter().all(|call| call.all_acknowledged()));
    let all = sim.ground_truth(None);
    let request = all.requests_to(Endpoint::Dispatch).last().unwrap();
    assert_eq!(request.calls_dispatched, 2);
    assert_eq!(request.fault.as_deref(), Some("accept_then_fail"));
    sim.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn partial_accept_answers_warning_and_stores_only_part() {
    let sim = spawn_api_only(json!({"partial_accept_max": 2})).await;
    let batch = numbers(30, 5);
    let response = insert(&sim, 30, &batch).await;
    let body = json_of(response).await;
    assert_eq!(body["status"], "warning");
    assert_eq!(body["inserted_count"], 2);

    let truth = sim.ground_truth(Some(30));
    assert_eq!(truth.accepted_count(30, &batch[0]), 1);
    assert_eq!(truth.accepted_count(30, &batch[1]), 1);
    assert_eq!(truth.accepted_count(30, &batch[2]), 0);
    assert_eq!(truth.requests[0].fault.as_deref(), Some("partial_accept"));
    sim.stop().await;
}

#[tokio::test]
async fn held_request_is_stored_only_after_release() {
    let sim = spawn_api_only(json!({})).await;
    sim.hold();
    let batch = numbers(40, 2);
    let base_url = sim.base_url();
    let body = insert_body(40, &batch);
    let pending = tokio::spawn(async move {
        client()
            .post(format!("{base_url}/{}", callbridge_sim::INSERT_PATH))
            .header("X-API-KEY", API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    });

    eventually("the insert is held", || sim.held_now() == 1).await;
    assert!(
        sim.ground_truth(None).batches.is_empty(),
        "nothing stored while held"
    );
    assert_eq!(sim.ground_truth(None).held_now, 1);

    let released = client()
        .post(format!("{}/admin/release", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    assert_eq!(pending.await.unwrap(), 201);
    let truth = sim.ground_truth(None);
    assert_eq!(truth.accepted_count(40, &batch[0]), 1);
    assert!(truth.requests[0].held);
    assert_eq!(truth.held_now, 0);
    sim.stop().await;
}

#[tokio::test]
async fn latency_knob_delays_every_answer_by_at_least_that_long() {
    let sim = spawn_api_only(json!({"latency_ms": 300})).await;
    let started = Instant::now();
    assert_eq!(batch_status(&sim, 1).await.status(), 404);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.stop().await;
}

#[tokio::test]
async fn admin_knobs_endpoint_reads_merges_and_rejects_invalid_values() {
    let sim = spawn_api_only(json!({})).await;
    let url = format!("{}/admin/knobs", sim.base_url());
    let changed: Value = client()
        .put(&url)
        .json(&json!({"duplicate_rate": 0.5}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changed["duplicate_rate"], 0.5);
    assert_eq!(changed["fast"], true, "fields not named keep their values");

    let invalid = client()
        .put(&url)
        .json(&json!({"error_rate": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let unknown = client()
        .put(&url)
        .json(&json!({"no_such_knob": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let current: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["duplicate_rate"], 0.5);
    assert_eq!(current["error_rate"], 0.0);
    sim.stop().await;
}

#[tokio::test]
async fn reset_forgets_everything_and_restores_start_up_settings() {
    let sim = spawn_api_only(json!({})).await;
    assert_eq!(insert(&sim, 50, &numbers(50, 1)).await.status(), 201);
    sim.patch_knobs(&json!({"reject_all_keys": true})).unwrap();
    sim.set_api_key("other");

    let reset = client()
        .post(format!("{}/admin/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    let truth = sim.ground_truth(None);
    assert!(truth.batches.is_empty() && truth.calls.is_empty() && truth.requests.is_empty());
    // Start-up knobs (as for_tests configured them) and the start-up key are back.
    assert!(!sim.knobs().reject_all_keys);
    assert_eq!(insert(&sim, 50, &numbers(50, 1)).await.status(), 201);
    sim.stop().await;
}

#[tokio::test]
async fn admin_token_when_configured_guards_the_admin_api_but_not_the_api() {
    let mut config = SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap();
    config.admin_token = Some(callbridge_sim::Secret::new("admin-secret"));
    let sim = Simulator::spawn(config).await.unwrap();
    let url = format!("{}/admin/ground-truth", sim.base_url());

    assert_eq!(client().get(&url).send().await.unwrap().status(), 401);
    let wrong = client()
        .get(&url)
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .get(&url)
        .bearer_auth("admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert_eq!(insert(&sim, 60, &numbers(60, 1)).await.status(), 201);
    sim.stop().await;
}

#[tokio::test]
async fn ground_truth_endpoint_serves_what_the_library_reports() {
    let sim = spawn_api_only(json!({})).await;
    assert_eq!(insert(&sim, 70, &numbers(70, 2)).await.status(), 201);
    assert_eq!(insert(&sim, 71, &numbers(71, 1)).await.status(), 201);
    let served: callbridge_sim::GroundTruth = client()
        .get(format!("{}/admin/ground-truth?batch_id=71", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, sim.ground_truth(Some(71)));
    assert_eq!(served.batches.keys().copied().collect::<Vec<_>>(), [71]);
    assert_eq!(served.totals.accepted_items, 1);
    sim.stop().await;
}
