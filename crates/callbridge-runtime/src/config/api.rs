//! Where the centralized calling API is and the key to call it with (plain, or
//! Fernet-encrypted in `api_key`).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret, Settings, at_least, decrypt_api_key, http_url};

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

/// The centralized calling API, as the submitter and the CLI use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub base_url: url::Url,
    pub api_key: Secret,
    pub callback_url: Option<url::Url>,
    pub account_code: Option<String>,
    pub request_timeout: Duration,
}

impl Settings {
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
}

const MISSING_API_KEY: &str =
    "CENTRALIZED_CALLING_API_KEY (or CENTRALIZED_CALLING_API_KEY_ENCRYPTED with ENCRYPTION_KEY)";

fn missing_centralized(settings: &[&str]) -> ConfigError {
    ConfigError::Missing {
        scope: "centralized calling",
        setting: settings.join(", "),
    }
}
