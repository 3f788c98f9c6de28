//! The console's operations pages in a real headless Chromium, against the real console,
//! Postgres, RabbitMQ, simulator, ingress, persister and submitter:
//! - the services page shows every service ready, and a service that stops shows as down
//!   on the same page (never reloaded);
//! - a signed callback the database refuses is dead-lettered by the persister, shows on
//!   the dead-letters page, and once the cause is gone, replaying it from the page stores
//!   it in `call_logs`;
//! - a signed callback whose `custom_data` is hostile markup is shown as text on the calls
//!   page: no dialog, no such element in the DOM.
//!
//! A screenshot of every step goes to `target/console-screenshots/ops-*.png`.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use browser::{
    Driver, assert_no_injected_markup, attribute_of, click, screenshot, text_of, wait_for,
};
use callbridge_console::Application as Console;
use callbridge_runtime::config::Settings;
use callbridge_sim::{SimConfig, Simulator};
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::signature::sign_hex;
use callbridge_types::topology::DEAD_QUEUE;
use cli_ingress::Ingress;
use common::{ACCOUNT_CODE, API_KEY, CALLBACK_SECRET, migrated_db};
use fantoccini::{Client, Locator};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const OPERATOR_TOKEN: &str = "browser-test-operator-token-02";
/// The batch the test's own callbacks belong to (no campaign).
const BATCH: i32 = 901;
/// The call the database refuses until the test lifts its constraint (named in that
/// constraint's SQL).
const DEAD_CALL: &str = "dead-letter-call-1";
const HOSTILE_CALL: &str = "hostile-call-1";
const SCRIPT: &str = "<script>alert(1)</script>";
const IMAGE: &str = r#""><img src=x onerror=alert(1)>"#;
/// Waiting for the pipeline or the page's live refresh; reaching it is the failure.
const PATIENCE: Duration = Duration::from_secs(60);

