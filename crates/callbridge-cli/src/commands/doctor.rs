//! `callbridge doctor`: one line per check, green or red with what to do, covering the
//! guide's "Common Issues" (callbacks not received, database connection, API
//! authentication), or with `--json` one document a script or monitor reads. Exit 0 only
//! when every check passes.
//!
//! Nothing is stored anywhere: the API check reads batch-status, and the signature
//! self-test sends a correctly signed body that fails schema validation, which the
//! ingress refuses before it publishes anything (it checks the signature before the schema).

use std::time::Duration;

use callbridge_runtime::config::{ApiConfig, Settings};
use callbridge_runtime::db::{self, MigrationState};
use callbridge_types::signature::{X_SIGNATURE_HEADER, sign_hex};
use callbridge_types::topology::{
    CALLBACKS_EXCHANGE, DEAD_EXCHANGE, DEAD_QUEUE, OUTCOMES_EXCHANGE, PERSIST_QUEUE,
};
use clap::Args;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use serde::Serialize;

use callbridge_ops::centralized::api_message;

/// No single check waits longer than this for a server.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// The self-test body: signed, but without `event_type`, so a receiver that checks the
/// signature first answers 400 (secrets match) or 401 (they do not), and stores nothing.
pub const SELF_TEST_BODY: &[u8] =
    br#"{"callbridge_doctor":"signature self-test: no event_type, so never stored"}"#;
/// What the self-test signs with to prove the receiver checks signatures at all.
const WRONG_SECRET: &[u8] = b"callbridge-doctor-deliberately-wrong-secret";
/// Tables the services write, and the privileges they need on them.
const TABLE_PRIVILEGES: &[(&str, &str)] = &[
    ("call_logs", "SELECT, INSERT, UPDATE"),
    ("call_batches", "SELECT, INSERT, UPDATE"),
    ("local_call_queue", "SELECT, INSERT, UPDATE"),
    ("call_events", "SELECT, INSERT"),
    ("call_outcome_outbox", "SELECT, INSERT, UPDATE"),
];

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON document once every check has run instead of a line per check:
    /// `{"ok": bool, "checks": [{"name", "status": "pass"|"fail"|"skipped", "detail",
    /// "fix" (only when failed)}]}`. The exit code is the same.
    #[arg(long)]
    pub json: bool,
    /// Also check how batch-status is read: ask the centralized API about BATCH_ID (the
    /// newest batch with submitted rows when none is given), show the answer's shape with
    /// every number masked, and say whether the configured path finds the batch's numbers.
    #[arg(long, value_name = "BATCH_ID", num_args = 0..=1)]
    pub batch_status: Option<Option<i32>>,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    Fail {
        problem: String,
        fix: String,
    },
    /// Could not run because an earlier check failed.
    Skipped(String),
}

pub(crate) fn fail(problem: impl Into<String>, fix: impl Into<String>) -> Outcome {
    Outcome::Fail {
        problem: problem.into(),
        fix: fix.into(),
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut all_passed = true;
    let mut checks = Vec::new();
    let mut report = |name: &str, outcome: Outcome| {
        all_passed &= matches!(outcome, Outcome::Pass(_));
        if args.json {
            checks.push(CheckReport::new(name, outcome));
        } else {
            // Printed as each check ends: the slow ones wait for a server up to CHECK_TIMEOUT.
            println!("{}", line(name, &outcome));
        }
    };

    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            report(
                "configuration",
                fail(error.to_string(), "fix that setting, then run doctor again"),
            );
            for name in [
                "database",
                "broker",
                "API key",
                "callback URL",
                "signature self-test",
            ] {
                report(
                    name,
                    Outcome::Skipped("the configuration does not load".into()),
                );
            }
            print_json(args.json, false, &checks)?;
            std::process::exit(1);
        }
    };
    report("configuration", check_configuration(&settings));
    report("database", check_database(&settings).await);
    report("broker", check_broker(&settings).await);
    report("API key", check_api_key(&settings).await);
    let (reachable, signature) = check_callback(&settings).await;
    report("callback URL", reachable);
    report("signature self-test", signature);
    if let Some(batch_id) = args.batch_status {
        report(
            "batch-status",
            super::doctor_batch_status::check_batch_status(&settings, batch_id).await,
        );
    }

    print_json(args.json, all_passed, &checks)?;
    if all_passed {
        Ok(())
    } else {
        // The lines above already say what is wrong; exit non-zero without another one.
        std::process::exit(1)
    }
}

