//! The services' state: each service's readiness (its own `/readyz`), RabbitMQ's queue
//! depths (from the management API) and the rows `local_call_queue` holds to send. Every
//! source is asked with a short timeout and on its own: one that does not answer shows as
//! down with the reason, and the page still renders.

use std::error::Error as _;
use std::str::FromStr;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use anyhow::Context;
use callbridge_types::clock::{Clock, SystemClock};
use callbridge_types::status::QueueStatus;
use callbridge_types::topology::DEAD_QUEUE;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinSet;
use url::Url;

use crate::auth::Session;
use crate::error::ConsoleError;
use crate::startup::AppState;
use crate::view::{self, Frame};

/// How long a service's `/readyz` or the management API may take: a page must not wait
/// long on what does not answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One service's readiness, as its `/readyz` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// It answered, not ready: its reasons.
    NotReady(String),
    /// It did not answer: why.
    Down(String),
}

impl Readiness {
    fn class(&self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::NotReady(_) => "not-ready",
            Readiness::Down(_) => "down",
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::NotReady(_) => "not ready",
            Readiness::Down(_) => "down",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Readiness::Ready => "",
            Readiness::NotReady(reason) | Readiness::Down(reason) => reason,
        }
    }
}

/// An HTTP failure in one line, without the URL (it is shown beside it) and with the
/// cause the operator can act on (`Connection refused`, a timeout).
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {} s", PROBE_TIMEOUT.as_secs());
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `root`'s `/readyz` (a root with a path keeps it: `http://host/persister` asks
/// `http://host/persister/readyz`).
fn readyz_url(root: &Url) -> Url {
    let mut url = root.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("readyz");
    }
    url
}

async fn probe(http: reqwest::Client, root: Url) -> Readiness {
    let response = match http
        .get(readyz_url(&root))
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return Readiness::Down(describe(error)),
    };
    let status = response.status();
    if status.is_success() {
        return Readiness::Ready;
    }
    // The services answer 503 with {"status":"not_ready","reasons":{condition: reason}}.
    let reasons = response
        .json::<Value>()
        .await
        .ok()
        .and_then(|body| body.get("reasons").and_then(Value::as_object).cloned())
        .map(|reasons| {
            reasons
                .iter()
                .map(|(condition, reason)| {
                    format!("{condition}: {}", reason.as_str().unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|text| !text.is_empty());
    Readiness::NotReady(reasons.unwrap_or_else(|| format!("/readyz answered {status}")))
}

/// Every configured service's readiness, asked at once, in the configured order.
async fn readiness(state: &AppState) -> Vec<(String, Url, Readiness)> {
    let mut probes = JoinSet::new();
    for (index, (_, root)) in state.services.iter().enumerate() {
        let http = state.http.clone();
        let root = root.clone();
        probes.spawn(async move { (index, probe(http, root).await) });
    }
    let mut answers: Vec<Option<Readiness>> = vec![None; state.services.len()];
    while let Some(joined) = probes.join_next().await {
        if let Ok((index, readiness)) = joined {
            answers[index] = Some(readiness);
        }
    }
    state
        .services
        .iter()
        .zip(answers)
        .map(|((name, root), readiness)| {
            let readiness =
                readiness.unwrap_or_else(|| Readiness::Down("the probe did not finish".to_owned()));
            (name.clone(), root.clone(), readiness)
        })
        .collect()
}

/// One queue as the management API reports it (a queue without statistics yet has no
/// counts).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueDepth {
    pub name: String,
    pub messages_ready: Option<u64>,
    pub messages_unacknowledged: Option<u64>,
    pub consumers: Option<u64>,
}

/// Where the queues are read: the management API's `/api/queues/<vhost>` for the vhost of
/// the broker's (first) AMQP URL. Only the management URL's scheme, user, password, host
/// and port are used (a KEDA-style URL ending in a vhost reads the same).
pub fn queues_url(management_url: &str, amqp_url: &str) -> anyhow::Result<(Url, String)> {
    let first_node = callbridge_runtime::amqp::BrokerNodes::parse(amqp_url)
        .urls()
        .first()
        .cloned()
        .context("no RabbitMQ URL is configured")?;
    let vhost = lapin::uri::AMQPUri::from_str(&first_node)
        .map_err(|error| anyhow::anyhow!("RABBITMQ_URL does not read as an AMQP URL: {error}"))?
        .vhost;
    let mut url =
        Url::parse(management_url).context("the management URL does not read as a URL")?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the management URL cannot take a path"))?
        .clear()
        // `push` escapes a `/` in the vhost's name (the default vhost is `/`: `%2F`).
        .extend(["api", "queues", vhost.as_str()]);
    url.query_pairs_mut().append_pair(
        "columns",
        "name,messages_ready,messages_unacknowledged,consumers",
    );
    Ok((url, vhost))
}

/// Where the page says the queues come from: host and port, never the credentials.
fn shown_host(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => "?".to_owned(),
    }
}

/// RabbitMQ's queues of the services' vhost, or why they cannot be read.
async fn queue_depths(state: &AppState) -> (String, Result<Vec<QueueDepth>, String>) {
    let (url, vhost) = match queues_url(state.management_url.expose(), state.amqp_url.expose()) {
        Ok(found) => found,
        Err(error) => return ("?".to_owned(), Err(format!("{error:#}"))),
    };
    let place = format!("vhost {vhost} at {}", shown_host(&url));
    // reqwest sends the URL's user and password as basic auth, not in the request line.
    let answer = match state.http.get(url).timeout(PROBE_TIMEOUT).send().await {
        Ok(response) => response,
        Err(error) => return (place, Err(describe(error))),
    };
    let status = answer.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 => ": check the user and password of CALLBRIDGE__CONSOLE__MANAGEMENT_URL",
            404 => ": no such vhost (check RABBITMQ_URL)",
            _ => "",
        };
        return (
            place,
            Err(format!("the management API answered {status}{hint}")),
        );
    }
    let queues = answer.json::<Vec<QueueDepth>>().await.map_err(|error| {
        format!(
            "the management API's answer does not read: {}",
            describe(error)
        )
    });
    (place, queues)
}

