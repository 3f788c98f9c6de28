//! A fresh RabbitMQ virtual host per test, created and deleted through the management
//! HTTP API (AMQP itself cannot create vhosts, and `rabbitmqctl` costs an Erlang VM
//! start per call).
//!
//! Environment:
//! - `CALLBRIDGE_TEST_RABBITMQ_MGMT` — management API base URL (default
//!   `http://127.0.0.1:15672`, user guest/guest).
//! - `CALLBRIDGE_TEST_AMQP` — AMQP base URL without a vhost (default
//!   `amqp://guest:guest@127.0.0.1:5672`).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const DEFAULT_MGMT: &str = "http://127.0.0.1:15672";
const DEFAULT_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672";
const MGMT_USER: &str = "guest";
const MGMT_PASSWORD: &str = "guest";

/// A RabbitMQ vhost named `cbtest-<uuid>` that only this test uses; deleted (with every
/// queue and exchange in it) when dropped.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    mgmt_base: String,
    amqp_base: String,
    client: reqwest::Client,
}

impl TestVhost {
    /// Creates the vhost and grants `guest` full permissions on it.
    ///
    /// Panics with the management API's answer when RabbitMQ is not reachable: a test
    /// cannot do anything useful without it.
    pub async fn new() -> TestVhost {
        Self::try_new()
            .await
            .expect("while creating a test RabbitMQ vhost (is RabbitMQ with the management plugin running? `make services`)")
    }

    /// Like [`TestVhost::new`], returning the error instead of panicking.
    pub async fn try_new() -> Result<TestVhost> {
        let vhost = TestVhost {
            name: format!("cbtest-{}", uuid::Uuid::new_v4().simple()),
            mgmt_base: std::env::var("CALLBRIDGE_TEST_RABBITMQ_MGMT")
                .unwrap_or_else(|_| DEFAULT_MGMT.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            amqp_base: std::env::var("CALLBRIDGE_TEST_AMQP")
                .unwrap_or_else(|_| DEFAULT_AMQP.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            client: reqwest::Client::new(),
        };
        let encoded = vhost.encoded_name();
        vhost
            .put(&format!("vhosts/{encoded}"), serde_json::json!({}))
            .await
            .with_context(|| format!("while creating vhost {}", vhost.name))?;
        vhost
            .put(
                &format!("permissions/{encoded}/{MGMT_USER}"),
                serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
            )
            .await
            .with_context(|| format!("while granting guest access to vhost {}", vhost.name))?;
        Ok(vhost)
    }

    /// The vhost's name (`cbtest-<uuid>`), unencoded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// AMQP URL of this vhost on the shared broker.
    pub fn amqp_url(&self) -> String {
        format!("{}/{}", self.amqp_base, self.encoded_name())
    }

    /// AMQP URL of this vhost reached through `addr` (e.g. a [`crate::proxy::TcpProxy`]),
    /// keeping the broker URL's credentials.
    pub fn amqp_url_via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&self.amqp_url()).expect("the AMQP base URL parses");
        url.set_host(Some(&addr.ip().to_string()))
            .expect("an IP address is a valid host");
        url.set_port(Some(addr.port()))
            .expect("an amqp URL accepts a port");
        url.to_string()
    }

    /// The broker's address (host and port of the AMQP base URL), e.g. as a proxy target.
    pub fn amqp_socket_addr(&self) -> SocketAddr {
        let url = url::Url::parse(&self.amqp_base).expect("the AMQP base URL parses");
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port().unwrap_or(5672);
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .ok()
            .and_then(|mut addrs| addrs.next())
            .expect("the AMQP base URL names a resolvable host")
    }

