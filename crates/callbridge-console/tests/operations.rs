//! The dead letters, services and calls pages over plain HTTP, against a real console,
//! Postgres and a RabbitMQ vhost of their own: dead letters listed (escaped, numbers
//! masked), replayed one or all and purged by an operator, each recorded as the console;
//! a viewer who sees them but whose POSTs are refused; the services' readiness and
//! backlog, with a service that does not answer shown as down; callback data shown as
//! text.

mod support;

use std::time::Duration;

use callbridge_runtime::health::{HealthServer, Readiness, install_metrics_recorder};
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::topology::{DEAD_EXCHANGE, DEAD_QUEUE, ERROR_HEADER, PERSIST_QUEUE};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use reqwest::StatusCode;
use serde_json::json;
use support::{Console, OPERATOR_TOKEN, VIEWER_TOKEN, csrf_in, location};

const HOSTILE: &str = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
/// How long the management API may take to show a queue's new depth (its statistics are
/// refreshed every few seconds); reaching it is the failure.
const STATISTICS_PATIENCE: Duration = Duration::from_secs(30);

async fn vhost_with_topology() -> TestVhost {
    let vhost = TestVhost::new().await;
    let connection = callbridge_runtime::amqp::connect(&vhost.amqp_url(), "console-test")
        .await
        .unwrap();
    callbridge_runtime::amqp::declare_topology(&connection)
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.ok();
    vhost
}

/// Publishes a dead letter as the persister does: the original routing key, properties
/// and envelope, plus the error header; returns once the queue counts it.
async fn dead_letter(vhost: &TestVhost, message_id: &str, call_id: &str, error: &str) {
    let mut headers = FieldTable::default();
    headers.insert(
        ERROR_HEADER.into(),
        AMQPValue::LongString(LongString::from(error)),
    );
    let body = json!({
        "schema_version": 1,
        "event_id": message_id,
        "received_at": "2026-03-02T09:00:00Z",
        "event": { "event_type": "call_completed", "call_id": call_id, "phone_number": "9876543210" },
    });
    vhost
        .publish_counted(
            DEAD_EXCHANGE,
            "callback.call_completed",
            body.to_string().as_bytes(),
            BasicProperties::default()
                .with_message_id(message_id.into())
                .with_delivery_mode(2)
                .with_timestamp(1_700_000_000)
                .with_headers(headers),
            DEAD_QUEUE,
        )
        .await
        .unwrap();
}

/// The `<tr>` of `page` that carries `marker` (e.g. `data-message="evt-1"`).
fn row<'a>(page: &'a str, marker: &str) -> &'a str {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no row {marker} in {page}"));
    let end = page[start..].find("</tr>").unwrap() + start;
    &page[start..end]
}

