//! One campaign's page (`/campaigns/{name}`): its figures and controls, its outcomes over
//! time as a chart, and its batches with their local counts beside the centralized
//! system's (batch-status), newest first, a page at a time.

use actix_web::{HttpResponse, web};
use callbridge_ops::CampaignView;
use callbridge_ops::batches::{self, BatchFilter, LocalBatch};
use callbridge_ops::campaign;
use callbridge_ops::centralized::RemoteView;
use callbridge_ops::outcomes::{self, OUTCOMES, OutcomeSeries};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::Session;
use crate::centralized::CentralCounts;
use crate::chart::{self, Column, Series};
use crate::error::ConsoleError;
use crate::pages::campaigns;
use crate::startup::AppState;
use crate::view::{self, Frame};

/// Batches shown at once (each one a batch-status request when the API is configured).
const BATCHES_PER_PAGE: u32 = 25;

/// How the chart names and colours each of [`OUTCOMES`], in their order.
const OUTCOME_SERIES: [Series<'static>; OUTCOMES.len()] = [
    Series {
        label: "answered",
        class: "reached",
    },
    Series {
        label: "busy",
        class: "busy",
    },
    Series {
        label: "no answer",
        class: "no-answer",
    },
    Series {
        label: "timeout",
        class: "timeout",
    },
    Series {
        label: "failed",
        class: "failed",
    },
    Series {
        label: "expired",
        class: "expired",
    },
];

/// The campaign page's path: the name percent-encoded, so any name (spaces, `/`, `?`)
/// is one path segment.
pub fn path(name: &str) -> String {
    let mut path = String::from("/campaigns/");
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Only the live part, for the page's refresh.
    #[serde(default)]
    pub fragment: Option<String>,
    /// The page of batches, 1 the newest.
    #[serde(default)]
    pub page: Option<u32>,
}

pub async fn page(
    state: web::Data<AppState>,
    session: Session,
    name: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let campaign = campaign::show(&state.pool, &name).await?;
    let page = query.page.unwrap_or(1).max(1);
    let mut batches = batches::load(
        &state.pool,
        &BatchFilter {
            campaign_id: Some(campaign.id),
            limit: BATCHES_PER_PAGE,
            offset: (page - 1).saturating_mul(BATCHES_PER_PAGE),
            ..BatchFilter::default()
        },
    )
    .await?;
    batches.reverse();
    let ids: Vec<i32> = batches.iter().map(|batch| batch.batch_id).collect();
    let central = state.central.batches(&ids).await;
    let series = outcomes::over_time(&state.pool, campaign.id).await?;
    let content = html! {
        (summary(&session, &campaign))
        h2 { "Outcomes over time" }
        (outcome_chart(&series))
        h2 { "Batches" }
        (batch_table(&campaign, page, &batches, &central))
    };
    if query.fragment.is_some() {
        return Ok(campaigns::fragment(content));
    }
    let title = format!("Campaign {}", campaign.name);
    Ok(view::html_page(view::frame(
        &Frame {
            title: &title,
            section: "Campaigns",
            session: &session,
            live_source: Some(format!("{}?fragment=1&page={page}", path(&campaign.name))),
            refresh_ms: state.refresh_ms,
        },
        content,
    )))
}

fn summary(session: &Session, campaign: &CampaignView) -> Markup {
    let figures = &campaign.figures;
    let done = campaigns::percent_done(figures);
    html! {
        div class="cards" data-campaign=(campaign.name) {
            div class="card" { div class="label" { "Status" } div class="value" { span class=(campaigns::status_class(campaign.status)) { (campaign.status.as_str()) } } }
            div class="card" { div class="label" { "Done" } div class="value done" data-percent=(done) { (done) " %" } }
            div class="card" { div class="label" { "Numbers" } div class="value" { (figures.numbers) } }
            div class="card" { div class="label" { "Waiting" } div class="value" { (figures.waiting) } }
            div class="card" { div class="label" { "Attempts" } div class="value" { (figures.attempts) } }
            div class="card" { div class="label" { "Reached" } div class="value" { (figures.reached) } }
            div class="card" { div class="label" { "ASR" } div class="value" {
                @if let Some(asr) = figures.asr { (format!("{:.0} %", asr * 100.0)) } @else { "-" } } }
            div class="card" { div class="label" { "ACD" } div class="value" {
                @if let Some(acd) = figures.acd_seconds { (view::duration_text(acd)) } @else { "-" } } }
        }
        (view::progress_bar(&campaigns::segments(figures)))
        div class="actions" { (campaigns::controls(session, campaign)) }
    }
}

