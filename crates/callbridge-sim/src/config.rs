//! Start-up configuration (`SIM_*` environment variables or flags) and the knobs that can
//! also be changed while the simulator runs (`PUT /admin/knobs`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use callbridge_runtime::config::{Secret, parse_strict_bool};
use callbridge_types::event::EventType;
use callbridge_types::status::CallStatus;
use clap::{ArgAction, Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

pub use callbridge_types::centralized_api::MAX_ITEMS_PER_INSERT;

/// Clap value parser for secrets: an empty API key or signing secret is a mistake.
pub fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret::new(value))
}

/// Everything the simulator is given at start, as the real system would be configured at a
/// client's registration (API key, callback URL, callback secret), plus the initial knobs.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "callbridge-sim",
    version,
    about = "Simulates the Centralized Calling System: its API, signed callbacks and faults."
)]
pub struct SimConfig {
    /// Listen address of the API and the admin endpoints.
    #[arg(
        long,
        env = "SIM_BIND",
        value_name = "SIM_BIND",
        default_value = "0.0.0.0:8090"
    )]
    pub bind: SocketAddr,

    /// The API key clients must send as `X-API-KEY`.
    #[arg(long, env = "SIM_API_KEY", value_name = "SIM_API_KEY", hide_env_values = true,
          value_parser = parse_secret)]
    pub api_key: Secret,

    /// The registered callback URL every call's events are POSTed to.
    #[arg(long, env = "SIM_CALLBACK_URL", value_name = "SIM_CALLBACK_URL")]
    pub callback_url: reqwest::Url,

    /// The shared secret callbacks are signed with (`X-Signature`, HMAC-SHA256 hex).
    #[arg(
        long,
        env = "SIM_CALLBACK_SECRET",
        value_name = "SIM_CALLBACK_SECRET",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub callback_secret: Secret,

    /// The account code the API key belongs to; sent as `accountcode` in every callback.
    #[arg(
        long,
        env = "SIM_ACCOUNT_CODE",
        value_name = "SIM_ACCOUNT_CODE",
        default_value = "SIM001"
    )]
    pub account_code: String,

    /// Sent as `server_code` in every callback.
    #[arg(
        long,
        env = "SIM_SERVER_CODE",
        value_name = "SIM_SERVER_CODE",
        default_value = "sim1"
    )]
    pub server_code: String,

    /// When set, `/admin/*` requires `Authorization: Bearer <token>`; when unset the admin
    /// endpoints are open (bind the simulator to loopback or a private network).
    #[arg(long, env = "SIM_ADMIN_TOKEN", value_name = "SIM_ADMIN_TOKEN", hide_env_values = true,
          value_parser = parse_secret)]
    pub admin_token: Option<Secret>,

    /// Seed for every random choice (outcomes, timing, fault rolls); random when unset.
    #[arg(long, env = "SIM_SEED", value_name = "SIM_SEED")]
    pub seed: Option<u64>,

    /// At most this many callback requests are in flight at once, so dispatching 10 000
    /// calls does not open 10 000 sockets.
    #[arg(
        long,
        env = "SIM_CALLBACK_CONCURRENCY",
        value_name = "SIM_CALLBACK_CONCURRENCY",
        default_value_t = 64
    )]
    pub callback_concurrency: usize,

    #[command(flatten)]
    pub knobs: Knobs,
}

impl SimConfig {
    /// A configuration for tests: loopback on port 0, fixed test credentials, fast mode
    /// (no simulated delays, millisecond retry backoff) and a fixed seed.
    pub fn for_tests(callback_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: Secret::new("test-api-key"),
            callback_url: callback_url.parse()?,
            callback_secret: Secret::new("test-callback-secret"),
            account_code: "SIM001".into(),
            server_code: "sim1".into(),
            admin_token: None,
            seed: Some(7),
            callback_concurrency: 64,
            knobs: Knobs {
                fast: true,
                ..Knobs::default()
            },
        })
    }

    /// Checks what clap cannot: ranges of rates and codes, a usable outcome mix.
    pub fn validate(&self) -> Result<(), String> {
        if self.callback_concurrency == 0 {
            return Err("SIM_CALLBACK_CONCURRENCY: must be at least 1".into());
        }
        // Knob errors name the knob (`error_rate: …`); at start the variable is what to fix,
        // and every knob's variable is SIM_ plus its name.
        self.knobs
            .validate()
            .map_err(|problem| match problem.split_once(':') {
                Some((knob, rest)) => format!("SIM_{}:{rest}", knob.to_ascii_uppercase()),
                None => problem,
            })
    }
}

