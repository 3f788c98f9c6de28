//! Shutdown is an input: SIGTERM (Kubernetes) or SIGINT (Ctrl-C) cancels a token, and
//! each service stops taking new work and finishes what is in flight when it fires.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits the process
/// at once (exit code 130), for an operator who does not want to wait.
///
/// The handlers are installed before this returns, so a signal sent afterwards is never
/// missed. Must be called inside a tokio runtime.
pub fn shutdown_token() -> anyhow::Result<CancellationToken> {
    let terminate =
        signal(SignalKind::terminate()).context("while installing the SIGTERM handler")?;
    let interrupt =
        signal(SignalKind::interrupt()).context("while installing the SIGINT handler")?;
    let token = CancellationToken::new();
    tokio::spawn(cancel_on_signals(terminate, interrupt, token.clone()));
    Ok(token)
}

async fn cancel_on_signals(mut terminate: Signal, mut interrupt: Signal, token: CancellationToken) {
    let first = next_signal(&mut terminate, &mut interrupt).await;
    tracing::info!(
        signal = first,
        "shutdown requested: finishing in-flight work"
    );
    token.cancel();
    let second = next_signal(&mut terminate, &mut interrupt).await;
    tracing::warn!(
        signal = second,
        "second signal: exiting without waiting for in-flight work"
    );
    std::process::exit(130);
}

async fn next_signal(terminate: &mut Signal, interrupt: &mut Signal) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    //! Signals go to a child process (this test binary re-run with one test selected), so
    //! tests running in parallel in this process are never hit.

    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    const CHILD_VARIABLE: &str = "CALLBRIDGE_SHUTDOWN_TEST_CHILD";

    /// The child's side: a no-op unless started by `signal_cancels_the_token`.
    #[tokio::test]
    async fn child_waits_for_a_signal() {
        if std::env::var_os(CHILD_VARIABLE).is_none() {
            return;
        }
        let token = shutdown_token().unwrap();
        println!("ready");
        token.cancelled().await;
        println!("cancelled");
    }

    /// Kills the child if an assertion fails first, so no orphan waits forever.
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn run_child_and_send(signal_name: &str) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "shutdown::tests::child_waits_for_a_signal",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_VARIABLE, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        // libtest prints `test <name> ... ` without a newline before the test's own output.
        let mut saw = |wanted: &str| {
            lines
                .by_ref()
                .map_while(Result::ok)
                .any(|line| line.trim_end().ends_with(wanted))
        };
        assert!(saw("ready"), "child never installed its handlers");
        let status = Command::new("kill")
            .args([&format!("-{signal_name}"), &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal_name} failed");
        assert!(saw("cancelled"), "{signal_name} did not cancel the token");
        assert!(
            child.0.wait().unwrap().success(),
            "child did not exit cleanly after {signal_name}"
        );
    }

    #[test]
    fn sigterm_cancels_the_token() {
        run_child_and_send("TERM");
    }

    #[test]
    fn sigint_cancels_the_token() {
        run_child_and_send("INT");
    }
}
