//! Erasing a person's number (`callbridge erase`): afterwards no table and no dead letter
//! holds it in any form, while every count and figure stays as it was.
//!
//! Where a row must stay for the counts (its call, its events, its queue row, its audit
//! rows), the number is replaced by its stand-in (`callbridge_types::erasure`): a keyed
//! hash, the same for the same number, so the person's rows still count as one person's
//! and an opt-out stays on `do_not_call` as the stand-in, which the submitter's claim
//! still recognises. Numbers are found in every way they may have been written (digits,
//! E.164, with separators), in number columns, free text and JSON.
//!
//! The dead letters are scrubbed first: each that holds the number is published again
//! (confirmed) without it and only then removed. If that fails, the database has not been
//! touched and running the command again finishes the job. The database is then changed in
//! one transaction with its `operator_actions` row, which names the stand-in, never the
//! number.
//!
//! What cannot be erased yet is counted, not hidden: a request to the centralized system
//! in flight, and calls still going on (started, ringing or answered). Their callbacks
//! will carry the number again; run the erasure again once they have ended.

use std::collections::BTreeMap;

use callbridge_runtime::amqp::open_confirmed_channel;
use callbridge_types::erasure::{Scrubber, stand_in};
use callbridge_types::phone::E164;
use callbridge_types::status::{CallStatus, QueueStatus};
use callbridge_types::topology::DEAD_QUEUE;
use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Action, Actor};
use crate::dead_letters::{Replacement, move_each};
use crate::{OpsError, db_error};

/// What a waiting row erased before it was sent says.
pub const ERASED_UNSENT: &str = "its number was erased: never sent";

/// What [`erase`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// What the number was replaced with.
    pub stand_in: String,
    /// Rows changed per table.
    pub tables: BTreeMap<&'static str, u64>,
    /// Waiting queue rows that will never be sent (`suppressed`).
    pub suppressed_rows: u64,
    /// Dead letters published again without the number.
    pub dead_letters: u32,
    /// Requests in flight and calls still going on: their callbacks may bring the number
    /// back, so run the erasure again once they have ended.
    pub calls_in_flight: u64,
    /// The `operator_actions` row.
    pub action_id: i64,
}

impl Erased {
    pub fn rows_changed(&self) -> u64 {
        self.tables.values().sum()
    }
}

/// Erases `number` from the dead letters and every table (see the module's text), by
/// `actor` at `now`, with the stand-in made with `key`.
#[tracing::instrument(skip_all, fields(actor = %actor.name))]
pub async fn erase(
    connection: &Connection,
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    number: &E164,
    key: &[u8],
) -> Result<Erased, OpsError> {
    let scrubber = Scrubber::new(number, stand_in(key, number));
    // Connect first: a database that does not answer stops the erasure before a dead
    // letter was changed.
    let mut tx = pool
        .begin()
        .await
        .map_err(db_error("while starting a transaction"))?;
    let channel = open_confirmed_channel(connection)
        .await
        .map_err(OpsError::Broker)?;
    let dead_letters = scrub_dead_letters(&channel, &scrubber).await;
    channel.close(200, "bye".into()).await.ok();
    let dead_letters = dead_letters?;

    let mut erased = Erased {
        stand_in: scrubber.stand_in().to_owned(),
        tables: BTreeMap::new(),
        suppressed_rows: 0,
        dead_letters,
        calls_in_flight: 0,
        action_id: 0,
    };
    erase_in_database(&mut tx, number, &scrubber, &mut erased).await?;
    let action = Action {
        action: "number.erase",
        campaign_id: None,
        target: json!({ "stand_in": erased.stand_in }),
        rows_affected: i64::try_from(erased.rows_changed()).unwrap_or(i64::MAX),
        detail: Some(json!({
            "tables": erased.tables,
            "suppressed_rows": erased.suppressed_rows,
            "dead_letters": erased.dead_letters,
            "calls_in_flight": erased.calls_in_flight,
        })),
    };
    erased.action_id = audit::record(&mut tx, now, actor, &action).await?;
    tx.commit()
        .await
        .map_err(db_error("while committing the erasure"))?;
    Ok(erased)
}