/// The API endpoints faults can be scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST` [`callbridge_types::centralized_api::INSERT_PATH`]
    Insert,
    /// `GET` [`callbridge_types::centralized_api::BATCH_STATUS_PATH`] + the batch id
    #[value(name = "batch_status")]
    BatchStatus,
    /// `POST` [`callbridge_types::centralized_api::DISPATCH_PATH`]
    Dispatch,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Insert, Endpoint::BatchStatus, Endpoint::Dispatch];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Insert => "insert",
            Endpoint::BatchStatus => "batch_status",
            Endpoint::Dispatch => "dispatch",
        }
    }

    /// Insert and dispatch change state, so only they can "accept, then fail".
    pub fn is_mutating(self) -> bool {
        !matches!(self, Endpoint::BatchStatus)
    }
}

/// How an accepted request fails when `accept_then_fail_rate` hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AcceptThenFailMode {
    /// The effect is stored, the answer is 500 `{"message":"Internal error",…}`.
    #[value(name = "error_500")]
    #[serde(rename = "error_500")]
    Error500,
    /// The effect is stored, then the TCP connection is closed without any answer.
    #[value(name = "drop_connection")]
    DropConnection,
    /// The effect is stored, then nothing is sent for `hang_ms`, then the connection is
    /// closed: the client's own timeout fires first.
    #[value(name = "hang")]
    Hang,
}

/// Where the insert response puts `batch_id` and `inserted_count` (both layouts are seen in
/// the centralized system's guides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ResponseLayout {
    /// `{"status":"success","message":…,"batch_id":…,"inserted_count":…}`
    Flat,
    /// `{"status":"success","message":…,"data":{"batch_id":…,"inserted_count":…}}`
    Nested,
}

/// Where the batch-status answer lists the numbers the system holds. The real system
/// documents none, so a deployment configures where to look; these let tests prove that
/// setting works for layouts other than the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatusLayout {
    /// `{"status":"success","batch_id":…,"total":…,…,"phone_numbers":["…",…]}`
    /// (numbers at `/phone_numbers`)
    Flat,
    /// `{"status":"success","data":{"batch_id":…,"total":…,…,"calls":[{"phone_number":"…"},…]}}`
    /// (numbers at `/data/calls/*/phone_number`)
    Calls,
    /// `{"status":"success","batch":{"id":…,"state":…,"size":…},"queue":[{"destination":{"number":"…"}},…]}`
    /// (numbers at `/queue/*/destination/number`)
    Queue,
}

