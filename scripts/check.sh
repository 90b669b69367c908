#!/usr/bin/env bash
# The standard checks (configured in pyproject.toml): ruff's lint and format check, and mypy on the package.
# The import contract (import-linter) runs inside the test suite (tests/test_architecture.py).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check improvcap bench
.venv/bin/ruff format --check improvcap bench
.venv/bin/mypy
