//! `callbridge campaign list|show|pause|resume|cancel|set`: the campaigns and their
//! figures, and the operator's controls over them. The actions and their SQL are
//! `callbridge_ops`'s (the console calls the same); this module parses, connects and
//! prints. Every control is recorded in `operator_actions` with `--actor` (default: the
//! OS user).

use callbridge_ops::audit::{RecordedAction, history};
use callbridge_ops::{ActionOutcome, CampaignView, campaign};
use callbridge_runtime::config::Settings;
use clap::{Args, Subcommand};
use sqlx::PgPool;

use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, RuleArgs, now};
use crate::output::render_table;

/// Recent actions `campaign show` lists under the figures.
const SHOWN_ACTIONS: i64 = 5;

#[derive(Debug, Args)]
pub struct CampaignArgs {
    #[command(subcommand)]
    pub command: CampaignCommand,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Every campaign with its status and figures.
    List,
    /// One campaign: rules, figures and its latest operator actions.
    Show { name: String },
    /// Send nothing more of it until it is resumed (calls already placed go on).
    Pause {
        name: String,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Send its waiting numbers again, under its rules as they are now.
    Resume {
        name: String,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Cancel its waiting numbers: they are never sent.
    Cancel {
        name: String,
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Change its rules (start time, calling window, days, time zone, pacing); they apply
    /// to its waiting numbers at once.
    Set {
        name: String,
        #[command(flatten)]
        rules: RuleArgs,
        #[command(flatten)]
        actor: ActorArgs,
    },
}

pub async fn run(args: CampaignArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let database = args.database.resolve(&settings)?;
    let pool = crate::database::connect_pool(&database, 2).await?;
    match args.command {
        CampaignCommand::List => {
            let campaigns = campaign::list(&pool).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&campaigns)?);
            } else if campaigns.is_empty() {
                println!(
                    "no campaigns (create one with `callbridge enqueue <file.csv> --campaign NAME`)"
                );
            } else {
                print!("{}", table(&campaigns));
            }
        }
        CampaignCommand::Show { name } => show(&pool, &name, args.json).await?,
        CampaignCommand::Pause { name, actor } => {
            let outcome = campaign::pause(&pool, now(), &actor.actor()?, &name).await?;
            report(&outcome, args.json)?;
        }
        CampaignCommand::Resume { name, actor } => {
            let outcome = campaign::resume(&pool, now(), &actor.actor()?, &name).await?;
            report(&outcome, args.json)?;
        }
        CampaignCommand::Cancel { name, actor } => {
            let outcome = campaign::cancel(&pool, now(), &actor.actor()?, &name).await?;
            report(&outcome, args.json)?;
        }
        CampaignCommand::Set { name, rules, actor } => {
            let change = rules.change()?;
            let outcome = campaign::set(&pool, now(), &actor.actor()?, &name, &change).await?;
            report(&outcome, args.json)?;
        }
    }
    Ok(())
}

async fn show(pool: &PgPool, name: &str, json: bool) -> anyhow::Result<()> {
    let view = campaign::show(pool, name).await?;
    let actions = history(pool, Some(name), SHOWN_ACTIONS).await?;
    if json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            view: &'a CampaignView,
            recent_actions: &'a [RecordedAction],
        }
        let shown = Shown {
            view: &view,
            recent_actions: &actions,
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print!("{}", details(&view, &actions));
    }
    Ok(())
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// `08:00-21:00 mon-sat`, or `any hour`.
fn window(view: &CampaignView) -> String {
    match (&view.rules.window, &view.rules.days) {
        (Some(hours), Some(days)) => format!("{hours} {days}"),
        (Some(hours), None) => hours.clone(),
        _ => "any hour".to_owned(),
    }
}

fn table(campaigns: &[CampaignView]) -> String {
    let header = [
        "NAME",
        "STATUS",
        "NUMBERS",
        "WAITING",
        "SUBMITTED",
        "REACHED",
        "FAILED",
        "REVIEW",
        "CANCELLED",
        "WINDOW",
        "ZONE",
        "PER MIN",
    ];
    let rows: Vec<Vec<String>> = campaigns
        .iter()
        .map(|view| {
            let figures = &view.figures;
            vec![
                if view.name.chars().count() > 40 {
                    format!("{}…", view.name.chars().take(39).collect::<String>())
                } else {
                    view.name.clone()
                },
                view.status.to_string(),
                figures.numbers.to_string(),
                figures.waiting.to_string(),
                figures.submitted.to_string(),
                figures.reached.to_string(),
                figures.failed.to_string(),
                figures.needs_review.to_string(),
                figures.cancelled.to_string(),
                window(view),
                view.rules.time_zone.clone(),
                opt(view.rules.max_per_minute),
            ]
        })
        .collect();
    render_table(&header, &rows)
}

