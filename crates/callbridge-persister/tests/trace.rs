//! One trace from the ingress to the database write: the persister's span for an event
//! continues the trace named in the message's `traceparent`, the database write is a
//! span inside it, and `call_events.trace_id` records the trace.
//!
//! Alone in its test binary: it installs the process-wide subscriber.

mod common;

use callbridge_runtime::telemetry::inject_context;
use common::*;
use lapin::types::FieldTable;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn an_events_processing_continues_the_ingress_trace_with_the_database_write_inside() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("persister-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // The ingress request's span, as its traceparent header carries it.
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let ingress_span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let ingress = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        ingress_span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let mut headers = FieldTable::default();
    inject_context(&ingress, &mut headers);

    let harness = Harness::new().await;
    let event = call_event(600, "c1", "completed", json!({}));
    harness.publish_with_headers(&event, headers).await;
    let persister = harness.start(harness.config(8)).await;
    harness.wait_for_events(1).await;
    harness.settle().await;
    persister.stop().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|span| span.span_context.trace_id() == trace_id)
        .collect();
    let consumer = in_trace
        .iter()
        .find(|span| span.name == "persist_event")
        .unwrap_or_else(|| panic!("no persist_event span in the ingress trace: {in_trace:#?}"));
    assert_eq!(consumer.parent_span_id, ingress_span);
    let write = in_trace
        .iter()
        .find(|span| span.name == "db.persist_batch")
        .unwrap_or_else(|| panic!("no database span in the ingress trace: {in_trace:#?}"));
    assert_eq!(write.parent_span_id, consumer.span_context.span_id());
    // The transaction's own span sits inside the write span.
    assert!(
        in_trace.iter().any(|span| span.name == "store_batch"
            && span.parent_span_id == write.span_context.span_id()),
        "{in_trace:#?}"
    );

    let stored: Option<String> =
        sqlx::query_scalar("SELECT trace_id FROM call_events WHERE event_id = $1")
            .bind(&event.event_id)
            .fetch_one(&harness.pool)
            .await
            .unwrap();
    assert_eq!(stored, Some(trace_id.to_string()));
}
