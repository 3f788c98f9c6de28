//! `callbridge doctor` against real components: each of the guide's "Common Issues"
//! (callbacks not received, database connection, API authentication) is produced for
//! real and must be diagnosed on its line, with exit 1; a healthy setup exits 0.

#[path = "support/cli_ingress.rs"]
mod cli_ingress;
#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::process::Output;

use callbridge_runtime::config::TlsFiles;
use callbridge_sim::{SimConfig, Simulator};
use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::topology::PERSIST_QUEUE;
use cli_ingress::Ingress;
use common::*;
use sqlx::{AssertSqlSafe, PgPool};

/// Everything a deployment has, working: database, broker, API (the simulator), and an
/// ingress at the callback URL with the same secret.
struct Setup {
    db: TestDb,
    pool: PgPool,
    vhost: TestVhost,
    sim: Simulator,
    /// Serves the callback URL for as long as the setup lives.
    _ingress: Ingress,
    env: Vec<(String, String)>,
}

impl Setup {
    async fn healthy() -> Setup {
        let (db, pool) = migrated_db().await;
        let vhost = vhost_with_topology().await;
        let sim = Simulator::spawn(SimConfig::for_tests("http://127.0.0.1:9/callback").unwrap())
            .await
            .unwrap();
        let ingress = Ingress::spawn(&vhost.amqp_url(), &[CALLBACK_SECRET], true, None).await;
        let env = vec![
            ("CLIENT_CALLING_DB_URL".to_owned(), db.url().to_owned()),
            ("RABBITMQ_URL".to_owned(), vhost.amqp_url()),
            ("CENTRALIZED_CALLING_BASE_URL".to_owned(), sim.base_url()),
            ("CENTRALIZED_CALLING_API_KEY".to_owned(), API_KEY.to_owned()),
            (
                "CENTRALIZED_CALLING_CALLBACK_URL".to_owned(),
                ingress.url.clone(),
            ),
            (
                "CENTRALIZED_CALLING_ACCOUNT_CODE".to_owned(),
                ACCOUNT_CODE.to_owned(),
            ),
            ("CALLBACK_SECRET_KEY".to_owned(), CALLBACK_SECRET.to_owned()),
        ];
        Setup {
            db,
            pool,
            vhost,
            sim,
            _ingress: ingress,
            env,
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(variable, _)| variable != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    async fn doctor(&self) -> Output {
        self.doctor_with(&[]).await
    }

    async fn doctor_with(&self, flags: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let args: Vec<&str> = std::iter::once("doctor")
            .chain(flags.iter().copied())
            .collect();
        callbridge(&args, &env, None).await
    }
}

/// `doctor --json`'s stdout as the one JSON document it must be.
fn json_report(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON document ({error}):\n{}",
            stdout(output)
        )
    })
}

/// The check called `name` in a `doctor --json` report.
fn json_check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

/// The line of check `name`, asserting it failed (✗) or passed (✓).
fn check_line(output: &Output, name: &str, passed: bool) -> String {
    let text = stdout(output);
    let mark = if passed { "✓" } else { "✗" };
    let line = text
        .lines()
        .find(|line| line.contains(&format!(" {name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"));
    assert!(
        line.starts_with(mark),
        "expected {mark} for {name}:\n{text}"
    );
    line.to_owned()
}

#[tokio::test]
async fn a_healthy_setup_passes_every_check_exits_0_and_stores_nothing() {
    let setup = Setup::healthy().await;

    let output = setup.doctor().await;

    assert_success(&output);
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.lines().all(|line| line.starts_with('✓')), "{text}");
    let signature = check_line(&output, "signature self-test", true);
    assert!(
        signature.contains("a wrong one refused; nothing stored"),
        "{signature}"
    );
    assert_eq!(
        setup.vhost.queue_depth(PERSIST_QUEUE).await.unwrap(),
        0,
        "the self-test body was never published"
    );
    setup.sim.stop().await;
}

