//! The centralized system's three API endpoints, answered the way the seed's Python
//! `CentralizedCallingClient` reads them, with the documented limits and messages
//! and the faults the knobs ask for. ASSUMPTIONS.md describes every shape.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{Value, json};

use callbridge_types::centralized_api::{
    API_KEY_HEADER, AnswerLayout, BATCH_STATUS_PATH, BatchStatusView, DISPATCH_PATH, INSERT_PATH,
    MAX_ITEMS_PER_INSERT, insert_answer,
};

use crate::config::{AcceptThenFailMode, BatchStatusLayout, Endpoint, ResponseLayout};
use crate::ground_truth::RequestTruth;
use crate::state::SimState;
use crate::store::QueueItem;

/// The length of `call_logs.phone_number` / `local_call_queue.phone_number` (VARCHAR(20)).
const MAX_PHONE_NUMBER_CHARS: usize = 20;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    let insert_path = format!("/{INSERT_PATH}");
    config
        .route(&insert_path, web::post().to(insert))
        // FastAPI redirects the slash-less path; answering it directly is kinder to clients.
        .route(insert_path.trim_end_matches('/'), web::post().to(insert))
        .route(
            &format!("/{BATCH_STATUS_PATH}{{batch_id}}"),
            web::get().to(batch_status),
        )
        .route(&format!("/{DISPATCH_PATH}"), web::post().to(dispatch));
}

/// Every error answer of the API, mapped to HTTP in one place.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("Invalid API key")]
    InvalidApiKey,
    #[error("Rate limit exceeded")]
    RateLimited { retry_after_secs: Option<u64> },
    #[error("Internal error")]
    Internal,
    #[error("Queue data exceeds max batch size {MAX_ITEMS_PER_INSERT}")]
    TooManyItems,
    /// FastAPI-style validation error: `{"detail": …}`.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("Batch not found")]
    BatchNotFound,
    #[error("accountcode does not belong to this API key")]
    ForeignAccount,
}

impl ApiError {
    /// The fault name the ground truth records for this answer.
    fn fault(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidApiKey => Some("invalid_api_key"),
            ApiError::RateLimited { .. } => Some("rate_limit"),
            ApiError::Internal => Some("error"),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TooManyItems | ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BatchNotFound => StatusCode::NOT_FOUND,
            ApiError::ForeignAccount => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited {
            retry_after_secs: Some(seconds),
        } = self
        {
            response.insert_header((RETRY_AFTER, HeaderValue::from(*seconds)));
        }
        match self {
            ApiError::InvalidRequest(detail) => response.json(json!({ "detail": detail })),
            _ => response.json(json!({ "message": self.to_string(), "status": "error" })),
        }
    }
}

/// How a handled request is answered.
enum Reply {
    Json(StatusCode, Value),
    /// The connection is closed without an answer.
    Drop,
    /// Nothing is sent for a while, then the connection is closed.
    Hang(Duration),
}

/// Answers a request and records it in the ground truth.
async fn respond(
    state: &SimState,
    mut record: RequestTruth,
    result: Result<Reply, ApiError>,
) -> HttpResponse {
    let (response, dropped, hang) = match result {
        Ok(Reply::Json(status, body)) => (HttpResponse::build(status).json(body), false, None),
        Ok(Reply::Drop) => (dropped_connection(), true, None),
        Ok(Reply::Hang(duration)) => (dropped_connection(), true, Some(duration)),
        Err(error) => {
            record.fault = record.fault.or(error.fault().map(str::to_owned));
            (error.error_response(), false, None)
        }
    };
    record.status = (!dropped).then_some(response.status().as_u16());
    tracing::info!(
        endpoint = record.endpoint.as_str(),
        status = record.status,
        fault = record.fault.as_deref(),
        held = record.held,
        batch_id = record.batch_id,
        "api request"
    );
    state.store().record_request(record);
    if let Some(duration) = hang {
        tokio::time::sleep(duration).await;
    }
    response
}

/// A response whose body fails before its first byte: actix then closes the connection
/// without flushing anything, so the client sees the connection drop after sending.
fn dropped_connection() -> HttpResponse {
    HttpResponse::Ok().streaming(futures::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other(
            "connection dropped by fault injection",
        ))
    }))
}

