//! The operator console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/ensure-browser.sh`), over WebDriver, against
//! the real console, Postgres, RabbitMQ, simulator, ingress, persister and submitter:
//! sign in; pause a campaign from the page and see the simulator receive nothing more;
//! resume it and watch it reach 100 % without the page reloading; settle a `needs_review`
//! row whose custom data is hostile markup, which must show as text. A screenshot of every
//! step goes to `target/console-screenshots/`.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use browser::{Driver, assert_no_injected_markup, click, screenshot, text_of, wait_for};
use callbridge_console::Application as Console;
use callbridge_runtime::config::Settings;
use callbridge_sim::{SimConfig, Simulator};
use cli_ingress::Ingress;
use common::{ACCOUNT_CODE, API_KEY, CALLBACK_SECRET, migrated_db};
use fantoccini::{Client, Locator};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const OPERATOR_TOKEN: &str = "browser-test-operator-token-01";
const POLL_INTERVAL_MS: u64 = 200;
const HOSTILE: &str = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;

/// Campaign `spring`: `batches` batches of 20 numbers, due now.
async fn enqueue_campaign(pool: &PgPool, batches: i32) {
    let id: i32 = sqlx::query_scalar("INSERT INTO campaigns (name) VALUES ('spring') RETURNING id")
        .fetch_one(pool)
        .await
        .unwrap();
    for batch in 1..=batches {
        sqlx::query(
            "INSERT INTO call_batches (batch_id, accountcode, campaign_id) VALUES ($1, $2, $3)",
        )
        .bind(batch)
        .bind(ACCOUNT_CODE)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO local_call_queue (phone_number, batch_id, campaign_id)
             SELECT '98' || lpad(($1 * 100 + n)::text, 8, '0'), $1, $2 FROM generate_series(1, 20) AS n",
        )
        .bind(batch)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// The campaign's done cell, read again if the live refresh replaced it.
async fn done_text(browser: &Client) -> String {
    text_of(browser, r#"tr[data-campaign="spring"] td.done"#)
        .await
        .expect("the campaign's done cell could not be read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_steers_a_campaign_and_settles_a_row_in_a_real_browser() {
    let (db, pool) = migrated_db().await;
    let vhost = callbridge_testkit::vhost::TestVhost::new().await;
    let ingress = Ingress::spawn(&vhost.amqp_url(), &[CALLBACK_SECRET], true, None).await;
    let sim = Simulator::spawn(SimConfig::for_tests(&ingress.url).unwrap())
        .await
        .unwrap();
    let base_url = sim.base_url();
    let amqp_url = vhost.amqp_url();
    let poll = POLL_INTERVAL_MS.to_string();
    let settings = Settings::load_from([
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("RABBITMQ_URL", amqp_url.as_str()),
        ("CENTRALIZED_CALLING_BASE_URL", base_url.as_str()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("PERSISTER_BIND", "127.0.0.1:0"),
        ("SUBMITTER_BIND", "127.0.0.1:0"),
        ("CONSOLE_BIND", "127.0.0.1:0"),
        ("CALLBRIDGE__SUBMITTER__POLL_INTERVAL_MS", poll.as_str()),
        // One batch per claim, so the campaign is sent in several steps.
        ("CALLBRIDGE__SUBMITTER__BATCH_CLAIM_LIMIT", "20"),
        ("CALLBRIDGE_CONSOLE_TOKEN", OPERATOR_TOKEN),
        ("CALLBRIDGE__CONSOLE__SECURE_COOKIE", "false"),
        ("CALLBRIDGE__CONSOLE__REFRESH_MS", "300"),
    ])
    .unwrap();
    let shutdown = CancellationToken::new();
    let persister = callbridge_persister::Persister::build(settings.persister().unwrap())
        .await
        .unwrap();
    tokio::spawn(persister.run_until_stopped(shutdown.clone()));
    let console = Console::with_pool(settings.console().unwrap(), pool.clone()).unwrap();
    let console_url = format!("http://127.0.0.1:{}", console.port());
    tokio::spawn(console.run_until_stopped(shutdown.clone()));

    // The simulator holds the first insert request: the campaign is mid-way when paused.
    sim.hold();
    enqueue_campaign(&pool, 5).await;
    let submitter = callbridge_submitter::Application::build(&settings.submitter().unwrap())
        .await
        .unwrap();
    tokio::spawn(submitter.run_until_stopped(shutdown.clone()));
    wait_for(
        "the first insert request reaches the simulator",
        Duration::from_secs(30),
        async || sim.held_now() > 0,
    )
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser().await;

    // Signing in: every page without a session leads to the sign-in form.
    browser
        .goto(&format!("{console_url}/campaigns"))
        .await
        .unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/login")
    );
    screenshot(&browser, "01-sign-in").await;
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
        .for_element(Locator::Css(r#"tr[data-campaign="spring"]"#))
        .await
        .unwrap();
    assert_eq!(done_text(&browser).await, "0 %");
    screenshot(&browser, "02-campaigns").await;

    // Pause from the page. The request already in the simulator's hands goes on (those
    // calls are placed); nothing more is sent.
    click(&browser, r#"tr[data-campaign="spring"] button.pause"#).await;
    browser
        .wait()
        .for_element(Locator::Css(r#"tr[data-campaign="spring"] button.resume"#))
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM campaigns WHERE name = 'spring'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "paused");
    screenshot(&browser, "03-paused").await;
    sim.release();
    wait_for(
        "the held request is answered",
        Duration::from_secs(30),
        async || sim.held_now() == 0,
    )
    .await;
    let accepted_at_pause = sim.ground_truth(None).calls.len();
    // Several poll intervals: a submitter that ignored the pause would send meanwhile.
    tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS * 10)).await;
    assert_eq!(
        sim.ground_truth(None).calls.len(),
        accepted_at_pause,
        "the simulator received numbers after the pause"
    );
    assert!(
        accepted_at_pause < 100,
        "the whole campaign went out before the pause"
    );

    // Resume, and watch the same page (no reload) reach 100 %.
    browser
        .execute("window.stillTheSamePage = true; return true;", vec![])
        .await
        .unwrap();
    click(&browser, r#"tr[data-campaign="spring"] button.resume"#).await;
    browser
        .wait()
        .for_element(Locator::Css(r#"tr[data-campaign="spring"] button.pause"#))
        .await
        .unwrap();
    // The form's POST navigated once; from here on only the live refresh may change it.
    browser
        .execute("window.stillTheSamePage = true; return true;", vec![])
        .await
        .unwrap();
    wait_for(
        "the page shows the campaign at 100 %",
        Duration::from_secs(120),
        async || done_text(&browser).await == "100 %",
    )
    .await;
    let same = browser
        .execute("return window.stillTheSamePage === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same,
        json!(true),
        "the page was reloaded instead of refreshed in place"
    );
    screenshot(&browser, "04-complete").await;

    // A row whose outcome is unknown, with hostile custom data.
    let row: i32 = sqlx::query_scalar(
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status, custom_data, last_error)
         VALUES ('9876543210', 1, 'needs_review', $1, 'timeout after sending') RETURNING id",
    )
    .bind(json!({ "note": HOSTILE }))
    .fetch_one(&pool)
    .await
    .unwrap();
    browser
        .goto(&format!("{console_url}/review"))
        .await
        .unwrap();
    let selector = format!(r#"tr[data-row="{row}"]"#);
    let shown = browser
        .wait()
        .for_element(Locator::Css(&selector))
        .await
        .unwrap();
    let text = shown.text().await.unwrap();
    // Shown as its JSON text, character for character.
    let as_json = json!({ "note": HOSTILE }).to_string();
    assert!(
        text.contains(&as_json),
        "the custom data reads as text: {text}"
    );
    assert!(text.contains("***3210"), "the number is masked: {text}");
    assert!(!text.contains("9876543210"));
    assert_no_injected_markup(&browser).await;
    screenshot(&browser, "05-needs-review").await;
    click(&browser, &format!(r#"{selector} button.resume"#)).await;
    wait_for("the row is settled", Duration::from_secs(10), async || {
        browser.find(Locator::Css(&selector)).await.is_err()
    })
    .await;
    let settled: String =
        sqlx::query_scalar("SELECT queue_status FROM local_call_queue WHERE id = $1")
            .bind(row)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(settled, "submitted");
    let actor: (String, Option<String>) =
        sqlx::query_as("SELECT source, role FROM operator_actions WHERE action = 'queue.resolve'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(actor, ("console".to_owned(), Some("operator".to_owned())));
    screenshot(&browser, "06-resolved").await;
    assert!(browser.get_alert_text().await.is_err(), "a dialog opened");

    browser.close().await.unwrap();
    shutdown.cancel();
}
