//! The do-not-call list: add, remove, import, list and check numbers, each change
//! recorded in `operator_actions` in its own transaction.
//!
//! Numbers arrive normalised ([`E164`]); the list holds them in E.164 and the submitter's
//! claim checks every row against it right before sending, so an entry takes effect for
//! rows enqueued long before it. Entries are never edited: adding a listed number again
//! keeps its first reason, source and time (when the opt-out was first recorded).

use std::collections::HashSet;

use callbridge_types::phone::E164;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use crate::audit::{self, Action, Actor, LISTED_IDS};
use crate::campaign::ActionOutcome;
use crate::copy_text::{COPY_NULL, append_copy_text};
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

/// An import in progress. Its transaction holds the list's write lock from the start, so
/// no other change to the list can commit until it ends; the numbers arrive in chunks,
/// each chunk's already-listed numbers are looked up on a second connection (which, with
/// every other writer held off, sees the whole list as it stands), and only the new ones
/// are COPYed into `do_not_call` itself, on the transaction, while the next chunk is
/// looked up. Nothing is staged and merged: a merge inserts row by row, a COPY in
/// batches, and the merge alone took longer than the raw COPY of the same numbers.
/// [`Import::abandon`] rolls it back and the list is as it was. (Merely dropped, it rolls
/// back too, but only when the writer's connection is next used or closed: until then
/// the list stays locked.)
pub struct Import<'c> {
    tx: Transaction<'c, Postgres>,
    lookup: &'c mut PgConnection,
    /// What follows the number on each COPY line: `\tsource\treason\tadded_at\n`.
    line_rest: Vec<u8>,
    source: String,
    reason: Option<String>,
    now: DateTime<Utc>,
    /// Numbers received, and those of them COPYed in (the others were listed already).
    offered: u64,
    added: u64,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportOutcome {
    /// Distinct numbers the import was given.
    pub copied: u64,
    /// Newly listed.
    pub added: u64,
    /// On the list already (left as they were).
    pub already_listed: u64,
    pub action: ActionOutcome,
}

/// Where an import's numbers go on the list: their `source` and `reason`, and the time
/// they are recorded as added.
#[derive(Debug, Clone, Copy)]
pub struct ImportInto<'a> {
    pub source: &'a str,
    pub reason: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// Begins an import: its transaction on `writer`, which takes the list's write lock
/// (other adds, removals and erasures wait until the import ends; the submitter's claim,
/// which only reads the list, does not), and `lookup` for reading what is listed.
pub async fn begin_import<'c>(
    writer: &'c mut PgConnection,
    lookup: &'c mut PgConnection,
    into: ImportInto<'_>,
) -> Result<Import<'c>, OpsError> {
    let mut tx = writer
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    // SHARE ROW EXCLUSIVE: conflicts with every INSERT, UPDATE and DELETE (and with
    // itself, so two imports take turns), not with reads. Taken first, it waits for any
    // change in progress to commit, so the lookups that follow see the list whole.
    sqlx::query("LOCK TABLE do_not_call IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(db_error("while locking the do-not-call list"))?;
    let mut line_rest = vec![b'\t'];
    append_copy_text(&mut line_rest, into.source);
    line_rest.push(b'\t');
    match into.reason {
        Some(reason) => append_copy_text(&mut line_rest, reason),
        None => line_rest.extend_from_slice(COPY_NULL),
    }
    line_rest.push(b'\t');
    line_rest.extend_from_slice(into.now.to_rfc3339().as_bytes());
    line_rest.push(b'\n');
    Ok(Import {
        tx,
        lookup,
        line_rest,
        source: into.source.to_owned(),
        reason: into.reason.map(str::to_owned),
        now: into.now,
        offered: 0,
        added: 0,
    })
}

impl Import<'_> {
    /// Lists every number that arrives on `chunks` (lines of E.164 numbers, each line
    /// `+digits\n`, distinct across all chunks) and is not listed yet, until the sender
    /// is dropped. Returns the numbers received.
    pub async fn copy(
        &mut self,
        mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<u64, OpsError> {
        let Import {
            tx,
            lookup,
            line_rest,
            ..
        } = self;
        let mut copy = tx
            .copy_in_raw("COPY do_not_call (phone_number, source, reason, added_at) FROM STDIN")
            .await
            .map_err(db_error("while starting COPY"))?;
        let mut offered = 0;
        let mut lines = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            let text = std::str::from_utf8(&chunk).map_err(|_| {
                OpsError::Refused("an import chunk is not text: the numbers are E.164".into())
            })?;
            let numbers: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
            offered += numbers.len() as u64;
            let listed: HashSet<String> = sqlx::query_scalar(
                "SELECT d.phone_number::text
                   FROM unnest($1::text[]) AS offered (number)
                   JOIN do_not_call d ON d.phone_number = offered.number",
            )
            .bind(&numbers)
            .fetch_all(&mut **lookup)
            .await
            .map_err(db_error("while looking up the numbers already listed"))?
            .into_iter()
            .collect();
            lines.clear();
            for number in numbers.iter().filter(|number| !listed.contains(**number)) {
                lines.extend_from_slice(number.as_bytes());
                lines.extend_from_slice(line_rest);
            }
            if !lines.is_empty() {
                copy.send(lines.as_slice())
                    .await
                    .map_err(db_error("while sending COPY data"))?;
            }
        }
        let added = copy
            .finish()
            .await
            .map_err(db_error("while finishing COPY"))?;
        // Added up, so a second call lists more numbers rather than forgetting the first.
        self.offered += offered;
        self.added += added;
        Ok(offered)
    }

    /// Rolls the import back: nothing it COPYed is listed, and the list's lock is released.
    pub async fn abandon(self) -> Result<(), OpsError> {
        self.tx
            .rollback()
            .await
            .map_err(db_error("while rolling the import back"))
    }

    /// Records the import (with `detail`, e.g. the lines skipped) and commits.
    pub async fn finish(self, actor: &Actor, detail: Value) -> Result<ImportOutcome, OpsError> {
        let Import {
            tx,
            source,
            reason,
            now,
            offered,
            added,
            ..
        } = self;
        let already_listed = offered.saturating_sub(added);
        let mut detail = detail;
        if let Value::Object(members) = &mut detail {
            members.insert("reason".into(), json!(reason));
            members.insert("copied".into(), json!(offered));
            members.insert("already_listed".into(), json!(already_listed));
        }
        let action = Action {
            action: "dnc.import",
            campaign_id: None,
            target: json!({ "source": source }),
            rows_affected: i64::try_from(added).unwrap_or(i64::MAX),
            detail: Some(detail),
        };
        let action = record_and_commit(tx, now, actor, action).await?;
        Ok(ImportOutcome {
            copied: offered,
            added,
            already_listed,
            action,
        })
    }
}
