//! Campaigns: their figures, and the controls pause, resume, cancel and set.
//!
//! A control locks the campaign's row for its transaction, so two operators acting on one
//! campaign at once take turns. It never touches a row a submitter has leased
//! (`submitting`): that row may be inside an insert request already. The submitter checks
//! the campaign's status before it sends a leased row, which is how a pause or cancel
//! reaches rows claimed but not yet sent.
//!
//! Pause, resume and set write onto the campaign's waiting rows when each may go out
//! under the campaign as it is now (`crate::due::apply_rules`), in the same transaction
//! as the change: the claim never meets a row under the old rules once the change is
//! visible, and never meets a row the new ones hold.

use callbridge_types::campaign::CampaignStatus;
use callbridge_types::status::QueueStatus;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection, PgPool};

use crate::audit::{self, Action, Actor};
use crate::due::{Applied, apply_rules};
use crate::rules::{RULE_COLUMNS_SQL, RuleColumns, Rules, RulesChange, RulesView};
use crate::{OpsError, db_error};

/// One campaign with its rules and figures, as `campaign list` and `show` print it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignView {
    pub id: i32,
    pub name: String,
    /// The stored status, except that an active campaign none of whose numbers waits any
    /// more reads `completed`.
    pub status: CampaignStatus,
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(flatten)]
    pub rules: RulesView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What happened to a campaign's numbers so far.
///
/// Read without scanning `call_logs` or the campaign's sent rows: the call figures are
/// sums of per-batch aggregates the persister and submitter maintain under each batch's
/// lock (`completed_calls`, `failed_calls`, `total_calls`, `answered_seconds`,
/// `exhausted_calls`), and the queue figures are index range counts of the statuses a
/// row can still leave or stopped in (`idx_local_queue_campaign_status`), which stay as
/// small as the work left, not the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow)]
pub struct Figures {
    /// Distinct numbers enqueued (a redial is not a new number).
    pub numbers: i64,
    /// Still to be sent: `pending` (perhaps waiting for its window, start time, a retry
    /// or, for a redial, its interval) or `submitting` (in a submitter's hands).
    pub waiting: i64,
    /// Accepted by the centralized system (the batches' `total_calls`).
    pub submitted: i64,
    /// Calls that ended `completed`: answered.
    pub reached: i64,
    /// Calls that ended in another final status: failed, busy, no_answer, timeout (or
    /// expired).
    pub not_reached: i64,
    /// Numbers whose last call did not reach anyone and that will not be called again:
    /// their outcome is not redialled, or its retries are used up.
    pub exhausted: i64,
    /// Rows the submitter gave up on (`queue retry` sends them again).
    pub failed: i64,
    /// Rows whose outcome is unknown (`queue resolve` settles them).
    pub needs_review: i64,
    pub cancelled: i64,
    pub suppressed: i64,
    /// Calls placed: numbers the centralized system accepted, each redial its own attempt.
    pub attempts: i64,
    /// Redial rows added by the campaign's redial policy.
    pub redials: i64,
    /// Its batches in `call_batches`.
    pub batches: i64,
    /// Seconds of its answered calls, summed.
    pub answered_seconds: i64,
    /// Answer-seizure ratio: answered calls ÷ attempts (0–1); `null` before any attempt.
    #[sqlx(skip)]
    pub asr: Option<f64>,
    /// Average call duration: mean seconds of the answered calls; `null` before one.
    #[sqlx(skip)]
    pub acd_seconds: Option<f64>,
}

impl Figures {
    /// Fills in the ratios from the counts.
    fn with_ratios(mut self) -> Figures {
        self.asr = (self.attempts > 0).then(|| self.reached as f64 / self.attempts as f64);
        self.acd_seconds =
            (self.reached > 0).then(|| self.answered_seconds as f64 / self.reached as f64);
        self
    }
}

#[derive(Debug, sqlx::FromRow)]
struct CampaignRow {
    id: i32,
    name: String,
    status: String,
    #[sqlx(flatten)]
    rules: RuleColumns,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[sqlx(flatten)]
    figures: Figures,
}