#[tokio::test]
async fn a_refused_api_key_names_the_variable() {
    let mut setup = Setup::healthy().await;
    setup.set("CENTRALIZED_CALLING_API_KEY", "expired-key");

    let output = setup.doctor().await;

    assert_eq!(output.status.code(), Some(1));
    let line = check_line(&output, "API key", false);
    assert!(
        line.contains("refused the key: 401 Invalid API key"),
        "{line}"
    );
    assert!(line.contains("check CENTRALIZED_CALLING_API_KEY"), "{line}");
    assert!(
        !line.contains("expired-key"),
        "the key is never printed: {line}"
    );
    check_line(&output, "database", true);
    setup.sim.stop().await;
}

#[tokio::test]
async fn an_api_key_in_quotes_is_a_format_problem() {
    let mut setup = Setup::healthy().await;
    setup.set("CENTRALIZED_CALLING_API_KEY", "\"test-api-key\"");

    let output = setup.doctor().await;

    let line = check_line(&output, "API key", false);
    assert!(line.contains("wrapped in quotes"), "{line}");
    setup.sim.stop().await;
}

#[tokio::test]
async fn a_secret_the_receiver_does_not_share_fails_the_self_test_naming_callback_secret_key() {
    let mut setup = Setup::healthy().await;
    setup.set("CALLBACK_SECRET_KEY", "not-the-receivers-secret");

    let output = setup.doctor().await;

    assert_eq!(output.status.code(), Some(1));
    check_line(&output, "callback URL", true);
    let line = check_line(&output, "signature self-test", false);
    assert!(line.contains("401 Invalid signature"), "{line}");
    assert!(line.contains("make CALLBACK_SECRET_KEY equal"), "{line}");
    setup.sim.stop().await;
}

#[tokio::test]
async fn during_rotation_every_configured_secret_is_tested() {
    let mut setup = Setup::healthy().await;
    setup.set(
        "CALLBACK_SECRET_KEY",
        &format!("{CALLBACK_SECRET},next-secret"),
    );

    let output = setup.doctor().await;

    let line = check_line(&output, "signature self-test", false);
    assert!(
        line.contains("signed with secret 2 of CALLBACK_SECRET_KEY"),
        "{line}"
    );
    setup.sim.stop().await;
}

#[tokio::test]
async fn a_receiver_that_does_not_verify_signatures_fails_the_self_test() {
    let mut setup = Setup::healthy().await;
    let unverified = Ingress::spawn(&setup.vhost.amqp_url(), &[], false, None).await;
    setup.set("CENTRALIZED_CALLING_CALLBACK_URL", &unverified.url);

    let output = setup.doctor().await;

    let line = check_line(&output, "signature self-test", false);
    assert!(
        line.contains("did not refuse a wrongly signed body"),
        "{line}"
    );
    assert!(
        line.contains("CALLBACK_VERIFICATION_ENABLED=true"),
        "{line}"
    );
    setup.sim.stop().await;
}

#[tokio::test]
async fn an_unreachable_callback_url_is_diagnosed_and_the_self_test_skipped() {
    let mut setup = Setup::healthy().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    setup.set(
        "CENTRALIZED_CALLING_CALLBACK_URL",
        &format!("http://127.0.0.1:{closed_port}/callback"),
    );

    let output = setup.doctor().await;

    let line = check_line(&output, "callback URL", false);
    assert!(line.contains("is not reachable"), "{line}");
    assert!(line.contains("start callbridge-ingress there"), "{line}");
    assert!(
        stdout(&output).contains("- signature self-test: skipped"),
        "{}",
        stdout(&output)
    );
    setup.sim.stop().await;
}

#[tokio::test]
async fn a_self_signed_certificate_on_the_callback_url_is_diagnosed() {
    let mut setup = Setup::healthy().await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = TempFile::with_contents("tls.crt", certified.cert.pem().as_bytes());
    let key = TempFile::with_contents("tls.key", certified.signing_key.serialize_pem().as_bytes());
    let tls = TlsFiles {
        cert_path: cert.path().to_owned(),
        key_path: key.path().to_owned(),
    };
    let https = Ingress::spawn(&setup.vhost.amqp_url(), &[CALLBACK_SECRET], true, Some(tls)).await;
    setup.set("CENTRALIZED_CALLING_CALLBACK_URL", &https.url);

    let output = setup.doctor().await;

    let line = check_line(&output, "callback URL", false);
    assert!(line.contains("TLS to https://localhost:"), "{line}");
    assert!(line.to_ascii_lowercase().contains("certificate"), "{line}");
    assert!(line.contains("install a valid certificate"), "{line}");
    setup.sim.stop().await;
}

