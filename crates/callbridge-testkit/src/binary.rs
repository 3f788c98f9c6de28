//! A workspace binary for a test in another package: cargo names only a package's own
//! binaries to its tests (`CARGO_BIN_EXE_<name>`), so the workspace test crate
//! (`callbridge-tests`) gets the CLI's and the services' binaries from here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Binaries already built by this process.
static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// The debug binary `name` of workspace package `package`, built first with the cargo
/// that builds the tests (a no-op when it is up to date), so a test never runs a stale
/// binary. It lands in the target directory the running test itself was built into.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // The test runs as <target>/<profile>/deps/<test>-<hash>.
    let test = std::env::current_exe().expect("while locating the running test");
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from <target>/<profile>/deps");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory is inside the target directory");
    // The directory is named after the profile, except the dev profile's `debug`.
    let profile = match profile_dir.file_name().and_then(|dir| dir.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            name,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap_or_else(|error| panic!("while running cargo build for {name}: {error}"));
    assert!(
        status.success(),
        "cargo build -p {package} --bin {name}: {status}"
    );
    let path = profile_dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    built.insert(name.to_owned(), path.clone());
    path
}
