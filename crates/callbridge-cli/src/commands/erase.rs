//! `callbridge erase --phone NUMBER [--yes] [--json]`: a person's number leaves every table
//! and every dead letter, replaced where a row must stay by a keyed hash made with
//! CALLBRIDGE__LIFECYCLE__ERASURE_KEY (see `callbridge_ops::erasure`); one
//! `operator_actions` row records it without the number.

use anyhow::{Context, bail};
use callbridge_ops::erasure;
use callbridge_runtime::config::Settings;
use clap::Args;

use crate::database::DatabaseArgs;
use crate::operator::{ActorArgs, confirm, normalise_typed_number, now};

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The number to erase, in any form (`+91 98765 43210`, `9876543210` with the default
    /// region): every form of it is erased.
    #[arg(long, value_name = "NUMBER")]
    pub phone: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// RabbitMQ URL, instead of RABBITMQ_URL (the dead letters are erased too).
    #[arg(long)]
    pub amqp_url: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub actor: ActorArgs,
}

pub async fn run(args: EraseArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let Some(key) = settings.lifecycle()?.erasure_key else {
        bail!(
            "erasing needs CALLBRIDGE__LIFECYCLE__ERASURE_KEY (the key of the hash that replaces the number; give the submitter the same one); nothing was changed"
        );
    };
    let number = normalise_typed_number(&args.phone, settings.numbers()?).context("--phone")?;
    let actor = args.actor.actor()?;
    let url = match args.amqp_url.clone() {
        Some(url) => url,
        None => settings.amqp_url()?.expose().to_owned(),
    };
    let pool = crate::database::connect_pool(&args.database.resolve(&settings)?, 1).await?;
    let connection = callbridge_runtime::amqp::connect(&url, "callbridge-cli").await?;
    if !args.yes
        && !confirm(&format!(
            "Erase {} from every table and dead letter? It cannot be undone.",
            number.as_str()
        ))?
    {
        connection.close(200, "bye".into()).await.ok();
        bail!("erasure cancelled; nothing was changed");
    }
    let result = erasure::erase(
        &connection,
        &pool,
        now(),
        &actor,
        &number,
        key.expose().as_bytes(),
    )
    .await;
    connection.close(200, "bye".into()).await.ok();
    let erased = result?;
    if args.json {
        println!("{}", serde_json::to_string(&erased)?);
        return Ok(());
    }
    println!(
        "erased; the number is now {} where a row stays",
        erased.stand_in
    );
    for (table, rows) in &erased.tables {
        println!("  {table}: {rows} rows");
    }
    println!("  dead letters: {}", erased.dead_letters);
    println!(
        "  waiting rows suppressed (never sent): {}",
        erased.suppressed_rows
    );
    if erased.calls_in_flight > 0 {
        println!(
            "{} requests or calls are still in flight: their callbacks will carry the number again; run `callbridge erase` again once they have ended",
            erased.calls_in_flight
        );
    }
    println!(
        "recorded as operator action {} (without the number)",
        erased.action_id
    );
    Ok(())
}
