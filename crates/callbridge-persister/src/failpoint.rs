//! Test hook: `CALLBRIDGE_FAILPOINT=<name>` makes the process abort at an exact point, so
//! crash tests ("killed after the transaction began but before commit") are exact rather
//! than timed. Unset (always, in production) every [`hit`] is a no-op.
//!
//! `std::process::abort` is the closest a process gets to `kill -9` from inside: no
//! destructors, no graceful close, the broker and Postgres just see the sockets die.

use std::sync::OnceLock;

/// The environment variable that arms a failpoint.
pub const FAILPOINT_VARIABLE: &str = "CALLBRIDGE_FAILPOINT";

/// A point the persister can be killed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Every statement of a batch transaction ran; COMMIT was not sent.
    BeforeCommit,
    /// The batch transaction committed; its deliveries are not acknowledged.
    AfterCommitBeforeAck,
    /// Outbox rows are committed and claimed by the relay; nothing was published.
    AfterCommitBeforeOutboxPublish,
}

impl Failpoint {
    /// The value of [`FAILPOINT_VARIABLE`] that arms this point.
    pub fn name(self) -> &'static str {
        match self {
            Failpoint::BeforeCommit => "before_commit",
            Failpoint::AfterCommitBeforeAck => "after_commit_before_ack",
            Failpoint::AfterCommitBeforeOutboxPublish => "after_commit_before_outbox_publish",
        }
    }

    fn parse(raw: &str) -> Option<Failpoint> {
        [
            Failpoint::BeforeCommit,
            Failpoint::AfterCommitBeforeAck,
            Failpoint::AfterCommitBeforeOutboxPublish,
        ]
        .into_iter()
        .find(|point| point.name() == raw.trim())
    }
}

fn armed() -> Option<Failpoint> {
    static ARMED: OnceLock<Option<Failpoint>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let raw = std::env::var(FAILPOINT_VARIABLE).ok()?;
        let point = Failpoint::parse(&raw);
        if point.is_none() {
            eprintln!("{FAILPOINT_VARIABLE}={raw:?} names no failpoint; ignored");
        }
        point
    })
}

/// Aborts the process if `point` is armed.
pub fn hit(point: Failpoint) {
    if armed() == Some(point) {
        eprintln!("failpoint {} hit: aborting", point.name());
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failpoint_is_armed_by_its_name() {
        for point in [
            Failpoint::BeforeCommit,
            Failpoint::AfterCommitBeforeAck,
            Failpoint::AfterCommitBeforeOutboxPublish,
        ] {
            assert_eq!(Failpoint::parse(point.name()), Some(point));
        }
        assert_eq!(Failpoint::parse("before-commit"), None);
    }
}
