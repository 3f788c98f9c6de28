//! A broker given as several nodes (`RABBITMQ_URL` listing a cluster's nodes), each
//! "node" here a proxy in front of the shared broker that a test can take down: a
//! connection goes to the first node that answers, and after losing one the reconnect
//! loop starts with the next node.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use callbridge_runtime::amqp::{
    BrokerNodes, Reconnect, connect, declare_topology, run_reconnecting,
};
use callbridge_testkit::proxy::TcpProxy;
use callbridge_testkit::vhost::TestVhost;
use tokio_util::sync::CancellationToken;

/// Upper bound on waiting for an effect; only stops a broken test from hanging.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_list_whose_first_node_is_down_connects_to_the_next() {
    let vhost = TestVhost::new().await;
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", closed_port());
    let refusing = TcpProxy::start(vhost.amqp_socket_addr()).await;
    refusing.cut();
    let list = format!(
        "{dead},{},{}",
        vhost.amqp_url_via(refusing.addr()),
        vhost.amqp_url()
    );

    let connection = tokio::time::timeout(HANG_GUARD, connect(&list, "nodes-test"))
        .await
        .expect("connect hung")
        .expect("the third node answers");
    assert!(refusing.accepted_connections() >= 1, "node 2 was not tried");
    declare_topology(&connection).await.unwrap();
}

#[tokio::test]
async fn when_no_node_answers_the_error_names_each_without_passwords() {
    let list = format!(
        "amqp://guest:s3cret@127.0.0.1:{}/%2f,amqp://guest:s3cret@127.0.0.1:{}/%2f",
        closed_port(),
        closed_port()
    );
    let error = tokio::time::timeout(HANG_GUARD, connect(&list, "nodes-test"))
        .await
        .expect("connect hung")
        .expect_err("nothing listens");
    let message = format!("{error:#}");
    assert!(
        message.contains("none of the 2 RabbitMQ nodes answered"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "password leaked: {message}");
    for url in BrokerNodes::parse(&list).urls() {
        let port = url::Url::parse(url).unwrap().port().unwrap();
        assert!(message.contains(&format!(":{port}")), "{message}");
    }
}

/// Two working nodes: after the session on node A fails, the next connection goes to
/// node B although A still answers, and after B's session fails, back to A.
#[tokio::test]
async fn after_a_lost_connection_the_loop_starts_with_the_next_node() {
    let vhost = TestVhost::new().await;
    let node_a = TcpProxy::start(vhost.amqp_socket_addr()).await;
    let node_b = TcpProxy::start(vhost.amqp_socket_addr()).await;
    let list = format!(
        "{},{}",
        vhost.amqp_url_via(node_a.addr()),
        vhost.amqp_url_via(node_b.addr())
    );
    let settings = Reconnect::new(&list, "rotation-test")
        .with_backoff([Duration::from_millis(10); 4].into_iter());
    let shutdown = CancellationToken::new();
    // Which node each session ran on, from the proxies' accepted connections.
    let seen = Mutex::new(Vec::new());

    let looping = run_reconnecting(settings, &shutdown, |_connection| {
        let attempt = {
            let mut seen = seen.lock().unwrap();
            seen.push((node_a.accepted_connections(), node_b.accepted_connections()));
            seen.len()
        };
        async move {
            if attempt < 3 {
                Err(anyhow!("session {attempt} lost"))
            } else {
                Ok(())
            }
        }
    });
    tokio::time::timeout(HANG_GUARD, looping)
        .await
        .expect("the loop ended once a session returned Ok");
    assert_eq!(
        seen.into_inner().unwrap(),
        [(1, 0), (1, 1), (2, 1)],
        "sessions ran on A, then B, then A again"
    );
}

/// The node a service is connected to goes away (its connections cut, new ones
/// refused): the service is back on the other node after one short wait.
#[tokio::test]
async fn a_node_going_down_moves_the_session_to_another_node() {
    let vhost = TestVhost::new().await;
    let node_a = TcpProxy::start(vhost.amqp_socket_addr()).await;
    let node_b = TcpProxy::start(vhost.amqp_socket_addr()).await;
    let list = format!(
        "{},{}",
        vhost.amqp_url_via(node_a.addr()),
        vhost.amqp_url_via(node_b.addr())
    );
    let settings = Reconnect::new(&list, "failover-test")
        .with_backoff([Duration::from_millis(10); 8].into_iter());
    let shutdown = CancellationToken::new();
    let sessions = Mutex::new(0);

    let looping = run_reconnecting(settings, &shutdown, |connection| {
        *sessions.lock().unwrap() += 1;
        let shutdown = shutdown.clone();
        async move {
            // Runs until its connection ends, as a consumer's session does.
            tokio::select! {
                () = shutdown.cancelled() => Ok(()),
                () = wait_disconnected(&connection) => Err(anyhow!("connection lost")),
            }
        }
    });
    let test = async {
        // The first session runs, on node A.
        while *sessions.lock().unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(node_b.accepted_connections(), 0, "node A answered first");
        node_a.cut();
        // The second session runs, on node B.
        while *sessions.lock().unwrap() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(node_b.live_connections(), 1);
        shutdown.cancel();
    };
    tokio::time::timeout(HANG_GUARD, async { tokio::join!(looping, test) })
        .await
        .expect("never moved to node B");
    assert_eq!(*sessions.lock().unwrap(), 2);
}

async fn wait_disconnected(connection: &lapin::Connection) {
    while connection.status().connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
