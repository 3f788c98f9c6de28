//! Rows whose outcome is unknown (`needs_review`): the submitter could not establish
//! whether the centralized system took them and never resends them by itself. An operator
//! settles them here with the same function as `callbridge queue resolve`.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use callbridge_ops::queue::{self, ResolveTarget};
use callbridge_types::clock::{Clock, SystemClock};
use callbridge_types::event::mask_phone;
use callbridge_types::status::QueueStatus;
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{Authenticator, Session};
use crate::error::ConsoleError;
use crate::pages::campaigns::FragmentQuery;
use crate::startup::AppState;
use crate::view::{self, Frame};

/// Rows shown at once; the oldest first, as they wait longest.
const SHOWN: i64 = 200;

#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i32,
    batch_id: Option<i32>,
    phone_number: String,
    last_error: Option<String>,
    campaign: Option<String>,
    custom_data: Option<serde_json::Value>,
}

async fn rows(state: &AppState) -> Result<(Vec<Row>, i64), ConsoleError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT q.id, q.batch_id, q.phone_number, q.last_error, c.name AS campaign, q.custom_data
           FROM local_call_queue q
           LEFT JOIN campaigns c ON c.id = q.campaign_id
          WHERE q.queue_status = $1
          ORDER BY q.id
          LIMIT $2",
    )
    .bind(QueueStatus::NeedsReview.as_str())
    .bind(SHOWN)
    .fetch_all(&state.pool)
    .await
    .map_err(|error| anyhow::Error::new(error).context("while reading the needs_review rows"))?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM local_call_queue WHERE queue_status = $1")
            .bind(QueueStatus::NeedsReview.as_str())
            .fetch_one(&state.pool)
            .await
            .map_err(|error| {
                anyhow::Error::new(error).context("while counting the needs_review rows")
            })?;
    Ok((rows, total))
}

fn table(session: &Session, rows: &[Row], total: i64) -> Markup {
    html! {
        @if rows.is_empty() {
            p class="empty" { "No row needs review." }
        } @else {
            p class="hint" {
                (total) " rows need review. Compare each batch with the centralized system's "
                "batch-status (" code { "callbridge batch ID" } "): if it holds the number, settle the row "
                "as submitted; if it does not, send it again."
            }
            table class="rows" {
                thead { tr {
                    th class="num" { "Row" } th class="num" { "Batch" } th { "Campaign" } th { "Number" }
                    th { "Why" } th { "Custom data" } th { "" }
                } }
                tbody {
                    @for row in rows {
                        @let id = row.id.to_string();
                        tr data-row=(row.id) {
                            td class="num" { (row.id) }
                            td class="num" { @if let Some(batch) = row.batch_id { (batch) } @else { "-" } }
                            td { (row.campaign.as_deref().unwrap_or("-")) }
                            td { (mask_phone(&row.phone_number)) }
                            td { (row.last_error.as_deref().unwrap_or("")) }
                            td class="data" { @if let Some(data) = &row.custom_data { (data.to_string()) } }
                            td class="actions" {
                                (view::action_button(session, "/review/resolve", &[("id", &id), ("as", "submitted")], "Held: submitted", "resume"))
                                (view::action_button(session, "/review/resolve", &[("id", &id), ("as", "pending")], "Not held: send again", "pause"))
                            }
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
    query: web::Query<FragmentQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let (rows, total) = rows(&state).await?;
    let content = table(&session, &rows, total);
    if query.wanted() {
        return Ok(view::html_page(content));
    }
    Ok(view::html_page(view::frame(
        &Frame {
            title: "Needs review",
            section: "Needs review",
            session: &session,
            live_source: Some("/review?fragment=1".to_owned()),
            refresh_ms: state.refresh_ms,
        },
        content,
    )))
}

#[derive(Debug, Deserialize)]
pub struct ResolveForm {
    pub csrf: Option<String>,
    pub id: i32,
    #[serde(rename = "as")]
    pub resolution: String,
}

/// `POST /review/resolve`: one row, as `submitted` or `pending`, through
/// `callbridge_ops::queue::resolve` (which refuses a row in any other status).
pub async fn resolve(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<ResolveForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.authorize_action(&auth, form.csrf.as_deref())?;
    let resolution = match form.resolution.as_str() {
        "submitted" => QueueStatus::Submitted,
        "pending" => QueueStatus::Pending,
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "a row is resolved as submitted or pending, not {other:?}"
            )));
        }
    };
    queue::resolve(
        &state.pool,
        SystemClock.now(),
        &session.actor(),
        &ResolveTarget::Ids(vec![form.id]),
        resolution,
        None,
    )
    .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/review"))
        .finish())
}
