//! Configuration, loaded once at start and validated per binary (README "Configuration").
//!
//! Layers, later ones winning:
//! 1. built-in defaults (documented in `config/callbridge.example.toml`);
//! 2. an optional TOML or JSON file named by `CALLBRIDGE_CONFIG`;
//! 3. `CALLBRIDGE__<SECTION>__<KEY>` environment variables (e.g.
//!    `CALLBRIDGE__PERSISTER__BATCH_SIZE=200`);
//! 4. the seed's own variables, verbatim (`CENTRALIZED_CALLING_API_KEY`,
//!    `CLIENT_CALLING_ASYNC_DB_URL`, `CALLBACK_SECRET_KEY`, …) and callbridge's added ones
//!    (`RABBITMQ_URL`, `INGRESS_BIND`, `RUST_LOG`, `OTEL_*`, …); see [`VERBATIM_VARIABLES`].
//!
//! An empty variable counts as unset, as the seed's `os.getenv` checks treat it.
//! [`Settings::load`] checks types; the per-binary accessors ([`Settings::ingress`],
//! [`Settings::persister`], [`Settings::submitter`], …) check that what that binary
//! needs is present, so each binary only requires its own settings. Every error is one
//! line naming the variable to fix, and never quotes a secret.

mod api_key;
mod database_url;
mod de;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use api_key::{decrypt_api_key, encrypt_api_key};
pub use database_url::{DatabaseIdentity, DatabaseUrl, normalise_database_url};
pub use de::parse_strict_bool;
pub use secret::Secret;

/// Environment variable naming the optional config file.
pub const CONFIG_FILE_VARIABLE: &str = "CALLBRIDGE_CONFIG";
/// Prefix and separator of the generic `CALLBRIDGE__<SECTION>__<KEY>` variables.
const ENV_PREFIX: &str = "CALLBRIDGE";
const ENV_SEPARATOR: &str = "__";

/// The database the seed's guide creates, on the local default server.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/client_calling_db";
pub const DEFAULT_RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How a verbatim variable's text becomes a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariableKind {
    Text,
    /// Checked with [`parse_strict_bool`] as it is read, so the error names this variable.
    StrictBool,
}