/// One check in `doctor --json`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub status: &'static str,
    /// What passed, what is wrong, or why the check did not run.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckReport {
    fn new(name: &str, outcome: Outcome) -> CheckReport {
        let (status, detail, fix) = match outcome {
            Outcome::Pass(detail) => ("pass", detail, None),
            Outcome::Fail { problem, fix } => ("fail", problem, Some(fix)),
            Outcome::Skipped(reason) => ("skipped", reason, None),
        };
        CheckReport {
            name: name.to_owned(),
            status,
            detail,
            fix,
        }
    }
}

/// With `--json`, the whole report as one document on stdout.
fn print_json(json: bool, ok: bool, checks: &[CheckReport]) -> anyhow::Result<()> {
    if json {
        let document = serde_json::json!({ "ok": ok, "checks": checks });
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(())
}

fn line(name: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass(detail) => format!("{} {name}: {detail}", console::style("✓").green().bold()),
        Outcome::Fail { problem, fix } => format!(
            "{} {name}: {problem} {} {fix}",
            console::style("✗").red().bold(),
            console::style("→").red()
        ),
        Outcome::Skipped(reason) => {
            format!(
                "{} {name}: skipped ({reason})",
                console::style("-").yellow().bold()
            )
        }
    }
}

/// Every setting the whole system needs, all missing ones at once.
pub fn check_configuration(settings: &Settings) -> Outcome {
    let mut problems = Vec::new();
    if let Err(error) = settings.database() {
        problems.push(error.to_string());
    }
    if let Err(error) = settings.amqp_url() {
        problems.push(error.to_string());
    }
    if let Err(error) = settings.api() {
        problems.push(error.to_string());
    }
    if settings.api.callback_url.is_none() {
        problems.push(
            "Missing required centralized calling configuration: CENTRALIZED_CALLING_CALLBACK_URL"
                .into(),
        );
    }
    if settings.api.account_code.is_none() {
        problems.push(
            "Missing required centralized calling configuration: CENTRALIZED_CALLING_ACCOUNT_CODE"
                .into(),
        );
    }
    if !settings.callback.verification_enabled {
        problems
            .push("CALLBACK_VERIFICATION_ENABLED=false: unsigned callbacks are accepted".into());
    } else if settings.callback.secrets.is_empty() {
        problems.push("Missing required callback configuration: CALLBACK_SECRET_KEY".into());
    }
    if problems.is_empty() {
        Outcome::Pass("every setting is present".into())
    } else {
        fail(
            problems.join("; "),
            "set the variables named (see README: Configuration)",
        )
    }
}

async fn check_database(settings: &Settings) -> Outcome {
    let config = match settings.database() {
        Ok(config) => config,
        Err(error) => return Outcome::Skipped(error.to_string()),
    };
    let identity = config.identity.to_string();
    let connected =
        tokio::time::timeout(CHECK_TIMEOUT, db::connect_pool(config.url.expose(), 1)).await;
    let pool = match connected {
        Ok(Ok(pool)) => pool,
        Ok(Err(error)) => {
            return fail(
                crate::one_line(&error),
                "check CLIENT_CALLING_DB_URL (host, port, user, password, database name), that the server runs and that its firewall and pg_hba.conf let this host in",
            );
        }
        Err(_) => {
            return fail(
                format!(
                    "no answer from {identity} within {}s",
                    CHECK_TIMEOUT.as_secs()
                ),
                "check the host and port in CLIENT_CALLING_DB_URL and the firewall between here and the database",
            );
        }
    };
    let migrations = match db::migration_status(&pool).await {
        Ok(migrations) => migrations,
        Err(error) => {
            return fail(
                crate::one_line(&error),
                "check the database user's permissions",
            );
        }
    };
    let not_applied: Vec<String> = migrations
        .iter()
        .filter(|migration| !matches!(migration.state, MigrationState::Applied { .. }))
        .map(|migration| format!("{:04}", migration.version))
        .collect();
    if !not_applied.is_empty() {
        return fail(
            format!(
                "{identity} is reachable but migrations {} are not applied",
                not_applied.join(", ")
            ),
            "run `callbridge migrate up` (and `callbridge migrate status` for details)",
        );
    }
    let mut missing = Vec::new();
    for (table, privileges) in TABLE_PRIVILEGES {
        let granted: Result<bool, _> = sqlx::query_scalar("SELECT has_table_privilege($1, $2)")
            .bind(table)
            .bind(privileges)
            .fetch_one(&pool)
            .await;
        if !matches!(granted, Ok(true)) {
            missing.push(format!("{privileges} on {table}"));
        }
    }
    pool.close().await;
    if !missing.is_empty() {
        return fail(
            format!("user {} lacks {}", config.identity.user, missing.join("; ")),
            format!(
                "GRANT them to {} (the guide: GRANT ALL PRIVILEGES ON DATABASE …, plus on the tables)",
                config.identity.user
            ),
        );
    }
    Outcome::Pass(format!(
        "{identity} reachable, {} migrations applied, privileges granted",
        migrations.len()
    ))
}

