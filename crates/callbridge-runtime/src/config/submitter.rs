//! The submitter: its claim loop and the backoff between attempts.

use std::net::SocketAddr;
use std::time::Duration;

use callbridge_types::centralized_api::{
    BatchStatusReading, NotFoundMeaning, NumberMatch, NumbersPath,
};
use serde::Deserialize;

use super::{
    ApiConfig, ConfigError, DatabaseConfig, LifecycleConfig, NumbersConfig, Settings, at_least,
    bind_address, de, setting_name,
};

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
    pub batch_status_numbers_path: String,
    pub batch_status_number_match: String,
    pub batch_status_not_found: String,
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
            batch_status_numbers_path: NumbersPath::DEFAULT.to_owned(),
            batch_status_number_match: "digits".to_owned(),
            batch_status_not_found: "unknown".to_owned(),
        }
    }
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
    /// How batch-status answers are read when an insert's outcome is unknown.
    pub batch_status: BatchStatusReading,
    /// How numbers are read: the do-not-call check of rows an application inserted reads
    /// a number without a country code in the default region.
    pub numbers: NumbersConfig,
    /// The callback deadline (calls without a terminal callback become `expired`).
    pub lifecycle: LifecycleConfig,
}

impl Settings {
    /// How batch-status answers are read (the submitter's settings; `doctor` checks them).
    pub fn batch_status_reading(&self) -> Result<BatchStatusReading, ConfigError> {
        let submitter = &self.submitter;
        let invalid =
            |name: &str, message: String| ConfigError::invalid(setting_name(name), message);
        Ok(BatchStatusReading {
            numbers_path: NumbersPath::parse(&submitter.batch_status_numbers_path)
                .map_err(|message| invalid("submitter.batch_status_numbers_path", message))?,
            number_match: NumberMatch::parse(
                &submitter.batch_status_number_match,
                self.numbers()?.default_region,
            )
            .map_err(|message| invalid("submitter.batch_status_number_match", message))?,
            not_found: NotFoundMeaning::parse(&submitter.batch_status_not_found)
                .map_err(|message| invalid("submitter.batch_status_not_found", message))?,
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
            batch_status: self.batch_status_reading()?,
            numbers: self.numbers()?,
            lifecycle: self.lifecycle()?,
        })
    }
}
