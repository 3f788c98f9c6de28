//! The ingress: its listener and the callbacks it accepts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret, Settings, at_least, bind_address, de, setting_name};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackSettings {
    /// `CALLBACK_SECRET_KEY`: several, comma-separated, while rotating.
    #[serde(deserialize_with = "de::secret_list")]
    pub secrets: Vec<Secret>,
    /// `CALLBACK_VERIFICATION_ENABLED`.
    #[serde(deserialize_with = "de::strict_bool")]
    pub verification_enabled: bool,
    pub max_body_bytes: usize,
    pub confirm_timeout_ms: u64,
    pub publisher_channels: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            secrets: Vec::new(),
            verification_enabled: true,
            max_body_bytes: 64 * 1024,
            confirm_timeout_ms: 5_000,
            publisher_channels: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressSettings {
    pub bind: String,
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
    pub retry_after_secs: u64,
    pub shutdown_timeout_secs: u64,
    /// Time for a client to send a request's head (slow headers get a 408).
    pub header_timeout_ms: u64,
    /// Time for a client to send a request's body once its head is in (a stalled or
    /// dripping body gets a 408).
    pub body_timeout_ms: u64,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            bind: "0.0.0.0:8080".to_owned(),
            tls_cert_path: None,
            tls_key_path: None,
            retry_after_secs: 5,
            shutdown_timeout_secs: 30,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            keep_alive_secs: 30,
        }
    }
}

/// Certificate and key of the ingress's optional rustls listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressConfig {
    pub bind: SocketAddr,
    pub amqp_url: Secret,
    /// Empty only when verification is disabled.
    pub secrets: Vec<Secret>,
    pub verification_enabled: bool,
    pub default_accountcode: Option<String>,
    pub max_body_bytes: usize,
    pub confirm_timeout: Duration,
    pub publisher_channels: usize,
    pub retry_after: Duration,
    pub shutdown_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub keep_alive: Duration,
    pub tls: Option<TlsFiles>,
}

impl Settings {
    /// The ingress: broker, bind address and callback secrets (required unless
    /// `CALLBACK_VERIFICATION_ENABLED=false`).
    pub fn ingress(&self) -> Result<IngressConfig, ConfigError> {
        let callback = &self.callback;
        if callback.verification_enabled && callback.secrets.is_empty() {
            return Err(ConfigError::Missing {
                scope: "callback",
                setting: "CALLBACK_SECRET_KEY (or CALLBACK_VERIFICATION_ENABLED=false to accept unsigned callbacks)".to_owned(),
            });
        }
        let tls = match (&self.ingress.tls_cert_path, &self.ingress.tls_key_path) {
            (Some(cert_path), Some(key_path)) => Some(TlsFiles {
                cert_path: cert_path.clone(),
                key_path: key_path.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    setting_name("ingress.tls_key_path"),
                    format!(
                        "is required when {} is set",
                        setting_name("ingress.tls_cert_path")
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    setting_name("ingress.tls_cert_path"),
                    format!(
                        "is required when {} is set",
                        setting_name("ingress.tls_key_path")
                    ),
                ));
            }
        };
        at_least(callback.max_body_bytes as u64, 1, "callback.max_body_bytes")?;
        at_least(
            callback.confirm_timeout_ms,
            1,
            "callback.confirm_timeout_ms",
        )?;
        at_least(
            callback.publisher_channels as u64,
            1,
            "callback.publisher_channels",
        )?;
        at_least(
            self.ingress.header_timeout_ms,
            1,
            "ingress.header_timeout_ms",
        )?;
        at_least(self.ingress.body_timeout_ms, 1, "ingress.body_timeout_ms")?;
        Ok(IngressConfig {
            bind: bind_address(&self.ingress.bind, "ingress.bind")?,
            amqp_url: self.amqp_url()?,
            secrets: callback.secrets.clone(),
            verification_enabled: callback.verification_enabled,
            default_accountcode: self.api.account_code.clone(),
            max_body_bytes: callback.max_body_bytes,
            confirm_timeout: Duration::from_millis(callback.confirm_timeout_ms),
            publisher_channels: callback.publisher_channels,
            retry_after: Duration::from_secs(self.ingress.retry_after_secs),
            shutdown_timeout: Duration::from_secs(self.ingress.shutdown_timeout_secs),
            header_timeout: Duration::from_millis(self.ingress.header_timeout_ms),
            body_timeout: Duration::from_millis(self.ingress.body_timeout_ms),
            keep_alive: Duration::from_secs(self.ingress.keep_alive_secs),
            tls,
        })
    }
}
