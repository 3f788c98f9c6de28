//! `callbridge encrypt-key`: the API key as a Fernet token for
//! `CENTRALIZED_CALLING_API_KEY_ENCRYPTED` (the seed's `SecureConfig.encrypt_api_key`);
//! Python's `cryptography.fernet.Fernet(ENCRYPTION_KEY).decrypt` reads it.

use std::io::BufRead;

use anyhow::{Context, bail};
use callbridge_runtime::config::encrypt_api_key;
use clap::Args;

#[derive(Debug, Args)]
pub struct EncryptKeyArgs {
    /// Read the API key from this environment variable instead of the first line of stdin.
    #[arg(long, value_name = "VARIABLE")]
    pub from_env: Option<String>,

    /// Print a new Fernet key for ENCRYPTION_KEY and exit.
    #[arg(long, conflicts_with = "from_env")]
    pub generate_key: bool,
}

pub fn run(args: EncryptKeyArgs) -> anyhow::Result<()> {
    if args.generate_key {
        println!("{}", fernet::Fernet::generate_key());
        return Ok(());
    }
    let encryption_key = std::env::var("ENCRYPTION_KEY")
        .ok()
        .filter(|key| !key.trim().is_empty())
        .context("Missing required configuration: ENCRYPTION_KEY (make one with `callbridge encrypt-key --generate-key`)")?;
    let api_key = match &args.from_env {
        Some(variable) => {
            std::env::var(variable).with_context(|| format!("{variable} is not set"))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("while reading the API key from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if api_key.trim().is_empty() {
        bail!(
            "the API key is empty: pipe it on stdin (`printf %s \"$KEY\" | callbridge encrypt-key`)"
        );
    }
    println!("{}", encrypt_api_key(&encryption_key, &api_key)?);
    eprintln!(
        "set CENTRALIZED_CALLING_API_KEY_ENCRYPTED to this token (with ENCRYPTION_KEY) and unset CENTRALIZED_CALLING_API_KEY"
    );
    Ok(())
}
