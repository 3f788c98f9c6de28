//! The centralized calling API as the submitter uses it: insert a batch's numbers, ask
//! which numbers a batch holds, dispatch the queued calls. Each call comes back as one
//! outcome enum that says what is known about the effect, so the worker never has to
//! look at a status code.
//!
//! The wire contract (paths, shapes, how answers and errors are read) lives in
//! `callbridge_types::centralized_api`; this module decides what each answer means for the
//! numbers sent.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use callbridge_runtime::config::ApiConfig;
use callbridge_runtime::errors::error_chain;
pub use callbridge_types::centralized_api::QueueItem;
use callbridge_types::centralized_api::{
    ACCOUNT_CODE_PARAM, API_KEY_HEADER, Answer, BATCH_STATUS_PATH, BatchStatusReading,
    DEFAULT_RATE_LIMIT_WAIT, DISPATCH_PATH, INSERT_PATH, InsertRequest, MAX_ITEMS_PER_INSERT,
    NotFoundMeaning, error_message, parse_retry_after, quote_body,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Why an attempt is retried; the `reason` label of the retry metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    ServerError,
    Timeout,
    ConnectionLost,
    ConnectionRefused,
    RateLimited,
    Warning,
    ShortInsert,
    UnreadableAnswer,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ServerError => "server_error",
            RetryReason::Timeout => "timeout",
            RetryReason::ConnectionLost => "connection_lost",
            RetryReason::ConnectionRefused => "connection_refused",
            RetryReason::RateLimited => "rate_limited",
            RetryReason::Warning => "warning",
            RetryReason::ShortInsert => "short_insert",
            RetryReason::UnreadableAnswer => "unreadable_answer",
        }
    }
}

/// A failed attempt that may be tried again: why, and how long the API asked us to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retryable {
    pub reason: RetryReason,
    /// One line for `last_error` and logs; never holds the API key or a phone number.
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// The API refused the key (401/403): submission pauses until it accepts it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRejected {
    pub status: u16,
    pub message: String,
}

/// What an insert request established about its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The system holds every number sent.
    Accepted,
    /// The request may or may not have taken effect (5xx, timeout, connection lost after
    /// sending, `warning`, an `inserted_count` short of what was sent): the numbers must
    /// be reconciled against batch-status before they are sent again.
    Unknown(Retryable),
    /// Certainly not taken (429, connection refused): safe to send again after a wait.
    NotAccepted(Retryable),
    /// Refused for good (a 4xx other than 401/403/408/429), with the API's message.
    Rejected {
        status: u16,
        message: String,
    },
    KeyRejected(KeyRejected),
}

/// What batch-status said about a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStatusAnswer {
    /// Every number the system holds for the batch, once per accepted item (empty when
    /// the system does not know the batch and a 404 is configured to mean none held).
    Holds(Vec<String>),
    /// An answer that cannot be read as a list of numbers: the rows go to review.
    Unreadable(String),
    /// No answer now (5xx, 429, timeout, connection): ask again later.
    Unavailable(Retryable),
    KeyRejected(KeyRejected),
}

/// What a dispatch request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchOutcome {
    Dispatched,
    /// Dispatching again is harmless (it places only calls still queued), so any failure
    /// is simply retried.
    Failed(Retryable),
    KeyRejected(KeyRejected),
}

/// What came back from one HTTP exchange.
enum Exchange {
    Answered {
        status: StatusCode,
        body: Vec<u8>,
        retry_after: Option<Duration>,
    },
    /// The connection was never established: nothing was sent.
    NotSent(String),
    /// Sent (at least partly), but no complete answer arrived.
    Lost { timed_out: bool, message: String },
}

/// Why an exchange has no answer, as the retry it calls for.
enum Unanswered {
    /// Certainly never reached the API.
    NotSent(Retryable),
    /// May have reached it: the outcome is unknown.
    Lost(Retryable),
}

impl Unanswered {
    fn into_retryable(self) -> Retryable {
        match self {
            Unanswered::NotSent(retryable) | Unanswered::Lost(retryable) => retryable,
        }
    }
}

impl Exchange {
    /// Status, body and `Retry-After` of the answer, or why there is none.
    fn answer(self) -> Result<(StatusCode, Vec<u8>, Option<Duration>), Unanswered> {
        match self {
            Exchange::Answered {
                status,
                body,
                retry_after,
            } => Ok((status, body, retry_after)),
            Exchange::NotSent(message) => Err(Unanswered::NotSent(not_sent(message))),
            Exchange::Lost { timed_out, message } => {
                Err(Unanswered::Lost(lost(timed_out, message)))
            }
        }
    }
}

