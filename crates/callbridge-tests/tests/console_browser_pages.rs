//! The console's campaign and do-not-call pages in a real headless Chromium (Debian's
//! `chromium` and `chromium-driver`, installed by `scripts/ensure-browser.sh`), over
//! WebDriver, against the real console, Postgres, RabbitMQ, simulator, ingress, persister
//! and submitter: a campaign runs to its end; its page (reached from the campaigns list)
//! shows its batches with the local counts beside the centralized system's and its
//! outcomes over time as a chart; a number added on the do-not-call page is never sent
//! although a row of it was queued before (the row turns `suppressed`), and it is removed
//! again. A screenshot of every step goes to `target/console-screenshots/`.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use browser::{Driver, click, screenshot, text_of, wait_for};
use callbridge_console::Application as Console;
use callbridge_runtime::config::Settings;
use callbridge_sim::{SimConfig, Simulator};
use cli_ingress::Ingress;
use common::{ACCOUNT_CODE, API_KEY, CALLBACK_SECRET, migrated_db};
use fantoccini::{Client, Locator};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const OPERATOR_TOKEN: &str = "browser-test-operator-token-02";
const POLL_INTERVAL_MS: u64 = 200;
/// Queued in campaign `autumn` before anyone asked not to be called.
const OPTED_OUT: &str = "9876512345";
const OPTED_OUT_E164: &str = "+919876512345";
const NUMBERS_PER_BATCH: i32 = 10;

