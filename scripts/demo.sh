#!/usr/bin/env bash
# Install (see install.sh) and record a 10-second take of the demo rig into ./takes/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/improvcap record demo --duration "${1:-10}" --slate
