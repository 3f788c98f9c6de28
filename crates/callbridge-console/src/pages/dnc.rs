//! The do-not-call page (`/dnc`): whether a number is listed (and since when, why, from
//! where), adding and removing numbers, the list's size and its newest entries. Numbers
//! are read as `callbridge dnc` reads them (E.164, the configured default region for a
//! national number), and every change goes through `callbridge_ops::dnc`, the functions
//! the CLI calls, recorded in `operator_actions` with the console and the session's role.
//!
//! The list shows numbers masked, as the logs do; a number is shown whole only as the
//! answer to a search for it (whoever searched typed it), which is also where it is
//! removed from.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, web};
use callbridge_ops::dnc::{self, DncEntry};
use callbridge_types::clock::{Clock, SystemClock};
use callbridge_types::event::mask_phone;
use callbridge_types::phone::{E164, normalise};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{Authenticator, Session};
use crate::error::ConsoleError;
use crate::startup::AppState;
use crate::view::{self, Frame};

/// Entries shown per page, newest first.
const PER_PAGE: i64 = 50;
/// A reason longer than this is refused (it is shown on every page that lists it).
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub struct DncQuery {
    /// The number searched for, as typed.
    #[serde(default)]
    pub number: Option<String>,
    /// The page of entries, 1 the newest.
    #[serde(default)]
    pub page: Option<i64>,
}

/// What a search found.
enum Search {
    Listed(DncEntry),
    NotListed(E164),
    /// Not a phone number: why, in one line.
    Refused(String),
}

/// Reads `raw` as `callbridge dnc` does, or says in one line why it is not a number.
fn read_number(state: &AppState, raw: &str) -> Result<E164, String> {
    normalise(raw, state.numbers.default_region)
        .map_err(|problem| format!("{:?} is not a phone number: {problem}", raw.trim()))
}

pub async fn page(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<DncQuery>,
) -> Result<HttpResponse, ConsoleError> {
    render(&state, &session, &query, None, StatusCode::OK).await
}

/// The page, with `problem` (a refused form) above the forms, answered with `status`.
async fn render(
    state: &AppState,
    session: &Session,
    query: &DncQuery,
    problem: Option<&str>,
    status: StatusCode,
) -> Result<HttpResponse, ConsoleError> {
    let search = match query
        .number
        .as_deref()
        .map(str::trim)
        .filter(|raw| !raw.is_empty())
    {
        None => None,
        Some(raw) => Some(match read_number(state, raw) {
            Err(problem) => Search::Refused(problem),
            Ok(number) => match dnc::check(&state.pool, &number).await? {
                Some(entry) => Search::Listed(entry),
                None => Search::NotListed(number),
            },
        }),
    };
    let page = query.page.unwrap_or(1).max(1);
    let (entries, total) =
        dnc::page(&state.pool, PER_PAGE, (page - 1).saturating_mul(PER_PAGE)).await?;
    let content = html! {
        @if let Some(problem) = problem {
            p class="error" id="dnc-problem" { (problem) }
        }
        div class="toolbar" {
            form method="get" action="/dnc" id="dnc-search" {
                label for="search-number" class="inline" { "Check a number" }
                input type="search" id="search-number" name="number" placeholder="+91 98765 43210"
                    value=(query.number.as_deref().unwrap_or(""));
                button type="submit" { "Check" }
            }
        }
        @if let Some(search) = &search {
            (search_result(session, search))
        }
        @if session.may_act() {
            form method="post" action="/dnc/add" id="dnc-add" class="stacked" {
                (view::csrf_field(session))
                label for="add-number" { "Add a number (it is never called again, even where it is already queued)" }
                input type="text" id="add-number" name="number" required placeholder="+91 98765 43210";
                label for="add-reason" { "Reason" }
                input type="text" id="add-reason" name="reason" maxlength=(MAX_REASON_CHARS) placeholder="opt-out by phone";
                button type="submit" class="danger" { "Add to the do-not-call list" }
            }
        }
        h2 { "The list" }
        p class="hint" id="dnc-total" data-total=(total) {
            (total) " numbers are on the do-not-call list."
            @if total > 0 { " The newest first; numbers are masked (check one above to see its entry)." }
        }
        @if !entries.is_empty() {
            table class="dnc" {
                thead { tr { th { "Number" } th { "Reason" } th { "Source" } th { "Added" } } }
                tbody {
                    @for entry in &entries {
                        tr {
                            td { (mask_phone(&entry.phone_number)) }
                            td { (entry.reason.as_deref().unwrap_or("")) }
                            td { (entry.source) }
                            td { (entry.added_at.format("%Y-%m-%d %H:%M:%S UTC")) }
                        }
                    }
                }
            }
            @let pages = (total + PER_PAGE - 1) / PER_PAGE;
            @if pages > 1 {
                div class="pager" {
                    @if page > 1 { a href=(format!("/dnc?page={}", page - 1)) { "← Newer" } }
                    span class="hint" { "page " (page) " of " (pages) }
                    @if page < pages { a href=(format!("/dnc?page={}", page + 1)) { "Older →" } }
                }
            }
        }
    };
    let mut response = HttpResponse::build(status);
    view::security_headers(&mut response);
    Ok(response.insert_header(ContentType::html()).body(
        view::frame(
            &Frame {
                title: "Do not call",
                section: "Do not call",
                session,
                live_source: None,
                refresh_ms: state.refresh_ms,
            },
            content,
        )
        .into_string(),
    ))
}