/// Publishes each dead letter holding the number again without it (to the dead queue,
/// confirmed) and then removes the original; returns how many. Messages without it go
/// back unchanged. Only what is in the queue when it starts is looked at.
async fn scrub_dead_letters(channel: &Channel, scrubber: &Scrubber) -> Result<u32, OpsError> {
    let mut scrubbed = 0;
    move_each(
        channel,
        usize::MAX,
        |message| {
            let delivery = &message.delivery;
            let body = scrubber.body(&delivery.data);
            let properties = scrub_headers(&delivery.properties, scrubber);
            (body.is_some() || properties.is_some()).then(|| Replacement {
                // The default exchange routes by queue name: back to the dead queue.
                exchange: "",
                routing_key: DEAD_QUEUE.to_owned(),
                body,
                properties: properties.unwrap_or_else(|| delivery.properties.clone()),
            })
        },
        |_| scrubbed += 1,
        |error| {
            OpsError::Broker(anyhow::Error::new(error).context(
                "while publishing a dead letter without the number (it stays as it was; nothing in the database was changed)",
            ))
        },
        // The scrubbed copy is in the queue and the original too: running the erasure
        // again removes the original (a replay of both is absorbed by event id).
        "while removing a dead letter whose scrubbed copy is published (run the erasure again)",
    )
    .await?;
    Ok(scrubbed)
}

/// The properties with the number taken out of every text header (the persister's error
/// header may quote it); `None` when no header held it.
fn scrub_headers(properties: &BasicProperties, scrubber: &Scrubber) -> Option<BasicProperties> {
    let headers = properties.headers().as_ref()?;
    let mut changed = false;
    let scrubbed: BTreeMap<_, _> = headers
        .inner()
        .iter()
        .map(|(name, value)| {
            let value = match value {
                AMQPValue::LongString(text) => {
                    match scrubber.text(&String::from_utf8_lossy(text.as_bytes())) {
                        Some(clean) => {
                            changed = true;
                            AMQPValue::LongString(LongString::from(clean))
                        }
                        None => value.clone(),
                    }
                }
                other => other.clone(),
            };
            (name.clone(), value)
        })
        .collect();
    changed.then(|| properties.clone().with_headers(FieldTable::from(scrubbed)))
}

/// The digits of an SQL expression contain `$1`, the national number's digits: the
/// prefilter that finds a table's candidate rows (each is then read in full, and only a
/// row that really holds the number is changed).
fn holds_digits(expression: &str) -> String {
    format!("strpos(regexp_replace({expression}, '[^0-9]', '', 'g'), $1) > 0")
}

fn scrub_json(scrubber: &Scrubber, value: &mut Option<Value>) -> bool {
    value.as_mut().is_some_and(|value| scrubber.json(value))
}

fn scrub_text(scrubber: &Scrubber, text: &mut Option<String>) -> bool {
    match text.as_deref().and_then(|text| scrubber.text(text)) {
        Some(clean) => {
            *text = Some(clean);
            true
        }
        None => false,
    }
}

/// A number column that holds the number becomes exactly the stand-in (it fits: the
/// stand-in is as wide as the columns).
fn scrub_number(scrubber: &Scrubber, number: &mut String) -> bool {
    if scrubber.text(number).is_some() {
        *number = scrubber.stand_in().to_owned();
        true
    } else {
        false
    }
}

/// A call_logs row, as far as the number can be in it.
#[derive(sqlx::FromRow)]
struct CallRow {
    id: i32,
    phone_number: String,
    call_status: String,
    custom_data: Option<Value>,
    error_message: Option<String>,
    recording_url: Option<String>,
}

/// A local_call_queue row, as far as the number can be in it, and where it stands.
#[derive(sqlx::FromRow)]
struct QueueRow {
    id: i32,
    phone_number: String,
    queue_status: Option<String>,
    custom_data: Option<Value>,
    last_error: Option<String>,
    batch_id: Option<i32>,
    /// `submitting` under a live lease: a request may be carrying it right now.
    in_flight: bool,
    /// Its `phone_e164` is the number (enqueue wrote it).
    is_the_number: bool,
}

