//! `POST /callback` against a real RabbitMQ: every check and answer of the
//! endpoint (size, signature, JSON and schema, confirmed publish).

mod common;

use common::*;
use serde_json::{Value, json};

async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.expect("response body is JSON")
}

#[tokio::test]
async fn python_signed_callback_is_published_persistent_with_its_event_id() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    let response = app.post_signed(SEED_PAYLOAD).await;

    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await, json!({"status": "success"}));
    let message = reader
        .take()
        .await
        .expect("the accepted callback is in the queue");
    assert_eq!(message.exchange, "callbridge.callbacks");
    assert_eq!(message.routing_key, "callback.call_status_update");
    assert_eq!(message.message_id(), sha256_hex(SEED_PAYLOAD.as_bytes()));
    assert_eq!(*message.properties.delivery_mode(), Some(2));
    assert_eq!(
        message
            .properties
            .content_type()
            .as_ref()
            .map(|c| c.to_string()),
        Some("application/json".to_owned())
    );
    assert!(message.properties.timestamp().is_some());
    let headers = message.headers();
    assert_eq!(headers["x-callbridge-schema-version"], "1");
    assert_eq!(headers["x-callbridge-event-type"], "call_status_update");
    assert!(headers["x-callbridge-received-at"].ends_with('Z'));
    assert_eq!(message.body["event_id"], message.message_id());
    assert_eq!(message.body["event"]["call_id"], "unique_call_id");
    assert_eq!(message.body["event"]["call_status"], "completed");
    let sent: Value = serde_json::from_str(SEED_PAYLOAD).unwrap();
    assert_eq!(
        message.body["payload"], sent,
        "the original payload travels along"
    );
    assert!(reader.take().await.is_none(), "exactly one message");
}

#[tokio::test]
async fn missing_signature_is_401_and_nothing_is_published() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    let response = app.post_callback(SEED_PAYLOAD, &[]).await;

    assert_eq!(response.status(), 401);
    assert_eq!(
        json_body(response).await,
        json!({"error": "Missing signature"})
    );
    assert!(reader.take().await.is_none());
}

#[tokio::test]
async fn wrong_signature_is_401_and_nothing_is_published() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    let signed_with_other_secret = python_hmac_hex("not-the-secret", SEED_PAYLOAD.as_bytes());
    let response = app
        .post_callback(SEED_PAYLOAD, &[("X-Signature", signed_with_other_secret)])
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        json_body(response).await,
        json!({"error": "Invalid signature"})
    );

    // A signature over different bytes (the same JSON re-serialised) is also refused:
    // the check is over the raw body.
    let reformatted =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(SEED_PAYLOAD).unwrap())
            .unwrap();
    let response = app
        .post_callback(
            reformatted,
            &[(
                "X-Signature",
                python_hmac_hex(SECRET, SEED_PAYLOAD.as_bytes()),
            )],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert!(reader.take().await.is_none());
}

#[tokio::test]
async fn uppercase_and_prefixed_signatures_are_accepted() {
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let signature = python_hmac_hex(SECRET, SEED_PAYLOAD.as_bytes());

    for header in [signature.to_uppercase(), format!("sha256={signature}")] {
        let response = app
            .post_callback(SEED_PAYLOAD, &[("X-Signature", header)])
            .await;
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn a_signature_made_with_any_rotated_secret_is_accepted() {
    let (_vhost, mut config) = vhost_and_config().await;
    config.secrets = vec!["new-secret".into(), "old-secret".into()];
    let app = TestApp::spawn(config).await;

    for secret in ["old-secret", "new-secret"] {
        let signature = python_hmac_hex(secret, SEED_PAYLOAD.as_bytes());
        let response = app
            .post_callback(SEED_PAYLOAD, &[("X-Signature", signature)])
            .await;
        assert_eq!(response.status(), 200, "signed with {secret}");
    }
    let signature = python_hmac_hex("retired-secret", SEED_PAYLOAD.as_bytes());
    let response = app
        .post_callback(SEED_PAYLOAD, &[("X-Signature", signature)])
        .await;
    assert_eq!(response.status(), 401);
}

fn standard_headers(msg_id: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", msg_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            python_standard_signature(SECRET, msg_id, timestamp, body.as_bytes()),
        ),
    ]
}

#[tokio::test]
async fn standard_webhooks_signature_in_the_window_is_accepted_with_webhook_id_as_event_id() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let now = chrono::Utc::now().timestamp();

    let response = app
        .post_callback(
            SEED_PAYLOAD,
            &standard_headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now - 200, SEED_PAYLOAD),
        )
        .await;

    assert_eq!(response.status(), 200);
    let message = reader.take().await.unwrap();
    assert_eq!(message.message_id(), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W");
}

