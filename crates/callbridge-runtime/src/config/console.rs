//! The operator console: its listener, who may sign in, and what it reads besides
//! Postgres (RabbitMQ's management API, the services' readiness, the centralized API).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{
    ApiConfig, ConfigError, DatabaseConfig, NumbersConfig, Secret, Settings, at_least,
    bind_address, de, http_url, setting_name,
};

/// A sign-in token shorter than this is refused at start: a token is the only thing
/// between the page and the campaigns' controls.
pub const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// `CONSOLE_BIND`.
    pub bind: String,
    /// `CALLBRIDGE_CONSOLE_TOKEN`: signs in an operator (may act).
    pub operator_token: Option<Secret>,
    /// `CALLBRIDGE_CONSOLE_VIEWER_TOKEN`: signs in a viewer (reads only).
    pub viewer_token: Option<Secret>,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Turn off only to serve
    /// plain HTTP on a machine of your own.
    #[serde(deserialize_with = "de::strict_bool")]
    pub secure_cookie: bool,
    /// A session ends this long after sign-in.
    pub session_hours: u64,
    /// How often an open page refreshes its figures.
    pub refresh_ms: u64,
    /// RabbitMQ's management API (queue depths of the services' backlog), with its
    /// user and password.
    pub management_url: Secret,
    /// The services whose readiness the console shows: `name=url` pairs separated by
    /// commas, each URL the service's health root (its `/readyz` is asked).
    pub services: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            bind: "0.0.0.0:9103".to_owned(),
            operator_token: None,
            viewer_token: None,
            secure_cookie: true,
            session_hours: 12,
            refresh_ms: 2_000,
            management_url: Secret::from("http://guest:guest@127.0.0.1:15672"),
            services: "ingress=http://127.0.0.1:8080,persister=http://127.0.0.1:9101,\
                       submitter=http://127.0.0.1:9102"
                .to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleConfig {
    pub bind: SocketAddr,
    pub database: DatabaseConfig,
    pub amqp_url: Secret,
    pub operator_token: Secret,
    pub viewer_token: Option<Secret>,
    pub secure_cookie: bool,
    pub session_ttl: Duration,
    pub refresh: Duration,
    pub management_url: Secret,
    /// Name and health root of each service shown on the services page.
    pub services: Vec<(String, url::Url)>,
    /// The centralized system's API, when configured: batch pages show its batch-status
    /// beside the local counts. Without it they show the local counts alone.
    pub api: Option<ApiConfig>,
    /// How the do-not-call page reads the numbers typed into it (as `callbridge dnc`).
    pub numbers: NumbersConfig,
}

impl Settings {
    /// The console: database, broker, the operator's token (required) and the viewer's.
    pub fn console(&self) -> Result<ConsoleConfig, ConfigError> {
        let console = &self.console;
        let operator_token = console.operator_token.clone().ok_or(ConfigError::Missing {
            scope: "console",
            setting: setting_name("console.operator_token"),
        })?;
        check_token(&operator_token, "console.operator_token")?;
        if let Some(viewer) = &console.viewer_token {
            check_token(viewer, "console.viewer_token")?;
            if viewer.expose().trim() == operator_token.expose().trim() {
                return Err(ConfigError::invalid(
                    setting_name("console.viewer_token"),
                    format!(
                        "must differ from {}: a viewer signing in with it would be an operator",
                        setting_name("console.operator_token")
                    ),
                ));
            }
        }
        at_least(console.session_hours, 1, "console.session_hours")?;
        at_least(console.refresh_ms, 100, "console.refresh_ms")?;
        http_url(console.management_url.expose(), "console.management_url").map_err(|_| {
            ConfigError::invalid(
                setting_name("console.management_url"),
                "must be an http:// or https:// URL such as http://user:pass@127.0.0.1:15672",
            )
        })?;
        Ok(ConsoleConfig {
            bind: bind_address(&console.bind, "console.bind")?,
            database: self.database()?,
            amqp_url: self.amqp_url()?,
            operator_token,
            viewer_token: console.viewer_token.clone(),
            secure_cookie: console.secure_cookie,
            session_ttl: Duration::from_secs(console.session_hours * 3600),
            refresh: Duration::from_millis(console.refresh_ms),
            management_url: console.management_url.clone(),
            services: parse_services(&console.services)?,
            api: self.api().ok(),
            numbers: self.numbers()?,
        })
    }
}

fn check_token(token: &Secret, key: &str) -> Result<(), ConfigError> {
    let chars = token.expose().trim().chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(ConfigError::invalid(
            setting_name(key),
            format!(
                "must be at least {MIN_TOKEN_CHARS} characters (it has {chars}); \
                 e.g. `openssl rand -hex 24`"
            ),
        ));
    }
    Ok(())
}

fn parse_services(raw: &str) -> Result<Vec<(String, url::Url)>, ConfigError> {
    let key = "console.services";
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, url) = pair.split_once('=').ok_or_else(|| {
                ConfigError::invalid(
                    setting_name(key),
                    format!("must be name=url pairs separated by commas, got {pair:?}"),
                )
            })?;
            Ok((name.trim().to_owned(), http_url(url, key)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<ConsoleConfig, ConfigError> {
        Settings::load_from(env.iter().copied())?.console()
    }

    #[test]
    fn the_operator_token_is_required_and_named() {
        let error = load(&[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Missing required console configuration: CALLBRIDGE_CONSOLE_TOKEN"
        );
    }

    #[test]
    fn short_or_shared_tokens_are_refused() {
        let short = load(&[("CALLBRIDGE_CONSOLE_TOKEN", "short")]).unwrap_err();
        assert!(
            short
                .to_string()
                .starts_with("CALLBRIDGE_CONSOLE_TOKEN must be at least 16 characters"),
            "{short}"
        );
        let same = load(&[
            ("CALLBRIDGE_CONSOLE_TOKEN", "0123456789abcdef"),
            ("CALLBRIDGE_CONSOLE_VIEWER_TOKEN", "0123456789abcdef"),
        ])
        .unwrap_err();
        assert!(
            same.to_string()
                .starts_with("CALLBRIDGE_CONSOLE_VIEWER_TOKEN must differ"),
            "{same}"
        );
        assert!(!same.to_string().contains("0123456789abcdef"));
    }

    #[test]
    fn defaults_bind_9103_and_list_the_three_services() {
        let config = load(&[("CALLBRIDGE_CONSOLE_TOKEN", "0123456789abcdef")]).unwrap();
        assert_eq!(config.bind, "0.0.0.0:9103".parse().unwrap());
        let names: Vec<&str> = config.services.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ingress", "persister", "submitter"]);
        assert!(config.secure_cookie);
        assert!(config.viewer_token.is_none());
        let bound = load(&[
            ("CALLBRIDGE_CONSOLE_TOKEN", "0123456789abcdef"),
            ("CONSOLE_BIND", "127.0.0.1:0"),
            ("CALLBRIDGE__CONSOLE__SERVICES", "sim=http://127.0.0.1:8090"),
        ])
        .unwrap();
        assert_eq!(bound.bind.port(), 0);
        assert_eq!(bound.services[0].0, "sim");
    }
}