async fn actions(console: &Console) -> Vec<(String, String, Option<String>, String, i64)> {
    sqlx::query_as(
        "SELECT action, source, role, actor, rows_affected FROM operator_actions ORDER BY id",
    )
    .fetch_all(&console.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn dead_letters_are_listed_as_text_and_an_operator_replays_one_then_all() {
    let vhost = vhost_with_topology().await;
    dead_letter(
        &vhost,
        "evt-1",
        "c-1",
        "call_logs: value too long for type character varying(20)",
    )
    .await;
    dead_letter(&vhost, "evt-2", HOSTILE, HOSTILE).await;
    let amqp_url = vhost.amqp_url();
    let console = Console::start(&[("RABBITMQ_URL", amqp_url.as_str())]).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;

    let page = operator.page("/dead-letters").await;
    assert!(page.contains(r#"data-count="2""#), "{page}");
    let first = row(&page, r#"data-message="evt-1""#);
    assert!(first.contains("call_completed"), "{first}");
    assert!(first.contains("value too long"), "{first}");
    assert!(first.contains("2023-11-14T22:13:20+00:00"), "{first}");
    assert!(first.contains("***3210"), "the number is masked: {first}");
    assert!(!page.contains("9876543210"), "no full number on the page");
    // The callback's own text (call id, error) only ever as text.
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains(r#"action="/dead-letters/replay""#));
    assert!(page.contains(r#"action="/dead-letters/purge""#));
    assert_eq!(
        vhost.queue_depth(DEAD_QUEUE).await.unwrap(),
        2,
        "looking removes nothing"
    );
    let csrf = csrf_in(&page).unwrap();

    let one = operator
        .post(
            "/dead-letters/replay",
            &[("csrf", &csrf), ("message_id", "evt-2")],
        )
        .await;
    assert_eq!(one.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&one).as_deref(), Some("/dead-letters?replayed=1"));
    assert_eq!(
        vhost.settled_queue_depth(DEAD_QUEUE, 1).await.unwrap(),
        1,
        "evt-1 stays dead"
    );
    assert_eq!(
        vhost.settled_queue_depth(PERSIST_QUEUE, 1).await.unwrap(),
        1
    );
    let after = operator.page("/dead-letters?replayed=1").await;
    assert!(after.contains("Replayed 1 dead letter"), "{after}");
    assert!(!after.contains(r#"data-message="evt-2""#));

    let all = operator
        .post("/dead-letters/replay", &[("csrf", &csrf)])
        .await;
    assert_eq!(all.status(), StatusCode::SEE_OTHER);
    assert_eq!(vhost.settled_queue_depth(DEAD_QUEUE, 0).await.unwrap(), 0);
    assert_eq!(
        vhost.settled_queue_depth(PERSIST_QUEUE, 2).await.unwrap(),
        2
    );
    assert!(
        operator
            .page("/dead-letters")
            .await
            .contains(r#"data-count="0""#)
    );

    // A dead letter replayed meanwhile (another tab, the CLI) is a 404 that says so.
    let gone = operator
        .post(
            "/dead-letters/replay",
            &[("csrf", &csrf), ("message_id", "evt-1")],
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert!(
        gone.text()
            .await
            .unwrap()
            .contains("no longer in callbridge.dead")
    );

    let recorded = actions(&console).await;
    let rows: Vec<i64> = recorded.iter().map(|action| action.4).collect();
    assert_eq!(rows, [1, 1, 0]);
    for (action, source, role, actor, _) in &recorded {
        assert_eq!(action, "dlq.replay");
        assert_eq!(source, "console");
        assert_eq!(role.as_deref(), Some("operator"));
        assert!(actor.starts_with("console operator session "), "{actor}");
    }
}

#[tokio::test]
async fn purging_asks_first_then_deletes_every_dead_letter_and_is_recorded() {
    let vhost = vhost_with_topology().await;
    dead_letter(&vhost, "evt-1", "c-1", "boom").await;
    dead_letter(&vhost, "evt-2", "c-2", "boom").await;
    let amqp_url = vhost.amqp_url();
    let console = Console::start(&[("RABBITMQ_URL", amqp_url.as_str())]).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let csrf = operator.csrf("/dead-letters").await;

    let ask = operator
        .post("/dead-letters/purge", &[("csrf", &csrf)])
        .await;
    assert_eq!(ask.status(), StatusCode::OK);
    let question = ask.text().await.unwrap();
    assert!(
        question.contains("<strong>2</strong> dead letters"),
        "{question}"
    );
    assert!(question.contains("cannot be replayed afterwards"));
    assert_eq!(
        vhost.queue_depth(DEAD_QUEUE).await.unwrap(),
        2,
        "asking deletes nothing"
    );
    assert!(actions(&console).await.is_empty());

    let purge = operator
        .post(
            "/dead-letters/purge",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(purge.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&purge).as_deref(), Some("/dead-letters?purged=2"));
    assert_eq!(vhost.queue_depth(DEAD_QUEUE).await.unwrap(), 0);
    let recorded = actions(&console).await;
    assert_eq!(recorded.len(), 1);
    let (action, source, role, _, rows) = &recorded[0];
    assert_eq!(
        (action.as_str(), source.as_str(), role.as_deref(), *rows),
        ("dlq.purge", "console", Some("operator"), 2)
    );
}

#[tokio::test]
async fn a_viewer_sees_the_dead_letters_without_buttons_and_no_post_gets_through_without_a_session_csrf_or_the_operator_role()
 {
    let vhost = vhost_with_topology().await;
    dead_letter(&vhost, "evt-1", "c-1", "boom").await;
    let amqp_url = vhost.amqp_url();
    let console = Console::start(&[("RABBITMQ_URL", amqp_url.as_str())]).await;
    let viewer = console.signed_in(VIEWER_TOKEN).await;
    let page = viewer.page("/dead-letters").await;
    assert!(page.contains(r#"data-message="evt-1""#), "{page}");
    assert!(!page.contains(r#"action="/dead-letters/replay""#), "{page}");
    assert!(!page.contains(r#"action="/dead-letters/purge""#), "{page}");
    // Its own, valid CSRF token (from the sign-out form) does not make it an operator.
    let viewer_csrf = csrf_in(&page).unwrap();
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let anonymous = console.anonymous();
    let forms: [(&str, Vec<(&str, &str)>); 3] = [
        ("/dead-letters/replay", vec![("message_id", "evt-1")]),
        ("/dead-letters/replay", vec![]),
        ("/dead-letters/purge", vec![("confirm", "yes")]),
    ];
    for (path, form) in &forms {
        let mut with_viewer_csrf = form.clone();
        with_viewer_csrf.push(("csrf", viewer_csrf.as_str()));
        let response = viewer.post(path, &with_viewer_csrf).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "viewer {path}");

        let response = operator.post(path, form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "no CSRF {path}");
        let mut with_wrong = form.clone();
        with_wrong.push(("csrf", viewer_csrf.as_str()));
        let response = operator.post(path, &with_wrong).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "another session's CSRF {path}"
        );

        let response = anonymous.post(path, &with_viewer_csrf).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "no session {path}"
        );
    }
    for page in ["/dead-letters", "/services", "/calls", "/calls?batch=1"] {
        let response = anonymous.get(page).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "GET {page}");
        assert_eq!(location(&response).as_deref(), Some("/login"));
    }
    assert_eq!(
        vhost.queue_depth(DEAD_QUEUE).await.unwrap(),
        1,
        "nothing was replayed or purged"
    );
    assert_eq!(vhost.queue_depth(PERSIST_QUEUE).await.unwrap(), 0);
    assert!(actions(&console).await.is_empty());
}

#[tokio::test]
async fn without_the_topology_the_dead_letters_page_says_what_to_do_and_a_replay_is_503() {
    let vhost = TestVhost::new().await;
    let amqp_url = vhost.amqp_url();
    let console = Console::start(&[("RABBITMQ_URL", amqp_url.as_str())]).await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;

    let page = operator.page("/dead-letters").await;
    assert!(page.contains("The dead letters cannot be read"), "{page}");
    assert!(page.contains("start callbridge-persister once"), "{page}");
    let csrf = csrf_in(&page).unwrap();
    let replay = operator
        .post("/dead-letters/replay", &[("csrf", &csrf)])
        .await;
    assert_eq!(replay.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        replay
            .text()
            .await
            .unwrap()
            .contains("queue callbridge.dead does not exist")
    );
}

/// A health server answering `/readyz` like a service's, ready or not.
async fn health_server(not_ready: Option<(&str, &str)>) -> HealthServer {
    let readiness = Readiness::new();
    readiness.set_ready("database");
    if let Some((condition, reason)) = not_ready {
        readiness.set_not_ready(condition, reason);
    }
    HealthServer::start(
        "127.0.0.1:0".parse().unwrap(),
        readiness,
        install_metrics_recorder(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_services_page_shows_each_services_readiness_and_the_backlog() {
    let vhost = vhost_with_topology().await;
    dead_letter(&vhost, "evt-1", "c-1", "boom").await;
    let ready = health_server(None).await;
    let not_ready = health_server(Some(("broker", "RabbitMQ is not reachable"))).await;
    // A port nothing listens on: a stopped service.
    let stopped = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let services = format!(
        "ingress=http://{},persister=http://{},submitter=http://{stopped}",
        ready.addr(),
        not_ready.addr()
    );
    let amqp_url = vhost.amqp_url();
    let console = Console::start(&[
        ("RABBITMQ_URL", amqp_url.as_str()),
        ("CALLBRIDGE__CONSOLE__SERVICES", services.as_str()),
    ])
    .await;
    let id: i32 = sqlx::query_scalar("INSERT INTO campaigns (name) VALUES ('spring') RETURNING id")
        .fetch_one(&console.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, campaign_id, queue_status, next_attempt_at)
         VALUES ('9876500001', $1, 'pending', now() - interval '1 minute'),
                ('9876500002', $1, 'pending', now() - interval '1 minute'),
                ('9876500003', $1, 'pending', now() + interval '1 hour'),
                ('9876500004', $1, 'needs_review', now())",
    )
    .bind(id)
    .execute(&console.pool)
    .await
    .unwrap();
    let viewer = console.signed_in(VIEWER_TOKEN).await;

    let page = viewer.page("/services").await;
    assert!(row(&page, r#"data-service="ingress""#).contains(r#"data-state="ready""#));
    let persister = row(&page, r#"data-service="persister""#);
    assert!(
        persister.contains(r#"data-state="not-ready""#),
        "{persister}"
    );
    assert!(
        persister.contains("broker: RabbitMQ is not reachable"),
        "{persister}"
    );
    let submitter = row(&page, r#"data-service="submitter""#);
    assert!(submitter.contains(r#"data-state="down""#), "{submitter}");
    assert!(
        submitter.to_lowercase().contains("connection refused"),
        "the reason is shown: {submitter}"
    );
    assert!(!page.contains("guest:guest"), "no credentials on the page");
    assert!(page.contains(&format!("vhost {}", vhost.name())), "{page}");
    assert!(
        row(&page, r#"data-status="pending""#)
            .contains(r#"<td class="num rows">3</td><td class="num">2</td>"#)
    );
    assert!(row(&page, r#"data-status="needs_review""#).contains(r#"<td class="num rows">1</td>"#));
    assert!(
        page.contains(r#"data-queue="callbridge.persist""#),
        "{page}"
    );

    // The management API's statistics trail the queue by a few seconds.
    let deadline = tokio::time::Instant::now() + STATISTICS_PATIENCE;
    loop {
        let page = viewer.page("/services?fragment=1").await;
        if row(&page, r#"data-queue="callbridge.dead""#).contains(r#"<td class="num ready">1</td>"#)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead queue's depth never showed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A service that stops shows as down on the next look.
    not_ready.stop().await.unwrap();
    let page = viewer.page("/services?fragment=1").await;
    assert!(row(&page, r#"data-service="persister""#).contains(r#"data-state="down""#));
    ready.stop().await.unwrap();
}

#[tokio::test]
async fn the_services_page_renders_when_the_management_api_does_not_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let management = format!("http://guest:guest@{closed}");
    let services = format!("ingress=http://{closed}");
    let console = Console::start(&[
        ("CALLBRIDGE__CONSOLE__MANAGEMENT_URL", management.as_str()),
        ("CALLBRIDGE__CONSOLE__SERVICES", services.as_str()),
    ])
    .await;
    let operator = console.signed_in(OPERATOR_TOKEN).await;
    let page = operator.page("/services").await;
    assert!(page.contains("The management API cannot be read"), "{page}");
    assert!(page.to_lowercase().contains("connection refused"), "{page}");
    assert!(!page.contains("guest:guest"));
    assert!(row(&page, r#"data-service="ingress""#).contains(r#"data-state="down""#));
    assert!(
        page.contains(r#"data-status="pending""#),
        "the local backlog still shows"
    );
}

#[tokio::test]
async fn calls_show_the_callbacks_custom_data_and_errors_as_text() {
    let console = Console::start(&[]).await;
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status, duration,
                                error_message, custom_data)
         VALUES ('call-7', 'TEST', 7, '9876543210', 'completed', 65, $1, $2),
                ('call-8', 'TEST', 8, '9876500008', 'busy', 0, NULL, NULL)",
    )
    .bind(HOSTILE)
    .bind(json!({ "note": HOSTILE }))
    .execute(&console.pool)
    .await
    .unwrap();
    let viewer = console.signed_in(VIEWER_TOKEN).await;

    for path in ["/calls", "/calls?batch=7", "/calls?fragment=1&batch=7"] {
        let page = viewer.page(path).await;
        let call = row(&page, r#"data-call="call-7""#);
        assert!(call.contains("***3210"), "{call}");
        assert!(call.contains("1m 05s"), "{call}");
        assert!(!page.contains("9876543210"), "{path}");
        assert!(!page.contains("<script>alert(1)"), "{path}: {page}");
        assert!(!page.contains("<img src=x"), "{path}: {page}");
        assert!(
            call.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{call}"
        );
    }
    let one_batch = viewer.page("/calls?batch=7").await;
    assert!(!one_batch.contains(r#"data-call="call-8""#));
    assert!(
        viewer
            .page("/calls?batch=")
            .await
            .contains(r#"data-call="call-8""#)
    );
    let wrong = viewer.get("/calls?batch=seven").await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert!(wrong.text().await.unwrap().contains("is not a batch id"));
}