#[tokio::test]
async fn standard_webhooks_signature_outside_the_window_is_401() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let now = chrono::Utc::now().timestamp();

    for timestamp in [now - 400, now + 400] {
        let response = app
            .post_callback(
                SEED_PAYLOAD,
                &standard_headers("msg_old", timestamp, SEED_PAYLOAD),
            )
            .await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            json_body(response).await,
            json!({"error": "Signature timestamp outside the allowed window"})
        );
    }
    // Inside the window but signed over another id: a replay under a new id fails.
    let mut headers = standard_headers("msg_a", now, SEED_PAYLOAD);
    headers[0].1 = "msg_b".to_owned();
    let response = app.post_callback(SEED_PAYLOAD, &headers).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        json_body(response).await,
        json!({"error": "Invalid signature"})
    );
    assert!(reader.take().await.is_none());
}

/// Bodies that are signed correctly but fail the schema, each with the field its 400
/// must name.
fn invalid_bodies() -> Vec<(&'static str, String, &'static str)> {
    let mut nul_deep: Value = serde_json::from_str(SEED_PAYLOAD).unwrap();
    nul_deep["custom_data"]["note"] = json!("a\u{0}b");
    vec![
        ("not JSON", "{\"event_type\": ".to_owned(), "body"),
        ("an array", "[{\"event_type\":\"call_started\"}]".to_owned(), "body"),
        (
            "no event_type",
            r#"{"batch_id":1,"phone_number":"9876543210","call_status":"completed"}"#.to_owned(),
            "event_type",
        ),
        (
            "duration of the wrong type",
            r#"{"event_type":"call_completed","batch_id":1,"phone_number":"9876543210","duration":"long"}"#.to_owned(),
            "duration",
        ),
        (
            "batch_id of the wrong type",
            r#"{"event_type":"call_completed","batch_id":{"id":1},"phone_number":"9876543210"}"#.to_owned(),
            "batch_id",
        ),
        (
            "phone_number of 21 characters",
            json!({"event_type":"call_completed","batch_id":1,"phone_number":"é".repeat(21)}).to_string(),
            "phone_number",
        ),
        ("a NUL deep inside custom_data", nul_deep.to_string(), "custom_data"),
        (
            "a NUL in call_id",
            json!({"event_type":"call_completed","call_id":"a\u{0}","phone_number":"1"}).to_string(),
            "call_id",
        ),
        (
            "no call_id and no phone_number",
            r#"{"event_type":"call_completed","batch_id":1}"#.to_owned(),
            "phone_number",
        ),
        (
            "no call_id and no batch_id",
            r#"{"event_type":"call_completed","phone_number":"9876543210"}"#.to_owned(),
            "batch_id",
        ),
    ]
}

#[tokio::test]
async fn invalid_callbacks_are_400_naming_the_field_and_never_published() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    for (case, body, field) in invalid_bodies() {
        let response = app.post_signed(&body).await;
        assert_eq!(response.status(), 400, "{case}");
        let answer = json_body(response).await;
        assert_eq!(answer["error"], "Invalid callback data", "{case}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(&format!("{field}:")),
            "{case}: detail {detail:?} should name {field}"
        );
    }
    // Raw bytes that are not UTF-8 at all.
    let bytes: &[u8] = b"{\"event_type\":\"\xff\xfe\"}";
    let signature = python_hmac_hex(SECRET, bytes);
    let response = app
        .post_callback(bytes.to_vec(), &[("X-Signature", signature)])
        .await;
    assert_eq!(response.status(), 400);
    assert!(
        reader.take().await.is_none(),
        "no invalid callback reached the queue"
    );
}

#[tokio::test]
async fn length_limits_count_characters_not_bytes() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    // 20 two-byte characters: 40 bytes, but within VARCHAR(20).
    let body = json!({"event_type":"call_completed","batch_id":1,"phone_number":"é".repeat(20)})
        .to_string();

    let response = app.post_signed(&body).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        reader.take().await.unwrap().body["event"]["phone_number"],
        "é".repeat(20)
    );
}

#[tokio::test]
async fn over_the_size_limit_is_413_with_our_body() {
    let (vhost, mut config) = vhost_and_config().await;
    config.max_body_bytes = 1024;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let mut payload: Value = serde_json::from_str(SEED_PAYLOAD).unwrap();
    payload["custom_data"]["padding"] = json!("x".repeat(1024));
    let body = payload.to_string();

    // Signed correctly: size is checked before anything else.
    let response = app.post_signed(&body).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        json_body(response).await,
        json!({"error": "Payload too large"})
    );

    // Unsigned and chunked (no Content-Length): still 413, not 401.
    let stream = futures::stream::iter(
        body.into_bytes()
            .chunks(100)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .post_callback(reqwest::Body::wrap_stream(stream), &[])
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        json_body(response).await,
        json!({"error": "Payload too large"})
    );

    // Exactly at the limit is fine.
    let mut at_limit: Value = serde_json::from_str(SEED_PAYLOAD).unwrap();
    let filler = 1024 - at_limit.to_string().len() - r#","padding":"""#.len();
    at_limit["custom_data"]["padding"] = json!("x".repeat(filler));
    let body = at_limit.to_string();
    assert_eq!(body.len(), 1024);
    assert_eq!(app.post_signed(&body).await.status(), 200);
    assert_eq!(reader.drain().await.len(), 1);
}