/// Latency, hold, API key, then 429 and 500 faults, in that order.
async fn admit(
    state: &SimState,
    request: &HttpRequest,
    endpoint: Endpoint,
    record: &mut RequestTruth,
) -> Result<(), ApiError> {
    let knobs = state.knobs();
    let in_scope = knobs.applies_to(endpoint);
    if in_scope && knobs.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
    }
    if in_scope {
        record.held = state.wait_while_held().await;
    }
    // Read again: a test may change knobs (or fix the key) while a request is held.
    let knobs = state.knobs();
    let presented = request
        .headers()
        .get(API_KEY_HEADER)
        .map(HeaderValue::as_bytes);
    if knobs.reject_all_keys || !state.key_matches(presented) {
        return Err(ApiError::InvalidApiKey);
    }
    if in_scope && state.roll_fault(|knobs| knobs.rate_limit_rate) {
        return Err(ApiError::RateLimited {
            retry_after_secs: knobs.retry_after_secs,
        });
    }
    if in_scope && state.roll_fault(|knobs| knobs.error_rate) {
        return Err(ApiError::Internal);
    }
    Ok(())
}

/// After the effect is stored: the failure the accept-then-fail knob asks for, if it hits.
fn accept_then_fail(
    state: &SimState,
    endpoint: Endpoint,
    record: &mut RequestTruth,
) -> Option<Reply> {
    let knobs = state.knobs();
    if !(endpoint.is_mutating()
        && knobs.applies_to(endpoint)
        && state.roll_fault(|knobs| knobs.accept_then_fail_rate))
    {
        return None;
    }
    record.fault = Some("accept_then_fail".into());
    Some(match knobs.accept_then_fail_mode {
        AcceptThenFailMode::Error500 => Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "message": ApiError::Internal.to_string(), "status": "error" }),
        ),
        AcceptThenFailMode::DropConnection => Reply::Drop,
        AcceptThenFailMode::Hang => Reply::Hang(Duration::from_millis(knobs.hang_ms)),
    })
}

#[tracing::instrument(skip_all)]
async fn insert(request: HttpRequest, body: Bytes, state: web::Data<SimState>) -> HttpResponse {
    let mut record = RequestTruth::new(Endpoint::Insert);
    let result = handle_insert(&state, &request, &body, &mut record).await;
    respond(&state, record, result).await
}

async fn handle_insert(
    state: &SimState,
    request: &HttpRequest,
    body: &[u8],
    record: &mut RequestTruth,
) -> Result<Reply, ApiError> {
    admit(state, request, Endpoint::Insert, record).await?;
    let (batch_id, items) = parse_insert(body)?;
    record.batch_id = Some(batch_id);
    record.items_sent = items.len();

    let knobs = state.knobs();
    let kept = match knobs.partial_accept_max {
        Some(max) if max < items.len() && state.roll_fault(|_| 1.0) => max,
        _ => items.len(),
    };
    let stored = state
        .store()
        .insert_items(batch_id, &state.dialer.accountcode, &items[..kept]);
    record.items_stored = stored;

    if let Some(failure) = accept_then_fail(state, Endpoint::Insert, record) {
        return Ok(failure);
    }
    let status = StatusCode::from_u16(knobs.insert_success_status).unwrap_or(StatusCode::CREATED);
    let (outcome, message) = if kept < items.len() {
        record.fault = Some("partial_accept".into());
        (
            "warning",
            format!("Only {stored} of {} items were queued", items.len()),
        )
    } else {
        ("success", format!("{stored} items queued successfully"))
    };
    let layout = match knobs.response_layout {
        ResponseLayout::Flat => AnswerLayout::Flat,
        ResponseLayout::Nested => AnswerLayout::Nested,
    };
    Ok(Reply::Json(
        status,
        insert_answer(layout, outcome, &message, batch_id, stored),
    ))
}

