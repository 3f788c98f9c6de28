//! Secrets never leak into logs, metrics or error bodies: a full run — campaign queued,
//! submitted to the simulator (first with the key refused, then accepted), calls placed,
//! signed callbacks received by the ingress and stored by the persister, plus refused
//! callbacks and a poison message — logged at info level through the production telemetry
//! stack, and then every log line, every metrics page, every readiness answer and every
//! error body is searched for the API key, the callback secret and the full phone
//! numbers.

#[path = "submitter_common/mod.rs"]
mod common;

use std::time::Duration;

use callbridge_runtime::config::{LogFormat, Settings, TelemetrySettings};
use callbridge_runtime::telemetry::init_telemetry;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::signature::{sign_hex, sign_standard};
use callbridge_types::topology::{CALLBACKS_EXCHANGE, DEAD_QUEUE, ERROR_HEADER};
use common::{ACCOUNT_CODE, harness};
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Distinctive values, so a match can only be a leak.
const API_KEY: &str = "ak-LEAKPROBE-5f0c9e27d1b84a6c";
const CALLBACK_SECRET: &str = "cs-LEAKPROBE-93be01d4c7a2f865";
/// The secret being rotated out, configured beside the current one.
const OLD_CALLBACK_SECRET: &str = "cs-LEAKPROBE-old-7a61e0c2";
/// Bounds waiting for the run to finish; reaching it is the failure.
const PATIENCE: Duration = Duration::from_secs(120);
const CALLS: usize = 12;

fn campaign_numbers() -> Vec<String> {
    (0..CALLS).map(|n| format!("+1555017{n:04}")).collect()
}

/// Everything a person or a scraper can read, gathered as the run goes.
#[derive(Default)]
struct Observed {
    texts: Vec<(String, String)>,
}

impl Observed {
    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.texts.push((source.into(), text.into()));
    }

    async fn get(&mut self, source: &str, url: String) -> u16 {
        let response = reqwest::get(url).await.expect("service answers");
        let status = response.status().as_u16();
        self.add(source, response.text().await.unwrap());
        status
    }
}

