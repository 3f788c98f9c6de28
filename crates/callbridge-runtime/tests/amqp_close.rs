//! Closing channels and connections on the way out: explicit, returning what was not
//! acknowledged, and bounded even when the broker stops answering.

use std::time::Duration;

use callbridge_runtime::amqp::{close_channel, close_gracefully, connect};
use callbridge_testkit::proxy::TcpProxy;
use callbridge_testkit::vhost::TestVhost;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

/// Only turns a hang into a failure; it does not time the close.
const HANG_GUARD: Duration = Duration::from_secs(60);
const QUEUE: &str = "close-test";

async fn queue_with_messages(connection: &Connection, count: usize) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for index in 0..count {
        channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                format!("message {index}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    channel
}

async fn ready_messages(channel: &Channel) -> u32 {
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn close_gracefully_closes_every_channel_then_the_connection_returning_unacked_deliveries() {
    let vhost = TestVhost::new().await;
    let observer = connect(&vhost.amqp_url(), "observer").await.unwrap();
    let observing = queue_with_messages(&observer, 3).await;

    let connection = connect(&vhost.amqp_url(), "closing").await.unwrap();
    let consuming = connection.create_channel().await.unwrap();
    let idle = connection.create_channel().await.unwrap();
    let mut deliveries = consuming
        .basic_consume(
            QUEUE.into(),
            "close-test-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        deliveries.next().await.unwrap().unwrap();
    }
    assert_eq!(ready_messages(&observing).await, 0, "all three are held");

    tokio::time::timeout(
        HANG_GUARD,
        close_gracefully(&connection, [&consuming, &idle], Duration::from_secs(5)),
    )
    .await
    .expect("close_gracefully returns");

    assert!(!consuming.status().connected() && !idle.status().connected());
    assert!(connection.status().closed(), "{:?}", connection.status());
    assert_eq!(
        ready_messages(&observing).await,
        3,
        "unacknowledged deliveries went back to the queue"
    );
    // Closing again is harmless: already closed is logged, not an error.
    close_channel(&idle, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn close_gracefully_gives_up_on_a_broker_that_stopped_answering() {
    let vhost = TestVhost::new().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    let connection = connect(&vhost.amqp_url_via(proxy.addr()), "silenced")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();

    // The link stays open but nothing crosses it: no Close-Ok will ever arrive.
    proxy.stall();
    let closed = tokio::time::timeout(
        HANG_GUARD,
        close_gracefully(&connection, [&channel], Duration::from_millis(500)),
    )
    .await;
    assert!(
        closed.is_ok(),
        "close_gracefully waited for a silent broker"
    );
}
