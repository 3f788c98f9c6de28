//! A campaign's rules as the operator writes them and as the submitter applies them: the
//! status spelling, the calling window (`HH:MM-HH:MM` on some days of the week, in an
//! IANA time zone), and the two questions the submitter asks of it — is it open at this
//! instant, and when does it next open; and its redial policy
//! (`busy=2x15m,no_answer=1x60m`), which the persister applies when a call ends.
//!
//! A row is sent only while its zone's local time is inside the window: the window is a
//! rule about the called person's wall clock (US calling hours are 8am–9pm local time),
//! so it is checked on the wall clock, and daylight-saving changes follow from that:
//! - an opening time that does not exist on a spring-forward day (02:30 when clocks jump
//!   from 02:00 to 03:00) opens at the first instant after the gap, the first instant whose
//!   local time is inside the window;
//! - an opening time that happens twice on a fall-back day opens at its first occurrence.
//!
//! The start is inclusive and the end exclusive; a window whose end is before its start
//! spans midnight and belongs to the day on which it opens (`22:00-02:00` on `fri` is open
//! from Friday 22:00 to Saturday 02:00).

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveTime, Offset, TimeDelta, TimeZone, Timelike,
    Utc, Weekday,
};
use thiserror::Error;

use crate::status::CallStatus;
pub use crate::status::CampaignStatus;
pub use chrono_tz::Tz;

/// A rule an operator wrote that cannot be used; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    #[error("calling window {0:?} is not HH:MM-HH:MM (for example 08:00-21:00)")]
    WindowSyntax(String),
    #[error(
        "calling window {0:?} opens and closes at the same time: give two different times, \
         or 00:00-24:00 for the whole day"
    )]
    EmptyWindow(String),
    #[error("days {given:?}: {reason}; write a range (mon-sat), a list (mon,wed,fri) or all")]
    Days { given: String, reason: String },
    #[error(
        "time zone {0:?} is not an IANA zone name (for example America/New_York or Asia/Kolkata)"
    )]
    TimeZone(String),
    #[error(
        "redial policy {given:?}: {reason}; write outcome=retries x interval, for example \
         busy=2x15m,no_answer=1x60m (outcomes: busy, no_answer, timeout, failed, completed; \
         intervals like 20s, 15m, 2h, 1d), or none"
    )]
    Redial { given: String, reason: String },
}

/// Reads an IANA time zone name (`America/New_York`, `Asia/Kolkata`, `UTC`).
pub fn parse_time_zone(raw: &str) -> Result<Tz, RuleError> {
    raw.trim()
        .parse::<Tz>()
        .map_err(|_| RuleError::TimeZone(raw.to_owned()))
}

/// The days of the week on which a window opens, stored as `campaigns.window_days`:
/// bit 0 Monday … bit 6 Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Days(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Days {
    /// Every day of the week (the column's default, 127).
    pub const ALL: Days = Days(0x7f);

    /// Reads the stored bits; `None` for a value outside 0–127 (bits no day has).
    pub fn from_bits(bits: i16) -> Option<Days> {
        u8::try_from(bits)
            .ok()
            .filter(|bits| *bits <= 0x7f)
            .map(Days)
    }

    /// The stored bits.
    pub fn bits(self) -> i16 {
        i16::from(self.0)
    }

    /// Whether the window opens on `day`.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// Whether no day is named: a window on no day never opens.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Reads `all`, a range (`mon-sat`, or `fri-mon` across the weekend), a list
    /// (`mon,wed,fri`) or both (`mon-wed,sat`); three-letter names, any case.
    pub fn parse(raw: &str) -> Result<Days, RuleError> {
        let error = |reason: String| RuleError::Days {
            given: raw.to_owned(),
            reason,
        };
        let text = raw.trim().to_ascii_lowercase();
        if text == "all" {
            return Ok(Days::ALL);
        }
        let day_index = |name: &str| {
            let name = name.trim();
            DAY_NAMES
                .iter()
                .position(|day| *day == name)
                .ok_or_else(|| error(format!("{name:?} is not a day (mon, tue, … sun)")))
        };
        let mut bits = 0u8;
        for part in text.split(',') {
            if part.trim().is_empty() {
                return Err(error("an empty item".to_owned()));
            }
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (day_index(first)?, day_index(last)?);
                    // A range may wrap over the weekend: fri-mon is fri, sat, sun, mon.
                    let mut day = first;
                    loop {
                        bits |= 1 << day;
                        if day == last {
                            break;
                        }
                        day = (day + 1) % 7;
                    }
                }
                None => bits |= 1 << day_index(part)?,
            }
        }
        Ok(Days(bits))
    }
}

