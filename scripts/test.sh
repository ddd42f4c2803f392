#!/usr/bin/env bash
# The test command (README, CI): start every service the tests need, then lint, type-check and
# run the whole suite on them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
mkdir -p artifacts
exec .venv/bin/pytest -p no:cacheprovider "$@"