/// A call's final outcome, one of the terminal statuses. `Completed` means answered, then
/// completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Completed,
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Failed,
        Outcome::Timeout,
    ];

    /// The terminal status a call with this outcome ends in.
    pub fn status(self) -> CallStatus {
        match self {
            Outcome::Completed => CallStatus::Completed,
            Outcome::Busy => CallStatus::Busy,
            Outcome::NoAnswer => CallStatus::NoAnswer,
            Outcome::Failed => CallStatus::Failed,
            Outcome::Timeout => CallStatus::Timeout,
        }
    }

    /// The event that reports this outcome.
    pub fn event_type(self) -> EventType {
        match self {
            Outcome::Completed => EventType::CallCompleted,
            Outcome::Busy => EventType::CallBusy,
            Outcome::NoAnswer => EventType::CallNoAnswer,
            Outcome::Failed => EventType::CallFailed,
            Outcome::Timeout => EventType::CallTimeout,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.status().fmt(f)
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let status = CallStatus::parse(value);
        Outcome::ALL
            .into_iter()
            .find(|outcome| Some(outcome.status()) == status)
            .ok_or_else(|| {
                format!(
                    "unknown outcome {value:?} (expected completed, busy, no_answer, failed or timeout)"
                )
            })
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Relative weights of the outcomes calls end with, e.g. `completed=60,busy=10`.
/// Outcomes not named have weight 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutcomeMix(pub BTreeMap<Outcome, u32>);

impl OutcomeMix {
    /// Every call ends with `outcome`.
    pub fn only(outcome: Outcome) -> Self {
        Self(BTreeMap::from([(outcome, 1)]))
    }

    pub fn total_weight(&self) -> u64 {
        self.0.values().map(|weight| u64::from(*weight)).sum()
    }

    /// Picks the outcome whose cumulative weight range holds `ticket` (0 ≤ ticket < total).
    pub fn pick(&self, ticket: u64) -> Outcome {
        let mut remaining = ticket;
        for (outcome, weight) in &self.0 {
            let weight = u64::from(*weight);
            if remaining < weight {
                return *outcome;
            }
            remaining -= weight;
        }
        Outcome::Completed
    }
}

impl Default for OutcomeMix {
    fn default() -> Self {
        Self(BTreeMap::from([
            (Outcome::Completed, 60),
            (Outcome::NoAnswer, 15),
            (Outcome::Busy, 10),
            (Outcome::Failed, 10),
            (Outcome::Timeout, 5),
        ]))
    }
}

impl FromStr for OutcomeMix {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut weights = BTreeMap::new();
        for part in value
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("expected outcome=weight, got {part:?}"))?;
            let weight = weight
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("weight of {name:?} is not a whole number"))?;
            weights.insert(name.trim().parse::<Outcome>()?, weight);
        }
        Ok(Self(weights))
    }
}

