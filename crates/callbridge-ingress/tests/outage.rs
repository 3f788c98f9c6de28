//! Broker outage: a TCP proxy the test controls sits between the ingress and RabbitMQ.

mod common;

use std::time::Duration;

use callbridge_testkit::proxy::TcpProxy;
use common::*;
use serde_json::json;

fn body(index: usize) -> String {
    json!({"event_type": "call_answered", "batch_id": 3, "phone_number": format!("55500{index:04}")}).to_string()
}

#[tokio::test]
async fn cut_broker_gives_503_and_not_ready_then_200s_resume_without_a_restart() {
    let (vhost, mut config) = vhost_and_config().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    config.amqp_url = vhost.amqp_url_via(proxy.addr()).into();
    config.confirm_timeout = Duration::from_secs(2);
    let app = TestApp::spawn(config).await;
    // The reader goes straight to the broker: it must not be cut.
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let mut acknowledged = Vec::new();
    let mut index = 0;
    let mut post = async |expected: Option<u16>| {
        index += 1;
        let body = body(index);
        let response = app.post_signed(&body).await;
        let status = response.status().as_u16();
        if let Some(expected) = expected {
            assert_eq!(status, expected, "callback {index}");
        }
        match status {
            200 => acknowledged.push(sha256_hex(body.as_bytes())),
            503 => assert!(response.headers().contains_key("retry-after")),
            other => panic!("unexpected status {other}"),
        }
        status
    };

    assert_eq!(post(Some(200)).await, 200);

    proxy.cut();
    for _ in 0..5 {
        // Answered within the confirm timeout: 503, never a hang or a 200.
        post(Some(503)).await;
    }
    let readyz = app.get("/readyz").await;
    assert_eq!(readyz.status(), 503);
    let reasons: serde_json::Value = readyz.json().await.unwrap();
    assert!(reasons["reasons"]["broker"].is_string(), "{reasons}");

    proxy.restore();
    let mut resumed = false;
    for _ in 0..300 {
        if post(None).await == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "callbacks never succeeded again after the broker came back"
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
    post(Some(200)).await;

    let stored: Vec<String> = reader
        .drain()
        .await
        .iter()
        .map(|m| m.message_id())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    // A 503'd callback may still have reached the queue (its confirm was lost with the
    // connection); the sender's retry carries the same event id, so that is harmless.
    assert!(
        lost.is_empty(),
        "acknowledged callbacks missing from the queue: {lost:?}"
    );
}

#[tokio::test]
async fn ingress_started_while_the_broker_is_down_is_not_ready_and_503s_until_it_is_up() {
    let (vhost, mut config) = vhost_and_config().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    proxy.cut();
    config.amqp_url = vhost.amqp_url_via(proxy.addr()).into();
    let app = TestApp::spawn_unready(config).await;

    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 503);
    let response = app.post_signed(SEED_PAYLOAD).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));

    proxy.restore();
    app.wait_until_ready().await;
    assert_eq!(app.post_signed(SEED_PAYLOAD).await.status(), 200);
}

#[tokio::test]
async fn broker_that_never_confirms_gives_503_after_the_confirm_timeout() {
    let (vhost, mut config) = vhost_and_config().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    config.amqp_url = vhost.amqp_url_via(proxy.addr()).into();
    config.confirm_timeout = Duration::from_millis(500);
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    let first = body(1);
    assert_eq!(app.post_signed(&first).await.status(), 200);

    // The link stays open but silent: the publish goes out, its confirm never comes back.
    proxy.stall();
    let unconfirmed = app.post_signed(&body(2)).await;
    assert_eq!(
        unconfirmed.status(),
        503,
        "an unconfirmed publish was not refused"
    );
    assert!(unconfirmed.headers().contains_key("retry-after"));

    proxy.unstall();
    let mut resumed = false;
    for index in 3..300 {
        if app.post_signed(&body(index)).await.status() == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "callbacks never succeeded again after the link recovered"
    );
    let stored: Vec<String> = reader
        .drain()
        .await
        .iter()
        .map(|m| m.message_id())
        .collect();
    assert!(
        stored.contains(&sha256_hex(first.as_bytes())),
        "the callback acknowledged before the stall is missing"
    );
}
