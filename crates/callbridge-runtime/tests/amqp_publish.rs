//! `publish_confirmed` against the real broker, each test in its own vhost: only the
//! broker's plain ack is a success; a nack, a returned (unroutable) message, a channel
//! the broker closed, a channel without confirms and a broker that does not answer in
//! time are each an error that says which.

use std::time::{Duration, Instant};

use callbridge_runtime::amqp::{
    Outgoing, PublishError, connect, declare_topology, open_confirmed_channel, publish_confirmed,
    publish_pipelined,
};
use callbridge_testkit::proxy::TcpProxy;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::topology::{CALLBACKS_EXCHANGE, OUTCOMES_EXCHANGE, PERSIST_QUEUE};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

/// Long enough for any confirm from a local broker; only the timeout test waits less.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

async fn declared(vhost: &TestVhost) -> (Connection, Channel) {
    let connection = connect(&vhost.amqp_url(), "publish-test").await.unwrap();
    declare_topology(&connection).await.unwrap();
    let channel = open_confirmed_channel(&connection).await.unwrap();
    (connection, channel)
}

fn callback(body: &[u8]) -> Outgoing<'_> {
    Outgoing {
        exchange: CALLBACKS_EXCHANGE,
        routing_key: "callback.call_completed",
        body,
        properties: BasicProperties::default().with_delivery_mode(2),
        mandatory: true,
    }
}

#[tokio::test]
async fn an_acknowledged_publish_is_ok_and_the_message_is_queued() {
    let vhost = TestVhost::new().await;
    let (_connection, channel) = declared(&vhost).await;

    publish_confirmed(&channel, callback(b"first"), CONFIRM_TIMEOUT)
        .await
        .expect("the broker confirmed a routable message");

    let message = channel
        .basic_get(PERSIST_QUEUE.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the confirmed message is in the persist queue");
    assert_eq!(message.delivery.data, b"first");
}

#[tokio::test]
async fn an_unroutable_mandatory_message_is_an_error_and_an_optional_one_is_not() {
    let vhost = TestVhost::new().await;
    let (_connection, channel) = declared(&vhost).await;
    // Nothing is bound to the outcomes exchange in a fresh vhost.
    let unbound = |mandatory| Outgoing {
        exchange: OUTCOMES_EXCHANGE,
        routing_key: "outcome.completed",
        body: b"{}",
        properties: BasicProperties::default(),
        mandatory,
    };

    let returned = publish_confirmed(&channel, unbound(true), CONFIRM_TIMEOUT).await;
    assert!(
        matches!(returned, Err(PublishError::Unroutable)),
        "an unroutable mandatory publish was taken for stored: {returned:?}"
    );
    publish_confirmed(&channel, unbound(false), CONFIRM_TIMEOUT)
        .await
        .expect("a message nobody must receive is confirmed when dropped");
}

#[tokio::test]
async fn a_nack_is_an_error() {
    let vhost = TestVhost::new().await;
    let (_connection, channel) = declared(&vhost).await;
    // A queue that holds nothing and refuses what would overflow: every publish is nacked.
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare("full".into(), QueueDeclareOptions::default(), arguments)
        .await
        .unwrap();
    let refused = Outgoing {
        exchange: "",
        routing_key: "full",
        body: b"refused",
        properties: BasicProperties::default(),
        mandatory: true,
    };

    let outcome = publish_confirmed(&channel, refused, CONFIRM_TIMEOUT).await;
    assert!(
        matches!(outcome, Err(PublishError::Nacked)),
        "a nacked publish was taken for stored: {outcome:?}"
    );
}

#[tokio::test]
async fn a_channel_the_broker_closed_is_an_error() {
    let vhost = TestVhost::new().await;
    let (_connection, channel) = declared(&vhost).await;
    // Publishing to an exchange that does not exist makes the broker close the channel.
    let nowhere = Outgoing {
        exchange: "no-such-exchange",
        routing_key: "anything",
        body: b"lost",
        properties: BasicProperties::default(),
        mandatory: true,
    };

    let outcome = publish_confirmed(&channel, nowhere, CONFIRM_TIMEOUT).await;
    assert!(
        matches!(outcome, Err(PublishError::Channel(_))),
        "a publish on a channel the broker closed: {outcome:?}"
    );
    let again = publish_confirmed(&channel, callback(b"after"), CONFIRM_TIMEOUT).await;
    assert!(
        matches!(again, Err(PublishError::Channel(_))),
        "a publish on a closed channel: {again:?}"
    );
}

#[tokio::test]
async fn a_channel_without_confirms_is_not_taken_for_success() {
    let vhost = TestVhost::new().await;
    let (connection, _channel) = declared(&vhost).await;
    let unconfirmed = connection.create_channel().await.unwrap();

    let outcome = publish_confirmed(&unconfirmed, callback(b"unconfirmed"), CONFIRM_TIMEOUT).await;
    assert!(
        matches!(outcome, Err(PublishError::NotConfirmMode)),
        "a publish nobody confirmed was taken for stored: {outcome:?}"
    );
}

#[tokio::test]
async fn a_broker_that_does_not_confirm_in_time_is_a_timeout() {
    let vhost = TestVhost::new().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    let connection = connect(&vhost.amqp_url_via(proxy.addr()), "timeout-test")
        .await
        .unwrap();
    declare_topology(&connection).await.unwrap();
    let channel = open_confirmed_channel(&connection).await.unwrap();
    // Nothing crosses the proxy any more: the publish leaves, no confirm comes back.
    proxy.stall();
    let timeout = Duration::from_millis(300);

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        CONFIRM_TIMEOUT,
        publish_confirmed(&channel, callback(b"silence"), timeout),
    )
    .await
    .expect("publish_confirmed waited past its timeout");
    assert!(
        matches!(outcome, Err(PublishError::ConfirmTimeout(waited)) if waited == timeout),
        "a publish the broker never confirmed: {outcome:?}"
    );
    assert!(started.elapsed() >= timeout, "gave up before the timeout");
    proxy.cut();
}

#[tokio::test]
async fn pipelined_publishes_are_each_confirmed() {
    let vhost = TestVhost::new().await;
    let (_connection, channel) = declared(&vhost).await;

    let mut pending = Vec::new();
    for body in [&b"one"[..], b"two", b"three"] {
        pending.push(publish_pipelined(&channel, callback(body)).await.unwrap());
    }
    for confirm in pending {
        confirm
            .confirmed(CONFIRM_TIMEOUT)
            .await
            .expect("each pipelined publish is confirmed");
    }
    let mut bodies = Vec::new();
    while let Some(message) = channel
        .basic_get(PERSIST_QUEUE.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        bodies.push(message.delivery.data);
    }
    assert_eq!(bodies, [&b"one"[..], b"two", b"three"]);
}
