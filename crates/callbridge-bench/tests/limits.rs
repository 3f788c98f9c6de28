//! The raw-limit stages move what they claim to: every confirmed message is in the
//! persist queue as the ingress's envelope, and every upserted row holds its call's
//! final state. (How fast is the benchmark's business, not the tests'.)

use callbridge_bench::RunEnv;
use callbridge_bench::limits::{
    PublishShape, UpsertShape, batched_upsert_limit, publish_confirm_limit, queued_messages,
};
use callbridge_bench::workload::{WAVE_CALLS, callbacks};
use callbridge_types::envelope::Envelope;
use callbridge_types::topology::PERSIST_QUEUE;
use lapin::options::BasicGetOptions;

#[tokio::test]
async fn publish_limit_puts_every_confirmed_envelope_into_the_persist_queue() {
    let env = RunEnv::new(1, None).await.unwrap();
    let messages: Vec<_> = callbacks(300, "t", b"secret")
        .iter()
        .map(|c| c.message())
        .collect();
    let shape = PublishShape {
        channels: 3,
        in_flight_per_channel: 16,
    };

    let throughput = publish_confirm_limit(&env.vhost.amqp_url(), &messages, shape)
        .await
        .unwrap();
    assert_eq!(throughput.count, 300);

    let connection = callbridge_runtime::amqp::connect(&env.vhost.amqp_url(), "test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    assert_eq!(queued_messages(&channel).await.unwrap(), 300);
    let first = channel
        .basic_get(PERSIST_QUEUE.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message is queued");
    let envelope = Envelope::decode(&first.delivery.data).unwrap();
    assert!(messages.iter().any(|m| m.event_id == envelope.event_id));
    assert_eq!(
        first
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some(envelope.event_id.as_str())
    );
    let queue = env.vhost.queue(PERSIST_QUEUE).await.unwrap();
    assert_eq!(
        queue["type"], "quorum",
        "the limit uses the real queue type"
    );
}

#[tokio::test]
async fn upsert_limit_leaves_one_row_per_call_in_its_final_state() {
    let env = RunEnv::new(2, None).await.unwrap();
    let events: Vec<_> = callbacks(2 * 3 * WAVE_CALLS, "t", b"secret")
        .into_iter()
        .map(|c| c.event)
        .collect();
    // One connection: with several, batches of one call may reach the server out of
    // order (the limit measures throughput, not the persister's ordering rules).
    let shape = UpsertShape {
        batch_rows: 500,
        connections: 1,
    };

    let throughput = batched_upsert_limit(&env.pool, &events, shape)
        .await
        .unwrap();
    assert_eq!(throughput.count, events.len());

    let (rows, completed, with_start, with_recording, with_custom): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*),
                    count(*) FILTER (WHERE call_status = 'completed' AND duration = 120),
                    count(start_time), count(recording_url), count(custom_data)
               FROM call_logs",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let calls = 2 * WAVE_CALLS as i64;
    assert_eq!(rows, calls, "one row per call");
    assert_eq!(completed, calls, "the terminal event was applied last");
    assert_eq!(with_start, calls, "no event blanked the start time");
    assert_eq!(with_recording, calls);
    assert_eq!(with_custom, calls);
}