/// Campaigns with their figures (see [`Figures`]); `$1` a name, or NULL for all; `$2`
/// every queue status except `submitted`, which the batches' `total_calls` count.
const CAMPAIGNS_SQL: &str = "
SELECT c.id, c.name, c.status, c.start_at, c.window_start, c.window_end, c.window_days,
       c.time_zone, c.max_per_minute, c.redial_busy_retries, c.redial_busy_interval_secs,
       c.redial_no_answer_retries, c.redial_no_answer_interval_secs, c.redial_timeout_retries,
       c.redial_timeout_interval_secs, c.redial_failed_retries, c.redial_failed_interval_secs,
       c.redial_completed_retries, c.redial_completed_interval_secs, c.max_attempts_per_day,
       c.created_at, c.updated_at,
       coalesce(b.submitted, 0) + q.unsent - coalesce(r.redials, 0) AS numbers,
       q.waiting, coalesce(b.submitted, 0) AS submitted, q.failed, q.needs_review,
       q.cancelled, q.suppressed, coalesce(b.submitted, 0) AS attempts,
       coalesce(r.redials, 0) AS redials, coalesce(b.reached, 0) AS reached,
       coalesce(b.not_reached, 0) AS not_reached, coalesce(b.exhausted, 0) AS exhausted,
       coalesce(b.batches, 0) AS batches, coalesce(b.answered_seconds, 0) AS answered_seconds
  FROM campaigns c
 CROSS JOIN LATERAL (
       SELECT count(*) AS unsent,
              count(*) FILTER (WHERE queue_status IN ('pending', 'submitting')) AS waiting,
              count(*) FILTER (WHERE queue_status = 'failed') AS failed,
              count(*) FILTER (WHERE queue_status = 'needs_review') AS needs_review,
              count(*) FILTER (WHERE queue_status = 'cancelled') AS cancelled,
              count(*) FILTER (WHERE queue_status = 'suppressed') AS suppressed
         FROM local_call_queue
        WHERE campaign_id = c.id AND queue_status = ANY($2)) AS q
  -- One pass over the batches for every campaign (call_batches has no campaign index;
  -- a campaign's batches are hundreds of rows, not its millions of calls).
  LEFT JOIN (
       SELECT campaign_id, count(*) AS batches,
              sum(coalesce(total_calls, 0))::BIGINT AS submitted,
              sum(coalesce(completed_calls, 0))::BIGINT AS reached,
              sum(coalesce(failed_calls, 0))::BIGINT AS not_reached,
              sum(exhausted_calls)::BIGINT AS exhausted,
              sum(answered_seconds)::BIGINT AS answered_seconds
         FROM call_batches
        WHERE campaign_id IS NOT NULL
        GROUP BY campaign_id) AS b ON b.campaign_id = c.id
  -- Redial rows only, through the partial index on redial_of.
  LEFT JOIN (
       SELECT campaign_id, count(*) AS redials
         FROM local_call_queue
        WHERE redial_of IS NOT NULL
        GROUP BY campaign_id) AS r ON r.campaign_id = c.id
 WHERE $1::TEXT IS NULL OR c.name = $1
 ORDER BY c.id";

async fn load_views(pool: &PgPool, name: Option<&str>) -> Result<Vec<CampaignView>, OpsError> {
    let unsent: Vec<&str> = QueueStatus::ALL
        .iter()
        .filter(|status| **status != QueueStatus::Submitted)
        .map(|s| s.as_str())
        .collect();
    let rows: Vec<CampaignRow> = sqlx::query_as(CAMPAIGNS_SQL)
        .bind(name)
        .bind(&unsent)
        .fetch_all(pool)
        .await
        .map_err(db_error("while reading the campaigns and their figures"))?;
    rows.into_iter()
        .map(|row| {
            let stored = parse_status(&row.name, &row.status)?;
            let status = if stored == CampaignStatus::Active
                && row.figures.numbers > 0
                && row.figures.waiting == 0
            {
                CampaignStatus::Completed
            } else {
                stored
            };
            Ok(CampaignView {
                id: row.id,
                status,
                rules: row.rules.rules(&row.name)?.view(),
                name: row.name,
                created_at: row.created_at,
                updated_at: row.updated_at,
                figures: row.figures.with_ratios(),
            })
        })
        .collect()
}

fn parse_status(name: &str, raw: &str) -> Result<CampaignStatus, OpsError> {
    CampaignStatus::parse(raw)
        .map_err(|error| OpsError::Database(anyhow::anyhow!("campaign {name:?} has {error}")))
}

/// Every campaign, oldest first.
#[tracing::instrument(skip_all)]
pub async fn list(pool: &PgPool) -> Result<Vec<CampaignView>, OpsError> {
    load_views(pool, None).await
}

/// The campaign named `name`.
#[tracing::instrument(skip_all, fields(campaign = name))]
pub async fn show(pool: &PgPool, name: &str) -> Result<CampaignView, OpsError> {
    load_views(pool, Some(name))
        .await?
        .pop()
        .ok_or_else(|| OpsError::UnknownCampaign(name.to_owned()))
}

/// What a control or repair did, as the CLI prints it and `operator_actions` holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionOutcome {
    /// `operator_actions.id` of its audit row.
    pub action_id: i64,
    pub action: &'static str,
    pub campaign: Option<String>,
    /// The campaign's stored status afterwards.
    pub status: Option<CampaignStatus>,
    /// How many rows it applied to (see each action).
    pub rows_affected: i64,
    pub target: Value,
    pub detail: Value,
}

