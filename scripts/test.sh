#!/usr/bin/env bash
# The README's test command: set up .venv (first run only), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest -q "$@"
