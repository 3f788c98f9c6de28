//! The page frame and the pieces every page shares: navigation, forms with their CSRF
//! token, the progress bar, numbers and headers.
//!
//! Everything goes through maud, which escapes every spliced value: text from callbacks
//! (custom data, error messages, campaign names) can only ever be shown as text. No page
//! carries inline script or style, so the Content-Security-Policy below forbids both.

use actix_web::HttpResponse;
use actix_web::HttpResponseBuilder;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use maud::{DOCTYPE, Markup, html};

use crate::auth::{CSRF_FIELD, Session};

/// Headers on every answer that carries a page.
pub fn security_headers(response: &mut HttpResponseBuilder) {
    response
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Pages show live figures and a CSRF token: never from a cache.
        .insert_header((header::CACHE_CONTROL, "no-store"));
}

/// A 200 page.
pub fn html_page(markup: Markup) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    security_headers(&mut response);
    response
        .insert_header(ContentType::html())
        .body(markup.into_string())
}

/// The pages in the navigation, with their paths.
pub const NAV: &[(&str, &str)] = &[
    ("Campaigns", "/campaigns"),
    ("Needs review", "/review"),
    ("Calls", "/calls"),
    ("Dead letters", "/dead-letters"),
    ("Services", "/services"),
];

/// What a page passes to the frame.
pub struct Frame<'a> {
    pub title: &'a str,
    /// The navigation entry to highlight.
    pub section: &'a str,
    pub session: &'a Session,
    /// Where the live part of the page is fetched from, as HTML, every `refresh_ms`.
    pub live_source: Option<String>,
    pub refresh_ms: u64,
}

/// A whole page: header, navigation, and `content`. When the page has a live source, the
/// content sits in the element the script refreshes; without JavaScript the page is the
/// same, only not refreshed.
pub fn frame(frame: &Frame<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " · callbridge console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header class="top" {
                    a class="brand" href="/campaigns" { "callbridge" }
                    nav {
                        @for (name, path) in NAV {
                            a href=(path) class=[(*name == frame.section).then_some("active")] { (name) }
                        }
                    }
                    div class="who" {
                        span class={ "role " (frame.session.role.as_str()) } { (frame.session.role.as_str()) }
                        form method="post" action="/logout" class="inline" {
                            (csrf_field(frame.session))
                            button type="submit" class="link" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (frame.title) }
                    @if let Some(source) = &frame.live_source {
                        div id="live" data-source=(source) data-refresh-ms=(frame.refresh_ms) {
                            (content)
                        }
                    } @else {
                        (content)
                    }
                }
            }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf()); }
}

/// A one-button form posting `fields` to `action`, shown only to a session that may act
/// (a viewer sees no button at all).
pub fn action_button(
    session: &Session,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> Markup {
    html! {
        @if session.may_act() {
            form method="post" action=(action) class="inline" {
                (csrf_field(session))
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                button type="submit" class=(class) { (label) }
            }
        }
    }
}

/// A page for an error, without the navigation (the session may be gone).
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (status.as_u16()) " · callbridge console" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                main class="narrow" {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    p class="error" { (message) }
                    p { a href="/campaigns" { "Back to the campaigns" } }
                }
            }
        }
    }
}

/// One coloured part of a progress bar.
pub struct Segment<'a> {
    pub label: &'a str,
    /// CSS class giving its colour (`reached`, `failed`, …).
    pub class: &'a str,
    pub count: i64,
}

/// A horizontal bar, drawn as SVG, whose parts are proportional to their counts, with a
/// legend that gives each count as text (so the figures read without the colours).
pub fn progress_bar(segments: &[Segment<'_>]) -> Markup {
    const WIDTH: f64 = 300.0;
    let total: i64 = segments.iter().map(|segment| segment.count.max(0)).sum();
    let mut x = 0.0;
    let parts: Vec<(f64, f64, &Segment<'_>)> = segments
        .iter()
        .filter(|segment| segment.count > 0 && total > 0)
        .map(|segment| {
            let width = WIDTH * segment.count as f64 / total as f64;
            let part = (x, width, segment);
            x += width;
            part
        })
        .collect();
    html! {
        svg class="bar" viewBox="0 0 300 14" width="300" height="14" role="img"
            aria-label=(legend_text(segments)) {
            rect class="track" x="0" y="0" width="300" height="14" {}
            @for (x, width, segment) in &parts {
                rect class=(segment.class) x=(format!("{x:.2}")) y="0"
                    width=(format!("{width:.2}")) height="14" {
                    title { (segment.label) ": " (segment.count) }
                }
            }
        }
        ul class="legend" {
            @for segment in segments.iter().filter(|segment| segment.count > 0) {
                li { span class={ "swatch " (segment.class) } {} (segment.label) " " (segment.count) }
            }
        }
    }
}

fn legend_text(segments: &[Segment<'_>]) -> String {
    segments
        .iter()
        .map(|segment| format!("{} {}", segment.label, segment.count))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `part` of `whole` as a whole percentage, 0 when there is no whole.
pub fn percent(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        0
    } else {
        (part.clamp(0, whole) * 100) / whole
    }
}

/// A number of seconds as `1m 05s` (or `42s`).
pub fn duration_text(seconds: f64) -> String {
    let whole = seconds.round() as i64;
    if whole < 60 {
        format!("{whole}s")
    } else {
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_splits_its_width_by_count_and_names_every_count() {
        let markup = progress_bar(&[
            Segment {
                label: "reached",
                class: "reached",
                count: 3,
            },
            Segment {
                label: "failed",
                class: "failed",
                count: 1,
            },
            Segment {
                label: "waiting",
                class: "waiting",
                count: 0,
            },
        ])
        .into_string();
        assert!(
            markup.contains(r#"class="reached" x="0.00" y="0" width="225.00""#),
            "{markup}"
        );
        assert!(
            markup.contains(r#"class="failed" x="225.00" y="0" width="75.00""#),
            "{markup}"
        );
        assert!(markup.contains("reached 3, failed 1, waiting 0"));
        assert!(!markup.contains(r#"class="waiting""#));
    }

    #[test]
    fn percentages_and_durations_read_as_a_person_writes_them() {
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 0), 0);
        assert_eq!(percent(7, 5), 100);
        assert_eq!(duration_text(42.4), "42s");
        assert_eq!(duration_text(65.0), "1m 05s");
    }
}
