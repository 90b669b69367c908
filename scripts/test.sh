#!/usr/bin/env bash
# Install (see install.sh), plus Debian's Chromium for the test that renders a verify report in a real
# headless browser and strace for the test that watches a take reach the disk; run the standard checks
# (check.sh), then the whole test suite on PYTEST_WORKERS workers (default 3: most tests wait on real-time
# devices, so three share two cores well). A module's tests stay on one worker (--dist loadfile), so that
# its module-scoped takes are recorded once.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v strace >/dev/null || missing+=(strace)
if ((${#missing[@]})) && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (tests only)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
./scripts/check.sh
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile --durations=20 "$@"