/// A callback the ingress must refuse, and why it is sent.
struct RefusedCallback {
    case: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl RefusedCallback {
    fn unsigned(case: &'static str, body: &str) -> RefusedCallback {
        RefusedCallback {
            case,
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }

    fn signed_with(case: &'static str, body: &str, secret: &str) -> RefusedCallback {
        RefusedCallback {
            case,
            body: body.to_owned(),
            headers: vec![("X-Signature", sign_hex(secret.as_bytes(), body.as_bytes()))],
        }
    }
}

async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let waited = tokio::time::timeout(PATIENCE, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_run_leaks_neither_secret_nor_a_full_phone_number() {
    let log_file = std::env::temp_dir().join(format!(
        "callbridge-no-secret-leaks-{}.log",
        uuid::Uuid::new_v4()
    ));
    let telemetry = init_telemetry(
        "no-secret-leaks",
        &TelemetrySettings {
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            log_file: Some(log_file.clone()),
            ..TelemetrySettings::default()
        },
    )
    .expect("telemetry starts");
    let mut observed = Observed::default();
    let numbers = campaign_numbers();

    // The centralized system (simulator), the broker, and the three services, each
    // configured from the environment a deployment would set.
    let h = harness(json!({"callback_max_attempts": 10, "reject_all_keys": true})).await;
    h.sim.set_api_key(API_KEY);
    let vhost = TestVhost::new().await;
    let env = [
        ("CLIENT_CALLING_DB_URL", h.db.url().to_owned()),
        ("RABBITMQ_URL", vhost.amqp_url()),
        (
            "CALLBACK_SECRET_KEY",
            format!("{OLD_CALLBACK_SECRET},{CALLBACK_SECRET}"),
        ),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE.to_owned()),
        ("CENTRALIZED_CALLING_API_KEY", API_KEY.to_owned()),
        ("CENTRALIZED_CALLING_BASE_URL", h.sim.base_url()),
        ("INGRESS_BIND", "127.0.0.1:0".to_owned()),
        ("PERSISTER_BIND", "127.0.0.1:0".to_owned()),
        ("CALLBRIDGE__PERSISTER__BATCH_LINGER_MS", "20".to_owned()),
    ];
    let settings = Settings::load_from(env.clone()).expect("settings load");
    for (name, debug) in [
        ("settings", format!("{settings:?}")),
        (
            "ingress config",
            format!("{:?}", settings.ingress().unwrap()),
        ),
        (
            "persister config",
            format!("{:?}", settings.persister().unwrap()),
        ),
    ] {
        observed.add(format!("Debug of the {name}"), debug);
    }

    let ingress = callbridge_ingress::Application::build(settings.ingress().unwrap())
        .await
        .expect("ingress builds");
    let ingress_url = format!("http://127.0.0.1:{}", ingress.port());
    let stop = CancellationToken::new();
    let ingress = tokio::spawn(ingress.run_until_stopped(stop.clone()));
    h.sim.set_callback(
        Some(format!("{ingress_url}/callback").parse().unwrap()),
        Some(CALLBACK_SECRET),
    );
    let persister = callbridge_persister::Persister::build(settings.persister().unwrap())
        .await
        .expect("persister builds");
    let persister_url = format!("http://{}", persister.health_addr());
    let persister = tokio::spawn(persister.run_until_stopped(stop.clone()));
    let submitter_config = h.config(&[("CENTRALIZED_CALLING_API_KEY", API_KEY)]);
    observed.add(
        "Debug of the submitter config",
        format!("{submitter_config:?}"),
    );
    let submitter = callbridge_submitter::Application::build(&submitter_config)
        .await
        .expect("submitter builds");
    let submitter_url = format!("http://{}", submitter.health_addr());
    let submitter = tokio::spawn(submitter.run_until_stopped(stop.clone()));

    // The key is refused first: the submitter pauses and says so, without the key.
    h.enqueue(7001, &numbers).await;
    wait_until("the submitter pauses on the refused key", || async {
        reqwest::get(format!("{submitter_url}/readyz"))
            .await
            .is_ok_and(|response| response.status() == 503)
    })
    .await;
    observed
        .get(
            "submitter /readyz while paused",
            format!("{submitter_url}/readyz"),
        )
        .await;
    h.sim
        .patch_knobs(&json!({"reject_all_keys": false}))
        .unwrap();

    // Refused callbacks, each carrying a campaign number, while the run goes on.
    let number = &numbers[0];
    let valid = json!({"event_type": "call_completed", "batch_id": 7001, "phone_number": number})
        .to_string();
    let wrong_type = format!(
        r#"{{"event_type":"call_completed","batch_id":7001,"phone_number":{}}}"#,
        &number[1..]
    );
    let too_long = json!({
        "event_type": "call_completed",
        "batch_id": 7001,
        "phone_number": format!("{number}{number}"),
    })
    .to_string();
    let not_json = format!("{{\"phone_number\": \"{number}\", oops");
    let refused = [
        RefusedCallback::unsigned("unsigned", &valid),
        RefusedCallback::signed_with("signed with another secret", &valid, "not-the-secret"),
        RefusedCallback {
            case: "Standard Webhooks outside the window",
            body: valid.clone(),
            headers: vec![
                ("webhook-id", "msg_1".to_owned()),
                ("webhook-timestamp", "1000".to_owned()),
                (
                    "webhook-signature",
                    sign_standard(CALLBACK_SECRET.as_bytes(), "msg_1", 1000, valid.as_bytes()),
                ),
            ],
        },
        RefusedCallback::signed_with(
            "phone number of the wrong type",
            &wrong_type,
            CALLBACK_SECRET,
        ),
        RefusedCallback::signed_with("phone number too long", &too_long, CALLBACK_SECRET),
        RefusedCallback::signed_with("not JSON around a number", &not_json, CALLBACK_SECRET),
    ];
    let client = reqwest::Client::new();
    for callback in refused {
        let mut request = client
            .post(format!("{ingress_url}/callback"))
            .body(callback.body);
        for (name, value) in callback.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{}: {status}", callback.case);
        observed.add(
            format!("ingress error body ({})", callback.case),
            response.text().await.unwrap(),
        );
    }

    // A poison message carrying a number: an envelope from a newer producer, which this
    // consumer cannot read, so it is dead-lettered with the reason as a header.
    let connection = Connection::connect(&vhost.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            CALLBACKS_EXCHANGE.into(),
            "callback.call_completed".into(),
            BasicPublishOptions::default(),
            json!({"schema_version": 2, "event_id": "poison-1", "event": {"phone_number": number}})
                .to_string()
                .as_bytes(),
            BasicProperties::default().with_message_id("poison-1".into()),
        )
        .await
        .unwrap();

    // The run completes: every call reaches a terminal status in call_logs.
    wait_until("every call is stored with its outcome", || async {
        let terminal: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM call_logs WHERE batch_id = 7001
                AND call_status IN ('completed','failed','busy','no_answer','timeout')",
        )
        .fetch_one(&h.pool)
        .await
        .unwrap();
        terminal == CALLS as i64
    })
    .await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT phone_number FROM call_logs WHERE batch_id = 7001")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        stored.len(),
        CALLS,
        "the numbers did flow through every service"
    );