/// The seed's and callbridge's own plain environment variables, each with the setting it sets.
pub const VERBATIM_VARIABLES: &[(&str, &str, VariableKind)] = &[
    (
        "CENTRALIZED_CALLING_BASE_URL",
        "api.base_url",
        VariableKind::Text,
    ),
    (
        "CENTRALIZED_CALLING_API_KEY",
        "api.api_key",
        VariableKind::Text,
    ),
    (
        "CENTRALIZED_CALLING_API_KEY_ENCRYPTED",
        "api.api_key_encrypted",
        VariableKind::Text,
    ),
    ("ENCRYPTION_KEY", "api.encryption_key", VariableKind::Text),
    (
        "CENTRALIZED_CALLING_CALLBACK_URL",
        "api.callback_url",
        VariableKind::Text,
    ),
    (
        "CENTRALIZED_CALLING_ACCOUNT_CODE",
        "api.account_code",
        VariableKind::Text,
    ),
    ("CLIENT_CALLING_DB_URL", "database.url", VariableKind::Text),
    (
        "CLIENT_CALLING_ASYNC_DB_URL",
        "database.async_url",
        VariableKind::Text,
    ),
    (
        "CALLBACK_SECRET_KEY",
        "callback.secrets",
        VariableKind::Text,
    ),
    (
        "CALLBACK_VERIFICATION_ENABLED",
        "callback.verification_enabled",
        VariableKind::StrictBool,
    ),
    ("RABBITMQ_URL", "amqp.url", VariableKind::Text),
    ("INGRESS_BIND", "ingress.bind", VariableKind::Text),
    ("PERSISTER_BIND", "persister.bind", VariableKind::Text),
    ("SUBMITTER_BIND", "submitter.bind", VariableKind::Text),
    ("SIM_BIND", "sim.bind", VariableKind::Text),
    ("SIM_API_KEY", "sim.api_key", VariableKind::Text),
    ("SIM_CALLBACK_URL", "sim.callback_url", VariableKind::Text),
    (
        "SIM_CALLBACK_SECRET",
        "sim.callback_secret",
        VariableKind::Text,
    ),
    ("RUST_LOG", "telemetry.log_filter", VariableKind::Text),
    (
        "OTEL_SERVICE_NAME",
        "telemetry.service_name",
        VariableKind::Text,
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "telemetry.otlp_endpoint",
        VariableKind::Text,
    ),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "telemetry.otlp_protocol",
        VariableKind::Text,
    ),
];

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
    pub sim: SimSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `CLIENT_CALLING_DB_URL`.
    pub url: Option<Secret>,
    /// `CLIENT_CALLING_ASYNC_DB_URL`.
    pub async_url: Option<Secret>,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            async_url: None,
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `RABBITMQ_URL`.
    pub url: Secret,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: Secret::from(DEFAULT_RABBITMQ_URL),
        }
    }
}

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
pub struct ApiSettings {
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub api_key_encrypted: Option<Secret>,
    pub encryption_key: Option<Secret>,
    pub callback_url: Option<String>,
    /// `CENTRALIZED_CALLING_ACCOUNT_CODE`: sent with dispatch-calls, and the account code
    /// of a callback that carries none.
    pub account_code: Option<String>,
    pub request_timeout_ms: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            base_url: None,
            api_key: None,
            api_key_encrypted: None,
            encryption_key: None,
            callback_url: None,
            account_code: None,
            request_timeout_ms: 30_000,
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersisterSettings {
    pub bind: String,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger_ms: u64,
    #[serde(deserialize_with = "de::strict_bool")]
    pub migrate_on_start: bool,
    /// Batch transactions in flight at once: while one waits for Postgres, the next is
    /// already on its way. Each holds a pooled connection.
    pub concurrency: usize,
}

impl Default for PersisterSettings {
    fn default() -> Self {
        PersisterSettings {
            bind: "0.0.0.0:9101".to_owned(),
            // Room for every batch in flight and the next one gathering.
            prefetch: 1_000,
            batch_size: 200,
            // Short: under load batches fill while every slot is busy, so the linger only
            // matters when traffic is light, where it is added to every event's latency.
            batch_linger_ms: 5,
            migrate_on_start: false,
            concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubmitterSettings {
    pub bind: String,
    pub poll_interval_ms: u64,
    pub lease_secs: u64,
    pub max_attempts: u32,
    pub batch_claim_limit: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    #[serde(deserialize_with = "de::strict_bool")]
    pub migrate_on_start: bool,
    pub analyze_after_rows: u64,
}

impl Default for SubmitterSettings {
    fn default() -> Self {
        SubmitterSettings {
            bind: "0.0.0.0:9102".to_owned(),
            poll_interval_ms: 5_000,
            lease_secs: 120,
            max_attempts: 8,
            batch_claim_limit: 1_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            migrate_on_start: false,
            analyze_after_rows: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    pub bind: String,
    pub api_key: Option<Secret>,
    pub callback_url: Option<String>,
    pub callback_secret: Option<Secret>,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            bind: "0.0.0.0:8090".to_owned(),
            api_key: None,
            callback_url: None,
            callback_secret: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG` syntax.
    pub log_filter: String,
    /// Also log to this file, rotated by size (the seed's `RotatingFileHandler`).
    pub log_file: Option<PathBuf>,
    pub log_file_max_bytes: u64,
    /// Rotated files kept besides the live one.
    pub log_file_backups: usize,
    /// `OTEL_SERVICE_NAME`; each binary's own name when unset.
    pub service_name: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: OtlpProtocol,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: LogFormat::Auto,
            log_filter: "info".to_owned(),
            log_file: None,
            log_file_max_bytes: 10 * 1024 * 1024,
            log_file_backups: 5,
            service_name: None,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
        }
    }
}

/// Log line format on stdout (and in the log file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// JSON unless stdout is a terminal: structured in production, readable locally.
    Auto,
    Json,
    Pretty,
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err(format!("must be auto, json or pretty, got {value:?}")),
        }
    }
}

/// The OTLP transports the SDK is built with (the OpenTelemetry spec's default is
/// `http/protobuf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl TryFrom<String> for OtlpProtocol {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            _ => Err(format!("must be grpc or http/protobuf, got {value:?}")),
        }
    }
}

/// The database a binary connects to.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// A `postgres://` URL (may hold a password).
    pub url: Secret,
    /// `user@host:port/database`, for messages.
    pub identity: DatabaseIdentity,
    pub max_connections: u32,
}

/// The centralized calling API, as the submitter and the CLI use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub base_url: url::Url,
    pub api_key: Secret,
    pub callback_url: Option<url::Url>,
    pub account_code: Option<String>,
    pub request_timeout: Duration,
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

#[derive(Debug, Clone, PartialEq)]
pub struct PersisterConfig {
    pub bind: SocketAddr,
    pub database: DatabaseConfig,
    pub amqp_url: Secret,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub migrate_on_start: bool,
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitterConfig {
    pub bind: SocketAddr,
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
    pub batch_claim_limit: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub migrate_on_start: bool,
    /// Once this many rows were claimed since the last time, the next idle round runs
    /// `ANALYZE local_call_queue` (0: never; autovacuum alone keeps the statistics).
    pub analyze_after_rows: u64,
}

impl Settings {
    /// Loads from the process environment (and the file it names).
    pub fn load() -> Result<Settings, ConfigError> {
        Settings::load_from(std::env::vars())
    }

    /// Loads from the given environment instead of the process's, so tests need not
    /// touch process-wide state.
    pub fn load_from<I, K, V>(env: I) -> Result<Settings, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .filter(|(_, value)| !value.trim().is_empty())
            .collect();

        let mut builder = config::Config::builder();
        if let Some(path) = env.get(CONFIG_FILE_VARIABLE) {
            if !Path::new(path).is_file() {
                return Err(ConfigError::invalid(
                    CONFIG_FILE_VARIABLE,
                    format!("names {path:?}, which is not a readable file"),
                ));
            }
            builder = builder.add_source(config::File::from(Path::new(path)).required(true));
        }
        let prefixed: config::Map<String, String> = env
            .iter()
            .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .source(Some(prefixed)),
        );
        for &(variable, key, kind) in VERBATIM_VARIABLES {
            let Some(value) = env.get(variable) else {
                continue;
            };
            builder = match kind {
                VariableKind::Text => builder.set_override(key, value.as_str()),
                VariableKind::StrictBool => {
                    let value = parse_strict_bool(value)
                        .map_err(|problem| ConfigError::invalid(variable, problem))?;
                    builder.set_override(key, value)
                }
            }
            .map_err(|error| ConfigError::invalid(variable, error.to_string()))?;
        }

        let sources = Sources {
            env: &env,
            file: env.get(CONFIG_FILE_VARIABLE).map(String::as_str),
        };
        builder
            .build()
            .and_then(|config| config.try_deserialize::<Settings>())
            .map_err(|error| sources.describe(&error))
    }

    /// The database URL: `CLIENT_CALLING_DB_URL` or `CLIENT_CALLING_ASYNC_DB_URL` (either
    /// is enough; both must then name the same database), else the local default.
    pub fn database(&self) -> Result<DatabaseConfig, ConfigError> {
        let sync = self
            .database
            .url
            .as_ref()
            .map(|url| normalise_database_url(url.expose(), "CLIENT_CALLING_DB_URL"))
            .transpose()?;
        let asynchronous = self
            .database
            .async_url
            .as_ref()
            .map(|url| normalise_database_url(url.expose(), "CLIENT_CALLING_ASYNC_DB_URL"))
            .transpose()?;
        let chosen = match (sync, asynchronous) {
            (Some(sync), Some(asynchronous)) if sync.identity != asynchronous.identity => {
                return Err(ConfigError::invalid(
                    "CLIENT_CALLING_DB_URL and CLIENT_CALLING_ASYNC_DB_URL",
                    format!(
                        "name different databases ({} and {}); set one, or make them agree",
                        sync.identity, asynchronous.identity
                    ),
                ));
            }
            (Some(url), _) | (None, Some(url)) => url,
            (None, None) => normalise_database_url(DEFAULT_DATABASE_URL, "CLIENT_CALLING_DB_URL")?,
        };
        at_least(
            self.database.max_connections.into(),
            1,
            "database.max_connections",
        )?;
        Ok(DatabaseConfig {
            url: Secret::from(chosen.url),
            identity: chosen.identity,
            max_connections: self.database.max_connections,
        })
    }

    /// `RABBITMQ_URL`, checked to be an AMQP URL.
    pub fn amqp_url(&self) -> Result<Secret, ConfigError> {
        let raw = self.amqp.url.expose().trim();
        let setting = setting_name("amqp.url");
        match url::Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "amqp" | "amqps") && url.has_host() => {
                Ok(Secret::from(raw))
            }
            // The URL is not quoted: it may hold a password.
            _ => Err(ConfigError::invalid(
                setting,
                "must be an amqp:// or amqps:// URL such as amqp://user:pass@host:5672/%2f",
            )),
        }
    }

