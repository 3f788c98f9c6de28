//! A campaign's rules as `campaigns` stores them (start time, calling window and days,
//! time zone, pacing, redial policy, attempts per number per day), and a change to them
//! as `enqueue` and `campaign set` give it.
//! Parsing the operator's text is `callbridge_types::campaign`'s; this module only
//! combines what was parsed and checks the combination.

use callbridge_types::campaign::{
    CallingWindow, CampaignStatus, Days, RedialPolicy, Schedule, StoredRedial, Tz, parse_time_zone,
};
use chrono::{DateTime, NaiveTime, Utc};
use serde::Serialize;

use crate::OpsError;

/// A campaign's rules. The default is none: sent at once, at any hour, unpaced, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Nothing is sent before this instant.
    pub start_at: Option<DateTime<Utc>>,
    /// Rows are sent only while their zone's local time is inside it.
    pub window: Option<CallingWindow>,
    /// The zone of rows that do not carry their own.
    pub time_zone: Tz,
    /// At most this many numbers sent in any 60 seconds, across every submitter.
    pub max_per_minute: Option<u32>,
    /// Which outcomes are called again, how often and how long after.
    pub redial: RedialPolicy,
    /// At most this many calls to one number in a day, across every campaign.
    pub max_attempts_per_day: Option<u32>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            start_at: None,
            window: None,
            time_zone: Tz::UTC,
            max_per_minute: None,
            redial: RedialPolicy::NONE,
            max_attempts_per_day: None,
        }
    }
}

/// The stored columns of [`Rules`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RuleColumns {
    pub start_at: Option<DateTime<Utc>>,
    pub window_start: Option<NaiveTime>,
    pub window_end: Option<NaiveTime>,
    pub window_days: i16,
    pub time_zone: String,
    pub max_per_minute: Option<i32>,
    #[sqlx(flatten)]
    pub redial: RedialColumns,
    pub max_attempts_per_day: Option<i32>,
}

/// The stored columns of a [`RedialPolicy`]: retries and interval per outcome.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(crate) struct RedialColumns {
    pub redial_busy_retries: i16,
    pub redial_busy_interval_secs: Option<i32>,
    pub redial_no_answer_retries: i16,
    pub redial_no_answer_interval_secs: Option<i32>,
    pub redial_timeout_retries: i16,
    pub redial_timeout_interval_secs: Option<i32>,
    pub redial_failed_retries: i16,
    pub redial_failed_interval_secs: Option<i32>,
    pub redial_completed_retries: i16,
    pub redial_completed_interval_secs: Option<i32>,
}

/// The campaign columns [`RuleColumns`] reads, for a SELECT list.
pub(crate) const RULE_COLUMNS_SQL: &str = "start_at, window_start, window_end, window_days, \
     time_zone, max_per_minute, redial_busy_retries, redial_busy_interval_secs, \
     redial_no_answer_retries, redial_no_answer_interval_secs, redial_timeout_retries, \
     redial_timeout_interval_secs, redial_failed_retries, redial_failed_interval_secs, \
     redial_completed_retries, redial_completed_interval_secs, max_attempts_per_day";

impl RedialColumns {
    /// In `callbridge_types::campaign::REDIAL_OUTCOMES` order.
    fn stored(self) -> [StoredRedial; 5] {
        let pair = |retries, interval_secs| StoredRedial {
            retries,
            interval_secs,
        };
        [
            pair(self.redial_busy_retries, self.redial_busy_interval_secs),
            pair(
                self.redial_no_answer_retries,
                self.redial_no_answer_interval_secs,
            ),
            pair(
                self.redial_timeout_retries,
                self.redial_timeout_interval_secs,
            ),
            pair(self.redial_failed_retries, self.redial_failed_interval_secs),
            pair(
                self.redial_completed_retries,
                self.redial_completed_interval_secs,
            ),
        ]
    }
}

impl RuleColumns {
    /// The rules these columns hold. A zone or days the database holds but chrono-tz
    /// cannot read (written by hand) are reported, not guessed at.
    pub fn rules(&self, campaign: &str) -> Result<Rules, OpsError> {
        let time_zone = parse_time_zone(&self.time_zone).map_err(|_| {
            OpsError::Refused(format!(
                "campaign {campaign:?} has time zone {:?}, which is not an IANA zone: correct it with `callbridge campaign set {campaign} --time-zone ZONE`",
                self.time_zone
            ))
        })?;
        let days = Days::from_bits(self.window_days).ok_or_else(|| {
            OpsError::Refused(format!(
                "campaign {campaign:?} has window_days {}, outside 1-127",
                self.window_days
            ))
        })?;
        let window = match (self.window_start, self.window_end) {
            (Some(start), Some(end)) => Some(CallingWindow::new(start, end, days)),
            _ => None,
        };
        Ok(Rules {
            start_at: self.start_at,
            window,
            time_zone,
            max_per_minute: self
                .max_per_minute
                .and_then(|limit| u32::try_from(limit).ok()),
            redial: RedialPolicy::from_stored(self.redial.stored()),
            max_attempts_per_day: self
                .max_attempts_per_day
                .and_then(|limit| u32::try_from(limit).ok()),
        })
    }
}

