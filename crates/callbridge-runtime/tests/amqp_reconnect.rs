//! `run_reconnecting` against the real broker, each test in its own vhost: a failed
//! session is retried on a fresh connection after the backoff's wait (the failed
//! connection closed), the waits grow until a session stays up, an unreachable broker is
//! retried until it is back with readiness saying so, and shutdown ends the loop even
//! in the middle of a wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use callbridge_runtime::amqp::{Reconnect, run_reconnecting};
use callbridge_runtime::health::Readiness;
use callbridge_testkit::proxy::TcpProxy;
use callbridge_testkit::vhost::TestVhost;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

/// Upper bound on waiting for an effect; only stops a broken test from hanging.
const HANG_GUARD: Duration = Duration::from_secs(30);

const CONDITION: &str = "broker";

/// A backoff giving `delays` in order (then none), recording each delay it gives.
fn recorded(
    delays: &[u64],
) -> (
    impl backon::BackoffBuilder + Clone + use<>,
    Arc<Mutex<Vec<Duration>>>,
) {
    let given = Arc::new(Mutex::new(Vec::new()));
    let record = given.clone();
    let backoff = delays
        .iter()
        .map(|&ms| Duration::from_millis(ms))
        .collect::<Vec<_>>()
        .into_iter()
        .inspect(move |delay| record.lock().unwrap().push(*delay));
    (backoff, given)
}

/// What each session saw: when it started and its connection.
#[derive(Default)]
struct Sessions {
    started: Vec<Instant>,
    connections: Vec<Arc<Connection>>,
}

#[tokio::test]
async fn a_failed_session_is_retried_on_a_new_connection_after_the_backoffs_wait() {
    let vhost = TestVhost::new().await;
    let url = vhost.amqp_url();
    let (backoff, given) = recorded(&[150, 300, 600]);
    let settings = Reconnect::new(&url, "reconnect-test").with_backoff(backoff);
    let shutdown = CancellationToken::new();
    let sessions = Mutex::new(Sessions::default());

    let looping = run_reconnecting(settings, &shutdown, |connection| {
        let attempt = {
            let mut sessions = sessions.lock().unwrap();
            sessions.started.push(Instant::now());
            sessions.connections.push(connection);
            sessions.started.len()
        };
        async move {
            if attempt < 3 {
                Err(anyhow!("session {attempt} failed"))
            } else {
                Ok(())
            }
        }
    });
    tokio::time::timeout(HANG_GUARD, looping)
        .await
        .expect("the loop ended once a session returned Ok");

    let sessions = sessions.into_inner().unwrap();
    assert_eq!(sessions.started.len(), 3, "one session per connection");
    assert_eq!(
        *given.lock().unwrap(),
        [Duration::from_millis(150), Duration::from_millis(300)],
        "one backoff delay per failed session"
    );
    for (gap, waited) in sessions.started.windows(2).zip([150, 300]) {
        let gap = gap[1] - gap[0];
        assert!(
            gap >= Duration::from_millis(waited),
            "reconnected after {gap:?}, before the backoff's {waited} ms"
        );
    }
    for (index, connection) in sessions.connections[..2].iter().enumerate() {
        assert!(
            !connection.status().connected(),
            "the connection of failed session {} was left open",
            index + 1
        );
    }
    assert!(
        !Arc::ptr_eq(&sessions.connections[0], &sessions.connections[1]),
        "a failed session's connection was reused"
    );
    assert!(
        sessions.connections[2].status().connected(),
        "the loop closed the connection of a session that stopped for shutdown"
    );
}

#[tokio::test]
async fn the_waits_grow_while_sessions_fail_at_once_and_start_over_after_a_stable_one() {
    let vhost = TestVhost::new().await;
    let url = vhost.amqp_url();
    let (backoff, given) = recorded(&[10, 20, 40, 80]);
    let settings = Reconnect {
        stable_after: Duration::from_millis(1_500),
        ..Reconnect::new(&url, "stable-test").with_backoff(backoff)
    };
    let shutdown = CancellationToken::new();
    let attempts = Mutex::new(0);

    let looping = run_reconnecting(settings, &shutdown, |_connection| {
        let attempt = {
            let mut attempts = attempts.lock().unwrap();
            *attempts += 1;
            *attempts
        };
        async move {
            match attempt {
                // Up long enough to count as stable, then the broker side fails.
                3 => {
                    tokio::time::sleep(Duration::from_millis(1_600)).await;
                    Err(anyhow!("lost after a while"))
                }
                5 => Ok(()),
                _ => Err(anyhow!("failed at once")),
            }
        }
    });
    tokio::time::timeout(HANG_GUARD, looping)
        .await
        .expect("the loop ended");

    let millis: Vec<u128> = given
        .lock()
        .unwrap()
        .iter()
        .map(Duration::as_millis)
        .collect();
    assert_eq!(
        millis,
        [10, 20, 10, 20],
        "waits grow after quick failures and start over after the stable session"
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_retried_until_it_is_back_and_readiness_says_so() {
    let vhost = TestVhost::new().await;
    let proxy = TcpProxy::start(vhost.amqp_socket_addr()).await;
    proxy.cut();
    let url = vhost.amqp_url_via(proxy.addr());
    let readiness = Readiness::new();
    let shutdown = CancellationToken::new();
    let (backoff, _given) = recorded(&[50; 1000]);

    let running = tokio::spawn({
        let readiness = readiness.clone();
        let shutdown = shutdown.clone();
        async move {
            let settings = Reconnect::new(&url, "outage-test")
                .reporting(&readiness, CONDITION)
                .with_backoff(backoff);
            run_reconnecting(settings, &shutdown, |_connection| {
                let readiness = readiness.clone();
                let shutdown = shutdown.clone();
                async move {
                    readiness.set_ready(CONDITION);
                    shutdown.cancelled().await;
                    Ok(())
                }
            })
            .await;
        }
    });

    // Let it fail at least twice, then bring the broker back.
    while proxy.accepted_connections() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!running.is_finished(), "gave up during the outage");
    assert_eq!(
        readiness.not_ready().get(CONDITION).map(String::as_str),
        Some("RabbitMQ is unreachable; retrying")
    );
    proxy.restore();
    let deadline = Instant::now() + HANG_GUARD;
    while !readiness.is_ready() {
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    shutdown.cancel();
    tokio::time::timeout(HANG_GUARD, running)
        .await
        .expect("stopped on shutdown")
        .unwrap();
    assert_eq!(
        readiness.not_ready().get(CONDITION).map(String::as_str),
        Some("shutting down")
    );
}

#[tokio::test]
async fn shutdown_ends_the_wait_before_the_next_attempt() {
    let vhost = TestVhost::new().await;
    let url = vhost.amqp_url();
    let (backoff, _given) = recorded(&[3_600_000]);
    let shutdown = CancellationToken::new();
    let sessions = Mutex::new(0);

    let looping = run_reconnecting(
        Reconnect::new(&url, "shutdown-test").with_backoff(backoff),
        &shutdown,
        |_connection| {
            *sessions.lock().unwrap() += 1;
            let shutdown = shutdown.clone();
            async move {
                // Fails, and asks for shutdown while the loop waits its hour.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    shutdown.cancel();
                });
                Err(anyhow!("failed"))
            }
        },
    );
    tokio::time::timeout(HANG_GUARD, looping)
        .await
        .expect("shutdown did not end the wait");
    assert_eq!(*sessions.lock().unwrap(), 1);
}
