//! Properties of the redial policy's one parser: whatever an operator types, it answers
//! (a policy or a message, never a panic); every policy reads back from the text it
//! prints and from its stored columns; and a policy never allows more calls to a number
//! than its retries say.

use callbridge_types::campaign::{
    MAX_RETRIES, REDIAL_OUTCOMES, RedialPolicy, format_interval, parse_interval,
};
use chrono::TimeDelta;
use proptest::prelude::*;

/// A policy text built the way an operator writes one: some outcomes, each with
/// retries and an interval in some unit.
fn policy_text() -> impl Strategy<Value = String> {
    let item = (
        0..REDIAL_OUTCOMES.len(),
        1..=MAX_RETRIES,
        1u32..=720,
        prop::sample::select(vec!["s", "m", "h"]),
    );
    prop::collection::vec(item, 1..=5).prop_map(|items| {
        let mut seen = std::collections::BTreeSet::new();
        items
            .into_iter()
            .filter(|(outcome, ..)| seen.insert(*outcome))
            .map(|(outcome, retries, count, unit)| {
                format!(
                    "{}={retries}x{count}{unit}",
                    REDIAL_OUTCOMES[outcome].as_str()
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

proptest! {
    #[test]
    fn any_text_is_a_policy_or_an_error_that_shows_how_to_write_one(raw in ".{0,40}") {
        if let Err(error) = RedialPolicy::parse(&raw) {
            prop_assert!(error.to_string().contains("busy=2x15m"), "{}", error);
        }
    }

    #[test]
    fn a_policy_reads_back_from_its_text_and_its_columns(text in policy_text()) {
        let policy = RedialPolicy::parse(&text).unwrap();
        prop_assert_eq!(RedialPolicy::parse(&policy.to_string()).unwrap(), policy);
        prop_assert_eq!(RedialPolicy::from_stored(policy.stored()), policy);
    }

    #[test]
    fn a_number_that_always_ends_one_way_gets_one_call_plus_its_retries(
        text in policy_text(),
        outcome in 0..REDIAL_OUTCOMES.len(),
    ) {
        let policy = RedialPolicy::parse(&text).unwrap();
        let status = &REDIAL_OUTCOMES[outcome];
        let mut calls = 1u32;
        while policy.next_attempt_after(status, calls).is_some() {
            calls += 1;
            prop_assert!(calls <= MAX_RETRIES + 1);
        }
        let retries = policy.for_outcome(status).map_or(0, |redial| redial.retries);
        prop_assert_eq!(calls, retries + 1);
    }

    #[test]
    fn intervals_read_back_from_their_printed_form(seconds in 1i64..=30 * 86_400) {
        let interval = TimeDelta::seconds(seconds);
        prop_assert_eq!(parse_interval(&format_interval(interval)), Ok(interval));
    }
}
