//! The messaging topology against the real broker, each test in its own vhost: it is
//! declared idempotently with the arguments `declare_topology` documents and routes as
//! designed, and the connection
//! retries through an outage.

use std::time::Duration;

use callbridge_runtime::amqp::{
    PERSIST_DELIVERY_LIMIT, QUORUM_INITIAL_GROUP_SIZE, connect, connect_with_retry,
    dead_queue_arguments, declare_topology, open_confirmed_channel, persist_queue_arguments,
};
use callbridge_testkit::proxy::TcpProxy;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::topology::{
    ALL_CALLBACKS_BINDING, CALLBACKS_EXCHANGE, DEAD_EXCHANGE, DEAD_QUEUE, OUTCOMES_EXCHANGE,
    PERSIST_QUEUE,
};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Upper bound on waiting for a broker-side effect; only stops a broken test from hanging.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn declared(vhost: &TestVhost) -> Connection {
    let connection = connect(&vhost.amqp_url(), "amqp-test").await.unwrap();
    declare_topology(&connection).await.unwrap();
    connection
}

#[tokio::test]
async fn topology_declared_twice_has_the_specs_arguments() {
    let vhost = TestVhost::new().await;
    // Twice on one connection, then again from another connection, as replicas do.
    let connection = declared(&vhost).await;
    declare_topology(&connection)
        .await
        .expect("second declaration succeeds");
    let _other = declared(&vhost).await;

    let persist = vhost.queue(PERSIST_QUEUE).await.unwrap();
    assert_eq!(persist["durable"], true);
    assert_eq!(persist["type"], "quorum");
    let arguments = &persist["arguments"];
    assert_eq!(arguments["x-queue-type"], "quorum");
    let delivery_limit = arguments["x-delivery-limit"].as_i64().unwrap();
    assert!(
        delivery_limit >= 50,
        "x-delivery-limit {delivery_limit} < 50"
    );
    assert_eq!(delivery_limit, PERSIST_DELIVERY_LIMIT);
    assert_eq!(arguments["x-dead-letter-exchange"], DEAD_EXCHANGE);
    assert_eq!(arguments["x-dead-letter-strategy"], "at-least-once");
    assert_eq!(arguments["x-overflow"], "reject-publish");
    // Three replicas on a cluster of three or more; the whole (single-node) broker here.
    assert_eq!(
        arguments["x-quorum-initial-group-size"],
        QUORUM_INITIAL_GROUP_SIZE
    );
    assert_eq!(QUORUM_INITIAL_GROUP_SIZE, 3);
    assert_eq!(persist["members"].as_array().map(Vec::len), Some(1));

    let dead = vhost.queue(DEAD_QUEUE).await.unwrap();
    assert_eq!(dead["durable"], true);
    assert_eq!(dead["type"], "quorum");
    assert_eq!(
        dead["arguments"]["x-quorum-initial-group-size"],
        QUORUM_INITIAL_GROUP_SIZE
    );

    for (name, kind) in [
        (CALLBACKS_EXCHANGE, "topic"),
        (DEAD_EXCHANGE, "fanout"),
        (OUTCOMES_EXCHANGE, "topic"),
    ] {
        let exchange = vhost.exchange(name).await.unwrap();
        assert_eq!(exchange["type"], kind, "{name}");
        assert_eq!(exchange["durable"], true, "{name}");
    }

    let bindings = vhost.bindings().await.unwrap();
    let bound = |source: &str, destination: &str, key: &str| {
        bindings.iter().any(|binding: &Value| {
            binding["source"] == source
                && binding["destination"] == destination
                && binding["destination_type"] == "queue"
                && binding["routing_key"] == key
        })
    };
    assert!(
        bound(CALLBACKS_EXCHANGE, PERSIST_QUEUE, ALL_CALLBACKS_BINDING),
        "{bindings:?}"
    );
    assert!(bound(DEAD_EXCHANGE, DEAD_QUEUE, ""), "{bindings:?}");
}

