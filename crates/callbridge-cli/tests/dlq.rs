//! `callbridge dlq list | replay | purge` against a real RabbitMQ vhost with the
//! services' topology, replay and purge recorded in a real database's operator_actions.

mod common;

use callbridge_testkit::vhost::TestVhost;
use callbridge_types::topology::{DEAD_EXCHANGE, DEAD_QUEUE, ERROR_HEADER, PERSIST_QUEUE};
use common::*;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;

/// Publishes a dead letter the way the persister does: the original routing key and
/// properties, plus the error header; returns once the queue counts it.
async fn dead_letter(vhost: &TestVhost, message_id: &str, event_type: &str, error: &str) {
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )),
    );
    headers.insert(
        ERROR_HEADER.into(),
        AMQPValue::LongString(LongString::from(error)),
    );
    headers.insert(
        "x-first-death-reason".into(),
        AMQPValue::LongString(LongString::from("rejected")),
    );
    let properties = BasicProperties::default()
        .with_message_id(message_id.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(1_700_000_000)
        .with_headers(headers);
    vhost
        .publish_counted(
            DEAD_EXCHANGE,
            &format!("callback.{event_type}"),
            format!(r#"{{"message":"{message_id}"}}"#).as_bytes(),
            properties,
            DEAD_QUEUE,
        )
        .await
        .unwrap();
}

fn env<'a>(vhost_url: &'a str, database_url: &'a str) -> [(&'a str, &'a str); 2] {
    [
        ("RABBITMQ_URL", vhost_url),
        ("CLIENT_CALLING_DB_URL", database_url),
    ]
}

