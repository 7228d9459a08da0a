#!/usr/bin/env bash
# The README's demo command: set up .venv (first run only), then run the end-to-end demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m tucker_init demo "$@"
