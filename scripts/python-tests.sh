#!/usr/bin/env bash
# Runs the Python-side tests (fixtures and compatibility with the seed's Python code),
# if any exist. Installs their requirements into a local virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
tests=(tests/python/test_*.py)
[ ${#tests[@]} -gt 0 ] || exit 0
venv=target/pyvenv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
fi
"$venv/bin/pip" install -q -r tests/python/requirements.txt
"$venv/bin/python" -m pytest -q tests/python
