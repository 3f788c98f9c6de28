#!/usr/bin/env bash
# The console's browser test drives a real headless Chromium over WebDriver: install
# Debian's chromium and chromium-driver when either is missing (as root, like
# ensure-services.sh installs Postgres and RabbitMQ).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-browser: installing chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
