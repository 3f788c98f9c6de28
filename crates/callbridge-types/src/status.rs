//! The status vocabularies, each defined once: call statuses and their order
//! (which status a call keeps), batch statuses, queue statuses and campaign statuses.

use std::cmp::Ordering;
use std::fmt;

use chrono::NaiveDateTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lower-cases `raw`, trims it and turns each run of spaces, tabs or hyphens into one `_`,
/// so Asterisk's `NO ANSWER` and `no-answer` both read `no_answer`.
///
/// Event types use the same rule, so one spelling convention covers every vocabulary a
/// sender gives us.
pub fn normalise(raw: &str) -> String {
    raw.split(|c: char| c.is_whitespace() || c == '-')
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// The status of one call as `call_logs.call_status` stores it.
///
/// A status the centralized system sends that is not one of ours is kept, normalised,
/// as [`CallStatus::Other`]; it ranks below every known status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallStatus {
    Started,
    Ringing,
    Answered,
    /// No terminal callback arrived within the callback deadline and batch-status could
    /// not tell the outcome: callbridge gave up waiting, so the call's batch can complete.
    /// Not a real outcome: any terminal callback that arrives later replaces it.
    Expired,
    Completed,
    Failed,
    Busy,
    NoAnswer,
    Timeout,
    /// A status outside the vocabulary, already normalised (never empty).
    Other(String),
}

impl CallStatus {
    /// Every known (non-`Other`) status, lowest rank first.
    pub const KNOWN: [CallStatus; 9] = [
        CallStatus::Started,
        CallStatus::Ringing,
        CallStatus::Answered,
        CallStatus::Expired,
        CallStatus::Completed,
        CallStatus::Failed,
        CallStatus::Busy,
        CallStatus::NoAnswer,
        CallStatus::Timeout,
    ];

    /// Normalises `raw` (see [`normalise`]) and maps it onto the vocabulary.
    ///
    /// Returns `None` when nothing is left after normalisation: a blank status says nothing.
    pub fn parse(raw: &str) -> Option<CallStatus> {
        let normalised = normalise(raw);
        let status = match normalised.as_str() {
            "" => return None,
            "started" => CallStatus::Started,
            "ringing" => CallStatus::Ringing,
            "answered" => CallStatus::Answered,
            "expired" => CallStatus::Expired,
            "completed" => CallStatus::Completed,
            "failed" => CallStatus::Failed,
            "busy" => CallStatus::Busy,
            "no_answer" => CallStatus::NoAnswer,
            "timeout" => CallStatus::Timeout,
            _ => CallStatus::Other(normalised),
        };
        Some(status)
    }

    /// The stored spelling.
    pub fn as_str(&self) -> &str {
        match self {
            CallStatus::Started => "started",
            CallStatus::Ringing => "ringing",
            CallStatus::Answered => "answered",
            CallStatus::Expired => "expired",
            CallStatus::Completed => "completed",
            CallStatus::Failed => "failed",
            CallStatus::Busy => "busy",
            CallStatus::NoAnswer => "no_answer",
            CallStatus::Timeout => "timeout",
            CallStatus::Other(name) => name,
        }
    }

    /// The order a call's status only moves up in: unknown (0) < started = ringing (1) <
    /// answered (2) < expired (3) < terminal (4). `expired` is above every status a live
    /// call reports, so a late `call_answered` does not reopen an expired call, and below
    /// every real outcome, so a late terminal callback replaces it.
    pub fn rank(&self) -> u8 {
        match self {
            CallStatus::Other(_) => 0,
            CallStatus::Started | CallStatus::Ringing => 1,
            CallStatus::Answered => 2,
            CallStatus::Expired => 3,
            CallStatus::Completed
            | CallStatus::Failed
            | CallStatus::Busy
            | CallStatus::NoAnswer
            | CallStatus::Timeout => 4,
        }
    }