/// The HTTP client of the centralized API.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    insert_url: Url,
    batch_status_url: Url,
    dispatch_url: Url,
    api_key: HeaderValue,
    batch_status: BatchStatusReading,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("insert_url", &self.insert_url.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for `config.base_url` (a path prefix is kept), every request bounded by
    /// `config.request_timeout`.
    pub fn new(config: &ApiConfig) -> anyhow::Result<ApiClient> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |path: &str| {
            base.join(path)
                .with_context(|| format!("while building the API URL for {path}"))
        };
        let mut dispatch_url = join(DISPATCH_PATH)?;
        if let Some(account_code) = config.account_code.as_deref() {
            dispatch_url
                .query_pairs_mut()
                .append_pair(ACCOUNT_CODE_PARAM, account_code);
        }
        let mut api_key = HeaderValue::from_str(config.api_key.expose()).map_err(|_| {
            anyhow::anyhow!(
                "CENTRALIZED_CALLING_API_KEY holds characters an HTTP header cannot carry"
            )
        })?;
        // Keeps the key out of reqwest's and hyper's debug output.
        api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("callbridge-submitter/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .build()
            .context("while building the HTTP client")?;
        Ok(ApiClient {
            http,
            insert_url: join(INSERT_PATH)?,
            batch_status_url: join(BATCH_STATUS_PATH)?,
            dispatch_url,
            api_key,
            batch_status: BatchStatusReading::default(),
        })
    }

    /// Reads batch-status answers as `reading` says (the simulator's layout, and a 404 as
    /// unknown, by default).
    pub fn with_batch_status_reading(mut self, reading: BatchStatusReading) -> ApiClient {
        self.batch_status = reading;
        self
    }

    /// `POST` an insert of at most [`MAX_ITEMS_PER_INSERT`] items.
    #[tracing::instrument(name = "api_insert", skip_all, fields(batch_id = batch_id, items = items.len(), http.status_code))]
    pub async fn insert(&self, batch_id: i32, items: &[QueueItem<'_>]) -> InsertOutcome {
        debug_assert!(items.len() <= MAX_ITEMS_PER_INSERT);
        let body = match serde_json::to_vec(&InsertRequest {
            batch_id,
            data: items,
        }) {
            Ok(body) => body,
            Err(error) => {
                return InsertOutcome::Rejected {
                    status: 0,
                    message: format!("the insert body could not be encoded: {error}"),
                };
            }
        };
        let request = self
            .http
            .post(self.insert_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let exchange = self.exchange(request).await;
        read_insert_exchange(exchange, batch_id, items.len())
    }

    /// `GET` batch-status of `batch_id`: which numbers the system holds for it.
    #[tracing::instrument(name = "api_batch_status", skip_all, fields(batch_id = batch_id, http.status_code))]
    pub async fn batch_status(&self, batch_id: i32) -> BatchStatusAnswer {
        let url = match self.batch_status_url.join(&batch_id.to_string()) {
            Ok(url) => url,
            Err(error) => return BatchStatusAnswer::Unreadable(format!("bad URL: {error}")),
        };
        let exchange = self.exchange(self.http.get(url)).await;
        read_batch_status_exchange(exchange, &self.batch_status)
    }

    /// `POST` a dispatch (with `?accountcode=` when configured).
    #[tracing::instrument(name = "api_dispatch", skip_all, fields(http.status_code))]
    pub async fn dispatch(&self) -> DispatchOutcome {
        let exchange = self
            .exchange(self.http.post(self.dispatch_url.clone()))
            .await;
        read_dispatch_exchange(exchange)
    }

    /// Sends with the API key and the current span's W3C trace context, and reads the
    /// whole answer.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Exchange {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(API_KEY_HEADER),
            self.api_key.clone(),
        );
        inject_trace_context(&mut headers);
        let response = match request.headers(headers).send().await {
            Ok(response) => response,
            Err(error) => return transport_failure(&error),
        };
        let status = response.status();
        tracing::Span::current().record("http.status_code", status.as_u16());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        match response.bytes().await {
            Ok(body) => Exchange::Answered {
                status,
                body: body.to_vec(),
                retry_after,
            },
            Err(error) => transport_failure(&error),
        }
    }
}