impl fmt::Display for OutcomeMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(outcome, weight)| format!("{outcome}={weight}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A knob change that was refused; says which knob and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidKnobs(pub String);

/// Behaviour that can be set at start (env/flags) and changed live through
/// `PUT /admin/knobs` (a JSON object with any subset of these fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// No simulated delays at all and millisecond retry backoff: for tests and benchmarks.
    /// Timestamps inside callbacks stay realistic.
    #[arg(long, env = "SIM_FAST", value_name = "SIM_FAST", default_value = "false",
          action = ArgAction::Set, value_parser = parse_strict_bool)]
    pub fast: bool,

    /// Multiplies every simulated delay (ringing, talking); 1.0 is real time. Ignored in
    /// fast mode.
    #[arg(
        long,
        env = "SIM_TIME_SCALE",
        value_name = "SIM_TIME_SCALE",
        default_value_t = 1.0
    )]
    pub time_scale: f64,

    /// Relative weights of call outcomes, e.g. `completed=60,no_answer=15,busy=10,failed=10,timeout=5`.
    #[arg(
        long,
        env = "SIM_OUTCOME_MIX",
        value_name = "SIM_OUTCOME_MIX",
        default_value = "busy=10,completed=60,failed=10,no_answer=15,timeout=5"
    )]
    pub outcome_mix: OutcomeMix,

    /// Probability that a delivered callback is sent a second time, byte for byte.
    #[arg(
        long,
        env = "SIM_DUPLICATE_RATE",
        value_name = "SIM_DUPLICATE_RATE",
        default_value_t = 0.0
    )]
    pub duplicate_rate: f64,

    /// Probability that a call's events are sent in reverse order (after the call ended).
    #[arg(
        long,
        env = "SIM_REORDER_RATE",
        value_name = "SIM_REORDER_RATE",
        default_value_t = 0.0
    )]
    pub reorder_rate: f64,

    /// Attempts per callback before the sender gives up on it.
    #[arg(
        long,
        env = "SIM_CALLBACK_MAX_ATTEMPTS",
        value_name = "SIM_CALLBACK_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub callback_max_attempts: u32,

    /// Timeout of one callback request.
    #[arg(
        long,
        env = "SIM_CALLBACK_TIMEOUT_MS",
        value_name = "SIM_CALLBACK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub callback_timeout_ms: u64,

    /// First retry delay of an undelivered callback; doubles per attempt (with jitter).
    /// Fast mode uses 5 ms instead.
    #[arg(
        long,
        env = "SIM_CALLBACK_RETRY_BASE_MS",
        value_name = "SIM_CALLBACK_RETRY_BASE_MS",
        default_value_t = 1_000
    )]
    pub callback_retry_base_ms: u64,

    /// Upper bound of one retry delay, also for a receiver's `Retry-After`. Fast mode caps
    /// at 200 ms instead.
    #[arg(
        long,
        env = "SIM_CALLBACK_RETRY_MAX_MS",
        value_name = "SIM_CALLBACK_RETRY_MAX_MS",
        default_value_t = 60_000
    )]
    pub callback_retry_max_ms: u64,

    /// Also sign callbacks the Standard Webhooks way (`webhook-id`, stable across retries
    /// and duplicates; `webhook-timestamp`; `webhook-signature: v1,<base64>`), besides
    /// `X-Signature`.
    #[arg(long, env = "SIM_STANDARD_WEBHOOKS", value_name = "SIM_STANDARD_WEBHOOKS",
          default_value = "false", action = ArgAction::Set, value_parser = parse_strict_bool)]
    pub standard_webhooks: bool,

    /// Added to every API request before it is handled.
    #[arg(
        long,
        env = "SIM_LATENCY_MS",
        value_name = "SIM_LATENCY_MS",
        default_value_t = 0
    )]
    pub latency_ms: u64,

    /// Probability that an API request is answered 500 without any effect.
    #[arg(
        long,
        env = "SIM_ERROR_RATE",
        value_name = "SIM_ERROR_RATE",
        default_value_t = 0.0
    )]
    pub error_rate: f64,

    /// Probability that an API request is answered 429 without any effect.
    #[arg(
        long,
        env = "SIM_RATE_LIMIT_RATE",
        value_name = "SIM_RATE_LIMIT_RATE",
        default_value_t = 0.0
    )]
    pub rate_limit_rate: f64,

    /// `Retry-After` seconds sent with a 429; `null` (admin API only) sends none.
    #[arg(
        long,
        env = "SIM_RETRY_AFTER_SECS",
        value_name = "SIM_RETRY_AFTER_SECS",
        default_value = "1"
    )]
    pub retry_after_secs: Option<u64>,

    /// Probability that an insert or dispatch takes effect and then fails anyway.
    #[arg(
        long,
        env = "SIM_ACCEPT_THEN_FAIL_RATE",
        value_name = "SIM_ACCEPT_THEN_FAIL_RATE",
        default_value_t = 0.0
    )]
    pub accept_then_fail_rate: f64,

    /// How an accepted request fails: `error_500`, `drop_connection` or `hang`.
    #[arg(
        long,
        env = "SIM_ACCEPT_THEN_FAIL_MODE",
        value_name = "SIM_ACCEPT_THEN_FAIL_MODE",
        value_enum,
        default_value = "error_500"
    )]
    pub accept_then_fail_mode: AcceptThenFailMode,

    /// How long the `hang` mode withholds the answer before closing the connection.
    #[arg(
        long,
        env = "SIM_HANG_MS",
        value_name = "SIM_HANG_MS",
        default_value_t = 30_000
    )]
    pub hang_ms: u64,

    /// Every API key is rejected with 401 (a revoked or rotated key).
    #[arg(long, env = "SIM_REJECT_ALL_KEYS", value_name = "SIM_REJECT_ALL_KEYS", default_value = "false",
          action = ArgAction::Set, value_parser = parse_strict_bool)]
    pub reject_all_keys: bool,

    /// HTTP status of a successful insert: 200 or 201.
    #[arg(
        long,
        env = "SIM_INSERT_SUCCESS_STATUS",
        value_name = "SIM_INSERT_SUCCESS_STATUS",
        default_value_t = 201
    )]
    pub insert_success_status: u16,

    /// Layout of the insert response: `flat` or `nested` (under `data`).
    #[arg(
        long,
        env = "SIM_RESPONSE_LAYOUT",
        value_name = "SIM_RESPONSE_LAYOUT",
        value_enum,
        default_value = "flat"
    )]
    pub response_layout: ResponseLayout,

    /// Layout of the batch-status answer: `flat`, `calls` or `queue`.
    #[arg(
        long,
        env = "SIM_BATCH_STATUS_LAYOUT",
        value_name = "SIM_BATCH_STATUS_LAYOUT",
        value_enum,
        default_value = "flat"
    )]
    pub batch_status_layout: BatchStatusLayout,

    /// batch-status answers 404 for a batch it holds until the batch is this old (eventual
    /// visibility: a system that indexes batches late).
    #[arg(
        long,
        env = "SIM_BATCH_STATUS_HIDDEN_MS",
        value_name = "SIM_BATCH_STATUS_HIDDEN_MS",
        default_value_t = 0
    )]
    pub batch_status_hidden_ms: u64,

    /// Written before every number batch-status lists (e.g. `+91`): a system that answers
    /// in E.164 for the national numbers it was sent.
    #[arg(
        long,
        env = "SIM_BATCH_STATUS_NUMBER_PREFIX",
        value_name = "SIM_BATCH_STATUS_NUMBER_PREFIX",
        default_value = ""
    )]
    pub batch_status_number_prefix: String,

    /// When set, an insert keeps only its first N items and answers `status: "warning"`.
    #[arg(
        long,
        env = "SIM_PARTIAL_ACCEPT_MAX",
        value_name = "SIM_PARTIAL_ACCEPT_MAX"
    )]
    pub partial_accept_max: Option<usize>,

    /// When set, at most this many faults (error, 429, accept-then-fail, partial accept) are
    /// injected; each one uses one up. Lets a test say "fail twice, then work".
    #[arg(long, env = "SIM_FAULT_BUDGET", value_name = "SIM_FAULT_BUDGET")]
    pub fault_budget: Option<u64>,

    /// Endpoints that latency, hold, error, 429 and accept-then-fail apply to.
    #[arg(
        long,
        env = "SIM_FAULT_ENDPOINTS",
        value_name = "SIM_FAULT_ENDPOINTS",
        value_enum,
        value_delimiter = ',',
        default_value = "insert,batch_status,dispatch"
    )]
    pub fault_endpoints: Vec<Endpoint>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            fast: false,
            time_scale: 1.0,
            outcome_mix: OutcomeMix::default(),
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            callback_max_attempts: 8,
            callback_timeout_ms: 10_000,
            callback_retry_base_ms: 1_000,
            callback_retry_max_ms: 60_000,
            standard_webhooks: false,
            latency_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: Some(1),
            accept_then_fail_rate: 0.0,
            accept_then_fail_mode: AcceptThenFailMode::Error500,
            hang_ms: 30_000,
            reject_all_keys: false,
            insert_success_status: 201,
            response_layout: ResponseLayout::Flat,
            batch_status_layout: BatchStatusLayout::Flat,
            batch_status_hidden_ms: 0,
            batch_status_number_prefix: String::new(),
            partial_accept_max: None,
            fault_budget: None,
            fault_endpoints: Endpoint::ALL.to_vec(),
        }
    }
}

