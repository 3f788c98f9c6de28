//! Shared helpers: a migrated test database and a RabbitMQ vhost with the topology
//! declared, envelopes made the way the ingress makes them, persisters run in-process or
//! as the built binary, and readers of the tables and queues.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use callbridge_persister::Persister;
use callbridge_runtime::config::{PersisterConfig, Settings};
use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::envelope::{Envelope, event_id_for};
use callbridge_types::event::parse_callback;
use callbridge_types::topology::{
    CALLBACKS_EXCHANGE, CONTENT_TYPE_JSON, DEAD_QUEUE, ERROR_HEADER, OUTCOMES_EXCHANGE,
    PERSIST_QUEUE, callback_routing_key,
};
use chrono::{NaiveDateTime, Utc};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ACCOUNT_CODE: &str = "ACME";
/// Generous bound on waiting for an eventual state; reaching it is the assertion, the
/// bound only turns a hang into a failure.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// The batch of [`Harness::settle`]'s sentinel events, left out of every read below.
pub const SENTINEL_BATCH: i32 = 999_999;
/// A test queue bound to every outcome.
pub const OUTCOME_SUBSCRIBER: &str = "test.outcomes";

/// A migrated database and a vhost with callbridge's topology, for one test.
pub struct Harness {
    pub db: TestDb,
    pub pool: PgPool,
    pub vhost: TestVhost,
    connection: Connection,
    publisher: Channel,
}

impl Harness {
    pub async fn new() -> Harness {
        init_test_logs();
        let db = TestDb::new().await.expect("test database");
        let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 8)
            .await
            .expect("migrated test database");
        let vhost = TestVhost::new().await;
        let connection = Connection::connect(&vhost.amqp_url(), ConnectionProperties::default())
            .await
            .expect("test connection to RabbitMQ");
        callbridge_runtime::amqp::declare_topology(&connection)
            .await
            .unwrap();
        let publisher = callbridge_runtime::amqp::open_confirmed_channel(&connection)
            .await
            .unwrap();
        publisher
            .queue_declare(
                OUTCOME_SUBSCRIBER.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        publisher
            .queue_bind(
                OUTCOME_SUBSCRIBER.into(),
                OUTCOMES_EXCHANGE.into(),
                "outcome.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Harness {
            db,
            pool,
            vhost,
            connection,
            publisher,
        }
    }

    /// The environment a persister of this test runs with (for the binary, verbatim).
    pub fn env(&self, batch_size: usize) -> Vec<(String, String)> {
        self.env_via(self.db.url(), &self.vhost.amqp_url(), batch_size)
    }