/// Validates an insert body: `{"batch_id": <int32>, "data": [{"phone_number": <str>,
/// "custom_data": <object|null>?}, …]}` with 1 to 1000 items. The item count is checked
/// before the items, so an oversized batch always gets the documented message.
fn parse_insert(body: &[u8]) -> Result<(i32, Vec<QueueItem>), ApiError> {
    let invalid = |detail: &str| ApiError::InvalidRequest(detail.to_owned());
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid("body: not valid JSON"))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("body: must be a JSON object"))?;
    let batch_id = object
        .get("batch_id")
        .ok_or_else(|| invalid("batch_id: field required"))?
        .as_i64()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| invalid("batch_id: must be a 32-bit integer"))?;
    let data = object
        .get("data")
        .ok_or_else(|| invalid("data: field required"))?
        .as_array()
        .ok_or_else(|| invalid("data: must be a list"))?;
    if data.len() > MAX_ITEMS_PER_INSERT {
        return Err(ApiError::TooManyItems);
    }
    if data.is_empty() {
        return Err(invalid("data: must contain at least one item"));
    }
    let items = data
        .iter()
        .enumerate()
        .map(|(index, item)| parse_item(index, item))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((batch_id, items))
}

fn parse_item(index: usize, item: &Value) -> Result<QueueItem, ApiError> {
    let invalid = |detail: String| ApiError::InvalidRequest(detail);
    let object = item
        .as_object()
        .ok_or_else(|| invalid(format!("data.{index}: must be an object")))?;
    let phone_number = object
        .get("phone_number")
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or_else(|| invalid(format!("data.{index}.phone_number: must be a string")))?;
    if phone_number.is_empty() || phone_number.chars().count() > MAX_PHONE_NUMBER_CHARS {
        return Err(invalid(format!(
            "data.{index}.phone_number: must be 1 to {MAX_PHONE_NUMBER_CHARS} characters"
        )));
    }
    let custom_data = match object.get("custom_data") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => Some(value.clone()),
        Some(_) => {
            return Err(invalid(format!(
                "data.{index}.custom_data: must be an object or null"
            )));
        }
    };
    Ok(QueueItem {
        phone_number: phone_number.to_owned(),
        custom_data,
    })
}

#[tracing::instrument(skip_all)]
async fn batch_status(request: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    let mut record = RequestTruth::new(Endpoint::BatchStatus);
    let result = handle_batch_status(&state, &request, &mut record).await;
    respond(&state, record, result).await
}

async fn handle_batch_status(
    state: &SimState,
    request: &HttpRequest,
    record: &mut RequestTruth,
) -> Result<Reply, ApiError> {
    admit(state, request, Endpoint::BatchStatus, record).await?;
    let batch_id = request
        .match_info()
        .get("batch_id")
        .and_then(|raw| raw.parse::<i32>().ok())
        .ok_or_else(|| ApiError::InvalidRequest("batch_id: must be a 32-bit integer".into()))?;
    record.batch_id = Some(batch_id);
    let knobs = state.knobs();
    let store = state.store();
    if store
        .batch_age(batch_id)
        .is_some_and(|age| age < Duration::from_millis(knobs.batch_status_hidden_ms))
    {
        record.fault = Some("batch_status_hidden".into());
        return Err(ApiError::BatchNotFound);
    }
    let mut view = store
        .batch_status(batch_id)
        .ok_or(ApiError::BatchNotFound)?;
    drop(store);
    if !knobs.batch_status_number_prefix.is_empty() {
        for number in &mut view.phone_numbers {
            number.insert_str(0, &knobs.batch_status_number_prefix);
        }
    }
    Ok(Reply::Json(
        StatusCode::OK,
        batch_status_answer(knobs.batch_status_layout, view),
    ))
}

/// The batch-status answer in the layout the knob asks for.
fn batch_status_answer(layout: BatchStatusLayout, view: BatchStatusView) -> Value {
    match layout {
        BatchStatusLayout::Flat => serde_json::to_value(view).unwrap_or(Value::Null),
        BatchStatusLayout::Calls => json!({
            "status": view.status,
            "data": {
                "batch_id": view.batch_id,
                "accountcode": view.accountcode,
                "batch_status": view.batch_status,
                "total": view.total,
                "queued": view.queued,
                "dispatched": view.dispatched,
                "in_progress": view.in_progress,
                "completed": view.completed,
                "failed": view.failed,
                "calls": view.phone_numbers.iter()
                    .map(|number| json!({ "phone_number": number }))
                    .collect::<Vec<_>>(),
            },
        }),
        BatchStatusLayout::Queue => json!({
            "status": view.status,
            "batch": { "id": view.batch_id, "state": view.batch_status, "size": view.total },
            "queue": view.phone_numbers.iter()
                .map(|number| json!({ "destination": { "number": number } }))
                .collect::<Vec<_>>(),
        }),
    }
}

