//! Dead letters: the callbacks the persister could not store (or RabbitMQ gave up
//! delivering), why, and putting them back once the cause is fixed — the same
//! `callbridge_ops::dead_letters` functions as `callbridge dlq list | replay | purge`.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use callbridge_ops::OpsError;
use callbridge_ops::dead_letters::{self, DeadLetter, Listing, ReplaySelection};
use callbridge_types::clock::{Clock, SystemClock};
use callbridge_types::topology::DEAD_QUEUE;
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{Authenticator, Session};
use crate::error::ConsoleError;
use crate::startup::AppState;
use crate::view::{self, Frame};

/// Dead letters listed at once, the oldest first (the order the queue gives them).
const SHOWN: usize = 100;
/// Looking at a dead letter takes it out of the queue until the listing returns it, so
/// this page refreshes itself less often than the others.
const REFRESH_FLOOR_MS: u64 = 5_000;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// `?fragment=1`: only the live part, for the page's refresh.
    #[serde(default)]
    fragment: Option<String>,
    /// After a replay: how many were replayed.
    #[serde(default)]
    replayed: Option<u32>,
    /// After a purge: how many were deleted.
    #[serde(default)]
    purged: Option<u32>,
}

fn notice(query: &PageQuery) -> Option<String> {
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    match (query.replayed, query.purged) {
        (Some(n), _) => Some(format!(
            "Replayed {n} dead letter{} to the callbacks exchange; the persister stores it again.",
            plural(n)
        )),
        (None, Some(n)) => Some(format!("Purged {n} dead letter{}.", plural(n))),
        (None, None) => None,
    }
}

fn row(session: &Session, letter: &DeadLetter) -> Markup {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    html! {
        tr data-message=(dash(&letter.message_id)) {
            td class="mono" { (dash(&letter.message_id)) }
            td { (letter.event_type) }
            td class="when" { (dash(&letter.published_at)) }
            td class="mono" { (dash(&letter.call_id)) }
            td { (dash(&letter.phone_number)) }
            td class="data reason" { (letter.reason()) }
            td class="actions" {
                @if let Some(id) = &letter.message_id {
                    (view::action_button(session, "/dead-letters/replay", &[("message_id", id)], "Replay", "resume"))
                }
            }
        }
    }
}

fn content(
    session: &Session,
    listing: &Result<Listing, OpsError>,
    notice: Option<String>,
) -> Markup {
    html! {
        @if let Some(notice) = notice {
            p class="notice" { (notice) }
        }
        @match listing {
            Err(error) => {
                p class="error broker" { "The dead letters cannot be read: " (format!("{error:#}")) }
            }
            Ok(listing) => {
                div class="cards" {
                    div class="card" {
                        div class="label" { "Waiting in " (DEAD_QUEUE) }
                        div class="value dead-count" data-count=(listing.count) { (listing.count) }
                    }
                }
                @if listing.letters.is_empty() {
                    p class="empty" { "No dead letter: every callback received was stored." }
                } @else {
                    div class="toolbar" {
                        (view::action_button(session, "/dead-letters/replay", &[], &format!("Replay all {}", listing.count), "resume"))
                        (view::action_button(session, "/dead-letters/purge", &[], "Purge…", "danger"))
                    }
                    p class="hint" {
                        "Replay once the cause is fixed (a migration, a setting): each is published to the "
                        "callbacks exchange again and the persister stores it; one that fails again comes back here."
                    }
                    table class="rows dead-letters" {
                        thead { tr {
                            th { "Message id" } th { "Event" } th { "When" } th { "Call id" } th { "Number" }
                            th { "Reason" } th { "" }
                        } }
                        tbody {
                            @for letter in &listing.letters { (row(session, letter)) }
                        }
                    }
                    @let unlisted = (listing.count as usize).saturating_sub(listing.letters.len());
                    @if unlisted > 0 {
                        p class="hint" { "… and " (unlisted) " more, not listed." }
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
    let listing = state
        .broker
        .with_connection(async |connection| dead_letters::list(connection, SHOWN).await)
        .await;
    let content = content(&session, &listing, notice(&query));
    if query.fragment.is_some() {
        return Ok(view::html_page(content));
    }
    Ok(view::html_page(view::frame(
        &Frame {
            title: "Dead letters",
            section: "Dead letters",
            session: &session,
            live_source: Some("/dead-letters?fragment=1".to_owned()),
            refresh_ms: state.refresh_ms.max(REFRESH_FLOOR_MS),
        },
        content,
    )))
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    pub csrf: Option<String>,
    /// One message; absent: all of them.
    #[serde(default)]
    pub message_id: Option<String>,
}

/// `POST /dead-letters/replay`: one dead letter (by message id) or all, through
/// `callbridge_ops::dead_letters::replay`, recorded with the session as the actor.
pub async fn replay(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<ReplayForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.authorize_action(&auth, form.csrf.as_deref())?;
    let selection = ReplaySelection {
        message_ids: form.message_id.iter().cloned().collect(),
        limit: None,
    };
    let actor = session.actor();
    let replayed = state
        .broker
        .with_connection(async |connection| {
            dead_letters::replay(
                connection,
                &state.pool,
                SystemClock.now(),
                &actor,
                &selection,
            )
            .await
        })
        .await?;
    if let Some(missing) = replayed.missing.first() {
        return Err(ConsoleError::NotFound(format!(
            "dead letter {missing:?} is no longer in {DEAD_QUEUE}: it was replayed or purged meanwhile"
        )));
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            format!("/dead-letters?replayed={}", replayed.message_ids.len()),
        ))
        .finish())
}

#[derive(Debug, Deserialize)]
pub struct PurgeForm {
    pub csrf: Option<String>,
    /// Purging asks once more: the first POST shows what it will do.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// `POST /dead-letters/purge`: asks first (how many will be gone for good), then deletes
/// every dead letter through `callbridge_ops::dead_letters::purge`.
pub async fn purge(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<PurgeForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.authorize_action(&auth, form.csrf.as_deref())?;
    if form.confirm.as_deref() != Some("yes") {
        let count = state
            .broker
            .with_connection(async |connection| {
                let channel = connection.create_channel().await.map_err(|error| {
                    OpsError::Broker(anyhow::Error::new(error).context("while opening a channel"))
                })?;
                let count = dead_letters::count(&channel).await;
                channel.close(200, "bye".into()).await.ok();
                count
            })
            .await?;
        return Ok(view::html_page(view::frame(
            &Frame {
                title: "Purge the dead letters",
                section: "Dead letters",
                session: &session,
                live_source: None,
                refresh_ms: state.refresh_ms,
            },
            html! {
                p {
                    "Delete the " strong { (count) } " dead letters in " (DEAD_QUEUE)
                    "? They cannot be replayed afterwards."
                }
                form method="post" action="/dead-letters/purge" class="inline" {
                    (view::csrf_field(&session))
                    input type="hidden" name="confirm" value="yes";
                    button type="submit" class="danger" { "Purge them" }
                }
                " "
                a href="/dead-letters" { "Keep them" }
            },
        )));
    }
    let actor = session.actor();
    let purged = state
        .broker
        .with_connection(async |connection| {
            dead_letters::purge(connection, &state.pool, SystemClock.now(), &actor).await
        })
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            format!("/dead-letters?purged={}", purged.purged),
        ))
        .finish())
}