/// `operator_actions` as (action, source, actor, rows_affected, target), oldest first.
async fn recorded(pool: &sqlx::PgPool) -> Vec<(String, String, String, i64, Value)> {
    sqlx::query_as(
        "SELECT action, source, actor, rows_affected, target FROM operator_actions ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn list_shows_each_dead_letter_with_its_reason_and_leaves_them_in_place() {
    let vhost = vhost_with_topology().await;
    dead_letter(
        &vhost,
        "evt-1",
        "call_completed",
        "call_logs: value too long for phone_number",
    )
    .await;
    dead_letter(
        &vhost,
        "evt-2",
        "call_busy",
        "envelope schema version 9 is newer than this persister",
    )
    .await;
    let url = vhost.amqp_url();
    let (db, _pool) = migrated_db().await;

    let table = callbridge(&["dlq", "list"], &env(&url, db.url()), None).await;

    assert_success(&table);
    let text = stdout(&table);
    assert!(
        text.starts_with("2 dead-lettered callbacks in callbridge.dead"),
        "{text}"
    );
    let evt1 = text.lines().find(|line| line.starts_with("evt-1")).unwrap();
    assert!(
        evt1.contains("call_completed") && evt1.contains("value too long for phone_number"),
        "{text}"
    );
    assert!(evt1.contains("2023-11-14T22:13:20+00:00"), "{text}");
    let json_output = callbridge(&["dlq", "list", "--json"], &env(&url, db.url()), None).await;
    let listed: Value = serde_json::from_str(&stdout(&json_output)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["event_type"], "call_busy");
    assert_eq!(listed[1]["first_death_reason"], "rejected");
    assert_eq!(
        vhost.queue_depth(DEAD_QUEUE).await.unwrap(),
        2,
        "listing removes nothing"
    );
}

#[tokio::test]
async fn replay_republishes_the_chosen_message_with_its_routing_key_and_clean_headers() {
    let vhost = vhost_with_topology().await;
    dead_letter(&vhost, "evt-1", "call_completed", "boom").await;
    dead_letter(&vhost, "evt-2", "call_busy", "boom").await;
    let url = vhost.amqp_url();
    let (db, pool) = migrated_db().await;

    let output = callbridge(
        &["dlq", "replay", "--message-id", "evt-2", "--actor", "alice"],
        &env(&url, db.url()),
        None,
    )
    .await;

    assert_success(&output);
    assert!(stdout(&output).contains("replayed 1 dead-lettered callback to callbridge.callbacks"));
    assert_eq!(
        vhost.settled_queue_depth(DEAD_QUEUE, 1).await.unwrap(),
        1,
        "evt-1 stays dead"
    );
    let connection = callbridge_runtime::amqp::connect(&url, "cli-test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let replayed = channel
        .basic_get(PERSIST_QUEUE.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("the replayed message reached the persist queue");
    let delivery = &replayed.delivery;
    assert_eq!(delivery.routing_key.as_str(), "callback.call_busy");
    assert_eq!(delivery.data, br#"{"message":"evt-2"}"#);
    assert_eq!(
        delivery.properties.message_id().as_ref().unwrap().as_str(),
        "evt-2"
    );
    let headers = delivery.properties.headers().clone().unwrap();
    assert!(
        headers.inner().contains_key("traceparent"),
        "the trace context survives"
    );
    assert!(!headers.inner().contains_key(ERROR_HEADER));
    assert!(!headers.inner().contains_key("x-first-death-reason"));
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.ok();

    let all = callbridge(&["dlq", "replay"], &env(&url, db.url()), None).await;
    assert_success(&all);
    assert_eq!(vhost.settled_queue_depth(DEAD_QUEUE, 0).await.unwrap(), 0);
    assert_eq!(
        vhost.settled_queue_depth(PERSIST_QUEUE, 1).await.unwrap(),
        1
    );

    let missing = callbridge(
        &["dlq", "replay", "--message-id", "nope"],
        &env(&url, db.url()),
        None,
    )
    .await;
    assert!(
        one_line_failure(&missing)
            .contains("1 of the given message ids are not in callbridge.dead")
    );

    // Each replay is recorded: who, how many, which messages.
    let actions = recorded(&pool).await;
    let summary: Vec<(&str, &str, &str, i64)> = actions
        .iter()
        .map(|(action, source, actor, rows, _)| {
            (action.as_str(), source.as_str(), actor.as_str(), *rows)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("dlq.replay", "cli", "alice", 1),
            ("dlq.replay", "cli", "unknown", 1),
            ("dlq.replay", "cli", "unknown", 0),
        ]
    );
    assert_eq!(actions[0].4["message_ids"], serde_json::json!(["evt-2"]));
    assert_eq!(actions[1].4["message_ids"], "all");
}

#[tokio::test]
async fn purge_asks_first_and_deletes_only_on_yes() {
    let vhost = vhost_with_topology().await;
    dead_letter(&vhost, "evt-1", "call_completed", "boom").await;
    dead_letter(&vhost, "evt-2", "call_failed", "boom").await;
    let url = vhost.amqp_url();
    let (db, pool) = migrated_db().await;
    let env = env(&url, db.url());

    let declined = callbridge(&["dlq", "purge"], &env, Some("n\n")).await;
    assert!(
        stderr(&declined).contains("Delete 2 dead-lettered callbacks from callbridge.dead?"),
        "{}",
        stderr(&declined)
    );
    assert!(one_line_failure(&declined).contains("purge cancelled; nothing was deleted"));
    assert_eq!(vhost.queue_depth(DEAD_QUEUE).await.unwrap(), 2);
    let no_answer = callbridge(&["dlq", "purge"], &env, None).await;
    assert!(!no_answer.status.success());
    assert_eq!(vhost.queue_depth(DEAD_QUEUE).await.unwrap(), 2);

    assert!(
        recorded(&pool).await.is_empty(),
        "nothing purged, nothing recorded"
    );

    let confirmed = callbridge(&["dlq", "purge"], &env, Some("y\n")).await;
    assert_success(&confirmed);
    assert!(stdout(&confirmed).contains("purged 2 dead-lettered callbacks"));
    assert_eq!(vhost.queue_depth(DEAD_QUEUE).await.unwrap(), 0);

    dead_letter(&vhost, "evt-3", "call_failed", "boom").await;
    assert_success(&callbridge(&["dlq", "purge", "--yes", "--actor", "bob"], &env, None).await);
    assert_eq!(vhost.queue_depth(DEAD_QUEUE).await.unwrap(), 0);
    let actions: Vec<(String, String, i64)> = recorded(&pool)
        .await
        .into_iter()
        .map(|(action, _, actor, rows, _)| (action, actor, rows))
        .collect();
    assert_eq!(
        actions,
        [
            ("dlq.purge".to_owned(), "unknown".to_owned(), 2),
            ("dlq.purge".to_owned(), "bob".to_owned(), 1),
        ]
    );
}

#[tokio::test]
async fn a_vhost_without_the_topology_says_what_to_do() {
    let vhost = TestVhost::new().await;

    let (db, _pool) = migrated_db().await;

    let output = callbridge(&["dlq", "list"], &env(&vhost.amqp_url(), db.url()), None).await;

    let message = one_line_failure(&output);
    assert!(
        message.contains("queue callbridge.dead does not exist"),
        "{message}"
    );
    assert!(
        message.contains("start callbridge-persister once"),
        "{message}"
    );
}
