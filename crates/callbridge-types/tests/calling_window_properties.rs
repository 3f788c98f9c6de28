//! Property: over random instants, zones (daylight-saving changes included) and windows,
//! the calling window agrees with a brute-force reading of the local wall clock.
//!
//! - `is_open` is true exactly when the zone's local time falls in a minute the window
//!   covers (no row is sent outside its window);
//! - `next_opening` is open, and no instant between the asked instant and it is open,
//!   checked minute by minute and at the second before it (no eligible row is left
//!   waiting).
//!
//! The oracle shares nothing with the implementation but chrono-tz's UTC → local
//! conversion: it marks the minutes of the week the window covers in a table and looks
//! the local minute up.

use callbridge_types::campaign::{CallingWindow, Days, Tz};
use chrono::{DateTime, Datelike, NaiveTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use proptest::prelude::*;

const MINUTES_PER_WEEK: usize = 7 * 24 * 60;

/// Zones whose clock changes are unusual: 30-minute DST (Lord Howe), DST at midnight
/// (Havana, Santiago), negative DST (Dublin), DST suspended for Ramadan (Casablanca),
/// a skipped calendar day (Apia, 2011), half-hour offsets (St John's, Tehran, Kolkata).
const AWKWARD_ZONES: &[Tz] = &[
    chrono_tz::America::New_York,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Europe::London,
    chrono_tz::Europe::Dublin,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::America::Havana,
    chrono_tz::America::Santiago,
    chrono_tz::Africa::Casablanca,
    chrono_tz::Pacific::Apia,
    chrono_tz::America::St_Johns,
    chrono_tz::Asia::Tehran,
    chrono_tz::Australia::Sydney,
    chrono_tz::America::Sao_Paulo,
];

struct Oracle {
    covered: Vec<bool>,
}

impl Oracle {
    /// Marks every minute of the week the window covers: from its start on each day it
    /// opens, for its length (to the end, past midnight when the end is earlier, a whole
    /// day when start and end are equal).
    fn new(start: u32, end: u32, days_bits: u8) -> Oracle {
        let length = match end.cmp(&start) {
            std::cmp::Ordering::Greater => end - start,
            std::cmp::Ordering::Less => end + 1440 - start,
            std::cmp::Ordering::Equal => 1440,
        } as usize;
        let mut covered = vec![false; MINUTES_PER_WEEK];
        for day in 0..7 {
            if days_bits & (1 << day) == 0 {
                continue;
            }
            for minute in 0..length {
                covered[(day * 1440 + start as usize + minute) % MINUTES_PER_WEEK] = true;
            }
        }
        Oracle { covered }
    }

    fn is_open(&self, zone: Tz, instant: DateTime<Utc>) -> bool {
        let local = instant.with_timezone(&zone).naive_local();
        let minute_of_week = local.weekday().num_days_from_monday() as usize * 1440
            + local.hour() as usize * 60
            + local.minute() as usize;
        self.covered[minute_of_week]
    }
}

/// The instants in `year` at which `zone` changes its offset, to the hour or better.
fn offset_changes_in(zone: Tz, year: i32) -> Vec<DateTime<Utc>> {
    let offset_at = |at: DateTime<Utc>| zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    let mut at = Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0).unwrap();
    let mut changes = Vec::new();
    while at < end {
        let next = at + TimeDelta::days(1);
        if offset_at(at) != offset_at(next) {
            let mut hour = at;
            while offset_at(hour) == offset_at(at) {
                hour += TimeDelta::hours(1);
            }
            changes.push(hour);
        }
        at = next;
    }
    changes
}

fn any_zone() -> impl Strategy<Value = Tz> {
    prop_oneof![
        proptest::sample::select(AWKWARD_ZONES),
        proptest::sample::select(chrono_tz::TZ_VARIANTS.as_slice()),
    ]
}

/// Minutes of the day: anywhere, in the small hours where clocks change, or in the
/// hours calling windows usually have.
fn any_minute_of_day() -> impl Strategy<Value = u32> {
    prop_oneof![0..1440u32, 0..240u32, 420..1320u32]
}

fn any_days() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0x7f), 1..=0x7fu8, Just(0b001_1111)]
}

#[derive(Debug, Clone)]
struct Case {
    zone: Tz,
    instant: DateTime<Utc>,
    start: u32,
    end: u32,
    days_bits: u8,
}

fn any_case() -> impl Strategy<Value = Case> {
    (
        any_zone(),
        // 1980-2040, to the second.
        315_532_800i64..2_208_988_800i64,
        any::<bool>(),
        any::<prop::sample::Index>(),
        -2 * 86_400i64..2 * 86_400i64,
        any_minute_of_day(),
        any_minute_of_day(),
        any_days(),
    )
        .prop_map(
            |(zone, seconds, near_change, pick, jitter, start, end, days_bits)| {
                let mut instant = DateTime::from_timestamp(seconds, 0).unwrap();
                if near_change {
                    // Half the cases land within two days of one of the zone's clock
                    // changes in that year, where windows misbehave if they do.
                    let changes = offset_changes_in(zone, instant.year());
                    if !changes.is_empty() {
                        instant = *pick.get(&changes) + TimeDelta::seconds(jitter);
                    }
                }
                Case {
                    zone,
                    instant,
                    start,
                    end,
                    days_bits,
                }
            },
        )
}

fn time_of(minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(minute / 60, minute % 60, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn window_agrees_with_the_local_wall_clock_and_next_opening_leaves_nothing_waiting(
        case in any_case()
    ) {
        let Case { zone, instant, start, end, days_bits } = case;
        let window = CallingWindow::new(
            time_of(start),
            time_of(end),
            Days::from_bits(i16::from(days_bits)).unwrap(),
        );
        let oracle = Oracle::new(start, end, days_bits);

        prop_assert_eq!(window.is_open(zone, instant), oracle.is_open(zone, instant));

        let opening = window
            .next_opening(zone, instant)
            .expect("a window on at least one day opens");
        prop_assert!(opening >= instant);
        prop_assert!(oracle.is_open(zone, opening), "next opening {opening} is closed");
        if opening > instant {
            let just_before = opening - TimeDelta::seconds(1);
            prop_assert!(
                just_before < instant || !oracle.is_open(zone, just_before),
                "open already at {just_before}, before the next opening {opening}"
            );
            let mut probe = instant;
            while probe < opening {
                prop_assert!(
                    !oracle.is_open(zone, probe),
                    "open at {probe}, before the next opening {opening}"
                );
                probe += TimeDelta::minutes(1);
            }
        }
    }
}

#[test]
fn the_cases_include_clock_changes_and_windows_that_open_inside_them() {
    // The generator reaches what the property is about: instants near clock changes in
    // zones that have them.
    let changes = offset_changes_in(chrono_tz::America::New_York, 2026);
    assert_eq!(
        changes,
        vec![
            Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).unwrap(),
        ]
    );
    assert!(offset_changes_in(chrono_tz::Asia::Kolkata, 2026).is_empty());
}
