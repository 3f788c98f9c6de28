//! The `callbridge` operator CLI (SPEC §8). One module per subcommand under [`commands`];
//! this file only declares them and dispatches.

pub mod commands;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "callbridge",
    version,
    about = "Operate a callbridge deployment"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, revert or list the database migrations.
    Migrate(commands::migrate::MigrateArgs),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate(args) => commands::migrate::run(args).await,
    }
}

/// The error and its causes on one line, like `{:#}`, but without repeating a cause that
/// the previous message already quotes (sqlx's I/O errors embed their source's text).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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
}
