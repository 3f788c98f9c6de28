//! The submitter's SQL spells queue statuses as literals, on purpose: a partial index such
//! as idx_local_queue_due (`WHERE queue_status = 'pending'`) serves only a statement whose
//! predicate names the same literal, which a bound parameter does not once Postgres
//! switches a prepared statement to its generic plan, and the claim would then scan the
//! whole queue history. So `QueueStatus` (callbridge-types) stays the one spelling by this
//! check instead: every quoted word in the submitter's source must be one of its
//! spellings, and a status the submitter writes cannot drift from what the CLI, the
//! operator actions and the batch routine read.

use std::collections::BTreeSet;

use callbridge_types::status::QueueStatus;

/// Every `'word'` (two or more lowercase letters or underscores, in single quotes: SQL
/// string literals; Rust char literals are one character) in `text`.
fn quoted_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('\'') {
        let after = &rest[start + 1..];
        let word_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if word_len >= 2 && after.as_bytes().get(word_len) == Some(&b'\'') {
            words.push(after[..word_len].to_owned());
            rest = &after[word_len + 1..];
        } else {
            rest = after;
        }
    }
    words
}

#[test]
fn every_status_literal_in_the_submitters_sql_is_a_queue_status_spelling() {
    let source_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(source_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for word in quoted_words(&text) {
                assert!(
                    QueueStatus::parse(&word).is_ok(),
                    "{}: '{word}' is not a QueueStatus spelling (callbridge_types::status)",
                    path.display()
                );
                found.insert(word);
            }
        }
    }
    // The scan does find the statuses the submitter moves rows through.
    for status in [
        QueueStatus::Pending,
        QueueStatus::Submitting,
        QueueStatus::Submitted,
        QueueStatus::Failed,
        QueueStatus::NeedsReview,
    ] {
        assert!(
            found.contains(status.as_str()),
            "{status} not found in the SQL"
        );
    }
}

#[test]
fn quoted_words_are_sql_literals_not_char_literals() {
    assert_eq!(
        quoted_words("WHERE queue_status = 'pending' AND c = 'x' OR s IN ('a_b', 'Up')"),
        ["pending", "a_b"]
    );
}
