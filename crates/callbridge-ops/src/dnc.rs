//! The do-not-call list: add, remove, import, list and check numbers, each change
//! recorded in `operator_actions` in its own transaction.
//!
//! Numbers arrive normalised ([`E164`]); the list holds them in E.164 and the submitter's
//! claim checks every row against it right before sending, so an entry takes effect for
//! rows enqueued long before it. Entries are never edited: adding a listed number again
//! keeps its first reason, source and time (when the opt-out was first recorded).

use callbridge_types::phone::E164;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::audit::{self, Action, Actor, LISTED_IDS};
use crate::campaign::ActionOutcome;
use crate::{OpsError, db_error};

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DncEntry {
    /// E.164.
    pub phone_number: String,
    pub reason: Option<String>,
    /// `cli`, `console`, or `import <file>`.
    pub source: String,
    pub added_at: DateTime<Utc>,
}

/// The numbers an action names, for its audit row: all of them up to [`LISTED_IDS`].
fn listed_numbers(numbers: &[E164]) -> Value {
    json!(
        numbers
            .iter()
            .take(LISTED_IDS)
            .map(E164::as_str)
            .collect::<Vec<_>>()
    )
}

fn as_texts(numbers: &[E164]) -> Vec<&str> {
    numbers.iter().map(E164::as_str).collect()
}

async fn record_and_commit(
    mut tx: Transaction<'_, Postgres>,
    now: DateTime<Utc>,
    actor: &Actor,
    action: Action,
) -> Result<ActionOutcome, OpsError> {
    let action_id = audit::record(&mut tx, now, actor, &action).await?;
    tx.commit()
        .await
        .map_err(db_error("while committing the action"))?;
    tracing::info!(
        action = action.action,
        rows = action.rows_affected,
        actor = %actor.name,
        "operator action"
    );
    Ok(ActionOutcome {
        action_id,
        action: action.action,
        campaign: None,
        status: None,
        rows_affected: action.rows_affected,
        target: action.target,
        detail: action.detail.unwrap_or(Value::Null),
    })
}

/// Puts `numbers` on the list with `reason`; `rows_affected` counts the numbers newly
/// listed, `detail.already_listed` those that were listed before (left as they were).
#[tracing::instrument(skip_all, fields(numbers = numbers.len()))]
pub async fn add(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    numbers: &[E164],
    reason: Option<&str>,
) -> Result<ActionOutcome, OpsError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    let added = sqlx::query(
        "INSERT INTO do_not_call (phone_number, reason, source, added_at)
         SELECT DISTINCT number, $2, $3, $4 FROM unnest($1::TEXT[]) AS number
         ON CONFLICT (phone_number) DO NOTHING",
    )
    .bind(as_texts(numbers))
    .bind(reason)
    .bind(actor.source.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(db_error("while adding to do_not_call"))?
    .rows_affected();
    let distinct = distinct_count(numbers);
    let action = Action {
        action: "dnc.add",
        campaign_id: None,
        target: json!({ "numbers": listed_numbers(numbers) }),
        rows_affected: i64::try_from(added).unwrap_or(i64::MAX),
        detail: Some(json!({
            "reason": reason,
            "already_listed": distinct.saturating_sub(added),
        })),
    };
    record_and_commit(tx, now, actor, action).await
}

/// Takes `numbers` off the list; `rows_affected` counts those that were on it.
#[tracing::instrument(skip_all, fields(numbers = numbers.len()))]
pub async fn remove(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    numbers: &[E164],
) -> Result<ActionOutcome, OpsError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    let removed: Vec<DncEntry> = sqlx::query_as(
        "DELETE FROM do_not_call WHERE phone_number = ANY($1)
         RETURNING phone_number, reason, source, added_at",
    )
    .bind(as_texts(numbers))
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error("while removing from do_not_call"))?;
    let distinct = distinct_count(numbers);
    let action = Action {
        action: "dnc.remove",
        campaign_id: None,
        target: json!({ "numbers": listed_numbers(numbers) }),
        rows_affected: removed.len() as i64,
        detail: Some(json!({
            "not_listed": distinct.saturating_sub(removed.len() as u64),
            // What the removed entries said, since the list itself no longer does.
            "removed": removed.iter().take(LISTED_IDS).collect::<Vec<_>>(),
        })),
    };
    record_and_commit(tx, now, actor, action).await
}

fn distinct_count(numbers: &[E164]) -> u64 {
    numbers
        .iter()
        .map(E164::as_str)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64
}

/// The newest `limit` entries, newest first, and how many the list holds.
pub async fn list(pool: &PgPool, limit: i64) -> Result<(Vec<DncEntry>, i64), OpsError> {
    page(pool, limit, 0).await
}

