#!/usr/bin/env bash
# Install (see install.sh), plus Debian's Chromium for the test that renders a verify report in a real
# headless browser, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing chromium (tests only)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
exec .venv/bin/python -m pytest "$@"
