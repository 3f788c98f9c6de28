//! The centralized calling API's wire contract, in one place: its paths, the key header,
//! the item limit, the request and answer shapes, and how an answer is read. Pure: the
//! submitter's and the CLI's HTTP clients and the simulator's handlers build on it.
//!
//! What the centralized system's public guides document: success is 200 or 201 with
//! `status`, `message`, `batch_id`, `inserted_count` at the top level or nested under
//! `data`; a `status` of `"warning"` is not a success; errors are
//! `{"message":…, "status":…}` or FastAPI's `{"detail":…}`; 429 may carry `Retry-After`
//! (60 s when absent). The batch-status answer is documented nowhere: [`BatchStatusView`]
//! is the simulator's definition (`crates/callbridge-sim/ASSUMPTIONS.md`).

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};

/// `POST`: queue a batch's numbers. Relative to the API's base URL, which may carry a
/// path prefix.
pub const INSERT_PATH: &str = "api/v1/queues/insertdataincallqueue/";
/// `GET` + the batch id: which numbers the system holds for a batch.
pub const BATCH_STATUS_PATH: &str = "api/v1/queues/batch-status/";
/// `POST`: place every queued call of the key's account.
pub const DISPATCH_PATH: &str = "api/v1/controls/dispatch-calls";
/// The query parameter naming the account a dispatch is for.
pub const ACCOUNT_CODE_PARAM: &str = "accountcode";
/// Sent on every request; `X-API-KEY` in the guide. Lower case, as HTTP/2 requires and
/// header-name constructors expect (header names are case-insensitive).
pub const API_KEY_HEADER: &str = "x-api-key";
/// The documented maximum number of items in one insert request.
pub const MAX_ITEMS_PER_INSERT: usize = 1000;
/// How long to wait after a 429 that names no `Retry-After`.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Error bodies are quoted in messages only up to this many characters.
pub const MAX_QUOTED_CHARS: usize = 300;

/// The batch-status path of one batch, relative to the API's base URL.
pub fn batch_status_path(batch_id: i64) -> String {
    format!("{BATCH_STATUS_PATH}{batch_id}")
}

/// One number of an insert request.
#[derive(Debug, Clone, Serialize)]
pub struct QueueItem<'a> {
    pub phone_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<&'a Value>,
}

/// The body of an insert request: `{"batch_id": <int32>, "data": [<item>, …]}`.
#[derive(Debug, Serialize)]
pub struct InsertRequest<'a> {
    pub batch_id: i32,
    pub data: &'a [QueueItem<'a>],
}

/// Where an answer puts its fields besides `status` and `message`: both are seen in the
/// centralized system's guides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerLayout {
    /// `{"status":…,"message":…,"batch_id":…,"inserted_count":…}`
    Flat,
    /// `{"status":…,"message":…,"data":{"batch_id":…,"inserted_count":…}}`
    Nested,
}

/// An insert answer: `status` is `"success"`, or `"warning"` when fewer than all items were
/// queued.
pub fn insert_answer(
    layout: AnswerLayout,
    status: &str,
    message: &str,
    batch_id: i32,
    inserted_count: usize,
) -> Value {
    let mut fields = Map::new();
    fields.insert("batch_id".into(), batch_id.into());
    fields.insert("inserted_count".into(), inserted_count.into());
    let mut answer = Map::new();
    answer.insert("status".into(), status.into());
    answer.insert("message".into(), message.into());
    match layout {
        AnswerLayout::Flat => answer.extend(fields),
        AnswerLayout::Nested => {
            answer.insert("data".into(), Value::Object(fields));
        }
    }
    Value::Object(answer)
}

/// The batch-status answer as the simulator defines it (the real system documents none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchStatusView {
    pub status: &'static str,
    pub batch_id: i32,
    pub accountcode: String,
    /// `queued`, `in_progress` or `completed` (every call over).
    pub batch_status: &'static str,
    pub total: usize,
    pub queued: usize,
    pub dispatched: usize,
    pub in_progress: usize,
    pub completed: usize,
    pub failed: usize,
    /// One entry per call held for the batch, in acceptance order (a number accepted twice
    /// appears twice).
    pub phone_numbers: Vec<String>,
}

