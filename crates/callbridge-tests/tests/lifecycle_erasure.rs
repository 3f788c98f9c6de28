//! `callbridge erase --phone NUMBER` against real Postgres and RabbitMQ: afterwards a
//! `pg_dump` of the database and every dead letter hold the number in none of its forms,
//! while row counts, the batches' figures and the number's opt-out stay; a waiting row of
//! it is never sent; and without the erasure key nothing is changed.

#[path = "../../callbridge-cli/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use callbridge_persister::store::{IncomingEvent, store_batch};
use callbridge_runtime::amqp::{Outgoing, open_confirmed_channel, publish_confirmed};
use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::envelope::Envelope;
use callbridge_types::erasure::HmacPads;
use callbridge_types::event::validate_callback;
use callbridge_types::topology::{DEAD_QUEUE, ERROR_HEADER};
use chrono::Utc;
use common::*;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use sqlx::PgPool;

const ERASURE_KEY: &str = "test-erasure-key-0123456789";
/// The person whose number is erased, as each place writes it.
const NATIONAL: &str = "9876543210";
const E164: &str = "+919876543210";
const SPACED: &str = "98765 43210";
/// Another person, who stays.
const OTHER: &str = "9812345678";

fn env<'a>(db: &'a TestDb, vhost_url: &'a str, key: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CLIENT_CALLING_DB_URL", db.url()),
        ("RABBITMQ_URL", vhost_url),
        ("CENTRALIZED_CALLING_ACCOUNT_CODE", ACCOUNT_CODE),
        ("CALLBRIDGE__NUMBERS__DEFAULT_REGION", "IN"),
        ("USER", "os-user"),
    ];
    if let Some(key) = key {
        env.push(("CALLBRIDGE__LIFECYCLE__ERASURE_KEY", key));
    }
    env
}

async fn store(pool: &PgPool, event_id: &str, payload: Value) {
    let event = validate_callback(payload.to_string().as_bytes(), ACCOUNT_CODE).unwrap();
    let incoming = IncomingEvent {
        envelope: Envelope::new(event_id.to_owned(), Utc::now(), event, &payload),
        trace_id: None,
    };
    store_batch(pool, &[&incoming], Utc::now()).await.unwrap();
}