/// The W3C `traceparent`/`tracestate` of the current span, through the propagator
/// `callbridge_runtime::telemetry::init_telemetry` installs, so the API's own traces can
/// join ours.
fn inject_trace_context(headers: &mut HeaderMap) {
    struct HeaderInjector<'a>(&'a mut HeaderMap);
    impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

fn transport_failure(error: &reqwest::Error) -> Exchange {
    // The cause chain says what happened (refused, reset, timed out); the URL is ours and
    // holds no secret, but the chain is enough.
    let message = error_chain(error);
    if error.is_connect() {
        Exchange::NotSent(message)
    } else {
        Exchange::Lost {
            timed_out: error.is_timeout(),
            message,
        }
    }
}

/// A request that never reached the centralized API: safe to retry without reconciling.
fn not_sent(message: String) -> Retryable {
    Retryable {
        reason: RetryReason::ConnectionRefused,
        message: format!("could not connect to the centralized API: {message}"),
        retry_after: None,
    }
}

fn read_insert_exchange(exchange: Exchange, batch_id: i32, sent: usize) -> InsertOutcome {
    let (status, body, retry_after) = match exchange.answer() {
        Ok(answer) => answer,
        Err(Unanswered::NotSent(retryable)) => return InsertOutcome::NotAccepted(retryable),
        Err(Unanswered::Lost(retryable)) => return InsertOutcome::Unknown(retryable),
    };
    if status.is_success() {
        return read_insert_answer(&body, batch_id, sent);
    }
    match classify_error_status(status, &body, retry_after) {
        ErrorClass::KeyRejected(rejected) => InsertOutcome::KeyRejected(rejected),
        ErrorClass::NotTaken(retryable) => InsertOutcome::NotAccepted(retryable),
        ErrorClass::MaybeTaken(retryable) => InsertOutcome::Unknown(retryable),
        ErrorClass::Refused { status, message } => InsertOutcome::Rejected { status, message },
    }
}

/// A 2xx insert answer: only `status: "success"` with every number counted is a success.
fn read_insert_answer(body: &[u8], batch_id: i32, sent: usize) -> InsertOutcome {
    let unknown = |reason: RetryReason, message: String| {
        InsertOutcome::Unknown(Retryable {
            reason,
            message,
            retry_after: None,
        })
    };
    let Some(answer) = Answer::parse(body) else {
        return unknown(
            RetryReason::UnreadableAnswer,
            format!(
                "the insert answer is not a JSON object: {}",
                quote_body(body)
            ),
        );
    };
    if let Some(answered_batch) = answer.field("batch_id").and_then(Value::as_i64)
        && answered_batch != i64::from(batch_id)
    {
        return unknown(
            RetryReason::UnreadableAnswer,
            format!("the insert answer names batch {answered_batch}, not {batch_id}"),
        );
    }
    let message = answer.message().unwrap_or_default();
    match answer.field("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("warning") => {
            return unknown(
                RetryReason::Warning,
                format!("the API answered with a warning: {message}"),
            );
        }
        other => {
            return unknown(
                RetryReason::UnreadableAnswer,
                format!("the insert answer's status is {other:?}, not \"success\": {message}"),
            );
        }
    }
    match answer.field("inserted_count").map(Value::as_u64) {
        None => InsertOutcome::Accepted,
        Some(Some(inserted)) if inserted == sent as u64 => InsertOutcome::Accepted,
        Some(Some(inserted)) if inserted < sent as u64 => unknown(
            RetryReason::ShortInsert,
            format!("the API inserted {inserted} of {sent} numbers: {message}"),
        ),
        Some(count) => unknown(
            RetryReason::UnreadableAnswer,
            format!(
                "the insert answer's inserted_count {count:?} does not match the {sent} numbers sent"
            ),
        ),
    }
}

