//! SIGTERM during a burst, against the built binary: every callback answered 200 is in
//! the queue, and the process exits cleanly. And a broker that stops answering cannot
//! hold a stopping ingress forever.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use callbridge_testkit::proxy::TcpProxy;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::envelope::event_id_for;
use callbridge_types::signature::sign_hex;
use common::*;
use futures::StreamExt;
use serde_json::json;

/// Kills the child if the test panics before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ingress(vhost: &TestVhost, port: u16) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_callbridge-ingress"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("INGRESS_BIND", format!("127.0.0.1:{port}"))
        .env("RABBITMQ_URL", vhost.amqp_url())
        .env("CALLBACK_SECRET_KEY", SECRET)
        .env("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("the ingress binary starts");
    ChildGuard(child)
}

#[tokio::test]
async fn sigterm_mid_burst_keeps_every_acknowledged_callback() {
    let vhost = TestVhost::new().await;
    let port = unused_addr().port();
    let mut ingress = start_ingress(&vhost, port);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the ingress binary never became ready");

    let answered = Arc::new(AtomicUsize::new(0));
    let requests = (0..400).map(|index| {
        let client = client.clone();
        let url = format!("{base}/callback");
        let answered = answered.clone();
        async move {
            let body = json!({"event_type": "call_completed", "batch_id": 9, "phone_number": format!("444{index:05}")}).to_string();
            let result = client
                .post(url)
                .header("X-Signature", sign_hex(SECRET.as_bytes(), body.as_bytes()))
                .body(body.clone())
                .send()
                .await;
            answered.fetch_add(1, Ordering::SeqCst);
            let accepted = matches!(&result, Ok(response) if response.status() == 200);
            (event_id_for(None, body.as_bytes()), accepted)
        }
    });
    // Sixteen at a time, so the burst is still arriving when SIGTERM lands.
    let burst = tokio::spawn(
        futures::stream::iter(requests.collect::<Vec<_>>())
            .buffer_unordered(16)
            .collect::<Vec<_>>(),
    );
    // Mid-burst: once some requests have been answered, but not all.
    while answered.load(Ordering::SeqCst) < 50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &ingress.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let outcomes = burst.await.unwrap();

    let exit = tokio::task::spawn_blocking(move || ingress.0.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "the ingress exited with {exit}");
    let acknowledged: Vec<&String> = outcomes
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id)
        .collect();
    assert!(
        acknowledged.len() >= 50,
        "the burst was acknowledged in part at least"
    );
    eprintln!(
        "{} of {} callbacks acknowledged around SIGTERM",
        acknowledged.len(),
        outcomes.len()
    );
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;
    let messages = reader.drain().await;
    // The binary runs without an OTLP endpoint: trace context must still travel.
    let without_traceparent = messages
        .iter()
        .filter(|m| !m.headers().contains_key("traceparent"))
        .count();
    assert_eq!(
        without_traceparent, 0,
        "messages published without a traceparent header"
    );
    let stored: Vec<String> = messages.iter().map(|m| m.message_id()).collect();
    let lost: Vec<&&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged before SIGTERM but not in the queue: {lost:?}"
    );
}

/// Closing waits for the broker's `Close-Ok`; from a silent broker (a link that dropped
/// without a reset) none comes, and every close gives up after its bound instead.
#[tokio::test]
async fn shutdown_completes_when_the_broker_stops_answering() {
    let (vhost, mut config) = vhost_and_config().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    config.amqp_url = vhost.amqp_url_via(proxy.addr()).into();
    let app = TestApp::spawn(config).await;
    assert_eq!(app.post_signed_fast(SEED_PAYLOAD).await.status(), 200);

    proxy.stall();
    // Generous: the bound turns a hang into a failure, it does not time the close.
    let stopped = tokio::time::timeout(Duration::from_secs(90), app.stop()).await;
    assert!(
        stopped.is_ok(),
        "the ingress never finished stopping with a silent broker"
    );
}