/// Queues declared by a release that set no initial group size: RabbitMQ refuses a
/// redeclaration that adds one, and the topology must still declare (keeping the queues
/// as they are), without closing the caller's channels.
#[tokio::test]
async fn queues_from_before_the_initial_group_size_are_kept_as_they_are() {
    let vhost = TestVhost::new().await;
    let connection = connect(&vhost.amqp_url(), "older-release").await.unwrap();
    let older = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for (name, arguments) in [
        (DEAD_QUEUE, dead_queue_arguments()),
        (PERSIST_QUEUE, persist_queue_arguments()),
    ] {
        let mut older_arguments = FieldTable::default();
        for (key, value) in arguments.inner() {
            if key.as_str() != "x-quorum-initial-group-size" {
                older_arguments.insert(key.clone(), value.clone());
            }
        }
        older
            .queue_declare(name.into(), durable, older_arguments)
            .await
            .unwrap();
    }

    declare_topology(&connection)
        .await
        .expect("the topology declares over the older queues");
    declare_topology(&connection)
        .await
        .expect("and again, as every replica does");
    assert!(
        older.status().connected(),
        "the caller's channel was closed"
    );
    let persist = vhost.queue(PERSIST_QUEUE).await.unwrap();
    assert!(
        persist["arguments"]
            .get("x-quorum-initial-group-size")
            .is_none(),
        "{persist}"
    );
    assert_eq!(
        persist["arguments"]["x-dead-letter-exchange"],
        DEAD_EXCHANGE
    );
    // Still bound: declaring went on past the refusal.
    let bindings = vhost.bindings().await.unwrap();
    assert!(
        bindings
            .iter()
            .any(|binding: &Value| binding["source"] == CALLBACKS_EXCHANGE
                && binding["destination"] == PERSIST_QUEUE),
        "{bindings:?}"
    );
}

#[tokio::test]
async fn callbacks_reach_the_persist_queue_and_rejected_ones_the_dead_queue() {
    let vhost = TestVhost::new().await;
    let connection = declared(&vhost).await;
    let channel = open_confirmed_channel(&connection).await.unwrap();

    let confirm = channel
        .basic_publish(
            CALLBACKS_EXCHANGE.into(),
            "callback.call_completed".into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            br#"{"event_type":"call_completed"}"#,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "broker did not confirm: {confirm:?}");
    assert!(
        confirm.take_message().is_none(),
        "message was unroutable (returned)"
    );

    let message = channel
        .basic_get(PERSIST_QUEUE.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the callback is in the persist queue");
    assert_eq!(message.delivery.data, br#"{"event_type":"call_completed"}"#);

    // Rejected without requeue: the broker dead-letters it through callbridge.dead.
    channel
        .basic_reject(
            message.delivery.delivery_tag,
            BasicRejectOptions { requeue: false },
        )
        .await
        .unwrap();
    let mut dead = channel
        .basic_consume(
            DEAD_QUEUE.into(),
            "dead-reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let dead_letter = tokio::time::timeout(HANG_GUARD, dead.next())
        .await
        .expect("dead letter never arrived")
        .unwrap()
        .unwrap();
    assert_eq!(dead_letter.data, br#"{"event_type":"call_completed"}"#);
    assert_eq!(
        dead_letter.routing_key.as_str(),
        "callback.call_completed",
        "the original routing key is kept for replay"
    );
    let headers = dead_letter.properties.headers().clone().unwrap_or_default();
    assert!(
        matches!(
            headers.inner().get("x-death"),
            Some(AMQPValue::FieldArray(_))
        ),
        "no x-death header: {headers:?}"
    );
}

#[tokio::test]
async fn connect_with_retry_waits_out_a_broker_outage() {
    let vhost = TestVhost::new().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    proxy.cut();
    let url = vhost.amqp_url_via(proxy.addr());
    let cancel = CancellationToken::new();
    let connecting = tokio::spawn({
        let cancel = cancel.clone();
        async move { connect_with_retry(&url, "retry-test", &cancel).await }
    });

    // Let it fail at least twice, then bring the broker back.
    while proxy.accepted_connections() < 2 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!connecting.is_finished(), "gave up during the outage");
    proxy.restore();

    let connection = tokio::time::timeout(HANG_GUARD, connecting)
        .await
        .expect("never reconnected")
        .unwrap()
        .expect("connected once the broker was back");
    declare_topology(&connection).await.unwrap();
}

#[tokio::test]
async fn connect_with_retry_stops_when_shutdown_is_requested() {
    let vhost = TestVhost::new().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    proxy.cut();
    let url = vhost.amqp_url_via(proxy.addr());
    let cancel = CancellationToken::new();
    let connecting = tokio::spawn({
        let cancel = cancel.clone();
        async move { connect_with_retry(&url, "cancel-test", &cancel).await }
    });
    while proxy.accepted_connections() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let error = tokio::time::timeout(HANG_GUARD, connecting)
        .await
        .expect("did not stop on cancellation")
        .unwrap()
        .expect_err("cancelled while the broker was down");
    let message = format!("{error:#}");
    assert!(message.contains("shutdown requested"), "{message}");
    assert!(
        !message.contains("guest:guest"),
        "password leaked: {message}"
    );
}
