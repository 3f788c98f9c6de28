//! The workers' health server over real HTTP: liveness, readiness that follows its
//! conditions, and Prometheus metrics from the global recorder.

use callbridge_runtime::health::{HealthServer, Readiness, install_metrics_recorder};
use serde_json::{Value, json};

async fn get(server: &HealthServer, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", server.addr()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn serves_health_readiness_and_metrics_and_readiness_follows_its_conditions() {
    let metrics = install_metrics_recorder();
    let readiness = Readiness::new();
    readiness.set_not_ready("broker", "connecting to RabbitMQ");
    let server = HealthServer::start("127.0.0.1:0".parse().unwrap(), readiness.clone(), metrics)
        .await
        .unwrap();

    let (status, body) = get(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ok"})
    );

    let (status, body) = get(&server, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "not_ready", "reasons": {"broker": "connecting to RabbitMQ"}})
    );

    readiness.set_ready("broker");
    let (status, body) = get(&server, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ready"})
    );

    // Conditions combine: one failing one is enough.
    readiness.set_not_ready("database", "connection refused");
    let (status, body) = get(&server, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("connection refused"), "{body}");
    assert!(
        !body.contains("broker"),
        "a ready condition is listed: {body}"
    );
    readiness.set("database", true, "");
    assert_eq!(get(&server, "/readyz").await.0, 200);

    metrics::counter!("health_test_events_total", "status" => "ok").increment(3);
    metrics::histogram!("health_test_latency_seconds").record(0.02);
    let (status, body) = get(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("health_test_events_total{status=\"ok\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("health_test_latency_seconds_bucket{le=\"0.025\"} 1"),
        "histograms render as Prometheus histograms: {body}"
    );

    server.stop().await.unwrap();
}

#[tokio::test]
async fn another_method_on_a_health_path_answers_405_allowing_get() {
    let metrics = install_metrics_recorder();
    let server = HealthServer::start("127.0.0.1:0".parse().unwrap(), Readiness::new(), metrics)
        .await
        .unwrap();
    let client = reqwest::Client::new();

    for path in ["/healthz", "/readyz", "/metrics"] {
        for method in [
            reqwest::Method::POST,
            reqwest::Method::DELETE,
            reqwest::Method::TRACE,
        ] {
            let response = client
                .request(method.clone(), format!("http://{}{path}", server.addr()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 405, "{method} {path}");
            assert_eq!(
                response.headers().get("allow").map(|v| v.to_str().unwrap()),
                Some("GET"),
                "{method} {path}"
            );
        }
    }
    assert_eq!(get(&server, "/nowhere").await.0, 404);

    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_recorder_installs_once() {
    let first = install_metrics_recorder();
    let second = install_metrics_recorder();
    metrics::counter!("health_test_once_total").increment(1);
    assert!(first.render().contains("health_test_once_total 1"));
    assert!(second.render().contains("health_test_once_total 1"));
}

#[test]
fn readiness_without_conditions_is_ready_and_clones_share_state() {
    let readiness = Readiness::new();
    assert!(readiness.is_ready());
    let clone = readiness.clone();
    clone.set_not_ready("api_key", "401 from the centralized API");
    assert!(!readiness.is_ready());
    assert_eq!(
        readiness.not_ready().get("api_key").map(String::as_str),
        Some("401 from the centralized API")
    );
}
