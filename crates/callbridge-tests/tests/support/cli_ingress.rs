//! An ingress in the test's own process on port 0, for the CLI tests that need a
//! callback receiver (`doctor`, `sign`, the end-to-end run).

use std::time::Duration;

use callbridge_runtime::config::{IngressConfig, Secret, TlsFiles};
use tokio_util::sync::CancellationToken;

use crate::common::ACCOUNT_CODE;

/// A running ingress (in this process) on port 0.
pub struct Ingress {
    pub url: String,
    shutdown: CancellationToken,
}

impl Ingress {
    pub async fn spawn(
        amqp_url: &str,
        secrets: &[&str],
        verification_enabled: bool,
        tls: Option<TlsFiles>,
    ) -> Ingress {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let config = IngressConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            amqp_url: Secret::new(amqp_url),
            secrets: secrets.iter().map(|secret| Secret::new(*secret)).collect(),
            verification_enabled,
            default_accountcode: Some(ACCOUNT_CODE.to_owned()),
            max_body_bytes: 64 * 1024,
            confirm_timeout: Duration::from_secs(5),
            publisher_channels: 1,
            retry_after: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(30),
            tls,
        };
        let application = callbridge_ingress::Application::build(config)
            .await
            .unwrap();
        let port = application.port();
        let readiness = application.readiness();
        let shutdown = CancellationToken::new();
        tokio::spawn(application.run_until_stopped(shutdown.clone()));
        for _ in 0..300 {
            if readiness.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(readiness.is_ready(), "the ingress never became ready");
        Ingress {
            url: format!("{scheme}://localhost:{port}/callback"),
            shutdown,
        }
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