    /// GET `/api/<path>` from the management API as JSON. `{vhost}` in `path` is
    /// replaced by this vhost's encoded name, e.g. `queues/{vhost}/callbridge.persist`.
    pub async fn management_get(&self, path: &str) -> Result<Value> {
        let path = path.replace("{vhost}", &self.encoded_name());
        let url = format!("{}/api/{}", self.mgmt_base, path);
        let response = self
            .client
            .get(&url)
            .basic_auth(MGMT_USER, Some(MGMT_PASSWORD))
            .send()
            .await
            .with_context(|| format!("while requesting GET {url}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("while reading GET {url}"))?;
        if !status.is_success() {
            bail!("GET {url} answered {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("while parsing GET {url}: {body}"))
    }

    /// Ready messages in queue `name` of this vhost, read over AMQP with a passive declare
    /// (the management API's figures lag by seconds).
    pub async fn queue_depth(&self, name: &str) -> Result<u32> {
        let connection =
            lapin::Connection::connect(&self.amqp_url(), lapin::ConnectionProperties::default())
                .await
                .context("while connecting to read a queue's depth")?;
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                name.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .with_context(|| format!("while reading the depth of {name}"))?;
        connection.close(200, "bye".into()).await.ok();
        Ok(declared.message_count())
    }

    /// [`TestVhost::queue_depth`] once it reads `expected`, or as it reads after 5 s. A
    /// quorum queue applies an acknowledgement after the channel that sent it has moved
    /// on (even after its connection closed), so a count read right after messages were
    /// acknowledged (a replay, say) may still include them.
    pub async fn settled_queue_depth(&self, name: &str, expected: u32) -> Result<u32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let depth = self.queue_depth(name).await?;
            if depth == expected || std::time::Instant::now() > deadline {
                return Ok(depth);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Publishes `body` to `exchange` with `routing_key` on a confirmed channel and returns
    /// once the broker has confirmed it and `queue`, where it routes, counts it: a quorum
    /// queue can count a message a moment after confirming it (a CI run's console read 0
    /// of 2 just-confirmed dead letters), so a test starts from messages the queue's
    /// passive declare already reports.
    pub async fn publish_counted(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
        queue: &str,
    ) -> Result<()> {
        let before = self.queue_depth(queue).await?;
        let connection =
            lapin::Connection::connect(&self.amqp_url(), lapin::ConnectionProperties::default())
                .await
                .context("while connecting to publish")?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        let confirmation = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        connection.close(200, "bye".into()).await.ok();
        if !confirmation.is_ack() {
            bail!("the broker did not confirm the message to {exchange}: {confirmation:?}");
        }
        let depth = self.settled_queue_depth(queue, before + 1).await?;
        if depth != before + 1 {
            bail!("{queue} counts {depth} messages after one was added to its {before}");
        }
        Ok(())
    }

    /// The management API's view of queue `name` in this vhost (arguments, type,
    /// `messages`, `messages_ready`, `messages_unacknowledged`, …).
    pub async fn queue(&self, name: &str) -> Result<Value> {
        self.management_get(&format!("queues/{{vhost}}/{}", encode(name)))
            .await
    }

    /// The management API's view of exchange `name` in this vhost.
    pub async fn exchange(&self, name: &str) -> Result<Value> {
        self.management_get(&format!("exchanges/{{vhost}}/{}", encode(name)))
            .await
    }

    /// Every binding in this vhost.
    pub async fn bindings(&self) -> Result<Vec<Value>> {
        let value = self.management_get("bindings/{vhost}").await?;
        match value {
            Value::Array(items) => Ok(items),
            other => bail!("bindings answer is not a list: {other}"),
        }
    }

    fn encoded_name(&self) -> String {
        encode(&self.name)
    }

    /// PUT `body` to `/api/<path>` of the management API (a policy, say). `{vhost}` in
    /// `path` is replaced by this vhost's encoded name, as in [`TestVhost::management_get`].
    pub async fn management_put(&self, path: &str, body: Value) -> Result<()> {
        self.put(&path.replace("{vhost}", &self.encoded_name()), body)
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Result<()> {
        let url = format!("{}/api/{}", self.mgmt_base, path);
        let response = self
            .client
            .put(&url)
            .basic_auth(MGMT_USER, Some(MGMT_PASSWORD))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("while requesting PUT {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("PUT {url} answered {status}: {body}");
        }
        Ok(())
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        // Drop cannot await and may run inside a runtime that must not be blocked by a
        // nested one, so the DELETE runs on its own thread with its own tiny runtime;
        // joining it makes sure the vhost is gone before the test process exits.
        let url = format!("{}/api/vhosts/{}", self.mgmt_base, self.encoded_name());
        let name = self.name.clone();
        let deleter = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("could not delete test vhost {name}: {error}");
                    return;
                }
            };
            let outcome = runtime.block_on(async {
                reqwest::Client::new()
                    .delete(&url)
                    .basic_auth(MGMT_USER, Some(MGMT_PASSWORD))
                    .send()
                    .await
            });
            match outcome {
                Ok(response)
                    if response.status().is_success()
                        || response.status() == reqwest::StatusCode::NOT_FOUND => {}
                Ok(response) => eprintln!(
                    "could not delete test vhost {name}: DELETE answered {}",
                    response.status()
                ),
                Err(error) => eprintln!("could not delete test vhost {name}: {error}"),
            }
        });
        let _ = deleter.join();
    }
}

/// Percent-encodes one path segment for the management API (vhost and object names may
/// contain `/`).
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        // form encoding turns spaces into '+', which a path segment must not contain
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn vhost_exists(mgmt: &str, name: &str) -> bool {
        let response = reqwest::Client::new()
            .get(format!("{mgmt}/api/vhosts/{}", encode(name)))
            .basic_auth(MGMT_USER, Some(MGMT_PASSWORD))
            .send()
            .await
            .unwrap();
        response.status().is_success()
    }

    #[tokio::test]
    async fn vhost_accepts_amqp_connections_and_is_deleted_on_drop() {
        let vhost = TestVhost::new().await;
        let name = vhost.name().to_owned();
        let mgmt = vhost.mgmt_base.clone();
        assert!(vhost_exists(&mgmt, &name).await);

        let connection =
            lapin::Connection::connect(&vhost.amqp_url(), lapin::ConnectionProperties::default())
                .await
                .expect("guest can connect to the new vhost");
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                "testkit.probe".into(),
                lapin::options::QueueDeclareOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("guest may declare queues in the new vhost");
        let queue = vhost.queue("testkit.probe").await.unwrap();
        assert_eq!(queue["vhost"], name.as_str());
        connection.close(200, "done".into()).await.unwrap();

        drop(vhost);
        assert!(
            !vhost_exists(&mgmt, &name).await,
            "vhost {name} still exists"
        );
    }

    #[tokio::test]
    async fn amqp_url_via_keeps_credentials_and_vhost() {
        let vhost = TestVhost::new().await;
        let direct = url::Url::parse(&vhost.amqp_url()).unwrap();
        let via = url::Url::parse(&vhost.amqp_url_via("127.0.0.1:4242".parse().unwrap())).unwrap();
        assert_eq!(via.host_str(), Some("127.0.0.1"));
        assert_eq!(via.port(), Some(4242));
        assert_eq!(via.username(), direct.username());
        assert_eq!(via.password(), direct.password());
        assert_eq!(via.path(), format!("/{}", vhost.name()));
    }

    #[test]
    fn encode_escapes_slashes_and_spaces() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("a b"), "a%20b");
    }
}
