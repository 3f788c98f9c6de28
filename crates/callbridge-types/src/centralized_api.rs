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

use crate::phone::{Region, normalise};

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

/// Where a batch-status answer lists the numbers the system holds: a JSON pointer
/// (RFC 6901) in which a `*` segment stands for every element of an array or every
/// member of an object, e.g. `/data/calls/*/phone_number`; a path ending at a list means
/// its items. Like every field of this API,
/// it is looked up at the top level of the answer, then under `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumbersPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Any,
}

impl NumbersPath {
    /// The simulator's layout: `{"phone_numbers": ["…", …]}`.
    pub const DEFAULT: &'static str = "/phone_numbers";

    pub fn parse(text: &str) -> Result<NumbersPath, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "must be a JSON pointer starting with '/', e.g. /data/calls/*/phone_number; got {text:?}"
            ));
        };
        let segments = rest
            .split('/')
            .map(|segment| match segment {
                "*" => Segment::Any,
                key => Segment::Key(key.replace("~1", "/").replace("~0", "~")),
            })
            .collect();
        Ok(NumbersPath {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every value the path reaches in `value`, or `None` when a segment is missing
    /// (a member absent, an index out of range, a `*` over something not a container).
    fn find<'a>(&self, value: &'a Value) -> Option<Vec<&'a Value>> {
        let mut reached = vec![value];
        for segment in &self.segments {
            let mut next = Vec::new();
            for value in reached {
                match (segment, value) {
                    (Segment::Any, Value::Array(items)) => next.extend(items),
                    (Segment::Any, Value::Object(members)) => next.extend(members.values()),
                    (Segment::Key(key), Value::Object(members)) => next.push(members.get(key)?),
                    (Segment::Key(key), Value::Array(items)) => {
                        next.push(items.get(key.parse::<usize>().ok()?)?);
                    }
                    _ => return None,
                }
            }
            reached = next;
        }
        Some(reached)
    }

    /// The numbers a batch-status answer holds, once per accepted item; an answer the path
    /// does not fit, whose numbers are not all strings, or whose `total`
    /// disagrees with the count is an error saying which (never quoting a number).
    pub fn held_numbers(&self, answer: &Answer) -> Result<Vec<String>, String> {
        let top = Value::Object(answer.as_object().clone());
        let found = self
            .find(&top)
            .or_else(|| answer.data().and_then(|data| self.find(data)))
            .ok_or_else(|| {
                format!(
                    "the batch-status answer has nothing at {} (top level or under data)",
                    self.text
                )
            })?;
        // A path ending at a list means its items: `/phone_numbers` as `/phone_numbers/*`.
        let numbers = found
            .into_iter()
            .flat_map(|found| match found {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            })
            .map(|number| match number {
                Value::String(text) => Some(text.trim().to_owned()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!(
                    "the batch-status answer holds something other than phone numbers at {}",
                    self.text
                )
            })?;
        if let Some(total) = answer.field("total").and_then(Value::as_u64)
            && total != numbers.len() as u64
        {
            return Err(format!(
                "the batch-status answer lists {} numbers at {} but says total {total}",
                numbers.len(),
                self.text
            ));
        }
        Ok(numbers)
    }
}

impl Default for NumbersPath {
    fn default() -> Self {
        NumbersPath::parse(NumbersPath::DEFAULT).expect("the default path parses")
    }
}

/// How a number in a batch-status answer is compared with the number callbridge sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NumberMatch {
    /// Only the digits count: `+91 98765-43210` and `919876543210` are one number.
    #[default]
    Digits,
    /// Both are read as E.164 numbers, one without a country code as a national number of
    /// the region: `9876543210` and `+91 98765 43210` are one number with region IN. A
    /// text that is no valid number is compared by its digits.
    E164(Region),
}

impl NumberMatch {
    /// `digits`, or `e164` with the default region numbers without a country code belong
    /// to (`None`: there is none, and `e164` is refused).
    pub fn parse(text: &str, default_region: Option<Region>) -> Result<NumberMatch, String> {
        match text.trim() {
            "digits" => Ok(NumberMatch::Digits),
            "e164" => default_region.map(NumberMatch::E164).ok_or_else(|| {
                "is e164, which reads numbers without a country code in the default region, and none is configured".to_owned()
            }),
            other => Err(format!("must be digits or e164, got {other:?}")),
        }
    }

    /// The form two numbers are compared in.
    pub fn key(self, number: &str) -> String {
        let digits = || number.chars().filter(char::is_ascii_digit).collect();
        match self {
            NumberMatch::Digits => digits(),
            NumberMatch::E164(region) => match normalise(number, Some(region)) {
                Ok(number) => number.as_str().to_owned(),
                Err(_) => digits(),
            },
        }
    }
}

/// What a 404 from batch-status means. No guide says; the simulator answers 404 for a
/// batch it never stored, but a real system may answer it for a batch it has not indexed
/// yet, and reading that as "none held" sends the numbers a second time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NotFoundMeaning {
    /// Nothing is known: the rows go to review.
    #[default]
    Unknown,
    /// The system holds none of the batch's numbers: they may be sent again. Only when
    /// the real system's operators confirmed it.
    None,
}

impl NotFoundMeaning {
    pub fn parse(text: &str) -> Result<NotFoundMeaning, String> {
        match text.trim() {
            "unknown" => Ok(NotFoundMeaning::Unknown),
            "none" => Ok(NotFoundMeaning::None),
            other => Err(format!("must be unknown or none, got {other:?}")),
        }
    }
}

