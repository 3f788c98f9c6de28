//! `POST /callback`: size → signature over the raw bytes → JSON and schema →
//! confirmed publish → 200.

use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use callbridge_runtime::errors::error_chain;
use callbridge_types::event::{EventType, ValidatedCallback, parse_callback};
use callbridge_types::signature::{
    SignatureError, SignatureHeaders, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER, X_SIGNATURE_HEADER,
};
use futures::StreamExt;
use serde::Serialize;

use crate::error::CallbackError;
use crate::message::CallbackMessage;
use crate::metrics::record_callback;
use crate::publisher::Publisher;

/// What the handler needs, built once at start.
pub struct CallbackState {
    /// `None` when verification is disabled (`CALLBACK_VERIFICATION_ENABLED=false`).
    pub secrets: Option<Vec<Vec<u8>>>,
    /// Account code of a callback that carries none (may be empty: then such a
    /// callback is refused).
    pub default_accountcode: String,
    pub max_body_bytes: usize,
    /// How long the body may take to arrive once the head is in.
    pub body_timeout: Duration,
    pub retry_after_secs: u32,
    pub publisher: Publisher,
}

#[derive(Serialize)]
struct Accepted {
    status: &'static str,
}

/// Handles one callback and records its outcome and processing time.
pub async fn receive_callback(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<CallbackState>,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let mut event_type = None;
    let result = accept_callback(&request, payload, &state, &mut event_type).await;
    record_callback(
        event_type.as_ref(),
        result.as_ref().err(),
        started.elapsed(),
    );
    if let Err(error) = &result {
        tracing::Span::current().record("error.type", error.outcome());
        tracing::info!(
            outcome = error.outcome(),
            event_type = event_type.as_ref().map(EventType::as_str),
            // A cause never holds a secret or the body.
            error = %error_chain(error),
            "callback refused"
        );
    }
    result?;
    Ok(HttpResponse::Ok().json(Accepted { status: "success" }))
}

/// The checks in their order (size, signature, JSON and schema); `event_type` is filled in
/// once known, for metrics.
async fn accept_callback(
    request: &HttpRequest,
    payload: web::Payload,
    state: &CallbackState,
    event_type: &mut Option<EventType>,
) -> Result<(), CallbackError> {
    let received_at = chrono::Utc::now();
    let body = tokio::time::timeout(
        state.body_timeout,
        read_body_within_limit(request.headers(), payload, state.max_body_bytes),
    )
    .await
    .map_err(|_| CallbackError::BodyTimeout)??;
    if let Some(secrets) = &state.secrets {
        signature_headers(request.headers())?.verify(secrets, &body, received_at.timestamp())?;
    }
    let ValidatedCallback { event, .. } = parse_callback(&body, &state.default_accountcode)?;
    *event_type = Some(event.event_type.clone());
    let span = tracing::Span::current();
    span.record("event_type", event.event_type.as_str());
    span.record("call_id", event.loggable_call_id().as_str());

    let webhook_id = header_text(request.headers(), WEBHOOK_ID_HEADER)
        .ok()
        .flatten();
    let message = CallbackMessage::new(webhook_id, &body, received_at, event);
    state
        .publisher
        .publish_confirmed(
            message.exchange(),
            &message.routing_key,
            &message.body,
            message.headers(),
            message.properties_without_headers(),
        )
        .await
        .map_err(|cause| CallbackError::Unavailable {
            cause,
            retry_after_secs: state.retry_after_secs,
        })
}

/// Reads the raw body, refusing an announced or actual size over `limit` with 413
/// before buffering more than `limit` bytes.
async fn read_body_within_limit(
    headers: &HeaderMap,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, CallbackError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(CallbackError::TooLarge);
    }
    let capacity = announced.map_or(0, |length| length as usize);
    let mut body = web::BytesMut::with_capacity(capacity);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(CallbackError::BodyUnreadable)?;
        if body.len() + chunk.len() > limit {
            discard_rest(&mut payload, limit.saturating_mul(DISCARD_BUDGET_FACTOR)).await;
            return Err(CallbackError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// How much of an oversized body (without `Content-Length`) is read and dropped, as a
/// multiple of the limit, before answering 413.
const DISCARD_BUDGET_FACTOR: usize = 4;

/// Reads and drops what is left of a body, up to `budget` bytes. Closing a socket with
/// unread data makes TCP send a reset, which can destroy the 413 before the client reads
/// it; a sender slightly over the limit should see the answer, not a broken connection.
async fn discard_rest(payload: &mut web::Payload, budget: usize) {
    let mut discarded = 0usize;
    while discarded <= budget {
        match payload.next().await {
            Some(Ok(chunk)) => discarded += chunk.len(),
            Some(Err(_)) | None => return,
        }
    }
}

/// A header as text: `Ok(None)` when absent, `Err` when it holds bytes that are not
/// visible ASCII (no signature scheme produces such a value).
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, SignatureError> {
    headers
        .get(name)
        .map(|value| value.to_str().map_err(|_| SignatureError::Invalid))
        .transpose()
}

fn signature_headers(headers: &HeaderMap) -> Result<SignatureHeaders<'_>, SignatureError> {
    Ok(SignatureHeaders {
        x_signature: header_text(headers, X_SIGNATURE_HEADER)?,
        webhook_id: header_text(headers, WEBHOOK_ID_HEADER)?,
        webhook_timestamp: header_text(headers, WEBHOOK_TIMESTAMP_HEADER)?,
        webhook_signature: header_text(headers, WEBHOOK_SIGNATURE_HEADER)?,
    })
}