async fn run(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// The person's calls and rows, and another person's beside them, as the services and
/// the CLI write them:
/// - batch 1: both numbers sent; the person's call completed (custom data quoting the
///   number), the other's busy, the other's queue row mentioning the person as a contact;
/// - batch 2: a redial of the person, waiting;
/// - batch 4: a call of the person still going on (started, no outcome yet);
/// - the person on the do-not-call list (its `operator_actions` row names the number);
/// - two dead letters, the person's (its error header quoting the number) and the other's.
async fn seed(pool: &PgPool, db: &TestDb, vhost: &TestVhost) {
    run(
        pool,
        "INSERT INTO call_batches (batch_id, accountcode, total_calls, batch_status)
         VALUES (1, 'SIM001', 2, 'submitted'), (2, 'SIM001', 0, 'pending'),
                (4, 'SIM001', 1, 'submitted')",
    )
    .await;
    run(
        pool,
        r#"INSERT INTO local_call_queue (phone_number, phone_e164, batch_id, custom_data, queue_status)
           VALUES ('9876543210', '+919876543210', 1, '{"name": "Asha"}', 'submitted'),
                  ('9812345678', '+919812345678', 1, '{"alt_contact": "+91 98765 43210"}', 'submitted'),
                  ('9876543210', '+919876543210', 2, '{"name": "Asha"}', 'pending'),
                  ('9876543210', '+919876543210', 4, '{"name": "Asha"}', 'submitted')"#,
    )
    .await;
    store(pool, "x-1", json!({"event_type": "call_started", "call_id": "x-call", "batch_id": 1, "phone_number": NATIONAL})).await;
    store(pool, "x-2", json!({"event_type": "call_completed", "call_id": "x-call", "batch_id": 1, "phone_number": NATIONAL, "duration": 42, "custom_data": {"ref": format!("callback to {SPACED}")}})).await;
    store(pool, "o-1", json!({"event_type": "call_failed", "call_id": "o-call", "batch_id": 1, "phone_number": OTHER, "call_status": "busy"})).await;
    store(pool, "x-3", json!({"event_type": "call_started", "call_id": "x-live", "batch_id": 4, "phone_number": E164})).await;

    let added = callbridge(
        &["dnc", "add", E164, "--reason", "asked to stop"],
        &env(db, &vhost.amqp_url(), None),
        None,
    )
    .await;
    assert_success(&added);

    let connection = callbridge_runtime::amqp::connect(&vhost.amqp_url(), "erasure-test")
        .await
        .unwrap();
    let channel = open_confirmed_channel(&connection).await.unwrap();
    for (message_id, number, error) in [
        (
            "dead-x",
            NATIONAL,
            format!("call_logs refused phone_number {SPACED}"),
        ),
        ("dead-o", OTHER, "call_logs refused the row".to_owned()),
    ] {
        let body = json!({"schema_version": 1, "event_id": message_id,
                          "received_at": "2026-12-01T10:00:00Z",
                          "event": {"call_id": message_id, "phone_number": number}})
        .to_string();
        let headers: FieldTable = [(
            ERROR_HEADER.into(),
            AMQPValue::LongString(LongString::from(error)),
        )]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
        let message = Outgoing {
            exchange: "",
            routing_key: DEAD_QUEUE,
            body: body.as_bytes(),
            properties: BasicProperties::default()
                .with_message_id(message_id.into())
                .with_headers(headers),
            mandatory: true,
        };
        publish_confirmed(&channel, message, Duration::from_secs(10))
            .await
            .unwrap();
    }
    connection.close(200, "bye".into()).await.ok();
}

/// Every dead letter's body and headers, as text, once the two seeded ones are both
/// ready again (a message another connection returned may take a moment to be);
/// each goes back to the queue.
async fn dead_letters(vhost: &TestVhost) -> Vec<String> {
    let mut letters = Vec::new();
    for _ in 0..50 {
        letters = look_at_dead_letters(vhost).await;
        if letters.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    letters
}

async fn look_at_dead_letters(vhost: &TestVhost) -> Vec<String> {
    let connection = callbridge_runtime::amqp::connect(&vhost.amqp_url(), "erasure-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut letters = Vec::new();
    let mut last = None;
    while let Some(message) = channel
        .basic_get(DEAD_QUEUE.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        let delivery = &message.delivery;
        // Each text header as text; not the delivery count, which every look raises.
        let headers: Vec<String> = delivery
            .properties
            .headers()
            .as_ref()
            .map(|headers| {
                headers
                    .inner()
                    .iter()
                    .filter_map(|(name, value)| match value {
                        AMQPValue::LongString(text) => Some(format!(
                            "{name}={}",
                            String::from_utf8_lossy(text.as_bytes())
                        )),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        letters.push(format!(
            "{} {:?} {headers:?}",
            String::from_utf8_lossy(&delivery.data),
            delivery.properties.message_id(),
        ));
        last = Some(delivery.delivery_tag);
    }
    if let Some(tag) = last {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .unwrap();
    }
    connection.close(200, "bye".into()).await.ok();
    letters.sort();
    letters
}

/// Rows per table of the public schema.
async fn row_counts(pool: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = Vec::new();
    for table in tables {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(pool)
                .await
                .unwrap();
        counts.push((table, count));
    }
    counts
}

/// Each batch's figures, and what call_logs says they should be.
async fn batch_figures(pool: &PgPool) -> Vec<(i32, i32, i32, i32, String, i64, i64)> {
    sqlx::query_as(
        "SELECT b.batch_id, b.total_calls, b.completed_calls, b.failed_calls, b.batch_status,
                (SELECT count(*) FROM call_logs l
                  WHERE l.batch_id = b.batch_id AND l.call_status = 'completed'),
                (SELECT count(*) FROM call_logs l
                  WHERE l.batch_id = b.batch_id
                    AND l.call_status IN ('failed', 'busy', 'no_answer', 'timeout', 'expired'))
           FROM call_batches b ORDER BY b.batch_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn pg_dump(db: &TestDb) -> String {
    let output = std::process::Command::new("pg_dump")
        .args(["--no-owner", "--dbname", db.url()])
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // pg_dump brackets its output with a random \restrict key, different every run.
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where `text` still holds the person's number, in any form seeded.
fn forms_in(text: &str) -> Vec<&'static str> {
    [NATIONAL, SPACED, "98765-43210"]
        .into_iter()
        .filter(|form| text.contains(form))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_number_is_nowhere_while_counts_figures_and_its_opt_out_stay() {
    let (db, pool) = migrated_db().await;
    let vhost = vhost_with_topology().await;
    seed(&pool, &db, &vhost).await;
    assert_eq!(
        forms_in(&pg_dump(&db)).len(),
        2,
        "the seed holds the number as digits and spaced (else the dump check below proves nothing)"
    );
    let counts_before = row_counts(&pool).await;
    let figures_before = batch_figures(&pool).await;
    let letters_before = dead_letters(&vhost).await;
    assert_eq!(letters_before.len(), 2, "{letters_before:?}");

    let url = vhost.amqp_url();
    let erase_args = [
        "erase",
        "--phone",
        "+91 98765 43210",
        "--yes",
        "--json",
        "--actor",
        "dpo",
    ];
    let erased = callbridge(&erase_args, &env(&db, &url, Some(ERASURE_KEY)), None).await;
    assert_success(&erased);
    let report: Value = serde_json::from_str(&stdout(&erased)).unwrap();
    let stand_in = report["stand_in"].as_str().unwrap().to_owned();
    assert!(
        stand_in.starts_with("erased:") && stand_in.len() == 20,
        "{report}"
    );
    assert_eq!(
        report["tables"],
        json!({"call_logs": 2, "call_events": 3, "call_outcome_outbox": 1,
               "local_call_queue": 4, "do_not_call": 1, "operator_actions": 1}),
        "{report}"
    );
    assert_eq!(report["suppressed_rows"], 1, "{report}");
    assert_eq!(report["dead_letters"], 1, "{report}");
    assert_eq!(report["calls_in_flight"], 1, "the started call: {report}");

    // Nowhere: not in the database, not in a dead letter.
    let dump = pg_dump(&db);
    assert_eq!(
        forms_in(&dump),
        Vec::<&str>::new(),
        "the dump still holds the number"
    );
    assert!(!dump.contains(E164));
    assert!(dump.contains(&stand_in));
    let letters = dead_letters(&vhost).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(forms_in(letter), Vec::<&str>::new(), "{letter}");
    }
    assert!(
        letters.iter().any(|letter| letter.contains(OTHER)),
        "{letters:?}"
    );

    // Counts: every table as before, plus the one audit row, which names no number.
    let mut expected = counts_before.clone();
    for (table, count) in &mut expected {
        if table == "operator_actions" {
            *count += 1;
        }
    }
    assert_eq!(row_counts(&pool).await, expected);
    let (action, actor, target): (String, String, Value) = sqlx::query_as(
        "SELECT action, actor, target FROM operator_actions ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((action.as_str(), actor.as_str()), ("number.erase", "dpo"));
    assert_eq!(target, json!({"stand_in": stand_in}));

    // Figures: the batches as before, except batch 2, whose only row (the waiting redial)
    // will never be sent: it ends cancelled; every batch's counters are call_logs'.
    let figures = batch_figures(&pool).await;
    for (before, after) in figures_before.iter().zip(&figures) {
        if before.0 == 2 {
            assert_eq!(after.4, "cancelled", "{after:?}");
        } else {
            assert_eq!(before, after);
        }
        assert_eq!(
            (i64::from(after.2), i64::from(after.3)),
            (after.5, after.6),
            "{after:?}"
        );
    }
    let redial: (String, String) = sqlx::query_as(
        "SELECT queue_status, phone_number FROM local_call_queue WHERE batch_id = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(redial, ("suppressed".to_owned(), stand_in.clone()));

    // Erasing again finds nothing left.
    let again = callbridge(&erase_args, &env(&db, &url, Some(ERASURE_KEY)), None).await;
    assert_success(&again);
    let again: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(again["stand_in"], stand_in);
    assert_eq!(
        again["tables"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .sum::<u64>(),
        0,
        "{again}"
    );
    assert_eq!(again["dead_letters"], 0);

    // A submitter without the key could not recognise the erased opt-out: it does not
    // start, and says which setting it needs.
    let submitter = tokio::process::Command::new(callbridge_testkit::binary::workspace_binary(
        "callbridge-submitter",
        "callbridge-submitter",
    ))
    .env_clear()
    .env("CLIENT_CALLING_DB_URL", db.url())
    .env("CENTRALIZED_CALLING_BASE_URL", "http://127.0.0.1:9")
    .env("CENTRALIZED_CALLING_API_KEY", "k")
    .env("SUBMITTER_BIND", "127.0.0.1:0")
    .output();
    let submitter = tokio::time::timeout(Duration::from_secs(60), submitter)
        .await
        .expect("the submitter stops by itself")
        .unwrap();
    assert!(!submitter.status.success());
    let stderr = String::from_utf8_lossy(&submitter.stderr);
    assert!(
        stderr.contains("CALLBRIDGE__LIFECYCLE__ERASURE_KEY"),
        "{stderr}"
    );

    // The opt-out stays: the list holds the stand-in, which Postgres computes as the CLI
    // does, and the number enqueued again is suppressed by the submitter's claim when it
    // has the key, while a number not listed beside it goes out.
    let pads = HmacPads::new(ERASURE_KEY.as_bytes());
    let in_sql: String = sqlx::query_scalar("SELECT callbridge_erased_stand_in($1, $2, $3)")
        .bind(E164)
        .bind(&pads.inner)
        .bind(&pads.outer)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(in_sql, stand_in);
    let listed: Vec<String> = sqlx::query_scalar("SELECT phone_number FROM do_not_call")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&stand_in));
    run(
        &pool,
        "INSERT INTO local_call_queue (phone_number, phone_e164, batch_id, queue_status)
         VALUES ('9876543210', '+919876543210', 5, 'pending'),
                ('9811111111', NULL, 5, 'pending')",
    )
    .await;
    let claimed = callbridge_submitter::store::claim_due_rows(
        &pool,
        "erasure-test",
        100,
        Duration::from_secs(120),
        Utc::now(),
        Some(91),
        Some(&pads),
    )
    .await
    .unwrap();
    let outcome: Vec<(String, bool)> = claimed
        .iter()
        .map(|row| (row.phone_number.clone(), row.suppressed))
        .collect();
    assert_eq!(
        outcome,
        [
            ("9876543210".to_owned(), true),
            ("9811111111".to_owned(), false)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_refuses_without_the_erasure_key_and_changes_nothing() {
    let (db, pool) = migrated_db().await;
    let vhost = vhost_with_topology().await;
    seed(&pool, &db, &vhost).await;
    let dump = pg_dump(&db);
    let letters = dead_letters(&vhost).await;

    let url = vhost.amqp_url();
    let refused = callbridge(
        &["erase", "--phone", E164, "--yes"],
        &env(&db, &url, None),
        None,
    )
    .await;
    let line = one_line_failure(&refused);
    assert!(
        line.contains("CALLBRIDGE__LIFECYCLE__ERASURE_KEY"),
        "{line}"
    );
    assert!(line.contains("nothing was changed"), "{line}");
    let not_a_number = callbridge(
        &["erase", "--phone", "12", "--yes"],
        &env(&db, &url, Some(ERASURE_KEY)),
        None,
    )
    .await;
    assert!(one_line_failure(&not_a_number).contains("--phone"));
    let declined = callbridge(
        &["erase", "--phone", E164],
        &env(&db, &url, Some(ERASURE_KEY)),
        Some("n\n"),
    )
    .await;
    assert!(one_line_failure(&declined).contains("nothing was changed"));
    // A database that does not answer stops it before a dead letter is touched.
    let mut unreachable = env(&db, &url, Some(ERASURE_KEY));
    unreachable[0] = (
        "CLIENT_CALLING_DB_URL",
        "postgres://postgres@127.0.0.1:1/nowhere",
    );
    let no_database = callbridge(&["erase", "--phone", E164, "--yes"], &unreachable, None).await;
    assert!(!no_database.status.success());

    assert_eq!(pg_dump(&db), dump);
    assert_eq!(dead_letters(&vhost).await, letters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_republished_stays_and_the_database_is_unchanged() {
    let (db, pool) = migrated_db().await;
    let vhost = vhost_with_topology().await;
    seed(&pool, &db, &vhost).await;
    let dump = pg_dump(&db);
    let letters = dead_letters(&vhost).await;
    // The dead queue refuses every new message (a length limit of 0 that rejects
    // publishes; the messages it holds stay): the scrubbed copy of the person's dead
    // letter cannot be published.
    vhost
        .management_put(
            "policies/{vhost}/dead-queue-full",
            json!({"pattern": "^callbridge\\.dead$", "apply-to": "queues",
                   "definition": {"max-length": 0, "overflow": "reject-publish"}}),
        )
        .await
        .unwrap();
    // The policy reaches the queue a moment after it is accepted.
    for _ in 0..100 {
        let queue = vhost.queue(DEAD_QUEUE).await.unwrap();
        if queue["policy"] == "dead-queue-full" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        vhost.queue(DEAD_QUEUE).await.unwrap()["policy"],
        "dead-queue-full"
    );
    let refused = callbridge(
        &["erase", "--phone", E164, "--yes"],
        &env(&db, &vhost.amqp_url(), Some(ERASURE_KEY)),
        None,
    )
    .await;
    let line = one_line_failure(&refused);
    assert!(line.contains("dead letter"), "{line}");
    assert_eq!(pg_dump(&db), dump, "the database was changed");
    assert_eq!(
        dead_letters(&vhost).await,
        letters,
        "a dead letter was lost or changed"
    );
}
