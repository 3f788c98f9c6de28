//! The server span of each callback request: route, status, event type and
//! call id; the publish is its child, so the trace continues into the message.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use callbridge_runtime::telemetry::PER_MESSAGE_SPANS;
use tracing::Instrument;
use tracing::field::Empty;

/// Wraps a request in a `server` span (traced, not copied into log lines: see
/// [`PER_MESSAGE_SPANS`]). The handler records `event_type` and `call_id`
/// on it once the body has been validated.
pub async fn trace_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        target: PER_MESSAGE_SPANS,
        "http.request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %request.method(),
        http.route = %route,
        http.response.status_code = Empty,
        event_type = Empty,
        call_id = Empty,
        error.type = Empty,
    );
    let response = next.call(request).instrument(span.clone()).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}