async fn erase_in_database(
    tx: &mut PgConnection,
    number: &E164,
    scrubber: &Scrubber,
    erased: &mut Erased,
) -> Result<(), OpsError> {
    let digits = scrubber.digits();

    // Calls first, then queue rows, then batches: the order the persister takes them in.
    let calls: Vec<CallRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, phone_number, call_status, custom_data, error_message, recording_url
               FROM call_logs
              WHERE {}
              ORDER BY id
                FOR UPDATE",
            holds_digits(
                "phone_number || ' ' || coalesce(custom_data::TEXT, '') || ' ' || coalesce(error_message, '') || ' ' || coalesce(recording_url, '')"
            )
        )))
        .bind(digits)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error("while finding the number in call_logs"))?;
    let mut changed = 0;
    for call in calls {
        let CallRow {
            id,
            phone_number: mut phone,
            call_status,
            mut custom_data,
            error_message: mut error,
            recording_url: mut recording,
        } = call;
        let status = CallStatus::parse(&call_status);
        if status
            .as_ref()
            .is_some_and(|status| status.rank() < CallStatus::Expired.rank())
        {
            erased.calls_in_flight += 1;
        }
        let touched = scrub_number(scrubber, &mut phone)
            | scrub_json(scrubber, &mut custom_data)
            | scrub_text(scrubber, &mut error)
            | scrub_text(scrubber, &mut recording);
        if touched {
            sqlx::query(
                "UPDATE call_logs
                    SET phone_number = $2, custom_data = $3, error_message = $4, recording_url = $5
                  WHERE id = $1",
            )
            .bind(id)
            .bind(phone)
            .bind(custom_data)
            .bind(error)
            .bind(recording)
            .execute(&mut *tx)
            .await
            .map_err(db_error("while erasing the number from call_logs"))?;
            changed += 1;
        }
    }
    erased.tables.insert("call_logs", changed);

    // call_events keeps the payload as sent and the event as read from it; the outbox,
    // the payload it publishes.
    for (table, columns, what) in [
        (
            "call_events",
            "payload, event",
            "while erasing the number from call_events",
        ),
        (
            "call_outcome_outbox",
            "payload, NULL::JSONB",
            "while erasing the number from call_outcome_outbox",
        ),
    ] {
        let rows: Vec<(i64, Value, Option<Value>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {columns} FROM {table} WHERE {} ORDER BY id FOR UPDATE OF {table}",
            holds_digits(&format!("concat_ws(' ', {columns})"))
        )))
        .bind(digits)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error(what))?;
        let mut changed = 0;
        for (id, mut payload, mut event) in rows {
            if scrubber.json(&mut payload) | scrub_json(scrubber, &mut event) {
                // The outbox has no event column (its NULL stands in for one).
                let update = match event {
                    Some(event) => sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET payload = $2, event = $3 WHERE id = $1"
                    )))
                    .bind(id)
                    .bind(payload)
                    .bind(event),
                    None => sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET payload = $2 WHERE id = $1"
                    )))
                    .bind(id)
                    .bind(payload),
                };
                update.execute(&mut *tx).await.map_err(db_error(what))?;
                changed += 1;
            }
        }
        erased.tables.insert(table, changed);
    }

    erase_from_queue(tx, number, scrubber, erased).await?;

    // An opt-out stays, as the stand-in (the claim recognises it with the erasure key).
    let listed: Option<(Option<String>, String, DateTime<Utc>)> = sqlx::query_as(
        "DELETE FROM do_not_call WHERE phone_number = $1 RETURNING reason, source, added_at",
    )
    .bind(number.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error("while erasing the number from do_not_call"))?;
    let mut changed = 0;
    if let Some((mut reason, source, added_at)) = listed {
        scrub_text(scrubber, &mut reason);
        sqlx::query(
            "INSERT INTO do_not_call (phone_number, reason, source, added_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (phone_number) DO NOTHING",
        )
        .bind(scrubber.stand_in())
        .bind(reason)
        .bind(source)
        .bind(added_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error("while keeping the erased number's opt-out"))?;
        changed = 1;
    }
    erased.tables.insert("do_not_call", changed);

    let actions: Vec<(i64, Value, Option<Value>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, target, detail FROM operator_actions WHERE {} ORDER BY id FOR UPDATE",
        holds_digits("target::TEXT || ' ' || coalesce(detail::TEXT, '')")
    )))
    .bind(digits)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error("while finding the number in operator_actions"))?;
    let mut changed = 0;
    for (id, mut target, mut detail) in actions {
        if scrubber.json(&mut target) | scrub_json(scrubber, &mut detail) {
            sqlx::query("UPDATE operator_actions SET target = $2, detail = $3 WHERE id = $1")
                .bind(id)
                .bind(target)
                .bind(detail)
                .execute(&mut *tx)
                .await
                .map_err(db_error("while erasing the number from operator_actions"))?;
            changed += 1;
        }
    }
    erased.tables.insert("operator_actions", changed);
    Ok(())
}