async fn check_broker(settings: &Settings) -> Outcome {
    let url = match settings.amqp_url() {
        Ok(url) => url,
        Err(error) => return Outcome::Skipped(error.to_string()),
    };
    let redacted = callbridge_runtime::amqp::redact_url(url.expose());
    let connection = match tokio::time::timeout(
        CHECK_TIMEOUT,
        callbridge_runtime::amqp::connect(url.expose(), "callbridge-doctor"),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            return fail(
                crate::one_line(&error),
                "check RABBITMQ_URL (host, port, user, password, vhost) and that RabbitMQ runs",
            );
        }
        Err(_) => {
            return fail(
                format!(
                    "no answer from {redacted} within {}s",
                    CHECK_TIMEOUT.as_secs()
                ),
                "check RABBITMQ_URL and the firewall",
            );
        }
    };
    let missing = missing_topology(&connection).await;
    let dead_letters = dead_letter_count(&connection).await;
    connection.close(200, "bye".into()).await.ok();
    match missing {
        Err(error) => fail(
            crate::one_line(&error),
            "check the RabbitMQ user's permissions on the vhost",
        ),
        Ok(missing) if !missing.is_empty() => fail(
            format!("{redacted} is reachable but {} missing", missing.join(", ")),
            "start callbridge-ingress or callbridge-persister once (each declares the topology), or check the vhost in RABBITMQ_URL",
        ),
        Ok(_) => Outcome::Pass(match dead_letters {
            Some(count) if count > 0 => format!(
                "{redacted} reachable, topology present; {count} dead-lettered callbacks waiting (`callbridge dlq list`)"
            ),
            _ => format!("{redacted} reachable, topology present"),
        }),
    }
}

/// Exchanges and queues of the messaging topology that do not exist. Passive declarations
/// only look; a missing one closes its channel, so each gets a channel of its own.
async fn missing_topology(connection: &Connection) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let passive_exchange = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    for (exchange, kind) in [
        (CALLBACKS_EXCHANGE, ExchangeKind::Topic),
        (DEAD_EXCHANGE, ExchangeKind::Fanout),
        (OUTCOMES_EXCHANGE, ExchangeKind::Topic),
    ] {
        let channel = connection.create_channel().await?;
        match channel
            .exchange_declare(
                exchange.into(),
                kind,
                passive_exchange,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) => {
                channel.close(200, "bye".into()).await.ok();
            }
            Err(_) => missing.push(format!("exchange {exchange}")),
        }
    }
    let passive_queue = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for queue in [PERSIST_QUEUE, DEAD_QUEUE] {
        let channel = connection.create_channel().await?;
        match channel
            .queue_declare(queue.into(), passive_queue, FieldTable::default())
            .await
        {
            Ok(_) => {
                channel.close(200, "bye".into()).await.ok();
            }
            Err(_) => missing.push(format!("queue {queue}")),
        }
    }
    Ok(missing)
}