fn details(view: &CampaignView, actions: &[RecordedAction]) -> String {
    let figures = &view.figures;
    let lines = [
        ("name", view.name.clone()),
        ("status", view.status.to_string()),
        (
            "start_at",
            opt(view.rules.start_at.map(|at| at.to_rfc3339())),
        ),
        ("window", window(view)),
        ("time_zone", view.rules.time_zone.clone()),
        ("max_per_minute", opt(view.rules.max_per_minute)),
        ("redial", opt(view.rules.redial.clone())),
        ("max_attempts_per_day", opt(view.rules.max_attempts_per_day)),
        (
            "numbers",
            format!(
                "{} in {} batches (waiting {}, submitted {}, failed {}, needs_review {}, cancelled {}, suppressed {})",
                figures.numbers,
                figures.batches,
                figures.waiting,
                figures.submitted,
                figures.failed,
                figures.needs_review,
                figures.cancelled,
                figures.suppressed
            ),
        ),
        (
            "calls",
            format!(
                "{} attempts ({} redials): reached {}, not reached {}; {} numbers exhausted",
                figures.attempts,
                figures.redials,
                figures.reached,
                figures.not_reached,
                figures.exhausted
            ),
        ),
        (
            "asr",
            figures
                .asr
                .map_or("-".to_owned(), |asr| format!("{:.1} %", asr * 100.0)),
        ),
        (
            "acd",
            figures
                .acd_seconds
                .map_or("-".to_owned(), |acd| format!("{acd:.0} s")),
        ),
        ("created_at", view.created_at.to_rfc3339()),
        ("updated_at", view.updated_at.to_rfc3339()),
    ];
    let mut text = String::new();
    for (name, value) in lines {
        text.push_str(&format!("{name:<20} {value}\n"));
    }
    if actions.is_empty() {
        text.push_str("actions              none\n");
    } else {
        text.push_str("actions              (latest first)\n");
        for action in actions {
            text.push_str(&format!(
                "  {}  {:<16} {} rows  by {} ({})\n",
                action.at.format("%Y-%m-%d %H:%M:%S UTC"),
                action.action,
                action.rows_affected,
                action.actor,
                action.source
            ));
        }
    }
    text
}

/// One line saying what the control did, or its JSON.
pub fn report(outcome: &ActionOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome)?);
        return Ok(());
    }
    let name = outcome.campaign.as_deref().unwrap_or("-");
    let rows = outcome.rows_affected;
    let detail = &outcome.detail;
    let line = match outcome.action {
        "campaign.pause" => {
            format!("campaign {name} paused: {rows} waiting numbers are held until it is resumed")
        }
        "campaign.resume" => format!(
            "campaign {name} active: {rows} waiting numbers go on ({} were held by its rules and are due now)",
            detail["due_again"]
        ),
        "campaign.cancel" => format!(
            "campaign {name} cancelled: {rows} waiting numbers cancelled, never to be sent; {} in a submitter's hands are cancelled by it before sending",
            detail["in_flight"]
        ),
        "campaign.set" => format!(
            "campaign {name} rules changed: {}; {rows} waiting numbers follow them now",
            changed_rules(detail)
        ),
        other => format!("{other}: {rows} rows"),
    };
    println!("{line} (operator action {})", outcome.action_id);
    Ok(())
}

/// `window 08:00-21:00 -> 09:00-20:00, max_per_minute - -> 600`: the rules that changed.
fn changed_rules(detail: &serde_json::Value) -> String {
    let (Some(before), Some(after)) = (detail["before"].as_object(), detail["after"].as_object())
    else {
        return "-".to_owned();
    };
    let text = |value: Option<&serde_json::Value>| match value {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    let changes: Vec<String> = after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(value))
        .map(|(key, value)| format!("{key} {} -> {}", text(before.get(key)), text(Some(value))))
        .collect();
    if changes.is_empty() {
        "none (the same rules again)".to_owned()
    } else {
        changes.join(", ")
    }
}
