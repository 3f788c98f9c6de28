//! `callbridge doctor --batch-status [BATCH_ID]`: confirms, against the real centralized
//! API, how the submitter reads batch-status. No guide documents that answer, and a
//! wrong reading parks every unknown outcome in `needs_review` (or, with a 404 read as
//! "none held", dials people twice), so a deployment checks it before trusting it.
//!
//! The answer is shown with every number masked: the operator sees where the numbers
//! are without the output holding one.

use callbridge_runtime::config::{Settings, setting_name};
use callbridge_types::centralized_api::{Answer, error_message, mask_number};
use serde_json::Value;

use super::doctor::{Outcome, fail};

/// Arrays in the shown answer keep this many items.
const SHOWN_ITEMS: usize = 2;
/// A string or integer with at least this many digits is treated as a phone number.
const NUMBER_DIGITS: usize = 6;

pub async fn check_batch_status(settings: &Settings, batch_id: Option<i32>) -> Outcome {
    let (api, reading, database) = match (
        settings.api(),
        settings.batch_status_reading(),
        settings.database(),
    ) {
        (Ok(api), Ok(reading), Ok(database)) => (api, reading, database),
        (Err(error), ..) | (_, Err(error), _) | (.., Err(error)) => {
            return Outcome::Skipped(error.to_string());
        }
    };
    let pool = match callbridge_runtime::db::connect_pool(database.url.expose(), 1).await {
        Ok(pool) => pool,
        Err(error) => return Outcome::Skipped(crate::one_line(&error)),
    };
    let batch_id = match batch_id {
        Some(batch_id) => batch_id,
        None => match newest_submitted_batch(&pool).await {
            Ok(Some(batch_id)) => batch_id,
            Ok(None) => {
                return Outcome::Skipped(
                    "no batch has submitted rows yet: name one with --batch-status BATCH_ID".into(),
                );
            }
            Err(error) => return Outcome::Skipped(crate::one_line(&error)),
        },
    };
    let submitted = match submitted_numbers(&pool, batch_id).await {
        Ok(numbers) => numbers,
        Err(error) => return Outcome::Skipped(crate::one_line(&error)),
    };
    let client = match crate::operator::central_api(&api) {
        Ok(client) => client,
        Err(error) => return Outcome::Skipped(crate::one_line(&error)),
    };
    let path_setting = setting_name("submitter.batch_status_numbers_path");
    let (status, body) = match client.batch_status_raw(batch_id.into()).await {
        Ok(answer) => answer,
        Err(error) => {
            return fail(
                format!("could not reach {}: {error}", client.base_url()),
                "check CENTRALIZED_CALLING_BASE_URL and the network between here and the API",
            );
        }
    };
    if status == 404 {
        return fail(
            format!(
                "batch-status answered 404 for batch {batch_id}, which has {} submitted row(s): {}",
                submitted.len(),
                error_message(&body)
            ),
            format!(
                "keep {}=unknown: the system holds this batch but answers 404 (it may index batches late; try again in a minute)",
                setting_name("submitter.batch_status_not_found")
            ),
        );
    }
    if status != 200 {
        return fail(
            format!("batch-status answered {status}: {}", error_message(&body)),
            "run doctor without --batch-status to check the API key and base URL",
        );
    }
    let Some(answer) = Answer::parse(&body) else {
        return fail(
            "batch-status answered 200 with a body that is not a JSON object",
            "ask the centralized system's operators what batch-status returns",
        );
    };
    let shape = masked(&Value::Object(answer.as_object().clone()));
    let path = reading.numbers_path.as_str();
    let held = match reading.numbers_path.held_numbers(&answer) {
        Ok(held) => held,
        Err(why) => {
            return fail(
                format!("{why}; the answer for batch {batch_id}: {shape}"),
                format!(
                    "set {path_setting} to the JSON pointer of the numbers in this answer, with * for each item (e.g. /data/calls/*/phone_number)"
                ),
            );
        }
    };
    let mut unmatched: Vec<String> = held
        .iter()
        .map(|number| reading.number_match.key(number))
        .collect();
    let mut found = 0;
    for number in &submitted {
        let key = reading.number_match.key(number);
        if let Some(position) = unmatched.iter().position(|held| *held == key) {
            unmatched.swap_remove(position);
            found += 1;
        }
    }
    if found < submitted.len() {
        return fail(
            format!(
                "{path} finds {} number(s) in batch {batch_id}'s answer, but only {found} of its {} submitted row(s) among them; the answer: {shape}",
                held.len(),
                submitted.len()
            ),
            format!(
                "set {path_setting} to where this answer lists the batch's numbers, or {} to how it spells them",
                setting_name("submitter.batch_status_number_match")
            ),
        );
    }
    Outcome::Pass(format!(
        "{path} finds every one of batch {batch_id}'s {} submitted row(s) ({} number(s) listed); the answer: {shape}",
        submitted.len(),
        held.len()
    ))
}

async fn newest_submitted_batch(pool: &sqlx::PgPool) -> anyhow::Result<Option<i32>> {
    use anyhow::Context;
    sqlx::query_scalar(
        "SELECT batch_id FROM local_call_queue
          WHERE queue_status = 'submitted' AND batch_id IS NOT NULL
          ORDER BY submitted_at DESC NULLS LAST, id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .context("while finding the newest submitted batch")
}

async fn submitted_numbers(pool: &sqlx::PgPool, batch_id: i32) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    sqlx::query_scalar(
        "SELECT phone_number FROM local_call_queue
          WHERE batch_id = $1 AND queue_status = 'submitted'",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await
    .context("while reading the batch's submitted rows")
}

/// `value` on one line with every number-like string or integer masked and arrays cut to
/// [`SHOWN_ITEMS`] items.
fn masked(value: &Value) -> String {
    fn walk(value: &Value) -> Value {
        let digits = |text: &str| text.chars().filter(char::is_ascii_digit).count();
        match value {
            Value::String(text) if digits(text) >= NUMBER_DIGITS => {
                Value::String(mask_number(text, 0))
            }
            Value::Number(number) if digits(&number.to_string()) >= NUMBER_DIGITS => {
                Value::String(mask_number(&number.to_string(), 0))
            }
            Value::Array(items) => {
                let mut shown: Vec<Value> = items.iter().take(SHOWN_ITEMS).map(walk).collect();
                if items.len() > SHOWN_ITEMS {
                    shown.push(Value::String(format!(
                        "… {} more",
                        items.len() - SHOWN_ITEMS
                    )));
                }
                Value::Array(shown)
            }
            Value::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(name, member)| (name.clone(), walk(member)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    walk(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shown_answer_masks_every_number_and_cuts_long_lists() {
        let answer = json!({"total": 3, "batch_id": 12, "data": {"calls": [
            {"phone_number": "+91 98765 43210"}, {"phone_number": 919876543211_u64},
            {"phone_number": "9876543212"}
        ]}});
        let shown = masked(&answer);
        assert!(
            !shown.contains("98765") && !shown.contains("43211"),
            "{shown}"
        );
        assert!(shown.contains("+** ***** *****"), "{shown}");
        assert!(shown.contains("… 1 more"), "{shown}");
        assert!(shown.contains(r#""total":3"#), "{shown}");
    }
}
