//! What the operator commands share: who acts (`--actor`), a campaign's rule options, the
//! clock their actions are stamped with, and the centralized API's batch-status client.

use anyhow::Context;
use callbridge_ops::centralized::{CentralApi, REQUEST_TIMEOUT};
use callbridge_ops::{Actor, RulesChange};
use callbridge_runtime::config::{ApiConfig, NumbersConfig};
use callbridge_types::campaign::{Days, RedialPolicy, parse_hours, parse_time_zone};
use callbridge_types::clock::{Clock, SystemClock};
use callbridge_types::phone::{E164, normalise};
use chrono::{DateTime, Utc};
use clap::Args;

/// Written into `operator_actions` as who did it.
#[derive(Debug, Clone, Args)]
pub struct ActorArgs {
    /// Who is acting, for the audit in operator_actions (default: the OS user).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
}

impl ActorArgs {
    /// `--actor`, else the OS user (`USER`, `LOGNAME` or `USERNAME`), else `unknown`.
    pub fn actor(&self) -> anyhow::Result<Actor> {
        let name = match self.actor.as_deref().map(str::trim) {
            Some("") => anyhow::bail!("--actor must not be empty"),
            Some(name) => name.to_owned(),
            None => ["USER", "LOGNAME", "USERNAME"]
                .iter()
                .find_map(|variable| std::env::var(variable).ok())
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "unknown".to_owned()),
        };
        Ok(Actor::cli(name))
    }
}

/// The batch-status client of the commands: an operator at a terminal waits up to
/// [`REQUEST_TIMEOUT`] for an answer.
pub fn central_api(config: &ApiConfig) -> anyhow::Result<CentralApi> {
    CentralApi::new(
        config,
        concat!("callbridge-cli/", env!("CARGO_PKG_VERSION")),
        REQUEST_TIMEOUT,
    )
}

/// The instant an action is stamped with.
pub fn now() -> DateTime<Utc> {
    SystemClock.now()
}

/// A campaign's rules, on `enqueue` (creating it) and `campaign set` (changing it).
#[derive(Debug, Clone, Default, Args)]
pub struct RuleArgs {
    /// Send nothing before this instant (RFC 3339, e.g. 2026-03-02T09:00:00-05:00); `none`
    /// removes it.
    #[arg(long, value_name = "INSTANT")]
    pub start_at: Option<String>,

    /// Calling hours in each row's local time, HH:MM-HH:MM (end exclusive; 21:00-02:00
    /// spans midnight; 00:00-24:00 is the whole day); `none` removes the window.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    pub window: Option<String>,

    /// Days the window opens: a range (mon-sat), a list (mon,wed,fri) or all.
    #[arg(long, value_name = "DAYS")]
    pub days: Option<String>,

    /// IANA zone of rows without their own `timezone` column (default UTC).
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,

    /// At most N numbers of the campaign sent in any 60 seconds, across all submitters;
    /// `none` removes the limit.
    #[arg(long, value_name = "N")]
    pub max_per_minute: Option<String>,

    /// Call numbers again after these outcomes: outcome=retries x interval, comma
    /// separated (busy=2x15m,no_answer=1x60m,timeout=1x30m; intervals like 20s, 15m, 2h).
    /// failed and completed are not redialled unless named; `none` redials nothing.
    #[arg(long, value_name = "POLICY")]
    pub redial: Option<String>,

    /// At most N calls to one number per day (the local day of the row's time zone),
    /// counting every campaign's calls to it; `none` removes the cap.
    #[arg(long, value_name = "N")]
    pub max_attempts_per_day: Option<String>,
}

fn is_none(raw: &str) -> bool {
    raw.trim().eq_ignore_ascii_case("none")
}

/// A positive limit option: absent, `none` (removed) or a whole number of at least 1.
fn limit(option: &str, raw: Option<&str>) -> anyhow::Result<Option<Option<u32>>> {
    match raw {
        None => Ok(None),
        Some(raw) if is_none(raw) => Ok(Some(None)),
        Some(raw) => {
            let limit: u32 = raw
                .trim()
                .parse()
                .ok()
                .filter(|limit| *limit > 0 && i32::try_from(*limit).is_ok())
                .with_context(|| {
                    format!("{option} {raw:?} is not a whole number of at least 1 (or none)")
                })?;
            Ok(Some(Some(limit)))
        }
    }
}