impl Rules {
    /// When a campaign with these rules and `status` lets its waiting rows go.
    pub fn schedule(&self, status: CampaignStatus) -> Schedule {
        Schedule {
            status,
            start_at: self.start_at,
            window: self.window,
            zone: self.time_zone,
        }
    }

    /// `window_days` as stored: the window's days, or every day when there is no window.
    pub fn window_days(&self) -> i16 {
        self.window.map_or(Days::ALL, |window| window.days()).bits()
    }

    /// `max_per_minute` as stored.
    pub fn max_per_minute_column(&self) -> Option<i32> {
        self.max_per_minute
            .map(|limit| i32::try_from(limit).unwrap_or(i32::MAX))
    }

    /// `max_attempts_per_day` as stored.
    pub fn max_attempts_per_day_column(&self) -> Option<i32> {
        self.max_attempts_per_day
            .map(|limit| i32::try_from(limit).unwrap_or(i32::MAX))
    }

    /// How `show` and the audit print them.
    pub fn view(&self) -> RulesView {
        RulesView {
            start_at: self.start_at,
            window: self.window.map(|window| {
                let text = window.to_string();
                // `HH:MM-HH:MM days`: the hours alone, days in their own field.
                text.split_once(' ')
                    .map_or(text.clone(), |(hours, _)| hours.to_owned())
            }),
            days: self.window.map(|window| window.days().to_string()),
            time_zone: self.time_zone.name().to_owned(),
            max_per_minute: self.max_per_minute,
            redial: (!self.redial.is_empty()).then(|| self.redial.to_string()),
            max_attempts_per_day: self.max_attempts_per_day,
        }
    }
}

/// [`Rules`] as text, for `--json`, tables and `operator_actions.detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesView {
    /// RFC 3339; `null`: no start time.
    pub start_at: Option<DateTime<Utc>>,
    /// `HH:MM-HH:MM` in local time; `null`: any hour.
    pub window: Option<String>,
    /// The days the window opens (`mon-fri`, `all`); `null` without a window.
    pub days: Option<String>,
    pub time_zone: String,
    /// `null`: unpaced.
    pub max_per_minute: Option<u32>,
    /// `busy=2x15m,no_answer=1x1h`; `null`: no outcome is redialled.
    pub redial: Option<String>,
    /// `null`: no cap.
    pub max_attempts_per_day: Option<u32>,
}

/// What `enqueue` or `campaign set` was told to change; `None` leaves a rule as it is,
/// `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulesChange {
    pub start_at: Option<Option<DateTime<Utc>>>,
    /// The window's hours (`--window`); its days come from `days`, else stay.
    pub hours: Option<Option<(NaiveTime, NaiveTime)>>,
    pub days: Option<Days>,
    pub time_zone: Option<Tz>,
    pub max_per_minute: Option<Option<u32>>,
    /// The whole policy (`--redial`; `none` is [`RedialPolicy::NONE`]).
    pub redial: Option<RedialPolicy>,
    pub max_attempts_per_day: Option<Option<u32>>,
}