#[tokio::test]
async fn an_unreachable_database_names_the_connection_string() {
    let mut setup = Setup::healthy().await;
    setup.set(
        "CLIENT_CALLING_DB_URL",
        "postgresql+psycopg://client_user:s3cret@127.0.0.1:1/client_calling_db",
    );

    let output = setup.doctor().await;

    let line = check_line(&output, "database", false);
    assert!(
        line.contains("client_user@127.0.0.1:1/client_calling_db"),
        "{line}"
    );
    assert!(line.contains("check CLIENT_CALLING_DB_URL"), "{line}");
    assert!(!stdout(&output).contains("s3cret"), "the password leaked");
    setup.sim.stop().await;
}

#[tokio::test]
async fn an_unmigrated_database_says_to_run_migrate_up() {
    let mut setup = Setup::healthy().await;
    let empty = TestDb::new().await.unwrap();
    setup.set("CLIENT_CALLING_DB_URL", empty.url());

    let output = setup.doctor().await;

    let line = check_line(&output, "database", false);
    assert!(line.contains("migrations 0001"), "{line}");
    assert!(line.contains("run `callbridge migrate up`"), "{line}");
    setup.sim.stop().await;
}

#[tokio::test]
async fn a_database_user_without_table_privileges_is_told_what_to_grant() {
    let mut setup = Setup::healthy().await;
    let role = format!("cbtest_doctor_{}", std::process::id());
    let admin = setup.pool.clone();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN; GRANT SELECT ON _sqlx_migrations TO {role};"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let url = setup
        .db
        .url()
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    setup.set("CLIENT_CALLING_DB_URL", &url);

    let output = setup.doctor().await;

    let line = check_line(&output, "database", false);
    assert!(
        line.contains(&format!(
            "user {role} lacks SELECT, INSERT, UPDATE on call_logs"
        )),
        "{line}"
    );
    assert!(line.contains("GRANT"), "{line}");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP OWNED BY {role}; DROP ROLE {role};"
    )))
    .execute(&admin)
    .await
    .unwrap();
    setup.sim.stop().await;
}

#[tokio::test]
async fn a_broker_without_the_topology_says_who_declares_it() {
    let mut setup = Setup::healthy().await;
    let bare = TestVhost::new().await;
    setup.set("RABBITMQ_URL", &bare.amqp_url());

    let output = setup.doctor().await;

    let line = check_line(&output, "broker", false);
    assert!(
        line.contains("exchange callbridge.callbacks") && line.contains("queue callbridge.persist"),
        "{line}"
    );
    assert!(
        line.contains("start callbridge-ingress or callbridge-persister once"),
        "{line}"
    );
    setup.sim.stop().await;
}