    /// The centralized API key: `CENTRALIZED_CALLING_API_KEY`, or
    /// `CENTRALIZED_CALLING_API_KEY_ENCRYPTED` decrypted with `ENCRYPTION_KEY`.
    pub fn api_key(&self) -> Result<Secret, ConfigError> {
        match (&self.api.api_key, &self.api.api_key_encrypted) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "CENTRALIZED_CALLING_API_KEY",
                "and CENTRALIZED_CALLING_API_KEY_ENCRYPTED are both set; set only one",
            )),
            (Some(plain), None) => Ok(plain.clone()),
            (None, Some(token)) => {
                let key = self
                    .api
                    .encryption_key
                    .as_ref()
                    .ok_or(ConfigError::Missing {
                    scope: "centralized calling",
                    setting:
                        "ENCRYPTION_KEY (needed to decrypt CENTRALIZED_CALLING_API_KEY_ENCRYPTED)"
                            .to_owned(),
                })?;
                decrypt_api_key(key.expose(), token.expose())
            }
            (None, None) => Err(missing_centralized(&[MISSING_API_KEY])),
        }
    }

    /// What talking to the centralized system needs: base URL and API key (all missing
    /// ones named at once, in the seed's words).
    pub fn api(&self) -> Result<ApiConfig, ConfigError> {
        let mut missing = Vec::new();
        if self.api.base_url.is_none() {
            missing.push("CENTRALIZED_CALLING_BASE_URL");
        }
        if self.api.api_key.is_none() && self.api.api_key_encrypted.is_none() {
            missing.push(MISSING_API_KEY);
        }
        if !missing.is_empty() {
            return Err(missing_centralized(&missing));
        }
        let base_url = http_url(
            self.api.base_url.as_deref().unwrap_or_default(),
            "api.base_url",
        )?;
        let callback_url = self
            .api
            .callback_url
            .as_deref()
            .map(|url| http_url(url, "api.callback_url"))
            .transpose()?;
        at_least(self.api.request_timeout_ms, 1, "api.request_timeout_ms")?;
        Ok(ApiConfig {
            base_url,
            api_key: self.api_key()?,
            callback_url,
            account_code: self.api.account_code.clone(),
            request_timeout: Duration::from_millis(self.api.request_timeout_ms),
        })
    }

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

    /// The persister: database, broker and batching.
    pub fn persister(&self) -> Result<PersisterConfig, ConfigError> {
        let persister = &self.persister;
        at_least(persister.prefetch.into(), 1, "persister.prefetch")?;
        at_least(persister.batch_size as u64, 1, "persister.batch_size")?;
        at_least(persister.concurrency as u64, 1, "persister.concurrency")?;
        let database = self.database()?;
        // The outbox relay and the active-batches gauge share the pool with the batches.
        if persister.concurrency as u64 >= u64::from(database.max_connections) {
            return Err(ConfigError::invalid(
                setting_name("persister.concurrency"),
                format!(
                    "must be below {} ({}), got {}: each batch in flight holds a database \
                     connection, and the outbox relay needs one more",
                    setting_name("database.max_connections"),
                    database.max_connections,
                    persister.concurrency
                ),
            ));
        }
        Ok(PersisterConfig {
            bind: bind_address(&persister.bind, "persister.bind")?,
            database,
            amqp_url: self.amqp_url()?,
            prefetch: persister.prefetch,
            batch_size: persister.batch_size,
            batch_linger: Duration::from_millis(persister.batch_linger_ms),
            migrate_on_start: persister.migrate_on_start,
            concurrency: persister.concurrency,
        })
    }

    /// The submitter: database and the centralized API.
    pub fn submitter(&self) -> Result<SubmitterConfig, ConfigError> {
        let submitter = &self.submitter;
        at_least(submitter.poll_interval_ms, 1, "submitter.poll_interval_ms")?;
        at_least(submitter.lease_secs, 1, "submitter.lease_secs")?;
        at_least(submitter.max_attempts.into(), 1, "submitter.max_attempts")?;
        at_least(
            submitter.batch_claim_limit.into(),
            1,
            "submitter.batch_claim_limit",
        )?;
        if submitter.backoff_max_ms < submitter.backoff_base_ms {
            return Err(ConfigError::invalid(
                setting_name("submitter.backoff_max_ms"),
                format!(
                    "must be at least {} ({}), got {}",
                    setting_name("submitter.backoff_base_ms"),
                    submitter.backoff_base_ms,
                    submitter.backoff_max_ms
                ),
            ));
        }
        Ok(SubmitterConfig {
            bind: bind_address(&submitter.bind, "submitter.bind")?,
            database: self.database()?,
            api: self.api()?,
            poll_interval: Duration::from_millis(submitter.poll_interval_ms),
            lease: Duration::from_secs(submitter.lease_secs),
            max_attempts: submitter.max_attempts,
            batch_claim_limit: submitter.batch_claim_limit,
            backoff_base: Duration::from_millis(submitter.backoff_base_ms),
            backoff_max: Duration::from_millis(submitter.backoff_max_ms),
            migrate_on_start: submitter.migrate_on_start,
            analyze_after_rows: submitter.analyze_after_rows,
        })
    }

    /// The simulator's listen address (`SIM_BIND`); its other settings are optional.
    pub fn sim_bind(&self) -> Result<SocketAddr, ConfigError> {
        bind_address(&self.sim.bind, "sim.bind")
    }
}

