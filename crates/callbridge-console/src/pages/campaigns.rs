//! The campaigns page: each campaign's progress, outcome mix and controls.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use callbridge_ops::CampaignView;
use callbridge_ops::campaign::{self, Figures};
use callbridge_types::campaign::CampaignStatus;
use callbridge_types::clock::{Clock, SystemClock};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{Authenticator, Session};
use crate::error::ConsoleError;
use crate::startup::AppState;
use crate::view::{self, Frame, Segment};

/// `?fragment=1`: only the live part, for the page's refresh.
#[derive(Debug, Deserialize)]
pub struct FragmentQuery {
    #[serde(default)]
    pub fragment: Option<String>,
}

impl FragmentQuery {
    pub fn wanted(&self) -> bool {
        self.fragment.is_some()
    }
}

/// A fragment for the page's refresh: the live part only, without the frame.
pub fn fragment(markup: Markup) -> HttpResponse {
    view::html_page(markup)
}

pub async fn page(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<FragmentQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let campaigns = campaign::list(&state.pool).await?;
    let content = table(&session, &campaigns);
    if query.wanted() {
        return Ok(fragment(content));
    }
    Ok(view::html_page(view::frame(
        &Frame {
            title: "Campaigns",
            section: "Campaigns",
            session: &session,
            live_source: Some("/campaigns?fragment=1".to_owned()),
            refresh_ms: state.refresh_ms,
        },
        content,
    )))
}

/// The parts of a campaign's progress bar, in the order they are drawn.
pub fn segments(figures: &Figures) -> [Segment<'static>; 7] {
    let ended = figures.reached + figures.not_reached;
    [
        Segment {
            label: "reached",
            class: "reached",
            count: figures.reached,
        },
        Segment {
            label: "not reached",
            class: "failed",
            count: figures.not_reached + figures.failed,
        },
        Segment {
            label: "in call",
            class: "calling",
            count: (figures.submitted - ended).max(0),
        },
        Segment {
            label: "waiting",
            class: "waiting",
            count: figures.waiting,
        },
        Segment {
            label: "needs review",
            class: "review",
            count: figures.needs_review,
        },
        Segment {
            label: "cancelled",
            class: "cancelled",
            count: figures.cancelled,
        },
        Segment {
            label: "suppressed",
            class: "suppressed",
            count: figures.suppressed,
        },
    ]
}

/// How much of the campaign is over: numbers whose call ended, that were given up on,
/// cancelled or suppressed, of all its numbers.
pub fn percent_done(figures: &Figures) -> i64 {
    let over = figures.reached
        + figures.not_reached
        + figures.failed
        + figures.cancelled
        + figures.suppressed;
    view::percent(over, figures.numbers)
}

pub(crate) fn status_class(status: CampaignStatus) -> &'static str {
    match status {
        CampaignStatus::Active => "status active",
        CampaignStatus::Paused => "status paused",
        CampaignStatus::Cancelled => "status cancelled",
        CampaignStatus::Completed => "status completed",
    }
}

pub(crate) fn controls(session: &Session, campaign: &CampaignView) -> Markup {
    let name = campaign.name.as_str();
    html! {
        @match campaign.status {
            CampaignStatus::Active => {
                (view::action_button(session, "/campaigns/action", &[("campaign", name), ("action", "pause")], "Pause", "pause"))
                (view::action_button(session, "/campaigns/action", &[("campaign", name), ("action", "cancel")], "Cancel…", "danger"))
            }
            CampaignStatus::Paused => {
                (view::action_button(session, "/campaigns/action", &[("campaign", name), ("action", "resume")], "Resume", "resume"))
                (view::action_button(session, "/campaigns/action", &[("campaign", name), ("action", "cancel")], "Cancel…", "danger"))
            }
            CampaignStatus::Completed | CampaignStatus::Cancelled => {}
        }
    }
}