#[tokio::test]
async fn an_announced_content_length_over_the_limit_is_refused_before_the_body_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    // Headers only: a server that waited for 10 MB of body would never answer.
    stream
        .write_all(
            b"POST /callback HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 10485760\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("Payload too large") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(
            read > 0,
            "connection closed without an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..read]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
}

#[tokio::test]
async fn unknown_event_types_are_accepted_and_routed_by_name() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let body = r#"{"event_type":"call_transferred","call_id":"c-1","phone_number":"9876543210","call_status":"answered"}"#;

    let response = app.post_signed(body).await;

    assert_eq!(response.status(), 200);
    let message = reader.take().await.unwrap();
    assert_eq!(message.routing_key, "callback.call_transferred");
    assert_eq!(message.body["event"]["event_type"], "call_transferred");
}

/// An unknown event type is kept even when it carries no status (the seed's
/// `call_status_update` too); the envelope then has no `call_status` at all.
#[tokio::test]
async fn events_without_any_status_are_accepted_and_published_without_one() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    for (body, routing_key) in [
        (
            r#"{"event_type":"call_parked","call_id":"c-1","phone_number":"9876543210","duration":5}"#,
            "callback.call_parked",
        ),
        (
            r#"{"event_type":"call_status_update","call_id":"c-1","phone_number":"9876543210","call_status":null}"#,
            "callback.call_status_update",
        ),
    ] {
        let response = app.post_signed(body).await;

        assert_eq!(response.status(), 200, "{body}");
        let message = reader.take().await.unwrap();
        assert_eq!(message.routing_key, routing_key);
        assert_eq!(
            message.message_id(),
            callbridge_types::envelope::event_id_for(None, body.as_bytes())
        );
        let event = &message.body["event"];
        assert_eq!(event["call_id"], "c-1");
        assert!(event.get("call_status").is_none(), "{event}");
        let original: Value = serde_json::from_str(body).unwrap();
        assert_eq!(message.body["payload"], original);
    }
}

#[tokio::test]
async fn the_seeds_end_to_end_payload_gets_derived_call_id_status_and_accountcode() {
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    // From the seed's test_end_to_end_calling_flow: no call_id, no accountcode.
    let body = r#"{"event_type":"call_completed","batch_id":12345,"phone_number":"9876543210","call_status":"completed","duration":120}"#;

    let response = app.post_signed(body).await;

    assert_eq!(response.status(), 200);
    let event = reader.take().await.unwrap().body["event"].clone();
    assert_eq!(event["call_id"], "12345:9876543210");
    assert_eq!(event["accountcode"], ACCOUNT_CODE);
    assert_eq!(event["call_status"], "completed");
    assert_eq!(event["duration"], 120);
}

#[tokio::test]
async fn with_verification_disabled_unsigned_callbacks_are_accepted() {
    let (vhost, mut config) = vhost_and_config().await;
    config.verification_enabled = false;
    config.secrets.clear();
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    let response = app.post_callback(SEED_PAYLOAD, &[]).await;

    assert_eq!(response.status(), 200);
    assert!(reader.take().await.is_some());
}

/// The value of the sample `series` (name and labels exactly as rendered), 0 if absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_same_port() {
    let (_vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let series = [
        r#"callbacks_total{event_type="call_status_update",outcome="accepted"}"#,
        r#"callbacks_total{event_type="unknown",outcome="unauthorized"}"#,
        r#"callbacks_total{event_type="unknown",outcome="invalid"}"#,
        "callback_processing_time_seconds_count",
        "callback_publish_confirm_seconds_count",
    ];
    let before = app.get("/metrics").await.text().await.unwrap();

    assert_eq!(app.post_signed(SEED_PAYLOAD).await.status(), 200);
    assert_eq!(app.post_callback(SEED_PAYLOAD, &[]).await.status(), 401);
    assert_eq!(app.post_signed("[]").await.status(), 400);

    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let after = app.get("/metrics").await.text().await.unwrap();
    let expected_increase = [1.0, 1.0, 1.0, 3.0, 1.0];
    for (series, increase) in series.iter().zip(expected_increase) {
        assert_eq!(
            sample(&after, series) - sample(&before, series),
            increase,
            "{series} in\n{after}"
        );
    }
}