/// Rows of `local_call_queue` still to send or waiting for an operator.
#[derive(Debug, sqlx::FromRow)]
struct LocalBacklog {
    queue_status: String,
    rows: i64,
    /// Pending rows whose time to be sent has come.
    due: i64,
}

async fn local_backlog(state: &AppState) -> Result<Vec<LocalBacklog>, ConsoleError> {
    let statuses: Vec<&str> = [
        QueueStatus::Pending,
        QueueStatus::Submitting,
        QueueStatus::NeedsReview,
        QueueStatus::Failed,
    ]
    .iter()
    .map(|status| status.as_str())
    .collect();
    // Each status is a range of idx_local_queue_status; the due count reads the pending
    // rows' idx_local_queue_due.
    let found: Vec<LocalBacklog> = sqlx::query_as(
        "SELECT queue_status, count(*) AS rows,
                count(*) FILTER (WHERE queue_status = $2 AND next_attempt_at <= $3) AS due
           FROM local_call_queue
          WHERE queue_status = ANY($1)
          GROUP BY queue_status",
    )
    .bind(&statuses)
    .bind(QueueStatus::Pending.as_str())
    .bind(SystemClock.now())
    .fetch_all(&state.pool)
    .await
    .map_err(|error| anyhow::Error::new(error).context("while counting local_call_queue's rows"))?;
    // Every status shown, a missing one as 0, in the order a row moves through them.
    Ok(statuses
        .iter()
        .map(|status| {
            found
                .iter()
                .find(|row| row.queue_status == *status)
                .map(|row| LocalBacklog {
                    queue_status: row.queue_status.clone(),
                    rows: row.rows,
                    due: row.due,
                })
                .unwrap_or(LocalBacklog {
                    queue_status: (*status).to_owned(),
                    rows: 0,
                    due: 0,
                })
        })
        .collect())
}