impl RuleArgs {
    /// The change these options describe; a malformed one is refused with what to write.
    pub fn change(&self) -> anyhow::Result<RulesChange> {
        let start_at = match self.start_at.as_deref() {
            None => None,
            Some(raw) if is_none(raw) => Some(None),
            Some(raw) => Some(Some(
                DateTime::parse_from_rfc3339(raw.trim())
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--start-at {raw:?} is not an RFC 3339 instant (for example 2026-03-02T09:00:00-05:00, or none)"
                        )
                    })?
                    .to_utc(),
            )),
        };
        let hours = match self.window.as_deref() {
            None => None,
            Some(raw) if is_none(raw) => Some(None),
            Some(raw) => Some(Some(
                parse_hours(raw).map_err(|error| anyhow::anyhow!("--window: {error}"))?,
            )),
        };
        let days = self
            .days
            .as_deref()
            .map(Days::parse)
            .transpose()
            .map_err(|error| anyhow::anyhow!("--days: {error}"))?;
        let time_zone = self
            .time_zone
            .as_deref()
            .map(parse_time_zone)
            .transpose()
            .map_err(|error| anyhow::anyhow!("--time-zone: {error}"))?;
        let max_per_minute = limit("--max-per-minute", self.max_per_minute.as_deref())?;
        let redial = self
            .redial
            .as_deref()
            .map(RedialPolicy::parse)
            .transpose()
            .map_err(|error| anyhow::anyhow!("--redial: {error}"))?;
        let max_attempts_per_day = limit(
            "--max-attempts-per-day",
            self.max_attempts_per_day.as_deref(),
        )?;
        Ok(RulesChange {
            start_at,
            hours,
            days,
            time_zone,
            max_per_minute,
            redial,
            max_attempts_per_day,
        })
    }
}

/// Asks `question` on the terminal and reads a yes or no from standard input (a piped
/// answer works too); only `y` or `yes` is yes.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("while reading the answer")?;
    if !std::io::stdin().is_terminal() {
        // A piped answer is not echoed: end the prompt's line ourselves.
        eprintln!();
    }
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A number the operator typed, normalised with the default region as `enqueue` does;
/// an error that quotes it and says why it is not a number.
pub fn normalise_typed_number(raw: &str, numbers: NumbersConfig) -> anyhow::Result<E164> {
    normalise(raw, numbers.default_region)
        .map_err(|problem| anyhow::anyhow!("{raw:?} is not a phone number: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_options_read_as_a_change_and_none_removes_a_rule() {
        let change = RuleArgs {
            start_at: Some("2026-03-02T09:00:00-05:00".into()),
            window: Some("08:00-21:00".into()),
            days: Some("mon-sat".into()),
            time_zone: Some("America/New_York".into()),
            max_per_minute: Some("600".into()),
            redial: Some("busy=2x15m,no_answer=1x60m".into()),
            max_attempts_per_day: Some("3".into()),
        }
        .change()
        .unwrap();
        assert_eq!(
            change.redial.unwrap().to_string(),
            "busy=2x15m,no_answer=1x1h"
        );
        assert_eq!(change.max_attempts_per_day, Some(Some(3)));
        assert_eq!(
            change.start_at,
            Some(Some("2026-03-02T14:00:00Z".parse().unwrap()))
        );
        assert_eq!(change.max_per_minute, Some(Some(600)));
        assert_eq!(change.days.unwrap().to_string(), "mon-sat");

        let removed = RuleArgs {
            start_at: Some("none".into()),
            window: Some("None".into()),
            max_per_minute: Some("none".into()),
            redial: Some("none".into()),
            max_attempts_per_day: Some("none".into()),
            ..RuleArgs::default()
        }
        .change()
        .unwrap();
        assert_eq!(removed.redial, Some(RedialPolicy::NONE));
        assert_eq!(removed.max_attempts_per_day, Some(None));
        assert_eq!(
            (removed.start_at, removed.hours, removed.max_per_minute),
            (Some(None), Some(None), Some(None))
        );
        assert!(RuleArgs::default().change().unwrap().is_empty());
    }

    #[test]
    fn a_malformed_rule_says_what_to_write() {
        for (args, expected) in [
            (
                RuleArgs {
                    window: Some("8-21".into()),
                    ..RuleArgs::default()
                },
                "--window: calling window \"8-21\" is not HH:MM-HH:MM",
            ),
            (
                RuleArgs {
                    start_at: Some("tomorrow".into()),
                    ..RuleArgs::default()
                },
                "--start-at \"tomorrow\" is not an RFC 3339 instant",
            ),
            (
                RuleArgs {
                    time_zone: Some("EST5".into()),
                    ..RuleArgs::default()
                },
                "--time-zone: time zone \"EST5\" is not an IANA zone name",
            ),
            (
                RuleArgs {
                    max_per_minute: Some("0".into()),
                    ..RuleArgs::default()
                },
                "--max-per-minute \"0\" is not a whole number of at least 1",
            ),
            (
                RuleArgs {
                    redial: Some("busy=2".into()),
                    ..RuleArgs::default()
                },
                "--redial: redial policy \"busy=2\"",
            ),
            (
                RuleArgs {
                    max_attempts_per_day: Some("-1".into()),
                    ..RuleArgs::default()
                },
                "--max-attempts-per-day \"-1\" is not a whole number of at least 1",
            ),
            (
                RuleArgs {
                    days: Some("weekdays".into()),
                    ..RuleArgs::default()
                },
                "--days: days \"weekdays\"",
            ),
        ] {
            let message = args.change().unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
        }
    }

    #[test]
    fn the_actor_is_the_option_when_given() {
        let actor = ActorArgs {
            actor: Some(" carol ".into()),
        }
        .actor()
        .unwrap();
        assert_eq!(actor, Actor::cli("carol"));
        assert!(
            ActorArgs {
                actor: Some(" ".into())
            }
            .actor()
            .is_err()
        );
    }
}
