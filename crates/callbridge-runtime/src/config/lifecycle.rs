//! The data lifecycle: when a call without a terminal callback is given up on, and how
//! long callback events and finished queue rows are kept.

use std::time::Duration;

use callbridge_types::erasure::MIN_KEY_BYTES;
use serde::Deserialize;

use super::{ConfigError, Secret, Settings, at_least, setting_name};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// A submitted number whose call sent no terminal callback this long after it was
    /// submitted is reconciled against batch-status and, still unknown, `expired`.
    /// A duration such as `2h`, `90m`, `45s`, `1d`.
    pub callback_deadline: String,
    /// How often the submitter looks for calls past the deadline, in seconds.
    pub deadline_check_secs: u64,
    /// `callbridge retention run` deletes `call_events` (and published outbox rows)
    /// older than this many days.
    pub events_days: u32,
    /// … and finished `local_call_queue` rows older than this many days.
    pub queue_days: u32,
    /// Rows looked at per retention transaction: each one short, so no lock is held long.
    pub retention_chunk_rows: u32,
    /// The key of the keyed hash `callbridge erase` replaces a number with. The CLI needs
    /// it to erase; the submitter needs it to honour the opt-outs of erased numbers.
    pub erasure_key: Option<Secret>,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            callback_deadline: "2h".to_owned(),
            deadline_check_secs: 60,
            events_days: 30,
            queue_days: 90,
            retention_chunk_rows: 5_000,
            erasure_key: None,
        }
    }
}

/// The lifecycle settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    pub callback_deadline: Duration,
    pub deadline_check: Duration,
    pub events_retention: Duration,
    pub queue_retention: Duration,
    pub retention_chunk_rows: u32,
    /// At least [`MIN_KEY_BYTES`] long when set: a short key could be guessed, and with
    /// it every erased number found again by hashing the country's numbers.
    pub erasure_key: Option<Secret>,
}

const DAY: Duration = Duration::from_secs(86_400);

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
        at_least(lifecycle.events_days.into(), 1, "lifecycle.events_days")?;
        at_least(lifecycle.queue_days.into(), 1, "lifecycle.queue_days")?;
        at_least(
            lifecycle.retention_chunk_rows.into(),
            1,
            "lifecycle.retention_chunk_rows",
        )?;
        if let Some(key) = &lifecycle.erasure_key
            && key.expose().len() < MIN_KEY_BYTES
        {
            return Err(ConfigError::invalid(
                setting_name("lifecycle.erasure_key"),
                format!(
                    "must be at least {MIN_KEY_BYTES} bytes long (e.g. `openssl rand -hex 32`)"
                ),
            ));
        }
        Ok(LifecycleConfig {
            callback_deadline,
            deadline_check: Duration::from_secs(lifecycle.deadline_check_secs),
            events_retention: DAY * lifecycle.events_days,
            queue_retention: DAY * lifecycle.queue_days,
            retention_chunk_rows: lifecycle.retention_chunk_rows,
            erasure_key: lifecycle.erasure_key.clone(),
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
        assert_eq!(defaults.erasure_key, None);
    }

    #[test]
    fn a_short_erasure_key_is_refused_naming_its_variable() {
        let settings =
            Settings::load_from([("CALLBRIDGE__LIFECYCLE__ERASURE_KEY", "short")]).unwrap();
        let error = settings.lifecycle().unwrap_err().to_string();
        assert!(
            error.contains("CALLBRIDGE__LIFECYCLE__ERASURE_KEY"),
            "{error}"
        );
        assert!(
            !error.contains("short"),
            "the key itself is never shown: {error}"
        );
        let key = "0123456789abcdef0123";
        let settings = Settings::load_from([("CALLBRIDGE__LIFECYCLE__ERASURE_KEY", key)]).unwrap();
        assert_eq!(
            settings.lifecycle().unwrap().erasure_key.unwrap().expose(),
            key
        );
    }
}