fn content(
    services: &[(String, Url, Readiness)],
    place: &str,
    queues: &Result<Vec<QueueDepth>, String>,
    local: &[LocalBacklog],
) -> Markup {
    let count = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |n| n.to_string());
    html! {
        h2 { "Readiness" }
        @if services.is_empty() {
            p class="empty" { "No service is configured (CALLBRIDGE__CONSOLE__SERVICES)." }
        } @else {
            table class="rows services" {
                thead { tr { th { "Service" } th { "State" } th { "Why" } th { "Health root" } } }
                tbody {
                    @for (name, root, readiness) in services {
                        tr data-service=(name) data-state=(readiness.class()) {
                            td class="name" { (name) }
                            td { span class={ "status " (readiness.class()) } { (readiness.label()) } }
                            td class="reason" { (readiness.detail()) }
                            td class="mono" { (root.as_str()) }
                        }
                    }
                }
            }
        }
        h2 { "RabbitMQ queues " span class="hint" { "(" (place) ")" } }
        @match queues {
            Err(reason) => {
                p class="error rabbitmq" data-state="down" { "The management API cannot be read: " (reason) }
            }
            Ok(queues) if queues.is_empty() => {
                p class="empty" { "No queue in this vhost: no service has declared the topology yet." }
            }
            Ok(queues) => {
                table class="rows queues" {
                    thead { tr {
                        th { "Queue" } th class="num" { "Ready" } th class="num" { "Unacknowledged" }
                        th class="num" { "Consumers" }
                    } }
                    tbody {
                        @for queue in queues {
                            tr data-queue=(queue.name) {
                                td class="name" {
                                    @if queue.name == DEAD_QUEUE {
                                        a href="/dead-letters" { (queue.name) }
                                    } @else {
                                        (queue.name)
                                    }
                                }
                                td class="num ready" { (count(queue.messages_ready)) }
                                td class="num unacked" { (count(queue.messages_unacknowledged)) }
                                td class="num consumers" { (count(queue.consumers)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "local_call_queue" }
        table class="rows local-backlog" {
            thead { tr { th { "Status" } th class="num" { "Rows" } th class="num" { "Due now" } } }
            tbody {
                @for row in local {
                    tr data-status=(row.queue_status) {
                        td { (row.queue_status) }
                        td class="num rows" { (row.rows) }
                        td class="num" { @if row.queue_status == QueueStatus::Pending.as_str() { (row.due) } @else { "" } }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// `?fragment=1`: only the live part, for the page's refresh.
    #[serde(default)]
    fragment: Option<String>,
}

pub async fn page(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let (services, (place, queues), local) = tokio::join!(
        readiness(&state),
        queue_depths(&state),
        local_backlog(&state)
    );
    let content = content(&services, &place, &queues, &local?);
    if query.fragment.is_some() {
        return Ok(view::html_page(content));
    }
    Ok(view::html_page(view::frame(
        &Frame {
            title: "Services",
            section: "Services",
            session: &session,
            live_source: Some("/services?fragment=1".to_owned()),
            refresh_ms: state.refresh_ms,
        },
        content,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_read_in_the_vhost_of_the_first_broker_node() {
        let (url, vhost) = queues_url(
            "http://guest:guest@127.0.0.1:15672",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        )
        .unwrap();
        assert_eq!(vhost, "/");
        assert_eq!(url.path(), "/api/queues/%2F");
        assert_eq!(url.username(), "guest", "reqwest sends it as basic auth");

        let (url, vhost) = queues_url(
            "https://ops:s%40cret@mq.internal:15671/production",
            "amqp://a:b@mq-0:5672/production,amqp://a:b@mq-1:5672/production",
        )
        .unwrap();
        assert_eq!(vhost, "production");
        assert_eq!(url.path(), "/api/queues/production");
        assert_eq!(shown_host(&url), "mq.internal:15671");
        assert!(url.query().unwrap().starts_with("columns=name"));
    }

    #[test]
    fn readyz_is_asked_under_the_health_root() {
        let root = Url::parse("http://127.0.0.1:9101").unwrap();
        assert_eq!(readyz_url(&root).as_str(), "http://127.0.0.1:9101/readyz");
        let prefixed = Url::parse("http://gateway/persister/").unwrap();
        assert_eq!(
            readyz_url(&prefixed).as_str(),
            "http://gateway/persister/readyz"
        );
    }
}
