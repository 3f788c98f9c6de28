//! The centralized system's read-only view, as an operator sees it (`callbridge batches`,
//! `queue resolve`, `doctor` and the console's campaign page): `GET` batch-status of a
//! batch, with the API key header.
//!
//! The submitter has its own client (it only needs which numbers a batch holds); operators
//! see the counts and the status, and `doctor` needs the HTTP status to explain a failure.
//! Paths and shapes are `callbridge_types::centralized_api`'s.

use std::time::Duration;

use anyhow::Context;
use callbridge_runtime::config::ApiConfig;
use callbridge_runtime::errors::error_chain;
pub use callbridge_types::centralized_api::error_message as api_message;
use callbridge_types::centralized_api::{API_KEY_HEADER, Answer, BatchCounts, batch_status_path};
use futures::StreamExt;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;

/// batch-status requests in flight at once when several batches are asked about.
pub const CONCURRENT_REQUESTS: usize = 8;

/// An operator at a terminal waits at most this long for one answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the centralized system says about one batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum RemoteView {
    Found(RemoteBatch),
    /// 404: the system holds no call of this batch.
    NotFound,
    /// 401/403: the API key was refused.
    KeyRejected {
        status: u16,
        message: String,
    },
    /// Anything else: no answer, a 5xx, an unreadable body.
    Unavailable {
        message: String,
    },
}

/// The counts of a batch-status answer. The phone numbers it lists are only counted.
/// Flattened, so the JSON output keeps the answer's own field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemoteBatch {
    #[serde(flatten)]
    pub counts: BatchCounts,
    pub numbers_held: Option<usize>,
}

impl RemoteView {
    /// A short cell for tables: the remote status, or why there is none.
    pub fn status_cell(&self) -> String {
        match self {
            RemoteView::Found(batch) => batch
                .counts
                .batch_status
                .clone()
                .unwrap_or_else(|| "?".into()),
            RemoteView::NotFound => "unknown".into(),
            RemoteView::KeyRejected { status, .. } => format!("key refused ({status})"),
            RemoteView::Unavailable { .. } => "unavailable".into(),
        }
    }
}

pub struct CentralApi {
    http: reqwest::Client,
    /// The API root, ending in `/` so paths join under any prefix it has.
    base: reqwest::Url,
    api_key: HeaderValue,
    base_url: String,
}

impl CentralApi {
    /// A client of the API `config` names that waits at most `timeout` (and never longer
    /// than the configured request timeout) for an answer; `user_agent` names the caller.
    pub fn new(
        config: &ApiConfig,
        user_agent: &str,
        timeout: Duration,
    ) -> anyhow::Result<CentralApi> {
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut api_key = HeaderValue::from_str(config.api_key.expose()).map_err(|_| {
            anyhow::anyhow!(
                "CENTRALIZED_CALLING_API_KEY holds characters an HTTP header cannot carry"
            )
        })?;
        // Keeps the key out of reqwest's debug output.
        api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(timeout.min(config.request_timeout))
            .build()
            .context("while building the HTTP client")?;
        Ok(CentralApi {
            http,
            base,
            api_key,
            base_url: config.base_url.to_string(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET` batch-status of `batch_id`: the raw HTTP status and body, or the transport
    /// error (refused, TLS, timeout) with its causes.
    #[tracing::instrument(skip_all, fields(batch_id))]
    pub async fn batch_status_raw(&self, batch_id: i64) -> Result<(u16, Vec<u8>), String> {
        let url = self
            .base
            .join(&batch_status_path(batch_id))
            .map_err(|error| error.to_string())?;
        let response = self
            .http
            .get(url)
            .header(
                HeaderName::from_static(API_KEY_HEADER),
                self.api_key.clone(),
            )
            .send()
            .await
            .map_err(|error| error_chain(&error))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| error_chain(&error))?;
        Ok((status, body.to_vec()))
    }

    /// batch-status of each of `batch_ids`, in their order, [`CONCURRENT_REQUESTS`] at
    /// once.
    pub async fn batch_statuses(&self, batch_ids: &[i32]) -> Vec<RemoteView> {
        futures::stream::iter(batch_ids)
            .map(|batch_id| self.batch_status(*batch_id))
            .buffered(CONCURRENT_REQUESTS)
            .collect()
            .await
    }

    pub async fn batch_status(&self, batch_id: i32) -> RemoteView {
        match self.batch_status_raw(batch_id.into()).await {
            Ok((200, body)) => read_batch(&body).map_or_else(
                || RemoteView::Unavailable {
                    message: "batch-status answered 200 with a body that is not a JSON object"
                        .into(),
                },
                RemoteView::Found,
            ),
            Ok((404, _)) => RemoteView::NotFound,
            Ok((status @ (401 | 403), body)) => RemoteView::KeyRejected {
                status,
                message: api_message(&body),
            },
            Ok((status, body)) => RemoteView::Unavailable {
                message: format!("batch-status answered {status}: {}", api_message(&body)),
            },
            Err(message) => RemoteView::Unavailable { message },
        }
    }
}

fn read_batch(body: &[u8]) -> Option<RemoteBatch> {
    let answer = Answer::parse(body)?;
    Some(RemoteBatch {
        counts: answer.batch_counts(),
        numbers_held: answer
            .field("phone_numbers")
            .and_then(Value::as_array)
            .map(Vec::len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_flat_or_nested_and_numbers_only_counted() {
        let flat = br#"{"status":"success","batch_status":"in_progress","total":3,"queued":0,
            "dispatched":3,"in_progress":1,"completed":1,"failed":1,
            "phone_numbers":["9876543210","9876543211","9876543211"]}"#;
        let batch = read_batch(flat).unwrap();
        assert_eq!(batch.counts.batch_status.as_deref(), Some("in_progress"));
        assert_eq!(
            (
                batch.counts.total,
                batch.counts.completed,
                batch.numbers_held
            ),
            (Some(3), Some(1), Some(3))
        );
        let nested = br#"{"status":"success","data":{"batch_status":"completed","total":2}}"#;
        assert_eq!(read_batch(nested).unwrap().counts.total, Some(2));
        assert!(read_batch(b"[1]").is_none());
    }

    #[test]
    fn api_messages_come_from_message_or_detail() {
        assert_eq!(
            api_message(br#"{"message":"Invalid API key","status":"error"}"#),
            "Invalid API key"
        );
        assert_eq!(
            api_message(br#"{"detail":"batch_id: must be an integer"}"#),
            "batch_id: must be an integer"
        );
        assert_eq!(api_message(b"Bad\n gateway"), "Bad gateway");
        assert_eq!(api_message(b""), "(empty body)");
    }
}