/// `limit` entries after the newest `offset`, newest first, and how many the list holds.
#[tracing::instrument(skip_all)]
pub async fn page(
    pool: &PgPool,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DncEntry>, i64), OpsError> {
    let entries = sqlx::query_as(
        "SELECT phone_number, reason, source, added_at FROM do_not_call
          ORDER BY added_at DESC, phone_number
          LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
    .map_err(db_error("while reading do_not_call"))?;
    let total = sqlx::query_scalar("SELECT count(*) FROM do_not_call")
        .fetch_one(pool)
        .await
        .map_err(db_error("while counting do_not_call"))?;
    Ok((entries, total))
}

/// The number's entry, if it is on the list.
#[tracing::instrument(skip_all)]
pub async fn check(pool: &PgPool, number: &E164) -> Result<Option<DncEntry>, OpsError> {
    sqlx::query_as(
        "SELECT phone_number, reason, source, added_at FROM do_not_call WHERE phone_number = $1",
    )
    .bind(number.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_error("while reading do_not_call"))
}

/// A queue row of a number still waiting to be sent: what `dnc check` shows, since the
/// claim suppresses such a row when it comes due if its number is listed by then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct WaitingRow {
    pub id: i32,
    pub batch_id: Option<i32>,
    /// Its campaign's name; `None` for a row an application inserted.
    pub campaign: Option<String>,
    /// 1 for a number as enqueued, n + 1 for the redial of attempt n.
    pub attempt: i32,
    /// When it is due (a campaign's window, start time, pause, pacing or the daily cap
    /// may have moved it).
    pub due_at: DateTime<Utc>,
    /// Moved by its campaign's rules rather than by a retry's backoff.
    pub deferred_by_campaign: bool,
}

/// The number's `pending` rows, soonest due first (at most `limit`), and how many there
/// are. Rows are found by their E.164 form, which enqueue and redials write; a row an
/// application inserted without one is not found here (the claim still checks it).
#[tracing::instrument(skip_all)]
pub async fn waiting_rows(
    pool: &PgPool,
    number: &E164,
    limit: i64,
) -> Result<(Vec<WaitingRow>, i64), OpsError> {
    // Both read the number's range of idx_local_queue_e164_due.
    let rows = sqlx::query_as(
        "SELECT q.id, q.batch_id, c.name AS campaign, q.attempt, q.next_attempt_at AS due_at,
                q.deferred_by_campaign
           FROM local_call_queue q
           LEFT JOIN campaigns c ON c.id = q.campaign_id
          WHERE q.phone_e164 = $1 AND q.queue_status = 'pending'
          ORDER BY q.next_attempt_at, q.id
          LIMIT $2",
    )
    .bind(number.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(db_error("while reading the number's waiting rows"))?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM local_call_queue WHERE phone_e164 = $1 AND queue_status = 'pending'",
    )
    .bind(number.as_str())
    .fetch_one(pool)
    .await
    .map_err(db_error("while counting the number's waiting rows"))?;
    Ok((rows, total))
}

/// An import in progress: its own transaction, a staging table the numbers are COPYed
/// into, then one statement that merges them into the list. Dropped without
/// [`Import::finish`], it rolls back and the list is as it was.
pub struct Import<'c> {
    tx: Transaction<'c, Postgres>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportOutcome {
    /// Numbers copied into the staging table.
    pub copied: u64,
    /// Newly listed.
    pub added: u64,
    /// On the list already (left as they were).
    pub already_listed: u64,
    pub action: ActionOutcome,
}

/// Begins an import on `conn`: the staging table lives as long as its transaction.
pub async fn begin_import(conn: &mut PgConnection) -> Result<Import<'_>, OpsError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    // Unlogged, unindexed and private to this transaction: the cheapest place to land a
    // million lines before the one merge that touches the list's index.
    sqlx::query("CREATE TEMPORARY TABLE dnc_import (phone_number TEXT NOT NULL) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .map_err(db_error("while creating the import's staging table"))?;
    Ok(Import { tx })
}

impl Import<'_> {
    /// COPYs every chunk that arrives on `chunks` (lines of COPY text: one E.164 number
    /// each, distinct) into the staging table, until the sender is dropped. Returns the
    /// rows copied.
    pub async fn copy(
        &mut self,
        mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<u64, OpsError> {
        let mut copy = self
            .tx
            .copy_in_raw("COPY dnc_import (phone_number) FROM STDIN")
            .await
            .map_err(db_error("while starting COPY"))?;
        while let Some(chunk) = chunks.recv().await {
            copy.send(chunk)
                .await
                .map_err(db_error("while sending COPY data"))?;
        }
        copy.finish()
            .await
            .map_err(db_error("while finishing COPY"))
    }

    /// Merges the staged numbers into the list with `reason` and `source`, records the
    /// import (with `detail`, e.g. the lines skipped) and commits.
    pub async fn finish(
        mut self,
        now: DateTime<Utc>,
        actor: &Actor,
        (source, reason): (&str, Option<&str>),
        copied: u64,
        detail: Value,
    ) -> Result<ImportOutcome, OpsError> {
        let added = sqlx::query(
            "INSERT INTO do_not_call (phone_number, reason, source, added_at)
             SELECT phone_number, $1, $2, $3 FROM dnc_import
             ON CONFLICT (phone_number) DO NOTHING",
        )
        .bind(reason)
        .bind(source)
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map_err(db_error("while merging the import into do_not_call"))?
        .rows_affected();
        let mut detail = detail;
        if let Value::Object(members) = &mut detail {
            members.insert("reason".into(), json!(reason));
            members.insert("copied".into(), json!(copied));
            members.insert("already_listed".into(), json!(copied.saturating_sub(added)));
        }
        let action = Action {
            action: "dnc.import",
            campaign_id: None,
            target: json!({ "source": source }),
            rows_affected: i64::try_from(added).unwrap_or(i64::MAX),
            detail: Some(detail),
        };
        let action = record_and_commit(self.tx, now, actor, action).await?;
        Ok(ImportOutcome {
            copied,
            added,
            already_listed: copied.saturating_sub(added),
            action,
        })
    }
}
