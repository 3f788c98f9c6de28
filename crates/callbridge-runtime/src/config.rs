//! Configuration, loaded once at start and validated per binary. Each service's settings
//! live in their own module; how the layers are read is in `layers`.
//!
//! Layers, later ones winning:
//! 1. built-in defaults (documented in `config/callbridge.example.toml`);
//! 2. an optional TOML or JSON file named by `CALLBRIDGE_CONFIG`;
//! 3. `CALLBRIDGE__<SECTION>__<KEY>` environment variables (e.g.
//!    `CALLBRIDGE__PERSISTER__BATCH_SIZE=200`);
//! 4. the seed's own variables, verbatim (`CENTRALIZED_CALLING_API_KEY`,
//!    `CLIENT_CALLING_ASYNC_DB_URL`, `CALLBACK_SECRET_KEY`, …) and the ones callbridge adds
//!    (`RABBITMQ_URL`, `INGRESS_BIND`, `RUST_LOG`, `OTEL_*`, …); see [`VERBATIM_VARIABLES`].
//!
//! An empty variable counts as unset, as the seed's `os.getenv` checks treat it.
//! [`Settings::load`] checks types; the per-binary accessors ([`Settings::ingress`],
//! [`Settings::persister`], [`Settings::submitter`], …) check that what that binary
//! needs is present, so each binary only requires its own settings. Every error is one
//! line naming the variable to fix, and never quotes a secret.

mod amqp;
mod api;
mod api_key;
mod console;
mod database;
mod database_url;
mod de;
mod ingress;
mod layers;
mod lifecycle;
mod numbers;
mod persister;
mod secret;
mod submitter;
mod telemetry;

use std::net::SocketAddr;

use serde::Deserialize;

pub use amqp::{AmqpSettings, DEFAULT_RABBITMQ_URL};
pub use api::{ApiConfig, ApiSettings};
pub use api_key::{decrypt_api_key, encrypt_api_key};
pub use console::{ConsoleConfig, ConsoleSettings, MIN_TOKEN_CHARS};
pub use database::{DEFAULT_DATABASE_URL, DatabaseConfig, DatabaseSettings};
pub use database_url::{DatabaseIdentity, DatabaseUrl, normalise_database_url};
pub use de::parse_strict_bool;
pub use ingress::{CallbackSettings, IngressConfig, IngressSettings, TlsFiles};
pub use layers::{CONFIG_FILE_VARIABLE, VERBATIM_VARIABLES, VariableKind, setting_name};
pub use lifecycle::{LifecycleConfig, LifecycleSettings, parse_duration};
pub use numbers::{NumbersConfig, NumbersSettings};
pub use persister::{PersisterConfig, PersisterSettings};
pub use secret::Secret;
pub use submitter::{SubmitterConfig, SubmitterSettings};
pub use telemetry::{LogFormat, OtlpProtocol, TelemetrySettings};

/// A setting that stops the binary at start. `Display` is the one line an operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `scope` reads like the seed's "Missing required centralized calling configuration".
    #[error("Missing required {scope} configuration: {setting}")]
    Missing {
        scope: &'static str,
        setting: String,
    },
    #[error("{setting} {problem}")]
    Invalid { setting: String, problem: String },
}

impl ConfigError {
    fn invalid(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: setting.into(),
            problem: one_line(&problem.into()),
        }
    }
}

/// Everything callbridge can be configured with, after layering, with types checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub callback: CallbackSettings,
    pub api: ApiSettings,
    pub ingress: IngressSettings,
    pub persister: PersisterSettings,
    pub submitter: SubmitterSettings,
    pub console: ConsoleSettings,
    pub numbers: NumbersSettings,
    pub telemetry: TelemetrySettings,
    pub lifecycle: LifecycleSettings,
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn at_least(value: u64, minimum: u64, key: &str) -> Result<(), ConfigError> {
    if value < minimum {
        return Err(ConfigError::invalid(
            setting_name(key),
            format!("must be at least {minimum}, got {value}"),
        ));
    }
    Ok(())
}

fn bind_address(raw: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    raw.trim().parse().map_err(|_| {
        ConfigError::invalid(
            setting_name(key),
            format!("must be an address such as 0.0.0.0:8080, got {raw:?}"),
        )
    })
}

fn http_url(raw: &str, key: &str) -> Result<url::Url, ConfigError> {
    match url::Url::parse(raw.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(ConfigError::invalid(
            setting_name(key),
            format!("must be an http:// or https:// URL, got {raw:?}"),
        )),
    }
}
