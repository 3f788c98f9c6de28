//! Helpers shared by the CLI's integration tests, here and in the workspace test crate
//! (`crates/callbridge-tests`, which includes this file): the built `callbridge` binary
//! run with a hermetic environment, a migrated database, a vhost with the topology, and
//! temporary files.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use callbridge_testkit::db::TestDb;
use callbridge_testkit::vhost::TestVhost;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

pub const ACCOUNT_CODE: &str = "SIM001";
pub const CALLBACK_SECRET: &str = "test-callback-secret";
pub const API_KEY: &str = "test-api-key";

/// The `callbridge` binary: cargo's own path in the CLI's tests; in the workspace test
/// crate (`callbridge-tests`), which shares these helpers, built on demand.
pub fn callbridge_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_callbridge") {
        Some(path) => PathBuf::from(path),
        None => callbridge_testkit::binary::workspace_binary("callbridge-cli", "callbridge"),
    }
}

/// Runs `callbridge` with exactly `env` (nothing from the developer's shell leaks in)
/// and `stdin` as its input.
pub async fn callbridge(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut child = tokio::process::Command::new(callbridge_binary())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Panics with both streams unless the command succeeded.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

/// A failure reported as one line on stderr, starting with `error: `; returns the line.
pub fn one_line_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure: {}",
        stdout(output)
    );
    let message = stderr(output);
    let last = message
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(last.starts_with("error: "), "{message}");
    last
}

pub async fn migrated_db() -> (TestDb, PgPool) {
    let db = TestDb::new().await.unwrap();
    let pool = callbridge_runtime::db::connect_and_migrate(db.url(), 4)
        .await
        .unwrap();
    (db, pool)
}

/// A vhost where the services' topology has been declared.
pub async fn vhost_with_topology() -> TestVhost {
    let vhost = TestVhost::new().await;
    let connection = callbridge_runtime::amqp::connect(&vhost.amqp_url(), "cli-test")
        .await
        .unwrap();
    callbridge_runtime::amqp::declare_topology(&connection)
        .await
        .unwrap();
    connection.close(200, "bye".into()).await.ok();
    vhost
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with_contents(name: &str, contents: &[u8]) -> TempFile {
        let directory = std::env::temp_dir().join(format!("callbridge-cli-{}", uuid()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(directory) = self.0.parent() {
            std::fs::remove_dir_all(directory).ok();
        }
    }
}

pub fn uuid() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