    for (source, url) in [
        ("ingress /metrics", format!("{ingress_url}/metrics")),
        ("ingress /readyz", format!("{ingress_url}/readyz")),
        ("persister /metrics", format!("{persister_url}/metrics")),
        ("persister /readyz", format!("{persister_url}/readyz")),
        ("submitter /metrics", format!("{submitter_url}/metrics")),
        ("submitter /readyz", format!("{submitter_url}/readyz")),
    ] {
        observed.get(source, url).await;
    }

    // What `callbridge dlq list` would show an operator for the poison message.
    wait_until("the poison message is dead-lettered", || async {
        vhost
            .queue(DEAD_QUEUE)
            .await
            .is_ok_and(|queue| queue["messages"].as_u64() == Some(1))
    })
    .await;
    // The persister counts a dead letter and logs it in one step after the broker's
    // confirm; stopping before that step would leave the log without it.
    wait_until(
        "the persister has counted and logged the dead letter",
        || async {
            let metrics = match reqwest::get(format!("{persister_url}/metrics")).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            metrics.contains("persister_dead_letters_total{")
        },
    )
    .await;
    let dead = channel
        .basic_get(DEAD_QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the dead letter is there");
    let error_header = dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| match headers.inner().get(ERROR_HEADER) {
            Some(AMQPValue::LongString(text)) => {
                Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
            }
            _ => None,
        })
        .expect("the dead letter says why, as text");
    observed.add("the dead letter's error header", error_header);

    stop.cancel();
    for service in [ingress, persister, submitter] {
        service.await.unwrap().expect("service stops cleanly");
    }
    connection.close(200, "done".into()).await.ok();
    // Dropping the guard flushes the log file.
    drop(telemetry);
    let logs = std::fs::read_to_string(&log_file).expect("the run wrote its log file");
    std::fs::remove_file(&log_file).ok();
    observed.add(format!("log file {}", log_file.display()), logs);
    assert_the_run_was_observed(&observed);

    let mut secrets = vec![
        ("the API key", API_KEY.to_owned()),
        ("the callback secret", CALLBACK_SECRET.to_owned()),
        ("the old callback secret", OLD_CALLBACK_SECRET.to_owned()),
    ];
    for number in &numbers {
        secrets.push(("a full phone number", number.clone()));
        secrets.push((
            "a full phone number",
            number.trim_start_matches('+').to_owned(),
        ));
    }
    let mut leaks = Vec::new();
    for (source, text) in &observed.texts {
        for (what, secret) in &secrets {
            for line in text.lines().filter(|line| line.contains(secret.as_str())) {
                leaks.push(format!("{what} in {source}: {line:.300}"));
            }
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
}

/// The search proves nothing unless it looked at the run: the texts must show what
/// happened, including the moments most likely to leak (the refused key, refused
/// callbacks, the dead letter).
fn assert_the_run_was_observed(observed: &Observed) {
    let text_of = |source: &str| {
        observed
            .texts
            .iter()
            .filter(|(name, _)| name.starts_with(source))
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (source, expected) in [
        ("log file", "ingress listening"),
        ("log file", "callback refused"),
        ("log file", "rejects CENTRALIZED_CALLING_API_KEY"),
        ("log file", "dead-lettered"),
        ("the dead letter's error header", "envelope"),
        (
            "submitter /readyz while paused",
            "CENTRALIZED_CALLING_API_KEY",
        ),
        (
            "ingress error body (signed with another secret)",
            "Invalid signature",
        ),
        (
            "ingress error body (phone number of the wrong type)",
            "phone_number",
        ),
        ("ingress /metrics", "callbacks_total"),
        ("Debug of the settings", "REDACTED"),
    ] {
        assert!(
            text_of(source).contains(expected),
            "{source} lacks {expected:?}: is it captured?\n{:.2000}",
            text_of(source)
        );
    }
}