/// Posts `callback` to the ingress, signed as the centralized system signs it.
async fn send_callback(ingress: &Ingress, callback: &Value) {
    let body = callback.to_string();
    let response = reqwest::Client::new()
        .post(&ingress.url)
        .header("Content-Type", "application/json")
        .header(
            "X-Signature",
            sign_hex(CALLBACK_SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "the ingress refused the callback: {}",
        response.text().await.unwrap_or_default()
    );
}

fn completed_call(call_id: &str, number: &str, custom_data: Value) -> Value {
    json!({
        "event_type": "call_completed",
        "call_id": call_id,
        "batch_id": BATCH,
        "accountcode": ACCOUNT_CODE,
        "phone_number": number,
        "duration": 42,
        "custom_data": custom_data,
    })
}

async fn dead_letters_waiting(vhost: &TestVhost) -> u32 {
    let connection = callbridge_runtime::amqp::connect(&vhost.amqp_url(), "browser-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            DEAD_QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.ok();
    queue.message_count()
}

async fn stored(pool: &PgPool, call_id: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM call_logs WHERE call_id = $1")
        .bind(call_id)
        .fetch_one(pool)
        .await
        .unwrap()
        == 1
}

/// The state the services page shows for `service` (`ready`, `not-ready`, `down`).
async fn service_state(browser: &Client, service: &str) -> Option<String> {
    attribute_of(
        browser,
        &format!(r#"tr[data-service="{service}"]"#),
        "data-state",
    )
    .await
}

/// A service's health root from its bound address.
fn root(addr: std::net::SocketAddr) -> String {
    format!("http://127.0.0.1:{}", addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_watches_the_services_replays_a_dead_letter_and_reads_hostile_custom_data_as_text()
 {
    let (db, pool) = migrated_db().await;
    sqlx::query("INSERT INTO call_batches (batch_id, accountcode) VALUES ($1, $2)")
        .bind(BATCH)
        .bind(ACCOUNT_CODE)
        .execute(&pool)
        .await
        .unwrap();
    let vhost = TestVhost::new().await;
    let ingress = Ingress::spawn(&vhost.amqp_url(), &[CALLBACK_SECRET], true, None).await;
    let sim = Simulator::spawn(SimConfig::for_tests(&ingress.url).unwrap())
        .await
        .unwrap();
    let base_url = sim.base_url();
    let amqp_url = vhost.amqp_url();
    let mut env = vec![
        ("CLIENT_CALLING_DB_URL", db.url().to_owned()),
        ("RABBITMQ_URL", amqp_url.clone()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.clone()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY.to_owned()),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE.to_owned()),
        ("PERSISTER_BIND", "127.0.0.1:0".to_owned()),
        ("SUBMITTER_BIND", "127.0.0.1:0".to_owned()),
        ("CONSOLE_BIND", "127.0.0.1:0".to_owned()),
        ("CALLBRIDGE_CONSOLE_TOKEN", OPERATOR_TOKEN.to_owned()),
        ("CALLBRIDGE__CONSOLE__SECURE_COOKIE", "false".to_owned()),
        ("CALLBRIDGE__CONSOLE__REFRESH_MS", "300".to_owned()),
    ];
    let settings = Settings::load_from(env.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let persister = callbridge_persister::Persister::build(settings.persister().unwrap())
        .await
        .unwrap();
    let persister_root = root(persister.health_addr());
    tokio::spawn(persister.run_until_stopped(shutdown.clone()));
    let submitter = callbridge_submitter::Application::build(&settings.submitter().unwrap())
        .await
        .unwrap();
    let submitter_root = root(submitter.health_addr());
    // The submitter alone is stopped midway: a service going down.
    let stop_submitter = shutdown.child_token();
    tokio::spawn(submitter.run_until_stopped(stop_submitter.clone()));
    let ingress_root = ingress.url.trim_end_matches("/callback").to_owned();
    env.push((
        "CALLBRIDGE__CONSOLE__SERVICES",
        format!(
            "ingress={ingress_root},persister={persister_root},submitter={submitter_root},simulator={base_url}"
        ),
    ));
    let console_settings = Settings::load_from(env).unwrap();
    let console = Console::with_pool(console_settings.console().unwrap(), pool.clone()).unwrap();
    let console_url = format!("http://127.0.0.1:{}", console.port());
    tokio::spawn(console.run_until_stopped(shutdown.clone()));

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{console_url}/login")).await.unwrap();
    browser
        .form(Locator::Css("#login"))
        .await
        .unwrap()
        .set_by_name("token", OPERATOR_TOKEN)
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("tr[data-campaign], p.empty"))
        .await
        .unwrap();

    // Every service ready, on one page that keeps itself current.
    browser
        .goto(&format!("{console_url}/services"))
        .await
        .unwrap();
    for service in ["ingress", "persister", "submitter", "simulator"] {
        wait_for(
            &format!("the services page shows {service} ready"),
            PATIENCE,
            async || service_state(&browser, service).await.as_deref() == Some("ready"),
        )
        .await;
    }
    // The management API has statistics for a new vhost's queues a few seconds after they
    // were declared; until then the page shows `-`. The persister is the persist queue's
    // consumer.
    wait_for(
        "the services page shows the persist queue's depth and its consumer",
        PATIENCE,
        async || {
            let depth = text_of(&browser, r#"tr[data-queue="callbridge.persist"] td.ready"#).await;
            let consumers = text_of(
                &browser,
                r#"tr[data-queue="callbridge.persist"] td.consumers"#,
            )
            .await;
            depth.is_some_and(|depth| depth.parse::<u64>().is_ok())
                && consumers.as_deref() == Some("1")
        },
    )
    .await;
    screenshot(&browser, "ops-01-services-ready").await;

    browser
        .execute("window.stillTheSamePage = true; return true;", vec![])
        .await
        .unwrap();
    stop_submitter.cancel();
    wait_for(
        "the services page shows the stopped submitter down",
        PATIENCE,
        async || service_state(&browser, "submitter").await.as_deref() == Some("down"),
    )
    .await;
    let reason = text_of(&browser, r#"tr[data-service="submitter"] td.reason"#)
        .await
        .unwrap();
    assert!(!reason.is_empty(), "a down service says why");
    assert_eq!(
        service_state(&browser, "ingress").await.as_deref(),
        Some("ready"),
        "the others stay ready"
    );
    assert_eq!(
        browser
            .execute("return window.stillTheSamePage === true;", vec![])
            .await
            .unwrap(),
        json!(true),
        "the page was reloaded instead of refreshed in place"
    );
    screenshot(&browser, "ops-02-service-down").await;

    // A callback the database refuses: the persister dead-letters it.
    sqlx::query(
        "ALTER TABLE call_logs ADD CONSTRAINT refuses_the_test_call
             CHECK (call_id <> 'dead-letter-call-1')",
    )
    .execute(&pool)
    .await
    .unwrap();
    send_callback(
        &ingress,
        &completed_call(DEAD_CALL, "9876500901", json!({ "order": 17 })),
    )
    .await;
    wait_for(
        "the persister dead-letters the refused callback",
        PATIENCE,
        async || dead_letters_waiting(&vhost).await == 1,
    )
    .await;
    assert!(!stored(&pool, DEAD_CALL).await);
    browser
        .goto(&format!("{console_url}/dead-letters"))
        .await
        .unwrap();
    let letter = browser
        .wait()
        .for_element(Locator::Css("table.dead-letters tbody tr"))
        .await
        .unwrap();
    let text = letter.text().await.unwrap();
    assert!(text.contains(DEAD_CALL), "{text}");
    assert!(text.contains("refuses_the_test_call"), "the reason: {text}");
    assert!(text.contains("***0901"), "the number is masked: {text}");
    assert!(!text.contains("9876500901"));
    screenshot(&browser, "ops-03-dead-letter").await;

    // The cause is fixed; replay from the page, and the callback is stored.
    sqlx::query("ALTER TABLE call_logs DROP CONSTRAINT refuses_the_test_call")
        .execute(&pool)
        .await
        .unwrap();
    click(&browser, "table.dead-letters tbody tr button.resume").await;
    browser
        .wait()
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap();
    wait_for(
        "the replayed callback is stored in call_logs",
        PATIENCE,
        async || stored(&pool, DEAD_CALL).await,
    )
    .await;
    assert_eq!(dead_letters_waiting(&vhost).await, 0);
    let recorded: (String, String, Option<String>, i64) = sqlx::query_as(
        "SELECT action, source, role, rows_affected FROM operator_actions WHERE action = 'dlq.replay'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        (
            "dlq.replay".to_owned(),
            "console".to_owned(),
            Some("operator".to_owned()),
            1
        )
    );
    screenshot(&browser, "ops-04-replayed").await;

    // Hostile custom data, through a real signed callback, shown as text.
    let custom_data = json!({ "note": SCRIPT, "name": IMAGE });
    send_callback(
        &ingress,
        &completed_call(HOSTILE_CALL, "9876543210", custom_data.clone()),
    )
    .await;
    wait_for("the hostile callback is stored", PATIENCE, async || {
        stored(&pool, HOSTILE_CALL).await
    })
    .await;
    browser
        .goto(&format!("{console_url}/calls?batch={BATCH}"))
        .await
        .unwrap();
    let call = browser
        .wait()
        .for_element(Locator::Css(&format!(r#"tr[data-call="{HOSTILE_CALL}"]"#)))
        .await
        .unwrap();
    let text = call.text().await.unwrap();
    let stored_data: Value =
        sqlx::query_scalar("SELECT custom_data FROM call_logs WHERE call_id = $1")
            .bind(HOSTILE_CALL)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        text.contains(&stored_data.to_string()),
        "the custom data reads as its JSON text: {text}"
    );
    assert!(text.contains(SCRIPT) && text.contains(IMAGE), "{text}");
    assert!(text.contains("***3210"), "the number is masked: {text}");
    assert!(!text.contains("9876543210"));
    assert_no_injected_markup(&browser).await;
    screenshot(&browser, "ops-05-calls").await;

    browser.close().await.unwrap();
    shutdown.cancel();
}
