//! The binary's command line: `--help` and `--version` answer and exit before any
//! setting is read (so neither starts the service), and an unknown argument is refused.

use std::path::Path;

use callbridge_testkit::command_line::assert_answers_help_and_version;

#[tokio::test]
async fn help_and_version_answer_and_exit_without_starting_the_service() {
    assert_answers_help_and_version(
        Path::new(env!("CARGO_BIN_EXE_callbridge-console")),
        "callbridge-console",
        env!("CARGO_PKG_VERSION"),
    )
    .await;
}
