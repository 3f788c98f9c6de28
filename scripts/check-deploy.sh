#!/usr/bin/env bash
# The deployment checks alone (tests/python/test_deploy_*.py: Dockerfile, docker-compose,
# Kustomize overlays, KEDA, alert rules), in the virtualenv scripts/python-tests.sh
# manages. `make test-python` runs them too, with the other Python tests.
# Needs Postgres on 127.0.0.1:5432 for the KEDA-query test (`make services`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyvenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r tests/python/requirements.txt
exec "$venv/bin/python" -m pytest -q tests/python/test_deploy_*.py "$@"