    /// A call in a terminal status is over: the centralized system reported its outcome,
    /// which is published and counted. `expired` is not terminal (nobody reported an
    /// outcome) but is counted; see [`CallStatus::batch_count`].
    pub fn is_terminal(&self) -> bool {
        self.terminal_precedence().is_some()
    }

    /// Which of its batch's counts the call is in: `completed_calls` for `completed`,
    /// `failed_calls` for every other terminal status and for `expired` (the batch
    /// completes once each accepted call is counted), none while the call may still be
    /// going on. SQL's `callbridge_call_count_kind` gives the same answer.
    pub fn batch_count(&self) -> Option<BatchCount> {
        match self {
            CallStatus::Completed => Some(BatchCount::Completed),
            CallStatus::Expired => Some(BatchCount::Failed),
            status if status.is_terminal() => Some(BatchCount::Failed),
            _ => None,
        }
    }

    /// Tie-break between two terminal statuses with the same `end_time`:
    /// completed (5) > failed (4) > busy (3) > no_answer (2) > timeout (1).
    /// `None` for a status that is not terminal.
    pub fn terminal_precedence(&self) -> Option<u8> {
        match self {
            CallStatus::Completed => Some(5),
            CallStatus::Failed => Some(4),
            CallStatus::Busy => Some(3),
            CallStatus::NoAnswer => Some(2),
            CallStatus::Timeout => Some(1),
            _ => None,
        }
    }

    /// Whether the batch counts this call in `completed_calls` (as opposed to
    /// `failed_calls`, which takes every other terminal status).
    pub fn counts_as_completed(&self) -> bool {
        *self == CallStatus::Completed
    }
}

/// The count of `call_batches` a call is in (see [`CallStatus::batch_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCount {
    /// `completed_calls`.
    Completed,
    /// `failed_calls`.
    Failed,
}

impl BatchCount {
    /// As `callbridge_call_count_kind` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchCount::Completed => "completed",
            BatchCount::Failed => "failed",
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CallStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        CallStatus::parse(&raw).ok_or_else(|| serde::de::Error::custom("empty call status"))
    }
}

/// Where one event stands when deciding which event's status a call keeps.
///
/// Ordered: a greater key wins. Compared by rank first; between two terminal events
/// by `end_time` (a missing `end_time` counts as earliest), then by
/// [`CallStatus::terminal_precedence`]; between `started` and `ringing` (equal rank)
/// `ringing` wins, because it can only follow `started`. Keys that compare equal
/// (the same status, and for terminal statuses the same `end_time`; or two unknown
/// statuses) stand equally: the caller keeps what it has, or breaks the tie itself
/// (e.g. by event id) when it needs a result independent of arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PrecedenceKey {
    // Field order is the comparison order (derived `Ord` is lexicographic).
    rank: u8,
    terminal_end_time: Option<NaiveDateTime>,
    tie_break: u8,
}

/// The [`PrecedenceKey`] of an event carrying `status` and `end_time`.
pub fn precedence_key(status: &CallStatus, end_time: Option<NaiveDateTime>) -> PrecedenceKey {
    let tie_break = match status {
        CallStatus::Ringing => 1,
        other => other.terminal_precedence().unwrap_or(0),
    };
    PrecedenceKey {
        rank: status.rank(),
        // end_time only orders terminal events; for the others it is noise (often absent).
        terminal_end_time: if status.is_terminal() { end_time } else { None },
        tie_break,
    }
}

/// True when an event with `candidate` (status, end_time) must replace the status of a
/// call currently holding `current`. Equal standing does not replace.
pub fn supersedes(
    candidate: (&CallStatus, Option<NaiveDateTime>),
    current: (&CallStatus, Option<NaiveDateTime>),
) -> bool {
    precedence_key(candidate.0, candidate.1).cmp(&precedence_key(current.0, current.1))
        == Ordering::Greater
}

