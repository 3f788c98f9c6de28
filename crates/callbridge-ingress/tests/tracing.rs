//! Traces: a server span per request, the publish as its child, and the publish span's
//! context in the message's `traceparent`, so the persister continues the same trace.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every exported span in memory.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Collected {
    fn find(&self, name: &str) -> Option<SpanData> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|span| span.name == name)
            .cloned()
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test]
async fn the_publish_is_a_child_of_the_request_span_and_its_context_travels_in_traceparent() {
    let collected = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("ingress-test")));
    // Global: actix serves requests on its own worker threads.
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber in this test");
    let (vhost, config) = vhost_and_config().await;
    let app = TestApp::spawn(config).await;
    let reader = BrokerReader::connect(&vhost.amqp_url()).await;

    assert_eq!(app.post_signed(SEED_PAYLOAD).await.status(), 200);

    let message = reader.take().await.unwrap();
    let traceparent = message
        .headers()
        .remove("traceparent")
        .expect("traceparent header");
    let mut server = None;
    for _ in 0..100 {
        server = collected.find("POST /callback");
        if server.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = server.expect("the request span was exported");
    let publish = collected
        .find("amqp.publish")
        .expect("the publish span was exported");

    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        attribute(&server, "http.route").as_deref(),
        Some("/callback")
    );
    assert_eq!(
        attribute(&server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&server, "event_type").as_deref(),
        Some("call_status_update")
    );
    assert_eq!(
        attribute(&server, "call_id").as_deref(),
        Some("unique_call_id")
    );
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, server.span_context.span_id());
    assert_eq!(
        publish.span_context.trace_id(),
        server.span_context.trace_id()
    );
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            publish.span_context.trace_id(),
            publish.span_context.span_id()
        )
    );
}