/// Queue rows: the number goes from each; a row still waiting is `suppressed` (never
/// sent: there is nothing left to dial), except one whose request is in flight right now
/// (`submitting` under a live lease), which is left to its submitter and counted.
async fn erase_from_queue(
    tx: &mut PgConnection,
    number: &E164,
    scrubber: &Scrubber,
    erased: &mut Erased,
) -> Result<(), OpsError> {
    let rows: Vec<QueueRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, phone_number, queue_status, custom_data, last_error, batch_id,
                coalesce(queue_status = $3 AND lease_expires_at >= now(), false) AS in_flight,
                phone_e164 IS NOT DISTINCT FROM $2 AS is_the_number
           FROM local_call_queue
          WHERE phone_e164 = $2 OR {}
          ORDER BY id
            FOR UPDATE",
        holds_digits(
            "phone_number || ' ' || coalesce(custom_data::TEXT, '') || ' ' || coalesce(last_error, '')"
        )
    )))
    .bind(scrubber.digits())
    .bind(number.as_str())
    .bind(QueueStatus::Submitting.as_str())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error("while finding the number in local_call_queue"))?;
    let mut changed = 0;
    let mut batches = Vec::new();
    for row in rows {
        let QueueRow {
            id,
            phone_number: mut phone,
            queue_status: status,
            mut custom_data,
            mut last_error,
            batch_id,
            in_flight,
            is_the_number,
        } = row;
        if in_flight {
            erased.calls_in_flight += 1;
            continue;
        }
        // The row's own number is the person's (not merely mentioned in its data).
        let dialled = scrub_number(scrubber, &mut phone) | is_the_number;
        let mentioned =
            scrub_json(scrubber, &mut custom_data) | scrub_text(scrubber, &mut last_error);
        if !dialled && !mentioned {
            continue;
        }
        if dialled {
            // Written by enqueue, may be in another form than phone_number.
            phone = scrubber.stand_in().to_owned();
        }
        let waiting = dialled
            && status
                .as_deref()
                .and_then(|status| QueueStatus::parse(status).ok())
                .is_some_and(QueueStatus::is_waiting);
        if waiting {
            last_error = Some(ERASED_UNSENT.to_owned());
            erased.suppressed_rows += 1;
            batches.extend(batch_id);
        }
        sqlx::query(
            "UPDATE local_call_queue
                SET phone_number = $2,
                    phone_e164 = CASE WHEN $7 THEN NULL ELSE phone_e164 END,
                    custom_data = $3, last_error = $4,
                    queue_status = CASE WHEN $5 THEN $6 ELSE queue_status END,
                    lease_owner = CASE WHEN $5 THEN NULL ELSE lease_owner END,
                    lease_expires_at = CASE WHEN $5 THEN NULL ELSE lease_expires_at END,
                    updated_at = CURRENT_TIMESTAMP
              WHERE id = $1",
        )
        .bind(id)
        .bind(phone)
        .bind(custom_data)
        .bind(last_error)
        .bind(waiting)
        .bind(QueueStatus::Suppressed.as_str())
        .bind(dialled)
        .execute(&mut *tx)
        .await
        .map_err(db_error("while erasing the number from local_call_queue"))?;
        changed += 1;
    }
    erased.tables.insert("local_call_queue", changed);
    crate::campaign::refresh_batches(tx, batches).await?;
    Ok(())
}