impl RulesChange {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == RulesChange::default()
    }

    /// `rules` with this change made. Days without a window are refused: they would say
    /// nothing.
    pub fn apply(&self, rules: &Rules) -> Result<Rules, OpsError> {
        let mut changed = *rules;
        if let Some(start_at) = self.start_at {
            changed.start_at = start_at;
        }
        if let Some(time_zone) = self.time_zone {
            changed.time_zone = time_zone;
        }
        if let Some(max_per_minute) = self.max_per_minute {
            if max_per_minute == Some(0) {
                return Err(OpsError::Refused(
                    "--max-per-minute must be at least 1 (or none, for no pacing)".into(),
                ));
            }
            changed.max_per_minute = max_per_minute;
        }
        if let Some(redial) = self.redial {
            changed.redial = redial;
        }
        if let Some(max_attempts_per_day) = self.max_attempts_per_day {
            if max_attempts_per_day == Some(0) {
                return Err(OpsError::Refused(
                    "--max-attempts-per-day must be at least 1 (or none, for no cap)".into(),
                ));
            }
            changed.max_attempts_per_day = max_attempts_per_day;
        }
        let days = self
            .days
            .or(rules.window.map(|window| window.days()))
            .unwrap_or(Days::ALL);
        changed.window = match self.hours {
            Some(None) => None,
            Some(Some((start, end))) => Some(CallingWindow::new(start, end, days)),
            None => rules.window.map(|window| window.with_days(days)),
        };
        if self.days.is_some() && changed.window.is_none() {
            return Err(OpsError::Refused(
                "--days needs a calling window: give --window HH:MM-HH:MM too".into(),
            ));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callbridge_types::campaign::parse_hours;

    fn hours(raw: &str) -> Option<Option<(NaiveTime, NaiveTime)>> {
        Some(Some(parse_hours(raw).unwrap()))
    }

    #[test]
    fn a_change_keeps_the_rules_it_does_not_name() {
        let rules = RulesChange {
            hours: hours("08:00-21:00"),
            days: Some(Days::parse("mon-sat").unwrap()),
            time_zone: Some("America/New_York".parse().unwrap()),
            max_per_minute: Some(Some(600)),
            ..RulesChange::default()
        }
        .apply(&Rules::default())
        .unwrap();

        let paced_faster = RulesChange {
            max_per_minute: Some(Some(900)),
            ..RulesChange::default()
        }
        .apply(&rules)
        .unwrap();

        assert_eq!(
            paced_faster.view(),
            RulesView {
                start_at: None,
                window: Some("08:00-21:00".into()),
                days: Some("mon-sat".into()),
                time_zone: "America/New_York".into(),
                max_per_minute: Some(900),
                redial: None,
                max_attempts_per_day: None,
            }
        );
    }

    #[test]
    fn new_hours_keep_the_days_and_new_days_keep_the_hours() {
        let rules = RulesChange {
            hours: hours("08:00-21:00"),
            days: Some(Days::parse("mon-fri").unwrap()),
            ..RulesChange::default()
        }
        .apply(&Rules::default())
        .unwrap();

        let later = RulesChange {
            hours: hours("10:00-20:00"),
            ..RulesChange::default()
        }
        .apply(&rules)
        .unwrap();
        assert_eq!(later.view().days.as_deref(), Some("mon-fri"));

        let weekend = RulesChange {
            days: Some(Days::parse("sat,sun").unwrap()),
            ..RulesChange::default()
        }
        .apply(&later)
        .unwrap();
        assert_eq!(weekend.view().window.as_deref(), Some("10:00-20:00"));
        assert_eq!(weekend.window_days(), 0b110_0000);
    }

    #[test]
    fn a_redial_policy_and_a_daily_cap_are_set_kept_and_removed() {
        let rules = RulesChange {
            redial: Some(RedialPolicy::parse("busy=2x15m").unwrap()),
            max_attempts_per_day: Some(Some(3)),
            ..RulesChange::default()
        }
        .apply(&Rules::default())
        .unwrap();
        assert_eq!(rules.view().redial.as_deref(), Some("busy=2x15m"));
        assert_eq!(rules.max_attempts_per_day_column(), Some(3));

        let paced = RulesChange {
            max_per_minute: Some(Some(10)),
            ..RulesChange::default()
        }
        .apply(&rules)
        .unwrap();
        assert_eq!(paced.redial, rules.redial);

        let removed = RulesChange {
            redial: Some(RedialPolicy::NONE),
            max_attempts_per_day: Some(None),
            ..RulesChange::default()
        }
        .apply(&paced)
        .unwrap();
        assert_eq!(removed.view().redial, None);
        assert_eq!(removed.max_attempts_per_day, None);

        let zero = RulesChange {
            max_attempts_per_day: Some(Some(0)),
            ..RulesChange::default()
        }
        .apply(&Rules::default());
        assert!(zero.unwrap_err().to_string().contains("at least 1"));
    }

    #[test]
    fn none_removes_a_rule_and_days_without_a_window_are_refused() {
        let rules = RulesChange {
            hours: hours("08:00-21:00"),
            max_per_minute: Some(Some(10)),
            ..RulesChange::default()
        }
        .apply(&Rules::default())
        .unwrap();
        let unruled = RulesChange {
            hours: Some(None),
            max_per_minute: Some(None),
            ..RulesChange::default()
        }
        .apply(&rules)
        .unwrap();
        assert_eq!(unruled, Rules::default());
        assert_eq!(unruled.window_days(), 127);

        let days_alone = RulesChange {
            days: Some(Days::parse("mon").unwrap()),
            ..RulesChange::default()
        }
        .apply(&Rules::default());
        assert!(
            days_alone
                .unwrap_err()
                .to_string()
                .contains("--days needs a calling window")
        );
        let zero = RulesChange {
            max_per_minute: Some(Some(0)),
            ..RulesChange::default()
        }
        .apply(&Rules::default());
        assert!(zero.is_err());
    }
}