impl fmt::Display for Days {
    /// `all`, or ranges and single days in week order (`mon-fri,sun`), which [`Days::parse`]
    /// reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Days::ALL {
            return f.write_str("all");
        }
        let mut parts = Vec::new();
        let mut day = 0;
        while day < 7 {
            if self.0 & (1 << day) == 0 {
                day += 1;
                continue;
            }
            let first = day;
            while day + 1 < 7 && self.0 & (1 << (day + 1)) != 0 {
                day += 1;
            }
            parts.push(match day - first {
                0 => DAY_NAMES[first].to_owned(),
                1 => format!("{},{}", DAY_NAMES[first], DAY_NAMES[day]),
                _ => format!("{}-{}", DAY_NAMES[first], DAY_NAMES[day]),
            });
            day += 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// Local opening hours on some days of the week: `campaigns.window_start`,
/// `window_end` and `window_days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallingWindow {
    start: NaiveTime,
    end: NaiveTime,
    days: Days,
}

/// How far ahead [`CallingWindow::next_opening`] looks. A window on at least one day
/// opens within a week plus a day; the margin covers a day whose window a clock change
/// swallowed whole.
const HORIZON_DAYS: i64 = 16;

impl CallingWindow {
    /// A window from the stored columns. `start == end` is a window open the whole day
    /// (24 hours from `start`); `end < start` spans midnight.
    pub fn new(start: NaiveTime, end: NaiveTime, days: Days) -> CallingWindow {
        CallingWindow { start, end, days }
    }

    /// Reads `--window HH:MM-HH:MM` (an end of `24:00` is midnight) with `--days`.
    pub fn parse(hours: &str, days: &str) -> Result<CallingWindow, RuleError> {
        let (start, end) = parse_hours(hours)?;
        Ok(CallingWindow::new(start, end, Days::parse(days)?))
    }

    /// Local opening time (inclusive).
    pub fn start(&self) -> NaiveTime {
        self.start
    }

    /// Local closing time (exclusive); before the start when the window spans midnight.
    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// The days on which the window opens.
    pub fn days(&self) -> Days {
        self.days
    }

    /// The same window on other days.
    pub fn with_days(self, days: Days) -> CallingWindow {
        CallingWindow { days, ..self }
    }

    /// Whether local time in `zone` at `instant` is inside the window.
    pub fn is_open(&self, zone: Tz, instant: DateTime<Utc>) -> bool {
        let local = instant.with_timezone(&zone).naive_local();
        let (date, time) = (local.date(), local.time());
        if self.start < self.end {
            self.days.contains(date.weekday()) && self.start <= time && time < self.end
        } else {
            // Spans midnight (or the whole day): the part after midnight belongs to the
            // window that opened the day before.
            (self.start <= time && self.days.contains(date.weekday()))
                || (time < self.end && self.days.contains(date.weekday().pred()))
        }
    }

    /// The first instant at or after `instant` at which the window is open: `instant`
    /// itself when it is open, else the next opening. `None` only for a window on no day.
    pub fn next_opening(&self, zone: Tz, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(zone, instant) {
            return Some(instant);
        }
        if self.days.is_empty() {
            return None;
        }
        // Local time enters the window either by passing the opening time on a day the
        // window opens (both instants, when a fall-back day has it twice) or by a clock
        // change landing inside it (which covers an opening time inside a spring-forward
        // gap: the first instant after the gap). The earliest such instant after
        // `instant` that is open is the next opening.
        let today = instant.with_timezone(&zone).date_naive();
        let openings = (-1..=HORIZON_DAYS)
            .filter_map(|offset| today.checked_add_signed(TimeDelta::days(offset)))
            .filter(|day| self.days.contains(day.weekday()))
            .flat_map(|day| local_instants(zone, day, self.start));
        let horizon = instant + TimeDelta::days(HORIZON_DAYS + 1);
        openings
            .chain(offset_changes(zone, instant, horizon))
            .filter(|candidate| *candidate > instant && self.is_open(zone, *candidate))
            .min()
    }
}

/// How far ahead a paused (or completed) campaign's waiting rows are put off. A resume
/// judges them again at once; this only bounds how often a forgotten pause is looked at.
pub const PAUSE_DEFERRAL: TimeDelta = TimeDelta::days(1);

/// What decides when a campaign's waiting rows may go out: its status, start time and
/// calling window, read in each row's zone (else `zone`). The one home of that rule:
/// `enqueue` stamps each row's due time with it, `campaign set`, `pause` and `resume`
/// re-stamp the waiting rows with it, the persister dates redials with it, and the
/// submitter's claim checks it once more right before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub status: CampaignStatus,
    /// Nothing is sent before this instant.
    pub start_at: Option<DateTime<Utc>>,
    pub window: Option<CallingWindow>,
    /// The zone of rows that carry none, or one this build does not know.
    pub zone: Tz,
}

impl Schedule {
    /// The zone a row's window is read in: its own when it names one this build knows,
    /// else the campaign's.
    pub fn zone_of(&self, row_zone: Option<&str>) -> Tz {
        row_zone
            .and_then(|zone| parse_time_zone(zone).ok())
            .unwrap_or(self.zone)
    }

