//! W3C trace context through AMQP headers, and the size-rotated log file. These tests
//! use local subscribers only; the global one is tested in `telemetry_export.rs`.

use std::io::Write;

use callbridge_runtime::telemetry::{
    SizeRotatingFile, extract_context, inject_context, inject_current_span,
};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn context_injected_into_headers_is_extracted_with_the_same_trace() {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("telemetry-test");
    let span = tracer.start("publish");
    let sent = opentelemetry::Context::current_with_span(span);

    let mut headers = FieldTable::default();
    headers.insert("x-callbridge-schema-version".into(), AMQPValue::LongInt(1));
    inject_context(&sent, &mut headers);
    assert!(
        matches!(
            headers.inner().get("traceparent"),
            Some(AMQPValue::LongString(_))
        ),
        "traceparent is a long string header: {headers:?}"
    );
    assert!(
        headers.contains_key("x-callbridge-schema-version"),
        "other headers are kept"
    );

    let received = extract_context(&headers);
    let sent = sent.span().span_context().clone();
    let received = received.span().span_context().clone();
    assert!(received.is_valid());
    assert!(received.is_remote());
    assert_eq!(received.trace_id(), sent.trace_id());
    assert_eq!(received.span_id(), sent.span_id());
    assert_eq!(received.trace_flags(), sent.trace_flags());
}

#[test]
fn current_tracing_span_is_carried_and_continued_by_the_consumer() {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("telemetry-test")));
    tracing::subscriber::with_default(subscriber, || {
        let ingress = tracing::info_span!("handle_callback");
        let mut headers = FieldTable::default();
        let sent_trace = ingress.in_scope(|| {
            inject_current_span(&mut headers);
            tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id()
        });

        let persister = tracing::info_span!("persist_batch");
        persister.set_parent(extract_context(&headers)).unwrap();
        let continued_trace = persister.context().span().span_context().trace_id();
        assert_eq!(continued_trace, sent_trace);
    });
}

#[test]
fn missing_or_malformed_headers_give_an_empty_context() {
    let empty = extract_context(&FieldTable::default());
    assert!(!empty.span().span_context().is_valid());

    let mut malformed = FieldTable::default();
    malformed.insert(
        "traceparent".into(),
        AMQPValue::LongString("not-a-traceparent".into()),
    );
    assert!(!extract_context(&malformed).span().span_context().is_valid());

    let mut wrong_type = FieldTable::default();
    wrong_type.insert("traceparent".into(), AMQPValue::LongInt(7));
    assert!(
        !extract_context(&wrong_type)
            .span()
            .span_context()
            .is_valid()
    );
}

#[test]
fn log_file_rotates_by_size_and_keeps_the_configured_backups() {
    let directory =
        std::env::temp_dir().join(format!("callbridge-rotation-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let path = directory.join("logs/calling_system.log");
    let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();

    let mut file = SizeRotatingFile::open(&path, 1_000, 3).unwrap();
    // 100-byte lines, 10 per file; 55 lines fill 5 files and start a sixth.
    for _ in 0..55 {
        file.write_all(&line).unwrap();
    }
    file.flush().unwrap();

    let size = |suffix: &str| {
        let mut name = path.clone().into_os_string();
        name.push(suffix);
        std::fs::metadata(name).map(|metadata| metadata.len()).ok()
    };
    assert_eq!(size(""), Some(500), "live file holds the last 5 lines");
    assert_eq!(size(".1"), Some(1_000));
    assert_eq!(size(".2"), Some(1_000));
    assert_eq!(size(".3"), Some(1_000));
    assert_eq!(size(".4"), None, "only 3 backups are kept");

    // Reopening continues the live file where it was.
    drop(file);
    let mut reopened = SizeRotatingFile::open(&path, 1_000, 3).unwrap();
    for _ in 0..5 {
        reopened.write_all(&line).unwrap();
    }
    reopened.flush().unwrap();
    assert_eq!(size(""), Some(1_000));

    std::fs::remove_dir_all(&directory).unwrap();
}

/// Log lines written by a JSON log layer, shared with the test.
#[derive(Clone, Default)]
struct CapturedLines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLines {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for CapturedLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn per_message_spans_are_traced_but_not_copied_into_log_lines() {
    use callbridge_runtime::telemetry::{PER_MESSAGE_SPANS, log_filter};
    use tracing_subscriber::Layer as _;

    let lines = CapturedLines::default();
    let writer = lines.clone();
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(move || writer.clone())
                .with_filter(log_filter("info").unwrap()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("telemetry-test")));
    tracing::subscriber::with_default(subscriber, || {
        let campaign = tracing::info_span!("campaign", batch = "batch-in-log");
        let _campaign = campaign.enter();
        let request = tracing::info_span!(
            target: PER_MESSAGE_SPANS,
            "http.request",
            call_id = tracing::field::Empty
        );
        let _request = request.enter();
        request.record("call_id", "call-not-in-log");
        assert!(
            tracing::Span::current()
                .context()
                .span()
                .span_context()
                .is_valid(),
            "a per-message span is still an OpenTelemetry span"
        );
        tracing::info!(outcome = "accepted", "inside the request");
        drop(_request);
        tracing::warn!(parent: &request, "with the request as explicit parent");
    });

    let text = lines.text();
    assert!(text.contains("inside the request"), "{text}");
    assert!(
        text.contains("with the request as explicit parent"),
        "an event whose explicit parent is a per-message span is still logged: {text}"
    );
    assert!(text.contains("\"outcome\":\"accepted\""), "{text}");
    assert!(
        text.contains("batch-in-log"),
        "an ordinary span's fields are in the line: {text}"
    );
    assert!(
        !text.contains("call-not-in-log") && !text.contains("http.request"),
        "a per-message span is not formatted into log lines: {text}"
    );
    assert!(
        log_filter::<tracing_subscriber::Registry>("info,=nonsense[").is_err(),
        "a malformed RUST_LOG is refused"
    );
}
