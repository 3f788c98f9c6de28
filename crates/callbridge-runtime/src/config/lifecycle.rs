//! The data lifecycle: when a call without a terminal callback is given up on.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Settings, at_least, setting_name};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// A submitted number whose call sent no terminal callback this long after it was
    /// submitted is reconciled against batch-status and, still unknown, `expired`.
    /// A duration such as `2h`, `90m`, `45s`, `1d`.
    pub callback_deadline: String,
    /// How often the submitter looks for calls past the deadline, in seconds.
    pub deadline_check_secs: u64,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            callback_deadline: "2h".to_owned(),
            deadline_check_secs: 60,
        }
    }
}

/// The lifecycle settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    pub callback_deadline: Duration,
    pub deadline_check: Duration,
}

impl Settings {
    /// The lifecycle settings (the submitter's deadline, the CLI's retention and erasure).
    pub fn lifecycle(&self) -> Result<LifecycleConfig, ConfigError> {
        let lifecycle = &self.lifecycle;
        let callback_deadline =
            parse_duration(&lifecycle.callback_deadline).map_err(|problem| {
                ConfigError::invalid(setting_name("lifecycle.callback_deadline"), problem)
            })?;
        if callback_deadline.is_zero() {
            return Err(ConfigError::invalid(
                setting_name("lifecycle.callback_deadline"),
                "must be longer than zero",
            ));
        }
        at_least(
            lifecycle.deadline_check_secs,
            1,
            "lifecycle.deadline_check_secs",
        )?;
        Ok(LifecycleConfig {
            callback_deadline,
            deadline_check: Duration::from_secs(lifecycle.deadline_check_secs),
        })
    }
}

/// A duration written as a whole number and a unit: `45s`, `90m`, `2h`, `1d` (a bare
/// number is seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("must be a duration such as 2h, 90m or 45s, got {raw:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "must be a duration such as 2h, 90m or 45s (units s, m, h, d), got {raw:?}"
            ));
        }
    };
    value
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("is too long, got {raw:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration(" 90m "), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "h", "2 hours", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_deadline_names_its_variable() {
        let settings =
            Settings::load_from([("CALLBRIDGE__LIFECYCLE__CALLBACK_DEADLINE", "soon")]).unwrap();
        let error = settings.lifecycle().unwrap_err().to_string();
        assert!(
            error.contains("CALLBRIDGE__LIFECYCLE__CALLBACK_DEADLINE"),
            "{error}"
        );
        let defaults = Settings::load_from(Vec::<(String, String)>::new())
            .unwrap()
            .lifecycle()
            .unwrap();
        assert_eq!(defaults.callback_deadline, Duration::from_secs(7_200));
    }
}
