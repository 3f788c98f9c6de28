//! Confirmed publishing: pipelined confirms under concurrency, and every way the broker
//! can refuse a message turning into 503 with `Retry-After`.

mod common;

use std::collections::BTreeSet;

use callbridge_types::topology::{ALL_CALLBACKS_BINDING, CALLBACKS_EXCHANGE, PERSIST_QUEUE};
use common::*;
use lapin::types::FieldTable;
use serde_json::json;

fn callback_body(index: usize) -> String {
    json!({
        "event_type": "call_completed",
        "batch_id": 7,
        "phone_number": format!("98765{index:05}"),
        "duration": index,
    })
    .to_string()
}

#[tokio::test]
async fn concurrent_callbacks_are_each_confirmed_and_each_stored_once() {
    let (vhost, mut config) = vhost_and_config().await;
    config.publisher_channels = 3;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let bodies: Vec<String> = (0..200).map(callback_body).collect();

    let statuses =
        futures::future::join_all(bodies.iter().map(|body| app.post_signed_fast(body))).await;

    assert!(statuses.iter().all(|response| response.status() == 200));
    let stored: BTreeSet<String> = reader
        .drain()
        .await
        .iter()
        .map(|m| m.message_id())
        .collect();
    let expected: BTreeSet<String> = bodies
        .iter()
        .map(|b| callbridge_types::envelope::event_id_for(None, b.as_bytes()))
        .collect();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn an_unroutable_callback_is_503_with_retry_after() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    // Without the binding, a mandatory publish comes back as returned.
    reader
        .channel
        .queue_unbind(
            PERSIST_QUEUE.into(),
            CALLBACKS_EXCHANGE.into(),
            ALL_CALLBACKS_BINDING.into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let response = app.post_signed(SEED_PAYLOAD).await;

    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({"error": "Temporarily unavailable"}));
    // The publisher is still healthy: the next routable callback goes through.
    reader
        .channel
        .queue_bind(
            PERSIST_QUEUE.into(),
            CALLBACKS_EXCHANGE.into(),
            ALL_CALLBACKS_BINDING.into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(app.post_signed(SEED_PAYLOAD).await.status(), 200);
}

#[tokio::test]
async fn a_nacked_callback_is_503_and_only_confirmed_ones_are_stored() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    // A full queue with `x-overflow: reject-publish` (set by the topology) nacks.
    let management = std::env::var("CALLBRIDGE_TEST_RABBITMQ_MGMT")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned());
    let policy = reqwest::Client::new()
        .put(format!(
            "{management}/api/policies/{}/full-persist-queue",
            vhost.name()
        ))
        .basic_auth("guest", Some("guest"))
        .json(&json!({
            "pattern": "^callbridge\\.persist$",
            "definition": {"max-length": 1},
            "apply-to": "queues",
        }))
        .send()
        .await
        .unwrap();
    assert!(
        policy.status().is_success(),
        "policy not set: {}",
        policy.status()
    );

    // The policy applies asynchronously: send until the broker starts refusing.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for index in 0..200 {
        let body = callback_body(index);
        let response = app.post_signed(&body).await;
        match response.status().as_u16() {
            200 => accepted.push(sha256_hex(body.as_bytes())),
            503 => {
                assert_eq!(response.headers()["retry-after"], "5");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("unexpected status {other}"),
        }
    }

    assert_eq!(refused, 3, "the broker never refused a callback");
    let stored: Vec<String> = reader
        .drain()
        .await
        .iter()
        .map(|m| m.message_id())
        .collect();
    assert!(
        stored.iter().all(|id| accepted.contains(id)),
        "a refused callback was stored"
    );
    let missing: Vec<&String> = accepted.iter().filter(|id| !stored.contains(id)).collect();
    // max-length drops from the head only for drop-head; with reject-publish an
    // acknowledged message is never dropped.
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
}