/// A campaign's row, locked for the rest of the transaction.
#[derive(Debug)]
pub(crate) struct LockedCampaign {
    pub id: i32,
    pub name: String,
    pub status: CampaignStatus,
    pub rules: Rules,
}

pub(crate) async fn lock_campaign(
    conn: &mut PgConnection,
    name: &str,
) -> Result<LockedCampaign, OpsError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: i32,
        name: String,
        status: String,
        #[sqlx(flatten)]
        rules: RuleColumns,
    }
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, name, status, {RULE_COLUMNS_SQL} FROM campaigns WHERE name = $1 FOR UPDATE"
    )))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error("while reading the campaign"))?;
    let row = row.ok_or_else(|| OpsError::UnknownCampaign(name.to_owned()))?;
    Ok(LockedCampaign {
        status: parse_status(&row.name, &row.status)?,
        rules: row.rules.rules(&row.name)?,
        id: row.id,
        name: row.name,
    })
}

async fn set_status(
    conn: &mut PgConnection,
    campaign_id: i32,
    status: CampaignStatus,
    now: DateTime<Utc>,
) -> Result<(), OpsError> {
    sqlx::query("UPDATE campaigns SET status = $2, updated_at = $3 WHERE id = $1 AND status <> $2")
        .bind(campaign_id)
        .bind(status.as_str())
        .bind(now)
        .execute(conn)
        .await
        .map_err(db_error("while changing the campaign's status"))?;
    Ok(())
}

/// The campaign's rows still to be sent.
async fn count_waiting(conn: &mut PgConnection, campaign_id: i32) -> Result<i64, OpsError> {
    let waiting: Vec<&str> = QueueStatus::WAITING.iter().map(|s| s.as_str()).collect();
    sqlx::query_scalar(
        "SELECT count(*) FROM local_call_queue WHERE campaign_id = $1 AND queue_status = ANY($2)",
    )
    .bind(campaign_id)
    .bind(&waiting)
    .fetch_one(conn)
    .await
    .map_err(db_error("while counting the campaign's waiting rows"))
}

/// What applying the rules did, for `operator_actions.detail`: `due_again` rows the old
/// rules (or a pause, or a pacing slot) held are due now; `rescheduled` rows got another
/// due time or hold.
fn applied_detail(applied: &Applied) -> Value {
    json!({ "due_again": applied.due_now, "rescheduled": applied.changed })
}

