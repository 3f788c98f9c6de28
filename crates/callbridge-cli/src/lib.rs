//! The `callbridge` operator CLI (README "Operations"). One module per subcommand under
//! [`commands`]; this file only declares them and dispatches.

pub mod commands;
pub mod database;
pub mod operator;
pub mod output;

// The error formatters every callbridge binary shares, as `crate::one_line` in commands.
pub use callbridge_runtime::errors::{error_chain, one_line};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "callbridge",
    version,
    about = "Operate a callbridge deployment",
    long_about = "Operate a callbridge deployment. Settings come from the integration guide's \
                  variables (CLIENT_CALLING_DB_URL, CENTRALIZED_CALLING_BASE_URL, \
                  CENTRALIZED_CALLING_API_KEY, CALLBACK_SECRET_KEY, …) and RABBITMQ_URL."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, revert or list the database migrations.
    Migrate(commands::migrate::MigrateArgs),
    /// Put a CSV of phone numbers into local_call_queue, in batches, as a campaign.
    Enqueue(commands::enqueue::EnqueueArgs),
    /// List campaigns; show, pause, resume, cancel one, or change its rules.
    Campaign(commands::campaign::CampaignArgs),
    /// Repair queue rows: retry failed ones, resolve needs_review ones.
    Queue(commands::queue::QueueArgs),
    /// Delete callback events, published outbox rows and finished queue rows past their
    /// retention.
    Retention(commands::retention::RetentionArgs),
    /// The do-not-call list: add, remove, import, list and check numbers.
    Dnc(commands::dnc::DncArgs),
    /// Erase a person's number from every table and dead letter (a keyed hash stays
    /// where a row must, so counts do not change).
    Erase(commands::erase::EraseArgs),
    /// List batches: local counts and status beside the centralized system's view.
    Batches(commands::batches::BatchesArgs),
    /// Show one batch in detail.
    Batch(commands::batches::BatchArgs),
    /// Inspect, replay or purge dead-lettered callbacks.
    Dlq(commands::dlq::DlqArgs),
    /// Check configuration, database, broker, API key, callback URL and signatures.
    Doctor(commands::doctor::DoctorArgs),
    /// Sign a callback payload and print a ready curl command.
    Sign(commands::sign::SignArgs),
    /// Encrypt the API key for CENTRALIZED_CALLING_API_KEY_ENCRYPTED.
    EncryptKey(commands::encrypt_key::EncryptKeyArgs),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate(args) => commands::migrate::run(args).await,
        Command::Enqueue(args) => commands::enqueue::run(args).await,
        Command::Campaign(args) => commands::campaign::run(args).await,
        Command::Queue(args) => commands::queue::run(args).await,
        Command::Retention(args) => commands::retention::run(args).await,
        Command::Dnc(args) => commands::dnc::run(args).await,
        Command::Erase(args) => commands::erase::run(args).await,
        Command::Batches(args) => commands::batches::run_list(args).await,
        Command::Batch(args) => commands::batches::run_one(args).await,
        Command::Dlq(args) => commands::dlq::run(args).await,
        Command::Doctor(args) => commands::doctor::run(args).await,
        Command::Sign(args) => commands::sign::run(args),
        Command::EncryptKey(args) => commands::encrypt_key::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_the_causes_and_skips_a_repeated_one() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = anyhow::Error::new(sqlx::Error::Io(io)).context("while connecting");
        assert_eq!(
            one_line(&err),
            "while connecting: error communicating with database: refused"
        );
    }

    #[test]
    fn every_command_has_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for sub in Cli::command().get_subcommands() {
            assert!(
                sub.get_about().is_some(),
                "{} has no help text",
                sub.get_name()
            );
        }
    }
}
