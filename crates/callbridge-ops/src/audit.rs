//! `operator_actions`: who did what to which rows, written in the transaction of the
//! action itself.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use crate::{OpsError, db_error};

/// Where an action came from (`operator_actions.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Cli,
    Console,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Console => "console",
        }
    }
}

/// Who acts: the CLI's `--actor` (else the OS user), or the console's signed-in user and
/// role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub source: Source,
    pub role: Option<String>,
}

impl Actor {
    pub fn cli(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            source: Source::Cli,
            role: None,
        }
    }

    pub fn console(name: impl Into<String>, role: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            source: Source::Console,
            role: Some(role.into()),
        }
    }
}

/// Ids listed in an action's `target`; beyond this, the selector (campaign and status)
/// names the rows and the count says how many.
pub const LISTED_IDS: usize = 1000;

/// One action as `operator_actions` records it.
#[derive(Debug, Clone)]
pub struct Action {
    /// `campaign.pause`, `queue.retry`, …
    pub action: &'static str,
    pub campaign_id: Option<i32>,
    /// Which rows: ids, batch, status selector.
    pub target: Value,
    pub rows_affected: i64,
    pub detail: Option<Value>,
}

/// Writes `action` by `actor` at `now` on `conn` (inside the action's transaction);
/// returns its id.
pub async fn record(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    actor: &Actor,
    action: &Action,
) -> Result<i64, OpsError> {
    sqlx::query_scalar(
        "INSERT INTO operator_actions
                (at, actor, source, role, action, campaign_id, target, rows_affected, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING id",
    )
    .bind(now)
    .bind(&actor.name)
    .bind(actor.source.as_str())
    .bind(actor.role.as_deref())
    .bind(action.action)
    .bind(action.campaign_id)
    .bind(&action.target)
    .bind(action.rows_affected)
    .bind(&action.detail)
    .fetch_one(conn)
    .await
    .map_err(db_error("while recording the action in operator_actions"))
}

/// `ids` for a `target`: all of them up to [`LISTED_IDS`], else the first ones and a flag.
pub fn listed_ids(ids: &[i32]) -> Value {
    if ids.len() <= LISTED_IDS {
        serde_json::json!(ids)
    } else {
        serde_json::json!(&ids[..LISTED_IDS])
    }
}

/// One recorded action, as `history` reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RecordedAction {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub source: String,
    pub role: Option<String>,
    pub action: String,
    pub campaign: Option<String>,
    pub target: Value,
    pub rows_affected: i64,
    pub detail: Option<Value>,
}

/// The newest `limit` actions, of one campaign or of all, newest first.
pub async fn history(
    pool: &sqlx::PgPool,
    campaign: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordedAction>, OpsError> {
    sqlx::query_as(
        "SELECT a.id, a.at, a.actor, a.source, a.role, a.action, c.name AS campaign,
                a.target, a.rows_affected, a.detail
           FROM operator_actions a
           LEFT JOIN campaigns c ON c.id = a.campaign_id
          WHERE $1::TEXT IS NULL OR c.name = $1
          ORDER BY a.id DESC
          LIMIT $2",
    )
    .bind(campaign)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(db_error("while reading operator_actions"))
}