async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    now: DateTime<Utc>,
    actor: &Actor,
    campaign: &LockedCampaign,
    status: CampaignStatus,
    action: Action,
) -> Result<ActionOutcome, OpsError> {
    let action_id = audit::record(&mut tx, now, actor, &action).await?;
    tx.commit()
        .await
        .map_err(db_error("while committing the action"))?;
    tracing::info!(
        action = action.action,
        campaign = %campaign.name,
        rows = action.rows_affected,
        actor = %actor.name,
        "operator action"
    );
    Ok(ActionOutcome {
        action_id,
        action: action.action,
        campaign: Some(campaign.name.clone()),
        status: Some(status),
        rows_affected: action.rows_affected,
        target: action.target,
        detail: action.detail.unwrap_or(Value::Null),
    })
}

async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, OpsError> {
    pool.begin()
        .await
        .map_err(db_error("while starting a transaction"))
}

/// Pauses the campaign: the submitter sends none of its rows until it is resumed.
/// Applies to its waiting rows (their count is `rows_affected`): the pending ones are
/// held a day ahead ([`callbridge_types::campaign::PAUSE_DEFERRAL`]; a resume brings
/// them back at once), so the claim does not meet them. Pausing a paused campaign
/// changes nothing and is recorded all the same.
#[tracing::instrument(skip_all, fields(campaign = name))]
pub async fn pause(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    name: &str,
) -> Result<ActionOutcome, OpsError> {
    let mut tx = begin(pool).await?;
    let campaign = lock_campaign(&mut tx, name).await?;
    if campaign.status == CampaignStatus::Cancelled {
        return Err(cancelled(&campaign, "paused"));
    }
    set_status(&mut tx, campaign.id, CampaignStatus::Paused, now).await?;
    let applied = apply_rules(
        &mut tx,
        campaign.id,
        &campaign.rules.schedule(CampaignStatus::Paused),
        now,
    )
    .await?;
    let waiting = count_waiting(&mut tx, campaign.id).await?;
    let action = Action {
        action: "campaign.pause",
        campaign_id: Some(campaign.id),
        target: json!({ "campaign": campaign.name, "queue_status": QueueStatus::WAITING }),
        rows_affected: waiting,
        detail: Some(json!({
            "previous_status": campaign.status,
            "held": applied.changed,
        })),
    };
    finish(tx, now, actor, &campaign, CampaignStatus::Paused, action).await
}

/// Resumes a paused campaign: its waiting rows go on, each due when the campaign's rules
/// let it go (`now`, or its zone's next window opening, or the start time; see
/// [`apply_rules`]). A cancelled campaign cannot be resumed.
#[tracing::instrument(skip_all, fields(campaign = name))]
pub async fn resume(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    name: &str,
) -> Result<ActionOutcome, OpsError> {
    let mut tx = begin(pool).await?;
    let campaign = lock_campaign(&mut tx, name).await?;
    if campaign.status == CampaignStatus::Cancelled {
        return Err(cancelled(&campaign, "resumed"));
    }
    set_status(&mut tx, campaign.id, CampaignStatus::Active, now).await?;
    let applied = apply_rules(
        &mut tx,
        campaign.id,
        &campaign.rules.schedule(CampaignStatus::Active),
        now,
    )
    .await?;
    let waiting = count_waiting(&mut tx, campaign.id).await?;
    let mut detail = applied_detail(&applied);
    detail["previous_status"] = json!(campaign.status);
    let action = Action {
        action: "campaign.resume",
        campaign_id: Some(campaign.id),
        target: json!({ "campaign": campaign.name, "queue_status": QueueStatus::WAITING }),
        rows_affected: waiting,
        detail: Some(detail),
    };
    finish(tx, now, actor, &campaign, CampaignStatus::Active, action).await
}