/// How many dead letters wait (`callbridge_ops::dead_letters::count`, what `dlq list`
/// reports), or nothing when that cannot be read.
async fn dead_letter_count(connection: &Connection) -> Option<u32> {
    let channel = connection.create_channel().await.ok()?;
    let count = callbridge_ops::dead_letters::count(&channel).await.ok();
    channel.close(200, "bye".into()).await.ok();
    count
}

/// The key's form first (the guide's "Check API key format"), then a harmless
/// batch-status request: 200 or 404 means the key is accepted.
async fn check_api_key(settings: &Settings) -> Outcome {
    let config: ApiConfig = match settings.api() {
        Ok(config) => config,
        Err(error) => return Outcome::Skipped(error.to_string()),
    };
    let key = config.api_key.expose();
    if key.trim() != key {
        return fail(
            "CENTRALIZED_CALLING_API_KEY has leading or trailing whitespace",
            "remove it (a copy-paste artefact); the API compares the key exactly",
        );
    }
    if key.len() >= 2
        && (key.starts_with('"') && key.ends_with('"')
            || key.starts_with('\'') && key.ends_with('\''))
    {
        return fail(
            "CENTRALIZED_CALLING_API_KEY is wrapped in quotes",
            "remove the quotes (they were taken literally, e.g. from a .env or Kubernetes Secret)",
        );
    }
    let api = match crate::operator::central_api(&config) {
        Ok(api) => api,
        Err(error) => return fail(crate::one_line(&error), "check CENTRALIZED_CALLING_API_KEY"),
    };
    // Batch 0 is never enqueued by callbridge: the answer is most likely a 404, which
    // (like a 200) can only come after the key was accepted.
    match api.batch_status_raw(0).await {
        Ok((200 | 404, _)) => Outcome::Pass(format!("accepted by {}", api.base_url())),
        Ok((status @ (401 | 403), body)) => fail(
            format!(
                "the centralized API refused the key: {status} {}",
                api_message(&body)
            ),
            "check CENTRALIZED_CALLING_API_KEY: the key issued at registration, current (not rotated or expired), for this environment (or CENTRALIZED_CALLING_API_KEY_ENCRYPTED with the right ENCRYPTION_KEY)",
        ),
        Ok((status, body)) => fail(
            format!("batch-status answered {status}: {}", api_message(&body)),
            "check CENTRALIZED_CALLING_BASE_URL (the API root, without /api/v1) and the centralized system's status page",
        ),
        Err(error) => fail(
            format!("could not reach {}: {error}", api.base_url()),
            "check CENTRALIZED_CALLING_BASE_URL and the network/proxy between here and the API",
        ),
    }
}