fn table(session: &Session, campaigns: &[CampaignView]) -> Markup {
    html! {
        @if campaigns.is_empty() {
            p class="empty" { "No campaign yet: " code { "callbridge enqueue FILE --campaign NAME" } " creates one." }
        } @else {
            table class="campaigns" {
                thead {
                    tr {
                        th { "Campaign" } th { "Status" } th { "Progress" } th class="num" { "Done" }
                        th class="num" { "Numbers" } th class="num" { "Attempts" } th class="num" { "Reached" }
                        th class="num" { "ASR" } th class="num" { "ACD" }
                        th { "" }
                    }
                }
                tbody {
                    @for campaign in campaigns {
                        @let done = percent_done(&campaign.figures);
                        tr data-campaign=(campaign.name) {
                            td class="name" { a href=(crate::pages::campaign::path(&campaign.name)) { (campaign.name) } }
                            td { span class=(status_class(campaign.status)) { (campaign.status.as_str()) } }
                            td class="progress" { (view::progress_bar(&segments(&campaign.figures))) }
                            td class="num done" data-percent=(done) { (done) " %" }
                            td class="num" { (campaign.figures.numbers) }
                            td class="num" { (campaign.figures.attempts) }
                            td class="num" { (view::percent(campaign.figures.reached, campaign.figures.numbers)) " %" }
                            td class="num asr" { @if let Some(asr) = campaign.figures.asr { (format!("{:.0} %", asr * 100.0)) } @else { "-" } }
                            td class="num acd" { @if let Some(acd) = campaign.figures.acd_seconds { (view::duration_text(acd)) } @else { "-" } }
                            td class="actions" { (controls(session, campaign)) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    pub csrf: Option<String>,
    pub campaign: String,
    pub action: String,
    /// Cancelling asks once more: the first POST shows what it will do.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// `POST /campaigns/action`: pause, resume or cancel, through the same functions as
/// `callbridge campaign …`, recorded with the session as the actor.
pub async fn act(
    state: web::Data<AppState>,
    auth: web::Data<Authenticator>,
    session: Session,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, ConsoleError> {
    session.authorize_action(&auth, form.csrf.as_deref())?;
    let actor = session.actor();
    let now = SystemClock.now();
    let name = form.campaign.as_str();
    match form.action.as_str() {
        "pause" => {
            campaign::pause(&state.pool, now, &actor, name).await?;
        }
        "resume" => {
            campaign::resume(&state.pool, now, &actor, name).await?;
        }
        "cancel" if form.confirm.as_deref() == Some("yes") => {
            campaign::cancel(&state.pool, now, &actor, name).await?;
        }
        "cancel" => {
            let campaign = campaign::show(&state.pool, name).await?;
            return Ok(view::html_page(view::frame(
                &Frame {
                    title: "Cancel a campaign",
                    section: "Campaigns",
                    session: &session,
                    live_source: None,
                    refresh_ms: state.refresh_ms,
                },
                html! {
                    p {
                        "Cancel campaign " strong { (campaign.name) } "? Its "
                        (campaign.figures.waiting) " waiting numbers will never be sent, and a cancelled campaign cannot be resumed."
                    }
                    form method="post" action="/campaigns/action" class="inline" {
                        (view::csrf_field(&session))
                        input type="hidden" name="campaign" value=(campaign.name);
                        input type="hidden" name="action" value="cancel";
                        input type="hidden" name="confirm" value="yes";
                        button type="submit" class="danger" { "Cancel the campaign" }
                    }
                    " "
                    a href="/campaigns" { "Keep it" }
                },
            )));
        }
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "unknown campaign action {other:?}: pause, resume or cancel"
            )));
        }
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/campaigns"))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_counts_every_number_that_will_not_be_called_again() {
        let figures = Figures {
            numbers: 10,
            waiting: 2,
            submitted: 5,
            reached: 3,
            not_reached: 1,
            failed: 1,
            cancelled: 1,
            suppressed: 1,
            ..Figures::default()
        };
        assert_eq!(percent_done(&figures), 70);
        let counts: Vec<i64> = segments(&figures).iter().map(|s| s.count).collect();
        // reached, not reached (ended + given up), in call (submitted, no end yet), …
        assert_eq!(counts, [3, 2, 1, 2, 0, 1, 1]);
    }
}