/// The counts of a batch-status answer, each absent when the answer lacks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchCounts {
    pub batch_status: Option<String>,
    pub total: Option<i64>,
    pub queued: Option<i64>,
    pub dispatched: Option<i64>,
    pub in_progress: Option<i64>,
    pub completed: Option<i64>,
    pub failed: Option<i64>,
}

/// A JSON object answer whose fields may sit at the top level or under `data`.
#[derive(Debug, Clone)]
pub struct Answer {
    top: Map<String, Value>,
}

impl Answer {
    /// `None` when the body is not a JSON object.
    pub fn parse(body: &[u8]) -> Option<Answer> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(top)) => Some(Answer { top }),
            _ => None,
        }
    }

    /// The whole answer, as sent.
    pub fn as_object(&self) -> &Map<String, Value> {
        &self.top
    }

    /// `name` at the top level, else under `data`.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.top.get(name).or_else(|| {
            self.data()
                .and_then(|data| data.as_object())
                .and_then(|data| data.get(name))
        })
    }

    /// The `data` member, when there is one.
    pub fn data(&self) -> Option<&Value> {
        self.top.get("data")
    }

    /// `status`: `"success"`, `"warning"`, `"error"`.
    pub fn status(&self) -> Option<&str> {
        self.field("status").and_then(Value::as_str)
    }

    /// `message`, on one line and shortened.
    pub fn message(&self) -> Option<String> {
        self.field("message").and_then(Value::as_str).map(shorten)
    }

    /// The counts of a batch-status answer.
    pub fn batch_counts(&self) -> BatchCounts {
        let int = |name: &str| self.field(name).and_then(Value::as_i64);
        BatchCounts {
            batch_status: self
                .field("batch_status")
                .and_then(Value::as_str)
                .map(str::to_owned),
            total: int("total"),
            queued: int("queued"),
            dispatched: int("dispatched"),
            in_progress: int("in_progress"),
            completed: int("completed"),
            failed: int("failed"),
        }
    }
}