    /// When a waiting row in `zone` may go out, judged at `now`: `now` itself when it
    /// may go now; else the later of the start time and the window's next opening in
    /// `zone`; `now` + [`PAUSE_DEFERRAL`] while the campaign is paused or completed, or
    /// when its window opens on no day (nothing goes out until the rules change);
    /// `None` for a cancelled campaign, whose rows never go out.
    pub fn due_at(&self, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.status {
            CampaignStatus::Active => {}
            CampaignStatus::Cancelled => return None,
            CampaignStatus::Paused | CampaignStatus::Completed => {
                return Some(now + PAUSE_DEFERRAL);
            }
        }
        Some(
            first_sendable(self.start_at, self.window.as_ref(), zone, now)
                .unwrap_or(now + PAUSE_DEFERRAL),
        )
    }

    /// Whether every zone waits alike when a row waits: the campaign is not active, or
    /// only its start time (no window) holds it, or its window never opens.
    pub fn holds_every_zone_alike(&self) -> bool {
        self.status != CampaignStatus::Active
            || self.window.is_none_or(|window| window.days().is_empty())
    }
}

/// The first instant at or after `from` at which a row in `zone` may go out under a start
/// time and a calling window: the window's next opening from the later of `from` and the
/// start time. `None` for a window on no day, which never opens.
pub fn first_sendable(
    start_at: Option<DateTime<Utc>>,
    window: Option<&CallingWindow>,
    zone: Tz,
    from: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let from = start_at.map_or(from, |start| start.max(from));
    match window {
        None => Some(from),
        Some(window) => window.next_opening(zone, from),
    }
}

/// `campaign::is_open(window, zone, instant)`: see [`CallingWindow::is_open`].
pub fn is_open(window: &CallingWindow, zone: Tz, instant: DateTime<Utc>) -> bool {
    window.is_open(zone, instant)
}

/// `campaign::next_opening(window, zone, instant)`: see [`CallingWindow::next_opening`].
pub fn next_opening(
    window: &CallingWindow,
    zone: Tz,
    instant: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    window.next_opening(zone, instant)
}

/// The local day in `zone` that holds `instant`, as the UTC instants of its first moment
/// and of the next day's: the day `max_attempts_per_day` counts a number's calls in.
pub fn local_day(zone: Tz, instant: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let date = instant.with_timezone(&zone).date_naive();
    let next = date.succ_opt().unwrap_or(date);
    (start_of_day(zone, date), start_of_day(zone, next))
}

/// The first instant of `date` in `zone`: midnight, or the first whole hour after it that
/// exists where a clock change skips midnight (Havana, Santiago).
fn start_of_day(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    (0..24)
        .find_map(
            |hour| match zone.from_local_datetime(&date.and_hms_opt(hour, 0, 0)?) {
                LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.to_utc()),
                LocalResult::None => None,
            },
        )
        .unwrap_or_else(|| date.and_time(NaiveTime::MIN).and_utc())
}

impl fmt::Display for CallingWindow {
    /// `HH:MM-HH:MM days`, as `--window` and `--days` take them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.start == self.end && self.start == NaiveTime::MIN {
            "24:00".to_owned()
        } else {
            self.end.format("%H:%M").to_string()
        };
        write!(f, "{}-{} {}", self.start.format("%H:%M"), end, self.days)
    }
}

/// Reads `HH:MM-HH:MM`; an end of `24:00` is midnight, so `00:00-24:00` is the whole day.
pub fn parse_hours(raw: &str) -> Result<(NaiveTime, NaiveTime), RuleError> {
    let syntax = || RuleError::WindowSyntax(raw.to_owned());
    let (start, end) = raw.trim().split_once('-').ok_or_else(syntax)?;
    let read = |text: &str, allow_24: bool| -> Result<NaiveTime, RuleError> {
        let text = text.trim();
        let (hours, minutes) = text.split_once(':').ok_or_else(syntax)?;
        if hours.is_empty()
            || hours.len() > 2
            || minutes.len() != 2
            || !hours
                .bytes()
                .chain(minutes.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(syntax());
        }
        let (hours, minutes): (u32, u32) = (hours.parse().unwrap(), minutes.parse().unwrap());
        if allow_24 && hours == 24 && minutes == 0 {
            return Ok(NaiveTime::MIN);
        }
        NaiveTime::from_hms_opt(hours, minutes, 0).ok_or_else(syntax)
    };
    let start_text = start.trim();
    let (start, end) = (read(start_text, false)?, read(end, true)?);
    if start == end && !(start == NaiveTime::MIN && end_is_24(raw)) {
        return Err(RuleError::EmptyWindow(raw.to_owned()));
    }
    Ok((start, end))
}

fn end_is_24(raw: &str) -> bool {
    raw.trim()
        .rsplit_once('-')
        .is_some_and(|(_, end)| end.trim() == "24:00")
}

/// The instants at which `zone`'s wall clock reads `time` on `day`: one, two on a
/// fall-back day (earliest first), none inside a spring-forward gap.
fn local_instants(zone: Tz, day: NaiveDate, time: NaiveTime) -> Vec<DateTime<Utc>> {
    match zone.from_local_datetime(&day.and_time(time)) {
        LocalResult::Single(at) => vec![at.to_utc()],
        LocalResult::Ambiguous(first, second) => vec![first.to_utc(), second.to_utc()],
        LocalResult::None => Vec::new(),
    }
}

