//! What every callbridge service binary's command line must do: `--help` and `--version`
//! answer on stdout and exit 0 before a single setting is read, so neither starts a
//! server, and an argument it does not know stops it with a usage error.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// Longer than any of the binaries takes to print its help; a binary still running after
/// it has started its server instead.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// The environment the binaries are run in: no settings at all except a malformed
/// boolean, which stops every service at start. A binary that reads its settings before
/// its arguments therefore fails instead of answering.
const MALFORMED_SETTING: (&str, &str) = ("CALLBACK_VERIFICATION_ENABLED", "maybe");

/// Runs `binary args…` in an empty environment (plus [`MALFORMED_SETTING`]) and returns
/// what it printed; panics if it is still running after [`ANSWER_WITHIN`].
pub async fn run(binary: &Path, args: &[&str]) -> Output {
    let child = Command::new(binary)
        .args(args)
        .env_clear()
        .env(MALFORMED_SETTING.0, MALFORMED_SETTING.1)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(ANSWER_WITHIN, child)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} {args:?} was still running after {ANSWER_WITHIN:?}: it started instead of answering",
                binary.display()
            )
        })
        .expect("while starting the binary")
}

/// Asserts the three behaviours of the module's doc for `binary`, whose clap name is
/// `name` and whose version is `version` (the crate's `CARGO_PKG_VERSION`).
pub async fn assert_answers_help_and_version(binary: &Path, name: &str, version: &str) {
    for flag in ["--help", "-h"] {
        let output = run(binary, &[flag]).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name} {flag}: {:?}, stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("Usage: {name}")),
            "{name} {flag} printed no usage: {stdout}"
        );
    }
    for flag in ["--version", "-V"] {
        let output = run(binary, &[flag]).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name} {flag}: {:?}, stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout.trim(), format!("{name} {version}"), "{name} {flag}");
    }
    let output = run(binary, &["--no-such-argument"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{name} --no-such-argument: {stderr}"
    );
    assert!(
        stderr.contains("--no-such-argument"),
        "{name}'s usage error names the argument: {stderr}"
    );
}