/// The API's own words from an error body: `message`, else `detail` (a string, or
/// FastAPI's list of `{loc, msg}`), else `error`, else the body itself; on one line,
/// shortened.
pub fn error_message(body: &[u8]) -> String {
    let Some(answer) = Answer::parse(body) else {
        return quote_body(body);
    };
    if let Some(message) = answer.message() {
        return message;
    }
    match answer.field("detail").or_else(|| answer.field("error")) {
        Some(Value::String(detail)) => shorten(detail),
        Some(Value::Array(items)) => shorten(
            &items
                .iter()
                .map(validation_item)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Some(other) => shorten(&other.to_string()),
        None => quote_body(body),
    }
}

/// One item of FastAPI's validation list: `loc.joined: msg`.
fn validation_item(item: &Value) -> String {
    let Value::Object(fields) = item else {
        return item.to_string();
    };
    let location = fields.get("loc").and_then(Value::as_array).map(|parts| {
        parts
            .iter()
            .map(|part| match part {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    });
    let text = fields
        .get("msg")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| item.to_string());
    match location {
        Some(location) => format!("{location}: {text}"),
        None => text,
    }
}

/// A body quoted for a message: one line, at most [`MAX_QUOTED_CHARS`] characters.
pub fn quote_body(body: &[u8]) -> String {
    let line = shorten(&String::from_utf8_lossy(body));
    if line.is_empty() {
        "(empty body)".to_owned()
    } else {
        line
    }
}

/// `text` on one line, cut after [`MAX_QUOTED_CHARS`] characters.
pub fn shorten(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_QUOTED_CHARS {
        line
    } else {
        let mut short: String = line.chars().take(MAX_QUOTED_CHARS).collect();
        short.push('…');
        short
    }
}

/// Reads `Retry-After`: delay seconds or an HTTP date (RFC 9110 §10.2.3), as a wait from
/// `now`; a date in the past is no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn batch_status_path_appends_the_batch_id() {
        assert_eq!(batch_status_path(12345), "api/v1/queues/batch-status/12345");
    }

    #[test]
    fn insert_request_is_batch_id_and_data_items() {
        let custom = json!({"customer_id": "C1"});
        let items = [
            QueueItem {
                phone_number: "9876543210",
                custom_data: Some(&custom),
            },
            QueueItem {
                phone_number: "9876543211",
                custom_data: None,
            },
        ];
        let request = InsertRequest {
            batch_id: 7,
            data: &items,
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"batch_id": 7, "data": [
                {"phone_number": "9876543210", "custom_data": {"customer_id": "C1"}},
                {"phone_number": "9876543211"},
            ]})
        );
    }

    #[test]
    fn insert_answers_are_flat_or_nested_and_read_either_way() {
        let flat = insert_answer(AnswerLayout::Flat, "success", "2 queued", 7, 2);
        assert_eq!(
            flat,
            json!({"status": "success", "message": "2 queued", "batch_id": 7, "inserted_count": 2})
        );
        let nested = insert_answer(AnswerLayout::Nested, "warning", "1 of 2", 7, 1);
        assert_eq!(
            nested,
            json!({"status": "warning", "message": "1 of 2", "data": {"batch_id": 7, "inserted_count": 1}})
        );
        let read = Answer::parse(&body(nested)).unwrap();
        assert_eq!(read.status(), Some("warning"));
        assert_eq!(read.message().as_deref(), Some("1 of 2"));
        assert_eq!(read.field("inserted_count"), Some(&json!(1)));
        assert_eq!(read.field("batch_id"), Some(&json!(7)));
    }

    #[test]
    fn a_top_level_field_wins_over_the_same_under_data() {
        let answer =
            Answer::parse(br#"{"status":"success","data":{"status":"warning","total":3}}"#)
                .unwrap();
        assert_eq!(answer.status(), Some("success"));
        assert_eq!(answer.field("total"), Some(&json!(3)));
        assert_eq!(answer.field("absent"), None);
        assert!(Answer::parse(b"[1, 2]").is_none());
        assert!(Answer::parse(b"<html>").is_none());
    }

    #[test]
    fn batch_counts_are_read_flat_or_nested() {
        let view = BatchStatusView {
            status: "success",
            batch_id: 7,
            accountcode: "SIM001".into(),
            batch_status: "in_progress",
            total: 3,
            queued: 0,
            dispatched: 3,
            in_progress: 1,
            completed: 1,
            failed: 1,
            phone_numbers: vec!["1".into(), "2".into(), "2".into()],
        };
        let counts = Answer::parse(&serde_json::to_vec(&view).unwrap())
            .unwrap()
            .batch_counts();
        assert_eq!(
            counts,
            BatchCounts {
                batch_status: Some("in_progress".into()),
                total: Some(3),
                queued: Some(0),
                dispatched: Some(3),
                in_progress: Some(1),
                completed: Some(1),
                failed: Some(1),
            }
        );
        let nested = Answer::parse(br#"{"data":{"batch_status":"completed","total":2}}"#)
            .unwrap()
            .batch_counts();
        assert_eq!(nested.total, Some(2));
        assert_eq!(nested.batch_status.as_deref(), Some("completed"));
        assert_eq!(nested.failed, None);
    }

    #[test]
    fn error_messages_come_from_message_detail_or_error() {
        assert_eq!(
            error_message(&body(
                json!({"message": "Invalid API key", "status": "error"})
            )),
            "Invalid API key"
        );
        assert_eq!(
            error_message(&body(json!({"data": {"message": "nested"}}))),
            "nested"
        );
        assert_eq!(
            error_message(&body(json!({"detail": "batch_id: must be an integer"}))),
            "batch_id: must be an integer"
        );
        assert_eq!(
            error_message(&body(
                json!({"detail": [{"loc": ["body", "batch_id"], "msg": "field required"}]})
            )),
            "body.batch_id: field required"
        );
        assert_eq!(error_message(&body(json!({"error": "quota"}))), "quota");
        assert_eq!(error_message(b"Bad\n gateway"), "Bad gateway");
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(error_message(&body(json!({"other": 1}))), r#"{"other":1}"#);
    }

    #[test]
    fn long_bodies_are_shortened_to_one_line() {
        let long = "x ".repeat(1000);
        let message = error_message(long.as_bytes());
        assert_eq!(message.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(message.ends_with('…'));
        assert!(!message.contains('\n'));
        assert_eq!(shorten("a\n\tb"), "a b");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Mon, 01 Jan 2024 10:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