const MISSING_API_KEY: &str =
    "CENTRALIZED_CALLING_API_KEY (or CENTRALIZED_CALLING_API_KEY_ENCRYPTED with ENCRYPTION_KEY)";

fn missing_centralized(settings: &[&str]) -> ConfigError {
    ConfigError::Missing {
        scope: "centralized calling",
        setting: settings.join(", "),
    }
}

/// The variable an operator sets for `key` (`section.field`): the verbatim one when the
/// seed or callbridge names one, else `CALLBRIDGE__SECTION__FIELD`.
pub fn setting_name(key: &str) -> String {
    VERBATIM_VARIABLES
        .iter()
        .find(|(_, verbatim_key, _)| *verbatim_key == key)
        .map(|(variable, _, _)| (*variable).to_owned())
        .unwrap_or_else(|| prefixed_variable(key))
}

fn prefixed_variable(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.replace('.', ENV_SEPARATOR).to_ascii_uppercase()
    )
}

/// What was loaded, to name the variable (or file entry) a bad value came from.
struct Sources<'a> {
    env: &'a BTreeMap<String, String>,
    file: Option<&'a str>,
}

impl Sources<'_> {
    /// The layer that supplied `key`, highest first: a verbatim variable, a
    /// `CALLBRIDGE__` variable, else the file.
    fn name_of(&self, key: &str) -> String {
        if let Some((variable, _, _)) =
            VERBATIM_VARIABLES
                .iter()
                .find(|(variable, verbatim_key, _)| {
                    *verbatim_key == key && self.env.contains_key(*variable)
                })
        {
            return (*variable).to_owned();
        }
        // An unknown section is reported alone, so a variable below it names it too.
        let prefixed = prefixed_variable(key);
        let below = format!("{prefixed}{ENV_SEPARATOR}");
        if let Some(variable) = self.env.keys().find(|variable| {
            let upper = variable.to_ascii_uppercase();
            upper == prefixed || upper.starts_with(&below)
        }) {
            return variable.clone();
        }
        match self.file {
            Some(file) => format!("{key} (in {file})"),
            None => setting_name(key),
        }
    }

    /// serde's `deny_unknown_fields` names the field and reports the enclosing section's
    /// key (none at the top level); name the setting an operator mistyped.
    fn unknown_field(&self, message: &str, section: Option<&str>) -> Option<ConfigError> {
        let field = message.strip_prefix("unknown field `")?.split('`').next()?;
        let full_key = match section {
            Some(section) => format!("{section}.{field}"),
            None => field.to_owned(),
        };
        let known = message
            .split_once(", expected ")
            .map_or("", |(_, known)| known);
        Some(ConfigError::invalid(
            self.name_of(&full_key),
            format!("is not a known setting (expected {known})"),
        ))
    }

    /// Turns the config crate's error into one line naming where the bad value came from.
    fn describe(&self, error: &config::ConfigError) -> ConfigError {
        use config::ConfigError as Raw;
        match error {
            Raw::Type {
                unexpected,
                expected,
                key: Some(key),
                ..
            } => ConfigError::invalid(
                self.name_of(key),
                format!("must be {expected}, got {unexpected}"),
            ),
            Raw::At { error, key, .. } => {
                let message = match error.as_ref() {
                    Raw::Message(message) => message.clone(),
                    other => other.to_string(),
                };
                if let Some(unknown) = self.unknown_field(&message, key.as_deref()) {
                    return unknown;
                }
                match key {
                    Some(key) => ConfigError::invalid(self.name_of(key), message),
                    None => ConfigError::invalid("configuration", message),
                }
            }
            Raw::Message(message) => self
                .unknown_field(message, None)
                .unwrap_or_else(|| ConfigError::invalid("configuration", message.clone())),
            Raw::FileParse { cause, .. } => {
                // TOML errors span lines (position, snippet, reason): keep position and reason.
                let cause = cause.to_string();
                let lines: Vec<&str> = cause
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect();
                let summary = match (lines.first(), lines.last()) {
                    (Some(first), Some(last)) if lines.len() > 1 => format!("{first}: {last}"),
                    _ => cause.clone(),
                };
                ConfigError::invalid(
                    CONFIG_FILE_VARIABLE,
                    format!(
                        "names a file that does not parse ({}): {summary}",
                        self.file.unwrap_or("?")
                    ),
                )
            }
            other => ConfigError::invalid("configuration", other.to_string()),
        }
    }
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