/// How the submitter reads batch-status: where the numbers are, how they are compared,
/// what a 404 means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStatusReading {
    pub numbers_path: NumbersPath,
    pub number_match: NumberMatch,
    pub not_found: NotFoundMeaning,
}

/// A number with every digit but the last `shown` replaced by `*`.
pub fn mask_number(number: &str, shown: usize) -> String {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + shown > digits { c } else { '*' }
            } else {
                c
            }
        })
        .collect()
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

    fn held(path: &str, answer: Value) -> Result<Vec<String>, String> {
        NumbersPath::parse(path)
            .unwrap()
            .held_numbers(&Answer::parse(&body(answer)).unwrap())
    }

    #[test]
    fn numbers_path_reads_a_list_top_level_or_under_data() {
        assert_eq!(
            held(
                "/phone_numbers",
                json!({"total": 2, "phone_numbers": ["111", " 222 "]})
            ),
            Ok(vec!["111".to_owned(), "222".to_owned()])
        );
        assert_eq!(
            held(
                "/phone_numbers",
                json!({"data": {"phone_numbers": ["111"]}})
            ),
            Ok(vec!["111".to_owned()])
        );
        assert_eq!(
            held("/phone_numbers", json!({"phone_numbers": []})),
            Ok(vec![])
        );
    }

    #[test]
    fn numbers_path_wildcards_walk_every_item() {
        let calls = json!({"data": {"calls": [
            {"phone_number": "111", "status": "queued"},
            {"phone_number": "222", "status": "completed"},
        ]}});
        assert_eq!(
            held("/data/calls/*/phone_number", calls.clone()),
            Ok(vec!["111".to_owned(), "222".to_owned()])
        );
        // Relative to data, as every field.
        assert_eq!(
            held("/calls/*/phone_number", calls),
            Ok(vec!["111".to_owned(), "222".to_owned()])
        );
        let deep = json!({"queue": [{"destination": {"number": "111"}}], "a/b": {"c~d": ["9"]}});
        assert_eq!(
            held("/queue/*/destination/number", deep.clone()),
            Ok(vec!["111".to_owned()])
        );
        assert_eq!(held("/a~1b/c~0d/0", deep), Ok(vec!["9".to_owned()]));
        assert_eq!(
            held("/m/*", json!({"m": {"x": "1"}})),
            Ok(vec!["1".to_owned()])
        );
    }

    #[test]
    fn a_path_that_does_not_fit_the_answer_is_an_error_without_numbers() {
        let calls = json!({"data": {"calls": [{"phone_number": "98765"}, {"number": "12345"}]}});
        for (path, answer) in [
            ("/phone_numbers", calls.clone()),
            ("/data/calls/*/phone_number", calls),
            (
                "/phone_numbers",
                json!({"phone_numbers": {"first": "98765"}}),
            ),
            (
                "/phone_numbers",
                json!({"phone_numbers": [1.5, {"n": "98765"}]}),
            ),
            (
                "/phone_numbers",
                json!({"total": 3, "phone_numbers": ["98765"]}),
            ),
        ] {
            let error = held(path, answer.clone()).expect_err(&answer.to_string());
            assert!(
                !error.contains("98765") && !error.contains("12345") && error.contains(path),
                "{error}"
            );
        }
        assert!(NumbersPath::parse("data/calls").is_err());
        assert_eq!(NumbersPath::default().as_str(), "/phone_numbers");
    }

    #[test]
    fn digits_match_ignores_spelling() {
        let key = |number| NumberMatch::Digits.key(number);
        assert_eq!(key("+91 98765-43210"), "919876543210");
        assert_eq!(key(" (0)98 765 "), "098765");
        assert_eq!(NumberMatch::parse("digits", None), Ok(NumberMatch::Digits));
        assert!(NumberMatch::parse("exact", None).is_err());
    }

    #[test]
    fn e164_match_reads_national_numbers_in_the_default_region() {
        let india = Region::parse("IN").unwrap();
        let matching = NumberMatch::parse("e164", Some(india)).unwrap();
        assert_eq!(matching, NumberMatch::E164(india));
        assert_eq!(matching.key("9876543210"), matching.key("+91 98765 43210"));
        assert_eq!(matching.key("9876543210"), "+919876543210");
        // Not a number: its digits, which no E.164 key equals.
        assert_eq!(matching.key("12"), "12");
        let error = NumberMatch::parse("e164", None).unwrap_err();
        assert!(error.contains("default region"), "{error}");
    }

    #[test]
    fn not_found_is_unknown_unless_none_is_configured() {
        assert_eq!(NotFoundMeaning::default(), NotFoundMeaning::Unknown);
        assert_eq!(NotFoundMeaning::parse("none"), Ok(NotFoundMeaning::None));
        assert_eq!(
            NotFoundMeaning::parse("unknown"),
            Ok(NotFoundMeaning::Unknown)
        );
        assert!(NotFoundMeaning::parse("empty").is_err());
    }

    #[test]
    fn masked_numbers_keep_only_their_last_digits() {
        assert_eq!(mask_number("+91 98765-43210", 2), "+** *****-***10");
        assert_eq!(mask_number("12", 4), "12");
        assert_eq!(mask_number("98765", 0), "*****");
    }
}