fn read_batch_status_exchange(
    exchange: Exchange,
    reading: &BatchStatusReading,
) -> BatchStatusAnswer {
    let (status, body, retry_after) = match exchange.answer() {
        Ok(answer) => answer,
        Err(unanswered) => return BatchStatusAnswer::Unavailable(unanswered.into_retryable()),
    };
    if status == StatusCode::NOT_FOUND {
        return match reading.not_found {
            NotFoundMeaning::None => BatchStatusAnswer::Holds(Vec::new()),
            // A system that indexes batches late answers 404 for one it holds: resending
            // then dials every number twice.
            NotFoundMeaning::Unknown => BatchStatusAnswer::Unreadable(format!(
                "batch-status answered 404 ({}), which may mean the system has not indexed the batch yet; set {}=none only if the centralized system's operators confirm a 404 means it holds none of the batch's numbers",
                error_message(&body),
                callbridge_runtime::config::setting_name("submitter.batch_status_not_found")
            )),
        };
    }
    if status.is_success() {
        return read_batch_status_answer(&body, reading);
    }
    match classify_error_status(status, &body, retry_after) {
        ErrorClass::KeyRejected(rejected) => BatchStatusAnswer::KeyRejected(rejected),
        ErrorClass::NotTaken(retryable) | ErrorClass::MaybeTaken(retryable) => {
            BatchStatusAnswer::Unavailable(retryable)
        }
        ErrorClass::Refused { status, message } => {
            BatchStatusAnswer::Unreadable(format!("batch-status answered HTTP {status}: {message}"))
        }
    }
}

/// The numbers at the configured path (see [`NumbersPath::held_numbers`]).
///
/// [`NumbersPath::held_numbers`]: callbridge_types::centralized_api::NumbersPath::held_numbers
fn read_batch_status_answer(body: &[u8], reading: &BatchStatusReading) -> BatchStatusAnswer {
    let Some(answer) = Answer::parse(body) else {
        return BatchStatusAnswer::Unreadable(format!(
            "the batch-status answer is not a JSON object: {}",
            quote_body(body)
        ));
    };
    match reading.numbers_path.held_numbers(&answer) {
        Ok(numbers) => BatchStatusAnswer::Holds(numbers),
        Err(why) => BatchStatusAnswer::Unreadable(format!(
            "{why}; if the system lists them elsewhere, set {} (see callbridge doctor)",
            callbridge_runtime::config::setting_name("submitter.batch_status_numbers_path")
        )),
    }
}

fn read_dispatch_exchange(exchange: Exchange) -> DispatchOutcome {
    let (status, body, retry_after) = match exchange.answer() {
        Ok(answer) => answer,
        Err(unanswered) => return DispatchOutcome::Failed(unanswered.into_retryable()),
    };
    if status.is_success() {
        let answer = Answer::parse(&body);
        let answered = answer
            .as_ref()
            .and_then(|answer| answer.field("status"))
            .and_then(Value::as_str);
        return match answered {
            None | Some("success") => DispatchOutcome::Dispatched,
            Some(other) => DispatchOutcome::Failed(Retryable {
                reason: RetryReason::Warning,
                message: format!(
                    "dispatch answered status {other:?}: {}",
                    answer
                        .as_ref()
                        .and_then(Answer::message)
                        .unwrap_or_default()
                ),
                retry_after: None,
            }),
        };
    }
    match classify_error_status(status, &body, retry_after) {
        ErrorClass::KeyRejected(rejected) => DispatchOutcome::KeyRejected(rejected),
        ErrorClass::NotTaken(retryable) | ErrorClass::MaybeTaken(retryable) => {
            DispatchOutcome::Failed(retryable)
        }
        ErrorClass::Refused { status, message } => DispatchOutcome::Failed(Retryable {
            reason: RetryReason::UnreadableAnswer,
            message: format!("dispatch answered HTTP {status}: {message}"),
            retry_after,
        }),
    }
}

fn lost(timed_out: bool, message: String) -> Retryable {
    if timed_out {
        Retryable {
            reason: RetryReason::Timeout,
            message: format!("no answer within the request timeout: {message}"),
            retry_after: None,
        }
    } else {
        Retryable {
            reason: RetryReason::ConnectionLost,
            message: format!("the connection was lost before an answer: {message}"),
            retry_after: None,
        }
    }
}

/// A non-2xx status, sorted by what it says about the request's effect.
enum ErrorClass {
    KeyRejected(KeyRejected),
    /// The request certainly had no effect and may be repeated (408, 429).
    NotTaken(Retryable),
    /// The request may have had an effect (5xx and anything unexpected).
    MaybeTaken(Retryable),
    /// Refused for good (other 4xx).
    Refused {
        status: u16,
        message: String,
    },
}