/// The instants in `(from, to]` at which `zone`'s offset from UTC changes (the first
/// instant of each new offset), to the second.
fn offset_changes(zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    // Zones change offset at most a few times a year and never twice within six hours.
    const STEP: TimeDelta = TimeDelta::hours(6);
    let offset_at = |at: DateTime<Utc>| zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    let mut changes = Vec::new();
    // Whole seconds from here on: offsets change on whole seconds.
    let mut low = from.with_nanosecond(0).unwrap_or(from);
    let mut low_offset = offset_at(low);
    while low < to {
        let high = low + STEP;
        let high_offset = offset_at(high);
        if high_offset != low_offset {
            // Bisect (low, high] to the first second of the new offset.
            let (mut before, mut after) = (low, high);
            while after - before > TimeDelta::seconds(1) {
                let middle = before + TimeDelta::seconds((after - before).num_seconds() / 2);
                if offset_at(middle) == low_offset {
                    before = middle;
                } else {
                    after = middle;
                }
            }
            changes.push(after);
        }
        low = high;
        low_offset = high_offset;
    }
    changes
}

/// The outcomes a redial policy can name: the terminal call statuses, in the order
/// [`RedialPolicy`] keeps and stores them.
pub const REDIAL_OUTCOMES: [CallStatus; 5] = [
    CallStatus::Busy,
    CallStatus::NoAnswer,
    CallStatus::Timeout,
    CallStatus::Failed,
    CallStatus::Completed,
];

/// The most redials one outcome may ask for: a dialler that calls a person more often
/// than this is harassing them, whatever the policy says.
pub const MAX_RETRIES: u32 = 20;
/// The longest interval between two calls of a number (and what fits the stored
/// seconds with room to spare).
pub const MAX_INTERVAL: TimeDelta = TimeDelta::days(30);

/// How one outcome is redialled: up to `retries` more calls, each at least `interval`
/// after the previous one ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redial {
    pub retries: u32,
    pub interval: TimeDelta,
}

/// One outcome's stored columns (`campaigns.redial_<outcome>_retries` and
/// `…_interval_secs`); 0 and `None` when the outcome is not redialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredRedial {
    pub retries: i16,
    pub interval_secs: Option<i32>,
}

/// A campaign's redial policy: for each terminal outcome, whether and how a number whose
/// call ended so is called again. `failed` and `completed` are not redialled unless named.
///
/// Attempts count along the chain of calls to one number in one campaign: attempt 1 is
/// the number as enqueued, attempt n + 1 the redial of attempt n. After attempt n ends in
/// an outcome with `retries` r, the number is called again when n ≤ r; so `busy=2x15m`
/// calls a number that is always busy three times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct RedialPolicy {
    /// Indexed like [`REDIAL_OUTCOMES`].
    outcomes: [Option<Redial>; 5],
}

impl RedialPolicy {
    /// No outcome is redialled (the default).
    pub const NONE: RedialPolicy = RedialPolicy {
        outcomes: [None; 5],
    };

