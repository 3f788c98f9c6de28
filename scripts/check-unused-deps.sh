#!/usr/bin/env bash
# Fails when a dependency is declared but not used, so none creeps back in:
#  - in a crate's Cargo.toml (the workspace's and fuzz/'s): cargo-machete, which reads
#    the sources for each dependency's name; installed here when absent, so a fresh CI
#    machine runs the same check;
#  - in the root [workspace.dependencies]: an entry no crate takes is dead text that
#    reads as if it were in use.
# A false positive of cargo-machete (a crate used only through another's macro) goes
# into that crate's [package.metadata.cargo-machete] ignored list, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

MACHETE_VERSION=0.9.2
if ! cargo machete --version >/dev/null 2>&1; then
  echo "check-unused-deps: installing cargo-machete $MACHETE_VERSION" >&2
  cargo install --locked --quiet "cargo-machete@$MACHETE_VERSION"
fi
cargo machete

unused=()
for name in $(sed -n '/^\[workspace\.dependencies\]/,/^\[/{/^[A-Za-z0-9_-]\+ *=/s/ *=.*//p}' Cargo.toml); do
  if ! grep -qE "^${name}( *=|\.workspace)" crates/*/Cargo.toml; then
    unused+=("$name")
  fi
done
if ((${#unused[@]})); then
  echo "check-unused-deps: Cargo.toml [workspace.dependencies] declares what no crate uses: ${unused[*]}" >&2
  exit 1
fi