/// Cancels the campaign: in one transaction its `pending` rows become `cancelled` (never
/// sent; `rows_affected` counts them), and the batches they belong to are refreshed, so
/// a batch all of whose rows are cancelled ends `cancelled` and the counters stay those
/// of call_logs. Rows a submitter holds (`submitting`, counted as `in_flight`) are left
/// to it: it checks the campaign before sending. Cancelling again catches any row that
/// went back to `pending` since.
#[tracing::instrument(skip_all, fields(campaign = name))]
pub async fn cancel(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    name: &str,
) -> Result<ActionOutcome, OpsError> {
    let mut tx = begin(pool).await?;
    let campaign = lock_campaign(&mut tx, name).await?;
    set_status(&mut tx, campaign.id, CampaignStatus::Cancelled, now).await?;
    let cancelled: Vec<(i32, Option<i32>)> = sqlx::query_as(
        "UPDATE local_call_queue
            SET queue_status = $3, deferred_by_campaign = false, updated_at = CURRENT_TIMESTAMP
          WHERE campaign_id = $1 AND queue_status = $2
         RETURNING id, batch_id",
    )
    .bind(campaign.id)
    .bind(QueueStatus::Pending.as_str())
    .bind(QueueStatus::Cancelled.as_str())
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error("while cancelling the campaign's waiting rows"))?;
    let batches = refresh_batches(&mut tx, cancelled.iter().filter_map(|row| row.1)).await?;
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM local_call_queue WHERE campaign_id = $1 AND queue_status = $2",
    )
    .bind(campaign.id)
    .bind(QueueStatus::Submitting.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error("while counting the campaign's rows in flight"))?;
    let ids: Vec<i32> = cancelled.iter().map(|row| row.0).collect();
    let action = Action {
        action: "campaign.cancel",
        campaign_id: Some(campaign.id),
        target: json!({
            "campaign": campaign.name,
            "queue_status": QueueStatus::Pending,
            "ids": audit::listed_ids(&ids),
        }),
        rows_affected: i64::try_from(ids.len()).unwrap_or(i64::MAX),
        detail: Some(json!({
            "previous_status": campaign.status,
            "batches": batches,
            "in_flight": in_flight,
        })),
    };
    finish(tx, now, actor, &campaign, CampaignStatus::Cancelled, action).await
}

/// Changes the campaign's rules and applies them to its waiting rows at once, in the same
/// transaction: each is due when the new rules let it go (see [`apply_rules`]), and a
/// new pace applies from the change on. A cancelled campaign's rules cannot be changed.
#[tracing::instrument(skip_all, fields(campaign = name))]
pub async fn set(
    pool: &PgPool,
    now: DateTime<Utc>,
    actor: &Actor,
    name: &str,
    change: &RulesChange,
) -> Result<ActionOutcome, OpsError> {
    if change.is_empty() {
        return Err(OpsError::Refused(
            "campaign set needs a rule to change: --start-at, --window, --days, --time-zone, --max-per-minute, --redial or --max-attempts-per-day".into(),
        ));
    }
    let mut tx = begin(pool).await?;
    let campaign = lock_campaign(&mut tx, name).await?;
    if campaign.status == CampaignStatus::Cancelled {
        return Err(cancelled(&campaign, "changed"));
    }
    let rules = change.apply(&campaign.rules)?;
    store_rules(&mut tx, campaign.id, &rules, now).await?;
    let applied = apply_rules(&mut tx, campaign.id, &rules.schedule(campaign.status), now).await?;
    let waiting = count_waiting(&mut tx, campaign.id).await?;
    let mut detail = applied_detail(&applied);
    detail["before"] = json!(campaign.rules.view());
    detail["after"] = json!(rules.view());
    let action = Action {
        action: "campaign.set",
        campaign_id: Some(campaign.id),
        target: json!({ "campaign": campaign.name, "queue_status": QueueStatus::WAITING }),
        rows_affected: waiting,
        detail: Some(detail),
    };
    let status = campaign.status;
    finish(tx, now, actor, &campaign, status, action).await
}

