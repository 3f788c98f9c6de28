//! How the layers become [`Settings`]: defaults, the file named by `CALLBRIDGE_CONFIG`,
//! `CALLBRIDGE__<SECTION>__<KEY>` variables, then the verbatim variables; and how an
//! error names the variable (or file entry) an operator has to fix.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ConfigError, Settings, parse_strict_bool};

/// Environment variable naming the optional config file.
pub const CONFIG_FILE_VARIABLE: &str = "CALLBRIDGE_CONFIG";
/// Prefix and separator of the generic `CALLBRIDGE__<SECTION>__<KEY>` variables.
const ENV_PREFIX: &str = "CALLBRIDGE";
const ENV_SEPARATOR: &str = "__";

/// How a verbatim variable's text becomes a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariableKind {
    Text,
    /// Checked with [`parse_strict_bool`] as it is read, so the error names this variable.
    StrictBool,
}

/// The seed's environment variables and the ones callbridge adds, each with the setting
/// it sets. The simulator's `SIM_*` variables are not here: it reads them itself.
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
    ("CONSOLE_BIND", "console.bind", VariableKind::Text),
    (
        "CALLBRIDGE_CONSOLE_TOKEN",
        "console.operator_token",
        VariableKind::Text,
    ),
    (
        "CALLBRIDGE_CONSOLE_VIEWER_TOKEN",
        "console.viewer_token",
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
}

/// The variable an operator sets for `key` (`section.field`): the verbatim one when the
/// seed names one or callbridge adds one, else `CALLBRIDGE__SECTION__FIELD`.
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
