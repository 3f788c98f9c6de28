//! Phone numbers: the region a number without a country code belongs to, and the form
//! numbers are sent to the centralized API in. Read by `callbridge enqueue` and `dnc`
//! (which normalise numbers) and by the submitter (which matches numbers against the
//! do-not-call list and against batch-status answers).

use callbridge_types::phone::{Region, SendForm};
use serde::Deserialize;

use super::{ConfigError, Settings, setting_name};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NumbersSettings {
    /// ISO 3166-1 alpha-2 code, or empty: then every number must carry its country code.
    pub default_region: String,
    /// `national` or `e164`.
    pub send_form: String,
}

impl Default for NumbersSettings {
    fn default() -> Self {
        NumbersSettings {
            // The integration guide's numbers (9876543210) are Indian mobile numbers
            // written without their country code.
            default_region: "IN".to_owned(),
            send_form: SendForm::default().as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumbersConfig {
    /// `None`: a number without a country code is refused.
    pub default_region: Option<Region>,
    pub send_form: SendForm,
}

impl Settings {
    /// How numbers are read and sent.
    pub fn numbers(&self) -> Result<NumbersConfig, ConfigError> {
        let numbers = &self.numbers;
        let default_region = match numbers.default_region.trim() {
            "" => None,
            code => Some(Region::parse(code).map_err(|problem| {
                ConfigError::invalid(setting_name("numbers.default_region"), problem)
            })?),
        };
        let send_form = SendForm::parse(&numbers.send_form)
            .map_err(|problem| ConfigError::invalid(setting_name("numbers.send_form"), problem))?;
        if send_form == SendForm::National && default_region.is_none() {
            return Err(ConfigError::invalid(
                setting_name("numbers.send_form"),
                format!(
                    "is national, which needs {} (the national form carries no country); set it, or send e164",
                    setting_name("numbers.default_region")
                ),
            ));
        }
        Ok(NumbersConfig {
            default_region,
            send_form,
        })
    }
}