async fn store_rules(
    conn: &mut PgConnection,
    campaign_id: i32,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<(), OpsError> {
    let redial = rules.redial.stored();
    sqlx::query(
        "UPDATE campaigns
            SET start_at = $2, window_start = $3, window_end = $4, window_days = $5,
                time_zone = $6, max_per_minute = $7, updated_at = $8,
                max_attempts_per_day = $9,
                redial_busy_retries = $10[1], redial_busy_interval_secs = $11[1],
                redial_no_answer_retries = $10[2], redial_no_answer_interval_secs = $11[2],
                redial_timeout_retries = $10[3], redial_timeout_interval_secs = $11[3],
                redial_failed_retries = $10[4], redial_failed_interval_secs = $11[4],
                redial_completed_retries = $10[5], redial_completed_interval_secs = $11[5]
          WHERE id = $1",
    )
    .bind(campaign_id)
    .bind(rules.start_at)
    .bind(rules.window.map(|window| window.start()))
    .bind(rules.window.map(|window| window.end()))
    .bind(rules.window_days())
    .bind(rules.time_zone.name())
    .bind(rules.max_per_minute_column())
    .bind(now)
    .bind(rules.max_attempts_per_day_column())
    // In REDIAL_OUTCOMES order, as the column pairs above are listed.
    .bind(redial.map(|column| column.retries).to_vec())
    .bind(redial.map(|column| column.interval_secs).to_vec())
    .execute(conn)
    .await
    .map_err(db_error("while storing the campaign's rules"))?;
    Ok(())
}

fn cancelled(campaign: &LockedCampaign, verb: &'static str) -> OpsError {
    OpsError::Cancelled {
        name: campaign.name.clone(),
        verb,
    }
}

/// Refreshes each of `batches` once, in ascending order (the order every refresher
/// takes batch locks in, so two transactions cannot deadlock); returns them.
pub(crate) async fn refresh_batches(
    conn: &mut PgConnection,
    batches: impl IntoIterator<Item = i32>,
) -> Result<Vec<i32>, OpsError> {
    let mut batches: Vec<i32> = batches.into_iter().collect();
    batches.sort_unstable();
    batches.dedup();
    for batch_id in &batches {
        sqlx::query("SELECT callbridge_refresh_batch($1)")
            .bind(batch_id)
            .execute(&mut *conn)
            .await
            .map_err(db_error("while refreshing a batch's counts and status"))?;
    }
    Ok(batches)
}

/// The campaign `enqueue` adds rows to, inside its transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueCampaign {
    pub id: i32,
    pub created: bool,
    /// Its status once the enqueue commits (a completed campaign becomes active again).
    pub status: CampaignStatus,
    pub rules: Rules,
}

/// Finds the campaign named `name` or creates it with `change` applied to no rules.
/// Adding to an existing campaign keeps its rules: a change that would alter them is
/// refused (`campaign set` changes rules, and is audited as such), one that restates
/// them is accepted, so running the same enqueue twice succeeds. Nothing can be added to
/// a cancelled campaign; adding to a completed one makes it active again.
pub async fn for_enqueue(
    conn: &mut PgConnection,
    name: &str,
    change: &RulesChange,
    now: DateTime<Utc>,
) -> Result<EnqueueCampaign, OpsError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(db_error("while starting a savepoint"))?;
    let created: Option<i32> = sqlx::query_scalar(
        "INSERT INTO campaigns (name, created_at, updated_at) VALUES ($1, $2, $2)
         ON CONFLICT (name) DO NOTHING
         RETURNING id",
    )
    .bind(name)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error("while creating the campaign"))?;
    let campaign = lock_campaign(&mut tx, name).await?;
    let mut status = campaign.status;
    let rules = if created.is_some() {
        let rules = change.apply(&Rules::default())?;
        store_rules(&mut tx, campaign.id, &rules, now).await?;
        rules
    } else {
        if campaign.status == CampaignStatus::Cancelled {
            return Err(cancelled(&campaign, "added to"));
        }
        let restated = change.apply(&campaign.rules)?;
        if restated != campaign.rules {
            return Err(OpsError::Refused(format!(
                "campaign {name:?} exists with other rules: change them with `callbridge campaign set {name} …`, or enqueue without rule options"
            )));
        }
        if campaign.status == CampaignStatus::Completed {
            set_status(&mut tx, campaign.id, CampaignStatus::Active, now).await?;
            status = CampaignStatus::Active;
        }
        campaign.rules
    };
    tx.commit()
        .await
        .map_err(db_error("while releasing the savepoint"))?;
    Ok(EnqueueCampaign {
        id: campaign.id,
        created: created.is_some(),
        status,
        rules,
    })
}