/// POSTs the self-test body to the callback URL: signed with each configured secret
/// (expect 400 each), then with a wrong one (expect 401). Returns the reachability and
/// the self-test outcomes.
async fn check_callback(settings: &Settings) -> (Outcome, Outcome) {
    let Some(url) = settings.api.callback_url.clone() else {
        let skipped = Outcome::Skipped("CENTRALIZED_CALLING_CALLBACK_URL is not set".into());
        return (skipped.clone(), skipped);
    };
    let secrets: Vec<String> = settings
        .callback
        .secrets
        .iter()
        .map(|secret| secret.expose().to_owned())
        .collect();
    let client = match reqwest::Client::builder()
        .user_agent(concat!("callbridge-doctor/", env!("CARGO_PKG_VERSION")))
        .timeout(CHECK_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            let problem = fail(error.to_string(), "report this");
            return (problem.clone(), problem);
        }
    };
    let post = |secret: &[u8]| {
        client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(X_SIGNATURE_HEADER, sign_hex(secret, SELF_TEST_BODY))
            .body(SELF_TEST_BODY)
            .send()
    };

    let first_secret = secrets
        .first()
        .map(String::as_bytes)
        .unwrap_or(WRONG_SECRET);
    let first = match post(first_secret).await {
        Ok(response) => response,
        Err(error) => {
            let reachable = unreachable(&url, &error);
            return (
                reachable,
                Outcome::Skipped("the callback URL is not reachable".into()),
            );
        }
    };
    let status = first.status().as_u16();
    let reachable = match status {
        404 | 405 => {
            let problem = fail(
                format!("{url} answered {status}: no callback endpoint there"),
                "check the path of CENTRALIZED_CALLING_CALLBACK_URL (the ingress serves POST /callback)",
            );
            return (problem, Outcome::Skipped("no callback endpoint".into()));
        }
        _ => Outcome::Pass(format!("{url} answers (HTTP {status})")),
    };
    if secrets.is_empty() {
        return (
            reachable,
            Outcome::Skipped("no CALLBACK_SECRET_KEY to test".into()),
        );
    }

    let mut verdicts = vec![(
        0usize,
        status,
        first.bytes().await.unwrap_or_default().to_vec(),
    )];
    for (index, secret) in secrets.iter().enumerate().skip(1) {
        match post(secret.as_bytes()).await {
            Ok(response) => {
                let status = response.status().as_u16();
                verdicts.push((
                    index,
                    status,
                    response.bytes().await.unwrap_or_default().to_vec(),
                ));
            }
            Err(error) => {
                return (
                    reachable,
                    fail(crate::error_chain(&error), "run doctor again"),
                );
            }
        }
    }
    for (index, status, body) in verdicts {
        let which = if secrets.len() == 1 {
            "CALLBACK_SECRET_KEY".to_owned()
        } else {
            format!("secret {} of CALLBACK_SECRET_KEY", index + 1)
        };
        match status {
            400 => {}
            401 => {
                return (
                    reachable,
                    fail(
                        format!(
                            "the receiver refused a body signed with {which}: 401 {}",
                            api_message(&body)
                        ),
                        "make CALLBACK_SECRET_KEY equal to the secret the receiver at CENTRALIZED_CALLING_CALLBACK_URL (and the centralized system) uses",
                    ),
                );
            }
            200..=299 => {
                return (
                    reachable,
                    fail(
                        format!("the receiver accepted a callback without event_type ({status})"),
                        "the endpoint does not validate callbacks: point CENTRALIZED_CALLING_CALLBACK_URL at callbridge-ingress",
                    ),
                );
            }
            other => {
                return (
                    reachable,
                    fail(
                        format!(
                            "the receiver answered {other} to a signed test body: {}",
                            api_message(&body)
                        ),
                        "see the receiver's logs; a 503 means it cannot reach RabbitMQ",
                    ),
                );
            }
        }
    }

    // The receiver must also refuse a wrong signature, or verification is off there.
    let signature = match post(WRONG_SECRET).await {
        Ok(response) if response.status().as_u16() == 401 => Outcome::Pass(format!(
            "{} signature{} accepted, a wrong one refused; nothing stored",
            secrets.len(),
            if secrets.len() == 1 { "" } else { "s" }
        )),
        Ok(response) => fail(
            format!(
                "the receiver did not refuse a wrongly signed body (HTTP {})",
                response.status().as_u16()
            ),
            "turn signature verification on at the receiver (CALLBACK_VERIFICATION_ENABLED=true with CALLBACK_SECRET_KEY)",
        ),
        Err(error) => fail(crate::error_chain(&error), "run doctor again"),
    };
    (reachable, signature)
}

/// Why a POST got no HTTP answer, in the guide's terms.
fn unreachable(url: &str, error: &reqwest::Error) -> Outcome {
    let chain = crate::error_chain(error);
    let lowered = chain.to_ascii_lowercase();
    if lowered.contains("certificate") || lowered.contains("tls") || lowered.contains("ssl") {
        fail(
            format!("TLS to {url} failed: {chain}"),
            "install a valid certificate for this host name (not self-signed or expired) on the callback endpoint; the centralized system verifies it too",
        )
    } else if error.is_timeout() {
        fail(
            format!("{url} did not answer within {}s", CHECK_TIMEOUT.as_secs()),
            "check that the callback endpoint runs and that firewalls let the centralized system (and this host) reach it",
        )
    } else {
        fail(
            format!("{url} is not reachable: {chain}"),
            "start callbridge-ingress there, and make CENTRALIZED_CALLING_CALLBACK_URL reachable from the internet (DNS, firewall, Ingress)",
        )
    }
}