    /// Reads `busy=2x15m,no_answer=1x60m,timeout=1x30m` (`×` may stand for `x`; spaces
    /// around items are ignored), or `none` for no redials. Each outcome at most once.
    pub fn parse(raw: &str) -> Result<RedialPolicy, RuleError> {
        let error = |reason: String| RuleError::Redial {
            given: raw.to_owned(),
            reason,
        };
        let text = raw.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(RedialPolicy::NONE);
        }
        if text.is_empty() {
            return Err(error("it is empty".to_owned()));
        }
        let mut policy = RedialPolicy::NONE;
        for item in text.split(',') {
            let item = item.trim();
            let (outcome, rule) = item
                .split_once('=')
                .ok_or_else(|| error(format!("{item:?} has no '='")))?;
            let outcome = outcome.trim();
            let index = redial_index(outcome).ok_or_else(|| {
                error(format!(
                    "{outcome:?} is not an outcome a call ends in (busy, no_answer, timeout, failed, completed)"
                ))
            })?;
            if policy.outcomes[index].is_some() {
                return Err(error(format!("{outcome} is named twice")));
            }
            let rule = rule.trim().replace('×', "x");
            let (retries, interval) = rule
                .split_once(['x', 'X'])
                .ok_or_else(|| error(format!("{item:?} is not retries x interval (2x15m)")))?;
            let retries: u32 = retries
                .trim()
                .parse()
                .ok()
                .filter(|retries| (1..=MAX_RETRIES).contains(retries))
                .ok_or_else(|| {
                    error(format!(
                        "the retries of {outcome} must be a whole number from 1 to {MAX_RETRIES} \
                         (leave the outcome out not to redial it)"
                    ))
                })?;
            let interval = parse_interval(interval.trim()).map_err(error)?;
            policy.outcomes[index] = Some(Redial { retries, interval });
        }
        Ok(policy)
    }

    /// How `status` is redialled; `None` when it is not (or is not terminal).
    pub fn for_outcome(&self, status: &CallStatus) -> Option<Redial> {
        REDIAL_OUTCOMES
            .iter()
            .position(|outcome| outcome == status)
            .and_then(|index| self.outcomes[index])
    }

    /// When attempt `attempt` of a number ended in `status`: the least time before the
    /// next attempt, or `None` when there is no next attempt (not redialled, or its
    /// retries are used up).
    pub fn next_attempt_after(&self, status: &CallStatus, attempt: u32) -> Option<TimeDelta> {
        self.for_outcome(status)
            .filter(|redial| attempt <= redial.retries)
            .map(|redial| redial.interval)
    }

    /// Whether no outcome is redialled.
    pub fn is_empty(&self) -> bool {
        self.outcomes.iter().all(Option::is_none)
    }

    /// The stored columns, in [`REDIAL_OUTCOMES`] order.
    pub fn stored(&self) -> [StoredRedial; 5] {
        self.outcomes.map(|redial| match redial {
            None => StoredRedial::default(),
            Some(redial) => StoredRedial {
                retries: i16::try_from(redial.retries).unwrap_or(i16::MAX),
                interval_secs: Some(
                    i32::try_from(redial.interval.num_seconds()).unwrap_or(i32::MAX),
                ),
            },
        })
    }

    /// The policy the stored columns (in [`REDIAL_OUTCOMES`] order) hold. Columns a
    /// person wrote by hand that say nothing usable (no retries, no positive interval)
    /// leave their outcome unredialled.
    pub fn from_stored(columns: [StoredRedial; 5]) -> RedialPolicy {
        RedialPolicy {
            outcomes: columns.map(|column| {
                let retries = u32::try_from(column.retries).ok().filter(|r| *r > 0)?;
                let secs = column.interval_secs.filter(|secs| *secs > 0)?;
                Some(Redial {
                    retries,
                    interval: TimeDelta::seconds(i64::from(secs)),
                })
            }),
        }
    }
}

impl fmt::Display for RedialPolicy {
    /// `busy=2x15m,no_answer=1x1h` (outcomes in [`REDIAL_OUTCOMES`] order), or `none`;
    /// [`RedialPolicy::parse`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let items: Vec<String> = REDIAL_OUTCOMES
            .iter()
            .zip(self.outcomes)
            .filter_map(|(outcome, redial)| {
                let redial = redial?;
                Some(format!(
                    "{}={}x{}",
                    outcome.as_str(),
                    redial.retries,
                    format_interval(redial.interval)
                ))
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

fn redial_index(outcome: &str) -> Option<usize> {
    let status = CallStatus::parse(outcome)?;
    REDIAL_OUTCOMES.iter().position(|known| *known == status)
}

/// Reads an interval: a whole number and a unit, `s`, `m`, `h` or `d` (`20s`, `15m`,
/// `2h`, `1d`), from one second to [`MAX_INTERVAL`]. The error says what is wrong.
pub fn parse_interval(raw: &str) -> Result<TimeDelta, String> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let seconds_per = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "interval {raw:?} is not a whole number with a unit s, m, h or d (20s, 15m, 2h)"
            ));
        }
    };
    let count: i64 = digits
        .parse()
        .map_err(|_| format!("interval {raw:?} does not start with a whole number (15m)"))?;
    let interval = count
        .checked_mul(seconds_per)
        .map(TimeDelta::seconds)
        .filter(|interval| *interval > TimeDelta::zero() && *interval <= MAX_INTERVAL)
        .ok_or_else(|| format!("interval {raw:?} is not between 1s and 30d"))?;
    Ok(interval)
}