#[tokio::test]
async fn missing_settings_are_all_named_and_the_dependent_checks_skipped() {
    let output = callbridge(&["doctor"], &[], None).await;

    assert_eq!(output.status.code(), Some(1));
    let line = check_line(&output, "configuration", false);
    for variable in [
        "CENTRALIZED_CALLING_BASE_URL",
        "CENTRALIZED_CALLING_API_KEY",
        "CENTRALIZED_CALLING_CALLBACK_URL",
        "CALLBACK_SECRET_KEY",
    ] {
        assert!(line.contains(variable), "{variable} not named: {line}");
    }
    assert!(
        stdout(&output).contains("- API key: skipped"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn json_reports_every_check_of_a_healthy_setup_as_passed() {
    let setup = Setup::healthy().await;

    let output = setup.doctor_with(&["--json"]).await;

    assert_success(&output);
    let report = json_report(&output);
    assert_eq!(report["ok"], true, "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert!(
        checks.iter().all(|check| check["status"] == "pass"
            && check["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty())
            && check.get("fix").is_none()),
        "{report:#}"
    );
    for name in [
        "configuration",
        "database",
        "broker",
        "API key",
        "callback URL",
        "signature self-test",
    ] {
        json_check(&report, name);
    }
    setup.sim.stop().await;
}

#[tokio::test]
async fn json_reports_a_failed_check_with_its_fix_and_the_skipped_ones_and_exits_1() {
    let output = callbridge(&["doctor", "--json"], &[], None).await;

    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    assert_eq!(report["ok"], false, "{report:#}");
    let configuration = json_check(&report, "configuration");
    assert_eq!(configuration["status"], "fail", "{report:#}");
    assert!(
        configuration["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("CALLBACK_SECRET_KEY")),
        "{report:#}"
    );
    assert!(
        configuration["fix"]
            .as_str()
            .is_some_and(|fix| !fix.is_empty()),
        "{report:#}"
    );
    let api_key = json_check(&report, "API key");
    assert_eq!(api_key["status"], "skipped", "{report:#}");
    assert!(api_key.get("fix").is_none(), "{report:#}");
}

/// Batch 41's numbers, accepted by the simulator and `submitted` in the local queue, as
/// after a real submission.
async fn submitted_batch(setup: &Setup) -> Vec<String> {
    let numbers: Vec<String> = (0..3).map(|n| format!("98765432{n:02}")).collect();
    let items: Vec<serde_json::Value> = numbers
        .iter()
        .map(|number| serde_json::json!({ "phone_number": number }))
        .collect();
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/{}",
            setup.sim.base_url(),
            callbridge_sim::INSERT_PATH
        ))
        .header("X-API-KEY", API_KEY)
        .json(&serde_json::json!({"batch_id": 41, "data": items}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    sqlx::query(
        "INSERT INTO local_call_queue (phone_number, batch_id, queue_status, submitted_at)
         SELECT number, 41, 'submitted', now() FROM unnest($1::text[]) AS t(number)",
    )
    .bind(&numbers)
    .execute(&setup.pool)
    .await
    .unwrap();
    numbers
}

#[tokio::test]
async fn batch_status_check_passes_with_the_right_path_and_masks_every_number() {
    let mut setup = Setup::healthy().await;
    setup
        .sim
        .patch_knobs(&serde_json::json!({"batch_status_layout": "calls"}))
        .unwrap();
    setup.set(
        "CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBERS_PATH",
        "/data/calls/*/phone_number",
    );
    let numbers = submitted_batch(&setup).await;

    // The newest submitted batch, when none is named.
    let output = setup.doctor_with(&["--batch-status"]).await;

    assert_success(&output);
    let line = check_line(&output, "batch-status", true);
    assert!(
        line.contains("batch 41") && line.contains("calls"),
        "{line}"
    );
    let text = stdout(&output);
    for number in &numbers {
        assert!(!text.contains(&number[2..]), "unmasked number in:\n{text}");
    }
    setup.sim.stop().await;
}

#[tokio::test]
async fn batch_status_check_with_a_wrong_path_fails_naming_the_setting() {
    let setup = Setup::healthy().await;
    setup
        .sim
        .patch_knobs(&serde_json::json!({"batch_status_layout": "queue"}))
        .unwrap();
    let numbers = submitted_batch(&setup).await;

    let output = setup.doctor_with(&["--batch-status", "41"]).await;

    assert_eq!(output.status.code(), Some(1));
    let line = check_line(&output, "batch-status", false);
    let text = stdout(&output);
    assert!(
        text.contains("CALLBRIDGE__SUBMITTER__BATCH_STATUS_NUMBERS_PATH"),
        "{text}"
    );
    assert!(
        line.contains("queue"),
        "the answer's shape is shown: {line}"
    );
    for number in &numbers {
        assert!(!text.contains(&number[2..]), "unmasked number in:\n{text}");
    }
    setup.sim.stop().await;
}