fn classify_error_status(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ErrorClass {
    let message = error_message(body);
    let code = status.as_u16();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorClass::KeyRejected(KeyRejected {
            status: code,
            message,
        }),
        StatusCode::TOO_MANY_REQUESTS => ErrorClass::NotTaken(Retryable {
            reason: RetryReason::RateLimited,
            message: format!("HTTP 429 rate limited: {message}"),
            retry_after: Some(retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT)),
        }),
        // The server gave up waiting for the request itself: it was never processed.
        StatusCode::REQUEST_TIMEOUT => ErrorClass::NotTaken(Retryable {
            reason: RetryReason::Timeout,
            message: format!("HTTP 408: {message}"),
            retry_after,
        }),
        _ if status.is_client_error() => ErrorClass::Refused {
            status: code,
            message,
        },
        _ => ErrorClass::MaybeTaken(Retryable {
            reason: RetryReason::ServerError,
            message: format!("HTTP {code}: {message}"),
            retry_after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;
    use serde_json::json;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn answered(status: u16, value: Value) -> Exchange {
        Exchange::Answered {
            status: StatusCode::from_u16(status).unwrap(),
            body: body(value),
            retry_after: None,
        }
    }

    #[test]
    fn flat_and_nested_success_layouts_are_accepted() {
        let flat =
            json!({"status": "success", "message": "2 queued", "batch_id": 7, "inserted_count": 2});
        let nested = json!({"status": "success", "message": "2 queued", "data": {"batch_id": 7, "inserted_count": 2}});
        for (status, value) in [
            (201, flat.clone()),
            (200, flat),
            (201, nested.clone()),
            (200, nested),
        ] {
            assert_eq!(
                read_insert_exchange(answered(status, value.clone()), 7, 2),
                InsertOutcome::Accepted,
                "{status} {value}"
            );
        }
        // The seed's own client reads only `status`.
        assert_eq!(
            read_insert_exchange(answered(200, json!({"status": "success"})), 7, 2),
            InsertOutcome::Accepted
        );
    }

    fn unknown_reason(outcome: InsertOutcome) -> RetryReason {
        match outcome {
            InsertOutcome::Unknown(retryable) => retryable.reason,
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
    }

    #[test]
    fn warning_short_count_and_odd_answers_leave_the_outcome_unknown() {
        let warning = json!({"status": "warning", "message": "Only 1 of 2 items were queued", "inserted_count": 1});
        assert_eq!(
            unknown_reason(read_insert_exchange(answered(201, warning), 7, 2)),
            RetryReason::Warning
        );
        let short = json!({"status": "success", "data": {"inserted_count": 1}});
        assert_eq!(
            unknown_reason(read_insert_exchange(answered(201, short), 7, 2)),
            RetryReason::ShortInsert
        );
        let other_batch = json!({"status": "success", "batch_id": 8, "inserted_count": 2});
        assert_eq!(
            unknown_reason(read_insert_exchange(answered(201, other_batch), 7, 2)),
            RetryReason::UnreadableAnswer
        );
        let not_json = Exchange::Answered {
            status: StatusCode::OK,
            body: b"<html>ok</html>".to_vec(),
            retry_after: None,
        };
        assert_eq!(
            unknown_reason(read_insert_exchange(not_json, 7, 2)),
            RetryReason::UnreadableAnswer
        );
        let server_error = answered(502, json!({"message": "Internal error", "status": "error"}));
        assert_eq!(
            unknown_reason(read_insert_exchange(server_error, 7, 2)),
            RetryReason::ServerError
        );
        let lost = Exchange::Lost {
            timed_out: true,
            message: "operation timed out".into(),
        };
        assert_eq!(
            unknown_reason(read_insert_exchange(lost, 7, 2)),
            RetryReason::Timeout
        );
    }

    #[test]
    fn rate_limit_and_refused_connection_are_certainly_not_accepted() {
        let limited = Exchange::Answered {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: body(json!({"message": "Rate limit exceeded", "status": "error"})),
            retry_after: Some(Duration::from_secs(7)),
        };
        match read_insert_exchange(limited, 7, 2) {
            InsertOutcome::NotAccepted(retryable) => {
                assert_eq!(retryable.reason, RetryReason::RateLimited);
                assert_eq!(retryable.retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("{other:?}"),
        }
        match read_insert_exchange(answered(429, json!({})), 7, 2) {
            InsertOutcome::NotAccepted(retryable) => {
                assert_eq!(retryable.retry_after, Some(DEFAULT_RATE_LIMIT_WAIT));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_insert_exchange(Exchange::NotSent("refused".into()), 7, 2),
            InsertOutcome::NotAccepted(Retryable {
                reason: RetryReason::ConnectionRefused,
                ..
            })
        ));
    }

    #[test]
    fn client_errors_carry_the_apis_message_in_either_shape() {
        let message = answered(
            400,
            json!({"message": "Queue data exceeds max batch size 1000", "status": "error"}),
        );
        assert_eq!(
            read_insert_exchange(message, 7, 2),
            InsertOutcome::Rejected {
                status: 400,
                message: "Queue data exceeds max batch size 1000".into()
            }
        );
        let detail = answered(
            422,
            json!({"detail": "data.0.custom_data: must be an object or null"}),
        );
        assert_eq!(
            read_insert_exchange(detail, 7, 2),
            InsertOutcome::Rejected {
                status: 422,
                message: "data.0.custom_data: must be an object or null".into()
            }
        );
        let fastapi = body(
            json!({"detail": [{"loc": ["body", "batch_id"], "msg": "field required", "type": "missing"}]}),
        );
        assert_eq!(error_message(&fastapi), "body.batch_id: field required");
        let unauthorized = answered(
            401,
            json!({"message": "Invalid API key", "status": "error"}),
        );
        assert_eq!(
            read_insert_exchange(unauthorized, 7, 2),
            InsertOutcome::KeyRejected(KeyRejected {
                status: 401,
                message: "Invalid API key".into()
            })
        );
    }

    #[test]
    fn batch_status_lists_numbers_or_is_unreadable() {
        let view = json!({"status": "success", "batch_id": 7, "total": 2, "phone_numbers": ["111", " 222 "]});
        let none = BatchStatusReading {
            not_found: NotFoundMeaning::None,
            ..BatchStatusReading::default()
        };
        let read = |exchange| read_batch_status_exchange(exchange, &none);
        assert_eq!(
            read(answered(200, view)),
            BatchStatusAnswer::Holds(vec!["111".into(), "222".into()])
        );
        let nested = json!({"status": "success", "data": {"phone_numbers": ["111"]}});
        assert_eq!(
            read(answered(200, nested)),
            BatchStatusAnswer::Holds(vec!["111".into()])
        );
        assert_eq!(
            read(answered(404, json!({"message": "Batch not found"}))),
            BatchStatusAnswer::Holds(Vec::new())
        );
        for unreadable in [
            json!({"status": "success", "total": 3}),
            json!({"status": "success", "total": 3, "phone_numbers": ["1"]}),
            json!({"status": "success", "phone_numbers": [1, 2]}),
        ] {
            assert!(
                matches!(
                    read(answered(200, unreadable.clone())),
                    BatchStatusAnswer::Unreadable(_)
                ),
                "{unreadable}"
            );
        }
        assert!(matches!(
            read(answered(503, json!({}))),
            BatchStatusAnswer::Unavailable(_)
        ));
    }

    #[test]
    fn by_default_a_404_is_unknown_and_names_the_setting() {
        let answer = read_batch_status_exchange(
            answered(404, json!({"message": "Batch not found"})),
            &BatchStatusReading::default(),
        );
        assert!(
            matches!(answer, BatchStatusAnswer::Unreadable(ref why)
                if why.contains("CALLBRIDGE__SUBMITTER__BATCH_STATUS_NOT_FOUND")),
            "{answer:?}"
        );
    }

    #[test]
    fn batch_status_is_read_at_the_configured_path() {
        let reading = BatchStatusReading {
            numbers_path: callbridge_types::centralized_api::NumbersPath::parse(
                "/data/calls/*/phone_number",
            )
            .unwrap(),
            ..BatchStatusReading::default()
        };
        let calls = json!({"data": {"calls": [{"phone_number": "111"}, {"phone_number": "222"}]}});
        assert_eq!(
            read_batch_status_exchange(answered(200, calls.clone()), &reading),
            BatchStatusAnswer::Holds(vec!["111".into(), "222".into()])
        );
        let default =
            read_batch_status_exchange(answered(200, calls), &BatchStatusReading::default());
        assert!(
            matches!(default, BatchStatusAnswer::Unreadable(ref why)
                if why.contains("CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBERS_PATH")),
            "{default:?}"
        );
    }

    #[test]
    fn requests_carry_the_current_spans_w3c_trace_context() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;

        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _default = tracing::subscriber::set_default(subscriber);

        let span = tracing::info_span!("api_insert");
        let _entered = span.enter();
        let mut headers = HeaderMap::new();
        inject_trace_context(&mut headers);

        let trace_id = span.context().span().span_context().trace_id().to_string();
        let traceparent = headers
            .get("traceparent")
            .expect("a traceparent header")
            .to_str()
            .unwrap();
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-")),
            "{traceparent}"
        );
    }
}
