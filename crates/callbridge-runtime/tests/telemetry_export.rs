//! `init_telemetry` installs the process-wide subscriber, so this file holds one test
//! (its own process). The OTLP exporter reports success even when nobody listens, so
//! the test checks what an OTLP/HTTP receiver actually got.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use callbridge_runtime::config::{LogFormat, OtlpProtocol, TelemetrySettings};
use callbridge_runtime::telemetry::init_telemetry;
use tokio::sync::mpsc;

/// Upper bound on waiting for the export; only stops a broken test from hanging.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn receive_traces(
    body: web::Bytes,
    received: web::Data<mpsc::UnboundedSender<Vec<u8>>>,
) -> HttpResponse {
    let _ = received.send(body.to_vec());
    // An empty ExportTraceServiceResponse encodes to zero bytes.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_when_an_endpoint_is_set() {
    let (sender, mut received) = mpsc::unbounded_channel::<Vec<u8>>();
    let receiver = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(sender.clone()))
            .route("/v1/traces", web::post().to(receive_traces))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let endpoint = format!("http://{}", receiver.addrs()[0]);
    let receiver = receiver.run();
    let receiver_handle = receiver.handle();
    tokio::spawn(receiver);

    let settings = TelemetrySettings {
        log_format: LogFormat::Json,
        otlp_endpoint: Some(endpoint),
        otlp_protocol: OtlpProtocol::HttpProtobuf,
        ..TelemetrySettings::default()
    };
    let guard = init_telemetry("telemetry-export-test", &settings).unwrap();
    assert!(guard.exports_traces());

    tracing::info_span!("callbridge_export_probe", batch_id = 42).in_scope(|| {
        tracing::info!("inside the probe span");
    });
    // Dropping the guard flushes the batch exporter.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();

    let body = tokio::time::timeout(HANG_GUARD, received.recv())
        .await
        .expect("no spans reached the OTLP receiver")
        .unwrap();
    assert!(
        contains(&body, b"callbridge_export_probe"),
        "span name missing"
    );
    assert!(
        contains(&body, b"telemetry-export-test"),
        "service name missing"
    );
    receiver_handle.stop(false).await;
}
