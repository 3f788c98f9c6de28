//! Calls: the stored outcome of each call (`call_logs`) as the callbacks left it — call
//! id, status, masked number, duration, and the callback's custom data and error shown as
//! text. The newest first; `?batch=ID` narrows to one batch.

use actix_web::{HttpResponse, web};
use callbridge_types::event::mask_phone;
use chrono::NaiveDateTime;
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::Session;
use crate::error::ConsoleError;
use crate::startup::AppState;
use crate::view::{self, Frame};

/// Calls shown at once.
const SHOWN: i64 = 200;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// `?fragment=1`: only the live part, for the page's refresh.
    #[serde(default)]
    fragment: Option<String>,
    /// Only this batch's calls (the form sends an empty box as `batch=`: all calls).
    #[serde(default)]
    batch: Option<String>,
}

impl PageQuery {
    fn batch(&self) -> Result<Option<i32>, ConsoleError> {
        match self.batch.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(raw) => raw.parse().map(Some).map_err(|_| {
                ConsoleError::BadRequest(format!(
                    "batch {raw:?} is not a batch id: give its number, e.g. ?batch=42"
                ))
            }),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Call {
    call_id: String,
    batch_id: Option<i32>,
    phone_number: String,
    call_status: String,
    duration: Option<i32>,
    end_time: Option<NaiveDateTime>,
    updated_at: Option<NaiveDateTime>,
    error_message: Option<String>,
    custom_data: Option<serde_json::Value>,
}

async fn calls(state: &AppState, batch: Option<i32>) -> Result<Vec<Call>, ConsoleError> {
    // Newest first: a walk back along the primary key, or one batch's rows through
    // idx_call_logs_batch_id; never a scan of the table. Two statements rather than
    // `$1 IS NULL OR batch_id = $1`, whose generic plan could not use the index.
    let query = match batch {
        Some(batch) => sqlx::query_as::<_, Call>(
            "SELECT call_id, batch_id, phone_number, call_status, duration, end_time,
                    updated_at, error_message, custom_data
               FROM call_logs
              WHERE batch_id = $1
              ORDER BY id DESC
              LIMIT $2",
        )
        .bind(batch),
        None => sqlx::query_as::<_, Call>(
            "SELECT call_id, batch_id, phone_number, call_status, duration, end_time,
                    updated_at, error_message, custom_data
               FROM call_logs
              ORDER BY id DESC
              LIMIT $1",
        ),
    };
    query
        .bind(SHOWN)
        .fetch_all(&state.pool)
        .await
        .map_err(|error| {
            ConsoleError::Internal(anyhow::Error::new(error).context("while reading call_logs"))
        })
}

/// The batch box and the calls. Both are in the live part, so the refresh keeps the box
/// (it does not refresh while the box is being typed in).
fn content(calls: &[Call], batch: Option<i32>) -> Markup {
    html! {
        form method="get" action="/calls" class="toolbar" {
            label for="batch" { "Batch" }
            input type="text" id="batch" name="batch" inputmode="numeric"
                value=[batch.map(|batch| batch.to_string())];
            button type="submit" { "Show" }
            @if batch.is_some() { a href="/calls" { "All calls" } }
        }
        @if calls.is_empty() {
            p class="empty" {
                @if let Some(batch) = batch { "No call of batch " (batch) " is stored yet." }
                @else { "No call is stored yet." }
            }
        } @else {
            table class="rows calls" {
                thead { tr {
                    th { "Call id" } th class="num" { "Batch" } th { "Status" } th { "Number" }
                    th class="num" { "Duration" } th { "Ended" } th { "Error" } th { "Custom data" }
                } }
                tbody {
                    @for call in calls {
                        tr data-call=(call.call_id) {
                            td class="mono" { (call.call_id) }
                            td class="num" {
                                @if let Some(batch) = call.batch_id {
                                    a href={ "/calls?batch=" (batch) } { (batch) }
                                } @else { "-" }
                            }
                            td class="call-status" { (call.call_status) }
                            td { (mask_phone(&call.phone_number)) }
                            td class="num" { @if let Some(seconds) = call.duration { (view::duration_text(f64::from(seconds))) } }
                            td class="when" {
                                @if let Some(at) = call.end_time.or(call.updated_at) { (at.format("%Y-%m-%d %H:%M:%S").to_string()) }
                            }
                            td class="data" { (call.error_message.as_deref().unwrap_or("")) }
                            td class="data custom" { @if let Some(data) = &call.custom_data { (data.to_string()) } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn page(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let batch = query.batch()?;
    let calls = calls(&state, batch).await?;
    let content = content(&calls, batch);
    if query.fragment.is_some() {
        return Ok(view::html_page(content));
    }
    let live_source = match batch {
        Some(batch) => format!("/calls?fragment=1&batch={batch}"),
        None => "/calls?fragment=1".to_owned(),
    };
    let title = match batch {
        Some(batch) => format!("Calls of batch {batch}"),
        None => "Calls".to_owned(),
    };
    Ok(view::html_page(view::frame(
        &Frame {
            title: &title,
            section: "Calls",
            session: &session,
            live_source: Some(live_source),
            refresh_ms: state.refresh_ms,
        },
        content,
    )))
}