/// An interval in the largest unit that states it exactly (`90m` stays `90m`, `3600s`
/// reads `1h`); [`parse_interval`] reads it back.
pub fn format_interval(interval: TimeDelta) -> String {
    let seconds = interval.num_seconds();
    for (unit, per) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds % per == 0 {
            return format!("{}{unit}", seconds / per);
        }
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn window(hours: &str, days: &str) -> CallingWindow {
        CallingWindow::parse(hours, days).unwrap()
    }

    const NEW_YORK: Tz = chrono_tz::America::New_York;
    const KOLKATA: Tz = chrono_tz::Asia::Kolkata;

    #[test]
    fn a_local_day_runs_from_local_midnight_to_the_next() {
        assert_eq!(
            local_day(KOLKATA, utc("2026-06-15T20:00:00Z")),
            (utc("2026-06-15T18:30:00Z"), utc("2026-06-16T18:30:00Z"))
        );
        // New York on the day clocks spring forward: 23 hours long.
        let (start, end) = local_day(NEW_YORK, utc("2026-03-08T12:00:00Z"));
        assert_eq!(start, utc("2026-03-08T05:00:00Z"));
        assert_eq!(end - start, TimeDelta::hours(23));
        // Havana skips midnight on 2026-03-08: the day starts at 01:00 local (05:00Z).
        let (start, _) = local_day(chrono_tz::America::Havana, utc("2026-03-08T12:00:00Z"));
        assert_eq!(start, utc("2026-03-08T05:00:00Z"));
    }

    #[test]
    fn days_read_ranges_lists_all_and_wrap_over_the_weekend() {
        assert_eq!(Days::parse("all").unwrap(), Days::ALL);
        assert_eq!(Days::parse("mon-sat").unwrap().bits(), 0b011_1111);
        assert_eq!(Days::parse("Mon,WED, fri").unwrap().bits(), 0b001_0101);
        assert_eq!(Days::parse("fri-mon").unwrap().bits(), 0b111_0001);
        assert_eq!(Days::parse("mon-wed,sat").unwrap().bits(), 0b010_0111);
        assert_eq!(Days::parse("sun").unwrap().bits(), 0b100_0000);
        for bits in 0..=127 {
            let days = Days::from_bits(bits).unwrap();
            if !days.is_empty() {
                assert_eq!(Days::parse(&days.to_string()).unwrap(), days, "{days}");
            }
        }
        assert_eq!(Days::from_bits(128), None);
        assert_eq!(Days::from_bits(-1), None);
    }

    #[test]
    fn days_refuse_unknown_names_and_empty_items_saying_what_to_write() {
        for bad in ["", "monday", "mon,,tue", "mon-", "weekdays"] {
            let error = Days::parse(bad).unwrap_err().to_string();
            assert!(
                error.contains("write a range (mon-sat)"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn hours_read_hh_mm_pairs_and_24_00_as_midnight() {
        let at = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert_eq!(parse_hours("08:00-21:00").unwrap(), (at(8, 0), at(21, 0)));
        assert_eq!(parse_hours(" 8:30 - 9:05 ").unwrap(), (at(8, 30), at(9, 5)));
        assert_eq!(parse_hours("22:00-02:00").unwrap(), (at(22, 0), at(2, 0)));
        assert_eq!(parse_hours("00:00-24:00").unwrap(), (at(0, 0), at(0, 0)));
        assert_eq!(parse_hours("18:00-24:00").unwrap(), (at(18, 0), at(0, 0)));
        for bad in [
            "8-21",
            "08:00",
            "25:00-26:00",
            "08:60-09:00",
            "24:00-08:00",
            "a:bc-d",
        ] {
            assert_eq!(
                parse_hours(bad),
                Err(RuleError::WindowSyntax(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_hours("09:00-09:00"),
            Err(RuleError::EmptyWindow("09:00-09:00".to_owned()))
        );
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(parse_time_zone("America/New_York").unwrap(), NEW_YORK);
        assert_eq!(parse_time_zone("UTC").unwrap(), Tz::UTC);
        let error = parse_time_zone("EST5").unwrap_err().to_string();
        assert!(error.contains("not an IANA zone name"), "{error}");
    }

    #[test]
    fn campaign_status_spelling_round_trips() {
        for status in CampaignStatus::ALL {
            assert_eq!(CampaignStatus::parse(status.as_str()), Ok(*status));
        }
        assert_eq!(CampaignStatus::Paused.as_str(), "paused");
        assert!(CampaignStatus::parse("stopped").is_err());
    }

    #[test]
    fn redial_policies_read_outcome_retries_and_interval() {
        let policy = RedialPolicy::parse("busy=2x15m, no_answer=1x60m,timeout=1×30m").unwrap();
        assert_eq!(
            policy.for_outcome(&CallStatus::Busy),
            Some(Redial {
                retries: 2,
                interval: TimeDelta::minutes(15)
            })
        );
        assert_eq!(
            policy.for_outcome(&CallStatus::NoAnswer).unwrap().interval,
            TimeDelta::hours(1)
        );
        assert_eq!(
            policy.for_outcome(&CallStatus::Timeout).unwrap().interval,
            TimeDelta::minutes(30)
        );
        // Not named: never redialled.
        assert_eq!(policy.for_outcome(&CallStatus::Failed), None);
        assert_eq!(policy.for_outcome(&CallStatus::Completed), None);
        assert_eq!(policy.for_outcome(&CallStatus::Answered), None);
        assert_eq!(
            policy.to_string(),
            "busy=2x15m,no_answer=1x1h,timeout=1x30m"
        );
        assert_eq!(RedialPolicy::parse("NONE").unwrap(), RedialPolicy::NONE);
        assert_eq!(RedialPolicy::NONE.to_string(), "none");
        // Named explicitly, failed and completed are redialled; `NO ANSWER` is no_answer.
        let named = RedialPolicy::parse("failed=1x20s,completed=3x1d,NO ANSWER=1x2h").unwrap();
        assert_eq!(
            named.to_string(),
            "no_answer=1x2h,failed=1x20s,completed=3x1d"
        );
    }

    #[test]
    fn a_number_is_redialled_while_its_attempts_are_within_the_retries() {
        let policy = RedialPolicy::parse("busy=2x15m,no_answer=1x60m").unwrap();
        let fifteen = Some(TimeDelta::minutes(15));
        assert_eq!(policy.next_attempt_after(&CallStatus::Busy, 1), fifteen);
        assert_eq!(policy.next_attempt_after(&CallStatus::Busy, 2), fifteen);
        assert_eq!(policy.next_attempt_after(&CallStatus::Busy, 3), None);
        assert_eq!(
            policy.next_attempt_after(&CallStatus::NoAnswer, 1),
            Some(TimeDelta::hours(1))
        );
        assert_eq!(policy.next_attempt_after(&CallStatus::NoAnswer, 2), None);
        assert_eq!(policy.next_attempt_after(&CallStatus::Completed, 1), None);
        assert_eq!(policy.next_attempt_after(&CallStatus::Failed, 1), None);
    }

    #[test]
    fn bad_redial_policies_say_what_is_wrong_and_how_to_write_one() {
        for (bad, says) in [
            ("", "empty"),
            ("busy", "no '='"),
            ("engaged=1x5m", "\"engaged\" is not an outcome"),
            ("answered=1x5m", "is not an outcome"),
            ("busy=2", "not retries x interval"),
            ("busy=0x15m", "from 1 to 20"),
            ("busy=21x15m", "from 1 to 20"),
            ("busy=-1x15m", "from 1 to 20"),
            ("busy=2x15", "unit s, m, h or d"),
            ("busy=2x15 minutes", "unit s, m, h or d"),
            ("busy=2xm", "whole number"),
            ("busy=2x0s", "between 1s and 30d"),
            ("busy=2x31d", "between 1s and 30d"),
            ("busy=2x15m,busy=1x1h", "named twice"),
            ("busy=2x15m,", "no '='"),
        ] {
            let error = RedialPolicy::parse(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
            assert!(
                error.contains("busy=2x15m,no_answer=1x60m"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn stored_columns_round_trip_and_unusable_ones_redial_nothing() {
        let policy = RedialPolicy::parse("busy=2x15m,completed=1x1d").unwrap();
        let stored = policy.stored();
        assert_eq!(
            stored[0],
            StoredRedial {
                retries: 2,
                interval_secs: Some(900)
            }
        );
        assert_eq!(stored[1], StoredRedial::default());
        assert_eq!(RedialPolicy::from_stored(stored), policy);
        let mut by_hand = [StoredRedial::default(); 5];
        by_hand[0] = StoredRedial {
            retries: 3,
            interval_secs: None,
        };
        by_hand[1] = StoredRedial {
            retries: 0,
            interval_secs: Some(60),
        };
        assert!(RedialPolicy::from_stored(by_hand).is_empty());
    }

    #[test]
    fn intervals_read_and_print_in_their_largest_exact_unit() {
        assert_eq!(parse_interval("20s"), Ok(TimeDelta::seconds(20)));
        assert_eq!(parse_interval("15m"), Ok(TimeDelta::minutes(15)));
        assert_eq!(parse_interval(" 2h "), Ok(TimeDelta::hours(2)));
        assert_eq!(parse_interval("30d"), Ok(TimeDelta::days(30)));
        assert_eq!(format_interval(TimeDelta::seconds(3600)), "1h");
        assert_eq!(format_interval(TimeDelta::minutes(90)), "90m");
        assert_eq!(format_interval(TimeDelta::seconds(61)), "61s");
        assert!(parse_interval("99999999999999999999d").is_err());
    }

    #[test]
    fn window_is_open_from_its_start_until_just_before_its_end_in_local_time() {
        let hours = window("08:00-21:00", "all");
        // 2026-06-15 is a Monday; New York is UTC-4 in summer, Kolkata UTC+5:30.
        assert!(!hours.is_open(NEW_YORK, utc("2026-06-15T11:59:59Z")));
        assert!(hours.is_open(NEW_YORK, utc("2026-06-15T12:00:00Z")));
        assert!(hours.is_open(NEW_YORK, utc("2026-06-16T00:59:59Z")));
        assert!(!hours.is_open(NEW_YORK, utc("2026-06-16T01:00:00Z")));
        assert!(hours.is_open(KOLKATA, utc("2026-06-15T02:30:00Z")));
        assert!(!hours.is_open(KOLKATA, utc("2026-06-15T15:30:00Z")));
    }

    #[test]
    fn window_over_midnight_belongs_to_the_day_it_opens() {
        // Friday 22:00 to Saturday 02:00 only.
        let late = window("22:00-02:00", "fri");
        assert!(late.is_open(Tz::UTC, utc("2026-06-19T22:00:00Z"))); // Friday
        assert!(late.is_open(Tz::UTC, utc("2026-06-20T01:59:00Z"))); // Saturday early
        assert!(!late.is_open(Tz::UTC, utc("2026-06-20T22:00:00Z"))); // Saturday late
        assert!(!late.is_open(Tz::UTC, utc("2026-06-19T01:00:00Z"))); // Friday early
        assert_eq!(
            late.next_opening(Tz::UTC, utc("2026-06-20T02:00:00Z")),
            Some(utc("2026-06-26T22:00:00Z"))
        );
    }

    #[test]
    fn next_opening_is_the_next_local_start_on_an_allowed_day() {
        let hours = window("08:00-21:00", "mon-fri");
        // Friday 21:00 New York → Monday 08:00 New York.
        assert_eq!(
            hours.next_opening(NEW_YORK, utc("2026-06-20T01:00:00Z")),
            Some(utc("2026-06-22T12:00:00Z"))
        );
        let open = utc("2026-06-22T15:00:00Z");
        assert_eq!(hours.next_opening(NEW_YORK, open), Some(open));
        assert_eq!(
            hours
                .with_days(Days::from_bits(0).unwrap())
                .next_opening(NEW_YORK, open),
            None
        );
    }

    #[test]
    fn a_row_is_due_at_its_own_zones_opening_after_the_start_time() {
        let schedule = Schedule {
            status: CampaignStatus::Active,
            start_at: None,
            window: Some(window("08:00-21:00", "all")),
            zone: NEW_YORK,
        };
        // 20:59:30 in New York (EST) is 07:29:30 the next morning in Kolkata.
        let now = utc("2026-12-05T01:59:30Z");
        assert_eq!(schedule.due_at(NEW_YORK, now), Some(now));
        assert_eq!(
            schedule.due_at(KOLKATA, now),
            Some(utc("2026-12-05T02:30:00Z"))
        );
        assert_eq!(schedule.zone_of(Some("Asia/Kolkata")), KOLKATA);
        assert_eq!(schedule.zone_of(Some("Mars/Olympus")), NEW_YORK);
        assert_eq!(schedule.zone_of(None), NEW_YORK);
        assert!(!schedule.holds_every_zone_alike());

        // A start time inside the window is the due time; one outside it waits for the
        // opening after it.
        // 16:00Z: 11:00 in New York, 21:30 in Kolkata.
        let later = Schedule {
            start_at: Some(utc("2026-12-05T16:00:00Z")),
            ..schedule
        };
        assert_eq!(
            later.due_at(NEW_YORK, now),
            Some(utc("2026-12-05T16:00:00Z"))
        );
        assert_eq!(
            later.due_at(KOLKATA, now),
            Some(utc("2026-12-06T02:30:00Z"))
        );
        let unwindowed = Schedule {
            window: None,
            ..later
        };
        assert_eq!(
            unwindowed.due_at(KOLKATA, now),
            Some(utc("2026-12-05T16:00:00Z"))
        );
        assert!(unwindowed.holds_every_zone_alike());
    }

    #[test]
    fn a_paused_campaigns_rows_wait_a_day_and_a_cancelled_ones_never_go() {
        let now = utc("2026-12-05T01:59:30Z");
        let paused = Schedule {
            status: CampaignStatus::Paused,
            start_at: None,
            window: None,
            zone: Tz::UTC,
        };
        assert_eq!(paused.due_at(KOLKATA, now), Some(now + PAUSE_DEFERRAL));
        assert!(paused.holds_every_zone_alike());
        let cancelled = Schedule {
            status: CampaignStatus::Cancelled,
            ..paused
        };
        assert_eq!(cancelled.due_at(KOLKATA, now), None);
        let never_open = Schedule {
            status: CampaignStatus::Active,
            window: Some(window("08:00-21:00", "all").with_days(Days::from_bits(0).unwrap())),
            ..paused
        };
        assert_eq!(never_open.due_at(KOLKATA, now), Some(now + PAUSE_DEFERRAL));
    }

    #[test]
    fn an_opening_time_skipped_by_spring_forward_opens_at_the_first_instant_after_the_gap() {
        // 2026-03-08: New York's clocks jump from 02:00 EST to 03:00 EDT (07:00Z).
        let early = window("02:30-05:00", "all");
        assert_eq!(
            early.next_opening(NEW_YORK, utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        assert!(!early.is_open(NEW_YORK, utc("2026-03-08T06:59:59Z")));
        // A window lying wholly in the gap does not open that day.
        let in_gap = window("02:10-02:50", "all");
        assert_eq!(
            in_gap.next_opening(NEW_YORK, utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-09T06:10:00Z"))
        );
    }

    #[test]
    fn an_opening_time_repeated_by_fall_back_opens_at_its_first_occurrence() {
        // 2026-11-01: New York's clocks fall back from 02:00 EDT to 01:00 EST (06:00Z), so
        // 01:30 happens at 05:30Z and again at 06:30Z.
        let early = window("01:30-05:00", "all");
        assert_eq!(
            early.next_opening(NEW_YORK, utc("2026-11-01T04:00:00Z")),
            Some(utc("2026-11-01T05:30:00Z"))
        );
        // Closed at the first 01:20; when the clocks fall back, local time is 01:00 again,
        // inside the window, so it opens again for the repeated twenty minutes.
        let short = window("01:00-01:20", "all");
        assert_eq!(
            short.next_opening(NEW_YORK, utc("2026-11-01T05:20:00Z")),
            Some(utc("2026-11-01T06:00:00Z"))
        );
    }
}