fn search_result(session: &Session, search: &Search) -> Markup {
    html! {
        @match search {
            Search::Refused(problem) => {
                p class="result error" id="dnc-result" data-listed="invalid" { (problem) }
            }
            Search::NotListed(number) => {
                div class="result" id="dnc-result" data-listed="false" {
                    strong { (number.as_str()) } " is not on the do-not-call list."
                }
            }
            Search::Listed(entry) => {
                div class="result" id="dnc-result" data-listed="true" {
                    strong { (entry.phone_number) } " is on the do-not-call list since "
                    (entry.added_at.format("%Y-%m-%d %H:%M:%S UTC")) ", added from " (entry.source)
                    @if let Some(reason) = &entry.reason { ": " em { (reason) } } "."
                    (view::action_button(session, "/dnc/remove", &[("number", &entry.phone_number)], "Remove from the list", "resume"))
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    pub csrf: Option<String>,
    #[serde(default)]
    pub number: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// After a change: the search for the number, which shows what it did.
fn show(number: &E164) -> HttpResponse {
    let mut location = String::from("/dnc?number=");
    for byte in number.as_str().bytes() {
        match byte {
            b'+' => location.push_str("%2B"),
            _ => location.push(char::from(byte)),
        }
    }
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The page again, answered 400, saying why the form was refused (nothing changed).
async fn refuse(
    state: &AppState,
    session: &Session,
    problem: String,
) -> Result<HttpResponse, ConsoleError> {
    render(
        state,
        session,
        &DncQuery::default(),
        Some(&problem),
        StatusCode::BAD_REQUEST,
    )
    .await
}

/// `POST /dnc/add`: one number with its reason, through `callbridge_ops::dnc::add`.
pub async fn add(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.authorize_action(&auth, form.csrf.as_deref())?;
    let number = match read_number(&state, &form.number) {
        Ok(number) => number,
        Err(problem) => {
            return refuse(&state, &session, format!("{problem}; nothing was added")).await;
        }
    };
    let reason = form
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|reason| !reason.is_empty());
    if reason.is_some_and(|reason| reason.chars().count() > MAX_REASON_CHARS) {
        return refuse(
            &state,
            &session,
            format!("the reason is longer than {MAX_REASON_CHARS} characters; nothing was added"),
        )
        .await;
    }
    dnc::add(
        &state.pool,
        SystemClock.now(),
        &session.actor(),
        std::slice::from_ref(&number),
        reason,
    )
    .await?;
    Ok(show(&number))
}

/// `POST /dnc/remove`: one number, through `callbridge_ops::dnc::remove`.
pub async fn remove(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<ChangeForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.authorize_action(&auth, form.csrf.as_deref())?;
    let number = match read_number(&state, &form.number) {
        Ok(number) => number,
        Err(problem) => {
            return refuse(&state, &session, format!("{problem}; nothing was removed")).await;
        }
    };
    dnc::remove(
        &state.pool,
        SystemClock.now(),
        &session.actor(),
        std::slice::from_ref(&number),
    )
    .await?;
    Ok(show(&number))
}
