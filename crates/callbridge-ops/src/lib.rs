//! What an operator does to campaigns and to queue rows, and the SQL that does it: list and
//! show campaigns with their figures, pause, resume, cancel, change rules, the two
//! repairs (`retry` failed rows, `resolve` rows whose outcome is unknown), the
//! do-not-call list (`dnc`), the dead-lettered callbacks (`dead_letters`: list, replay,
//! purge) and erasing a person's number everywhere (`erasure`); and what an operator
//! reads: the batches with their queue counts (`batches`), the centralized system's
//! batch-status (`centralized`), and a campaign's outcomes over time (`outcomes`).
//!
//! The CLI (`callbridge campaign …`, `callbridge queue …`, `callbridge dlq …`) and the
//! operator console call these same functions; the services never depend on this crate.
//! Every control and repair writes one `operator_actions` row (when, who, what, which
//! rows, how many) in the same transaction as its effect, so the audit cannot disagree
//! with what happened (a dead letter's replay or purge, whose effect is in RabbitMQ,
//! writes it right after: see [`dead_letters`]).
//!
//! Time: every function that changes something takes `now` from the caller's clock
//! (`callbridge_types::clock`), never the database's, so a test controls it.

pub mod audit;
pub mod batches;
pub mod campaign;
pub mod centralized;
pub mod copy_text;
pub mod dead_letters;
pub mod dnc;
pub mod due;
pub mod erasure;
pub mod outcomes;
pub mod queue;
pub mod retention;
pub mod rules;

pub use audit::{Actor, Source};
pub use campaign::{ActionOutcome, CampaignView};
pub use rules::{Rules, RulesChange};

use callbridge_types::campaign::RuleError;

/// Why an operator's action was not carried out. Each message is one line that says what
/// to do instead; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no campaign is named {0:?}: `callbridge campaign list` shows the campaigns")]
    UnknownCampaign(String),
    #[error(
        "campaign {name:?} is cancelled: a cancelled campaign cannot be {verb}; enqueue its numbers into a new campaign"
    )]
    Cancelled { name: String, verb: &'static str },
    /// The action does not apply to the rows or rules it was given.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Database(#[from] anyhow::Error),
    /// RabbitMQ refused or could not be reached (the dead letters live there).
    #[error(transparent)]
    Broker(anyhow::Error),
}

/// The database's error with what was being done, as every caller reports it.
pub(crate) fn db_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> OpsError {
    move |error| OpsError::Database(anyhow::Error::new(error).context(what))
}
