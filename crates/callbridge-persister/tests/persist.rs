//! Persisting through the whole pipeline: envelopes published to `callbridge.callbacks`, a
//! persister running in-process against its own database and vhost, and the tables and
//! queues read back.

mod common;

use std::collections::BTreeSet;

use callbridge_types::topology::PERSIST_QUEUE;
use common::*;
use serde_json::json;

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let head = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, head.clone());
            all.push(tail);
        }
    }
    all
}

#[tokio::test]
async fn every_permutation_of_a_calls_events_yields_the_same_row() {
    let harness = Harness::new().await;
    let kinds = ["started", "answered", "completed"];
    let orders = permutations(&kinds);
    for (index, order) in orders.iter().enumerate() {
        let call = format!("call-{index}");
        for kind in order {
            let extra = match *kind {
                "started" => json!({"duration": 0, "start_time": "2024-01-01T10:00:00Z",
                                    "custom_data": {"customer_id": "CUST001"}}),
                "answered" => json!({"disposition": "answered"}),
                _ => json!({"duration": 120, "end_time": "2024-01-01T10:02:00Z",
                            "recording_url": "https://rec.example/1.wav"}),
            };
            harness.publish(&call_event(10, &call, kind, extra)).await;
        }
    }
    // One event per transaction, so each arrives on the row the previous ones left.
    let persister = harness.start(harness.config(1)).await;
    harness.wait_for_events(3 * orders.len() as i64).await;

    let rows = harness.call_logs().await;
    assert_eq!(rows.len(), orders.len());
    let normalised: BTreeSet<String> = rows
        .values()
        .map(|row| {
            let mut row = row.clone();
            row.call_id = String::new();
            format!("{row:?}")
        })
        .collect();
    assert_eq!(
        normalised.len(),
        1,
        "rows differ by arrival order: {rows:#?}"
    );
    let row = rows.values().next().unwrap();
    assert_eq!(row.call_status, "completed");
    assert_eq!(row.duration, Some(120));
    assert_eq!(row.disposition.as_deref(), Some("answered"));
    assert!(row.start_time.is_some() && row.end_time.is_some());
    assert_eq!(row.custom_data, Some(json!({"customer_id": "CUST001"})));
    let batch = harness.batch(10).await;
    assert_eq!(batch.completed_calls, Some(orders.len() as i32));
    assert_eq!(batch.failed_calls, Some(0));
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn a_duplicate_terminal_event_does_not_double_count() {
    let harness = Harness::new().await;
    harness.submitted_batch(20, 2).await;
    let completed = call_event(20, "c1", "completed", json!({"duration": 30}));
    harness
        .publish_all(&[
            call_event(20, "c1", "started", json!({"duration": 0})),
            completed.clone(),
            completed.clone(),
            call_event(20, "c2", "failed", json!({"error_message": "network"})),
        ])
        .await;
    // The sender retries later: same event id, a later receipt.
    let mut retried = completed.clone();
    retried.received_at = chrono::Utc::now();

    let persister = harness.start(harness.config(16)).await;
    harness.wait_for_events(3).await;
    harness.publish(&retried).await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;

    assert_eq!(harness.count("call_events").await, 3);
    let batch = harness.batch(20).await;
    assert_eq!(batch.completed_calls, Some(1));
    assert_eq!(batch.failed_calls, Some(1));
    assert_eq!(batch.batch_status.as_deref(), Some("completed"));
    assert_eq!(harness.count("call_outcome_outbox").await, 2);
    assert_eq!(harness.call_logs().await["c1"].duration, Some(30));
}

#[tokio::test]
async fn conflicting_terminals_end_the_same_whichever_arrives_first() {
    let harness = Harness::new().await;
    let completed = |call| {
        call_event(
            30,
            call,
            "completed",
            json!({"end_time": "2024-01-01T10:02:00Z",
                                                  "duration": 120}),
        )
    };
    let failed = |call| {
        call_event(
            30,
            call,
            "failed",
            json!({"end_time": "2024-01-01T10:05:00Z",
                                               "error_message": "dropped"}),
        )
    };
    harness
        .publish_all(&[completed("a"), failed("a"), failed("b"), completed("b")])
        .await;

    let persister = harness.start(harness.config(1)).await;
    harness.wait_for_events(4).await;

    let rows = harness.call_logs().await;
    for call in ["a", "b"] {
        let row = &rows[call];
        assert_eq!(row.call_status, "failed", "{call}: the later end_time wins");
        assert_eq!(row.error_message.as_deref(), Some("dropped"));
        assert_eq!(
            row.duration,
            Some(120),
            "{call}: the loser still fills gaps"
        );
    }
    let mut a = rows["a"].clone();
    a.call_id = "b".to_owned();
    assert_eq!(a, rows["b"]);
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT call_id, call_status FROM call_events ORDER BY 1, 2")
            .fetch_all(&harness.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            ("a", "completed"),
            ("a", "failed"),
            ("b", "completed"),
            ("b", "failed")
        ]
        .map(|(c, s)| (c.to_owned(), s.to_owned()))
    );
    let batch = harness.batch(30).await;
    assert_eq!(
        (batch.completed_calls, batch.failed_calls),
        (Some(0), Some(2))
    );
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn duration_from_the_terminal_event_replaces_the_started_rows_zero() {
    let harness = Harness::new().await;
    let persister = harness.start(harness.config(8)).await;
    harness
        .publish(&call_event(40, "c1", "started", json!({"duration": 0})))
        .await;
    harness.wait_for_events(1).await;
    assert_eq!(harness.call_logs().await["c1"].duration, Some(0));

    harness
        .publish(&call_event(40, "c1", "completed", json!({"duration": 120})))
        .await;
    harness.wait_for_events(2).await;
    let row = &harness.call_logs().await["c1"];
    assert_eq!(row.duration, Some(120));
    assert_eq!(row.call_status, "completed");
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn a_batch_completes_exactly_when_its_last_call_does_and_not_while_numbers_wait() {
    let harness = Harness::new().await;
    // The submitter has sent three numbers (total_calls 3); a fourth still waits.
    harness.submitted_batch(50, 3).await;
    for (phone, status) in [
        ("1", "submitted"),
        ("2", "submitted"),
        ("3", "submitted"),
        ("4", "pending"),
    ] {
        sqlx::query(
            "INSERT INTO local_call_queue (phone_number, batch_id, queue_status) VALUES ($1, 50, $2)",
        )
        .bind(phone)
        .bind(status)
        .execute(&harness.pool)
        .await
        .unwrap();
    }
    let persister = harness.start(harness.config(8)).await;
    let status_after = |events: i64, envelope| {
        let harness = &harness;
        async move {
            harness.publish(&envelope).await;
            harness.wait_for_events(events).await;
            harness.batch(50).await
        }
    };

    let batch = status_after(1, call_event(50, "c1", "completed", json!({}))).await;
    assert_eq!(batch.batch_status.as_deref(), Some("in_progress"));
    let batch = status_after(2, call_event(50, "c2", "busy", json!({}))).await;
    assert_eq!(batch.batch_status.as_deref(), Some("in_progress"));
    // Every sent call is over, but number 4 still waits in local_call_queue.
    let batch = status_after(3, call_event(50, "c3", "no_answer", json!({}))).await;
    assert_eq!(
        (batch.completed_calls, batch.failed_calls),
        (Some(1), Some(2))
    );
    assert_eq!(batch.batch_status.as_deref(), Some("in_progress"));

    // The submitter sends number 4 and counts it, in its own transaction.
    sqlx::query("UPDATE local_call_queue SET queue_status = 'submitted' WHERE phone_number = '4'")
        .execute(&harness.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE call_batches SET total_calls = 4 WHERE batch_id = 50")
        .execute(&harness.pool)
        .await
        .unwrap();
    callbridge_runtime::db::refresh_batch(&harness.pool, 50)
        .await
        .unwrap();
    assert_eq!(
        harness.batch(50).await.batch_status.as_deref(),
        Some("in_progress")
    );

    let batch = status_after(4, call_event(50, "c4", "started", json!({}))).await;
    assert_eq!(batch.batch_status.as_deref(), Some("in_progress"));
    let batch = status_after(5, call_event(50, "c4", "completed", json!({}))).await;
    assert_eq!(
        (batch.completed_calls, batch.failed_calls),
        (Some(2), Some(2))
    );
    assert_eq!(batch.batch_status.as_deref(), Some("completed"));
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn an_unknown_batch_is_created_from_its_first_callback() {
    let harness = Harness::new().await;
    harness
        .publish(&call_event(
            60,
            "c1",
            "answered",
            json!({"accountcode": "OTHER"}),
        ))
        .await;
    let persister = harness.start(harness.config(8)).await;
    harness.wait_for_events(1).await;
    let batch = harness.batch(60).await;
    assert_eq!(batch.accountcode, "OTHER");
    assert_eq!(batch.batch_status.as_deref(), Some("in_progress"));
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn a_batch_row_the_persister_creates_counts_calls_logged_before_it_existed() {
    // The persister adds deltas to a batch's stored counts; a row it creates starts at
    // zero, so it must count the batch's calls already in call_logs (written there by
    // something else, before any call_batches row existed).
    let harness = Harness::new().await;
    sqlx::query(
        "INSERT INTO call_logs (call_id, accountcode, batch_id, phone_number, call_status)
         VALUES ('earlier-1', 'ACME', 61, '9876543210', 'completed'),
                ('earlier-2', 'ACME', 61, '9876543211', 'busy')",
    )
    .execute(&harness.pool)
    .await
    .unwrap();
    harness
        .publish(&call_event(61, "c1", "completed", json!({"duration": 5})))
        .await;
    let persister = harness.start(harness.config(8)).await;
    harness.wait_for_events(1).await;
    harness.settle().await;
    let batch = harness.batch(61).await;
    assert_eq!(
        (batch.completed_calls, batch.failed_calls),
        (Some(2), Some(1))
    );

    // Once the row exists, later events add to it.
    harness
        .publish(&call_event(
            61,
            "c2",
            "failed",
            json!({"error_message": "x"}),
        ))
        .await;
    harness.wait_for_events(2).await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
    let batch = harness.batch(61).await;
    assert_eq!(
        (batch.completed_calls, batch.failed_calls),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn status_less_unknown_events_are_kept_in_call_events_and_change_no_call_logs_row() {
    let harness = Harness::new().await;
    harness.submitted_batch(70, 2).await;
    let persister = harness.start(harness.config(8)).await;
    harness
        .publish(&call_event(
            70,
            "c1",
            "completed",
            json!({"duration": 30, "end_time": "2024-01-01T10:02:00Z"}),
        ))
        .await;
    harness.wait_for_events(1).await;
    let updated_at = || async {
        sqlx::query_scalar::<_, chrono::NaiveDateTime>(
            "SELECT updated_at FROM call_logs WHERE call_id = 'c1'",
        )
        .fetch_one(&harness.pool)
        .await
        .unwrap()
    };
    let (rows_before, batch_before, c1_updated_before) = (
        harness.call_logs().await,
        harness.batch(70).await,
        updated_at().await,
    );

    // Every field these carry would change c1's row (or batch counts) if they counted.
    let c1_parked = call_event(
        70,
        "c1",
        "parked",
        json!({"batch_id": 71, "duration": 999, "disposition": "parked",
               "error_message": "on hold", "end_time": "2024-01-01T11:00:00Z"}),
    );
    // A call that only ever has status-less events.
    let c2_parked = call_event(70, "c2", "parked", json!({}));
    let c2_update = call_event(70, "c2", "status_update", json!({"duration": 5}));
    for envelope in [&c1_parked, &c2_parked, &c2_update] {
        assert_eq!(envelope.event.call_status, None);
        harness.publish(envelope).await;
    }
    harness.wait_for_events(4).await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;

    let kept: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_id, event_type, call_status FROM call_events
          WHERE event_id = ANY($1) ORDER BY event_type, call_id",
    )
    .bind(vec![
        c1_parked.event_id.clone(),
        c2_parked.event_id.clone(),
        c2_update.event_id.clone(),
    ])
    .fetch_all(&harness.pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        [
            (c1_parked.event_id.clone(), "call_parked".to_owned(), None),
            (c2_parked.event_id.clone(), "call_parked".to_owned(), None),
            (
                c2_update.event_id.clone(),
                "call_status_update".to_owned(),
                None
            ),
        ]
    );
    assert_eq!(
        harness.call_logs().await,
        rows_before,
        "no row changed or added"
    );
    assert_eq!(
        updated_at().await,
        c1_updated_before,
        "c1's row was not rewritten"
    );
    assert_eq!(harness.batches().await.len(), 1, "no batch 71 created");
    assert_eq!(harness.batch(70).await, batch_before);
    assert_eq!(harness.count("call_outcome_outbox").await, 1);
}

#[tokio::test]
async fn outcome_events_reach_callbridge_outcomes_for_every_terminal_call() {
    let harness = Harness::new().await;
    let mut terminal = Vec::new();
    for (call, kind) in [
        ("c1", "completed"),
        ("c2", "failed"),
        ("c3", "busy"),
        ("c4", "no_answer"),
        ("c5", "timeout"),
    ] {
        let event = call_event(70, call, kind, json!({"duration": 5}));
        harness.publish(&event).await;
        terminal.push((event.event_id.clone(), kind));
    }
    harness
        .publish(&call_event(70, "c6", "answered", json!({})))
        .await;

    let persister = harness.start(harness.config(8)).await;
    harness.wait_for_events(6).await;
    wait_until("every outcome published", || async {
        let unpublished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM call_outcome_outbox WHERE published_at IS NULL",
        )
        .fetch_one(&harness.pool)
        .await
        .unwrap();
        unpublished == 0 && harness.count("call_outcome_outbox").await == 5
    })
    .await;

    let outcomes = harness.take_outcomes().await;
    let received: BTreeSet<(String, String, String)> = outcomes
        .iter()
        .map(|outcome| {
            (
                outcome.message_id.clone(),
                outcome.routing_key.clone(),
                outcome.body["call_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = terminal
        .iter()
        .map(|(event_id, kind)| {
            (
                event_id.clone(),
                format!("outcome.{kind}"),
                kind.to_string(),
            )
        })
        .collect();
    assert_eq!(received, expected);
    for outcome in &outcomes {
        assert_eq!(outcome.body["event_id"], outcome.message_id.as_str());
        assert_eq!(outcome.body["batch_id"], 70);
        assert_eq!(outcome.body["duration"], 5);
    }
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn one_poison_message_is_dead_lettered_and_the_good_ones_of_its_batch_stored() {
    let harness = Harness::new().await;
    let mut poison = call_event(80, "poison", "completed", json!({}));
    // What validation at the ingress would refuse, published by something else: longer
    // than call_logs.phone_number's 20 characters.
    poison.event.phone_number = "1".repeat(30);
    let mut good = Vec::new();
    for index in 0..9 {
        good.push(call_event(80, &format!("c{index}"), "completed", json!({})));
    }
    harness.publish_all(&good[..5]).await;
    harness.publish(&poison).await;
    harness.publish_all(&good[5..]).await;

    // All ten fit one batch.
    let persister = harness.start(harness.config(32)).await;
    harness.wait_for_events(9).await;
    let dead = harness.wait_for_dead_letters(1).await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;

    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].message_id.as_deref(),
        Some(poison.event_id.as_str())
    );
    assert_eq!(dead[0].body, poison.encode(), "the original body is kept");
    let error = dead[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("value too long"), "reason header: {error}");
    let rows = harness.call_logs().await;
    assert_eq!(rows.len(), 9);
    assert!(!rows.contains_key("poison"));
    assert_eq!(harness.batch(80).await.completed_calls, Some(9));
    assert!(harness.take_dead_letters().await.is_empty());
}

#[tokio::test]
async fn an_undecodable_envelope_is_dead_lettered_at_once() {
    let harness = Harness::new().await;
    let properties = || {
        lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id("garbage".into())
    };
    harness
        .publish_raw("callback.call_started", b"not an envelope", properties())
        .await;
    let mut future_version: serde_json::Value =
        serde_json::from_slice(&call_event(90, "c0", "started", json!({})).encode()).unwrap();
    future_version["schema_version"] = json!(99);
    harness
        .publish_raw(
            "callback.call_started",
            future_version.to_string().as_bytes(),
            properties(),
        )
        .await;
    harness
        .publish(&call_event(90, "c1", "completed", json!({})))
        .await;

    let persister = harness.start(harness.config(8)).await;
    harness.wait_for_events(1).await;
    let dead = harness.wait_for_dead_letters(2).await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].body, b"not an envelope");
    for letter in &dead {
        let error = letter.error.as_deref().unwrap_or_default();
        assert!(error.starts_with("undecodable envelope"), "{error}");
    }
    assert!(
        dead[1]
            .error
            .as_deref()
            .unwrap()
            .contains("schema version 99")
    );
}

/// A stream of 30 calls: started, answered, and for most a terminal event (some
/// conflicting ones), each sent three times, shuffled.
fn duplicate_heavy_stream(seed: u64) -> Vec<callbridge_types::envelope::Envelope> {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for index in 0..30 {
        let call = format!("c{index}");
        let batch = 100 + index % 3;
        events.push(call_event(batch, &call, "started", json!({"duration": 0})));
        events.push(call_event(
            batch,
            &call,
            "answered",
            json!({"disposition": "answered"}),
        ));
        let terminals = ["completed", "failed", "busy", "no_answer", "timeout"];
        for _ in 0..rng.random_range(0..=2) {
            let kind = terminals[rng.random_range(0..terminals.len())];
            let end = format!("2024-01-01T10:0{}:00Z", rng.random_range(0..3));
            events.push(call_event(
                batch,
                &call,
                kind,
                json!({"end_time": end, "duration": rng.random_range(1..300)}),
            ));
        }
    }
    let mut stream: Vec<_> = events
        .iter()
        .flat_map(|e| [e.clone(), e.clone(), e.clone()])
        .collect();
    stream.shuffle(&mut rng);
    stream
}

fn distinct_events(stream: &[callbridge_types::envelope::Envelope]) -> i64 {
    stream
        .iter()
        .map(|e| e.event_id.as_str())
        .collect::<BTreeSet<_>>()
        .len() as i64
}

#[tokio::test]
async fn two_persisters_on_one_shuffled_duplicate_heavy_stream_end_with_the_rows_of_one() {
    let stream = duplicate_heavy_stream(7);
    let distinct = distinct_events(&stream);

    let single = Harness::new().await;
    single.publish_all(&stream).await;
    let alone = single.start(single.config(8)).await;
    single.wait_for_events(distinct).await;
    single.settle().await;
    alone.stop().await;
    single.assert_all_acknowledged().await;

    let pair = Harness::new().await;
    pair.publish_all(&stream).await;
    // Small batches, so the two interleave on the same calls and batches.
    let first = pair.start(pair.config(4)).await;
    let second = pair.start(pair.config(4)).await;
    pair.wait_for_events(distinct).await;
    first.stop().await;
    second.stop().await;
    // What either left unacknowledged (duplicates it had prefetched) is redelivered.
    let drainer = pair.start(pair.config(8)).await;
    pair.settle().await;
    drainer.stop().await;
    pair.assert_all_acknowledged().await;

    assert_eq!(pair.call_logs().await, single.call_logs().await);
    assert_eq!(pair.batches().await, single.batches().await);
    assert!(pair.take_dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_database_outage_dead_letters_nothing_and_everything_is_persisted_afterwards() {
    let harness = Harness::new().await;
    let postgres: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = callbridge_testkit::proxy::TcpProxy::start(postgres).await;
    let mut db_url = url::Url::parse(harness.db.url()).unwrap();
    db_url.set_port(Some(proxy.addr().port())).unwrap();
    let config = config_from(harness.env_via(db_url.as_str(), &harness.vhost.amqp_url(), 4));
    let persister = harness.start(config).await;
    persister.wait_until_ready().await;

    let stream: Vec<_> = (0..20)
        .flat_map(|i| {
            let call = format!("c{i}");
            [
                call_event(200, &call, "started", json!({})),
                call_event(200, &call, "completed", json!({"duration": 60})),
            ]
        })
        .collect();
    harness.publish_all(&stream[..10]).await;
    harness.wait_for_events(10).await;

    proxy.cut();
    harness.publish_all(&stream[10..]).await;
    wait_until("not ready while the database is down", || async {
        persister.readyz().await == 503
    })
    .await;
    assert!(harness.take_dead_letters().await.is_empty());

    proxy.restore();
    harness.wait_for_events(40).await;
    persister.wait_until_ready().await;
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
    assert!(harness.take_dead_letters().await.is_empty());
    let batch = harness.batch(200).await;
    assert_eq!(batch.completed_calls, Some(20));
}

#[tokio::test]
async fn after_losing_the_broker_it_reconnects_and_consumes_again() {
    let harness = Harness::new().await;
    let proxy = callbridge_testkit::proxy::TcpProxy::start(harness.vhost.amqp_socket_addr()).await;
    let amqp_url = harness.vhost.amqp_url_via(proxy.addr());
    let config = config_from(harness.env_via(harness.db.url(), &amqp_url, 8));
    let persister = harness.start(config).await;
    persister.wait_until_ready().await;

    harness
        .publish(&call_event(300, "c1", "started", json!({})))
        .await;
    harness.wait_for_events(1).await;

    proxy.cut();
    wait_until("not ready without the broker", || async {
        persister.readyz().await == 503
    })
    .await;
    harness
        .publish(&call_event(300, "c1", "completed", json!({})))
        .await;
    proxy.restore();

    harness.wait_for_events(2).await;
    persister.wait_until_ready().await;
    assert_eq!(harness.call_logs().await["c1"].call_status, "completed");
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

#[tokio::test]
async fn a_cancelled_subscription_is_renewed() {
    let harness = Harness::new().await;
    let persister = harness.start(harness.config(8)).await;
    persister.wait_until_ready().await;
    harness
        .publish(&call_event(310, "c1", "started", json!({})))
        .await;
    harness.wait_for_events(1).await;

    // Deleting the queue cancels every consumer of it (basic.cancel from the broker).
    let channel = harness_channel(&harness).await;
    channel
        .queue_delete(
            PERSIST_QUEUE.into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    // The persister re-declares the topology when it re-subscribes.
    wait_until("the persist queue is back with a consumer", || async {
        harness
            .vhost
            .queue(PERSIST_QUEUE)
            .await
            .is_ok_and(|queue| queue["consumers"].as_i64() == Some(1))
    })
    .await;
    harness
        .publish(&call_event(310, "c1", "completed", json!({})))
        .await;
    harness.wait_for_events(2).await;
    assert_eq!(harness.call_logs().await["c1"].call_status, "completed");
    harness.settle().await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

async fn harness_channel(harness: &Harness) -> lapin::Channel {
    let connection = lapin::Connection::connect(
        &harness.vhost.amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // The connection lives as long as the channel needs it: leak it for the test.
    std::mem::forget(connection);
    channel
}

#[tokio::test]
async fn metrics_count_stored_duplicate_and_dead_lettered_events() {
    let harness = Harness::new().await;
    let completed = call_event(400, "c1", "completed", json!({"duration": 42}));
    harness.publish(&completed).await;
    harness.publish(&completed).await;
    harness
        .publish_raw(
            "callback.call_started",
            b"{}",
            lapin::BasicProperties::default().with_message_id("bad".into()),
        )
        .await;
    let persister = harness.start(harness.config(1)).await;
    // Every message is delivered before the sentinel; batches in flight at once may
    // finish in any order, so the metrics are awaited rather than read once.
    harness.settle().await;

    let expected = [
        ("persister_events_total{result=\"stored\"}", 1.0),
        ("persister_events_total{result=\"duplicate\"}", 1.0),
        ("persister_events_total{result=\"dead_lettered\"}", 1.0),
        ("persister_dead_letters_total{reason=\"undecodable\"}", 1.0),
        ("call_duration_seconds_sum{status=\"completed\"}", 42.0),
        ("callback_end_to_end_seconds_count", 1.0),
        ("persister_batch_size_count", 3.0),
    ];
    let value = |metrics: &str, series: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    };
    wait_until("every metric recorded", || async {
        let metrics = persister.metrics().await;
        expected
            .iter()
            .all(|(series, least)| value(&metrics, series).is_some_and(|value| value >= *least))
            && metrics.contains("active_batches")
    })
    .await;
    persister.stop().await;
    harness.assert_all_acknowledged().await;
}

/// `call_events` keeps the payload as the sender wrote it (unknown fields, a number too
/// large for any integer type, the status as given) beside the normalised event.
#[tokio::test]
async fn call_events_keeps_the_raw_payload_beside_the_normalised_event() {
    let harness = Harness::new().await;
    let raw = r#"{"event_type":"call_completed","batch_id":12,"call_id":"raw-1","phone_number":"9876543210","call_status":"NO ANSWER","vendor_extra":{"trunk":"sip-7","cost":123456789012345678901234567890}}"#;
    let validated = callbridge_types::event::parse_callback(raw.as_bytes(), ACCOUNT_CODE).unwrap();
    let message = callbridge_types::envelope::Envelope::encode_parts(
        "raw-event-1",
        chrono::Utc::now(),
        &validated.event,
        &serde_json::value::to_raw_value(&serde_json::from_str::<serde_json::Value>(raw).unwrap())
            .unwrap(),
    );
    // Rewrite the payload as sent, byte for byte, as a replayed or foreign producer's
    // message could carry it: the persister must pass it on, not re-render it.
    let envelope_text = String::from_utf8(message).unwrap();
    let start = envelope_text.find(r#""payload":"#).unwrap() + r#""payload":"#.len();
    let body = format!("{}{}}}", &envelope_text[..start], raw);
    harness
        .publish_raw(
            "callback.call_completed",
            body.as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await;
    let persister = harness.start(harness.config(1)).await;
    harness.wait_for_events(1).await;

    let (payload, status, cost): (String, String, String) = sqlx::query_as(
        "SELECT payload::text, event ->> 'call_status',
                payload -> 'vendor_extra' ->> 'cost'
           FROM call_events WHERE event_id = 'raw-event-1'",
    )
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    assert_eq!(
        status, "no_answer",
        "the event column holds the normalised event"
    );
    assert_eq!(
        cost, "123456789012345678901234567890",
        "the number as sent: {payload}"
    );
    let stored: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(stored["call_status"], "NO ANSWER");
    assert_eq!(stored["vendor_extra"]["trunk"], "sip-7");
    persister.stop().await;
}