/// Campaign `name` (`status`): `batches` batches of `NUMBERS_PER_BATCH` numbers from
/// batch `first_batch`, plus `extra` numbers in its last batch.
async fn campaign(
    pool: &PgPool,
    name: &str,
    status: &str,
    first_batch: i32,
    batches: i32,
    extra: &[&str],
) {
    let id: i32 =
        sqlx::query_scalar("INSERT INTO campaigns (name, status) VALUES ($1, $2) RETURNING id")
            .bind(name)
            .bind(status)
            .fetch_one(pool)
            .await
            .unwrap();
    for batch in first_batch..first_batch + batches {
        sqlx::query(
            "INSERT INTO call_batches (batch_id, accountcode, campaign_id, batch_name)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(batch)
        .bind(ACCOUNT_CODE)
        .bind(id)
        .bind(format!("{name} part {}", batch - first_batch + 1))
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO local_call_queue (phone_number, batch_id, campaign_id)
             SELECT '98' || lpad(($1 * 100 + n)::text, 8, '0'), $1, $2
               FROM generate_series(1, $3) AS n",
        )
        .bind(batch)
        .bind(id)
        .bind(NUMBERS_PER_BATCH)
        .execute(pool)
        .await
        .unwrap();
    }
    for number in extra {
        sqlx::query("INSERT INTO local_call_queue (phone_number, batch_id, campaign_id) VALUES ($1, $2, $3)")
            .bind(number)
            .bind(first_batch + batches - 1)
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Signs in at `console_url` with `token` through the sign-in form.
async fn sign_in(browser: &Client, console_url: &str, token: &str) {
    browser.goto(&format!("{console_url}/login")).await.unwrap();
    browser
        .form(Locator::Css("#login"))
        .await
        .unwrap()
        .set_by_name("token", token)
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    browser
        .wait()
        .for_element(Locator::Css("table.campaigns"))
        .await
        .unwrap();
}

async fn batches_completed(pool: &PgPool, name: &str) -> bool {
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM call_batches b JOIN campaigns c ON c.id = b.campaign_id
          WHERE c.name = $1 AND b.batch_status IS DISTINCT FROM 'completed'",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap();
    open == 0
}

async fn queue_status_of(pool: &PgPool, number: &str) -> String {
    sqlx::query_scalar("SELECT queue_status FROM local_call_queue WHERE phone_number = $1")
        .bind(number)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_reads_a_campaigns_batches_and_chart_and_keeps_a_number_from_being_called() {
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
        ("CALLBRIDGE_CONSOLE_TOKEN", OPERATOR_TOKEN),
        ("CALLBRIDGE__CONSOLE__SECURE_COOKIE", "false"),
        ("CALLBRIDGE__CONSOLE__REFRESH_MS", "500"),
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

    // `spring` runs to its end; `autumn` waits paused, one of its numbers the one that
    // will ask not to be called.
    campaign(&pool, "spring", "active", 1, 3, &[]).await;
    campaign(&pool, "autumn", "paused", 10, 1, &[OPTED_OUT]).await;
    let submitter = callbridge_submitter::Application::build(&settings.submitter().unwrap())
        .await
        .unwrap();
    tokio::spawn(submitter.run_until_stopped(shutdown.clone()));
    wait_for(
        "every batch of spring completes",
        Duration::from_secs(120),
        async || batches_completed(&pool, "spring").await,
    )
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    // Tall enough for a campaign page's chart and batches in one screenshot.
    browser.set_window_size(1280, 1200).await.unwrap();
    sign_in(&browser, &console_url, OPERATOR_TOKEN).await;

    // From the campaigns list to the campaign's page.
    click(&browser, r#"tr[data-campaign="spring"] td.name a"#).await;
    browser
        .wait()
        .for_element(Locator::Css("table.batches"))
        .await
        .unwrap();
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/campaigns/spring"
    );
    let rows = browser
        .find_all(Locator::Css("table.batches tr[data-batch]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "every batch of the campaign");
    for batch in 1..=3 {
        let cell = |class: &str| format!(r#"tr[data-batch="{batch}"] td.{class}"#);
        let expected = NUMBERS_PER_BATCH.to_string();
        assert_eq!(
            text_of(&browser, &cell("local-total")).await.as_deref(),
            Some(expected.as_str())
        );
        // The centralized system's own counts, from its batch-status, beside them.
        assert_eq!(
            text_of(&browser, &cell("central-status")).await.as_deref(),
            Some("completed"),
            "batch {batch}"
        );
        assert_eq!(
            text_of(&browser, &cell("central-total")).await.as_deref(),
            Some(expected.as_str()),
            "batch {batch}"
        );
    }
    // The outcomes over time: one bar per bucket, the answered calls among them.
    let buckets = browser
        .execute(
            "const svg = document.querySelector('svg.chart');
             return svg ? [Number(svg.getAttribute('data-buckets')),
                           svg.querySelectorAll('g.bucket').length,
                           svg.querySelectorAll('g.bucket rect').length] : null;",
            vec![],
        )
        .await
        .unwrap();
    let buckets: Vec<i64> = serde_json::from_value(buckets).expect("the page has its chart");
    assert!(buckets[0] >= 1, "{buckets:?}");
    assert_eq!(buckets[0], buckets[1], "one bar per bucket: {buckets:?}");
    assert!(buckets[2] >= 1, "the bars have parts: {buckets:?}");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM call_logs WHERE batch_id BETWEEN 1 AND 3
            AND callbridge_call_count_kind(call_status) IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let drawn = browser
        .execute(
            "return Array.from(document.querySelectorAll('svg.chart g.bucket'))
                 .reduce((sum, g) => sum + Number(g.getAttribute('data-total')), 0);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(drawn, json!(ended), "every ended call is in one bucket");
    screenshot(&browser, "pages-01-campaign").await;

    // Someone asks not to be called: added on the do-not-call page.
    click(&browser, r#"header nav a[href="/dnc"]"#).await;
    browser
        .wait()
        .for_element(Locator::Css("#dnc-add"))
        .await
        .unwrap();
    browser
        .form(Locator::Css("#dnc-add"))
        .await
        .unwrap()
        .set_by_name("number", "98765 12345")
        .await
        .unwrap()
        .set_by_name("reason", "asked on the phone not to be called")
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    let result = browser
        .wait()
        .for_element(Locator::Css(r#"#dnc-result[data-listed="true"]"#))
        .await
        .unwrap();
    let text = result.text().await.unwrap();
    assert!(text.contains(OPTED_OUT_E164), "{text}");
    assert!(
        text.contains("asked on the phone not to be called"),
        "{text}"
    );
    screenshot(&browser, "pages-02-dnc-added").await;

    // The campaign that queued the number long before goes on: the number is never sent.
    browser
        .goto(&format!("{console_url}/campaigns/autumn"))
        .await
        .unwrap();
    click(&browser, "div.actions button.resume").await;
    wait_for(
        "autumn's numbers are sent and the opted-out one suppressed",
        Duration::from_secs(60),
        async || {
            queue_status_of(&pool, OPTED_OUT).await == "suppressed"
                && queue_status_of(&pool, "9800001001").await == "submitted"
        },
    )
    .await;
    wait_for(
        "every batch of autumn completes",
        Duration::from_secs(60),
        async || batches_completed(&pool, "autumn").await,
    )
    .await;
    let truth = sim.ground_truth(None);
    assert_eq!(
        truth
            .calls
            .iter()
            .filter(|call| call.batch_id == 10)
            .count(),
        NUMBERS_PER_BATCH as usize,
        "the rest of autumn was called"
    );
    assert!(
        truth
            .calls
            .iter()
            .all(|call| !call.phone_number.ends_with("12345")),
        "the simulator received the opted-out number"
    );
    browser
        .goto(&format!("{console_url}/campaigns/autumn"))
        .await
        .unwrap();
    let legend = text_of(&browser, "ul.legend").await.unwrap_or_default();
    assert!(legend.contains("suppressed 1"), "{legend}");
    screenshot(&browser, "pages-03-suppressed").await;

    // Taken off the list again, from its search result.
    browser
        .goto(&format!("{console_url}/dnc?number=%2B919876512345"))
        .await
        .unwrap();
    click(&browser, r#"#dnc-result form[action="/dnc/remove"] button"#).await;
    browser
        .wait()
        .for_element(Locator::Css(r#"#dnc-result[data-listed="false"]"#))
        .await
        .unwrap();
    screenshot(&browser, "pages-04-dnc-removed").await;
    let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM do_not_call")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(listed, 0);
    let recorded: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, source, role FROM operator_actions WHERE action LIKE 'dnc.%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let console_operator = |action: &str| {
        (
            action.to_owned(),
            "console".to_owned(),
            Some("operator".to_owned()),
        )
    };
    assert_eq!(
        recorded,
        [console_operator("dnc.add"), console_operator("dnc.remove")]
    );

    // The list page with a few entries, for the README.
    sqlx::query(
        "INSERT INTO do_not_call (phone_number, reason, source, added_at)
         SELECT '+9198765' || lpad(n::text, 5, '0'), 'opt-out by SMS', 'import optouts.csv',
                now() - n * INTERVAL '1 hour'
           FROM generate_series(1, 8) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    browser.goto(&format!("{console_url}/dnc")).await.unwrap();
    browser
        .wait()
        .for_element(Locator::Css("table.dnc"))
        .await
        .unwrap();
    screenshot(&browser, "pages-05-dnc").await;
    assert!(browser.get_alert_text().await.is_err(), "a dialog opened");

    browser.close().await.unwrap();
    shutdown.cancel();
}