    pub fn env_via(
        &self,
        db_url: &str,
        amqp_url: &str,
        batch_size: usize,
    ) -> Vec<(String, String)> {
        [
            ("CLIENT_CALLING_DB_URL", db_url.to_owned()),
            ("RABBITMQ_URL", amqp_url.to_owned()),
            ("PERSISTER_BIND", "127.0.0.1:0".to_owned()),
            ("CALLBRIDGE__PERSISTER__BATCH_SIZE", batch_size.to_string()),
            ("CALLBRIDGE__PERSISTER__BATCH_LINGER_MS", "50".to_owned()),
            ("CALLBRIDGE__PERSISTER__PREFETCH", "64".to_owned()),
            // The default concurrency (batches in flight), plus the outbox relay.
            ("CALLBRIDGE__DATABASE__MAX_CONNECTIONS", "6".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    pub fn config(&self, batch_size: usize) -> PersisterConfig {
        config_from(self.env(batch_size))
    }

    /// Publishes `envelope` as the ingress does (persistent, message id, confirmed).
    pub async fn publish(&self, envelope: &Envelope) {
        self.publish_with_headers(envelope, FieldTable::default())
            .await;
    }

    /// Like [`Harness::publish`], with message headers (e.g. `traceparent`).
    pub async fn publish_with_headers(&self, envelope: &Envelope, headers: FieldTable) {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE_JSON.into())
            .with_message_id(envelope.event_id.as_str().into())
            .with_headers(headers);
        self.publish_raw(
            &callback_routing_key(&envelope.event.event_type),
            &envelope.encode(),
            properties,
        )
        .await;
    }

    pub async fn publish_all(&self, envelopes: &[Envelope]) {
        for envelope in envelopes {
            self.publish(envelope).await;
        }
    }

    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let confirm = self
            .publisher
            .basic_publish(
                CALLBACKS_EXCHANGE.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirm,
            Confirmation::Ack(None),
            "test publish not confirmed"
        );
    }

    /// Runs a persister in this process until the returned handle is stopped.
    pub async fn start(&self, config: PersisterConfig) -> RunningPersister {
        RunningPersister::start(config).await
    }

    /// Publishes a sentinel event and waits until it is stored. With one persister
    /// consuming, everything published before it has then been delivered to it and is in
    /// a batch that started no later than the sentinel's (deliveries come in queue order);
    /// a graceful stop finishes every batch in flight. So after `settle` and `stop`,
    /// everything published before is stored or dead-lettered, and acknowledged.
    pub async fn settle(&self) {
        let sentinel = call_event(
            SENTINEL_BATCH,
            &format!("sentinel-{}", uuid::Uuid::new_v4()),
            "started",
            serde_json::json!({}),
        );
        self.publish(&sentinel).await;
        wait_until("the sentinel is stored", || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM call_events WHERE event_id = $1)",
            )
            .bind(&sentinel.event_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
        })
        .await;
    }

    /// Waits until `call_events` holds `count` rows.
    pub async fn wait_for_events(&self, count: i64) {
        wait_until(&format!("{count} rows in call_events"), || async {
            self.count("call_events").await == count
        })
        .await;
    }

    /// Rows of `table` (one with a `batch_id` column), sentinels left out.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE batch_id IS DISTINCT FROM {SENTINEL_BATCH}"
        )))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Asserts that the persist queue is empty. Call it after stopping every persister:
    /// their unacknowledged deliveries are back in the queue by then, so empty means
    /// every message was acknowledged.
    pub async fn assert_all_acknowledged(&self) {
        assert_eq!(
            self.ready_messages().await,
            0,
            "messages left unacknowledged"
        );
    }

    /// Messages in the persist queue not delivered to any consumer now.
    pub async fn ready_messages(&self) -> u32 {
        let channel = self.connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                PERSIST_QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel.close(200, "done".into()).await.ok();
        queue.message_count()
    }

    /// Waits until `count` messages have reached `callbridge.dead` and takes them.
    pub async fn wait_for_dead_letters(&self, count: usize) -> Vec<DeadLetter> {
        let mut letters = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while letters.len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {count} dead letters, got {letters:?}"
            );
            letters.extend(self.take_dead_letters().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        letters
    }

    pub async fn call_logs(&self) -> BTreeMap<String, CallLogRow> {
        let rows: Vec<CallLogRow> = sqlx::query_as(
            "SELECT call_id, accountcode, batch_id, phone_number, call_status, disposition,
                    duration, start_time, end_time, recording_url, server_code, error_message,
                    custom_data
               FROM call_logs
              WHERE batch_id IS DISTINCT FROM 999999",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|row| (row.call_id.clone(), row))
            .collect()
    }

    pub async fn batches(&self) -> BTreeMap<i32, BatchRow> {
        let rows: Vec<BatchRow> = sqlx::query_as(
            "SELECT batch_id, accountcode, total_calls, completed_calls, failed_calls, batch_status
               FROM call_batches
              WHERE batch_id <> 999999",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().map(|row| (row.batch_id, row)).collect()
    }

    pub async fn batch(&self, batch_id: i32) -> BatchRow {
        self.batches()
            .await
            .remove(&batch_id)
            .unwrap_or_else(|| panic!("no call_batches row for {batch_id}"))
    }

    /// Every message now in `callbridge.dead` (taken off the queue).
    pub async fn take_dead_letters(&self) -> Vec<DeadLetter> {
        self.take_all(DEAD_QUEUE)
            .await
            .into_iter()
            .map(|(body, properties, _)| {
                let error = properties
                    .headers()
                    .as_ref()
                    .and_then(|headers| headers.inner().get(ERROR_HEADER).cloned())
                    .map(|value| match value {
                        AMQPValue::LongString(text) => text.to_string(),
                        other => format!("{other:?}"),
                    });
                DeadLetter {
                    message_id: properties.message_id().as_ref().map(|id| id.to_string()),
                    error,
                    body,
                }
            })
            .collect()
    }

    /// Every outcome message now in the test's subscriber queue (taken off the queue).
    pub async fn take_outcomes(&self) -> Vec<Outcome> {
        self.take_all(OUTCOME_SUBSCRIBER)
            .await
            .into_iter()
            .map(|(body, properties, routing_key)| Outcome {
                routing_key,
                message_id: properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&body).unwrap(),
            })
            .collect()
    }

    async fn take_all(&self, queue: &str) -> Vec<(Vec<u8>, BasicProperties, String)> {
        let channel = self.connection.create_channel().await.unwrap();
        let mut messages = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            message.ack(BasicAckOptions::default()).await.unwrap();
            messages.push((
                message.delivery.data.clone(),
                message.delivery.properties.clone(),
                message.delivery.routing_key.to_string(),
            ));
        }
        channel.close(200, "done".into()).await.ok();
        messages
    }

    /// Sets what the submitter would: the batch exists with `total_calls` accepted.
    pub async fn submitted_batch(&self, batch_id: i32, total_calls: i32) {
        sqlx::query(
            "INSERT INTO call_batches (batch_id, accountcode, total_calls, batch_status)
             VALUES ($1, $2, $3, 'submitted')",
        )
        .bind(batch_id)
        .bind(ACCOUNT_CODE)
        .bind(total_calls)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

pub fn config_from(env: Vec<(String, String)>) -> PersisterConfig {
    Settings::load_from(env)
        .expect("test settings load")
        .persister()
        .expect("test persister settings")
}

/// A persister running in this process.
pub struct RunningPersister {
    pub health_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningPersister {
    pub async fn start(config: PersisterConfig) -> RunningPersister {
        RunningPersister::start_with_clock(config, callbridge_types::clock::SystemClock::shared())
            .await
    }

    /// [`RunningPersister::start`] reading the time from `clock`.
    pub async fn start_with_clock(
        config: PersisterConfig,
        clock: callbridge_types::clock::SharedClock,
    ) -> RunningPersister {
        let persister = Persister::build(config)
            .await
            .expect("persister builds")
            .with_clock(clock);
        let health_addr = persister.health_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(persister.run_until_stopped(shutdown.clone()));
        RunningPersister {
            health_addr,
            shutdown,
            task,
        }
    }

    /// `GET /readyz`'s status code.
    pub async fn readyz(&self) -> u16 {
        reqwest::get(format!("http://{}/readyz", self.health_addr))
            .await
            .map(|response| response.status().as_u16())
            .unwrap_or(0)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.health_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn wait_until_ready(&self) {
        wait_until("persister ready", || async { self.readyz().await == 200 }).await;
    }

    /// Asks it to stop, as SIGTERM does, without waiting.
    pub fn request_stop(&self) {
        self.shutdown.cancel();
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("persister stops after shutdown")
            .unwrap()
            .expect("persister ran without error");
    }
}

/// The columns of `call_logs` callbridge writes.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CallLogRow {
    pub call_id: String,
    pub accountcode: String,
    pub batch_id: Option<i32>,
    pub phone_number: String,
    pub call_status: String,
    pub disposition: Option<String>,
    pub duration: Option<i32>,
    pub start_time: Option<NaiveDateTime>,
    pub end_time: Option<NaiveDateTime>,
    pub recording_url: Option<String>,
    pub server_code: Option<String>,
    pub error_message: Option<String>,
    pub custom_data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct BatchRow {
    pub batch_id: i32,
    pub accountcode: String,
    pub total_calls: Option<i32>,
    pub completed_calls: Option<i32>,
    pub failed_calls: Option<i32>,
    pub batch_status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub routing_key: String,
    pub message_id: String,
    pub body: Value,
}

/// An envelope as the ingress makes it from `payload`, with `event_id`.
pub fn envelope(event_id: &str, payload: Value) -> Envelope {
    let validated = parse_callback(payload.to_string().as_bytes(), ACCOUNT_CODE)
        .unwrap_or_else(|error| panic!("test payload is invalid: {error}"));
    Envelope::new(
        event_id.to_owned(),
        Utc::now(),
        validated.event,
        &validated.payload,
    )
}

/// One event of call `call` in batch `batch`: `kind` is the event type without `call_`,
/// `extra` adds or overrides payload fields.
pub fn call_event(batch: i32, call: &str, kind: &str, extra: Value) -> Envelope {
    let mut payload = serde_json::json!({
        "event_type": format!("call_{kind}"),
        "batch_id": batch,
        "call_id": call,
        "phone_number": "9876543210",
    });
    if let (Value::Object(fields), Value::Object(extra)) = (&mut payload, extra) {
        fields.extend(extra);
    }
    // As the ingress does for a sender without webhook-id: the hash of the body.
    let event_id = event_id_for(None, payload.to_string().as_bytes());
    envelope(&event_id, payload)
}

/// Polls `condition` until it holds; panics naming `what` after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs of the code under test, shown by the test runner for failing tests.
pub fn init_test_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,lapin=warn".into()),
        )
        .with_test_writer()
        .try_init();
}