/// A bucket width as a person says it.
fn width_text(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => match s / 86_400 {
            1 => "day".to_owned(),
            days => format!("{days} days"),
        },
        s if s % 3600 == 0 => match s / 3600 {
            1 => "hour".to_owned(),
            hours => format!("{hours} hours"),
        },
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The buckets as the chart's columns, each labelled by when it starts (UTC), with the
/// date when the chart spans more than one day.
pub fn chart_columns(series: &OutcomeSeries) -> Vec<Column> {
    let spans_days = match (series.buckets.first(), series.buckets.last()) {
        (Some(first), Some(last)) => first.start.date() != last.start.date(),
        _ => false,
    };
    series
        .buckets
        .iter()
        .map(|bucket| {
            let start = bucket.start;
            let label = if series.bucket_seconds >= 86_400 {
                start.format("%d %b").to_string()
            } else if series.bucket_seconds < 60 {
                start.format("%H:%M:%S").to_string()
            } else if spans_days {
                start.format("%d %b %H:%M").to_string()
            } else {
                start.format("%H:%M").to_string()
            };
            Column {
                label,
                values: bucket.counts.to_vec(),
            }
        })
        .collect()
}

fn outcome_chart(series: &OutcomeSeries) -> Markup {
    html! {
        @if series.buckets.is_empty() {
            p class="empty" { "No call of this campaign has ended yet." }
        } @else {
            p class="hint" {
                "Calls ended per " (width_text(series.bucket_seconds)) " (UTC), by outcome."
            }
            (chart::stacked_bars(
                &format!("Calls ended per {}, by outcome", width_text(series.bucket_seconds)),
                &OUTCOME_SERIES,
                &chart_columns(series),
            ))
        }
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// The centralized system's cells of one batch: status, total, completed, failed.
fn central_cells(view: Option<&RemoteView>) -> [String; 4] {
    match view {
        Some(RemoteView::Found(remote)) => [
            opt(remote.counts.batch_status.as_deref()),
            opt(remote.counts.total),
            opt(remote.counts.completed),
            opt(remote.counts.failed),
        ],
        Some(other) => [other.status_cell(), "-".into(), "-".into(), "-".into()],
        None => ["-".into(), "-".into(), "-".into(), "-".into()],
    }
}

/// Why the centralized columns are empty or partly so, in one line; `None` when every
/// batch was answered.
fn central_notice(central: &CentralCounts) -> Option<String> {
    match central {
        CentralCounts::NotConfigured => Some(
            "The centralized system's counts show here when CENTRALIZED_CALLING_BASE_URL and its API key are set."
                .to_owned(),
        ),
        CentralCounts::TimedOut => Some(
            "The centralized system did not answer in time: its counts are missing; the local counts are current."
                .to_owned(),
        ),
        CentralCounts::Answered(views) => views.iter().find_map(|view| match view {
            RemoteView::Unavailable { message } => Some(format!(
                "The centralized system could not be reached ({message}): its counts are missing; the local counts are current."
            )),
            RemoteView::KeyRejected { status, message } => Some(format!(
                "The centralized system refused the API key ({status} {message}): check CENTRALIZED_CALLING_API_KEY."
            )),
            _ => None,
        }),
    }
}

fn batch_table(
    campaign: &CampaignView,
    page: u32,
    batches: &[LocalBatch],
    central: &CentralCounts,
) -> Markup {
    let total = u32::try_from(campaign.figures.batches.max(0)).unwrap_or(u32::MAX);
    let pages = total.div_ceil(BATCHES_PER_PAGE).max(1);
    let with_central = !matches!(central, CentralCounts::NotConfigured);
    let views: &[RemoteView] = match central {
        CentralCounts::Answered(views) => views,
        _ => &[],
    };
    html! {
        @if let Some(notice) = central_notice(central) {
            p class=(if with_central { "warning central" } else { "hint central" }) { (notice) }
        }
        @if batches.is_empty() {
            p class="empty" { "No batch on this page." }
        } @else {
            table class="batches" {
                thead {
                    tr class="groups" {
                        th colspan="3" {} th colspan="6" { "Queue rows" } th colspan="3" { "Calls" }
                        @if with_central { th colspan="4" class="central" { "Centralized system" } }
                    }
                    tr {
                        th class="num" { "Batch" } th { "Name" } th { "Status" } th class="num" { "All" }
                        th class="num" { "Waiting" } th class="num" { "Sent" } th class="num" { "Review" }
                        th class="num" { "Rejected" } th class="num" { "Cancelled" }
                        th class="num" { "Total" } th class="num" { "Completed" } th class="num" { "Failed" }
                        @if with_central {
                            th class="central" { "Status" } th class="num central" { "Total" }
                            th class="num central" { "Completed" } th class="num central" { "Failed" }
                        }
                    }
                }
                tbody {
                    @for (index, batch) in batches.iter().enumerate() {
                        tr data-batch=(batch.batch_id) {
                            td class="num" { (batch.batch_id) }
                            td { (batch.batch_name.as_deref().unwrap_or("")) }
                            td { (opt(batch.batch_status.as_deref())) }
                            td class="num" { (batch.queue.rows) }
                            td class="num" { (batch.queue.waiting) }
                            td class="num" { (batch.queue.submitted) }
                            td class="num" { (batch.queue.needs_review) }
                            td class="num" { (batch.queue.failed) }
                            td class="num" { (batch.queue.cancelled) }
                            td class="num local-total" { (opt(batch.total_calls)) }
                            td class="num local-completed" { (opt(batch.completed_calls)) }
                            td class="num local-failed" { (opt(batch.failed_calls)) }
                            @if with_central {
                                @let [status, total, completed, failed] = central_cells(views.get(index));
                                td class="central-status" { (status) }
                                td class="num central-total" { (total) }
                                td class="num central-completed" { (completed) }
                                td class="num central-failed" { (failed) }
                            }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            div class="pager" {
                @if page > 1 {
                    a href=(format!("{}?page={}", path(&campaign.name), page - 1)) { "← Newer batches" }
                }
                span class="hint" { "page " (page) " of " (pages) " (" (total) " batches)" }
                @if page < pages {
                    a href=(format!("{}?page={}", path(&campaign.name), page + 1)) { "Older batches →" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge_ops::outcomes::Bucket;

    #[test]
    fn a_campaigns_path_is_one_segment_whatever_its_name() {
        assert_eq!(path("spring-2026"), "/campaigns/spring-2026");
        assert_eq!(
            path("spring / 2026 ü?"),
            "/campaigns/spring%20%2F%202026%20%C3%BC%3F"
        );
    }

    #[test]
    fn bucket_labels_carry_the_date_only_when_the_chart_spans_days() {
        let at = |day: u32, hour: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 12, day)
                .unwrap()
                .and_hms_opt(hour, 0, 0)
                .unwrap()
        };
        let bucket = |start| Bucket {
            start,
            counts: [1, 0, 0, 0, 0, 0],
        };
        let same_day = OutcomeSeries {
            bucket_seconds: 3600,
            buckets: vec![bucket(at(5, 9)), bucket(at(5, 10))],
        };
        let labels: Vec<String> = chart_columns(&same_day)
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["09:00", "10:00"]);
        let two_days = OutcomeSeries {
            bucket_seconds: 3 * 3600,
            buckets: vec![bucket(at(4, 21)), bucket(at(5, 0))],
        };
        let labels: Vec<String> = chart_columns(&two_days)
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["04 Dec 21:00", "05 Dec 00:00"]);
        assert_eq!(width_text(3 * 3600), "3 hours");
        assert_eq!(width_text(300), "5 min");
        assert_eq!(width_text(86_400), "day");
    }
}