/// A status string that is not in a closed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {vocabulary} status {value:?}")]
pub struct UnknownStatus {
    pub vocabulary: &'static str,
    pub value: String,
}

/// Defines a closed status vocabulary with `as_str`, `parse`, `ALL`, Display and serde
/// as its stored spelling, so each vocabulary is spelled in exactly one place.
macro_rules! closed_vocabulary {
    (
        $(#[$meta:meta])* $name:ident, $vocabulary:literal,
        { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in the order the workflow moves through them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Reads the stored spelling (exact, lower case).
            pub fn parse(raw: &str) -> Result<Self, UnknownStatus> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownStatus { vocabulary: $vocabulary, value: raw.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                $name::parse(raw)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

closed_vocabulary!(
    /// `call_batches.batch_status`: moves only forward,
    /// `pending → submitted → in_progress → completed`, or to `failed` when the
    /// centralized system accepted none of the batch's numbers, or to `cancelled` when
    /// an operator cancelled every one of them before it was sent.
    BatchStatus, "batch", {
        Pending => "pending",
        Submitted => "submitted",
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl BatchStatus {
    /// `completed`, `failed` and `cancelled` are final: nothing moves a batch out of them
    /// on its own (an operator's repair may reopen one).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BatchStatus::Completed | BatchStatus::Failed | BatchStatus::Cancelled
        )
    }
}

closed_vocabulary!(
    /// `local_call_queue.queue_status`, the state of one row the submitter sends.
    QueueStatus, "queue", {
        /// Waiting to be sent (possibly after a backoff).
        Pending => "pending",
        /// Leased by a submitter that is sending it now.
        Submitting => "submitting",
        /// The centralized system holds it.
        Submitted => "submitted",
        /// Given up; the last error says why.
        Failed => "failed",
        /// Outcome could not be established: never resent automatically.
        NeedsReview => "needs_review",
        /// Its campaign was cancelled before it was sent: never sent.
        Cancelled => "cancelled",
        /// Held back by a do-not-call rule: never sent.
        Suppressed => "suppressed",
    }
);

impl QueueStatus {
    /// Still to be sent: `pending`, or `submitting` (leased by a submitter sending it).
    pub const WAITING: [QueueStatus; 2] = [QueueStatus::Pending, QueueStatus::Submitting];

    /// Whether the row still waits to be sent.
    pub fn is_waiting(self) -> bool {
        Self::WAITING.contains(&self)
    }
}

closed_vocabulary!(
    /// `campaigns.status`: only an `active` campaign's rows are sent. `paused` holds them
    /// until it is resumed, `cancelled` ends them unsent, `completed` says nothing is left.
    CampaignStatus, "campaign", {
        Active => "active",
        Paused => "paused",
        Cancelled => "cancelled",
        Completed => "completed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(h: u32, m: u32) -> Option<NaiveDateTime> {
        Some(
            NaiveDate::from_ymd_opt(2024, 1, 1)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap(),
        )
    }

    #[test]
    fn normalise_lowercases_and_joins_words_with_underscores() {
        for (raw, expected) in [
            ("NO ANSWER", "no_answer"),
            ("no-answer", "no_answer"),
            ("  No -  Answer ", "no_answer"),
            ("Completed", "completed"),
            ("no_answer", "no_answer"),
            ("   ", ""),
        ] {
            assert_eq!(normalise(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn parse_maps_known_spellings_and_keeps_unknown_ones_normalised() {
        assert_eq!(CallStatus::parse("NO ANSWER"), Some(CallStatus::NoAnswer));
        assert_eq!(
            CallStatus::parse("Time-Out"),
            Some(CallStatus::Other("time_out".into()))
        );
        assert_eq!(
            CallStatus::parse("CONGESTION"),
            Some(CallStatus::Other("congestion".into()))
        );
        assert_eq!(CallStatus::parse(" "), None);
        for status in CallStatus::KNOWN {
            assert_eq!(CallStatus::parse(status.as_str()), Some(status.clone()));
        }
    }

    #[test]
    fn rank_orders_unknown_below_started_below_answered_below_terminal() {
        let other = CallStatus::Other("queued".into());
        assert!(other.rank() < CallStatus::Started.rank());
        assert_eq!(CallStatus::Started.rank(), CallStatus::Ringing.rank());
        assert!(CallStatus::Ringing.rank() < CallStatus::Answered.rank());
        for terminal in &CallStatus::KNOWN[4..] {
            assert!(terminal.is_terminal());
            assert!(CallStatus::Expired.rank() < terminal.rank());
        }
        assert!(CallStatus::Answered.rank() < CallStatus::Expired.rank());
        assert!(!CallStatus::Expired.is_terminal());
        assert!(!CallStatus::Answered.is_terminal());
        assert!(!other.is_terminal());
    }

    #[test]
    fn terminal_precedence_is_completed_failed_busy_no_answer_timeout() {
        let order: Vec<u8> = [
            CallStatus::Completed,
            CallStatus::Failed,
            CallStatus::Busy,
            CallStatus::NoAnswer,
            CallStatus::Timeout,
        ]
        .iter()
        .map(|s| s.terminal_precedence().unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] > w[1]), "{order:?}");
    }

    #[test]
    fn lower_rank_never_supersedes_higher_rank_whatever_the_end_time() {
        assert!(!supersedes(
            (&CallStatus::Answered, at(23, 0)),
            (&CallStatus::Timeout, None)
        ));
        assert!(supersedes(
            (&CallStatus::Timeout, None),
            (&CallStatus::Answered, at(23, 0))
        ));
        assert!(supersedes(
            (&CallStatus::Started, None),
            (&CallStatus::Other("x".into()), None)
        ));
    }

    #[test]
    fn expired_outranks_live_statuses_and_yields_to_every_real_outcome() {
        // A late terminal callback replaces expired, whatever its end_time.
        for terminal in &CallStatus::KNOWN[4..] {
            assert!(supersedes(
                (terminal, None),
                (&CallStatus::Expired, at(23, 0))
            ));
            assert!(!supersedes(
                (&CallStatus::Expired, at(23, 0)),
                (terminal, None)
            ));
        }
        // A late call_started or call_answered does not reopen it.
        for live in [
            CallStatus::Started,
            CallStatus::Ringing,
            CallStatus::Answered,
        ] {
            assert!(supersedes((&CallStatus::Expired, None), (&live, at(9, 0))));
            assert!(!supersedes((&live, at(9, 0)), (&CallStatus::Expired, None)));
        }
    }

    #[test]
    fn batch_count_puts_completed_apart_and_expired_with_the_failed() {
        assert_eq!(
            CallStatus::Completed.batch_count(),
            Some(BatchCount::Completed)
        );
        assert_eq!(CallStatus::Expired.batch_count(), Some(BatchCount::Failed));
        for status in &CallStatus::KNOWN[5..] {
            assert_eq!(status.batch_count(), Some(BatchCount::Failed), "{status:?}");
        }
        for status in [
            CallStatus::Started,
            CallStatus::Answered,
            CallStatus::Other("x".into()),
        ] {
            assert_eq!(status.batch_count(), None, "{status:?}");
        }
        assert_eq!(CallStatus::parse("EXPIRED"), Some(CallStatus::Expired));
    }

    #[test]
    fn later_end_time_wins_between_terminal_statuses() {
        assert!(supersedes(
            (&CallStatus::Timeout, at(10, 5)),
            (&CallStatus::Completed, at(10, 2))
        ));
        assert!(!supersedes(
            (&CallStatus::Completed, at(10, 2)),
            (&CallStatus::Timeout, at(10, 5))
        ));
        // A missing end_time counts as earliest.
        assert!(supersedes(
            (&CallStatus::Timeout, at(0, 0)),
            (&CallStatus::Completed, None)
        ));
    }

    #[test]
    fn equal_end_time_falls_back_to_terminal_precedence() {
        assert!(supersedes(
            (&CallStatus::Completed, at(10, 2)),
            (&CallStatus::Failed, at(10, 2))
        ));
        assert!(supersedes(
            (&CallStatus::Busy, None),
            (&CallStatus::NoAnswer, None)
        ));
        assert!(!supersedes(
            (&CallStatus::Timeout, None),
            (&CallStatus::NoAnswer, None)
        ));
    }

    #[test]
    fn equal_standing_does_not_supersede() {
        assert!(!supersedes(
            (&CallStatus::Completed, at(1, 0)),
            (&CallStatus::Completed, at(1, 0))
        ));
        assert!(!supersedes(
            (&CallStatus::Started, None),
            (&CallStatus::Ringing, None)
        ));
        assert!(supersedes(
            (&CallStatus::Ringing, None),
            (&CallStatus::Started, None)
        ));
        // end_time does not order non-terminal events.
        assert!(!supersedes(
            (&CallStatus::Answered, at(9, 0)),
            (&CallStatus::Answered, at(1, 0))
        ));
    }

    #[test]
    fn precedence_is_independent_of_arrival_order() {
        let events = [
            (CallStatus::Started, None),
            (CallStatus::Ringing, at(1, 0)),
            (CallStatus::Answered, None),
            (CallStatus::Failed, at(10, 3)),
            (CallStatus::Completed, at(10, 3)),
            (CallStatus::Timeout, at(10, 1)),
            (CallStatus::Other("queued".into()), None),
        ];
        let fold = |order: &[usize]| {
            let mut best = &events[order[0]];
            for &i in &order[1..] {
                if supersedes((&events[i].0, events[i].1), (&best.0, best.1)) {
                    best = &events[i];
                }
            }
            best.0.clone()
        };
        let forward: Vec<usize> = (0..events.len()).collect();
        let backward: Vec<usize> = (0..events.len()).rev().collect();
        let shuffled = [3, 6, 0, 4, 2, 5, 1];
        for order in [&forward[..], &backward[..], &shuffled[..]] {
            assert_eq!(fold(order), CallStatus::Completed, "{order:?}");
        }
    }

    #[test]
    fn call_status_serialises_as_its_stored_spelling() {
        let json = serde_json::to_string(&CallStatus::NoAnswer).unwrap();
        assert_eq!(json, "\"no_answer\"");
        let back: CallStatus = serde_json::from_str("\"NO ANSWER\"").unwrap();
        assert_eq!(back, CallStatus::NoAnswer);
        assert!(serde_json::from_str::<CallStatus>("\"\"").is_err());
    }

    #[test]
    fn batch_and_queue_statuses_round_trip_their_spelling() {
        for status in BatchStatus::ALL {
            assert_eq!(BatchStatus::parse(status.as_str()), Ok(*status));
        }
        for status in QueueStatus::ALL {
            assert_eq!(QueueStatus::parse(status.as_str()), Ok(*status));
        }
        assert_eq!(BatchStatus::InProgress.as_str(), "in_progress");
        assert_eq!(QueueStatus::NeedsReview.as_str(), "needs_review");
        let err = QueueStatus::parse("done").unwrap_err();
        assert_eq!(err.to_string(), "unknown queue status \"done\"");
        assert!(BatchStatus::Failed.is_final() && !BatchStatus::InProgress.is_final());
        assert!(BatchStatus::Cancelled.is_final());
        assert_eq!(QueueStatus::Cancelled.as_str(), "cancelled");
        assert!(QueueStatus::Submitting.is_waiting() && !QueueStatus::Cancelled.is_waiting());
        assert_eq!(
            serde_json::to_string(&QueueStatus::Submitting).unwrap(),
            "\"submitting\""
        );
    }
}
