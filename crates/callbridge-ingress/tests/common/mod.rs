//! Shared helpers: an ingress spawned on port 0 against a fresh RabbitMQ vhost, a
//! broker-side reader of `callbridge.persist`, and Python-made signatures.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use callbridge_ingress::Application;
use callbridge_runtime::config::{IngressConfig, Secret};
use callbridge_runtime::health::Readiness;
use callbridge_testkit::vhost::TestVhost;
use callbridge_types::topology::PERSIST_QUEUE;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "your_callback_secret_key";
pub const ACCOUNT_CODE: &str = "ACME";

/// The seed's callback payload.
pub const SEED_PAYLOAD: &str = r#"{"event_type":"call_status_update","accountcode":"YOUR_ACCOUNT_CODE","batch_id":12345,"call_id":"unique_call_id","phone_number":"9876543210","call_status":"completed","disposition":"answered","duration":120,"start_time":"2024-01-01T10:00:00Z","end_time":"2024-01-01T10:02:00Z","recording_url":"https://recordings.example.com/call_123.wav","custom_data":{"customer_id":"CUST001","campaign_id":"CAMP001"},"server_code":"server1","error_message":null}"#;

/// An ingress configuration for tests: port 0, one secret, short confirm timeout.
pub fn test_config(amqp_url: String) -> IngressConfig {
    IngressConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        amqp_url: Secret::new(amqp_url),
        secrets: vec![Secret::new(SECRET)],
        verification_enabled: true,
        default_accountcode: Some(ACCOUNT_CODE.to_owned()),
        max_body_bytes: 64 * 1024,
        confirm_timeout: Duration::from_secs(5),
        publisher_channels: 4,
        retry_after: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        keep_alive: Duration::from_secs(30),
        tls: None,
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub readiness: Readiness,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Spawns the ingress (against `config`) and waits until it reports ready.
    pub async fn spawn(config: IngressConfig) -> TestApp {
        let app = TestApp::spawn_unready(config).await;
        app.wait_until_ready().await;
        app
    }

    /// Spawns the ingress without waiting for the broker.
    pub async fn spawn_unready(config: IngressConfig) -> TestApp {
        init_test_logs();
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let application = Application::build(config).await.expect("ingress builds");
        let port = application.port();
        let readiness = application.readiness();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        TestApp {
            address: format!("{scheme}://127.0.0.1:{port}"),
            port,
            readiness,
            client: reqwest::Client::new(),
            shutdown,
            server,
        }
    }

    /// Polls readiness; panics after a minute, which only a broken broker explains.
    pub async fn wait_until_ready(&self) {
        for _ in 0..600 {
            if self.readiness.is_ready() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "ingress never became ready: {:?}",
            self.readiness.not_ready()
        );
    }

    pub async fn post_callback(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/callback", self.address))
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("request reaches the ingress")
    }

    /// POSTs `body` signed (by Python's `hmac`) with [`SECRET`].
    pub async fn post_signed(&self, body: &str) -> reqwest::Response {
        self.post_callback(
            body.to_owned(),
            &[("X-Signature", python_hmac_hex(SECRET, body.as_bytes()))],
        )
        .await
    }

    /// POSTs `body` signed in-process (for bursts, where spawning Python per request
    /// would dominate; the Python-signed path is covered request by request).
    pub async fn post_signed_fast(&self, body: &str) -> reqwest::Response {
        let signature = callbridge_types::signature::sign_hex(SECRET.as_bytes(), body.as_bytes());
        self.post_callback(body.to_owned(), &[("X-Signature", signature)])
            .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the ingress")
    }

    /// Stops the ingress the way SIGTERM does and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task did not panic")
            .expect("server stopped cleanly");
    }
}

/// `hex(HMAC-SHA256(secret, body))` computed by Python's `hmac`, the seed's signer.
pub fn python_hmac_hex(secret: &str, body: &[u8]) -> String {
    python(
        "import hmac, hashlib, sys\n\
         print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
        &[secret],
        body,
    )
}

/// The Standard Webhooks `v1,<base64>` signature computed by Python.
pub fn python_standard_signature(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    python(
        "import hmac, hashlib, base64, sys\n\
         msg = sys.argv[2].encode() + b'.' + sys.argv[3].encode() + b'.' + sys.stdin.buffer.read()\n\
         print('v1,' + base64.b64encode(hmac.new(sys.argv[1].encode(), msg, hashlib.sha256).digest()).decode())",
        &[secret, msg_id, &timestamp.to_string()],
        body,
    )
}

fn python(script: &str, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python3 failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Reads messages back from the broker.
pub struct BrokerReader {
    connection: Connection,
    pub channel: lapin::Channel,
}

/// A message as read from `callbridge.persist`.
#[derive(Debug)]
pub struct ReadMessage {
    pub routing_key: String,
    pub exchange: String,
    pub properties: BasicProperties,
    pub body: serde_json::Value,
}

impl ReadMessage {
    pub fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .expect("message_id is set")
            .to_string()
    }

    /// Headers as text (numbers rendered), for assertions.
    pub fn headers(&self) -> BTreeMap<String, String> {
        let Some(headers) = self.properties.headers() else {
            return BTreeMap::new();
        };
        headers
            .inner()
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    AMQPValue::ShortString(s) => s.to_string(),
                    AMQPValue::LongUInt(n) => n.to_string(),
                    AMQPValue::LongInt(n) => n.to_string(),
                    AMQPValue::LongLongInt(n) => n.to_string(),
                    AMQPValue::ShortShortUInt(n) => n.to_string(),
                    other => format!("{other:?}"),
                };
                (key.to_string(), text)
            })
            .collect()
    }
}

impl BrokerReader {
    pub async fn connect(amqp_url: &str) -> BrokerReader {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .expect("test reader connects");
        let channel = connection.create_channel().await.unwrap();
        BrokerReader {
            connection,
            channel,
        }
    }

    /// Takes the next message from `callbridge.persist`, if any.
    pub async fn take(&self) -> Option<ReadMessage> {
        let message = self
            .channel
            .basic_get(
                PERSIST_QUEUE.into(),
                BasicGetOptions {
                    // The test owns the message once read; nothing to redeliver.
                    no_ack: true,
                },
            )
            .await
            .expect("basic.get works")?;
        let delivery = message.delivery;
        Some(ReadMessage {
            routing_key: delivery.routing_key.to_string(),
            exchange: delivery.exchange.to_string(),
            properties: delivery.properties,
            body: serde_json::from_slice(&delivery.data).expect("message body is JSON"),
        })
    }

    /// Every message currently in `callbridge.persist`.
    pub async fn drain(&self) -> Vec<ReadMessage> {
        let mut messages = Vec::new();
        while let Some(message) = self.take().await {
            messages.push(message);
        }
        messages
    }
}

/// A vhost plus the ingress config pointing at it.
pub async fn vhost_and_config() -> (TestVhost, IngressConfig) {
    let vhost = TestVhost::new().await;
    let config = test_config(vhost.amqp_url());
    (vhost, config)
}

pub fn sha256_hex(body: &[u8]) -> String {
    python(
        "import hashlib, sys\nprint(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        &[],
        body,
    )
}

pub fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Logs to the test's captured output (`RUST_LOG` filters; warnings by default).
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Another test in this process may have installed it already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
