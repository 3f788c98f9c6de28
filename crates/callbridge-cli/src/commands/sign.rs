//! `callbridge sign`: the signature of a callback payload and a ready `curl` line that
//! sends it, to test a callback endpoint by hand (the seed's "Test callback endpoint
//! accessibility").

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use callbridge_runtime::config::Settings;
use callbridge_types::event::validate_callback;
use callbridge_types::signature::{
    WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, X_SIGNATURE_HEADER,
    sign_hex, sign_standard,
};
use clap::Args;

/// Where `curl` sends the payload when neither `--url` nor
/// `CENTRALIZED_CALLING_CALLBACK_URL` says: a local ingress on its default port.
const LOCAL_CALLBACK_URL: &str = "http://127.0.0.1:8080/callback";

#[derive(Debug, Args)]
pub struct SignArgs {
    /// File holding the payload exactly as it will be sent; `-` or absent reads stdin.
    pub file: Option<PathBuf>,

    /// The payload itself, instead of a file.
    #[arg(long, conflicts_with = "file")]
    pub data: Option<String>,

    /// Signing secret; default: the first of CALLBACK_SECRET_KEY (prefer the variable:
    /// a flag stays in the shell history).
    #[arg(long)]
    pub secret: Option<String>,

    /// Callback URL for the curl line; default: CENTRALIZED_CALLING_CALLBACK_URL, else
    /// http://127.0.0.1:8080/callback.
    #[arg(long)]
    pub url: Option<String>,

    /// Sign with Standard Webhooks headers (webhook-id, webhook-timestamp,
    /// webhook-signature) instead of X-Signature; the curl line is then valid for 5 minutes.
    #[arg(long)]
    pub standard: bool,

    /// webhook-id for --standard (default: a new UUID).
    #[arg(long, requires = "standard")]
    pub id: Option<String>,
}

pub fn run(args: SignArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let secret = match args.secret.clone() {
        Some(secret) if !secret.is_empty() => secret,
        Some(_) => bail!("--secret must not be empty"),
        None => settings
            .callback
            .secrets
            .first()
            .map(|secret| secret.expose().to_owned())
            .context(
                "Missing required callback configuration: CALLBACK_SECRET_KEY (or --secret)",
            )?,
    };
    let url = args
        .url
        .clone()
        .or_else(|| settings.api.callback_url.clone())
        .unwrap_or_else(|| LOCAL_CALLBACK_URL.to_owned());

    let (body, body_argument) = payload(&args)?;
    if let Err(problem) = validate_callback(&body, "ACCOUNT") {
        // Signing still helps (e.g. to test that a bad payload gets 400), so only warn.
        eprintln!("note: the ingress will answer 400 to this payload ({problem})");
    }

    let headers: Vec<(String, String)> = if args.standard {
        let id = args
            .id
            .clone()
            .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
        let timestamp = chrono::Utc::now().timestamp();
        vec![
            (WEBHOOK_ID_HEADER.to_owned(), id.clone()),
            (WEBHOOK_TIMESTAMP_HEADER.to_owned(), timestamp.to_string()),
            (
                WEBHOOK_SIGNATURE_HEADER.to_owned(),
                sign_standard(secret.as_bytes(), &id, timestamp, &body),
            ),
        ]
    } else {
        vec![(
            X_SIGNATURE_HEADER.to_owned(),
            sign_hex(secret.as_bytes(), &body),
        )]
    };

    for (name, value) in &headers {
        println!("{name}: {value}");
    }
    let mut curl = format!(
        "curl -sS -X POST {} -H {}",
        shell_quote(&url),
        shell_quote("Content-Type: application/json")
    );
    for (name, value) in &headers {
        curl.push_str(&format!(" -H {}", shell_quote(&format!("{name}: {value}"))));
    }
    curl.push_str(&format!(" --data-binary {body_argument}"));
    println!("{curl}");
    Ok(())
}

/// The payload's bytes, and how curl's `--data-binary` gets the very same bytes: the
/// file by name (curl reads it unchanged), or the text quoted for the shell.
fn payload(args: &SignArgs) -> anyhow::Result<(Vec<u8>, String)> {
    if let Some(data) = &args.data {
        return Ok((data.as_bytes().to_vec(), shell_quote(data)));
    }
    match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let body =
                std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
            Ok((
                body,
                format!("@{}", shell_quote(&path.display().to_string())),
            ))
        }
        _ => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .context("while reading the payload from stdin")?;
            let text = String::from_utf8(body.clone())
                .context("the payload on stdin is not UTF-8 text; pass it as a file instead")?;
            Ok((body, shell_quote(&text)))
        }
    }
}

/// `'…'` with every `'` written as `'\''`: POSIX shells take the content literally.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_quotes_literal() {
        assert_eq!(shell_quote(r#"{"a":"it's"}"#), r#"'{"a":"it'\''s"}'"#);
    }
}
