//! Deciding, from batch-status, whether the centralized system holds rows whose insert
//! outcome is unknown: none held → they may be sent again; all held → they
//! are `submitted`; anything else → `needs_review`, never a resend.
//!
//! Pure: the caller fetches the system's list and the batch's settled rows.
//!
//! The system lists every number it holds for the batch, once per accepted item. Rows
//! of the batch already `submitted` account for some of them; what is left can only
//! belong to the unknown rows, to rows already under review, or to something we cannot
//! explain (rows deleted locally, another sender, or a system that spells numbers
//! differently from how we sent them). Whatever cannot be explained makes a resend
//! unsafe, so it counts against "none held".

use std::collections::BTreeMap;

/// What batch-status says about the rows whose outcome was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The system holds every one of them.
    AllHeld,
    /// It holds none of them, and nothing it holds is unexplained: safe to resend.
    NoneHeld,
    /// Some, or it cannot be told apart from rows under review, or the system holds
    /// numbers that match no row: a person decides. The text says which, without numbers.
    Ambiguous(String),
}

/// The batch's rows whose fate is settled locally, by phone number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettledNumbers {
    /// Rows the system is known to hold.
    pub submitted: Vec<String>,
    /// Rows already in `needs_review`: the system may or may not hold them.
    pub under_review: Vec<String>,
}

fn multiset<'a>(numbers: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for number in numbers {
        *counts.entry(number.trim()).or_insert(0) += 1;
    }
    counts
}

/// Judges the rows numbered `unknown` against what the system `held` for their batch.
pub fn judge(held: &[String], settled: &SettledNumbers, unknown: &[&str]) -> Verdict {
    let mut unexplained = multiset(held.iter().map(String::as_str));
    for number in &settled.submitted {
        if let Some(count) = unexplained.get_mut(number.trim()) {
            *count = count.saturating_sub(1);
        }
    }
    let under_review = multiset(settled.under_review.iter().map(String::as_str));
    let unknown = multiset(unknown.iter().copied());
    let total_unknown: usize = unknown.values().sum();

    let mut held_unknown = 0;
    let mut ambiguous_numbers = 0;
    for (number, &wanted) in &unknown {
        let available = unexplained.remove(number).unwrap_or(0);
        let reviewed = under_review.get(number).copied().unwrap_or(0);
        if available == 0 {
            continue;
        }
        if available >= wanted + reviewed {
            held_unknown += wanted;
        } else {
            // Fewer than all copies, or copies a row under review may account for.
            ambiguous_numbers += wanted;
        }
    }
    let foreign: usize = unexplained
        .iter()
        .map(|(number, &count)| {
            count.saturating_sub(under_review.get(number).copied().unwrap_or(0))
        })
        .sum();

    if ambiguous_numbers == 0 && held_unknown == total_unknown {
        return Verdict::AllHeld;
    }
    if ambiguous_numbers == 0 && held_unknown == 0 {
        if foreign == 0 {
            return Verdict::NoneHeld;
        }
        return Verdict::Ambiguous(format!(
            "the centralized system holds {foreign} number(s) of this batch that match no submitted row, so it cannot be ruled out that it holds these {total_unknown} row(s) under another spelling"
        ));
    }
    if ambiguous_numbers > 0 {
        return Verdict::Ambiguous(format!(
            "the centralized system's list cannot be matched one to one with these {total_unknown} row(s) (repeated numbers, or numbers shared with rows under review)"
        ));
    }
    Verdict::Ambiguous(format!(
        "the centralized system holds {held_unknown} of these {total_unknown} row(s)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(numbers: &[&str]) -> Vec<String> {
        numbers.iter().map(|number| (*number).to_owned()).collect()
    }

    fn settled(submitted: &[&str], under_review: &[&str]) -> SettledNumbers {
        SettledNumbers {
            submitted: strings(submitted),
            under_review: strings(under_review),
        }
    }

    #[test]
    fn nothing_held_means_resend() {
        assert_eq!(
            judge(&[], &SettledNumbers::default(), &["1", "2"]),
            Verdict::NoneHeld
        );
        // Only the batch's earlier, submitted chunk is held.
        let held = strings(&["1", "2"]);
        assert_eq!(
            judge(&held, &settled(&["1", "2"], &[]), &["3", "4"]),
            Verdict::NoneHeld
        );
        // What rows under review may account for does not block a resend of other rows.
        assert_eq!(
            judge(&strings(&["9"]), &settled(&[], &["9"]), &["3"]),
            Verdict::NoneHeld
        );
    }

    #[test]
    fn everything_held_means_submitted() {
        let held = strings(&["1", "2", "3"]);
        assert_eq!(
            judge(&held, &settled(&["1"], &[]), &["2", "3"]),
            Verdict::AllHeld
        );
        // A number enqueued twice is held twice.
        let held = strings(&["5", "5"]);
        assert_eq!(
            judge(&held, &SettledNumbers::default(), &["5", "5"]),
            Verdict::AllHeld
        );
        // Whitespace the system trimmed does not matter.
        assert_eq!(
            judge(&strings(&["7"]), &SettledNumbers::default(), &[" 7 "]),
            Verdict::AllHeld
        );
    }

    #[test]
    fn anything_in_between_needs_review() {
        let some = judge(&strings(&["1"]), &SettledNumbers::default(), &["1", "2"]);
        assert!(
            matches!(some, Verdict::Ambiguous(ref why) if why.contains("holds 1 of these 2")),
            "{some:?}"
        );
        // One copy held of a number sent twice.
        let partial = judge(&strings(&["5"]), &SettledNumbers::default(), &["5", "5"]);
        assert!(matches!(partial, Verdict::Ambiguous(_)), "{partial:?}");
        // The held copy may be the reviewed row's.
        let shared = judge(&strings(&["8"]), &settled(&[], &["8"]), &["8"]);
        assert!(matches!(shared, Verdict::Ambiguous(_)), "{shared:?}");
        // Numbers the system holds that match nothing: maybe ours, spelled differently.
        let foreign = judge(&strings(&["+911"]), &SettledNumbers::default(), &["911"]);
        assert!(
            matches!(foreign, Verdict::Ambiguous(ref why) if why.contains("another spelling")),
            "{foreign:?}"
        );
    }

    #[test]
    fn verdict_texts_never_quote_numbers() {
        let verdicts = [
            judge(
                &strings(&["98765"]),
                &SettledNumbers::default(),
                &["98765", "12345"],
            ),
            judge(&strings(&["55555"]), &SettledNumbers::default(), &["12345"]),
        ];
        for verdict in verdicts {
            let Verdict::Ambiguous(why) = verdict else {
                panic!("expected ambiguous");
            };
            assert!(
                !why.contains("98765") && !why.contains("12345") && !why.contains("55555"),
                "{why}"
            );
        }
    }
}