impl Knobs {
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("duplicate_rate", self.duplicate_rate),
            ("reorder_rate", self.reorder_rate),
            ("error_rate", self.error_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("accept_then_fail_rate", self.accept_then_fail_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name}: must be between 0 and 1, got {rate}"));
            }
        }
        if !(self.time_scale.is_finite() && self.time_scale >= 0.0) {
            return Err(format!(
                "time_scale: must be 0 or more, got {}",
                self.time_scale
            ));
        }
        if self.outcome_mix.total_weight() == 0 {
            return Err("outcome_mix: at least one outcome needs a weight above 0".into());
        }
        if self.callback_max_attempts == 0 {
            return Err("callback_max_attempts: must be at least 1".into());
        }
        if self.callback_timeout_ms == 0 {
            return Err("callback_timeout_ms: must be at least 1".into());
        }
        if !matches!(self.insert_success_status, 200 | 201) {
            return Err(format!(
                "insert_success_status: must be 200 or 201, got {}",
                self.insert_success_status
            ));
        }
        Ok(())
    }

    /// Applies a JSON object of knob fields on top of these knobs (the fields it does not
    /// name keep their values) and validates the result.
    pub fn merged_with(&self, patch: &serde_json::Value) -> Result<Knobs, InvalidKnobs> {
        let invalid = |problem: String| InvalidKnobs(problem);
        let patch = patch
            .as_object()
            .ok_or_else(|| invalid("knobs must be a JSON object".into()))?;
        let mut current = serde_json::to_value(self).map_err(|err| invalid(err.to_string()))?;
        let fields = current
            .as_object_mut()
            .ok_or_else(|| invalid("knobs did not serialise to an object".into()))?;
        for (name, value) in patch {
            fields.insert(name.clone(), value.clone());
        }
        let merged: Knobs =
            serde_json::from_value(current).map_err(|err| invalid(err.to_string()))?;
        merged.validate().map_err(invalid)?;
        Ok(merged)
    }

    pub fn applies_to(&self, endpoint: Endpoint) -> bool {
        self.fault_endpoints.contains(&endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SimConfig, clap::Error> {
        let mut argv = vec![
            "callbridge-sim",
            "--api-key",
            "key-visible-123",
            "--callback-url",
            "http://127.0.0.1:1/callback",
            "--callback-secret",
            "secret-visible-456",
        ];
        argv.extend_from_slice(args);
        SimConfig::try_parse_from(argv)
    }

    #[test]
    fn flag_defaults_equal_knobs_default() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.knobs, Knobs::default());
        assert_eq!(config.bind.to_string(), "0.0.0.0:8090");
    }

    #[test]
    fn every_setting_reads_sim_and_its_name_in_capitals() {
        use clap::CommandFactory;
        for argument in SimConfig::command().get_arguments() {
            let id = argument.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = argument.get_env().and_then(|env| env.to_str());
            assert_eq!(
                env,
                Some(format!("SIM_{}", id.to_ascii_uppercase()).as_str())
            );
        }
    }

    #[test]
    fn knob_errors_at_start_name_the_variable() {
        let mut config = parse(&[]).unwrap();
        config.knobs.error_rate = 2.0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .starts_with("SIM_ERROR_RATE:")
        );
    }

    #[test]
    fn booleans_accept_only_true_or_false() {
        assert!(parse(&["--fast", "TRUE"]).unwrap().knobs.fast);
        assert!(!parse(&["--fast", "False"]).unwrap().knobs.fast);
        assert!(parse(&["--fast", "1"]).is_err());
        assert!(parse(&["--reject-all-keys", "yes"]).is_err());
    }

    #[test]
    fn outcome_mix_parses_and_picks_by_weight() {
        let mix: OutcomeMix = "completed=2, busy=1".parse().unwrap();
        assert_eq!(mix.total_weight(), 3);
        // Weights are laid out in `Outcome` order: completed first.
        assert_eq!(mix.pick(0), Outcome::Completed);
        assert_eq!(mix.pick(1), Outcome::Completed);
        assert_eq!(mix.pick(2), Outcome::Busy);
        assert!("completed=x".parse::<OutcomeMix>().is_err());
        assert!("answered=1".parse::<OutcomeMix>().is_err());
        assert_eq!(mix.to_string().parse::<OutcomeMix>().unwrap(), mix);
    }

    #[test]
    fn merge_changes_only_named_fields_and_validates() {
        let knobs = Knobs::default();
        let merged = knobs
            .merged_with(&serde_json::json!({"error_rate": 1.0, "outcome_mix": {"busy": 1}}))
            .unwrap();
        assert_eq!(merged.error_rate, 1.0);
        assert_eq!(merged.outcome_mix, OutcomeMix::only(Outcome::Busy));
        assert_eq!(merged.callback_max_attempts, knobs.callback_max_attempts);

        assert!(
            knobs
                .merged_with(&serde_json::json!({"error_rate": 1.5}))
                .is_err()
        );
        assert!(
            knobs
                .merged_with(&serde_json::json!({"no_such_knob": 1}))
                .is_err()
        );
        assert!(
            knobs
                .merged_with(&serde_json::json!({"insert_success_status": 202}))
                .is_err()
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = parse(&[]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("key-visible-123"));
        assert!(!debug.contains("secret-visible-456"));
        assert!(debug.contains("[REDACTED]"));
    }
}