#[derive(Debug, Deserialize)]
struct DispatchQuery {
    accountcode: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn dispatch(request: HttpRequest, state: web::Data<SimState>) -> HttpResponse {
    let mut record = RequestTruth::new(Endpoint::Dispatch);
    let state = state.into_inner();
    let result = handle_dispatch(&state, &request, &mut record).await;
    respond(&state, record, result).await
}

async fn handle_dispatch(
    state: &Arc<SimState>,
    request: &HttpRequest,
    record: &mut RequestTruth,
) -> Result<Reply, ApiError> {
    admit(state, request, Endpoint::Dispatch, record).await?;
    let query = web::Query::<DispatchQuery>::from_query(request.query_string())
        .map_err(|_| ApiError::InvalidRequest("query: could not be parsed".into()))?;
    let asked_account = query.accountcode.as_deref().map(str::trim).unwrap_or("");
    if !asked_account.is_empty() && asked_account != state.dialer.accountcode {
        return Err(ApiError::ForeignAccount);
    }
    let (dispatched, batch_ids) = state.dispatch();
    record.calls_dispatched = dispatched;
    if let Some(failure) = accept_then_fail(state, Endpoint::Dispatch, record) {
        return Ok(failure);
    }
    Ok(Reply::Json(
        StatusCode::OK,
        json!({
            "status": "success",
            "message": format!("Dispatched {dispatched} calls"),
            "dispatched": dispatched,
            "batch_ids": batch_ids,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn detail(result: Result<(i32, Vec<QueueItem>), ApiError>) -> String {
        match result {
            Err(ApiError::InvalidRequest(detail)) => detail,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn valid_insert_body_parses_with_and_without_custom_data() {
        let (batch_id, items) = parse_insert(&body(json!({
            "batch_id": 12345,
            "data": [
                {"phone_number": "9876543210", "custom_data": {"customer_id": "CUST001"}},
                {"phone_number": "9876543211"},
            ]
        })))
        .unwrap();
        assert_eq!(batch_id, 12345);
        assert_eq!(
            items[0].custom_data,
            Some(json!({"customer_id": "CUST001"}))
        );
        assert_eq!(items[1].custom_data, None);
    }

    #[test]
    fn oversized_batch_gets_the_documented_error_even_with_bad_items() {
        let data: Vec<Value> = (0..=MAX_ITEMS_PER_INSERT).map(|_| json!(42)).collect();
        let result = parse_insert(&body(json!({"batch_id": 1, "data": data})));
        assert!(matches!(result, Err(ApiError::TooManyItems)));
        assert_eq!(
            ApiError::TooManyItems.to_string(),
            "Queue data exceeds max batch size 1000"
        );
    }

    #[test]
    fn invalid_bodies_name_the_field() {
        assert!(detail(parse_insert(b"not json")).starts_with("body"));
        assert!(detail(parse_insert(&body(json!({"data": []})))).starts_with("batch_id"));
        let too_big = json!({"batch_id": 2_147_483_648_i64, "data": [{"phone_number": "1"}]});
        assert!(detail(parse_insert(&body(too_big))).starts_with("batch_id"));
        assert!(
            detail(parse_insert(&body(json!({"batch_id": 1, "data": []})))).starts_with("data")
        );
        let no_number = json!({"batch_id": 1, "data": [{"phone_number": "1"}, {}]});
        assert!(detail(parse_insert(&body(no_number))).starts_with("data.1.phone_number"));
        let long = json!({"batch_id": 1, "data": [{"phone_number": "1".repeat(21)}]});
        assert!(detail(parse_insert(&body(long))).starts_with("data.0.phone_number"));
        let bad_custom =
            json!({"batch_id": 1, "data": [{"phone_number": "1", "custom_data": [1]}]});
        assert!(detail(parse_insert(&body(bad_custom))).starts_with("data.0.custom_data"));
    }
}
